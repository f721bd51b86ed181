//! The contract's guarantees 2-4 as SQL checks over the live tables, used after every step of
//! the property and concurrency tests.

use sqlx::PgPool;

/// Guarantee 3: every (user, source, type, span) named by a processed notification lies inside
/// a range that was dirtied (so pending) at or after the notification was processed; a range
/// of no named types covers every type. Returns the offending inbox ids.
pub async fn uncovered(pool: &PgPool) -> Vec<i64> {
    sqlx::query_scalar(
        "SELECT DISTINCT i.id FROM thryve.inbox i CROSS JOIN LATERAL unnest(i.data_type_ids) t(type_id)
         WHERE i.status = 'processed' AND i.data_type_ids IS NOT NULL AND NOT EXISTS (
             SELECT 1 FROM thryve.dirty_ranges r
             WHERE r.end_user_id = i.end_user_id AND r.data_source_id = i.data_source_id
               AND (cardinality(r.data_type_ids) = 0 OR t.type_id = ANY (r.data_type_ids))
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
}
