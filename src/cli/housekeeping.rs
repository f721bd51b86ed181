//! `housekeeping run`: one retention pass by hand (JSON out).

use std::time::Duration;

use clap::Subcommand;
use tokio_util::sync::CancellationToken;

use super::common::{operator_pool, print_json, CliError};
use crate::{
    config::{DatabaseConfig, RetentionConfig},
    housekeeping::Housekeeping,
};

#[derive(Debug, Subcommand)]
pub enum HousekeepingCommand {
    /// One pass now with the retention settings; prints what it deleted and blanked.
    Run(RetentionConfig),
}

pub(super) async fn run(
    command: HousekeepingCommand,
    database: &DatabaseConfig,
) -> Result<(), CliError> {
    let HousekeepingCommand::Run(retention) = command;
    retention.validate()?;
    // One pass, so the interval between passes plays no part.
    let report = Housekeeping::new(operator_pool(database)?, retention, Duration::ZERO)
        .pass(&CancellationToken::new())
        .await?;
    print_json(&report);
    Ok(())
}
