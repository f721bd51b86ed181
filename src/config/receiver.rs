//! The receiver's settings: who may deliver, how large a body may be, how long a delivery may
//! take to commit, and the inbox writers that commit it.

use std::time::Duration;

use axum::http::HeaderName;
use clap::{builder::BoolishValueParser, Args};

use super::{
    hmac::{HmacMode, LayoutSetting},
    parse_optional_secret, require, ConfigError, Secret,
};

/// `POST /webhooks/thryve`: credentials, body limits, the ack deadline, the inbox writers.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Receiver")]
pub struct ReceiverConfig {
    /// Serve `POST /webhooks/thryve` (false: a poller-only instance; health and metrics stay up).
    #[arg(long, env = "RECEIVER_ENABLED", value_parser = BoolishValueParser::new(), default_value = "true")]
    pub receiver_enabled: bool,

    // The credentials below: empty (as in .env.example) means unset; the full
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

    /// Time from request start within which the delivery must be committed, else 503. Also
    /// how long `/readyz` and `/metrics` wait for the database.
    #[arg(long, env = "ACK_DEADLINE_MS", default_value_t = 1500)]
    pub ack_deadline_ms: u64,

    /// Seconds sent in `Retry-After` with a 503.
    #[arg(long, env = "RETRY_AFTER_SECS", default_value_t = 5)]
    pub retry_after_secs: u64,

    /// Most deliveries written in one statement (group commit).
    #[arg(long, env = "INGEST_BATCH_MAX", default_value_t = 128)]
    pub ingest_batch_max: usize,

    /// Concurrent inbox writers, each holding one connection while it writes. Fewer writers
    /// make bigger batches, and 2 keep one slow statement from holding up every delivery
    /// (docs/scaling.md).
    #[arg(long, env = "INGEST_WRITERS", default_value_t = 2)]
    pub ingest_writers: usize,
}

impl ReceiverConfig {
    pub fn ack_deadline(&self) -> Duration {
        Duration::from_millis(self.ack_deadline_ms)
    }

    /// How far `x-hmac-timestamp` may lie from the receipt to be taken as the signing time.
    pub fn signing_window(&self) -> Duration {
        Duration::from_secs(self.webhook_hmac_window_secs)
    }

    /// Checks what a receiver needs: at least one well-formed credential (or the explicit
    /// opt-out), sane body limits, a deadline and writers.
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
            self.ack_deadline_ms >= 1,
            "ACK_DEADLINE_MS",
            "must be at least 1 (default 1500)",
        )
    }
}

/// A `WEBHOOK_HMAC_LAYOUT` value: a layout's name or `auto`.
pub fn parse_layout(text: &str) -> Result<LayoutSetting, String> {
    text.parse()
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
