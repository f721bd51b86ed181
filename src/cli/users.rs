//! `users erase`: GDPR erasure of one end user's rows; `users reconcile`: connections repaired
//! from Thryve's own answer (JSON out).

use std::sync::Arc;

use clap::Subcommand;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use super::common::{print_json, CliError};
use crate::{config::ThryveApiConfig, fetcher::ThryveClient, metrics::Metrics, reconcile, users};

#[derive(Debug, Subcommand)]
pub enum UsersCommand {
    /// Delete every row of END_USER_ID from every table, in one transaction (GDPR erasure).
    /// Without --yes, prints what it would delete and exits 1.
    Erase {
        end_user_id: String,
        /// Really delete.
        #[arg(long)]
        yes: bool,
    },
    /// Ask Thryve (/v5/userInformation) which sources each known user has connected, and
    /// write what differs into source_connections (never over a newer webhook event).
    /// Uses the fetcher's THRYVE_* credentials, rate cap and retries. Prints what changed;
    /// exits 1 when a user got no answer. Safe to run from cron: a second run changes nothing.
    Reconcile {
        /// Only this end user (known to the bridge or not).
        #[arg(long)]
        user: Option<String>,
        #[command(flatten)]
        thryve: Box<ThryveApiConfig>,
    },
}

pub(super) async fn run(command: UsersCommand, pool: PgPool) -> Result<(), CliError> {
    match command {
        UsersCommand::Erase { end_user_id, yes } => erase(&pool, end_user_id, yes).await,
        UsersCommand::Reconcile { user, thryve } => {
            reconcile(&pool, user.as_deref(), &thryve).await
        }
    }
}

async fn erase(pool: &PgPool, end_user_id: String, yes: bool) -> Result<(), CliError> {
    if !yes {
        let rows = users::count(pool, &end_user_id).await?;
        print_json(&serde_json::json!({ "end_user_id": end_user_id, "would_delete": rows }));
        return Err(CliError::Failed(format!(
            "refusing to erase {end_user_id:?} without --yes (would_delete on stdout is what it would delete)"
        )));
    }
    let mut conn = pool.acquire().await?;
    let rows = users::erase(&mut conn, &end_user_id).await?;
    print_json(&serde_json::json!({ "end_user_id": end_user_id, "deleted": rows }));
    Ok(())
}

async fn reconcile(
    pool: &PgPool,
    user: Option<&str>,
    thryve: &ThryveApiConfig,
) -> Result<(), CliError> {
    thryve.validate("running users reconcile (it calls Thryve's /v5/userInformation)")?;
    let client = ThryveClient::new(thryve, Arc::new(Metrics::new()))
        .map_err(|e| CliError::Failed(format!("HTTP client: {e}")))?;
    let report = reconcile::run(pool, &client, user, &CancellationToken::new()).await?;
    print_json(&report);
    match (&report.stopped, report.failed.len()) {
        (Some(reason), _) => Err(CliError::Failed(format!("reconcile stopped: {reason}"))),
        (None, 0) => Ok(()),
        (None, n) => Err(CliError::Failed(format!(
            "{n} users got no answer from Thryve; their connections are unchanged (see failed)"
        ))),
    }
}
