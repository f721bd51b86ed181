//! The accept loop: HTTP/1.1 over TCP or rustls, a cap on open connections, header and
//! handshake timeouts, graceful drain.

use std::{
    io,
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

/// How connections are served.
#[derive(Clone)]
pub struct ListenerOptions {
    /// Terminate TLS here (Thryve only calls HTTPS on 443).
    pub tls: Option<TlsAcceptor>,
    /// A client that has not sent its headers (or finished its TLS handshake) by then is
    /// dropped: a slow client cannot hold a connection open for free.
    pub header_read_timeout: Duration,
    /// After shutdown starts, in-flight requests get this long to finish.
    pub shutdown_timeout: Duration,
    /// Most connections served at once; further ones wait in the kernel's accept backlog,
    /// costing neither memory nor a file descriptor here.
    pub max_connections: usize,
    /// Set to the number of connections being served.
    pub open_connections: Gauge,
}

/// How often, at most, reaching `max_connections` is logged.
const AT_CAPACITY_LOG_INTERVAL: Duration = Duration::from_secs(60);

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
/// `shutdown_timeout`) for open requests to be answered.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    options: ListenerOptions,
    shutdown: CancellationToken,
) -> io::Result<()> {
    let graceful = GracefulShutdown::new();
    let slots = Arc::new(Semaphore::new(options.max_connections.max(1)));
    let mut last_at_capacity_log: Option<Instant> = None;
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(options.header_read_timeout)
        .keep_alive(true);
    loop {
        // The slot is taken before `accept`, so at the cap the next client waits in the
        // backlog (its TCP handshake done by the kernel) until a connection ends.
        let permit = match slots.clone().try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) => {
                if last_at_capacity_log.is_none_or(|at| at.elapsed() >= AT_CAPACITY_LOG_INTERVAL) {
                    last_at_capacity_log = Some(Instant::now());
                    tracing::warn!(
                        max_connections = options.max_connections,
                        "connection limit reached (MAX_CONNECTIONS); new clients wait in the accept backlog"
                    );
                }
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    permit = slots.clone().acquire_owned() => permit.expect("the semaphore is never closed"),
                }
            }
        };
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors and the like: keep serving what is open.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let service = TowerToHyperService::new(router.clone());
        let watcher = graceful.watcher();
        let http = http.clone();
        let tls = options.tls.clone();
        let handshake_timeout = options.header_read_timeout;
        let slot = Slot::new(permit, &options.open_connections);
        tokio::spawn(async move {
            let _slot = slot;
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
        });
    }
    drop(listener);
    tokio::select! {
        _ = graceful.shutdown() => {}
        _ = tokio::time::sleep(options.shutdown_timeout) => {
            tracing::warn!(timeout_secs = options.shutdown_timeout.as_secs(), "shutdown timeout: closing the connections still open");
        }
    }
    Ok(())
}
