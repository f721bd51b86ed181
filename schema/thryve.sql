-- The schema `thryve-bridge migrate` makes, as Postgres prints it: one definition per
-- object, the one that wins after every migration. Generated; do not edit. Regenerate
-- with: UPDATE_SCHEMA_SNAPSHOT=1 cargo test --test api schema::

-- tables

CREATE TABLE thryve.daily_values (
    end_user_id text NOT NULL,
    data_source_id integer NOT NULL,
    data_type_id integer NOT NULL,
    day date NOT NULL,
    timezone_offset integer,
    value text NOT NULL,
    value_numeric numeric,
    updated_at timestamp with time zone NOT NULL DEFAULT now(),
    inbox_id bigint,
    version_at timestamp with time zone NOT NULL DEFAULT now(),
    details jsonb,
    generation text,
    third_party_data_source_id text,
    range_id bigint
);

CREATE TABLE thryve.data_sources (
    data_source_id integer NOT NULL,
    name text NOT NULL,
    inbox_id bigint,
    updated_at timestamp with time zone NOT NULL DEFAULT now(),
    source text NOT NULL
);

CREATE TABLE thryve.data_types (
    data_type_id integer NOT NULL,
    name text NOT NULL,
    unit text,
    value_type text,
    granularity text NOT NULL,
    source text NOT NULL,
    updated_at timestamp with time zone NOT NULL DEFAULT now()
);

CREATE TABLE thryve.dirty_ranges (
    id bigint NOT NULL,
    end_user_id text NOT NULL,
    data_source_id integer NOT NULL,
    granularity text NOT NULL,
    data_type_ids integer[] NOT NULL,
    start_time timestamp with time zone,
    end_time timestamp with time zone,
    start_day date,
    end_day date,
    status text NOT NULL DEFAULT 'pending'::text,
    notification_count integer NOT NULL DEFAULT 1,
    first_dirtied_at timestamp with time zone NOT NULL DEFAULT now(),
    last_dirtied_at timestamp with time zone NOT NULL DEFAULT now(),
    claimed_by text,
    lease_expires_at timestamp with time zone,
    attempts integer NOT NULL DEFAULT 0,
    last_error text,
    available_at timestamp with time zone NOT NULL DEFAULT now(),
    completed_at timestamp with time zone,
    range_key bigint DEFAULT thryve.range_lock_key(end_user_id, data_source_id, granularity),
    needs_fetch boolean NOT NULL DEFAULT true,
    claim_token uuid
);

CREATE TABLE thryve.epoch_values (
    end_user_id text NOT NULL,
    data_source_id integer NOT NULL,
    data_type_id integer NOT NULL,
    start_time timestamp with time zone NOT NULL,
    end_time timestamp with time zone,
    timezone_offset integer,
    value text NOT NULL,
    value_numeric numeric,
    updated_at timestamp with time zone NOT NULL DEFAULT now(),
    inbox_id bigint,
    end_key timestamp with time zone NOT NULL DEFAULT COALESCE(end_time, start_time),
    version_at timestamp with time zone NOT NULL DEFAULT now(),
    details jsonb,
    generation text,
    third_party_data_source_id text,
    range_id bigint
);

CREATE TABLE thryve.fetchers (
    worker text NOT NULL,
    started_at timestamp with time zone NOT NULL,
    seen_at timestamp with time zone NOT NULL,
    paused_reason text,
    ranges_done bigint NOT NULL DEFAULT 0,
    ranges_retried bigint NOT NULL DEFAULT 0,
    ranges_failed bigint NOT NULL DEFAULT 0,
    values_written bigint NOT NULL DEFAULT 0,
    last_done_at timestamp with time zone
);

CREATE TABLE thryve.inbox (
    id bigint NOT NULL,
    fingerprint bytea NOT NULL,
    event_type text,
    end_user_id text,
    end_user_alias text,
    payload jsonb COMPRESSION lz4 NOT NULL,
    status text NOT NULL DEFAULT 'pending'::text,
    error text,
    delivery_count integer NOT NULL DEFAULT 1,
    first_received_at timestamp with time zone NOT NULL DEFAULT now(),
    last_received_at timestamp with time zone NOT NULL DEFAULT now(),
    processed_at timestamp with time zone,
    data_source_id integer,
    data_type_ids integer[],
    start_time timestamp with time zone,
    end_time timestamp with time zone,
    start_day date,
    end_day date,
    connected boolean,
    event_time timestamp with time zone,
    signed_at timestamp with time zone,
    traceparent text,
    value_count integer
);

CREATE TABLE thryve.settings (
    key text NOT NULL,
    value text NOT NULL
);

CREATE TABLE thryve.source_connections (
    end_user_id text NOT NULL,
    data_source_id integer NOT NULL,
    connected boolean NOT NULL,
    changed_at timestamp with time zone NOT NULL,
    inbox_id bigint,
    updated_at timestamp with time zone NOT NULL DEFAULT now(),
    origin text NOT NULL DEFAULT 'webhook'::text
);


-- constraints

ALTER TABLE thryve.daily_values ADD CONSTRAINT daily_values_pkey PRIMARY KEY (end_user_id, data_source_id, data_type_id, day);

ALTER TABLE thryve.data_sources ADD CONSTRAINT data_sources_pkey PRIMARY KEY (data_source_id);

ALTER TABLE thryve.data_types ADD CONSTRAINT data_types_granularity_check CHECK ((granularity = ANY (ARRAY['epoch'::text, 'daily'::text])));

ALTER TABLE thryve.data_types ADD CONSTRAINT data_types_pkey PRIMARY KEY (data_type_id, granularity);

ALTER TABLE thryve.dirty_ranges ADD CONSTRAINT dirty_ranges_pending_daily_excl EXCLUDE USING gist (range_key WITH =, daterange(start_day, end_day, '[]'::text) WITH &&) WHERE (((status = 'pending'::text) AND (granularity = 'daily'::text))) DEFERRABLE;

ALTER TABLE thryve.dirty_ranges ADD CONSTRAINT dirty_ranges_pending_epoch_excl EXCLUDE USING gist (range_key WITH =, tstzrange(start_time, end_time, '[]'::text) WITH &&) WHERE (((status = 'pending'::text) AND (granularity = 'epoch'::text))) DEFERRABLE;

ALTER TABLE thryve.dirty_ranges ADD CONSTRAINT dirty_ranges_pkey PRIMARY KEY (id);

ALTER TABLE thryve.dirty_ranges ADD CONSTRAINT dirty_ranges_span_check CHECK ((((granularity = 'epoch'::text) AND (start_time IS NOT NULL) AND (end_time IS NOT NULL) AND (start_time <= end_time) AND (start_day IS NULL) AND (end_day IS NULL)) OR ((granularity = 'daily'::text) AND (start_day IS NOT NULL) AND (end_day IS NOT NULL) AND (start_day <= end_day) AND (start_time IS NULL) AND (end_time IS NULL))));

ALTER TABLE thryve.dirty_ranges ADD CONSTRAINT dirty_ranges_status_check CHECK ((status = ANY (ARRAY['pending'::text, 'claimed'::text, 'done'::text, 'failed'::text])));

ALTER TABLE thryve.epoch_values ADD CONSTRAINT epoch_values_key UNIQUE NULLS NOT DISTINCT (end_user_id, data_source_id, data_type_id, start_time, end_key, generation, third_party_data_source_id);

ALTER TABLE thryve.fetchers ADD CONSTRAINT fetchers_pkey PRIMARY KEY (worker);

ALTER TABLE thryve.inbox ADD CONSTRAINT inbox_fingerprint_key UNIQUE (fingerprint);

ALTER TABLE thryve.inbox ADD CONSTRAINT inbox_fingerprint_length CHECK ((octet_length(fingerprint) = 32));

ALTER TABLE thryve.inbox ADD CONSTRAINT inbox_pkey PRIMARY KEY (id);

ALTER TABLE thryve.inbox ADD CONSTRAINT inbox_status_check CHECK ((status = ANY (ARRAY['pending'::text, 'processed'::text, 'quarantined'::text, 'ignored'::text])));

ALTER TABLE thryve.inbox ADD CONSTRAINT inbox_traceparent_bounded CHECK ((char_length(traceparent) <= 128)) NOT VALID;

ALTER TABLE thryve.settings ADD CONSTRAINT settings_pkey PRIMARY KEY (key);

ALTER TABLE thryve.source_connections ADD CONSTRAINT source_connections_origin_check CHECK ((origin = ANY (ARRAY['webhook'::text, 'reconcile'::text])));

ALTER TABLE thryve.source_connections ADD CONSTRAINT source_connections_pkey PRIMARY KEY (end_user_id, data_source_id);


-- indexes

CREATE UNIQUE INDEX daily_values_pkey ON thryve.daily_values USING btree (end_user_id, data_source_id, data_type_id, day);

CREATE UNIQUE INDEX data_sources_pkey ON thryve.data_sources USING btree (data_source_id);

CREATE UNIQUE INDEX data_types_pkey ON thryve.data_types USING btree (data_type_id, granularity);

CREATE INDEX dirty_ranges_claimed_lease_idx ON thryve.dirty_ranges USING btree (lease_expires_at) WHERE (status = 'claimed'::text);

CREATE INDEX dirty_ranges_done_idx ON thryve.dirty_ranges USING btree (completed_at) WHERE (status = 'done'::text);

CREATE INDEX dirty_ranges_end_user_idx ON thryve.dirty_ranges USING btree (end_user_id);

CREATE INDEX dirty_ranges_pending_daily_excl ON thryve.dirty_ranges USING gist (range_key, daterange(start_day, end_day, '[]'::text)) WHERE ((status = 'pending'::text) AND (granularity = 'daily'::text));

CREATE INDEX dirty_ranges_pending_epoch_excl ON thryve.dirty_ranges USING gist (range_key, tstzrange(start_time, end_time, '[]'::text)) WHERE ((status = 'pending'::text) AND (granularity = 'epoch'::text));

CREATE INDEX dirty_ranges_pending_fetch_idx ON thryve.dirty_ranges USING btree (first_dirtied_at, id) WHERE ((status = 'pending'::text) AND needs_fetch);

CREATE INDEX dirty_ranges_pending_order_idx ON thryve.dirty_ranges USING btree (first_dirtied_at, id) WHERE (status = 'pending'::text);

CREATE UNIQUE INDEX dirty_ranges_pkey ON thryve.dirty_ranges USING btree (id);

CREATE INDEX dirty_ranges_settled_dirtied_idx ON thryve.dirty_ranges USING btree (status, first_dirtied_at) WHERE (status <> 'pending'::text);

CREATE UNIQUE INDEX epoch_values_key ON thryve.epoch_values USING btree (end_user_id, data_source_id, data_type_id, start_time, end_key, generation, third_party_data_source_id) NULLS NOT DISTINCT;

CREATE UNIQUE INDEX fetchers_pkey ON thryve.fetchers USING btree (worker);

CREATE INDEX inbox_end_user_idx ON thryve.inbox USING btree (end_user_id);

CREATE UNIQUE INDEX inbox_fingerprint_key ON thryve.inbox USING btree (fingerprint);

CREATE INDEX inbox_parked_received_idx ON thryve.inbox USING btree (status, last_received_at) WHERE (status = ANY (ARRAY['quarantined'::text, 'ignored'::text]));

CREATE INDEX inbox_payload_kept_idx ON thryve.inbox USING btree (processed_at) WHERE ((status = 'processed'::text) AND (payload <> 'null'::jsonb));

CREATE INDEX inbox_pending_idx ON thryve.inbox USING btree (id) WHERE (status = 'pending'::text);

CREATE UNIQUE INDEX inbox_pkey ON thryve.inbox USING btree (id);

CREATE INDEX inbox_processed_idx ON thryve.inbox USING btree (processed_at) INCLUDE (last_received_at) WHERE (status = 'processed'::text);

CREATE UNIQUE INDEX settings_pkey ON thryve.settings USING btree (key);

CREATE UNIQUE INDEX source_connections_pkey ON thryve.source_connections USING btree (end_user_id, data_source_id);


-- views

CREATE VIEW thryve.daily_values_named AS
 SELECT v.end_user_id,
    v.data_source_id,
    s.name AS data_source_name,
    v.data_type_id,
    t.name AS data_type_name,
    t.unit,
    v.day,
    v.timezone_offset,
    v.value,
    COALESCE(v.value_numeric, (
        CASE lower(v.value)
            WHEN 'true'::text THEN 1
            WHEN 'false'::text THEN 0
            ELSE NULL::integer
        END)::numeric) AS value_numeric,
    v.generation,
    v.details
   FROM ((thryve.daily_values v
     LEFT JOIN thryve.data_sources s ON ((s.data_source_id = v.data_source_id)))
     LEFT JOIN thryve.data_types t ON (((t.data_type_id = v.data_type_id) AND (t.granularity = 'daily'::text))));

CREATE VIEW thryve.epoch_values_named AS
 SELECT v.end_user_id,
    v.data_source_id,
    s.name AS data_source_name,
    v.data_type_id,
    t.name AS data_type_name,
    t.unit,
    v.start_time,
    v.end_time,
    v.timezone_offset,
    v.value,
    COALESCE(v.value_numeric, (
        CASE lower(v.value)
            WHEN 'true'::text THEN 1
            WHEN 'false'::text THEN 0
            ELSE NULL::integer
        END)::numeric) AS value_numeric,
    v.generation,
    v.details
   FROM ((thryve.epoch_values v
     LEFT JOIN thryve.data_sources s ON ((s.data_source_id = v.data_source_id)))
     LEFT JOIN thryve.data_types t ON (((t.data_type_id = v.data_type_id) AND (t.granularity = 'epoch'::text))));


-- functions

CREATE OR REPLACE FUNCTION thryve.abandon_dirty_range(range_id bigint, worker text, error text)
 RETURNS boolean
 LANGUAGE sql
AS $function$
    SELECT thryve.abandon_dirty_range(range_id, worker, error, NULL::uuid)
$function$
;

CREATE OR REPLACE FUNCTION thryve.abandon_dirty_range(range_id bigint, worker text, error text, token uuid)
 RETURNS boolean
 LANGUAGE sql
AS $function$
    WITH failed AS (
        UPDATE thryve.dirty_ranges SET
            status = 'failed', lease_expires_at = NULL, last_error = error
        WHERE id = range_id AND status = 'claimed' AND claimed_by = worker
          AND (token IS NULL OR claim_token = token)
        RETURNING 1)
    SELECT EXISTS (SELECT 1 FROM failed)
$function$
;

CREATE OR REPLACE FUNCTION thryve.claim_dirty_ranges(worker text, max_ranges integer, lease interval)
 RETURNS SETOF thryve.dirty_ranges
 LANGUAGE sql
AS $function$
    SELECT * FROM thryve.claim_dirty_ranges(worker, max_ranges, lease, 'fetch')
$function$
;

CREATE OR REPLACE FUNCTION thryve.claim_dirty_ranges(worker text, max_ranges integer, lease interval, mode text)
 RETURNS SETOF thryve.dirty_ranges
 LANGUAGE plpgsql
AS $function$
DECLARE
    v_max_attempts integer := thryve.setting_int('range_max_attempts', 5);
    v_claimed integer;
    v_all boolean;
BEGIN
    IF worker IS NULL OR worker = '' THEN
        RAISE EXCEPTION 'worker must name the claimer';
    END IF;
    IF mode IS NULL OR mode NOT IN ('fetch', 'all') THEN
        RAISE EXCEPTION 'mode must be fetch or all, not %', coalesce(mode, 'null');
    END IF;
    v_all := mode = 'all';
    UPDATE thryve.dirty_ranges SET
        status = 'failed', lease_expires_at = NULL,
        last_error = 'lease expired after ' || attempts || ' attempts; last error: '
                     || coalesce(last_error, 'none')
    WHERE status = 'claimed' AND lease_expires_at < now() AND attempts >= v_max_attempts;

    RETURN QUERY
    WITH picked AS MATERIALIZED (
        SELECT id FROM thryve.dirty_ranges
        WHERE status = 'claimed' AND lease_expires_at < now() AND (v_all OR needs_fetch)
        ORDER BY lease_expires_at
        LIMIT max_ranges
        FOR UPDATE SKIP LOCKED)
    UPDATE thryve.dirty_ranges d SET
        claimed_by = worker, lease_expires_at = now() + lease, attempts = d.attempts + 1,
        claim_token = gen_random_uuid()
    FROM picked WHERE d.id = picked.id
    RETURNING d.*;
    GET DIAGNOSTICS v_claimed = ROW_COUNT;

    -- Two statements, each with its predicate spelled out, so that each walks its own index
    -- in claim order: push-only ranges nobody claims must not slow a fetching worker down.
    IF v_all THEN
        RETURN QUERY
        WITH picked AS MATERIALIZED (
            SELECT id FROM thryve.dirty_ranges
            WHERE status = 'pending' AND available_at <= now()
            ORDER BY first_dirtied_at, id
            LIMIT greatest(max_ranges - v_claimed, 0)
            FOR UPDATE SKIP LOCKED)
        UPDATE thryve.dirty_ranges d SET
            status = 'claimed', claimed_by = worker, lease_expires_at = now() + lease,
            attempts = d.attempts + 1, claim_token = gen_random_uuid()
        FROM picked WHERE d.id = picked.id
        RETURNING d.*;
    ELSE
        RETURN QUERY
        WITH picked AS MATERIALIZED (
            SELECT id FROM thryve.dirty_ranges
            WHERE status = 'pending' AND needs_fetch AND available_at <= now()
            ORDER BY first_dirtied_at, id
            LIMIT greatest(max_ranges - v_claimed, 0)
            FOR UPDATE SKIP LOCKED)
        UPDATE thryve.dirty_ranges d SET
            status = 'claimed', claimed_by = worker, lease_expires_at = now() + lease,
            attempts = d.attempts + 1, claim_token = gen_random_uuid()
        FROM picked WHERE d.id = picked.id
        RETURNING d.*;
    END IF;
END
$function$
;

CREATE OR REPLACE FUNCTION thryve.complete_dirty_range(range_id bigint, worker text)
 RETURNS boolean
 LANGUAGE sql
AS $function$
    SELECT thryve.complete_dirty_range(range_id, worker, NULL::uuid)
$function$
;

CREATE OR REPLACE FUNCTION thryve.complete_dirty_range(range_id bigint, worker text, token uuid)
 RETURNS boolean
 LANGUAGE sql
AS $function$
    WITH done AS (
        UPDATE thryve.dirty_ranges SET
            status = 'done', lease_expires_at = NULL, completed_at = now()
        WHERE id = range_id AND status = 'claimed' AND claimed_by = worker
          AND (token IS NULL OR claim_token = token)
        RETURNING 1)
    SELECT EXISTS (SELECT 1 FROM done)
$function$
;

CREATE OR REPLACE FUNCTION thryve.extend_dirty_range_lease(range_id bigint, worker text, lease interval)
 RETURNS boolean
 LANGUAGE sql
AS $function$
    SELECT thryve.extend_dirty_range_lease(range_id, worker, lease, NULL::uuid)
$function$
;

CREATE OR REPLACE FUNCTION thryve.extend_dirty_range_lease(range_id bigint, worker text, lease interval, token uuid)
 RETURNS boolean
 LANGUAGE sql
AS $function$
    WITH extended AS (
        UPDATE thryve.dirty_ranges SET lease_expires_at = now() + lease
        WHERE id = range_id AND status = 'claimed' AND claimed_by = worker
          AND (token IS NULL OR claim_token = token)
        RETURNING 1)
    SELECT EXISTS (SELECT 1 FROM extended)
$function$
;

CREATE OR REPLACE FUNCTION thryve.fail_dirty_range(range_id bigint, worker text, error text, retry_in interval)
 RETURNS boolean
 LANGUAGE sql
AS $function$
    SELECT thryve.fail_dirty_range(range_id, worker, error, retry_in, NULL::uuid)
$function$
;

CREATE OR REPLACE FUNCTION thryve.fail_dirty_range(range_id bigint, worker text, error text, retry_in interval, token uuid)
 RETURNS boolean
 LANGUAGE plpgsql
AS $function$
DECLARE
    r thryve.dirty_ranges%ROWTYPE;
BEGIN
    -- The key never changes, so it can be read unlocked; the key's advisory lock is taken
    -- before the row lock, in the same order as the poller's merges, so neither waits on the other in a cycle.
    SELECT * INTO r FROM thryve.dirty_ranges WHERE id = range_id;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    PERFORM pg_advisory_xact_lock(thryve.range_lock_key(r.end_user_id, r.data_source_id, r.granularity));
    SELECT * INTO r FROM thryve.dirty_ranges d
    WHERE d.id = range_id AND d.status = 'claimed' AND d.claimed_by = worker
      AND (token IS NULL OR d.claim_token = token)
    FOR UPDATE;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    IF r.attempts >= thryve.setting_int('range_max_attempts', 5) THEN
        UPDATE thryve.dirty_ranges SET status = 'failed', lease_expires_at = NULL, last_error = error
        WHERE id = range_id;
        RETURN true;
    END IF;
    DELETE FROM thryve.dirty_ranges WHERE id = range_id;
    PERFORM thryve.merge_dirty_range(
        r.end_user_id, r.data_source_id, r.granularity, r.data_type_ids, r.start_time,
        r.end_time, r.start_day, r.end_day, r.notification_count, r.first_dirtied_at,
        r.attempts, now() + coalesce(retry_in, interval '0'), error, r.needs_fetch);
    RETURN true;
END
$function$
;

CREATE OR REPLACE FUNCTION thryve.merge_dirty_range(p_end_user_id text, p_data_source_id integer, p_granularity text, p_data_type_ids integer[], p_start_time timestamp with time zone, p_end_time timestamp with time zone, p_start_day date, p_end_day date, p_notification_count integer DEFAULT 1, p_first_dirtied_at timestamp with time zone DEFAULT now(), p_attempts integer DEFAULT 0, p_available_at timestamp with time zone DEFAULT now(), p_last_error text DEFAULT NULL::text, p_needs_fetch boolean DEFAULT true)
 RETURNS bigint
 LANGUAGE plpgsql
AS $function$
DECLARE
    v_id bigint;
BEGIN
    PERFORM thryve.merge_dirty_ranges(
        ARRAY[p_end_user_id], ARRAY[p_data_source_id], ARRAY[p_granularity],
        ARRAY[p_data_type_ids::text], ARRAY[p_start_time], ARRAY[p_end_time], ARRAY[p_start_day],
        ARRAY[p_end_day], ARRAY[p_notification_count], ARRAY[p_first_dirtied_at],
        ARRAY[p_attempts], ARRAY[p_available_at], ARRAY[p_last_error], ARRAY[p_needs_fetch]);
    SELECT id INTO v_id FROM thryve.dirty_ranges
    WHERE status = 'pending' AND end_user_id = p_end_user_id
      AND data_source_id = p_data_source_id AND granularity = p_granularity
      AND (start_time <= p_start_time AND end_time >= p_end_time
           OR start_day <= p_start_day AND end_day >= p_end_day);
    RETURN v_id;
END
$function$
;

CREATE OR REPLACE FUNCTION thryve.merge_dirty_ranges(p_end_user_ids text[], p_data_source_ids integer[], p_granularities text[], p_data_type_ids text[], p_start_times timestamp with time zone[], p_end_times timestamp with time zone[], p_start_days date[], p_end_days date[], p_notification_counts integer[], p_first_dirtied_ats timestamp with time zone[] DEFAULT NULL::timestamp with time zone[], p_attempts integer[] DEFAULT NULL::integer[], p_available_ats timestamp with time zone[] DEFAULT NULL::timestamp with time zone[], p_last_errors text[] DEFAULT NULL::text[], p_needs_fetch boolean[] DEFAULT NULL::boolean[])
 RETURNS integer
 LANGUAGE plpgsql
AS $function$
DECLARE
    v_hits bigint[];
BEGIN
    IF p_needs_fetch IS NOT NULL AND false = ANY (p_needs_fetch)
       AND coalesce((SELECT value FROM thryve.settings WHERE key = 'push_ranges'), 'on') = 'off' THEN
        SELECT array_agg(u ORDER BY n), array_agg(ds ORDER BY n), array_agg(g ORDER BY n),
               array_agg(dt ORDER BY n), array_agg(st ORDER BY n), array_agg(et ORDER BY n),
               array_agg(sd ORDER BY n), array_agg(ed ORDER BY n), array_agg(c ORDER BY n),
               array_agg(fd ORDER BY n), array_agg(a ORDER BY n), array_agg(av ORDER BY n),
               array_agg(le ORDER BY n), array_agg(nf ORDER BY n)
        INTO p_end_user_ids, p_data_source_ids, p_granularities, p_data_type_ids, p_start_times,
             p_end_times, p_start_days, p_end_days, p_notification_counts, p_first_dirtied_ats,
             p_attempts, p_available_ats, p_last_errors, p_needs_fetch
        FROM unnest(p_end_user_ids, p_data_source_ids, p_granularities, p_data_type_ids,
                    p_start_times, p_end_times, p_start_days, p_end_days, p_notification_counts,
                    p_first_dirtied_ats, p_attempts, p_available_ats, p_last_errors, p_needs_fetch)
             WITH ORDINALITY AS s(u, ds, g, dt, st, et, sd, ed, c, fd, a, av, le, nf, n)
        WHERE coalesce(nf, true) OR coalesce(a, 0) > 0;
        IF p_end_user_ids IS NULL THEN
            RETURN 0;
        END IF;
    END IF;

    PERFORM pg_advisory_xact_lock(k) FROM (
        SELECT DISTINCT thryve.range_lock_key(u, ds, g) AS k
        FROM unnest(p_end_user_ids, p_data_source_ids, p_granularities) AS s(u, ds, g)
        ORDER BY 1) keys;

    -- Pending ranges each span overlaps or touches (a day span widened by a day on each side
    -- overlaps exactly the ranges it touches), found through the exclusion constraints' indexes.
    -- LATERAL keeps the lookup a per-span probe of the index, whatever the statistics say.
    SELECT array_agg(DISTINCT id) INTO v_hits FROM (
        SELECT h.id
        FROM unnest(p_end_user_ids, p_data_source_ids, p_granularities, p_start_times, p_end_times,
                    p_start_days, p_end_days) AS s(u, ds, g, st, et, sd, ed)
        CROSS JOIN LATERAL (SELECT thryve.range_lock_key(s.u, s.ds, s.g) AS k) lk
        CROSS JOIN LATERAL (
            SELECT r.id FROM thryve.dirty_ranges r
            WHERE s.g = 'epoch' AND r.status = 'pending' AND r.granularity = 'epoch'
              AND r.range_key = lk.k AND r.end_user_id = s.u AND r.data_source_id = s.ds
              AND tstzrange(r.start_time, r.end_time, '[]') && tstzrange(s.st, s.et, '[]')
            UNION ALL
            SELECT r.id FROM thryve.dirty_ranges r
            WHERE s.g = 'daily' AND r.status = 'pending' AND r.granularity = 'daily'
              AND r.range_key = lk.k AND r.end_user_id = s.u AND r.data_source_id = s.ds
              AND daterange(r.start_day, r.end_day, '[]') && daterange(s.sd - 1, s.ed + 1, '[]')) h
        ) hits;

    -- Lock them by primary key; one a worker claimed meanwhile is no longer pending and drops
    -- out. The status is checked on the locked (latest) row versions, outside the locking
    -- scan: OFFSET 0 keeps the planner from pushing it down, where it chose to combine the
    -- primary key with an index over every pending range.
    SELECT array_agg(id) INTO v_hits FROM (
        SELECT id, status FROM thryve.dirty_ranges
        WHERE id = ANY (v_hits)
        ORDER BY id OFFSET 0 FOR UPDATE) locked
    WHERE status = 'pending';

    -- Gaps and islands: per key, sorted by start, an item joins the group before it when it
    -- starts no later than the furthest reach so far (end, or end + 1 day for days).
    WITH items AS (
        SELECT u, ds, g, dt::integer[] AS types, st, et, sd, ed, coalesce(c, 1) AS cnt,
               coalesce(fd, now()) AS first_dirtied, coalesce(a, 0) AS attempts,
               coalesce(av, now()) AS available, le AS last_error, NULL::bigint AS id,
               now() AS last_dirtied, coalesce(nf, true) AS needs_fetch
        FROM unnest(p_end_user_ids, p_data_source_ids, p_granularities, p_data_type_ids,
                    p_start_times, p_end_times, p_start_days, p_end_days, p_notification_counts,
                    p_first_dirtied_ats, p_attempts, p_available_ats, p_last_errors, p_needs_fetch)
             AS s(u, ds, g, dt, st, et, sd, ed, c, fd, a, av, le, nf)
        UNION ALL
        SELECT end_user_id, data_source_id, granularity, data_type_ids, start_time, end_time,
               start_day, end_day, notification_count, first_dirtied_at, attempts, available_at,
               last_error, id, last_dirtied_at, needs_fetch
        FROM thryve.dirty_ranges WHERE id = ANY (v_hits)),
    bounded AS (
        SELECT *, coalesce(st, sd::timestamp AT TIME ZONE 'UTC') AS lo,
               coalesce(et, ed::timestamp AT TIME ZONE 'UTC')
                 + CASE WHEN g = 'daily' THEN interval '1 day' ELSE interval '0' END AS reach
        FROM items),
    marked AS (
        SELECT *, coalesce(lo <= max(reach) OVER (PARTITION BY u, ds, g ORDER BY lo, reach
                           ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING), false) AS joins
        FROM bounded),
    grouped AS (
        SELECT *, count(*) FILTER (WHERE NOT joins) OVER (PARTITION BY u, ds, g ORDER BY lo, reach
                  ROWS UNBOUNDED PRECEDING) AS grp
        FROM marked),
    merged AS (
        SELECT u, ds, g, grp, min(id) AS keep, array_agg(id) FILTER (WHERE id IS NOT NULL) AS old_ids,
               min(st) AS st, max(et) AS et, min(sd) AS sd, max(ed) AS ed, sum(cnt)::integer AS cnt,
               min(first_dirtied) AS first_dirtied, max(attempts) AS attempts,
               max(available) AS available,
               coalesce(max(last_error) FILTER (WHERE id IS NULL), max(last_error)) AS last_error,
               -- now() is the transaction's start: a transaction that began earlier but
               -- merges later must not move last_dirtied_at back.
               greatest(max(last_dirtied), now()) AS last_dirtied,
               bool_or(needs_fetch) AS needs_fetch
        FROM grouped
        GROUP BY u, ds, g, grp
        HAVING bool_or(id IS NULL)),
    -- The union of the types, or '{}' (all types) when any member names all types.
    typed AS (
        SELECT gr.u, gr.ds, gr.g, gr.grp,
               CASE WHEN bool_or(coalesce(cardinality(gr.types), 0) = 0) THEN '{}'::integer[]
                    ELSE array_agg(DISTINCT t.t ORDER BY t.t) FILTER (WHERE t.t IS NOT NULL)
               END AS types
        FROM grouped gr LEFT JOIN LATERAL unnest(gr.types) AS t(t) ON true
        GROUP BY gr.u, gr.ds, gr.g, gr.grp),
    gone AS (
        DELETE FROM thryve.dirty_ranges d USING merged m
        WHERE d.id = ANY (m.old_ids) AND d.id <> m.keep),
    widened AS (
        UPDATE thryve.dirty_ranges d SET
            data_type_ids = t.types, start_time = m.st, end_time = m.et, start_day = m.sd,
            end_day = m.ed, notification_count = m.cnt, first_dirtied_at = m.first_dirtied,
            last_dirtied_at = m.last_dirtied, attempts = m.attempts, available_at = m.available,
            last_error = m.last_error, needs_fetch = m.needs_fetch
        FROM merged m JOIN typed t USING (u, ds, g, grp)
        WHERE d.id = m.keep)
    INSERT INTO thryve.dirty_ranges (
        end_user_id, data_source_id, granularity, data_type_ids, start_time, end_time, start_day,
        end_day, notification_count, first_dirtied_at, last_dirtied_at, attempts, available_at,
        last_error, needs_fetch)
    SELECT m.u, m.ds, m.g, t.types, m.st, m.et, m.sd, m.ed, m.cnt, m.first_dirtied,
           m.last_dirtied, m.attempts, m.available, m.last_error, m.needs_fetch
    FROM merged m JOIN typed t USING (u, ds, g, grp)
    WHERE m.keep IS NULL;

    RETURN coalesce(cardinality(p_end_user_ids), 0);
END
$function$
;

CREATE OR REPLACE FUNCTION thryve.notify_pending_ranges()
 RETURNS trigger
 LANGUAGE plpgsql
AS $function$
BEGIN
    IF EXISTS (SELECT 1 FROM changed_ranges WHERE status = 'pending') THEN
        PERFORM pg_notify('thryve_dirty_ranges', '');
    END IF;
    RETURN NULL;
END
$function$
;

CREATE OR REPLACE FUNCTION thryve.range_lock_key(p_end_user_id text, p_data_source_id integer, p_granularity text)
 RETURNS bigint
 LANGUAGE sql
 IMMUTABLE PARALLEL SAFE
AS $function$
    SELECT hashtextextended(p_granularity || ':' || p_data_source_id || ':' || p_end_user_id, 20261126)
$function$
;

CREATE OR REPLACE FUNCTION thryve.setting_int(p_key text, p_default integer)
 RETURNS integer
 LANGUAGE sql
 STABLE
AS $function$
    SELECT coalesce((SELECT value::integer FROM thryve.settings WHERE key = p_key), p_default)
$function$
;


-- triggers

CREATE TRIGGER dirty_ranges_notify_insert AFTER INSERT ON thryve.dirty_ranges REFERENCING NEW TABLE AS changed_ranges FOR EACH STATEMENT EXECUTE FUNCTION thryve.notify_pending_ranges();

CREATE TRIGGER dirty_ranges_notify_update AFTER UPDATE ON thryve.dirty_ranges REFERENCING NEW TABLE AS changed_ranges FOR EACH STATEMENT EXECUTE FUNCTION thryve.notify_pending_ranges();

