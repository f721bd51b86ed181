//! Every setting, read once at start from flags or the environment (after `.env`).

use std::{fmt, net::SocketAddr, path::PathBuf, time::Duration};

use axum::http::HeaderName;
use clap::{builder::BoolishValueParser, Args, ValueEnum};

pub mod hmac;

use hmac::{HmacMode, LayoutSetting};

/// A credential or secret: printed as `[redacted]` by `Debug` and `Display`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself: call only where it is compared or used, never to log it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl std::str::FromStr for Secret {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Self(s.to_owned()))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Settings shared by every subcommand: how to reach the database and how to log.
#[derive(Debug, Clone, Args)]
pub struct DatabaseConfig {
    /// Postgres connection URL, e.g. postgres://postgres@127.0.0.1:5432/thryve.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true, global = true)]
    pub database_url: Option<Secret>,

    /// Most connections this process opens.
    #[arg(
        long,
        env = "DATABASE_MAX_CONNECTIONS",
        default_value_t = 10,
        global = true
    )]
    pub database_max_connections: u32,

    /// `text` for people, `json` for log collectors.
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value_t = LogFormat::Text, global = true)]
    pub log_format: LogFormat,
}

/// Settings of `serve`.
#[derive(Debug, Clone, Args)]
pub struct ServeConfig {
    /// Address the webhook receiver listens on.
    #[arg(long, env = "BIND_ADDR", default_value = "0.0.0.0:8080")]
    pub bind_addr: SocketAddr,

    // The credentials and TLS paths below: empty (as in .env.example) means unset; the full
    // `std::option::Option` path is explained at PAYLOAD_RETENTION.
    /// Accepted HTTP Basic credentials, `user:password`, several comma-separated for rotation.
    #[arg(long, env = "WEBHOOK_BASIC_AUTH", hide_env_values = true, default_value = "", hide_default_value = true, value_parser = parse_optional_secret)]
    pub webhook_basic_auth: std::option::Option<Secret>,

    /// Accepted fixed headers, `Header-Name: value`, several comma-separated for rotation.
    #[arg(long, env = "WEBHOOK_AUTH_HEADER", hide_env_values = true, default_value = "", hide_default_value = true, value_parser = parse_optional_secret)]
    pub webhook_auth_header: std::option::Option<Secret>,

    /// HMAC secret from Thryve's dashboard: each delivery must then carry a valid
    /// `x-hmac-signature` and a recent `x-hmac-timestamp`, besides any static credential.
    /// Several comma-separated while it rotates.
    #[arg(long, env = "WEBHOOK_HMAC_SECRET", hide_env_values = true, default_value = "", hide_default_value = true, value_parser = parse_optional_secret)]
    pub webhook_hmac_secret: std::option::Option<Secret>,

    /// Which form of the body the HMAC covers and how the timestamp joins it
    /// (`json+timestamp`, `timestamp.frame`, ...; `body...` = `wire...` as in earlier
    /// versions), or `auto` to accept the layout signed deliveries show. `thryve-bridge hmac
    /// check` finds it from a captured delivery; `report` mode logs it from live ones.
    #[arg(long, env = "WEBHOOK_HMAC_LAYOUT", default_value = "wire+timestamp", value_parser = parse_layout)]
    pub webhook_hmac_layout: LayoutSetting,

    /// `enforce`: a missing or wrong signature gets 401 and nothing is stored. `report`: the
    /// delivery is stored all the same, and the check is counted and logged (to switch
    /// signatures on without risking the feed, and to find the layout).
    #[arg(long, env = "WEBHOOK_HMAC_MODE", value_enum, default_value_t = HmacMode::Enforce)]
    pub webhook_hmac_mode: HmacMode,

    /// Largest accepted gap, either way, between `x-hmac-timestamp` and this clock, in seconds.
    #[arg(long, env = "WEBHOOK_HMAC_WINDOW_SECS", default_value_t = 300)]
    pub webhook_hmac_window_secs: u64,

    /// Run without any credential (only behind something else that authenticates).
    #[arg(long, env = "WEBHOOK_ALLOW_UNAUTHENTICATED", value_parser = BoolishValueParser::new(), default_value = "false")]
    pub webhook_allow_unauthenticated: bool,

    /// Largest accepted body, compressed or decompressed, in bytes.
    #[arg(long, env = "MAX_BODY_BYTES", default_value_t = 1024 * 1024)]
    pub max_body_bytes: usize,

    /// Most request-body bytes held at once, over all requests; a request that would go over
    /// is answered 503 at once (its body read and dropped, not kept). Bounds the receiver's
    /// memory under a burst of large bodies while the database is slow.
    #[arg(long, env = "BODY_BUDGET_BYTES", default_value_t = 32 * 1024 * 1024)]
    pub body_budget_bytes: usize,

    /// Time from request start within which the delivery must be committed, else 503.
    #[arg(long, env = "ACK_DEADLINE_MS", default_value_t = 1500)]
    pub ack_deadline_ms: u64,

    /// Seconds sent in `Retry-After` with a 503.
    #[arg(long, env = "RETRY_AFTER_SECS", default_value_t = 5)]
    pub retry_after_secs: u64,

    /// Apply the embedded migrations before serving.
    #[arg(long, env = "MIGRATE_ON_START", value_parser = BoolishValueParser::new(), default_value = "false")]
    pub migrate_on_start: bool,

    /// Most deliveries written in one statement (group commit).
    #[arg(long, env = "INGEST_BATCH_MAX", default_value_t = 128)]
    pub ingest_batch_max: usize,

    /// Concurrent inbox writers, each holding one connection while it writes. Fewer writers
    /// make bigger batches: on the 2-core bench, 2 ingest ~20% faster than 4 (less contention
    /// on the same index pages), and 2 keep one slow statement from holding up every delivery.
    #[arg(long, env = "INGEST_WRITERS", default_value_t = 2)]
    pub ingest_writers: usize,

    /// Serve `POST /webhooks/thryve` (false: a poller-only instance; health and metrics stay up).
    #[arg(long, env = "RECEIVER_ENABLED", value_parser = BoolishValueParser::new(), default_value = "true")]
    pub receiver_enabled: bool,

    /// Run the poller that turns inbox rows into dirty ranges in this process.
    #[arg(long, env = "POLLER_ENABLED", value_parser = BoolishValueParser::new(), default_value = "true")]
    pub poller_enabled: bool,

    /// Most inbox rows the poller handles per transaction.
    #[arg(long, env = "POLL_BATCH_SIZE", default_value_t = 100)]
    pub poll_batch_size: i64,

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

    /// PEM certificate chain: with TLS_KEY_PATH, serve HTTPS directly.
    #[arg(long, env = "TLS_CERT_PATH", default_value = "", hide_default_value = true, value_parser = parse_optional_path)]
    pub tls_cert_path: std::option::Option<PathBuf>,

    /// PEM private key for TLS_CERT_PATH.
    #[arg(long, env = "TLS_KEY_PATH", default_value = "", hide_default_value = true, value_parser = parse_optional_path)]
    pub tls_key_path: std::option::Option<PathBuf>,

    /// A client must send its request headers (and finish TLS) within this many ms.
    #[arg(long, env = "HEADER_READ_TIMEOUT_MS", default_value_t = 10_000)]
    pub header_read_timeout_ms: u64,

    /// Most client connections served at once; more wait in the kernel's accept backlog.
    #[arg(long, env = "MAX_CONNECTIONS", default_value_t = 1024)]
    pub max_connections: usize,

    /// On SIGTERM, in-flight requests get this many seconds to finish before the exit.
    #[arg(long, env = "SHUTDOWN_TIMEOUT_SECS", default_value_t = 20)]
    pub shutdown_timeout_secs: u64,
    /// Run housekeeping (retention: deleting and blanking old rows) in this process.
    #[arg(long, env = "HOUSEKEEPING_ENABLED", value_parser = BoolishValueParser::new(), default_value = "true")]
    pub housekeeping_enabled: bool,

    /// Seconds between housekeeping passes.
    #[arg(long, env = "HOUSEKEEPING_INTERVAL_SECS", default_value_t = 60)]
    pub housekeeping_interval_secs: u64,

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

    #[command(flatten)]
    pub retention: RetentionConfig,

    #[command(flatten)]
    pub fetcher: FetcherConfig,
}

impl ServeConfig {
    pub fn ack_deadline(&self) -> Duration {
        Duration::from_millis(self.ack_deadline_ms)
    }

    /// Checks every setting of `serve` that can be checked without the disk, the network or
    /// the database; the server calls it once, before it builds anything. The first problem
    /// found is the error, and its message names the variable and the fix.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let hmac = self
            .webhook_hmac_secret
            .as_ref()
            .map(|secret| hmac_secrets(secret, self.webhook_hmac_window_secs))
            .transpose()?;
        let basic = match &self.webhook_basic_auth {
            Some(list) => basic_credentials(list.expose())?,
            None => Vec::new(),
        };
        let headers = match &self.webhook_auth_header {
            Some(list) => header_credentials(list.expose())?,
            None => Vec::new(),
        };
        require_credential(
            !basic.is_empty() || !headers.is_empty() || hmac.is_some(),
            self.webhook_allow_unauthenticated,
        )?;
        require(
            self.max_body_bytes >= 1,
            "MAX_BODY_BYTES",
            "must be at least 1",
        )?;
        require(
            self.poll_batch_size >= 1,
            "POLL_BATCH_SIZE",
            "must be at least 1 (default 100)",
        )?;
        require(
            self.poll_concurrency >= 1,
            "POLL_CONCURRENCY",
            "must be at least 1 (default 2)",
        )?;
        require(
            self.ingest_batch_max >= 1 && self.ingest_writers >= 1,
            "INGEST_WRITERS",
            "INGEST_WRITERS and INGEST_BATCH_MAX must be at least 1",
        )?;
        require(
            self.body_budget_bytes >= self.max_body_bytes,
            "BODY_BUDGET_BYTES",
            format!(
                "must be at least MAX_BODY_BYTES ({}), or a largest body could never be taken (default 33554432)",
                self.max_body_bytes
            ),
        )?;
        require(
            self.max_connections >= 1,
            "MAX_CONNECTIONS",
            "must be at least 1 (default 1024)",
        )?;
        require(
            self.ack_deadline_ms >= 1,
            "ACK_DEADLINE_MS",
            "must be at least 1 (default 1500)",
        )?;
        require(
            self.spool_dir.is_none() || self.spool_margin_ms < self.ack_deadline_ms,
            "SPOOL_MARGIN_MS",
            format!(
                "must be less than ACK_DEADLINE_MS ({}), or nothing would wait for the database (default 250)",
                self.ack_deadline_ms
            ),
        )?;
        self.retention.validate()?;
        self.fetcher.validate()?;
        require(
            self.housekeeping_interval_secs >= 1,
            "HOUSEKEEPING_INTERVAL_SECS",
            "must be at least 1 (default 60)",
        )?;
        require(
            self.tls_cert_path.is_some() == self.tls_key_path.is_some(),
            "TLS_CERT_PATH",
            "TLS_CERT_PATH and TLS_KEY_PATH must be set together (or neither, behind a TLS proxy)",
        )
    }
}

/// `Ok` when `ok`, else the error that names `variable` and says what is wrong.
fn require(
    ok: bool,
    variable: &'static str,
    problem: impl Into<String>,
) -> Result<(), ConfigError> {
    if ok {
        Ok(())
    } else {
        Err(ConfigError::new(variable, problem))
    }
}

/// The secrets of a `WEBHOOK_HMAC_SECRET` value: comma-separated, blanks around each ignored.
pub fn secret_list(list: &str) -> impl Iterator<Item = &str> {
    list.split(',').map(str::trim).filter(|s| !s.is_empty())
}

/// `WEBHOOK_HMAC_SECRET` (several comma-separated while rotating) and
/// `WEBHOOK_HMAC_WINDOW_SECS`, checked: the secrets one by one.
pub fn hmac_secrets(secret: &Secret, window_secs: u64) -> Result<Vec<Secret>, ConfigError> {
    let secrets: Vec<Secret> = secret_list(secret.expose()).map(Secret::new).collect();
    if secrets.is_empty() {
        return Err(ConfigError::new(
            "WEBHOOK_HMAC_SECRET",
            "is empty; unset it, or set it to the secret shown in Thryve's dashboard",
        ));
    }
    if window_secs == 0 {
        return Err(ConfigError::new(
            "WEBHOOK_HMAC_WINDOW_SECS",
            "must be at least 1 (default 300)",
        ));
    }
    Ok(secrets)
}

/// The entries of a `WEBHOOK_BASIC_AUTH` value, each `user:password` with both non-empty.
pub fn basic_credentials(list: &str) -> Result<Vec<&str>, ConfigError> {
    list.split(',')
        .map(str::trim)
        .filter(|entry| !entry.is_empty())
        .enumerate()
        .map(|(i, entry)| match entry.split_once(':') {
            Some((user, password)) if !user.is_empty() && !password.is_empty() => Ok(entry),
            _ => Err(ConfigError::new(
                "WEBHOOK_BASIC_AUTH",
                format!(
                    "entry {} is not user:password (both non-empty); expected user:password[,user2:password2]",
                    i + 1
                ),
            )),
        })
        .collect()
}

/// The entries of a `WEBHOOK_AUTH_HEADER` value: a valid header name and a non-empty value.
pub fn header_credentials(list: &str) -> Result<Vec<(HeaderName, &str)>, ConfigError> {
    list.split(',')
        .map(str::trim)
        .filter(|entry| !entry.is_empty())
        .enumerate()
        .map(|(i, entry)| {
            let bad = |why: &str| {
                ConfigError::new(
                    "WEBHOOK_AUTH_HEADER",
                    format!(
                        "entry {}: {why}; expected 'Header-Name: value[,Header-Name: value2]'",
                        i + 1
                    ),
                )
            };
            let (name, value) = entry.split_once(':').ok_or_else(|| bad("no ':'"))?;
            let name =
                HeaderName::try_from(name.trim()).map_err(|_| bad("not a valid header name"))?;
            let value = value.trim();
            if value.is_empty() {
                return Err(bad("empty value"));
            }
            Ok((name, value))
        })
        .collect()
}

/// Refuses a receiver with no credential at all, unless `WEBHOOK_ALLOW_UNAUTHENTICATED`.
pub fn require_credential(any: bool, allow_unauthenticated: bool) -> Result<(), ConfigError> {
    if !any && !allow_unauthenticated {
        return Err(ConfigError::new(
            "WEBHOOK_BASIC_AUTH",
            "no webhook credential configured; set WEBHOOK_BASIC_AUTH=user:password (or \
             WEBHOOK_AUTH_HEADER='Header-Name: value', or WEBHOOK_HMAC_SECRET), or \
             WEBHOOK_ALLOW_UNAUTHENTICATED=true to accept anyone",
        ));
    }
    Ok(())
}

/// How long housekeeping keeps finished rows, and how many it touches per statement; shared
/// by `serve` and `housekeeping run`. Durations read like `30d`, `12h`, `90m`, `45s`.
#[derive(Debug, Clone, Args)]
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

/// The built-in fetcher: claims dirty ranges, calls Thryve's data API for each and writes the
/// values into `thryve.epoch_values` / `thryve.daily_values`.
#[derive(Debug, Clone, Args)]
pub struct FetcherConfig {
    /// Run the fetcher in this process (needs the four THRYVE_API_*/THRYVE_APP_* credentials).
    #[arg(long, env = "FETCHER_ENABLED", value_parser = BoolishValueParser::new(), default_value = "false")]
    pub fetcher_enabled: bool,

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

    /// Most calls to Thryve in flight at once from this process.
    #[arg(long, env = "FETCHER_CONCURRENCY", default_value_t = 4)]
    pub fetcher_concurrency: usize,

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
    /// Checks the settings a running fetcher needs; nothing when it is off.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !self.fetcher_enabled {
            return Ok(());
        }
        let missing = [
            ("THRYVE_API_USER", self.thryve_api_user.is_empty()),
            ("THRYVE_API_PASSWORD", self.thryve_api_password.is_none()),
            ("THRYVE_APP_ID", self.thryve_app_id.is_empty()),
            ("THRYVE_APP_SECRET", self.thryve_app_secret.is_none()),
        ];
        if let Some((name, _)) = missing.iter().find(|(_, missing)| *missing) {
            return Err(ConfigError::new(
                name,
                "must be set when FETCHER_ENABLED=true (Thryve's data API needs both credentials)",
            ));
        }
        require(
            self.thryve_api_url.starts_with("http://")
                || self.thryve_api_url.starts_with("https://"),
            "THRYVE_API_URL",
            "must start with https:// (or http://)",
        )?;
        require(
            self.fetcher_concurrency >= 1,
            "FETCHER_CONCURRENCY",
            "must be at least 1 (default 4)",
        )?;
        require(
            self.fetcher_rate_per_sec >= 0.0 && self.fetcher_rate_per_sec.is_finite(),
            "FETCHER_RATE_PER_SEC",
            "must be 0 (no cap) or more",
        )?;
        require(
            self.fetcher_max_tries >= 1
                && self.fetcher_timeout_ms >= 1
                && self.fetcher_lease_secs >= 1,
            "FETCHER_MAX_TRIES",
            "FETCHER_MAX_TRIES, FETCHER_TIMEOUT_MS and FETCHER_LEASE_SECS must be at least 1",
        )
    }
}

/// Reads a duration written as a whole number and a unit: `s`, `m`, `h` or `d`.
///
/// ```
/// use std::time::Duration;
/// use thryve_bridge::config::parse_duration;
/// assert_eq!(parse_duration("30d"), Ok(Duration::from_secs(30 * 86_400)));
/// assert!(parse_duration("30").is_err());
/// ```
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let expected =
        || format!("{text:?}: expected a whole number and a unit (s, m, h or d), e.g. 30d");
    let trimmed = text.trim();
    let split = trimmed
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(expected)?;
    let (number, unit) = trimmed.split_at(split);
    let number: u64 = number.parse().map_err(|_| expected())?;
    let unit_secs = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3_600,
        "d" => 86_400,
        _ => return Err(expected()),
    };
    number
        .checked_mul(unit_secs)
        .map(Duration::from_secs)
        .ok_or_else(|| format!("{text:?}: too long"))
}

/// [`parse_duration`], where an empty value means "not set".
pub fn parse_optional_duration(text: &str) -> Result<Option<Duration>, String> {
    if text.trim().is_empty() {
        Ok(None)
    } else {
        parse_duration(text).map(Some)
    }
}

/// A `WEBHOOK_HMAC_LAYOUT` value: a layout's name or `auto`.
pub fn parse_layout(text: &str) -> Result<LayoutSetting, String> {
    text.parse()
}

/// A path, where an empty value means "not set".
pub fn parse_optional_path(text: &str) -> Result<Option<PathBuf>, String> {
    Ok((!text.trim().is_empty()).then(|| PathBuf::from(text)))
}

/// A credential setting, where an empty value (`WEBHOOK_BASIC_AUTH=` as in `.env.example`)
/// means "not set".
pub fn parse_optional_secret(text: &str) -> Result<Option<Secret>, String> {
    Ok((!text.trim().is_empty()).then(|| Secret::new(text)))
}

/// A setting that parsed but makes no sense; the message names the variable and the fix.
#[derive(Debug, thiserror::Error)]
#[error("{variable}: {problem}")]
pub struct ConfigError {
    pub variable: &'static str,
    pub problem: String,
}

impl ConfigError {
    pub fn new(variable: &'static str, problem: impl Into<String>) -> Self {
        Self {
            variable,
            problem: problem.into(),
        }
    }
}

impl DatabaseConfig {
    pub fn url(&self) -> Result<&str, ConfigError> {
        self.database_url.as_ref().map(Secret::expose).ok_or_else(|| {
            ConfigError::new(
                "DATABASE_URL",
                "not set; set it (or put it in .env) to e.g. postgres://postgres@127.0.0.1:5432/postgres",
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_in_each_unit() {
        let cases = [
            ("45s", 45),
            ("90m", 90 * 60),
            ("12h", 12 * 3_600),
            ("30d", 30 * 86_400),
            ("0s", 0),
            (" 7d ", 7 * 86_400),
        ];
        for (text, secs) in cases {
            assert_eq!(
                parse_duration(text),
                Ok(Duration::from_secs(secs)),
                "{text}"
            );
        }
    }

    #[test]
    fn malformed_durations_are_refused() {
        for text in [
            "",
            "30",
            "d",
            "30x",
            "30 d",
            "-1d",
            "1.5h",
            "30D",
            "1h30m",
            "99999999999999999999d",
        ] {
            assert!(parse_duration(text).is_err(), "{text:?}");
        }
        assert!(parse_duration("18446744073709551615d")
            .unwrap_err()
            .contains("too long"));
    }

    #[test]
    fn an_empty_optional_duration_is_unset() {
        assert_eq!(parse_optional_duration(""), Ok(None));
        assert_eq!(parse_optional_duration("  "), Ok(None));
        assert_eq!(
            parse_optional_duration("1d"),
            Ok(Some(Duration::from_secs(86_400)))
        );
        assert!(parse_optional_duration("soon").is_err());
    }
}
