//! The connection pool, the embedded migrations and the readiness check.

use std::time::Duration;

use sqlx::{migrate::Migrator, postgres::PgPoolOptions, PgExecutor, PgPool};

/// The files under `migrations/`, embedded; `sqlx migrate run` applies the same files.
pub static MIGRATOR: Migrator = sqlx::migrate!("./migrations");

/// A pool that connects on first use, so the server starts (and reports not ready) while the
/// database is down, and recovers by itself when it returns.
pub fn pool(
    url: &str,
    max_connections: u32,
    acquire_timeout: Duration,
) -> Result<PgPool, sqlx::Error> {
    PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(acquire_timeout)
        .connect_lazy(url)
}

/// Applies every migration not yet applied; safe to run from several processes at once
/// (sqlx takes an advisory lock).
pub async fn migrate(pool: &PgPool) -> Result<(), sqlx::migrate::MigrateError> {
    MIGRATOR.run(pool).await
}

/// Runs `statement` (`DELETE FROM t` or `UPDATE t SET ...`) on at most `limit` rows of `table`
/// that match `old_rows`, in which `$1` is `older_than` in seconds; rows another transaction
/// holds are skipped. Returns how many rows it changed. Housekeeping's statements are built
/// here so that each stays short and never queues behind the poller.
pub(crate) async fn bounded_batch(
    executor: impl PgExecutor<'_>,
    statement: &'static str,
    table: &'static str,
    old_rows: &'static str,
    older_than: Duration,
    limit: i64,
) -> sqlx::Result<u64> {
    // `= ANY (ARRAY(...))` makes the outer statement a primary-key lookup per id; `IN`
    // may be planned as a join that scans the whole table.
    let done = sqlx::query(&format!(
        "{statement} WHERE id = ANY (ARRAY(
             SELECT id FROM {table} WHERE {old_rows} LIMIT $2 FOR UPDATE SKIP LOCKED))"
    ))
    .bind(older_than.as_secs_f64())
    .bind(limit)
    .execute(executor)
    .await?;
    Ok(done.rows_affected())
}

/// Why the service is not ready.
#[derive(Debug, thiserror::Error)]
pub enum NotReady {
    #[error("database unreachable: {0}")]
    Unreachable(#[from] sqlx::Error),
    #[error("database not migrated: at version {have:?}, this build needs {want}; run `thryve-bridge migrate`")]
    NotMigrated { have: Option<i64>, want: i64 },
}

/// Ok when the database answers and has every embedded migration applied.
pub async fn readiness(pool: &PgPool) -> Result<(), NotReady> {
    let want = MIGRATOR.iter().map(|m| m.version).max().unwrap_or(0);
    let table_exists: bool =
        sqlx::query_scalar("SELECT to_regclass('_sqlx_migrations') IS NOT NULL")
            .fetch_one(pool)
            .await?;
    let have: Option<i64> = if table_exists {
        sqlx::query_scalar("SELECT max(version) FROM _sqlx_migrations WHERE success")
            .fetch_one(pool)
            .await?
    } else {
        None
    };
    match have {
        Some(v) if v >= want => Ok(()),
        have => Err(NotReady::NotMigrated { have, want }),
    }
}

/// True when `error` says the database is unreachable or refusing work for now (connection
/// lost, pool timed out, see [`is_transient_code`] for the server's own errors), so the same
/// statement may succeed later; false when the statement itself was refused (bad data), which
/// retrying would only repeat.
pub fn is_transient(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Database(e) => e.code().is_some_and(|code| is_transient_code(&code)),
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed
        | sqlx::Error::BeginFailed => true,
        _ => false,
    }
}

/// SQLSTATEs that say nothing about the rows: connection lost (class 08), a lost deadlock or
/// serialisation race (40), short of disk, memory or connections (53), shut down or cancelled,
/// e.g. by `statement_timeout` (57), a failure of the server itself (58), and read-only after a
/// failover (25006).
pub fn is_transient_code(code: &str) -> bool {
    ["08", "40", "53", "57", "58"]
        .iter()
        .any(|class| code.starts_with(class))
        || code == "25006"
}

#[cfg(test)]
mod tests {
    use super::is_transient_code;

    #[test]
    fn outages_are_transient_and_refused_rows_are_not() {
        for code in [
            "08006", "40001", "40P01", "53100", "57P01", "57014", "58030", "25006",
        ] {
            assert!(is_transient_code(code), "{code}");
        }
        for code in ["23505", "23514", "22008", "22P02", "42P01", "25P02"] {
            assert!(!is_transient_code(code), "{code}");
        }
    }
}
