-- A span of all types (an empty data_type_ids: the older legacy trigger names no types) was
-- lost by thryve.merge_dirty_ranges: its types came from unnesting every item's types, which
-- gives no row for a group of all-types items, so the group's range was never written, and a
-- group mixing both kinds kept only the named types. The load generator's --verify found it
-- (uncovered legacy triggers). An empty array in a group now makes the range all-types, as
-- ranges::coalesce does in Rust.
--
-- Applied only where the function still has the old `typed` step: a later migration that
-- redefines the function (with this fix) must not be undone whichever order they run in.
DO $migration$
BEGIN
    IF NOT EXISTS (
        SELECT 1 FROM pg_proc
        WHERE proname = 'merge_dirty_ranges' AND pronamespace = 'thryve'::regnamespace
          AND position('CROSS JOIN LATERAL unnest(grouped.types)' IN pg_get_functiondef(oid)) > 0)
    THEN
        RETURN;
    END IF;
    EXECUTE $function$
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
$function$;
END
$migration$;
