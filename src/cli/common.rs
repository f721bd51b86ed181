//! What every command uses: the one error type, a small pool, and the JSON printer.

use std::time::Duration;

use serde::Serialize;
use sqlx::PgPool;

use crate::{
    config::{ConfigError, DatabaseConfig},
    db,
    server::StartError,
};

/// Why a command failed; its `Display` is the line after `error: `.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// A setting that is missing or makes no sense.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// `DATABASE_URL` could not make a pool.
    #[error("DATABASE_URL: {0}")]
    Pool(sqlx::Error),
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("migrate: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// `serve` could not start, or stopped with an error.
    #[error(transparent)]
    Start(#[from] StartError),
    /// A file or directory the command was given, and what reading it said.
    #[error("{what}: {source}")]
    File {
        what: String,
        source: std::io::Error,
    },
    /// Anything else, already worded: a refusal, a row not found, a failed probe.
    #[error("{0}")]
    Failed(String),
}

impl CliError {
    /// For `map_err`: reading `what` (a flag or variable and its path) failed.
    pub(super) fn file(what: String) -> impl FnOnce(std::io::Error) -> CliError {
        move |source| CliError::File { what, source }
    }
}

impl From<&str> for CliError {
    fn from(message: &str) -> Self {
        CliError::Failed(message.to_owned())
    }
}

/// A small pool for a one-shot command.
pub(super) fn operator_pool(database: &DatabaseConfig) -> Result<PgPool, CliError> {
    db::pool(database.url()?, 2, Duration::from_secs(30)).map_err(CliError::Pool)
}

pub(super) fn print_json(value: &impl Serialize) {
    println!(
        "{}",
        serde_json::to_string(value).expect("operator output serialises")
    );
}
