//! The accept loop: HTTP/1.1 over TCP or rustls, a cap on open connections, header and
//! handshake timeouts, graceful drain.
//!
//! A flood of idle or slow connections must not hold a real delivery past Thryve's deadline.
//! So clients are always accepted while files last: at the cap, the connection that has
//! waited longest without sending a complete request head is shed to make room (a real
//! client sends its head at once), and while connections run short (from three quarters of
//! the cap open until fewer than half are) the header timeout is `HEADER_READ_TIMEOUT_CROWDED_MS` instead of
//! `HEADER_READ_TIMEOUT_MS`. A connection with a request under way is never shed, nor one
//! whose client sent bytes the bridge has not read yet: on busy cores that wait is the
//! bridge's, not the client's.

use std::{
    collections::HashMap,
    convert::Infallible,
    future::Future,
    io,
    net::SocketAddr,
    path::Path,
    pin::Pin,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use axum::{
    body::{Body, Bytes, HttpBody},
    Router,
};
use hyper::body::Incoming;
use hyper_util::{
    rt::{TokioIo, TokioTimer},
    server::graceful::GracefulShutdown,
    service::TowerToHyperService,
};
use prometheus_client::metrics::{counter::Counter, gauge::Gauge};
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
    /// The same while connections run short (at most `header_read_timeout`).
    crowded_header_read_timeout: Duration,
    /// After shutdown starts, in-flight requests get this long to finish.
    shutdown_timeout: Duration,
    /// Most connections served at once: at the cap, an idle one is shed for a new client;
    /// with none idle, new clients wait in the kernel's accept backlog.
    max_connections: usize,
    /// Set to the number of connections being served.
    open_connections: Gauge,
    /// Counts the connections shed (closed without a complete request head to make room).
    shed_connections: Counter,
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
        shed_connections: Counter,
    ) -> Result<Self, ListenError> {
        let tls = match (&config.tls_cert_path, &config.tls_key_path) {
            (Some(cert), Some(key)) => Some(tls_acceptor(cert, key).map_err(ListenError::Tls)?),
            _ => None,
        };
        let max_connections = fit_connections(config.max_connections, pool_connections)
            .map_err(|problem| ConfigError::new("MAX_CONNECTIONS", problem))?;
        let socket = listen(config.bind_addr).map_err(|source| ListenError::Bind {
            addr: config.bind_addr,
            source,
        })?;
        Ok(Self {
            socket,
            tls,
            header_read_timeout: config.header_read_timeout(),
            crowded_header_read_timeout: config.crowded_header_read_timeout(),
            shutdown_timeout: config.shutdown_timeout(),
            max_connections,
            open_connections,
            shed_connections,
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

/// Connections the kernel completes and holds until accepted (capped by
/// `net.core.somaxconn`). A burst of connects larger than it has SYNs dropped and retried a
/// second later: tokio's default of 1024 made a flood of 1,100 cost real deliveries 1 s.
const LISTEN_BACKLOG: u32 = 8192;

/// Binds `addr` with [`LISTEN_BACKLOG`] (and `SO_REUSEADDR`, as `TcpListener::bind` sets).
fn listen(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = match addr {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// Largest read buffer per connection: bodies stream through it in chunks of this size.
const READ_BUFFER_MAX: usize = 64 * 1024;

/// Largest request head (request line and header lines): ample for a webhook's. A larger one
/// gets 431 and the connection is closed. `max_buf_size` alone is no such limit: a read may
/// overfill the buffer, and a head that completes in it was taken (100 KB were).
pub const REQUEST_HEAD_MAX: usize = 64 * 1024;

/// At the cap, a connection is shed for a new client only once it has waited this long for
/// its request head: a real client (even over TLS from far away) has sent it by then, and a
/// flood cannot make the bridge accept and shed more than the cap per this interval.
pub const SHED_AFTER: Duration = Duration::from_millis(250);

/// Connections run short (the crowded header timeout holds) from three quarters of the cap
/// open, until fewer than half are: closing one connection does not end it.
fn crowded_from(max_connections: usize) -> usize {
    (max_connections * 3 / 4).max(1)
}

fn uncrowded_below(max_connections: usize) -> usize {
    (max_connections / 2).max(1)
}

/// How often idle connections are checked against the crowded header timeout.
const REAP_INTERVAL: Duration = Duration::from_millis(100);

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

/// One served connection's claim on the cap and its entry among the open connections, given
/// back (and counted down) when it ends.
struct Slot {
    _permit: OwnedSemaphorePermit,
    open: Gauge,
    id: u64,
    state: Arc<ConnectionState>,
    connections: Arc<Connections>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.connections.remove(self.id);
        self.open.dec();
    }
}

/// A connection's state: a request under way, shed, or idle since a moment.
const BUSY: u64 = 0;
const SHED: u64 = u64::MAX;

/// What the accept loop and the connection's task share about one connection.
struct ConnectionState {
    /// [`BUSY`] while a request is served (from its complete head to the end of its answer),
    /// [`SHED`] once chosen to be closed, else 1 + the milliseconds since the listener's
    /// start at which it went idle (accepted, or its last answer sent).
    state: AtomicU64,
    /// Cancelled when the connection is shed: its task then drops it.
    shed: CancellationToken,
    /// The client socket, to ask the kernel whether the client sent bytes not read yet.
    #[cfg(unix)]
    fd: std::os::fd::RawFd,
}

impl ConnectionState {
    /// A request head is complete: no longer sheddable. False if it was shed just before.
    fn busy(&self) -> bool {
        let mut now = self.state.load(Ordering::Acquire);
        while now != SHED {
            match self
                .state
                .compare_exchange(now, BUSY, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return true,
                Err(actual) => now = actual,
            }
        }
        false
    }

    fn idle(&self, since: u64) {
        let _ = self
            .state
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |now| {
                (now != SHED).then_some(since)
            });
    }

    /// Whether the client has sent bytes this process has not read yet: then the wait for
    /// its request head is the server's (a burst of real deliveries on busy cores), not the
    /// client's, and it is not shed. An idle flood sends nothing; a slow client's partial head
    /// has been read. The socket may have closed just now (its entry leaves the map after):
    /// then the answer is false or, were the number reused, at worst one shed passed over.
    #[cfg(unix)]
    fn has_unread(&self) -> bool {
        let mut unread: libc::c_int = 0;
        // SAFETY: FIONREAD writes one c_int to the pointer given; on a closed descriptor
        // the call fails with EBADF and writes nothing.
        let asked = unsafe { libc::ioctl(self.fd, libc::FIONREAD, &mut unread) };
        asked == 0 && unread > 0
    }

    #[cfg(not(unix))]
    fn has_unread(&self) -> bool {
        false
    }

    /// Sheds the connection if it is still idle since `since`.
    fn shed(&self, since: u64) -> bool {
        let shed = self
            .state
            .compare_exchange(since, SHED, Ordering::AcqRel, Ordering::Acquire)
            .is_ok();
        if shed {
            self.shed.cancel();
        }
        shed
    }
}

/// The connections being served, so that idle ones can be found and shed.
struct Connections {
    started: Instant,
    next_id: AtomicU64,
    open: Mutex<HashMap<u64, Arc<ConnectionState>>>,
    shed: Counter,
}

/// What shedding for a new client found.
enum Shed {
    /// A connection was shed: its slot comes back as soon as its task drops it.
    Done,
    /// The connection idle longest becomes sheddable after this long.
    NotYet(Duration),
    /// Every connection has a request under way.
    NoneIdle,
}

impl Connections {
    fn new(shed: Counter) -> Self {
        Self {
            started: Instant::now(),
            next_id: AtomicU64::new(0),
            open: Mutex::new(HashMap::new()),
            shed,
        }
    }

    /// Now, in the idle-since encoding of [`ConnectionState::state`] (never BUSY nor SHED).
    fn now(&self) -> u64 {
        1 + u64::try_from(self.started.elapsed().as_millis()).unwrap_or(SHED - 2)
    }

    fn add(&self, stream: &tokio::net::TcpStream) -> (u64, Arc<ConnectionState>) {
        #[cfg(not(unix))]
        let _ = stream;
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let state = Arc::new(ConnectionState {
            state: AtomicU64::new(self.now()),
            shed: CancellationToken::new(),
            #[cfg(unix)]
            fd: std::os::fd::AsRawFd::as_raw_fd(stream),
        });
        self.lock().insert(id, state.clone());
        (id, state)
    }

    fn remove(&self, id: u64) {
        self.lock().remove(&id);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Arc<ConnectionState>>> {
        // Nothing panics while holding it; a poisoned map is still a valid map.
        self.open.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sheds the connection idle longest, of those that have waited at least `after` with
    /// nothing unread ([`ConnectionState::has_unread`]).
    fn shed_oldest_idle(&self, after: Duration) -> Shed {
        let after = u64::try_from(after.as_millis()).unwrap_or(u64::MAX);
        let now = self.now();
        let mut idle: Vec<(u64, Arc<ConnectionState>)> = self
            .lock()
            .values()
            .filter_map(|c| {
                let since = c.state.load(Ordering::Acquire);
                (since != BUSY && since != SHED).then(|| (since, c.clone()))
            })
            .collect();
        idle.sort_unstable_by_key(|(since, _)| *since);
        for (since, connection) in idle {
            let waited = now.saturating_sub(since);
            if waited < after {
                return Shed::NotYet(Duration::from_millis(after - waited));
            }
            // Unless it started a request (or went idle again) meanwhile.
            if !connection.has_unread() && connection.shed(since) {
                self.shed.inc();
                return Shed::Done;
            }
        }
        Shed::NoneIdle
    }

    /// Sheds every connection idle for `timeout` or longer; returns how many.
    fn shed_idle_for(&self, timeout: Duration) -> usize {
        let timeout = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX);
        let now = self.now();
        let shed = self
            .lock()
            .values()
            .filter(|c| {
                let since = c.state.load(Ordering::Acquire);
                since != BUSY
                    && since != SHED
                    && now.saturating_sub(since) >= timeout
                    && !c.has_unread()
                    && c.shed(since)
            })
            .count();
        self.shed.inc_by(shed as u64);
        shed
    }
}

/// The router as hyper calls it, marking the connection busy from a complete request head
/// until both the request's body and the answer's are done with (hyper drops the answer's
/// once sent; a body refused early may still be read to its end after the answer).
#[derive(Clone)]
struct Tracked {
    inner: TowerToHyperService<Router>,
    state: Arc<ConnectionState>,
    connections: Arc<Connections>,
}

/// Marks the connection idle again when the last clone is dropped.
struct Busy {
    state: Arc<ConnectionState>,
    connections: Arc<Connections>,
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.state.idle(self.connections.now());
    }
}

/// `body`, holding `busy` until it is dropped; its size hint kept (hyper writes the answer's
/// `content-length` from it).
fn holding<B>(body: B, busy: Arc<Busy>) -> Body
where
    B: HttpBody<Data = Bytes> + Unpin + Send + 'static,
    B::Error: Into<axum::BoxError>,
{
    Body::new(Holding { body, _busy: busy })
}

struct Holding<B> {
    body: B,
    _busy: Arc<Busy>,
}

impl<B: HttpBody + Unpin> HttpBody for Holding<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.body.size_hint()
    }
}

type Answer = Pin<Box<dyn Future<Output = Result<axum::response::Response, Infallible>> + Send>>;

impl hyper::service::Service<hyper::Request<Incoming>> for Tracked {
    type Response = axum::response::Response;
    type Error = Infallible;
    type Future = Answer;

    fn call(&self, request: hyper::Request<Incoming>) -> Self::Future {
        // Shed just before its head was complete: the connection is being closed anyway.
        self.state.busy();
        let busy = Arc::new(Busy {
            state: self.state.clone(),
            connections: self.connections.clone(),
        });
        let request = request.map(|body| holding(body, busy.clone()));
        let answer = self.inner.call(request);
        Box::pin(async move {
            let response = answer.await?;
            Ok(response.map(|body| holding(body, busy)))
        })
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
    let connections = Arc::new(Connections::new(listener.shed_connections.clone()));
    let mut accepting = Accepting::new(&listener, connections.clone());
    let reaper = tokio::spawn(reap_when_crowded(
        connections.clone(),
        accepting.slots.clone(),
        listener.max_connections,
        listener.crowded_header_read_timeout,
        shutdown.clone(),
    ));
    while let Some((stream, peer, slot)) = accepting.next(&listener, &shutdown).await {
        let _ = stream.set_nodelay(true);
        let service = Tracked {
            inner: TowerToHyperService::new(router.clone()),
            state: slot.state.clone(),
            connections: connections.clone(),
        };
        let connection = Connection {
            peer,
            tls: listener.tls.clone(),
            handshake_timeout: listener.header_read_timeout,
            slot,
        };
        tokio::spawn(connection.serve(stream, http.clone(), service, graceful.watcher()));
    }
    reaper.abort();
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

/// While connections run short, closes those that have waited `timeout` for a request head.
async fn reap_when_crowded(
    connections: Arc<Connections>,
    slots: Arc<Semaphore>,
    max_connections: usize,
    timeout: Duration,
    shutdown: CancellationToken,
) {
    let mut crowded = false;
    let mut tick = tokio::time::interval(REAP_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_log: Option<Instant> = None;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let open = max_connections.saturating_sub(slots.available_permits());
        crowded = match crowded {
            false => open >= crowded_from(max_connections),
            true => open >= uncrowded_below(max_connections),
        };
        if !crowded {
            continue;
        }
        let shed = connections.shed_idle_for(timeout);
        if shed > 0 && last_log.is_none_or(|at| at.elapsed() >= AT_CAPACITY_LOG_INTERVAL) {
            last_log = Some(Instant::now());
            tracing::warn!(
                open,
                max_connections,
                shed,
                header_read_timeout_ms = timeout.as_millis() as u64,
                "connections run short; closing those without a request head after HEADER_READ_TIMEOUT_CROWDED_MS (logged once a minute at most)"
            );
        }
    }
}

/// The accept side: a client, then a slot under the cap for it (shedding an idle connection
/// if need be), backing off while accept fails; what it logs, at most once a minute each.
struct Accepting {
    slots: Arc<Semaphore>,
    connections: Arc<Connections>,
    max_connections: usize,
    open_connections: Gauge,
    backoff: Backoff,
    failures: u64,
    last_at_capacity_log: Option<Instant>,
    last_failure_log: Option<Instant>,
}

impl Accepting {
    fn new(listener: &Listener, connections: Arc<Connections>) -> Self {
        Self {
            slots: Arc::new(Semaphore::new(listener.max_connections.max(1))),
            connections,
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
            // Accepted first, then given a slot: at the cap the new client is what an idle
            // connection is shed for. The files reserved beside the cap cover this one.
            let accepted = tokio::select! {
                _ = shutdown.cancelled() => return None,
                accepted = listener.socket.accept() => accepted,
            };
            match accepted {
                Ok((stream, peer)) => {
                    self.backoff.reset();
                    let permit = self.slot(shutdown).await?;
                    self.open_connections.inc();
                    let (id, state) = self.connections.add(&stream);
                    let slot = Slot {
                        _permit: permit,
                        open: self.open_connections.clone(),
                        id,
                        state,
                        connections: self.connections.clone(),
                    };
                    return Some((stream, peer, slot));
                }
                Err(error) => self.failed(error, shutdown).await?,
            }
        }
    }

    /// A slot under the cap: a free one, else one given back by the connection that waited
    /// longest for a request head (once it has waited [`SHED_AFTER`]), else the first to end.
    async fn slot(&mut self, shutdown: &CancellationToken) -> Option<OwnedSemaphorePermit> {
        loop {
            if let Ok(permit) = self.slots.clone().try_acquire_owned() {
                return Some(permit);
            }
            let wait = match self.connections.shed_oldest_idle(SHED_AFTER) {
                // Its task drops it at once; look again soon in case it does not.
                Shed::Done => SHED_AFTER,
                Shed::NotYet(left) => left,
                Shed::NoneIdle => SHED_AFTER,
            };
            if self
                .last_at_capacity_log
                .is_none_or(|at| at.elapsed() >= AT_CAPACITY_LOG_INTERVAL)
            {
                self.last_at_capacity_log = Some(Instant::now());
                tracing::warn!(
                    max_connections = self.max_connections,
                    "connection limit reached (MAX_CONNECTIONS); shedding connections without a request head"
                );
            }
            tokio::select! {
                _ = shutdown.cancelled() => return None,
                permit = self.slots.clone().acquire_owned() => return Some(permit.expect("the semaphore is never closed")),
                _ = tokio::time::sleep(wait) => {}
            }
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
        // Out of files: an idle connection's file is worth less than a new client's.
        let _ = self.connections.shed_oldest_idle(SHED_AFTER);
        tokio::select! {
            _ = shutdown.cancelled() => None,
            _ = tokio::time::sleep(pause) => Some(()),
        }
    }
}

/// One accepted client, served until it ends, is shed, or the graceful shutdown's deadline.
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
        service: Tracked,
        watcher: hyper_util::server::graceful::Watcher,
    ) {
        let Self {
            peer,
            tls,
            handshake_timeout,
            slot,
        } = self;
        let shed = slot.state.shed.clone();
        let serving = async move {
            match tls {
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
                            Ok(())
                        }
                        Err(_) => {
                            tracing::debug!(%peer, "TLS handshake timed out");
                            Ok(())
                        }
                    }
                }
            }
        };
        let served = tokio::select! {
            served = serving => served,
            // Idle (no request under way): dropping the connection closes it.
            _ = shed.cancelled() => {
                tracing::debug!(%peer, "connection shed before a complete request head");
                Ok(())
            }
        };
        drop(slot);
        if let Err(error) = served {
            tracing::debug!(%peer, %error, "connection ended with an error");
        }
    }
}

#[cfg(test)]
mod tests {
    use tokio::{io::AsyncWriteExt, net::TcpStream};

    use super::*;

    /// A connection of a real TCP pair, accepted and registered, never read from.
    async fn accepted(
        connections: &Connections,
        socket: &TcpListener,
    ) -> (TcpStream, TcpStream, Arc<ConnectionState>) {
        let client = TcpStream::connect(socket.local_addr().unwrap())
            .await
            .unwrap();
        let (server, _) = socket.accept().await.unwrap();
        let (_, state) = connections.add(&server);
        (client, server, state)
    }

    #[tokio::test]
    async fn a_waiting_connection_is_shed_unless_its_client_sent_bytes_not_read_yet() {
        let socket = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let connections = Connections::new(Counter::default());
        let (_silent, _silent_server, silent) = accepted(&connections, &socket).await;
        let (mut sent, _sent_server, sending) = accepted(&connections, &socket).await;
        sent.write_all(b"POST /webhooks/thryve HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        // Over loopback a write returns once the bytes are in the peer's receive queue.
        assert!(sending.has_unread(), "the sent head waits in the kernel");
        assert!(!silent.has_unread());

        // Both have waited long enough (a timeout of 0): only the silent one is the client's wait.
        assert_eq!(connections.shed_idle_for(Duration::ZERO), 1);
        assert!(silent.shed.is_cancelled());
        assert!(!sending.shed.is_cancelled());
        assert!(matches!(
            connections.shed_oldest_idle(Duration::ZERO),
            Shed::NoneIdle
        ));
        assert!(!sending.shed.is_cancelled());
    }
}
