//! The outage spool's settings: where deliveries go while the database cannot take them.

use std::{path::PathBuf, time::Duration};

use clap::Args;

use super::{parse_optional_path, require, ConfigError, ReceiverConfig};

/// `SPOOL_DIR` switches the spool on.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Spool")]
pub struct SpoolConfig {
    /// Directory of the outage spool: a delivery not committed SPOOL_MARGIN_MS before the ack
    /// deadline is fsync'd here, answered 200 `spooled`, and loaded into the inbox later.
    /// Must be durable local disk, one directory per process. Unset: no spool (503 instead).
    // Empty (as in .env.example) means unset; see PAYLOAD_RETENTION for the full path.
    #[arg(long, env = "SPOOL_DIR", default_value = "", value_parser = parse_optional_path)]
    pub spool_dir: std::option::Option<PathBuf>,

    /// With SPOOL_DIR: how long before the ack deadline the receiver stops waiting for the
    /// commit and spools instead, in ms (the time the spool's fsync may take).
    #[arg(long, env = "SPOOL_MARGIN_MS", default_value_t = 250)]
    pub spool_margin_ms: u64,
}

impl SpoolConfig {
    pub fn margin(&self) -> Duration {
        Duration::from_millis(self.spool_margin_ms)
    }

    /// The margin must leave the receiver time to wait for the database.
    pub fn validate(&self, receiver: &ReceiverConfig) -> Result<(), ConfigError> {
        require(
            self.spool_margin_ms < receiver.ack_deadline_ms,
            "SPOOL_MARGIN_MS",
            format!(
                "must be less than ACK_DEADLINE_MS ({}), or nothing would wait for the database (default 250)",
                receiver.ack_deadline_ms
            ),
        )
    }
}
