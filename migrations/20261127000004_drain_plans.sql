-- Drain speed, from a profile of the poller over 100,000 pending rows (auto_explain):
--
-- 1. merge_dirty_ranges locked the pending ranges a batch touches with
--    `WHERE id = ANY (hits) AND status = 'pending'`; the plan cached for the function ANDed a
--    bitmap of the primary key with one of every pending range (dirty_ranges_status_dirtied_idx
--    or dirty_ranges_pending_order_idx), 20-35 ms of a 45-70 ms merge of 1,000 spans, growing
--    with the pending set. The lock now goes by primary key alone and the status is checked on
--    the locked rows. The function is otherwise the same as in 20261126000002.
--
-- 2. inbox_status_received_idx (status, last_received_at) also held every pending row: one
--    more index write per delivery, and while a burst was newer than the statistics the
--    poller's claim was planned as a bitmap scan of it and a sort of every pending row (spilling
--    to disk) instead of a walk of inbox_pending_idx. A row the poller processes was also
--    written to three indexes beside the primary key, fingerprint and user ones (processed_at,
--    payload kept, status+received). Now: the processed_at index carries last_received_at, so
--    retention and the stats of processed rows share it; a small index serves the stats of
--    quarantined and ignored rows; pending figures come from inbox_pending_idx.
--
-- 3. dirty_ranges_status_dirtied_idx took every new pending range (most spans of a backfill
--    make one); pending figures come from dirty_ranges_pending_order_idx, which leads with
--    first_dirtied_at, so the index keeps the other statuses only.
--
-- The stats query names each status as a literal, so each reads its own partial index.
-- Plain CREATE INDEX, as in 20261126000003: on a large inbox, receivers answer 503 (and
-- Thryve retries) while these build.

DROP INDEX thryve.inbox_status_received_idx;
DROP INDEX thryve.inbox_processed_at_idx;
CREATE INDEX inbox_processed_idx
    ON thryve.inbox (processed_at) INCLUDE (last_received_at) WHERE status = 'processed';
CREATE INDEX inbox_parked_received_idx
    ON thryve.inbox (status, last_received_at) WHERE status IN ('quarantined', 'ignored');

DROP INDEX thryve.dirty_ranges_status_dirtied_idx;
CREATE INDEX dirty_ranges_settled_dirtied_idx
    ON thryve.dirty_ranges (status, first_dirtied_at) WHERE status <> 'pending';

CREATE OR REPLACE FUNCTION thryve.merge_dirty_ranges(
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

