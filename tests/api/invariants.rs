//! The contract's guarantees 2-4 as SQL checks over the live tables, used after every step of
//! the property and concurrency tests.

use sqlx::PgPool;

/// Guarantee 3: every (user, source, type, span) named by a processed notification lies inside
/// a range that was dirtied (so pending) at or after the notification was processed; one that
/// names no types (all types) inside an all-types range. Returns the offending inbox ids.
pub async fn uncovered(pool: &PgPool) -> Vec<i64> {
    sqlx::query_scalar(
        "SELECT DISTINCT i.id FROM thryve.inbox i
         -- No types (all types) is one NULL type, which only an all-types range covers.
         CROSS JOIN LATERAL unnest(CASE WHEN cardinality(i.data_type_ids) = 0 THEN ARRAY[NULL::integer]
                                        ELSE i.data_type_ids END) t(type_id)
         WHERE i.status = 'processed' AND i.data_type_ids IS NOT NULL AND NOT EXISTS (
             SELECT 1 FROM thryve.dirty_ranges r
             WHERE r.end_user_id = i.end_user_id AND r.data_source_id = i.data_source_id
               AND (t.type_id = ANY (r.data_type_ids) OR r.data_type_ids = '{}')
               AND r.last_dirtied_at >= i.processed_at
               AND (  (i.start_time IS NOT NULL AND r.granularity = 'epoch'
                       AND r.start_time <= i.start_time AND r.end_time >= i.end_time)
                   OR (i.start_day IS NOT NULL AND r.granularity = 'daily'
                       AND r.start_day <= i.start_day AND r.end_day >= i.end_day)))
         ORDER BY 1",
    )
    .fetch_all(pool)
    .await
    .unwrap()
}

/// Guarantee 3 for data pushes (while `settings.push_ranges` is on): every stored value lies
/// inside a range of its user, source and type (or all types) dirtied at or after the push
/// that wrote it was processed. Returns the offending values' inbox ids.
pub async fn uncovered_values(pool: &PgPool) -> Vec<i64> {
    sqlx::query_scalar(
        "WITH v AS (
             SELECT end_user_id, data_source_id, data_type_id, 'epoch' AS g, start_time AS lo,
                    end_key AS hi, inbox_id FROM thryve.epoch_values
             UNION ALL
             SELECT end_user_id, data_source_id, data_type_id, 'daily', day::timestamp AT TIME ZONE 'UTC',
                    day::timestamp AT TIME ZONE 'UTC', inbox_id FROM thryve.daily_values)
         SELECT DISTINCT v.inbox_id FROM v JOIN thryve.inbox i ON i.id = v.inbox_id
         WHERE coalesce((SELECT value FROM thryve.settings WHERE key = 'push_ranges'), 'on') = 'on'
           AND i.status = 'processed' AND NOT EXISTS (
             SELECT 1 FROM thryve.dirty_ranges r
             WHERE r.end_user_id = v.end_user_id AND r.data_source_id = v.data_source_id
               AND r.granularity = v.g
               AND (v.data_type_id = ANY (r.data_type_ids) OR r.data_type_ids = '{}')
               AND r.last_dirtied_at >= i.processed_at
               AND coalesce(r.start_time, r.start_day::timestamp AT TIME ZONE 'UTC') <= v.lo
               AND coalesce(r.end_time, r.end_day::timestamp AT TIME ZONE 'UTC') >= v.hi)
         ORDER BY 1",
    )
    .fetch_all(pool)
    .await
    .unwrap()
}

/// Guarantee 4: pairs of pending ranges of one key that overlap or touch.
pub async fn touching_pending_pairs(pool: &PgPool) -> Vec<(i64, i64)> {
    sqlx::query_as(
        "SELECT a.id, b.id FROM thryve.dirty_ranges a JOIN thryve.dirty_ranges b
           ON a.id < b.id AND a.end_user_id = b.end_user_id
          AND a.data_source_id = b.data_source_id AND a.granularity = b.granularity
         WHERE a.status = 'pending' AND b.status = 'pending'
           AND (  (a.granularity = 'epoch'
                   AND tstzrange(a.start_time, a.end_time, '[]') && tstzrange(b.start_time, b.end_time, '[]'))
               OR (a.granularity = 'daily'
                   AND (daterange(a.start_day, a.end_day, '[]') && daterange(b.start_day, b.end_day, '[]')
                     OR daterange(a.start_day, a.end_day, '[]') -|- daterange(b.start_day, b.end_day, '[]'))))",
    )
    .fetch_all(pool)
    .await
    .unwrap()
}

/// Guarantee 2: inbox rows sharing content (impossible by the unique index, checked anyway).
pub async fn duplicate_inbox_rows(pool: &PgPool) -> i64 {
    sqlx::query_scalar("SELECT count(*) - count(DISTINCT fingerprint) FROM thryve.inbox")
        .fetch_one(pool)
        .await
        .unwrap()
}

pub async fn assert_guarantees(pool: &PgPool) {
    assert_eq!(
        duplicate_inbox_rows(pool).await,
        0,
        "guarantee 2: one row per content"
    );
    let pairs = touching_pending_pairs(pool).await;
    assert!(
        pairs.is_empty(),
        "guarantee 4: pending ranges overlap or touch: {pairs:?}"
    );
    let uncovered = uncovered(pool).await;
    assert!(
        uncovered.is_empty(),
        "guarantee 3: inbox rows not covered: {uncovered:?}"
    );
    let uncovered = uncovered_values(pool).await;
    assert!(
        uncovered.is_empty(),
        "guarantee 3: pushed values not covered (inbox ids): {uncovered:?}"
    );
}
