//! `thryve.source_connections`: which data sources each user has connected, newest event wins.

use sqlx::PgExecutor;

use crate::thryve::ConnectionChange;

/// The connected (user, source) pairs, optionally of one user and/or one source, in order.
pub async fn connected(
    executor: impl PgExecutor<'_>,
    end_user_id: Option<&str>,
    data_source_id: Option<i32>,
) -> sqlx::Result<Vec<(String, i32)>> {
    sqlx::query_as(
        "SELECT end_user_id, data_source_id FROM thryve.source_connections
         WHERE connected AND ($1::text IS NULL OR end_user_id = $1)
           AND ($2::integer IS NULL OR data_source_id = $2)
         ORDER BY 1, 2",
    )
    .bind(end_user_id)
    .bind(data_source_id)
    .fetch_all(executor)
    .await
}

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
