-- Issue 12 (with issue 11 item 3 and issue 13 item 7): push ranges that say what changed and
-- whether it still needs a fetch; values that never collide; the newest push wins; claim tokens.
--
-- * dirty_ranges.needs_fetch: true when anything in the range came from a notification or a
--   legacy delivery (its data must be fetched from Thryve); false when only data pushes made
--   it (their values are already in epoch_values/daily_values). Merging ORs it. Existing
--   ranges become true: nothing says where they came from, and a fetch is the safe reading.
-- * dirty_ranges.data_type_ids = '{}' means "all types" (a legacy trigger that names none);
--   merged with typed spans it stays '{}'.
-- * dirty_ranges.claim_token: a fresh uuid on every claim, checked by the new overloads of
--   complete/fail/extend, so a stale worker that shares a name with the current holder
--   cannot finish the other's claim.
-- * settings.push_ranges ('on' | 'off'): 'off' stops data pushes from making ranges.
-- * inbox.signed_at: the delivery's verified-window x-hmac-timestamp; the version of its
--   values is coalesce(signed_at, first_received_at).
-- * epoch_values is keyed (user, source, type, start_time, end_key) with
--   end_key = coalesce(end_time, start_time); both value tables carry version_at.
-- * data_sources: the dataSourceName a push gave for each dataSourceId.

ALTER TABLE thryve.inbox ADD COLUMN signed_at timestamptz;
COMMENT ON COLUMN thryve.inbox.signed_at IS
    'x-hmac-timestamp of the delivery, when present and within the window; the version of its values is coalesce(signed_at, first_received_at).';

ALTER TABLE thryve.dirty_ranges
    ADD COLUMN needs_fetch boolean NOT NULL DEFAULT true,
    ADD COLUMN claim_token uuid;
COMMENT ON COLUMN thryve.dirty_ranges.needs_fetch IS
    'true: something in the range came from a notification and must be fetched from Thryve; false: only pushes made it, their values are stored.';
COMMENT ON COLUMN thryve.dirty_ranges.claim_token IS
    'Set on every claim; pass it to complete/fail/extend so that only this claim can finish the range.';
COMMENT ON COLUMN thryve.dirty_ranges.data_type_ids IS
    'Sorted, distinct; empty means all types (a data-API call then omits valueTypes).';

-- A fetching worker's claim order (the 'all' claim walks dirty_ranges_pending_order_idx).
CREATE INDEX dirty_ranges_pending_fetch_idx
    ON thryve.dirty_ranges (first_dirtied_at, id) WHERE status = 'pending' AND needs_fetch;

INSERT INTO thryve.settings (key, value) VALUES ('push_ranges', 'on') ON CONFLICT (key) DO NOTHING;
COMMENT ON TABLE thryve.settings IS
    'range_max_attempts: claims after which a failing range ends in status failed. push_ranges: on|off, whether data pushes make dirty ranges.';

-- Values: see the README ("Pushed values") for why this key.
ALTER TABLE thryve.epoch_values
    ADD COLUMN end_key timestamptz GENERATED ALWAYS AS (coalesce(end_time, start_time)) STORED,
    ADD COLUMN version_at timestamptz;
-- Existing rows: the version their delivery would have had (its receipt), else when written.
UPDATE thryve.epoch_values e SET version_at = coalesce(
    (SELECT i.first_received_at FROM thryve.inbox i WHERE i.id = e.inbox_id), e.updated_at);
ALTER TABLE thryve.epoch_values ALTER COLUMN version_at SET NOT NULL,
    ALTER COLUMN version_at SET DEFAULT now();
ALTER TABLE thryve.epoch_values DROP CONSTRAINT epoch_values_pkey;
ALTER TABLE thryve.epoch_values ADD CONSTRAINT epoch_values_pkey
    PRIMARY KEY (end_user_id, data_source_id, data_type_id, start_time, end_key);
COMMENT ON COLUMN thryve.epoch_values.version_at IS
    'Signing time (else receipt) of the delivery that wrote the row: an older push never overwrites a newer one.';

ALTER TABLE thryve.daily_values ADD COLUMN version_at timestamptz;
UPDATE thryve.daily_values d SET version_at = coalesce(
    (SELECT i.first_received_at FROM thryve.inbox i WHERE i.id = d.inbox_id), d.updated_at);
ALTER TABLE thryve.daily_values ALTER COLUMN version_at SET NOT NULL,
    ALTER COLUMN version_at SET DEFAULT now();
COMMENT ON COLUMN thryve.daily_values.version_at IS
    'Signing time (else receipt) of the delivery that wrote the row: an older push never overwrites a newer one.';

CREATE TABLE thryve.data_sources (
    data_source_id integer     PRIMARY KEY,
    -- dataSourceName as the latest push (highest inbox id) gave it.
    name           text        NOT NULL,
    inbox_id       bigint      NOT NULL,
    updated_at     timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE thryve.data_sources IS 'dataSourceName per dataSourceId, as data pushes name them.';
-- Names from pushes whose payload is still kept.
INSERT INTO thryve.data_sources (data_source_id, name, inbox_id)
SELECT DISTINCT ON ((e->>'dataSourceId')::integer) (e->>'dataSourceId')::integer, e->>'dataSourceName', i.id
FROM thryve.inbox i
CROSS JOIN LATERAL jsonb_array_elements(
    CASE WHEN jsonb_typeof(i.payload->'data') = 'array' THEN i.payload->'data' END) e
WHERE i.event_type LIKE 'event.data.%' AND i.status = 'processed'
  AND jsonb_typeof(e->'dataSourceName') = 'string'
  AND e->>'dataSourceId' ~ '^[0-9]{1,9}$'
ORDER BY (e->>'dataSourceId')::integer, i.id DESC;

-- merge_dirty_ranges gains p_needs_fetch (NULL: every span needs a fetch) at the end, so
-- every existing call resolves as before; the old signature must go for the new to be
-- unambiguous. The body is 20261127000004's with three changes: needs_fetch is ORed, an
-- all-types span ('{}') keeps its group all-types (before, a group of only '{}' spans was
-- dropped by the join with the type union), and with push_ranges off, new push-only spans
-- (attempts 0, needs_fetch false) are left out.
DROP FUNCTION thryve.merge_dirty_range(text, integer, text, integer[], timestamptz, timestamptz,
    date, date, integer, timestamptz, integer, timestamptz, text);
DROP FUNCTION thryve.merge_dirty_ranges(text[], integer[], text[], text[], timestamptz[],
    timestamptz[], date[], date[], integer[], timestamptz[], integer[], timestamptz[], text[]);

CREATE FUNCTION thryve.merge_dirty_ranges(
    p_end_user_ids        text[],
    p_data_source_ids     integer[],
    p_granularities       text[],
    p_data_type_ids       text[],
    p_start_times         timestamptz[],
    p_end_times           timestamptz[],
    p_start_days          date[],
    p_end_days            date[],
    p_notification_counts integer[],
    p_first_dirtied_ats   timestamptz[] DEFAULT NULL,
    p_attempts            integer[]     DEFAULT NULL,
    p_available_ats       timestamptz[] DEFAULT NULL,
    p_last_errors         text[]        DEFAULT NULL,
    p_needs_fetch         boolean[]     DEFAULT NULL
) RETURNS integer LANGUAGE plpgsql AS $$
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
$$;

-- One span into pending work (the same merge as merge_dirty_ranges); returns the id of the
-- pending range that now holds it.
CREATE FUNCTION thryve.merge_dirty_range(
    p_end_user_id        text,
    p_data_source_id     integer,
    p_granularity        text,
    p_data_type_ids      integer[],
    p_start_time         timestamptz,
    p_end_time           timestamptz,
    p_start_day          date,
    p_end_day            date,
    p_notification_count integer     DEFAULT 1,
    p_first_dirtied_at   timestamptz DEFAULT now(),
    p_attempts           integer     DEFAULT 0,
    p_available_at       timestamptz DEFAULT now(),
    p_last_error         text        DEFAULT NULL,
    p_needs_fetch        boolean     DEFAULT true
) RETURNS bigint LANGUAGE plpgsql AS $$
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
$$;

-- Claims up to max_ranges ranges for worker, oldest work first: pending ranges past their
-- backoff, and claimed ranges whose lease expired (their worker is presumed dead). mode
-- 'fetch': only ranges whose data must be fetched from Thryve (needs_fetch); 'all': every
-- range, push-only ones included (for workers that recompute from what changed). Each claim
-- counts as an attempt and gets a new claim_token; an expired range out of attempts ends
-- failed instead.
CREATE FUNCTION thryve.claim_dirty_ranges(worker text, max_ranges integer, lease interval, mode text)
RETURNS SETOF thryve.dirty_ranges LANGUAGE plpgsql AS $$
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
$$;

-- The call users make today: ranges to re-fetch (mode 'fetch'). A push-only range is never
-- returned here; claim it with mode 'all'.
CREATE OR REPLACE FUNCTION thryve.claim_dirty_ranges(worker text, max_ranges integer, lease interval)
RETURNS SETOF thryve.dirty_ranges LANGUAGE sql AS $$
    SELECT * FROM thryve.claim_dirty_ranges(worker, max_ranges, lease, 'fetch')
$$;

-- With token: only the claim that returned it may complete. The overloads without a token
-- check the worker name only, so two running workers that share a name can complete, fail or
-- extend each other's claims.
CREATE FUNCTION thryve.complete_dirty_range(range_id bigint, worker text, token uuid)
RETURNS boolean LANGUAGE sql AS $$
    WITH done AS (
        UPDATE thryve.dirty_ranges SET
            status = 'done', lease_expires_at = NULL, completed_at = now()
        WHERE id = range_id AND status = 'claimed' AND claimed_by = worker
          AND (token IS NULL OR claim_token = token)
        RETURNING 1)
    SELECT EXISTS (SELECT 1 FROM done)
$$;

CREATE OR REPLACE FUNCTION thryve.complete_dirty_range(range_id bigint, worker text)
RETURNS boolean LANGUAGE sql AS $$
    SELECT thryve.complete_dirty_range(range_id, worker, NULL::uuid)
$$;

CREATE FUNCTION thryve.extend_dirty_range_lease(range_id bigint, worker text, lease interval, token uuid)
RETURNS boolean LANGUAGE sql AS $$
    WITH extended AS (
        UPDATE thryve.dirty_ranges SET lease_expires_at = now() + lease
        WHERE id = range_id AND status = 'claimed' AND claimed_by = worker
          AND (token IS NULL OR claim_token = token)
        RETURNING 1)
    SELECT EXISTS (SELECT 1 FROM extended)
$$;

CREATE OR REPLACE FUNCTION thryve.extend_dirty_range_lease(range_id bigint, worker text, lease interval)
RETURNS boolean LANGUAGE sql AS $$
    SELECT thryve.extend_dirty_range_lease(range_id, worker, lease, NULL::uuid)
$$;

-- Records a failed attempt (see 20261126000002); with token, only for the claim that returned
-- it. The span goes back into pending work with its needs_fetch.
CREATE FUNCTION thryve.fail_dirty_range(range_id bigint, worker text, error text, retry_in interval, token uuid)
RETURNS boolean LANGUAGE plpgsql AS $$
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
$$;

CREATE OR REPLACE FUNCTION thryve.fail_dirty_range(range_id bigint, worker text, error text, retry_in interval)
RETURNS boolean LANGUAGE sql AS $$
    SELECT thryve.fail_dirty_range(range_id, worker, error, retry_in, NULL::uuid)
$$;
