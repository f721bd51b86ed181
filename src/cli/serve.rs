//! `serve` (with the signal that stops it), `migrate` and `healthcheck`: running the service
//! and what a container needs around it.

use std::time::Duration;

use sqlx::PgPool;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

use super::common::{print_json, CliError};
use crate::{
    config::{DatabaseConfig, ServeConfig},
    db,
    server::Application,
};

pub(super) async fn serve(config: &ServeConfig, database: &DatabaseConfig) -> Result<(), CliError> {
    let pool = db::pool(
        database.url()?,
        database.database_max_connections,
        config.receiver.ack_deadline(),
    )
    .map_err(CliError::Pool)?;
    let app = Application::build(config, pool).await?;
    let shutdown = CancellationToken::new();
    tokio::spawn(stop_on_signal(shutdown.clone()));
    Ok(app.run_until_stopped(shutdown).await?)
}

pub(super) async fn migrate(pool: PgPool) -> Result<(), CliError> {
    db::migrate(&pool).await?;
    let version = db::MIGRATOR.iter().map(|m| m.version).max().unwrap_or(0);
    println!(
        "{}",
        serde_json::json!({ "migrated": true, "version": version })
    );
    Ok(())
}

/// `migrate --check`: the database's migrations against the embedded ones, changing nothing.
pub(super) async fn migrate_check(pool: PgPool) -> Result<(), CliError> {
    let status = db::migration_status(&pool).await?;
    let current = status.is_current();
    let mut report = serde_json::to_value(&status).expect("a status serialises");
    report["up_to_date"] = current.into();
    print_json(&report);
    if current {
        return Ok(());
    }
    let mut problems = Vec::new();
    if !status.pending.is_empty() {
        problems.push(format!(
            "{} migration(s) pending: run `thryve-bridge migrate`",
            status.pending.len()
        ));
    }
    if !status.unknown.is_empty() {
        problems.push(format!(
            "{} applied migration(s) this binary does not know (the database was migrated by a newer version)",
            status.unknown.len()
        ));
    }
    if !status.mismatched.is_empty() {
        problems.push(format!(
            "{} applied migration(s) differ from this binary's files or failed",
            status.mismatched.len()
        ));
    }
    Err(CliError::Failed(format!(
        "migrate --check: {}",
        problems.join("; ")
    )))
}

async fn stop_on_signal(shutdown: CancellationToken) {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = terminate => {},
    }
    tracing::info!("shutdown signal received; finishing in-flight requests");
    shutdown.cancel();
}

/// A minimal HTTP/1.0 GET, because slim runtime images have no curl.
pub(super) async fn healthcheck(url: &str) -> Result<(), CliError> {
    let rest = url.strip_prefix("http://").ok_or_else(|| {
        CliError::Failed(format!("HEALTHCHECK_URL: {url:?} must start with http://"))
    })?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let probe = async {
        let mut stream = tokio::net::TcpStream::connect(authority).await?;
        stream
            .write_all(format!("GET {path} HTTP/1.0\r\nHost: {authority}\r\n\r\n").as_bytes())
            .await?;
        let mut response = String::new();
        stream.read_to_string(&mut response).await?;
        Ok::<_, std::io::Error>(response)
    };
    let response = tokio::time::timeout(Duration::from_secs(5), probe)
        .await
        .map_err(|_| CliError::Failed(format!("{url}: no answer within 5 s")))?
        .map_err(|e| CliError::Failed(format!("{url}: {e}")))?;
    let status_line = response.lines().next().unwrap_or_default();
    // The body says why (`/readyz` answers `{"error":"..."}`): print it, so the container's
    // health log (`docker inspect`) shows the reason and not just a status.
    let body = response
        .split_once("\r\n\r\n")
        .map_or("", |(_, body)| body.trim());
    let body = &body[..body.floor_char_boundary(512)];
    if status_line.split_whitespace().nth(1) == Some("200") {
        if !body.is_empty() {
            println!("{body}");
        }
        Ok(())
    } else if body.is_empty() {
        Err(CliError::Failed(format!("{url}: {status_line}")))
    } else {
        Err(CliError::Failed(format!("{url}: {status_line}: {body}")))
    }
}
