//! The accept loop: HTTP/1.1 over TCP or rustls, a cap on open connections, header and
//! handshake timeouts, graceful drain.

use std::{
    io,
    net::SocketAddr,
    path::Path,
    sync::Arc,
    time::{Duration, Instant},
};

use axum::Router;
use hyper_util::{
    rt::{TokioIo, TokioTimer},
    server::graceful::GracefulShutdown,
    service::TowerToHyperService,
};
use prometheus_client::metrics::gauge::Gauge;
use tokio::{
    net::TcpListener,
    sync::{OwnedSemaphorePermit, Semaphore},
};
use tokio_rustls::{
    rustls::{self, pki_types::pem::PemObject},
    TlsAcceptor,
};
use tokio_util::sync::CancellationToken;

use crate::{
    config::{ConfigError, ListenerConfig},
    service::Backoff,
};

/// A bound listening socket and how its connections are served.
pub struct Listener {
    socket: TcpListener,
    /// Terminate TLS here (Thryve only calls HTTPS on 443).
    tls: Option<TlsAcceptor>,
    /// A client that has not sent its headers (or finished its TLS handshake) by then is
    /// dropped: a slow client cannot hold a connection open for free.
    header_read_timeout: Duration,
    /// After shutdown starts, in-flight requests get this long to finish.
    shutdown_timeout: Duration,
    /// Most connections served at once; further ones wait in the kernel's accept backlog,
    /// costing neither memory nor a file descriptor here.
    max_connections: usize,
    /// Set to the number of connections being served.
    open_connections: Gauge,
}

/// Why the listener could not be set up; each message names the setting.
#[derive(Debug, thiserror::Error)]
pub enum ListenError {
    #[error("cannot listen on {addr} (BIND_ADDR): {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("{0}")]
    Tls(String),
    #[error(transparent)]
    Config(#[from] ConfigError),
}

impl Listener {
    /// Loads the TLS files, fits `MAX_CONNECTIONS` under the open-file limit beside
    /// `pool_connections`, and binds `BIND_ADDR`.
    pub async fn bind(
        config: &ListenerConfig,
        pool_connections: u32,
        open_connections: Gauge,
    ) -> Result<Self, ListenError> {
        let tls = match (&config.tls_cert_path, &config.tls_key_path) {
            (Some(cert), Some(key)) => Some(tls_acceptor(cert, key).map_err(ListenError::Tls)?),
            _ => None,
        };
        let max_connections = fit_connections(config.max_connections, pool_connections)
            .map_err(|problem| ConfigError::new("MAX_CONNECTIONS", problem))?;
        let socket = TcpListener::bind(config.bind_addr)
            .await
            .map_err(|source| ListenError::Bind {
                addr: config.bind_addr,
                source,
            })?;
        Ok(Self {
            socket,
            tls,
            header_read_timeout: config.header_read_timeout(),
            shutdown_timeout: config.shutdown_timeout(),
            max_connections,
            open_connections,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.socket
            .local_addr()
            .expect("a bound listener has an address")
    }

    pub fn tls(&self) -> bool {
        self.tls.is_some()
    }

    /// `MAX_CONNECTIONS`, or fewer if the open-file limit leaves less room.
    pub fn max_connections(&self) -> usize {
        self.max_connections
    }

    pub fn shutdown_timeout(&self) -> Duration {
        self.shutdown_timeout
    }
}

/// Largest read buffer per connection: bodies stream through it in chunks of this size.
const READ_BUFFER_MAX: usize = 64 * 1024;

/// Largest request head (request line and header lines): ample for a webhook's. A larger one
/// gets 431 and the connection is closed. `max_buf_size` alone is no such limit: a read may
/// overfill the buffer, and a head that completes in it was taken (100 KB were).
pub const REQUEST_HEAD_MAX: usize = 64 * 1024;

/// How often, at most, reaching `max_connections` (or failing to accept) is logged.
const AT_CAPACITY_LOG_INTERVAL: Duration = Duration::from_secs(60);
/// Pauses after accept fails for want of resources (EMFILE and the like): short at first so
/// a brief peak costs little, doubling so a lasting one costs no CPU.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(10);
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);

/// Files the process needs besides its client connections: stdio, the listener, the
/// runtime's epoll and wake-up descriptors, the spool's lock, segment and directory handles,
/// a LISTEN connection, TLS files at start, and headroom. The pool's connections come on top.
pub const RESERVED_FILES: u64 = 64;

/// Raises the soft limit on open files to the hard limit, and returns how many client
/// connections fit under it with `pool_connections` and [`RESERVED_FILES`] kept free: at
/// most `wanted`. A lower figure is logged, so `MAX_CONNECTIONS` never promises more sockets
/// than `accept` can have (past it, accept fails with EMFILE while clients wait).
pub fn fit_connections(wanted: usize, pool_connections: u32) -> Result<usize, String> {
    let reserve = RESERVED_FILES + u64::from(pool_connections);
    let (soft, hard) = rlimit::Resource::NOFILE
        .get()
        .map_err(|e| format!("cannot read the open-file limit: {e}"))?;
    let soft = match rlimit::increase_nofile_limit(hard) {
        Ok(raised) => raised,
        Err(error) => {
            tracing::warn!(%error, soft, hard, "cannot raise the open-file limit; keeping the soft one");
            soft
        }
    };
    let room = soft.saturating_sub(reserve);
    if room == 0 {
        return Err(format!(
            "the open-file limit ({soft}) leaves no room for client connections beside the pool ({pool_connections}) and {RESERVED_FILES} reserved; raise it (ulimit -n)"
        ));
    }
    let fits = usize::try_from(room).unwrap_or(usize::MAX).min(wanted);
    if fits < wanted {
        tracing::warn!(
            max_connections = wanted,
            serving = fits,
            open_file_limit = soft,
            "MAX_CONNECTIONS is more than the open-file limit allows with room for the pool and spool; serving fewer"
        );
    }
    Ok(fits)
}

/// One served connection's claim on the cap, given back (and counted down) when it ends.
struct Slot {
    _permit: OwnedSemaphorePermit,
    open: Gauge,
}

impl Slot {
    fn new(permit: OwnedSemaphorePermit, open: &Gauge) -> Self {
        open.inc();
        Self {
            _permit: permit,
            open: open.clone(),
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.open.dec();
    }
}

/// Loads a PEM certificate chain and private key into an acceptor offering HTTP/1.1.
pub fn tls_acceptor(cert_path: &Path, key_path: &Path) -> Result<TlsAcceptor, String> {
    let certs = rustls::pki_types::CertificateDer::pem_file_iter(cert_path)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| {
            format!(
                "TLS_CERT_PATH: cannot read certificates from {}: {e}",
                cert_path.display()
            )
        })?;
    if certs.is_empty() {
        return Err(format!(
            "TLS_CERT_PATH: no certificate in {}",
            cert_path.display()
        ));
    }
    let key = rustls::pki_types::PrivateKeyDer::from_pem_file(key_path).map_err(|e| {
        format!(
            "TLS_KEY_PATH: cannot read a private key from {}: {e}",
            key_path.display()
        )
    })?;
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .and_then(|b| b.with_no_client_auth().with_single_cert(certs, key))
    .map_err(|e| format!("TLS_CERT_PATH/TLS_KEY_PATH: {e}"))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// Serves `router` on `listener` until `shutdown`, then stops accepting and waits (at most
/// `SHUTDOWN_TIMEOUT_SECS`) for open requests to be answered.
pub async fn serve(
    listener: Listener,
    router: Router,
    shutdown: CancellationToken,
) -> io::Result<()> {
    let graceful = GracefulShutdown::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        // Each connection's read buffer grows up to this; hyper's default (about 400 KiB)
        // times hundreds of connections streaming bodies was most of the RSS of a burst.
        .max_buf_size(READ_BUFFER_MAX)
        .max_header_size(REQUEST_HEAD_MAX)
        .header_read_timeout(listener.header_read_timeout)
        .keep_alive(true);
    let mut accepting = Accepting::new(&listener);
    while let Some((stream, peer, slot)) = accepting.next(&listener, &shutdown).await {
        let _ = stream.set_nodelay(true);
        let service = TowerToHyperService::new(router.clone());
        let connection = Connection {
            peer,
            tls: listener.tls.clone(),
            handshake_timeout: listener.header_read_timeout,
            slot,
        };
        tokio::spawn(connection.serve(stream, http.clone(), service, graceful.watcher()));
    }
    let Listener {
        socket,
        shutdown_timeout,
        ..
    } = listener;
    drop(socket);
    tokio::select! {
        _ = graceful.shutdown() => {}
        _ = tokio::time::sleep(shutdown_timeout) => {
            tracing::warn!(timeout_secs = shutdown_timeout.as_secs(), "shutdown timeout: closing the connections still open");
        }
    }
    Ok(())
}

/// The accept side: a slot under the cap first, then a connection, backing off while accept
/// fails; what it logs, at most once a minute each.
struct Accepting {
    slots: Arc<Semaphore>,
    max_connections: usize,
    open_connections: Gauge,
    backoff: Backoff,
    failures: u64,
    last_at_capacity_log: Option<Instant>,
    last_failure_log: Option<Instant>,
}

impl Accepting {
    fn new(listener: &Listener) -> Self {
        Self {
            slots: Arc::new(Semaphore::new(listener.max_connections.max(1))),
            max_connections: listener.max_connections,
            open_connections: listener.open_connections.clone(),
            backoff: Backoff::new(ACCEPT_BACKOFF, ACCEPT_BACKOFF_MAX),
            failures: 0,
            last_at_capacity_log: None,
            last_failure_log: None,
        }
    }

    /// The next client with its slot, or `None` once `shutdown` begins.
    async fn next(
        &mut self,
        listener: &Listener,
        shutdown: &CancellationToken,
    ) -> Option<(tokio::net::TcpStream, SocketAddr, Slot)> {
        loop {
            // The slot is taken before `accept`, so at the cap the next client waits in the
            // backlog (its TCP handshake done by the kernel) until a connection ends.
            let permit = self.slot(shutdown).await?;
            let accepted = tokio::select! {
                _ = shutdown.cancelled() => return None,
                accepted = listener.socket.accept() => accepted,
            };
            match accepted {
                Ok((stream, peer)) => {
                    self.backoff.reset();
                    return Some((stream, peer, Slot::new(permit, &self.open_connections)));
                }
                Err(error) => {
                    drop(permit);
                    self.failed(error, shutdown).await?;
                }
            }
        }
    }

    async fn slot(&mut self, shutdown: &CancellationToken) -> Option<OwnedSemaphorePermit> {
        if let Ok(permit) = self.slots.clone().try_acquire_owned() {
            return Some(permit);
        }
        if self
            .last_at_capacity_log
            .is_none_or(|at| at.elapsed() >= AT_CAPACITY_LOG_INTERVAL)
        {
            self.last_at_capacity_log = Some(Instant::now());
            tracing::warn!(
                max_connections = self.max_connections,
                "connection limit reached (MAX_CONNECTIONS); new clients wait in the accept backlog"
            );
        }
        tokio::select! {
            _ = shutdown.cancelled() => None,
            permit = self.slots.clone().acquire_owned() => Some(permit.expect("the semaphore is never closed")),
        }
    }

    /// Out of file descriptors and the like: keep serving what is open, and wait for some to
    /// close rather than spin (the client stays in the backlog meanwhile). `None` on shutdown.
    async fn failed(&mut self, error: io::Error, shutdown: &CancellationToken) -> Option<()> {
        self.failures += 1;
        let pause = self.backoff.failed();
        if self
            .last_failure_log
            .is_none_or(|at| at.elapsed() >= AT_CAPACITY_LOG_INTERVAL)
        {
            self.last_failure_log = Some(Instant::now());
            tracing::warn!(%error, failures = self.failures, backoff_ms = pause.as_millis() as u64, "accept failed; backing off (logged once a minute at most)");
        }
        tokio::select! {
            _ = shutdown.cancelled() => None,
            _ = tokio::time::sleep(pause) => Some(()),
        }
    }
}

/// One accepted client, served until it ends or the graceful shutdown's deadline.
struct Connection {
    peer: SocketAddr,
    tls: Option<TlsAcceptor>,
    handshake_timeout: Duration,
    slot: Slot,
}

impl Connection {
    async fn serve(
        self,
        stream: tokio::net::TcpStream,
        http: hyper::server::conn::http1::Builder,
        service: TowerToHyperService<Router>,
        watcher: hyper_util::server::graceful::Watcher,
    ) {
        let Self {
            peer,
            tls,
            handshake_timeout,
            slot: _slot,
        } = self;
        let served = match tls {
            None => {
                watcher
                    .watch(http.serve_connection(TokioIo::new(stream), service))
                    .await
            }
            Some(acceptor) => {
                match tokio::time::timeout(handshake_timeout, acceptor.accept(stream)).await {
                    Ok(Ok(tls_stream)) => {
                        watcher
                            .watch(http.serve_connection(TokioIo::new(tls_stream), service))
                            .await
                    }
                    Ok(Err(error)) => {
                        tracing::debug!(%peer, %error, "TLS handshake failed");
                        return;
                    }
                    Err(_) => {
                        tracing::debug!(%peer, "TLS handshake timed out");
                        return;
                    }
                }
            }
        };
        if let Err(error) = served {
            tracing::debug!(%peer, %error, "connection ended with an error");
        }
    }
}
