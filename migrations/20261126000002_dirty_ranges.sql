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
    CONSTRAINT dirty_ranges_status_check
        CHECK (status IN ('pending', 'claimed', 'done', 'failed')),
    CONSTRAINT dirty_ranges_span_check CHECK (
        (granularity = 'epoch' AND start_time IS NOT NULL AND end_time IS NOT NULL
            AND start_time <= end_time AND start_day IS NULL AND end_day IS NULL)
        OR (granularity = 'daily' AND start_day IS NOT NULL AND end_day IS NOT NULL
            AND start_day <= end_day AND start_time IS NULL AND end_time IS NULL)),
    -- Guarantee 4 in the database itself: pending ranges of one key never overlap.
    CONSTRAINT dirty_ranges_pending_epoch_excl EXCLUDE USING gist (
        end_user_id WITH =, data_source_id WITH =,
        tstzrange(start_time, end_time, '[]') WITH &&)
        WHERE (status = 'pending' AND granularity = 'epoch'),
    CONSTRAINT dirty_ranges_pending_daily_excl EXCLUDE USING gist (
        end_user_id WITH =, data_source_id WITH =,
        daterange(start_day, end_day, '[]') WITH &&)
        WHERE (status = 'pending' AND granularity = 'daily')
);

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

-- The advisory lock that serialises merges of one (user, source, granularity).
CREATE FUNCTION thryve.range_lock_key(p_end_user_id text, p_data_source_id integer, p_granularity text)
RETURNS bigint LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT hashtextextended(p_granularity || ':' || p_data_source_id || ':' || p_end_user_id, 20261126)
$$;

CREATE FUNCTION thryve.setting_int(p_key text, p_default integer)
RETURNS integer LANGUAGE sql STABLE AS $$
    SELECT coalesce((SELECT value::integer FROM thryve.settings WHERE key = p_key), p_default)
$$;

-- Adds a span to the pending work of its key: pending ranges it overlaps or touches (equal
-- instants; adjacent days) merge with it into one (hull of spans, union of types, counts
-- summed, earliest first_dirtied_at, latest backoff). Claimed ranges are never touched.
-- Takes the key's advisory lock; callers merging several keys take them in lock-key order.
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
    v_ids  bigint[];
    v_keep bigint;
    v_new  thryve.dirty_ranges%ROWTYPE;
BEGIN
    PERFORM pg_advisory_xact_lock(thryve.range_lock_key(p_end_user_id, p_data_source_id, p_granularity));

    IF p_granularity = 'epoch' THEN
        SELECT array_agg(id ORDER BY id) INTO v_ids FROM (
            SELECT id FROM thryve.dirty_ranges
            WHERE status = 'pending' AND granularity = 'epoch'
              AND end_user_id = p_end_user_id AND data_source_id = p_data_source_id
              AND tstzrange(start_time, end_time, '[]') && tstzrange(p_start_time, p_end_time, '[]')
            FOR UPDATE) s;
    ELSIF p_granularity = 'daily' THEN
        SELECT array_agg(id ORDER BY id) INTO v_ids FROM (
            SELECT id FROM thryve.dirty_ranges
            WHERE status = 'pending' AND granularity = 'daily'
              AND end_user_id = p_end_user_id AND data_source_id = p_data_source_id
              AND (daterange(start_day, end_day, '[]') && daterange(p_start_day, p_end_day, '[]')
                   OR daterange(start_day, end_day, '[]') -|- daterange(p_start_day, p_end_day, '[]'))
            FOR UPDATE) s;
    ELSE
        RAISE EXCEPTION 'granularity must be epoch or daily, got %', p_granularity;
    END IF;

    IF v_ids IS NULL THEN
        INSERT INTO thryve.dirty_ranges (
            end_user_id, data_source_id, granularity, data_type_ids, start_time, end_time,
            start_day, end_day, notification_count, first_dirtied_at, attempts, available_at,
            last_error)
        VALUES (
            p_end_user_id, p_data_source_id, p_granularity,
            ARRAY(SELECT DISTINCT t FROM unnest(p_data_type_ids) t ORDER BY t),
            p_start_time, p_end_time, p_start_day, p_end_day, p_notification_count,
            p_first_dirtied_at, p_attempts, p_available_at, p_last_error)
        RETURNING id INTO v_keep;
        RETURN v_keep;
    END IF;

    v_keep := v_ids[1];
    SELECT least(min(d.start_time), p_start_time), greatest(max(d.end_time), p_end_time),
           least(min(d.start_day), p_start_day), greatest(max(d.end_day), p_end_day),
           sum(d.notification_count)::integer + p_notification_count,
           least(min(d.first_dirtied_at), p_first_dirtied_at),
           greatest(max(d.attempts), p_attempts),
           greatest(max(d.available_at), p_available_at),
           coalesce(p_last_error, max(d.last_error)),
           -- now() is the transaction's start: a transaction that began earlier but merges
           -- later must not move last_dirtied_at back.
           greatest(max(d.last_dirtied_at), now())
      INTO v_new.start_time, v_new.end_time, v_new.start_day, v_new.end_day,
           v_new.notification_count, v_new.first_dirtied_at, v_new.attempts,
           v_new.available_at, v_new.last_error, v_new.last_dirtied_at
      FROM thryve.dirty_ranges d WHERE d.id = ANY (v_ids);
    v_new.data_type_ids := ARRAY(
        SELECT DISTINCT t FROM (
            SELECT unnest(d.data_type_ids) FROM thryve.dirty_ranges d WHERE d.id = ANY (v_ids)
            UNION ALL SELECT unnest(p_data_type_ids)) u(t)
        ORDER BY t);

    -- The others go first: the survivor's new span overlaps them until they are gone.
    DELETE FROM thryve.dirty_ranges WHERE id = ANY (v_ids) AND id <> v_keep;
    UPDATE thryve.dirty_ranges SET
        data_type_ids      = v_new.data_type_ids,
        start_time         = v_new.start_time,
        end_time           = v_new.end_time,
        start_day          = v_new.start_day,
        end_day            = v_new.end_day,
        notification_count = v_new.notification_count,
        first_dirtied_at   = v_new.first_dirtied_at,
        last_dirtied_at    = v_new.last_dirtied_at,
        attempts           = v_new.attempts,
        available_at       = v_new.available_at,
        last_error         = v_new.last_error
    WHERE id = v_keep;
    RETURN v_keep;
END
$$;

-- Merges many spans in one call (the poller's batch), taking the keys' locks in lock-key
-- order so that concurrent callers cannot deadlock. p_data_type_ids holds int[] literals
-- ('{1,2}') because a ragged int[][] cannot be passed.
CREATE FUNCTION thryve.merge_dirty_ranges(
    p_end_user_ids        text[],
    p_data_source_ids     integer[],
    p_granularities       text[],
    p_data_type_ids       text[],
    p_start_times         timestamptz[],
    p_end_times           timestamptz[],
    p_start_days          date[],
    p_end_days            date[],
    p_notification_counts integer[]
) RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
    r record;
    n integer := 0;
BEGIN
    FOR r IN
        SELECT * FROM unnest(p_end_user_ids, p_data_source_ids, p_granularities, p_data_type_ids,
                             p_start_times, p_end_times, p_start_days, p_end_days,
                             p_notification_counts)
                 AS s(u, ds, g, dt, st, et, sd, ed, c)
        ORDER BY thryve.range_lock_key(u, ds, g), u, ds, g
    LOOP
        PERFORM thryve.merge_dirty_range(r.u, r.ds, r.g, r.dt::integer[], r.st, r.et, r.sd, r.ed, r.c);
        n := n + 1;
    END LOOP;
    RETURN n;
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
