//! Builds the service from its configuration, one component from each settings group, and
//! runs it until told to stop.

use std::{net::SocketAddr, sync::Arc};

use sqlx::PgPool;
use tokio::{sync::watch, task::JoinHandle};
use tokio_util::sync::CancellationToken;

use crate::{
    config::{ConfigError, ServeConfig},
    db,
    fetcher::Fetcher,
    housekeeping::Housekeeping,
    http::{
        self,
        listener::{self, ListenError, Listener},
        AppState, Receiver,
    },
    inbox::{InboxWriter, Notifier},
    metrics::Metrics,
    poller::Poller,
    service::Services,
    spool::{Spool, SpoolLoader},
};

/// Why the service could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Listen(#[from] ListenError),
    #[error("migrations failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("server error: {0}")]
    Serve(std::io::Error),
}

/// A bound, ready-to-run service: the listener is open, so `local_addr` is known (port 0 in
/// tests) before any request is served.
pub struct Application {
    listener: Listener,
    state: AppState,
    receiver: Option<Receiving>,
    background: Background,
}

/// The webhook route's component and the tasks it leaves to finish at shutdown.
struct Receiving {
    receiver: Arc<Receiver>,
    writers: Vec<JoinHandle<()>>,
}

/// Every background component this process runs, built and not yet started.
struct Background {
    /// Bumped after each commit of this process (inbox writers, spool loader).
    commits: watch::Receiver<u64>,
    poller: Option<Poller>,
    housekeeping: Option<Housekeeping>,
    fetcher: Option<Fetcher>,
    notifier: Option<Notifier>,
    spool: Option<(SpoolLoader, std::thread::JoinHandle<()>)>,
}

impl Application {
    /// Checks the configuration ([`ServeConfig::validate`]), optionally migrates, binds the
    /// listener and builds each component this process runs from its settings group.
    pub async fn build(config: &ServeConfig, pool: PgPool) -> Result<Self, StartError> {
        config.validate()?;
        // The settings are checked: what follows fails only on the disk, the network or the
        // database (TLS files, the pool's size, the spool directory).
        let metrics = Arc::new(Metrics::new());
        if config.migrate_on_start {
            db::migrate(&pool).await?;
            tracing::info!("migrations applied");
        }
        let listener = Listener::bind(
            &config.listener,
            pool.options().get_max_connections(),
            metrics.receiver.http_connections_open.clone(),
            metrics.receiver.http_connections_shed.clone(),
        )
        .await?;
        let (committed, commits) = watch::channel(0u64);
        let committed = Arc::new(committed);
        let spool = open_spool(config, &pool, &metrics, &committed)?;
        let receiver = match config.receiver.receiver_enabled {
            true => Some(receiving(config, &pool, &metrics, &committed, &spool)?),
            false => None,
        };
        let background = Background::build(config, &pool, &metrics, commits, spool)?;
        let state = AppState {
            pool,
            metrics,
            database_timeout: config.receiver.ack_deadline(),
            fetcher: background.fetcher.as_ref().map(Fetcher::status),
        };
        let app = Self {
            listener,
            state,
            receiver,
            background,
        };
        app.log_start(config);
        Ok(app)
    }

    fn log_start(&self, config: &ServeConfig) {
        let (receiver, poller, fetcher) = (&config.receiver, &config.poller, &config.fetcher);
        let retention = &config.housekeeping.retention;
        tracing::info!(
            version = env!("CARGO_PKG_VERSION"),
            bind_addr = %self.local_addr(),
            tls = self.listener.tls(),
            max_connections = self.listener.max_connections(),
            receiver = receiver.receiver_enabled,
            auth = self.receiver.as_ref().map(|r| r.receiver.auth_modes()),
            max_body_bytes = receiver.max_body_bytes,
            body_budget_bytes = receiver.body_budget_bytes,
            ack_deadline_ms = receiver.ack_deadline_ms,
            ingest_writers = receiver.ingest_writers,
            ingest_batch_max = receiver.ingest_batch_max,
            poller = poller.poller_enabled,
            poll_batch_size = poller.poll_batch_size,
            poll_batch_values = poller.poll_batch_values,
            max_values_per_delivery = poller.max_values_per_delivery,
            poll_concurrency = poller.poll_concurrency,
            poll_interval_ms = poller.poll_interval_ms,
            poll_notify = poller.poll_notify,
            housekeeping = config.housekeeping.housekeeping_enabled,
            fetcher = fetcher.fetcher_enabled,
            thryve_api_url = fetcher.fetcher_enabled.then_some(fetcher.api.thryve_api_url.as_str()),
            inbox_retention_secs = retention.inbox_retention.as_secs(),
            range_retention_secs = retention.range_retention.as_secs(),
            payload_retention_secs = retention.payload_retention.map(|d| d.as_secs()),
            spool_dir = config.spool.spool_dir.as_ref().map(|d| d.display().to_string()),
            spool_margin_ms = config.spool.spool_dir.as_ref().map(|_| config.spool.spool_margin_ms),
            "thryve-bridge started"
        );
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr()
    }

    /// Serves until `shutdown` is cancelled, then stops accepting, lets in-flight requests
    /// finish (each still commits before its answer), waits for the inbox writers to drain
    /// and for the poller, housekeeping, the fetcher and the spool loader to finish their
    /// passes (the fetcher abandons calls under way: their ranges' leases lapse).
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> Result<(), StartError> {
        let Self {
            listener,
            state,
            receiver,
            background,
        } = self;
        let mut services = Services::new(shutdown.clone());
        let spool_thread = background.start(&mut services);
        let (receiver, writers) = receiver.map(|r| (r.receiver, r.writers)).unzip();
        let router = http::app(state, receiver);
        let grace = listener.shutdown_timeout();
        let served = listener::serve(listener, router, shutdown.clone())
            .await
            .map_err(StartError::Serve);
        // Also stop the background services if the server ended by itself.
        shutdown.cancel();
        // The writers end once the last request holding the router is gone; connections cut
        // off at the shutdown timeout may still hold it, so this wait is bounded too.
        let drained = async {
            for writer in writers.into_iter().flatten() {
                let _ = writer.await;
            }
            services.stopped().await;
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

/// With `SPOOL_DIR`: the spool (and its writer thread) and the loader that empties it.
fn open_spool(
    config: &ServeConfig,
    pool: &PgPool,
    metrics: &Metrics,
    committed: &Arc<watch::Sender<u64>>,
) -> Result<Option<(Spool, SpoolLoader, std::thread::JoinHandle<()>)>, ConfigError> {
    let Some(dir) = &config.spool.spool_dir else {
        return Ok(None);
    };
    let (spool, thread) = Spool::open(dir, metrics.spool.clone())
        .map_err(|e| ConfigError::new("SPOOL_DIR", e.to_string()))?;
    let loader = SpoolLoader::new(spool.clone(), pool.clone(), committed.clone());
    Ok(Some((spool, loader, thread)))
}

/// The receiver and its inbox writers (`INGEST_WRITERS` tasks).
fn receiving(
    config: &ServeConfig,
    pool: &PgPool,
    metrics: &Arc<Metrics>,
    committed: &Arc<watch::Sender<u64>>,
    spool: &Option<(Spool, SpoolLoader, std::thread::JoinHandle<()>)>,
) -> Result<Receiving, ConfigError> {
    let settings = &config.receiver;
    let (writer, writers) = InboxWriter::start(
        pool.clone(),
        settings.ingest_writers,
        settings.ingest_batch_max,
        committed.clone(),
    );
    let spool = spool
        .as_ref()
        .map(|(spool, _, _)| (spool.clone(), &config.spool));
    let receiver = Receiver::new(settings, writer, spool, metrics.clone())?;
    Ok(Receiving {
        receiver: Arc::new(receiver),
        writers,
    })
}

impl Background {
    /// Each component whose switch is on, from its settings group.
    fn build(
        config: &ServeConfig,
        pool: &PgPool,
        metrics: &Arc<Metrics>,
        commits: watch::Receiver<u64>,
        spool: Option<(Spool, SpoolLoader, std::thread::JoinHandle<()>)>,
    ) -> Result<Self, ConfigError> {
        let poller = config
            .poller
            .poller_enabled
            .then(|| Poller::new(pool.clone(), &config.poller).with_metrics(metrics.clone()));
        let housekeeping = config.housekeeping.housekeeping_enabled.then(|| {
            Housekeeping::new(
                pool.clone(),
                config.housekeeping.retention.clone(),
                config.housekeeping.interval(),
            )
        });
        let fetcher = match config.fetcher.fetcher_enabled {
            true => Some(
                Fetcher::new(pool.clone(), &config.fetcher, metrics.clone())
                    .map_err(|e| ConfigError::new("THRYVE_API_URL", e.to_string()))?,
            ),
            false => None,
        };
        // Receivers tell pollers in other processes about their commits.
        let notifier = (config.poller.poll_notify && config.receiver.receiver_enabled)
            .then(|| Notifier::new(pool.clone()));
        Ok(Self {
            commits,
            poller,
            housekeeping,
            fetcher,
            notifier,
            spool: spool.map(|(_, loader, thread)| (loader, thread)),
        })
    }

    /// Starts every component in `services`, the one place background work starts; returns
    /// the spool's writer thread, to be joined after everything else has stopped.
    fn start(self, services: &mut Services) -> Option<std::thread::JoinHandle<()>> {
        let (loader, spool_thread) = self.spool.unzip();
        if let Some(loader) = loader {
            loader.start(services, self.commits.clone());
        }
        if let Some(poller) = self.poller {
            poller.start(services, self.commits.clone());
        }
        if let Some(housekeeping) = self.housekeeping {
            housekeeping.start(services);
        }
        if let Some(fetcher) = self.fetcher {
            fetcher.start(services);
        }
        if let Some(notifier) = self.notifier {
            notifier.start(services, self.commits);
        }
        spool_thread
    }
}
