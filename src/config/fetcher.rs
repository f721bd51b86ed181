//! The built-in fetcher's settings, and apart from them those of Thryve's data API (URL,
//! credentials, rate cap, retries), which any command that calls Thryve uses.

use std::time::Duration;

use clap::{builder::BoolishValueParser, Args};

use super::{parse_optional_secret, require, ConfigError, Secret};

/// The built-in fetcher: claims dirty ranges, calls Thryve's data API for each and writes the
/// values into `thryve.epoch_values` / `thryve.daily_values`.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Fetcher")]
pub struct FetcherConfig {
    /// Run the fetcher in this process (needs the four THRYVE_API_*/THRYVE_APP_* credentials).
    #[arg(long, env = "FETCHER_ENABLED", value_parser = BoolishValueParser::new(), default_value = "false")]
    pub fetcher_enabled: bool,

    #[command(flatten)]
    pub api: ThryveApiConfig,

    /// Most calls to Thryve in flight at once from this process.
    #[arg(long, env = "FETCHER_CONCURRENCY", default_value_t = 4)]
    pub fetcher_concurrency: usize,

    /// Lease of a claimed range, in seconds; extended every third of it while the range is
    /// worked on, so a dead fetcher's ranges are claimable again this long after it died.
    #[arg(long, env = "FETCHER_LEASE_SECS", default_value_t = 300)]
    pub fetcher_lease_secs: u64,

    /// Longest pause between claims when no NOTIFY arrives, in ms.
    #[arg(long, env = "FETCHER_INTERVAL_MS", default_value_t = 5_000)]
    pub fetcher_interval_ms: u64,

    /// After a 401, all fetching pauses this long before one call tries the credentials again.
    #[arg(long, env = "FETCHER_AUTH_PAUSE_SECS", default_value_t = 60)]
    pub fetcher_auth_pause_secs: u64,

    /// This process's name in `claimed_by`; empty: `fetcher-<host>-<random>`.
    #[arg(
        long,
        env = "FETCHER_WORKER",
        default_value = "",
        hide_default_value = true
    )]
    pub fetcher_worker: String,
}

impl FetcherConfig {
    pub fn lease(&self) -> Duration {
        Duration::from_secs(self.fetcher_lease_secs)
    }

    pub fn interval(&self) -> Duration {
        Duration::from_millis(self.fetcher_interval_ms)
    }

    pub fn auth_pause(&self) -> Duration {
        Duration::from_secs(self.fetcher_auth_pause_secs)
    }

    /// Checks the settings a running fetcher needs.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.api.validate("FETCHER_ENABLED=true")?;
        require(
            self.fetcher_concurrency >= 1,
            "FETCHER_CONCURRENCY",
            "must be at least 1 (default 4)",
        )?;
        require(
            self.fetcher_lease_secs >= 1,
            "FETCHER_MAX_TRIES",
            "FETCHER_MAX_TRIES, FETCHER_TIMEOUT_MS and FETCHER_LEASE_SECS must be at least 1",
        )
    }
}

/// Thryve's data API as this process calls it: where, with which credentials, how fast, and
/// how it retries. What a command needs to call Thryve without running the fetcher.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Thryve's data API")]
pub struct ThryveApiConfig {
    /// Thryve's data API host (`https://api-qa.thryve.de` for QA).
    #[arg(long, env = "THRYVE_API_URL", default_value = "https://api.thryve.de")]
    pub thryve_api_url: String,

    /// The partner's API user: `Authorization: Basic` with THRYVE_API_PASSWORD.
    #[arg(
        long,
        env = "THRYVE_API_USER",
        default_value = "",
        hide_default_value = true
    )]
    pub thryve_api_user: String,

    #[arg(long, env = "THRYVE_API_PASSWORD", hide_env_values = true, default_value = "", hide_default_value = true, value_parser = parse_optional_secret)]
    pub thryve_api_password: std::option::Option<Secret>,

    /// The app's id (authID): `AppAuthorization: Basic` with THRYVE_APP_SECRET.
    #[arg(
        long,
        env = "THRYVE_APP_ID",
        default_value = "",
        hide_default_value = true
    )]
    pub thryve_app_id: String,

    #[arg(long, env = "THRYVE_APP_SECRET", hide_env_values = true, default_value = "", hide_default_value = true, value_parser = parse_optional_secret)]
    pub thryve_app_secret: std::option::Option<Secret>,

    /// Most calls to Thryve started per second by this process; 0 = no cap.
    #[arg(long, env = "FETCHER_RATE_PER_SEC", default_value_t = 5.0)]
    pub fetcher_rate_per_sec: f64,

    /// A call with no complete answer within this many ms counts as a timeout (retried).
    #[arg(long, env = "FETCHER_TIMEOUT_MS", default_value_t = 60_000)]
    pub fetcher_timeout_ms: u64,

    /// Largest answer read, in bytes; a larger one fails the range's attempt.
    #[arg(long, env = "FETCHER_MAX_RESPONSE_BYTES", default_value_t = 64 * 1024 * 1024)]
    pub fetcher_max_response_bytes: usize,

    /// Tries of one call on 429, 5xx, timeouts and connection errors before the range's
    /// attempt fails (and the range is retried later, up to range_max_attempts).
    #[arg(long, env = "FETCHER_MAX_TRIES", default_value_t = 5)]
    pub fetcher_max_tries: u32,

    /// First backoff between tries, in ms; doubled per try, with full jitter, up to
    /// FETCHER_BACKOFF_MAX_MS. A `Retry-After` from Thryve overrides it.
    #[arg(long, env = "FETCHER_BACKOFF_MS", default_value_t = 1_000)]
    pub fetcher_backoff_ms: u64,

    #[arg(long, env = "FETCHER_BACKOFF_MAX_MS", default_value_t = 60_000)]
    pub fetcher_backoff_max_ms: u64,
}

impl ThryveApiConfig {
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.fetcher_timeout_ms)
    }

    pub fn backoff(&self) -> Duration {
        Duration::from_millis(self.fetcher_backoff_ms)
    }

    pub fn backoff_max(&self) -> Duration {
        Duration::from_millis(self.fetcher_backoff_max_ms)
    }

    /// Checks what calling Thryve needs; `needed_by` (`FETCHER_ENABLED=true`, a command)
    /// says in the error why the credentials must be there.
    pub fn validate(&self, needed_by: &str) -> Result<(), ConfigError> {
        let missing = [
            ("THRYVE_API_USER", self.thryve_api_user.is_empty()),
            ("THRYVE_API_PASSWORD", self.thryve_api_password.is_none()),
            ("THRYVE_APP_ID", self.thryve_app_id.is_empty()),
            ("THRYVE_APP_SECRET", self.thryve_app_secret.is_none()),
        ];
        if let Some((name, _)) = missing.iter().find(|(_, missing)| *missing) {
            return Err(ConfigError::new(
                name,
                format!("must be set when {needed_by} (Thryve's data API needs both credentials)"),
            ));
        }
        require(
            self.thryve_api_url.starts_with("http://")
                || self.thryve_api_url.starts_with("https://"),
            "THRYVE_API_URL",
            "must start with https:// (or http://)",
        )?;
        require(
            self.fetcher_rate_per_sec >= 0.0 && self.fetcher_rate_per_sec.is_finite(),
            "FETCHER_RATE_PER_SEC",
            "must be 0 (no cap) or more",
        )?;
        require(
            self.fetcher_max_tries >= 1 && self.fetcher_timeout_ms >= 1,
            "FETCHER_MAX_TRIES",
            "FETCHER_MAX_TRIES, FETCHER_TIMEOUT_MS and FETCHER_LEASE_SECS must be at least 1",
        )
    }
}
