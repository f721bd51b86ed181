//! Housekeeping's settings: how often it runs and what retention it applies.

use std::time::Duration;

use clap::{builder::BoolishValueParser, Args};

use super::{parse_duration, parse_optional_duration, require, ConfigError};

/// Retention as a background service of `serve`.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Housekeeping")]
pub struct HousekeepingConfig {
    /// Run housekeeping (retention: deleting and blanking old rows) in this process.
    #[arg(long, env = "HOUSEKEEPING_ENABLED", value_parser = BoolishValueParser::new(), default_value = "true")]
    pub housekeeping_enabled: bool,

    /// Seconds between housekeeping passes.
    #[arg(long, env = "HOUSEKEEPING_INTERVAL_SECS", default_value_t = 60)]
    pub housekeeping_interval_secs: u64,

    #[command(flatten)]
    pub retention: RetentionConfig,
}

impl HousekeepingConfig {
    pub fn interval(&self) -> Duration {
        Duration::from_secs(self.housekeeping_interval_secs)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        self.retention.validate()?;
        require(
            self.housekeeping_interval_secs >= 1,
            "HOUSEKEEPING_INTERVAL_SECS",
            "must be at least 1 (default 60)",
        )
    }
}

/// How long housekeeping keeps finished rows, and how many it touches per statement; shared
/// by `serve` and `housekeeping run`. Durations read like `30d`, `12h`, `90m`, `45s`.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Housekeeping")]
pub struct RetentionConfig {
    /// Delete `processed` inbox rows this long after they were processed. A re-delivery of a
    /// deleted row's content is stored (and processed) again as new.
    #[arg(long, env = "INBOX_RETENTION", default_value = "30d", value_parser = parse_duration)]
    pub inbox_retention: Duration,

    /// Delete `done` dirty ranges this long after they were completed.
    #[arg(long, env = "RANGE_RETENTION", default_value = "7d", value_parser = parse_duration)]
    pub range_retention: Duration,

    /// Replace the payload of `processed` inbox rows with JSON `null` this long after they
    /// were processed; empty (the default) keeps payloads until the row is deleted.
    // The full path stops clap from treating the field as optional, so that an empty value
    // (`PAYLOAD_RETENTION=` in .env) reaches the parser and means "keep".
    #[arg(long, env = "PAYLOAD_RETENTION", default_value = "", value_parser = parse_optional_duration)]
    pub payload_retention: std::option::Option<Duration>,

    /// Most rows one housekeeping statement deletes or blanks (each its own transaction).
    #[arg(long, env = "HOUSEKEEPING_BATCH", default_value_t = 1000)]
    pub housekeeping_batch: i64,
}

impl RetentionConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        require(
            self.housekeeping_batch >= 1,
            "HOUSEKEEPING_BATCH",
            "must be at least 1 (default 1000)",
        )
    }
}
