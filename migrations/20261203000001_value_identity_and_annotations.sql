-- Issue 22: values as Thryve's v6 documents them: their annotations, Thryve's own identity of
-- an epoch value, and where each row came from. Nothing renamed.
--
-- * epoch_values and daily_values gain
--   - details: the value's annotations (a push's additionalDetails, the data API's details:
--     generation, trustworthiness, medicalGrade, chronologicalExactness, ...) without
--     timezoneOffset, which has its column and may sit beside the object or inside it; NULL
--     when there are none;
--   - generation: the annotations' generation (manual_entry, tracker, ...), a column of its
--     own so it can be keyed and queried; NULL when absent;
--   - third_party_data_source_id: thirdPartyDataSourceId where a payload carries one;
--   - range_id: the dirty range whose fetch from Thryve's data API last wrote the row (NULL
--     for a row a data push wrote, which keeps its delivery in inbox_id).
--   All nullable without a default: adding them rewrites nothing.
-- * inbox_id becomes NULL for a fetched row: before, it held the inbox's id high-water mark at
--   the fetch (an ordering device), naming a delivery unrelated to the value. Existing rows
--   whose inbox_id names an inbox row that is not a data push of the row's own user are such
--   rows, and lose that pointer; where the inbox row is gone, nothing tells, and it stays.
-- * Epoch identity: unique on (end_user_id, data_source_id, data_type_id, start_time, end_key,
--   generation, third_party_data_source_id), two NULLs being equal (NULLS NOT DISTINCT,
--   Postgres 15), in place of the primary key, which cannot hold a nullable column. Every
--   existing row has neither a generation nor a third-party source, so rows unique on the old
--   key are unique on the new one: none is merged or lost. Daily identity is unchanged.

ALTER TABLE thryve.epoch_values
    ADD COLUMN details jsonb,
    ADD COLUMN generation text,
    ADD COLUMN third_party_data_source_id text,
    ADD COLUMN range_id bigint,
    ALTER COLUMN inbox_id DROP NOT NULL;

ALTER TABLE thryve.daily_values
    ADD COLUMN details jsonb,
    ADD COLUMN generation text,
    ADD COLUMN third_party_data_source_id text,
    ADD COLUMN range_id bigint,
    ALTER COLUMN inbox_id DROP NOT NULL;

UPDATE thryve.epoch_values v SET inbox_id = NULL
FROM thryve.inbox i
WHERE i.id = v.inbox_id
  AND NOT (i.event_type LIKE 'event.data.%' AND i.end_user_id IS NOT DISTINCT FROM v.end_user_id);

UPDATE thryve.daily_values v SET inbox_id = NULL
FROM thryve.inbox i
WHERE i.id = v.inbox_id
  AND NOT (i.event_type LIKE 'event.data.%' AND i.end_user_id IS NOT DISTINCT FROM v.end_user_id);

ALTER TABLE thryve.epoch_values ADD CONSTRAINT epoch_values_key UNIQUE NULLS NOT DISTINCT
    (end_user_id, data_source_id, data_type_id, start_time, end_key, generation,
     third_party_data_source_id);
ALTER TABLE thryve.epoch_values DROP CONSTRAINT epoch_values_pkey;

COMMENT ON COLUMN thryve.epoch_values.details IS
    'Annotations of the value (additionalDetails of a push, details of the data API) without timezoneOffset; NULL when none.';
COMMENT ON COLUMN thryve.epoch_values.generation IS
    'generation of the annotations (manual_entry, tracker, ...); part of the value''s identity.';
COMMENT ON COLUMN thryve.epoch_values.third_party_data_source_id IS
    'thirdPartyDataSourceId, where the payload carries one; part of the value''s identity.';
COMMENT ON COLUMN thryve.epoch_values.inbox_id IS
    'The data push that last wrote the row; NULL when a fetch did (see range_id).';
COMMENT ON COLUMN thryve.epoch_values.range_id IS
    'The dirty range whose fetch from Thryve''s data API last wrote the row; NULL when a push did (see inbox_id).';
COMMENT ON COLUMN thryve.daily_values.details IS
    'Annotations of the value (additionalDetails of a push, details of the data API) without timezoneOffset; NULL when none.';
COMMENT ON COLUMN thryve.daily_values.generation IS
    'generation of the annotations (manual_entry, tracker, ...).';
COMMENT ON COLUMN thryve.daily_values.third_party_data_source_id IS
    'thirdPartyDataSourceId, where the payload carries one.';
COMMENT ON COLUMN thryve.daily_values.inbox_id IS
    'The data push that last wrote the row; NULL when a fetch did (see range_id).';
COMMENT ON COLUMN thryve.daily_values.range_id IS
    'The dirty range whose fetch from Thryve''s data API last wrote the row; NULL when a push did (see inbox_id).';
