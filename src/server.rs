//! Builds the service from its configuration and runs it until told to stop.

use std::{net::SocketAddr, sync::Arc};

use sqlx::PgPool;
use tokio::{net::TcpListener, sync::Notify, task::JoinHandle};
use tokio_util::sync::CancellationToken;

use crate::{
    config::{ConfigError, ServeConfig},
    db,
    http::{self, auth::Authenticator, AppState, Limits},
    inbox::InboxWriter,
};

/// Why the service could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("cannot listen on {addr} (BIND_ADDR): {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("migrations failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("server error: {0}")]
    Serve(std::io::Error),
}

/// A bound, ready-to-run service: the listener is open, so `local_addr` is known (port 0 in
/// tests) before any request is served.
pub struct Application {
    listener: TcpListener,
    state: AppState,
    writers: Vec<JoinHandle<()>>,
}

impl Application {
    /// Checks the configuration, optionally migrates, and binds the listener.
    pub async fn build(config: &ServeConfig, pool: PgPool) -> Result<Self, StartError> {
        let auth = Authenticator::from_config(
            config.webhook_basic_auth.as_ref(),
            config.webhook_auth_header.as_ref(),
            config.hmac_verifier()?,
            config.webhook_allow_unauthenticated,
        )?;
        if config.max_body_bytes == 0 {
            return Err(ConfigError::new("MAX_BODY_BYTES", "must be at least 1").into());
        }
        if config.ack_deadline_ms == 0 {
            return Err(
                ConfigError::new("ACK_DEADLINE_MS", "must be at least 1 (default 1500)").into(),
            );
        }
        if config.migrate_on_start {
            db::migrate(&pool).await?;
            tracing::info!("migrations applied");
        }
        let listener = TcpListener::bind(config.bind_addr)
            .await
            .map_err(|source| StartError::Bind {
                addr: config.bind_addr,
                source,
            })?;
        let committed = Arc::new(Notify::new());
        let (writer, writers) = InboxWriter::start(
            pool.clone(),
            config.ingest_writers,
            config.ingest_batch_max,
            committed,
        );
        tracing::info!(
            version = env!("CARGO_PKG_VERSION"),
            bind_addr = %listener.local_addr().map_err(StartError::Serve)?,
            auth = %auth.modes(),
            max_body_bytes = config.max_body_bytes,
            ack_deadline_ms = config.ack_deadline_ms,
            ingest_writers = config.ingest_writers,
            ingest_batch_max = config.ingest_batch_max,
            "thryve-bridge started"
        );
        let state = AppState {
            pool,
            writer,
            auth: Arc::new(auth),
            limits: Limits {
                max_body_bytes: config.max_body_bytes,
                ack_deadline: config.ack_deadline(),
                retry_after_secs: config.retry_after_secs,
            },
        };
        Ok(Self {
            listener,
            state,
            writers,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// Serves until `shutdown` is cancelled, then stops accepting, lets in-flight requests
    /// finish (each still commits before its answer) and waits for the inbox writers to drain.
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> Result<(), StartError> {
        let Self {
            listener,
            state,
            writers,
        } = self;
        let router = http::app(state);
        axum::serve(listener, router)
            .with_graceful_shutdown(shutdown.cancelled_owned())
            .await
            .map_err(StartError::Serve)?;
        for writer in writers {
            let _ = writer.await;
        }
        tracing::info!("thryve-bridge stopped");
        Ok(())
    }
}
