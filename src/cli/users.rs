//! `users erase`: GDPR erasure of one end user's rows (JSON out).

use clap::Subcommand;
use sqlx::PgPool;

use super::common::{print_json, CliError};
use crate::users;

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
}

pub(super) async fn run(command: UsersCommand, pool: PgPool) -> Result<(), CliError> {
    let UsersCommand::Erase { end_user_id, yes } = command;
    if !yes {
        let rows = users::count(&pool, &end_user_id).await?;
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
