//! `inbox ...`: show, list or replay inbox rows (JSON out).

use clap::{Subcommand, ValueEnum};
use sqlx::PgPool;

use super::common::{print_json, CliError};
use crate::inbox::{self, Status};

#[derive(Debug, Subcommand)]
pub enum InboxCommand {
    /// Print one row, payload included.
    Show { id: i64 },
    /// List rows, newest first, without payloads.
    List {
        /// Only rows in this status (all when absent).
        #[arg(long, value_enum)]
        status: Option<Status>,
        #[arg(long, default_value_t = 100)]
        limit: i64,
        #[arg(long)]
        end_user: Option<String>,
    },
    /// Run quarantined and ignored rows through today's parser, oldest first: rows that parse
    /// now get their typed columns and go back to pending for the poller; the others get
    /// today's reason. Prints counts and ids.
    Replay {
        /// Only rows in this status (both when absent).
        #[arg(long, value_enum)]
        status: Option<HeldStatus>,
        /// Only this row.
        #[arg(long)]
        id: Option<i64>,
        #[arg(long, default_value_t = 1000)]
        limit: i64,
    },
}

/// The statuses a row can be held in that `inbox replay` reads again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum HeldStatus {
    Quarantined,
    Ignored,
}

impl From<HeldStatus> for Status {
    fn from(held: HeldStatus) -> Self {
        match held {
            HeldStatus::Quarantined => Status::Quarantined,
            HeldStatus::Ignored => Status::Ignored,
        }
    }
}

pub(super) async fn run(command: InboxCommand, pool: PgPool) -> Result<(), CliError> {
    match command {
        InboxCommand::Show { id } => {
            let row = inbox::get(&pool, id)
                .await?
                .ok_or_else(|| CliError::Failed(format!("inbox row {id}: not found")))?;
            print_json(&row);
            Ok(())
        }
        InboxCommand::List {
            status,
            limit,
            end_user,
        } => {
            let rows = inbox::list(&pool, status, end_user.as_deref(), limit).await?;
            print_json(&rows);
            Ok(())
        }
        InboxCommand::Replay { status, id, limit } => {
            let mut conn = pool.acquire().await?;
            let report = inbox::replay(&mut conn, status.map(Status::from), id, limit).await?;
            let examined = report.pending.len() + report.quarantined.len() + report.ignored.len();
            print_json(&serde_json::json!({
                "examined": examined,
                "counts": {
                    "pending": report.pending.len(),
                    "quarantined": report.quarantined.len(),
                    "ignored": report.ignored.len(),
                },
                "ids": report,
            }));
            match id {
                Some(id) if examined == 0 => Err(CliError::Failed(format!(
                    "inbox row {id}: not found, not quarantined or ignored, or held by another replay"
                ))),
                _ => Ok(()),
            }
        }
    }
}
