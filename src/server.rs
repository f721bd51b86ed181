//! Builds the service from its configuration and runs it until told to stop.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use sqlx::PgPool;
use tokio::{
    net::TcpListener,
    sync::{watch, Semaphore},
    task::JoinHandle,
};
use tokio_util::sync::CancellationToken;

use crate::{
    config::{ConfigError, ServeConfig},
    db,
    fetcher::{Fetcher, FetcherSettings, ThryveClient},
    housekeeping::Housekeeping,
    http::{
        self,
        auth::Authenticator,
        hmac::HmacVerifier,
        listener::{self, ListenerOptions},
        AppState, Limits,
    },
    inbox::InboxWriter,
    metrics::Metrics,
    poller::{Poller, PollerConfig},
    spool::{Spool, SpoolLoader, SpoolMetrics},
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
    #[error("{0}")]
    Tls(String),
}

/// A bound, ready-to-run service: the listener is open, so `local_addr` is known (port 0 in
/// tests) before any request is served.
pub struct Application {
    listener: TcpListener,
    state: AppState,
    writers: Vec<JoinHandle<()>>,
    /// The poller and how many of its batches run at once.
    poller: Option<(Poller, usize)>,
    housekeeping: Option<Housekeeping>,
    fetcher: Option<Fetcher>,
    wake: watch::Receiver<u64>,
    notify: Option<PgPool>,
    listener_options: ListenerOptions,
    spool: Option<(SpoolLoader, std::thread::JoinHandle<()>)>,
}

impl Application {
    /// Checks the configuration ([`ServeConfig::validate`]), optionally migrates, and binds
    /// the listener.
    pub async fn build(config: &ServeConfig, pool: PgPool) -> Result<Self, StartError> {
        config.validate()?;
        // The settings are checked: what follows fails only on the disk, the network or the
        // database (TLS files, the pool's size, the spool directory).
        let auth = Authenticator::from_config(
            config.webhook_basic_auth.as_ref(),
            config.webhook_auth_header.as_ref(),
            HmacVerifier::from_config(config)?,
            config.webhook_allow_unauthenticated,
        )?;
        let tls = match (&config.tls_cert_path, &config.tls_key_path) {
            (Some(cert), Some(key)) => {
                Some(listener::tls_acceptor(cert, key).map_err(StartError::Tls)?)
            }
            _ => None,
        };
        let metrics = Arc::new(Metrics::new());
        let listener_options = ListenerOptions {
            tls,
            header_read_timeout: Duration::from_millis(config.header_read_timeout_ms.max(1)),
            shutdown_timeout: Duration::from_secs(config.shutdown_timeout_secs),
            max_connections: listener::fit_connections(
                config.max_connections,
                pool.options().get_max_connections(),
            )
            .map_err(|problem| ConfigError::new("MAX_CONNECTIONS", problem))?,
            open_connections: metrics.http_connections_open.clone(),
        };
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
        let (committed, wake) = watch::channel(0u64);
        let committed = Arc::new(committed);
        let (writer, writers) = InboxWriter::start(
            pool.clone(),
            config.ingest_writers,
            config.ingest_batch_max,
            committed.clone(),
        );
        let spool = match &config.spool_dir {
            Some(dir) => {
                let (spool, thread) = Spool::open(
                    dir,
                    SpoolMetrics {
                        waiting: metrics.spool_records.clone(),
                        rejected: metrics.spool_rejected.clone(),
                        set_aside: metrics.spool_set_aside.clone(),
                        load_errors: metrics.spool_load_errors.clone(),
                    },
                )
                .map_err(|e| ConfigError::new("SPOOL_DIR", e.to_string()))?;
                let loader = SpoolLoader::new(spool.clone(), pool.clone(), committed.clone());
                Some((spool, loader, thread))
            }
            None => None,
        };
        let poller = config.poller_enabled.then(|| {
            Poller::new(
                pool.clone(),
                PollerConfig {
                    batch_size: config.poll_batch_size,
                    interval: Duration::from_millis(config.poll_interval_ms),
                    listen: config.poll_notify,
                },
            )
            .with_metrics(metrics.clone())
        });
        let poller = poller.map(|p| (p, config.poll_concurrency));
        let housekeeping = config.housekeeping_enabled.then(|| {
            Housekeeping::new(
                pool.clone(),
                config.retention.clone(),
                Duration::from_secs(config.housekeeping_interval_secs),
            )
        });
        let fetcher = match config.fetcher.fetcher_enabled {
            true => Some(Fetcher::new(
                pool.clone(),
                ThryveClient::new(&config.fetcher, metrics.clone())
                    .map_err(|e| ConfigError::new("THRYVE_API_URL", e.to_string()))?,
                FetcherSettings::from_config(&config.fetcher),
                metrics.clone(),
            )),
            false => None,
        };
        tracing::info!(
            version = env!("CARGO_PKG_VERSION"),
            bind_addr = %listener.local_addr().map_err(StartError::Serve)?,
            tls = listener_options.tls.is_some(),
            auth = %auth.modes(),
            max_body_bytes = config.max_body_bytes,
            body_budget_bytes = config.body_budget_bytes,
            max_connections = listener_options.max_connections,
            ack_deadline_ms = config.ack_deadline_ms,
            ingest_writers = config.ingest_writers,
            ingest_batch_max = config.ingest_batch_max,
            receiver = config.receiver_enabled,
            poller = config.poller_enabled,
            poll_batch_size = config.poll_batch_size,
            poll_concurrency = config.poll_concurrency,
            poll_interval_ms = config.poll_interval_ms,
            poll_notify = config.poll_notify,
            housekeeping = config.housekeeping_enabled,
            fetcher = config.fetcher.fetcher_enabled,
            thryve_api_url = config.fetcher.fetcher_enabled.then_some(config.fetcher.thryve_api_url.as_str()),
            inbox_retention_secs = config.retention.inbox_retention.as_secs(),
            range_retention_secs = config.retention.range_retention.as_secs(),
            payload_retention_secs = config.retention.payload_retention.map(|d| d.as_secs()),
            spool_dir = config.spool_dir.as_ref().map(|d| d.display().to_string()),
            spool_margin_ms = config.spool_dir.as_ref().map(|_| config.spool_margin_ms),
            "thryve-bridge started"
        );
        let state = AppState {
            pool: pool.clone(),
            writer,
            auth: Arc::new(auth),
            limits: Limits {
                max_body_bytes: config.max_body_bytes,
                ack_deadline: config.ack_deadline(),
                retry_after_secs: config.retry_after_secs,
                spool_margin: Duration::from_millis(config.spool_margin_ms),
                signing_window: Duration::from_secs(config.webhook_hmac_window_secs),
            },
            receiver_enabled: config.receiver_enabled,
            metrics,
            spool: spool.as_ref().map(|(spool, _, _)| spool.clone()),
            body_budget: Arc::new(Semaphore::new(
                config.body_budget_bytes.min(Semaphore::MAX_PERMITS),
            )),
            parse_slots: Arc::new(Semaphore::new(
                std::thread::available_parallelism().map_or(2, usize::from),
            )),
            fetcher: fetcher.as_ref().map(Fetcher::status),
        };
        Ok(Self {
            listener,
            state,
            writers,
            poller,
            housekeeping,
            fetcher,
            wake,
            notify: (config.poll_notify && config.receiver_enabled).then_some(pool),
            listener_options,
            spool: spool.map(|(_, loader, thread)| (loader, thread)),
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// Serves until `shutdown` is cancelled, then stops accepting, lets in-flight requests
    /// finish (each still commits before its answer), waits for the inbox writers to drain
    /// and for the poller, housekeeping, the fetcher and the spool loader to finish their
    /// batches (the fetcher abandons calls under way: their ranges' leases lapse).
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> Result<(), StartError> {
        let Self {
            listener,
            state,
            writers,
            poller,
            housekeeping,
            fetcher,
            wake,
            notify,
            listener_options,
            spool,
        } = self;
        let (spool_loader, spool_thread) = spool.unzip();
        let spool_loader =
            spool_loader.map(|l| tokio::spawn(l.run(wake.clone(), shutdown.clone())));
        // Batches of one process at once: while one waits on the database for its statements
        // or its commit, another is parsing, so both of the database's cores work.
        let pollers: Vec<_> = poller
            .map(|(p, n)| vec![p; n])
            .unwrap_or_default()
            .into_iter()
            .map(|p| tokio::spawn(p.run(wake.clone(), shutdown.clone())))
            .collect();
        let housekeeping = housekeeping.map(|h| tokio::spawn(h.run(shutdown.clone())));
        let fetcher = fetcher.map(|f| tokio::spawn(f.run(shutdown.clone())));
        let notifier = notify.map(|pool| tokio::spawn(notify_loop(pool, wake, shutdown.clone())));
        let router = http::app(state);
        let grace = listener_options.shutdown_timeout;
        let served = listener::serve(listener, router, listener_options, shutdown.clone())
            .await
            .map_err(StartError::Serve);
        // Also stop the background tasks if the server ended by itself.
        shutdown.cancel();
        // The writers end once the last request holding the router is gone; connections cut
        // off at the shutdown timeout may still hold it, so this wait is bounded too.
        let drained = async {
            for writer in writers {
                let _ = writer.await;
            }
            for task in pollers
                .into_iter()
                .chain(housekeeping)
                .chain(fetcher)
                .chain(notifier)
                .chain(spool_loader)
            {
                let _ = task.await;
            }
            // Last: its thread ends (and the spool directory's lock goes) once the requests
            // and the loader have dropped their handles.
            if let Some(thread) = spool_thread {
                let _ = tokio::task::spawn_blocking(move || thread.join()).await;
            }
        };
        if tokio::time::timeout(grace, drained).await.is_err() {
            tracing::warn!("background tasks still busy at the shutdown timeout; exiting anyway");
        }
        served?;
        tracing::info!("thryve-bridge stopped");
        Ok(())
    }
}

/// Tells pollers in other processes that the inbox has new rows: one `NOTIFY` per burst of
/// commits, sent from here rather than inside each commit so it adds nothing to ack latency.
async fn notify_loop(
    pool: PgPool,
    mut committed: watch::Receiver<u64>,
    shutdown: CancellationToken,
) {
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            changed = committed.changed() => if changed.is_err() { return },
        }
        committed.borrow_and_update();
        if let Err(error) = sqlx::query("SELECT pg_notify($1, '')")
            .bind(db::INBOX_CHANNEL)
            .execute(&pool)
            .await
        {
            tracing::debug!(%error, "NOTIFY failed; pollers elsewhere fall back to their interval");
        }
    }
}
