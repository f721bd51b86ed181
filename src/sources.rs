//! `thryve.source_connections`: which data sources each user has connected, newest event wins.

use sqlx::PgExecutor;

use crate::thryve::ConnectionChange;

/// Upserts connection states. `changes` holds at most one entry per (user, source); an entry
/// older than (or as old as) the stored state changes nothing, since events arrive out of order.
pub async fn apply(
    executor: impl PgExecutor<'_>,
    changes: &[(String, i64, ConnectionChange)],
) -> sqlx::Result<u64> {
    if changes.is_empty() {
        return Ok(0);
    }
    let users: Vec<&str> = changes.iter().map(|(u, _, _)| u.as_str()).collect();
    let inbox_ids: Vec<i64> = changes.iter().map(|(_, id, _)| *id).collect();
    let sources: Vec<i32> = changes.iter().map(|(_, _, c)| c.data_source_id).collect();
    let connected: Vec<bool> = changes.iter().map(|(_, _, c)| c.connected).collect();
    let at: Vec<_> = changes.iter().map(|(_, _, c)| c.at).collect();
    let done = sqlx::query(
        "INSERT INTO thryve.source_connections AS s
             (end_user_id, data_source_id, connected, changed_at, inbox_id)
         SELECT c.u, c.ds, c.connected,
                -- A change that does not say when it happened counts from its receipt.
                coalesce(c.at, (SELECT i.first_received_at FROM thryve.inbox i WHERE i.id = c.inbox_id)),
                c.inbox_id
         FROM unnest($1::text[], $2::integer[], $3::boolean[], $4::timestamptz[], $5::bigint[])
              AS c(u, ds, connected, at, inbox_id)
         ORDER BY 1, 2
         ON CONFLICT (end_user_id, data_source_id) DO UPDATE SET
             connected = EXCLUDED.connected, changed_at = EXCLUDED.changed_at,
             inbox_id = EXCLUDED.inbox_id, updated_at = now()
         WHERE EXCLUDED.changed_at > s.changed_at",
    )
    .bind(users)
    .bind(sources)
    .bind(connected)
    .bind(at)
    .bind(inbox_ids)
    .execute(executor)
    .await?;
    Ok(done.rows_affected())
}
