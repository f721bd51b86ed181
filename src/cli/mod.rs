//! The `thryve-bridge` command line: `serve` (the default), `migrate`, `healthcheck`, `hmac
//! check`, and the operator commands, which print JSON. Each command group is a file owning
//! its subcommand enum and its handler; every handler fails with one [`CliError`] (in
//! `common.rs`, with the pool and the JSON printer every command uses), printed as `error: ...`
//! on stderr with exit code 1.

mod common;
mod hmac;
mod housekeeping;
mod inbox;
mod init;
mod ranges;
mod serve;
mod spool;
mod users;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use self::common::{operator_pool, print_json};
pub use self::{
    common::CliError,
    hmac::HmacCommand,
    housekeeping::HousekeepingCommand,
    inbox::{HeldStatus, InboxCommand},
    ranges::{GranularityArg, RangesCommand},
    spool::SpoolCommand,
    users::UsersCommand,
};
use crate::{
    config::{DatabaseConfig, ServeConfig},
    stats, telemetry,
};

#[derive(Debug, Parser)]
#[command(
    name = "thryve-bridge",
    version,
    about = "Stores Thryve webhooks in Postgres and turns them into dirty ranges for your jobs",
    long_about = "Stores Thryve webhooks in Postgres and turns them into dirty ranges for your jobs.\n\
                  Every setting is also read from the environment (a .env file is read first).",
    after_help = "Settings: `thryve-bridge serve --help` lists the server's; each subcommand's \
                  --help lists its own. Every variable, with its default and meaning, is in \
                  .env.example and docs/configuration.md."
)]
pub struct Cli {
    #[command(flatten)]
    pub database: DatabaseConfig,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the webhook receiver (the default when no command is given).
    Serve(Box<ServeConfig>),
    /// Apply the embedded migrations (schema `thryve`) and exit; with --check, only report.
    Migrate {
        /// Change nothing: list applied, pending and unknown migrations (JSON) and exit 1
        /// unless the database is exactly at this binary's migrations (for CI).
        #[arg(long)]
        check: bool,
    },
    /// Set up a local bridge in one step: create the database if missing, migrate, write a
    /// `.env` with a generated credential (an existing one is kept), print the first delivery.
    Init {
        /// The file to write (never overwritten).
        #[arg(long, default_value = ".env")]
        env_file: std::path::PathBuf,
    },
    /// HMAC signature tools (JSON out).
    #[command(subcommand)]
    Hmac(HmacCommand),
    /// Exit 0 if the local server answers `/readyz` with 200 (for container health checks).
    Healthcheck {
        /// URL to probe; only plain http is supported.
        #[arg(
            long,
            env = "HEALTHCHECK_URL",
            default_value = "http://127.0.0.1:8080/readyz"
        )]
        url: String,
    },
    /// Claim, complete, fail or list dirty ranges by hand (JSON out).
    #[command(subcommand)]
    Ranges(RangesCommand),
    /// Show, list or replay inbox rows (JSON out).
    #[command(subcommand)]
    Inbox(InboxCommand),
    /// Counts and ages per table and status, and seconds since the last delivery (JSON out).
    Stats,
    /// Erase one end user's rows, or reconcile users' connections with Thryve (JSON out).
    #[command(subcommand)]
    Users(UsersCommand),
    /// Run housekeeping (retention) by hand (JSON out).
    #[command(subcommand)]
    Housekeeping(HousekeepingCommand),
    /// List or reload the spool's set-aside records (JSON out).
    #[command(subcommand)]
    Spool(SpoolCommand),
}

/// `serve`'s settings when no subcommand is given: read from the environment alone.
#[derive(Debug, Parser)]
struct ServeFromEnv {
    #[command(flatten)]
    serve: ServeConfig,
}

/// Entry point of the binary: reads `.env`, parses, runs, and turns errors into one line.
pub async fn main() -> ExitCode {
    let dotenv = dotenvy::dotenv();
    let cli = Cli::parse();
    telemetry::init(cli.database.log_format);
    if let Err(e) = &dotenv {
        if !e.not_found() {
            eprintln!("error: .env: {e}");
            return ExitCode::FAILURE;
        }
    }
    let command = match cli.command {
        Some(command) => command,
        None => Command::Serve(Box::new(ServeFromEnv::parse_from(["thryve-bridge"]).serve)),
    };
    match run(command, &cli.database).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}

async fn run(command: Command, database: &DatabaseConfig) -> Result<(), CliError> {
    match command {
        Command::Serve(config) => serve::serve(&config, database).await,
        Command::Migrate { check: false } => serve::migrate(operator_pool(database)?).await,
        Command::Migrate { check: true } => serve::migrate_check(operator_pool(database)?).await,
        Command::Init { env_file } => init::run(database, &env_file).await,
        Command::Hmac(command) => hmac::run(command).await,
        Command::Healthcheck { url } => serve::healthcheck(&url).await,
        Command::Ranges(command) => ranges::run(command, operator_pool(database)?).await,
        Command::Inbox(command) => inbox::run(command, operator_pool(database)?).await,
        Command::Stats => {
            print_json(&stats::collect(&operator_pool(database)?).await?);
            Ok(())
        }
        Command::Users(command) => users::run(command, operator_pool(database)?).await,
        Command::Housekeeping(command) => housekeeping::run(command, database).await,
        Command::Spool(command) => spool::run(command, database).await,
    }
}
