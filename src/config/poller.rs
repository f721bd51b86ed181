//! The poller's settings: how many inbox rows per transaction, how many transactions at once,
//! and what wakes it.

use std::time::Duration;

use clap::{builder::BoolishValueParser, Args};

use super::{require, ConfigError};

/// Turning inbox rows into dirty ranges, connection states and values.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Poller")]
pub struct PollerConfig {
    /// Run the poller that turns inbox rows into dirty ranges in this process.
    #[arg(long, env = "POLLER_ENABLED", value_parser = BoolishValueParser::new(), default_value = "true")]
    pub poller_enabled: bool,

    /// Most inbox rows the poller handles per transaction.
    #[arg(long, env = "POLL_BATCH_SIZE", default_value_t = 100)]
    pub poll_batch_size: i64,

    /// Most values (data pushes' values, summed) the poller reads into one batch: a batch
    /// stops growing there, so its memory follows this budget, not the payloads. A delivery
    /// with more values than the budget is taken alone.
    #[arg(long, env = "POLL_BATCH_VALUES", default_value_t = 20_000)]
    pub poll_batch_values: i64,

    /// A delivery carrying more values than this is quarantined without being read, its error
    /// naming this limit (raise it and `inbox replay` the row to apply it). Far above Thryve's
    /// 1,000-value pages; it bounds what one delivery can make a poller hold.
    #[arg(long, env = "MAX_VALUES_PER_DELIVERY", default_value_t = 50_000)]
    pub max_values_per_delivery: i64,

    /// Batches the poller runs at once in this process (each a transaction of its own).
    #[arg(long, env = "POLL_CONCURRENCY", default_value_t = 2)]
    pub poll_concurrency: usize,

    /// Longest pause between polls when nothing wakes the poller, in ms.
    #[arg(long, env = "POLL_INTERVAL_MS", default_value_t = 1000)]
    pub poll_interval_ms: u64,

    /// Receivers NOTIFY and pollers LISTEN on channel thryve_inbox, so pollers in other
    /// processes wake at once (one NOTIFY per burst of commits, off the request path).
    #[arg(long, env = "POLL_NOTIFY", value_parser = BoolishValueParser::new(), default_value = "true")]
    pub poll_notify: bool,
}

impl PollerConfig {
    pub fn interval(&self) -> Duration {
        Duration::from_millis(self.poll_interval_ms)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        require(
            self.poll_batch_size >= 1,
            "POLL_BATCH_SIZE",
            "must be at least 1 (default 100)",
        )?;
        require(
            self.poll_batch_values >= 1,
            "POLL_BATCH_VALUES",
            "must be at least 1 (default 20000)",
        )?;
        require(
            self.max_values_per_delivery >= 1,
            "MAX_VALUES_PER_DELIVERY",
            "must be at least 1 (default 50000)",
        )?;
        require(
            self.poll_concurrency >= 1,
            "POLL_CONCURRENCY",
            "must be at least 1 (default 2)",
        )
    }
}
