//! `spool ...`: list or reload the outage spool's set-aside records (JSON out).

use std::{
    path::{Path, PathBuf},
    sync::Arc,
};

use clap::Subcommand;
use sqlx::PgPool;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::common::{operator_pool, print_json, CliError};
use crate::{
    config::DatabaseConfig,
    spool::{self, Spool, SpoolLoader, SpoolMetrics},
};

#[derive(Debug, Subcommand)]
pub enum SpoolCommand {
    /// List the records set aside in SPOOL_DIR/rejected-*.jsonl (no payloads). Reads only:
    /// safe while a server owns the directory.
    List {
        #[arg(long, env = "SPOOL_DIR")]
        dir: PathBuf,
    },
    /// Load the set-aside records into the inbox again, once what refused them is fixed; any
    /// still refused are set aside again. Takes the directory's lock, so run it while the
    /// server that owns SPOOL_DIR is stopped (e.g. between stopping and starting a replica).
    Reload {
        #[arg(long, env = "SPOOL_DIR")]
        dir: PathBuf,
    },
}

pub(super) async fn run(command: SpoolCommand, database: &DatabaseConfig) -> Result<(), CliError> {
    match command {
        SpoolCommand::List { dir } => {
            let listed = spool::list_set_aside(&dir).map_err(spool_dir(&dir))?;
            print_json(&listed);
            Ok(())
        }
        SpoolCommand::Reload { dir } => reload(&dir, operator_pool(database)?).await,
    }
}

fn spool_dir(dir: &Path) -> impl FnOnce(std::io::Error) -> CliError {
    CliError::file(format!("SPOOL_DIR: {}", dir.display()))
}

/// Requeues the set-aside records and loads everything the spool holds, as the server's loader
/// would; prints what is left.
async fn reload(dir: &Path, pool: PgPool) -> Result<(), CliError> {
    let metrics = SpoolMetrics::default();
    let (spool, writer) = Spool::open(dir, metrics.clone())
        .map_err(|e| CliError::Failed(format!("SPOOL_DIR: {e}")))?;
    let requeued = spool.requeue_set_aside().map_err(spool_dir(dir))?;
    let loader = SpoolLoader::new(spool, pool, Arc::new(watch::channel(0).0));
    let loaded = loader.load_all(&CancellationToken::new()).await;
    drop(loader);
    // The writer thread ends (and the lock goes) with the last handle.
    let _ = tokio::task::spawn_blocking(move || writer.join()).await;
    loaded.map_err(|e| CliError::Failed(format!("{e}; the records stay in the spool")))?;
    print_json(&serde_json::json!({
        "requeued": requeued,
        "waiting": metrics.waiting.get(),
        "set_aside": metrics.set_aside.get(),
    }));
    Ok(())
}
