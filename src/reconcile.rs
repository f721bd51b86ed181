//! `users reconcile`: repairs `thryve.source_connections` from Thryve's own answer
//! (`/v5/userInformation`) when connect/disconnect webhooks were lost, one user at a time.

use chrono::Utc;
use serde::Serialize;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::{
    fetcher::{CallError, ThryveClient},
    sources::{self, Reconciled},
    thryve::api,
    users,
};

/// What a reconciliation did; printed as JSON by `users reconcile`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Report {
    /// Users asked about.
    pub users: usize,
    /// Connection states that changed.
    pub changed: Vec<Reconciled>,
    /// Users Thryve no longer knows (403): reported, their rows left as they are.
    pub unknown_to_thryve: Vec<UserError>,
    /// Users whose answer did not come (retries spent) or could not be read: unchanged.
    pub failed: Vec<UserError>,
    /// Why the run stopped before the last user (a 401: the credentials are wrong for all).
    pub stopped: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UserError {
    pub end_user_id: String,
    pub error: String,
}

/// Asks Thryve about `only`, or else every user the bridge knows ([`users::known`]), one call
/// at a time under the client's rate cap and retries, and writes each user's differences
/// ([`sources::reconcile`]) as of the moment the call started. Running it again with nothing
/// changed at Thryve changes nothing.
pub async fn run(
    pool: &PgPool,
    client: &ThryveClient,
    only: Option<&str>,
    shutdown: &CancellationToken,
) -> sqlx::Result<Report> {
    let targets = match only {
        Some(user) => vec![user.to_owned()],
        None => users::known(pool).await?,
    };
    let mut report = Report::default();
    for user in targets {
        report.users += 1;
        let asked_at = Utc::now();
        let answer = match client.user_information(&user, shutdown).await {
            Ok(answer) => answer,
            Err(CallError::Forbidden(message)) => {
                tracing::warn!(end_user_id = %user, %message, "reconcile: Thryve does not know this user (403); left as it is");
                report.unknown_to_thryve.push(UserError {
                    end_user_id: user,
                    error: format!("403 from Thryve: {message}"),
                });
                continue;
            }
            Err(error @ (CallError::Unauthorized(_) | CallError::Cancelled)) => {
                report.users -= 1;
                report.stopped = Some(error.to_string());
                break;
            }
            Err(error) => {
                tracing::warn!(end_user_id = %user, %error, "reconcile: no answer; left as it is");
                report.failed.push(UserError {
                    end_user_id: user,
                    error: error.to_string(),
                });
                continue;
            }
        };
        match api::connected_sources(&answer, &user) {
            Ok(connected) => {
                let changed = sources::reconcile(pool, &user, &connected, asked_at).await?;
                for change in &changed {
                    tracing::info!(end_user_id = %user, data_source_id = change.data_source_id, connected = change.connected, "reconcile: connection changed");
                }
                report.changed.extend(changed);
            }
            Err(error) => report.failed.push(UserError {
                end_user_id: user,
                error: format!("unreadable answer from Thryve: {error}"),
            }),
        }
    }
    Ok(report)
}
