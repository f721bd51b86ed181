//! `thryve.source_connections`: which data sources each user has connected, newest event wins,
//! whether a webhook or a reconciliation with Thryve's own answer made it.

use chrono::{DateTime, Utc};
use serde::Serialize;
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
             inbox_id = EXCLUDED.inbox_id, origin = 'webhook', updated_at = now()
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

/// One connection state a reconciliation changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct Reconciled {
    pub end_user_id: String,
    pub data_source_id: i32,
    pub connected: bool,
    /// The state before; `None` when the bridge had no row for the pair.
    pub was: Option<bool>,
}

/// Makes `end_user_id`'s stored connections what Thryve answered at `observed_at`: the sources
/// in `connected` connected, every other stored one disconnected. Only states that differ are
/// written, as events of origin `reconcile` at `observed_at`, and like any event never over a
/// newer one (a webhook event after `observed_at` stands). Returns what changed.
pub async fn reconcile(
    executor: impl PgExecutor<'_>,
    end_user_id: &str,
    connected: &[i32],
    observed_at: DateTime<Utc>,
) -> sqlx::Result<Vec<Reconciled>> {
    sqlx::query_as(
        "WITH observed AS (SELECT DISTINCT unnest($2::integer[]) AS ds),
         stored AS (SELECT data_source_id, connected FROM thryve.source_connections
                    WHERE end_user_id = $1),
         differing AS (
             SELECT coalesce(o.ds, s.data_source_id) AS ds, o.ds IS NOT NULL AS connected
             FROM observed o FULL JOIN stored s ON s.data_source_id = o.ds
             WHERE s.connected IS DISTINCT FROM (o.ds IS NOT NULL))
         INSERT INTO thryve.source_connections AS s
             (end_user_id, data_source_id, connected, changed_at, inbox_id, origin)
         SELECT $1, d.ds, d.connected, $3, NULL, 'reconcile' FROM differing d ORDER BY 2
         ON CONFLICT (end_user_id, data_source_id) DO UPDATE SET
             connected = EXCLUDED.connected, changed_at = EXCLUDED.changed_at, inbox_id = NULL,
             origin = EXCLUDED.origin, updated_at = now()
         WHERE EXCLUDED.changed_at > s.changed_at AND EXCLUDED.connected <> s.connected
         RETURNING s.end_user_id, s.data_source_id, s.connected,
                   CASE WHEN s.xmax = 0 THEN NULL ELSE NOT s.connected END AS was",
    )
    .bind(end_user_id)
    .bind(connected)
    .bind(observed_at)
    .fetch_all(executor)
    .await
}
