//! The connection pool, the embedded migrations and the readiness check.

use std::time::Duration;

use sqlx::{
    migrate::Migrator,
    postgres::{PgConnectOptions, PgPoolOptions},
    PgExecutor, PgPool,
};

/// The files under `migrations/`, embedded; `sqlx migrate run` applies the same files.
pub static MIGRATOR: Migrator = sqlx::migrate!("./migrations");

/// The channel receivers NOTIFY after commits and pollers LISTEN on. Here, beside the pool,
/// because both sides (`inbox`, `server` and `poller`) use it and neither imports the other.
pub const INBOX_CHANNEL: &str = "thryve_inbox";

/// An `int[]` literal (`{1,2,3}`), to bind a list inside a text array (`unnest` of arrays of
/// arrays); used by `inbox` and `ranges` alike.
pub(crate) fn int_array_literal(ids: &[i32]) -> String {
    let inner: Vec<String> = ids.iter().map(i32::to_string).collect();
    format!("{{{}}}", inner.join(","))
}

/// For an enum stored in a `text` column: `as_str` (the column's values), `Display`, comparison
/// with a `&str`, and sqlx's `Type`, `Encode` and `Decode` as Postgres `text` (a value the enum
/// does not know fails the decode). The enum itself, with its derives, stays where it is used.
macro_rules! text_enum {
    ($ty:ident { $($variant:ident => $text:literal),+ $(,)? }) => {
        impl $ty {
            /// The value in the database's `text` column (and in JSON output).
            pub fn as_str(self) -> &'static str {
                match self {
                    $($ty::$variant => $text,)+
                }
            }
        }

        impl ::std::fmt::Display for $ty {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl PartialEq<&str> for $ty {
            fn eq(&self, other: &&str) -> bool {
                self.as_str() == *other
            }
        }

        impl ::sqlx::Type<::sqlx::Postgres> for $ty {
            fn type_info() -> ::sqlx::postgres::PgTypeInfo {
                <&str as ::sqlx::Type<::sqlx::Postgres>>::type_info()
            }
            fn compatible(ty: &::sqlx::postgres::PgTypeInfo) -> bool {
                <&str as ::sqlx::Type<::sqlx::Postgres>>::compatible(ty)
            }
        }

        impl ::sqlx::postgres::PgHasArrayType for $ty {
            fn array_type_info() -> ::sqlx::postgres::PgTypeInfo {
                <&str as ::sqlx::postgres::PgHasArrayType>::array_type_info()
            }
        }

        impl<'q> ::sqlx::Encode<'q, ::sqlx::Postgres> for $ty {
            fn encode_by_ref(
                &self,
                buf: &mut ::sqlx::postgres::PgArgumentBuffer,
            ) -> Result<::sqlx::encode::IsNull, ::sqlx::error::BoxDynError> {
                <&str as ::sqlx::Encode<'q, ::sqlx::Postgres>>::encode_by_ref(&self.as_str(), buf)
            }
        }

        impl<'r> ::sqlx::Decode<'r, ::sqlx::Postgres> for $ty {
            fn decode(
                value: ::sqlx::postgres::PgValueRef<'r>,
            ) -> Result<Self, ::sqlx::error::BoxDynError> {
                match <&str as ::sqlx::Decode<'r, ::sqlx::Postgres>>::decode(value)? {
                    $($text => Ok($ty::$variant),)+
                    other => Err(format!(
                        "{other:?} is no {} (expected one of {})",
                        stringify!($ty),
                        [$($text),+].join(", ")
                    )
                    .into()),
                }
            }
        }
    };
}
pub(crate) use text_enum;

/// A pool that connects on first use, so the server starts (and reports not ready) while the
/// database is down, and recovers by itself when it returns.
pub fn pool(
    url: &str,
    max_connections: u32,
    acquire_timeout: Duration,
) -> Result<PgPool, sqlx::Error> {
    Ok(pool_options(max_connections)
        .acquire_timeout(acquire_timeout)
        .connect_lazy_with(connect_options(url)?))
}

/// The bridge's pool settings, shared with the load generator's drain so that it measures
/// the poller as it runs. sqlx pings every connection it hands out by default: a round trip
/// before each inbox write and poller batch (bench/README.md has what it cost). Only a
/// connection that sat idle is pinged; one in steady use that has died fails its statement,
/// which [`classify`] reads as an outage (the receiver spools or answers 503, the poller
/// retries).
pub fn pool_options(max_connections: u32) -> PgPoolOptions {
    PgPoolOptions::new()
        .max_connections(max_connections)
        .test_before_acquire(false)
        .before_acquire(|conn, meta| {
            Box::pin(async move {
                if meta.idle_for >= PING_AFTER_IDLE {
                    sqlx::Connection::ping(conn).await?;
                }
                Ok(true)
            })
        })
}

/// How long a pooled connection may sit idle before it is pinged when next handed out.
pub const PING_AFTER_IDLE: Duration = Duration::from_secs(1);

/// `url`'s options, with JIT compilation off for the bridge's own sessions: its statements
/// are short, and a batch upsert whose estimate passed `jit_above_cost` spent a good part of
/// a poller batch compiling to save nothing. The server's setting is left alone.
pub fn connect_options(url: &str) -> Result<PgConnectOptions, sqlx::Error> {
    Ok(url.parse::<PgConnectOptions>()?.options([("jit", "off")]))
}

/// Applies every migration not yet applied; safe to run from several processes at once
/// (sqlx takes an advisory lock).
pub async fn migrate(pool: &PgPool) -> Result<(), sqlx::migrate::MigrateError> {
    MIGRATOR.run(pool).await
}

/// One migration as `migrate --check` reports it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct MigrationEntry {
    pub version: i64,
    pub description: String,
}

/// Where a database stands against the migrations this binary embeds, read without changing
/// anything (`thryve-bridge migrate --check`).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct MigrationStatus {
    /// Embedded and applied, with the same checksum.
    pub applied: Vec<MigrationEntry>,
    /// Embedded, not yet applied.
    pub pending: Vec<MigrationEntry>,
    /// Applied, but not embedded in this binary: the database was migrated by a newer version.
    pub unknown: Vec<MigrationEntry>,
    /// Applied from a file whose content differs from the embedded one (an edited migration),
    /// or recorded as failed.
    pub mismatched: Vec<MigrationEntry>,
}

impl MigrationStatus {
    /// Nothing pending, nothing unknown, nothing mismatched: this binary and the database agree.
    pub fn is_current(&self) -> bool {
        self.pending.is_empty() && self.unknown.is_empty() && self.mismatched.is_empty()
    }
}

/// Compares `_sqlx_migrations` (absent on a fresh database: everything is pending) with the
/// embedded migrations. Reads only.
pub async fn migration_status(
    executor: impl PgExecutor<'_> + Copy,
) -> sqlx::Result<MigrationStatus> {
    let recorded: bool = sqlx::query_scalar("SELECT to_regclass('_sqlx_migrations') IS NOT NULL")
        .fetch_one(executor)
        .await?;
    let rows: Vec<(i64, String, bool, Vec<u8>)> = if recorded {
        sqlx::query_as(
            "SELECT version, description, success, checksum FROM _sqlx_migrations ORDER BY version",
        )
        .fetch_all(executor)
        .await?
    } else {
        Vec::new()
    };
    let mut status = MigrationStatus::default();
    for migration in MIGRATOR
        .iter()
        .filter(|m| m.migration_type.is_up_migration())
    {
        let entry = MigrationEntry {
            version: migration.version,
            description: migration.description.to_string(),
        };
        match rows.iter().find(|row| row.0 == migration.version) {
            None => status.pending.push(entry),
            Some((_, _, success, checksum))
                if *success && checksum.as_slice() == &*migration.checksum =>
            {
                status.applied.push(entry)
            }
            Some(_) => status.mismatched.push(entry),
        }
    }
    for (version, description, _, _) in rows {
        if !MIGRATOR.iter().any(|m| m.version == version) {
            status.unknown.push(MigrationEntry {
                version,
                description,
            });
        }
    }
    Ok(status)
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
    /// The database has none of this binary's migrations (a new database, or one dropped and
    /// recreated, restored without the bridge's schema), or the bridge's objects are gone.
    #[error("schema missing ({0}): deliveries are spooled or refused until `thryve-bridge migrate` runs")]
    SchemaMissing(String),
    #[error("database is not at this binary's migration ({pending} pending); run `thryve-bridge migrate`")]
    Behind { pending: usize },
    #[error("database is read-only (a standby, or default_transaction_read_only): deliveries cannot be committed")]
    ReadOnly,
    #[error("thryve.inbox is locked by another session: deliveries would wait for it")]
    InboxLocked,
}

/// Ok when the database answers and has every embedded migration applied (one applied by a
/// newer binary is no reason to be unready).
pub async fn readiness(pool: &PgPool) -> Result<(), NotReady> {
    at_migration(pool).await?;
    writable(pool).await
}

/// Ok when the database has every migration this binary embeds ([`migration_status`]);
/// otherwise why not, as `/readyz` and the spool loader say it.
pub async fn at_migration(pool: &PgPool) -> Result<(), NotReady> {
    let status = migration_status(pool).await?;
    match status.pending.len() {
        0 => Ok(()),
        _ if status.applied.is_empty() && status.mismatched.is_empty() => Err(
            NotReady::SchemaMissing("the database has none of this binary's migrations".into()),
        ),
        pending => Err(NotReady::Behind { pending }),
    }
}

/// Ok when a delivery could be committed now: the session is not read-only and nothing holds
/// a lock on the inbox that an INSERT would queue behind. Asks in a transaction that is rolled
/// back; `ROW EXCLUSIVE` is the lock an INSERT takes, and `NOWAIT` makes the question cost no
/// wait.
async fn writable(pool: &PgPool) -> Result<(), NotReady> {
    let mut tx = pool.begin().await?;
    let read_only: bool = sqlx::query_scalar(
        "SELECT current_setting('transaction_read_only')::boolean OR pg_is_in_recovery()",
    )
    .fetch_one(&mut *tx)
    .await?;
    if read_only {
        return Err(NotReady::ReadOnly);
    }
    let locked = sqlx::query("LOCK TABLE thryve.inbox IN ROW EXCLUSIVE MODE NOWAIT")
        .execute(&mut *tx)
        .await;
    match locked {
        Ok(_) => {}
        Err(e) if is_lock_wait(&e) => return Err(NotReady::InboxLocked),
        Err(sqlx::Error::Database(e)) if is_missing_own_object(&*e) => {
            return Err(NotReady::SchemaMissing(e.message().to_owned()))
        }
        Err(e) => return Err(e.into()),
    }
    tx.rollback().await?;
    Ok(())
}

/// Where a database call failed. The same SQLSTATE means different things in each phase:
/// nothing a connection attempt or `BEGIN` reports is about the rows at hand.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Getting a connection from the pool (opening one, authenticating) or starting a
    /// transaction.
    Connect,
    /// A statement, or the commit, that the database ran.
    Statement,
}

/// What a failure means for the delivery or row at hand; the one classification the receiver,
/// the spool loader and the poller all use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The database is out, or busy, or refusing this process: the same work may succeed
    /// later. A delivery goes to the spool (or gets 503 with `Retry-After`); a spooled record
    /// stays in the spool; a poller's row stays pending.
    Outage,
    /// The database ran the statement and refused it for this content (a constraint, a bad
    /// value): retrying would refuse it again.
    Refused,
}

/// Classifies `error` by the phase it came from: anything while connecting or beginning is an
/// outage (wrong password 28P01, `pg_hba` reject 28000, missing database 3D000, `ALLOW_CONNECTIONS
/// false` 55000, too many clients 53300, starting up or shutting down 57P03, ...); a statement's
/// error is a refusal unless its SQLSTATE says nothing about the rows ([`is_outage_code`]).
///
/// ```
/// use thryve_bridge::db::{classify, Failure, Phase};
/// let lost = sqlx::Error::PoolTimedOut;
/// assert_eq!(classify(Phase::Connect, &lost), Failure::Outage);
/// assert_eq!(classify(Phase::Statement, &sqlx::Error::RowNotFound), Failure::Refused);
/// ```
pub fn classify(phase: Phase, error: &sqlx::Error) -> Failure {
    let outage = match (phase, error) {
        (Phase::Connect, _) => true,
        (Phase::Statement, sqlx::Error::Database(e)) => {
            e.code().is_some_and(|code| is_outage_code(&code)) || is_missing_own_object(&**e)
        }
        (
            Phase::Statement,
            sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::Protocol(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::WorkerCrashed
            | sqlx::Error::BeginFailed,
        ) => true,
        (Phase::Statement, _) => false,
    };
    if outage {
        Failure::Outage
    } else {
        Failure::Refused
    }
}

/// A database error with the phase it came from, so that callers classify it the one way.
#[derive(Debug, thiserror::Error)]
#[error("{error}")]
pub struct PhasedError {
    pub phase: Phase,
    #[source]
    pub error: sqlx::Error,
}

impl PhasedError {
    pub fn connect(error: sqlx::Error) -> Self {
        Self {
            phase: Phase::Connect,
            error,
        }
    }

    pub fn statement(error: sqlx::Error) -> Self {
        Self {
            phase: Phase::Statement,
            error,
        }
    }

    pub fn failure(&self) -> Failure {
        classify(self.phase, &self.error)
    }
}

/// SQLSTATEs that say nothing about the rows a statement wrote: connection lost (class 08), a
/// lost deadlock or serialisation race (40), short of disk, memory or connections (53), shut
/// down or cancelled, e.g. by `statement_timeout` (57), a failure of the server itself (58),
/// read-only after a failover or by `default_transaction_read_only` (25006), a lock not had
/// within `lock_timeout` (55P03), and the connection-time ones should a statement ever report
/// them: authentication (28), missing database (3D000).
pub fn is_outage_code(code: &str) -> bool {
    ["08", "28", "40", "53", "57", "58"]
        .iter()
        .any(|class| code.starts_with(class))
        || ["25006", "55P03", "3D000"].contains(&code)
}

/// A relation, schema, function or column of the bridge's own that the database does not
/// have: 42P01 (undefined table) or 42883 (undefined function) naming the `thryve` schema,
/// 3F000 (invalid schema) for `thryve`, and 42703 (undefined column), which the bridge's
/// statements, naming only its own columns, meet only on a schema behind this binary (a
/// migration half-way, or not run). The database was recreated or restored without the
/// bridge's migrations, or is being migrated: nothing about the rows, and the same write
/// succeeds once `migrate` has run. 42P01 or 42883 naming anything else (a customer's
/// trigger calling a function that is gone) is a refusal like any other.
pub fn is_missing_own_object(error: &dyn sqlx::error::DatabaseError) -> bool {
    let Some(code) = error.code() else {
        return false;
    };
    let message = error.message();
    match &*code {
        "42P01" | "42883" => message.contains("thryve."),
        "3F000" => message.contains("thryve"),
        "42703" => true,
        _ => false,
    }
}

/// A statement cancelled by `statement_timeout` (57014) rather than refused. An outage like the
/// others, except that the poller counts them per row (see `poller`), since one row can be the
/// reason its own statement is slow; a lock wait (55P03) never is.
pub fn is_timeout(error: &sqlx::Error) -> bool {
    matches!(error, sqlx::Error::Database(e) if e.code().is_some_and(|code| code == "57014"))
}

/// A lock not had in time: `lock_timeout` ran out, or `NOWAIT` found it held (55P03).
pub fn is_lock_wait(error: &sqlx::Error) -> bool {
    matches!(error, sqlx::Error::Database(e) if e.code().is_some_and(|code| code == "55P03"))
}

#[cfg(test)]
mod tests {
    use super::is_outage_code;

    #[test]
    fn outages_are_told_from_refused_rows_by_sqlstate() {
        for code in [
            "08006", "40001", "40P01", "53100", "53300", "57P01", "57P03", "57014", "58030",
            "25006", "55P03", "28P01", "28000", "3D000",
        ] {
            assert!(is_outage_code(code), "{code}");
        }
        for code in [
            "23505", "23514", "22008", "22P02", "42P01", "25P02", "55000",
        ] {
            assert!(!is_outage_code(code), "{code}");
        }
    }
}
