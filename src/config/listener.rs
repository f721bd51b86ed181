//! The listener's settings: where the process serves HTTP (the webhook route, health and
//! metrics), over TLS or not, and how it treats slow or many clients.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use clap::Args;

use super::{parse_optional_path, require, ConfigError};

/// The HTTP listener every `serve` process runs, whichever components it runs.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Listener")]
pub struct ListenerConfig {
    /// Address the webhook receiver listens on.
    #[arg(long, env = "BIND_ADDR", default_value = "0.0.0.0:8080")]
    pub bind_addr: SocketAddr,

    // Empty (as in .env.example) means unset; see PAYLOAD_RETENTION for the full path.
    /// PEM certificate chain: with TLS_KEY_PATH, serve HTTPS directly.
    #[arg(long, env = "TLS_CERT_PATH", default_value = "", hide_default_value = true, value_parser = parse_optional_path)]
    pub tls_cert_path: std::option::Option<PathBuf>,

    /// PEM private key for TLS_CERT_PATH.
    #[arg(long, env = "TLS_KEY_PATH", default_value = "", hide_default_value = true, value_parser = parse_optional_path)]
    pub tls_key_path: std::option::Option<PathBuf>,

    /// A client must send its request headers (and finish TLS) within this many ms.
    #[arg(long, env = "HEADER_READ_TIMEOUT_MS", default_value_t = 10_000)]
    pub header_read_timeout_ms: u64,

    /// From three quarters of MAX_CONNECTIONS open until fewer than half are, a client must
    /// send its request headers (and finish TLS) within this many ms (at most
    /// HEADER_READ_TIMEOUT_MS).
    #[arg(long, env = "HEADER_READ_TIMEOUT_CROWDED_MS", default_value_t = 1_000)]
    pub header_read_timeout_crowded_ms: u64,

    /// Most client connections served at once; at the cap the one waiting longest for its
    /// request headers is closed for a new client.
    #[arg(long, env = "MAX_CONNECTIONS", default_value_t = 1024)]
    pub max_connections: usize,

    /// On SIGTERM, in-flight requests get this many seconds to finish before the exit.
    #[arg(long, env = "SHUTDOWN_TIMEOUT_SECS", default_value_t = 20)]
    pub shutdown_timeout_secs: u64,
}

impl ListenerConfig {
    pub fn header_read_timeout(&self) -> Duration {
        Duration::from_millis(self.header_read_timeout_ms.max(1))
    }

    /// `HEADER_READ_TIMEOUT_CROWDED_MS`, never longer than the uncrowded one.
    pub fn crowded_header_read_timeout(&self) -> Duration {
        Duration::from_millis(self.header_read_timeout_crowded_ms.max(1))
            .min(self.header_read_timeout())
    }

    pub fn shutdown_timeout(&self) -> Duration {
        Duration::from_secs(self.shutdown_timeout_secs)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        require(
            self.max_connections >= 1,
            "MAX_CONNECTIONS",
            "must be at least 1 (default 1024)",
        )?;
        require(
            self.tls_cert_path.is_some() == self.tls_key_path.is_some(),
            "TLS_CERT_PATH",
            "TLS_CERT_PATH and TLS_KEY_PATH must be set together (or neither, behind a TLS proxy)",
        )
    }
}
