//! End users' rows across every table: who the bridge knows, counting one user's rows, and
//! erasing them (GDPR) at once.

use serde::Serialize;
use sqlx::{Connection, PgConnection, PgExecutor};

/// How many rows of one end user each table holds (or held, after [`erase`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct UserRows {
    pub inbox: i64,
    pub dirty_ranges: i64,
    pub source_connections: i64,
    pub epoch_values: i64,
    pub daily_values: i64,
}

/// Every end user the bridge knows of, in order: those of a stored connection, a delivery or a
/// dirty range (each table's user index makes this a walk of the indexes).
pub async fn known(executor: impl PgExecutor<'_>) -> sqlx::Result<Vec<String>> {
    sqlx::query_scalar(
        "SELECT end_user_id FROM thryve.source_connections
         UNION SELECT end_user_id FROM thryve.inbox WHERE end_user_id IS NOT NULL
         UNION SELECT end_user_id FROM thryve.dirty_ranges
         ORDER BY 1",
    )
    .fetch_all(executor)
    .await
}

/// Counts the user's rows in every table, changing nothing.
pub async fn count(executor: impl PgExecutor<'_>, end_user_id: &str) -> sqlx::Result<UserRows> {
    sqlx::query_as(
        "SELECT (SELECT count(*) FROM thryve.inbox WHERE end_user_id = $1) AS inbox,
                (SELECT count(*) FROM thryve.dirty_ranges WHERE end_user_id = $1) AS dirty_ranges,
                (SELECT count(*) FROM thryve.source_connections WHERE end_user_id = $1)
                    AS source_connections,
                (SELECT count(*) FROM thryve.epoch_values WHERE end_user_id = $1) AS epoch_values,
                (SELECT count(*) FROM thryve.daily_values WHERE end_user_id = $1) AS daily_values",
    )
    .bind(end_user_id)
    .fetch_one(executor)
    .await
}

/// Deletes every row of `end_user_id` from every table in one transaction (a savepoint if
/// `conn` is already in one) and returns how many went from each.
///
/// The inbox goes first: that waits for any poller batch holding the user's rows, and the
/// later statements, each with a fresh snapshot, then see what that batch wrote. A delivery
/// for the user that arrives afterwards is stored as usual, so erase a user after they left
/// Thryve (or after Thryve deleted them).
pub async fn erase(conn: &mut PgConnection, end_user_id: &str) -> sqlx::Result<UserRows> {
    let mut tx = conn.begin().await?;
    let mut erased = UserRows::default();
    for (table, count) in [
        ("inbox", &mut erased.inbox),
        ("dirty_ranges", &mut erased.dirty_ranges),
        ("source_connections", &mut erased.source_connections),
        ("epoch_values", &mut erased.epoch_values),
        ("daily_values", &mut erased.daily_values),
    ] {
        let done = sqlx::query(&format!(
            "DELETE FROM thryve.{table} WHERE end_user_id = $1"
        ))
        .bind(end_user_id)
        .execute(&mut *tx)
        .await?;
        *count = done.rows_affected() as i64;
    }
    tx.commit().await?;
    Ok(erased)
}
