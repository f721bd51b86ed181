-- Dirty ranges (work for downstream jobs), source connections, pushed values, and the SQL
-- functions that merge, claim, complete and fail ranges.
CREATE EXTENSION IF NOT EXISTS btree_gist;

-- Tunables read by the SQL functions; change with UPDATE, no restart needed.
CREATE TABLE thryve.settings (
    key   text PRIMARY KEY,
    value text NOT NULL
);
INSERT INTO thryve.settings (key, value) VALUES ('range_max_attempts', '5');
COMMENT ON TABLE thryve.settings IS
    'range_max_attempts: claims after which a failing range ends in status failed.';

-- One bigint per (user, source, granularity): the advisory lock that serialises merges of a
-- key, and the key of the exclusion constraints below (a gist index on one bigint is about
-- four times cheaper to maintain than one on text + integer).
CREATE FUNCTION thryve.range_lock_key(p_end_user_id text, p_data_source_id integer, p_granularity text)
RETURNS bigint LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT hashtextextended(p_granularity || ':' || p_data_source_id || ':' || p_end_user_id, 20261126)
$$;

CREATE TABLE thryve.dirty_ranges (
    id                 bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    end_user_id        text        NOT NULL,
    data_source_id     integer     NOT NULL,
    granularity        text        NOT NULL,
    data_type_ids      integer[]   NOT NULL,
    start_time         timestamptz,
    end_time           timestamptz,
    start_day          date,
    end_day            date,
    status             text        NOT NULL DEFAULT 'pending',
    notification_count integer     NOT NULL DEFAULT 1,
    first_dirtied_at   timestamptz NOT NULL DEFAULT now(),
    last_dirtied_at    timestamptz NOT NULL DEFAULT now(),
    claimed_by         text,
    lease_expires_at   timestamptz,
    attempts           integer     NOT NULL DEFAULT 0,
    last_error         text,
    -- A failed attempt backs off: the range is not claimable before this.
    available_at       timestamptz NOT NULL DEFAULT now(),
    completed_at       timestamptz,
    range_key          bigint GENERATED ALWAYS AS
                           (thryve.range_lock_key(end_user_id, data_source_id, granularity)) STORED,
    CONSTRAINT dirty_ranges_status_check
        CHECK (status IN ('pending', 'claimed', 'done', 'failed')),
    CONSTRAINT dirty_ranges_span_check CHECK (
        (granularity = 'epoch' AND start_time IS NOT NULL AND end_time IS NOT NULL
            AND start_time <= end_time AND start_day IS NULL AND end_day IS NULL)
        OR (granularity = 'daily' AND start_day IS NOT NULL AND end_day IS NOT NULL
            AND start_day <= end_day AND start_time IS NULL AND end_time IS NULL)),
    -- Guarantee 4 in the database itself: pending ranges of one key never overlap. (Two keys
    -- whose 64-bit hashes collide would also be kept apart: a merge of theirs then fails and
    -- the poller quarantines the row that caused it, with the reason.)
    -- DEFERRABLE (still checked at the end of each statement) so that one statement may
    -- delete merged ranges and widen their survivor in either order.
    CONSTRAINT dirty_ranges_pending_epoch_excl EXCLUDE USING gist (
        range_key WITH =, tstzrange(start_time, end_time, '[]') WITH &&)
        WHERE (status = 'pending' AND granularity = 'epoch') DEFERRABLE INITIALLY IMMEDIATE,
    CONSTRAINT dirty_ranges_pending_daily_excl EXCLUDE USING gist (
        range_key WITH =, daterange(start_day, end_day, '[]') WITH &&)
        WHERE (status = 'pending' AND granularity = 'daily') DEFERRABLE INITIALLY IMMEDIATE
)
-- Room on each page so that a merge that only adds types or counts to a range is a HOT
-- update, with no index to touch.
WITH (fillfactor = 70);

CREATE INDEX dirty_ranges_pending_order_idx
    ON thryve.dirty_ranges (first_dirtied_at, id) WHERE status = 'pending';
CREATE INDEX dirty_ranges_claimed_lease_idx
    ON thryve.dirty_ranges (lease_expires_at) WHERE status = 'claimed';
CREATE INDEX dirty_ranges_end_user_idx ON thryve.dirty_ranges (end_user_id);

COMMENT ON TABLE thryve.dirty_ranges IS
    'Spans of Thryve data that changed; claim with thryve.claim_dirty_ranges, re-fetch, then complete or fail.';

CREATE TABLE thryve.source_connections (
    end_user_id    text        NOT NULL,
    data_source_id integer     NOT NULL,
    connected      boolean     NOT NULL,
    -- The event's own timestamp: an older event never overwrites a newer one.
    changed_at     timestamptz NOT NULL,
    inbox_id       bigint,
    updated_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (end_user_id, data_source_id)
);

CREATE TABLE thryve.epoch_values (
    end_user_id     text        NOT NULL,
    data_source_id  integer     NOT NULL,
    data_type_id    integer     NOT NULL,
    start_time      timestamptz NOT NULL,
    end_time        timestamptz,
    timezone_offset integer,
    value           text        NOT NULL,
    value_numeric   numeric,
    updated_at      timestamptz NOT NULL DEFAULT now(),
    inbox_id        bigint      NOT NULL,
    PRIMARY KEY (end_user_id, data_source_id, data_type_id, start_time)
);

CREATE TABLE thryve.daily_values (
    end_user_id     text        NOT NULL,
    data_source_id  integer     NOT NULL,
    data_type_id    integer     NOT NULL,
    day             date        NOT NULL,
    timezone_offset integer,
    value           text        NOT NULL,
    value_numeric   numeric,
    updated_at      timestamptz NOT NULL DEFAULT now(),
    inbox_id        bigint      NOT NULL,
    PRIMARY KEY (end_user_id, data_source_id, data_type_id, day)
);


CREATE FUNCTION thryve.setting_int(p_key text, p_default integer)
RETURNS integer LANGUAGE sql STABLE AS $$
    SELECT coalesce((SELECT value::integer FROM thryve.settings WHERE key = p_key), p_default)
$$;

-- The merge, for any number of spans at once (the poller's batch; fail_dirty_range's one
-- span). Each span joins the pending work of its (user, source, granularity): spans and
-- pending ranges that overlap or touch (equal instants; adjacent days) become one range
-- (hull of the spans, union of the types, counts summed, earliest first_dirtied_at, most
-- attempts, latest backoff), kept under the oldest range's id. Claimed ranges are never
-- touched. Takes every key's advisory lock, in lock-key order, so concurrent callers cannot
-- deadlock; a pending range of a key only appears under its lock, so the ranges found here
-- stay the whole truth until commit. p_data_type_ids holds int[] literals ('{1,2}') because
-- a ragged int[][] cannot be passed. The optional arrays may be NULL (defaults: now(), 0,
-- now(), none). Returns the number of spans given.
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
    p_last_errors         text[]        DEFAULT NULL
) RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
    v_hits bigint[];
BEGIN
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

    -- Lock them; one a worker claimed meanwhile is no longer pending and drops out.
    SELECT array_agg(id) INTO v_hits FROM (
        SELECT id FROM thryve.dirty_ranges
        WHERE id = ANY (v_hits) AND status = 'pending'
        ORDER BY id FOR UPDATE) locked;

    -- Gaps and islands: per key, sorted by start, an item joins the group before it when it
    -- starts no later than the furthest reach so far (end, or end + 1 day for days).
    WITH items AS (
        SELECT u, ds, g, dt::integer[] AS types, st, et, sd, ed, coalesce(c, 1) AS cnt,
               coalesce(fd, now()) AS first_dirtied, coalesce(a, 0) AS attempts,
               coalesce(av, now()) AS available, le AS last_error, NULL::bigint AS id,
               now() AS last_dirtied
        FROM unnest(p_end_user_ids, p_data_source_ids, p_granularities, p_data_type_ids,
                    p_start_times, p_end_times, p_start_days, p_end_days, p_notification_counts,
                    p_first_dirtied_ats, p_attempts, p_available_ats, p_last_errors)
             AS s(u, ds, g, dt, st, et, sd, ed, c, fd, a, av, le)
        UNION ALL
        SELECT end_user_id, data_source_id, granularity, data_type_ids, start_time, end_time,
               start_day, end_day, notification_count, first_dirtied_at, attempts, available_at,
               last_error, id, last_dirtied_at
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
               greatest(max(last_dirtied), now()) AS last_dirtied
        FROM grouped
        GROUP BY u, ds, g, grp
        HAVING bool_or(id IS NULL)),
    typed AS (
        SELECT u, ds, g, grp, array_agg(DISTINCT t ORDER BY t) AS types
        FROM grouped CROSS JOIN LATERAL unnest(grouped.types) AS t
        GROUP BY u, ds, g, grp),
    gone AS (
        DELETE FROM thryve.dirty_ranges d USING merged m
        WHERE d.id = ANY (m.old_ids) AND d.id <> m.keep),
    widened AS (
        UPDATE thryve.dirty_ranges d SET
            data_type_ids = t.types, start_time = m.st, end_time = m.et, start_day = m.sd,
            end_day = m.ed, notification_count = m.cnt, first_dirtied_at = m.first_dirtied,
            last_dirtied_at = m.last_dirtied, attempts = m.attempts, available_at = m.available,
            last_error = m.last_error
        FROM merged m JOIN typed t USING (u, ds, g, grp)
        WHERE d.id = m.keep)
    INSERT INTO thryve.dirty_ranges (
        end_user_id, data_source_id, granularity, data_type_ids, start_time, end_time, start_day,
        end_day, notification_count, first_dirtied_at, last_dirtied_at, attempts, available_at,
        last_error)
    SELECT m.u, m.ds, m.g, t.types, m.st, m.et, m.sd, m.ed, m.cnt, m.first_dirtied,
           m.last_dirtied, m.attempts, m.available, m.last_error
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
    p_last_error         text        DEFAULT NULL
) RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    v_id bigint;
BEGIN
    PERFORM thryve.merge_dirty_ranges(
        ARRAY[p_end_user_id], ARRAY[p_data_source_id], ARRAY[p_granularity],
        ARRAY[p_data_type_ids::text], ARRAY[p_start_time], ARRAY[p_end_time], ARRAY[p_start_day],
        ARRAY[p_end_day], ARRAY[p_notification_count], ARRAY[p_first_dirtied_at],
        ARRAY[p_attempts], ARRAY[p_available_at], ARRAY[p_last_error]);
    SELECT id INTO v_id FROM thryve.dirty_ranges
    WHERE status = 'pending' AND end_user_id = p_end_user_id
      AND data_source_id = p_data_source_id AND granularity = p_granularity
      AND (start_time <= p_start_time AND end_time >= p_end_time
           OR start_day <= p_start_day AND end_day >= p_end_day);
    RETURN v_id;
END
$$;

-- Claims up to max_ranges ranges for worker, oldest work first: pending ranges past their
-- backoff, and claimed ranges whose lease expired (their worker is presumed dead). Each
-- claim counts as an attempt; an expired range out of attempts ends failed instead.
CREATE FUNCTION thryve.claim_dirty_ranges(worker text, max_ranges integer, lease interval)
RETURNS SETOF thryve.dirty_ranges LANGUAGE plpgsql AS $$
DECLARE
    v_max_attempts integer := thryve.setting_int('range_max_attempts', 5);
    v_claimed integer;
BEGIN
    IF worker IS NULL OR worker = '' THEN
        RAISE EXCEPTION 'worker must name the claimer';
    END IF;
    UPDATE thryve.dirty_ranges SET
        status = 'failed', lease_expires_at = NULL,
        last_error = 'lease expired after ' || attempts || ' attempts; last error: '
                     || coalesce(last_error, 'none')
    WHERE status = 'claimed' AND lease_expires_at < now() AND attempts >= v_max_attempts;

    RETURN QUERY
    WITH picked AS MATERIALIZED (
        SELECT id FROM thryve.dirty_ranges
        WHERE status = 'claimed' AND lease_expires_at < now()
        ORDER BY lease_expires_at
        LIMIT max_ranges
        FOR UPDATE SKIP LOCKED)
    UPDATE thryve.dirty_ranges d SET
        claimed_by = worker, lease_expires_at = now() + lease, attempts = d.attempts + 1
    FROM picked WHERE d.id = picked.id
    RETURNING d.*;
    GET DIAGNOSTICS v_claimed = ROW_COUNT;

    RETURN QUERY
    WITH picked AS MATERIALIZED (
        SELECT id FROM thryve.dirty_ranges
        WHERE status = 'pending' AND available_at <= now()
        ORDER BY first_dirtied_at, id
        LIMIT greatest(max_ranges - v_claimed, 0)
        FOR UPDATE SKIP LOCKED)
    UPDATE thryve.dirty_ranges d SET
        status = 'claimed', claimed_by = worker, lease_expires_at = now() + lease,
        attempts = d.attempts + 1
    FROM picked WHERE d.id = picked.id
    RETURNING d.*;
END
$$;

-- Marks a claimed range done. False (and no change) when worker no longer holds the claim.
CREATE FUNCTION thryve.complete_dirty_range(range_id bigint, worker text)
RETURNS boolean LANGUAGE sql AS $$
    WITH done AS (
        UPDATE thryve.dirty_ranges SET
            status = 'done', lease_expires_at = NULL, completed_at = now()
        WHERE id = range_id AND status = 'claimed' AND claimed_by = worker
        RETURNING 1)
    SELECT EXISTS (SELECT 1 FROM done)
$$;

-- Pushes a claimed range's lease out to now() + lease. False when worker no longer holds it.
CREATE FUNCTION thryve.extend_dirty_range_lease(range_id bigint, worker text, lease interval)
RETURNS boolean LANGUAGE sql AS $$
    WITH extended AS (
        UPDATE thryve.dirty_ranges SET lease_expires_at = now() + lease
        WHERE id = range_id AND status = 'claimed' AND claimed_by = worker
        RETURNING 1)
    SELECT EXISTS (SELECT 1 FROM extended)
$$;

-- Records a failed attempt. Out of attempts (settings.range_max_attempts): status failed,
-- kept for an operator. Otherwise the span goes back into pending work, merging with any
-- pending range it overlaps or touches (so its id may change), claimable after retry_in.
-- False (and no change) when worker no longer holds the claim.
CREATE FUNCTION thryve.fail_dirty_range(range_id bigint, worker text, error text, retry_in interval)
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
    SELECT * INTO r FROM thryve.dirty_ranges
    WHERE id = range_id AND status = 'claimed' AND claimed_by = worker
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
        r.attempts, now() + coalesce(retry_in, interval '0'), error);
    RETURN true;
END
$$;
