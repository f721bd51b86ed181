-- Issue 22: names for the ids, so SQL users see "HeartRate" and "Withings", not 3000 and 8.
--
-- * data_types (data_type_id, name, unit, value_type, granularity, source): one row per type
--   and granularity (a type id may mean different things per granularity: 2000 is the sleep
--   duration of a day, and a sleep state in epoch data). Seeded here only with the ids the
--   project's reference names, each row's source saying where its name comes from; the
--   fetcher then learns the names Thryve's data API gives (dynamicValueTypeName,
--   dailyDynamicValueTypeName, valueType: source 'data-api'), which replace seeded ones.
--   Units only where the reference gives one. Left out: 2000 in epoch data (the reference
--   describes it, names it not) and 3300/3301 (lists disagree on which is systolic).
-- * data_sources: inbox_id becomes nullable and a source column says where the name comes
--   from ('push': a push's dataSourceName, which replaces a seeded name; or the seed's
--   reference). Seeded with the ids of Thryve's examples and the integrator list derived from
--   them; names pushes already gave stay.
-- * Views epoch_values_named and daily_values_named: the values with their source's and
--   type's names and the type's unit; value_numeric also reads true/false as 1/0. An id
--   without a name still shows, with a NULL name.

ALTER TABLE thryve.data_sources
    ALTER COLUMN inbox_id DROP NOT NULL,
    ADD COLUMN source text NOT NULL DEFAULT 'push';
ALTER TABLE thryve.data_sources ALTER COLUMN source DROP DEFAULT;
COMMENT ON TABLE thryve.data_sources IS
    'A name per dataSourceId: seeded from the reference, replaced by the dataSourceName data pushes give.';
COMMENT ON COLUMN thryve.data_sources.source IS
    'Where the name comes from: push (a data push''s dataSourceName, inbox_id says which) or the seed''s reference.';

INSERT INTO thryve.data_sources (data_source_id, name, source)
SELECT id, name, 'seed: Thryve''s examples and an integrator''s list derived from Thryve''s'
FROM (VALUES (1, 'Fitbit'), (2, 'Garmin'), (3, 'Polar'), (5, 'Apple Health'),
             (6, 'Samsung Health'), (8, 'Withings'), (11, 'Strava'), (12, 'Google Fit REST'),
             (15, 'Runtastic'), (16, 'Omron Connect'), (17, 'Suunto'), (18, 'Oura'),
             (38, 'Huawei Health'), (40, 'Google Fit Native'), (41, 'Dexcom'), (42, 'Whoop'),
             (44, 'Health Connect')) AS s(id, name)
ON CONFLICT (data_source_id) DO NOTHING;

CREATE TABLE thryve.data_types (
    data_type_id integer     NOT NULL,
    name         text        NOT NULL,
    unit         text,
    -- LONG, DOUBLE, BOOLEAN, DATE, STRING, as the data API's valueType says.
    value_type   text,
    granularity  text        NOT NULL CHECK (granularity IN ('epoch', 'daily')),
    source       text        NOT NULL,
    updated_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (data_type_id, granularity)
);
COMMENT ON TABLE thryve.data_types IS
    'A name (and unit, value type) per dataTypeId and granularity: seeded from the reference, replaced by what Thryve''s data API answers.';
COMMENT ON COLUMN thryve.data_types.source IS
    'Where the name comes from: data-api (learned from an answer) or the seed''s reference.';

INSERT INTO thryve.data_types (data_type_id, name, unit, value_type, granularity, source)
SELECT t.id, t.name, t.unit, t.value_type, g.granularity, t.source
FROM (VALUES
        (1002, 'FloorsClimbed', NULL, 'LONG', 'seed: Thryve''s analytics page'),
        (1010, 'BurnedCalories', NULL, NULL, 'seed: Thryve''s analytics page'),
        (1011, 'ActiveBurnedCalories', NULL, NULL, 'seed: Thryve''s analytics page'),
        (1012, 'MetabolicEquivalent', NULL, 'DOUBLE', 'seed: Thryve''s analytics page'),
        (1200, 'ActivityType', NULL, NULL, 'seed: Thryve''s analytics page'),
        (5020, 'Weight', NULL, NULL, 'seed: Thryve''s analytics page'),
        (1000, 'Steps', NULL, NULL, 'seed: integrator catalog of Thryve''s data-type sheet (2019)'),
        (1001, 'CoveredDistance', 'm', NULL, 'seed: integrator catalog of Thryve''s data-type sheet (2019)'),
        (1003, 'ElevationGain', NULL, NULL, 'seed: integrator catalog of Thryve''s data-type sheet (2019)'),
        (1100, 'ActivityDuration', 'min', NULL, 'seed: integrator catalog of Thryve''s data-type sheet (2019)'),
        (2001, 'SleepInBed', NULL, NULL, 'seed: integrator catalog of Thryve''s data-type sheet (2019)'),
        (2002, 'SleepREM', NULL, NULL, 'seed: integrator catalog of Thryve''s data-type sheet (2019)'),
        (2003, 'SleepDeep', NULL, NULL, 'seed: integrator catalog of Thryve''s data-type sheet (2019)'),
        (2004, 'SleepMid', NULL, NULL, 'seed: integrator catalog of Thryve''s data-type sheet (2019)'),
        (2005, 'SleepLight', NULL, NULL, 'seed: integrator catalog of Thryve''s data-type sheet (2019)'),
        (2006, 'SleepAwake', NULL, NULL, 'seed: integrator catalog of Thryve''s data-type sheet (2019)'),
        (2100, 'SleepStartTime', NULL, NULL, 'seed: integrator catalog of Thryve''s data-type sheet (2019)'),
        (2101, 'SleepEndTime', NULL, NULL, 'seed: integrator catalog of Thryve''s data-type sheet (2019)'),
        (2200, 'SleepEfficiency', NULL, NULL, 'seed: integrator catalog of Thryve''s data-type sheet (2019)'),
        (3000, 'HeartRate', 'bpm', NULL, 'seed: integrator catalog of Thryve''s data-type sheet (2019)'),
        (3001, 'HeartRateResting', NULL, NULL, 'seed: integrator catalog of Thryve''s data-type sheet (2019)'),
        (3002, 'HeartRateSleep', NULL, NULL, 'seed: integrator catalog of Thryve''s data-type sheet (2019)'),
        (3030, 'VO2max', NULL, NULL, 'seed: integrator catalog of Thryve''s data-type sheet (2019)'),
        (3100, 'Rmssd', NULL, NULL, 'seed: integrator catalog of Thryve''s data-type sheet (2019)'),
        (3302, 'BloodGlucose', NULL, NULL, 'seed: integrator catalog of Thryve''s data-type sheet (2019)'),
        (4000, 'RespirationRate', NULL, NULL, 'seed: integrator catalog of Thryve''s data-type sheet (2019)'),
        (5021, 'MuscleMass', NULL, NULL, 'seed: integrator catalog of Thryve''s data-type sheet (2019)'),
        (5024, 'FatMass', NULL, NULL, 'seed: integrator catalog of Thryve''s data-type sheet (2019)'),
        (5025, 'FatRatio', NULL, NULL, 'seed: integrator catalog of Thryve''s data-type sheet (2019)'),
        (5026, 'BMI', NULL, NULL, 'seed: integrator catalog of Thryve''s data-type sheet (2019)'),
        (5030, 'Height', 'cm', NULL, 'seed: integrator catalog of Thryve''s data-type sheet (2019)'),
        (5040, 'BodyTemperature', NULL, NULL, 'seed: integrator catalog of Thryve''s data-type sheet (2019)'),
        (6010, 'AverageStress', NULL, NULL, 'seed: integrator catalog of Thryve''s data-type sheet (2019)'))
     AS t(id, name, unit, value_type, source)
CROSS JOIN (VALUES ('epoch'), ('daily')) AS g(granularity)
UNION ALL
SELECT 2000, 'SleepDuration', NULL, NULL, 'daily',
       'seed: integrator catalog of Thryve''s data-type sheet (2019)';

CREATE VIEW thryve.epoch_values_named AS
SELECT v.end_user_id, v.data_source_id, s.name AS data_source_name, v.data_type_id,
       t.name AS data_type_name, t.unit, v.start_time, v.end_time, v.timezone_offset, v.value,
       coalesce(v.value_numeric,
                CASE lower(v.value) WHEN 'true' THEN 1 WHEN 'false' THEN 0 END) AS value_numeric,
       v.generation, v.details
FROM thryve.epoch_values v
LEFT JOIN thryve.data_sources s ON s.data_source_id = v.data_source_id
LEFT JOIN thryve.data_types t ON t.data_type_id = v.data_type_id AND t.granularity = 'epoch';
COMMENT ON VIEW thryve.epoch_values_named IS
    'epoch_values with source and type names and the unit; value_numeric reads true/false as 1/0.';

CREATE VIEW thryve.daily_values_named AS
SELECT v.end_user_id, v.data_source_id, s.name AS data_source_name, v.data_type_id,
       t.name AS data_type_name, t.unit, v.day, v.timezone_offset, v.value,
       coalesce(v.value_numeric,
                CASE lower(v.value) WHEN 'true' THEN 1 WHEN 'false' THEN 0 END) AS value_numeric,
       v.generation, v.details
FROM thryve.daily_values v
LEFT JOIN thryve.data_sources s ON s.data_source_id = v.data_source_id
LEFT JOIN thryve.data_types t ON t.data_type_id = v.data_type_id AND t.granularity = 'daily';
COMMENT ON VIEW thryve.daily_values_named IS
    'daily_values with source and type names and the unit; value_numeric reads true/false as 1/0.';
