//! Every setting, read once at start from flags or the environment (after `.env`), in one
//! group per component; each group is checked by its own `validate`, and only when its
//! component runs in this process.

use std::{collections::HashMap, ffi::OsString, fmt, path::PathBuf, time::Duration};

use clap::{Args, FromArgMatches, ValueEnum};

mod fetcher;
pub mod hmac;
mod housekeeping;
mod listener;
mod poller;
mod receiver;
mod spool;

pub use fetcher::{FetcherConfig, ThryveApiConfig};
pub use housekeeping::{HousekeepingConfig, RetentionConfig};
pub use listener::ListenerConfig;
pub use poller::PollerConfig;
pub use receiver::{
    basic_credentials, header_credentials, hmac_secrets, require_credential, secret_list,
    ReceiverConfig,
};
pub use spool::SpoolConfig;

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

/// Settings shared by every subcommand: how to reach the database and how to log. Listed
/// under their own heading in every subcommand's help, apart from the subcommand's options.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Global options")]
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

/// Settings of `serve`: one group per component. The listener (health, metrics and, with the
/// receiver, the webhook route) always runs; every other component has an `*_ENABLED` switch
/// (the spool: `SPOOL_DIR`), and its group is checked only when it is on, so a poller-only,
/// fetcher-only or housekeeping-only process needs no webhook credential.
///
/// ```
/// use thryve_bridge::config::ServeConfig;
/// let defaults = ServeConfig::from_env([("RECEIVER_ENABLED", "false")]).unwrap();
/// assert!(defaults.poller.poller_enabled && !defaults.receiver.receiver_enabled);
/// defaults.validate().unwrap(); // no credential needed without the receiver
/// ```
#[derive(Debug, Clone, Args)]
pub struct ServeConfig {
    /// Apply the embedded migrations before serving.
    #[arg(long, env = "MIGRATE_ON_START", value_parser = clap::builder::BoolishValueParser::new(), default_value = "false")]
    pub migrate_on_start: bool,

    #[command(flatten)]
    pub listener: ListenerConfig,

    #[command(flatten)]
    pub receiver: ReceiverConfig,

    #[command(flatten)]
    pub spool: SpoolConfig,

    #[command(flatten)]
    pub poller: PollerConfig,

    #[command(flatten)]
    pub housekeeping: HousekeepingConfig,

    #[command(flatten)]
    pub fetcher: FetcherConfig,
}

impl ServeConfig {
    /// The settings `serve` reads from exactly `vars` (not from this process's environment,
    /// nor `.env`), by the same declarations as the binary: an empty `vars` gives every
    /// default. For tests and tools that must start from what a user gets.
    pub fn from_env<K, V>(vars: impl IntoIterator<Item = (K, V)>) -> Result<Self, clap::Error>
    where
        K: Into<String>,
        V: Into<String>,
    {
        parse_env(vars)
    }

    /// Checks, without the disk, the network or the database, the group of every component
    /// this process runs; the server calls it once, before it builds anything. The first
    /// problem found is the error, and its message names the variable and the fix.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.listener.validate()?;
        if self.receiver.receiver_enabled {
            self.receiver.validate()?;
        }
        if self.spool.spool_dir.is_some() {
            self.spool.validate(&self.receiver)?;
        }
        if self.poller.poller_enabled {
            self.poller.validate()?;
        }
        if self.housekeeping.housekeeping_enabled {
            self.housekeeping.validate()?;
        }
        if self.fetcher.fetcher_enabled {
            self.fetcher.validate()?;
        }
        Ok(())
    }
}

/// Parses the settings group `T` from `vars` alone: each setting's variable is looked up in
/// `vars` instead of the process's environment, then clap applies its value parser and
/// default as it would to the environment.
pub fn parse_env<T, K, V>(vars: impl IntoIterator<Item = (K, V)>) -> Result<T, clap::Error>
where
    T: Args + FromArgMatches,
    K: Into<String>,
    V: Into<String>,
{
    let vars: HashMap<String, String> = vars
        .into_iter()
        .map(|(k, v)| (k.into(), v.into()))
        .collect();
    let command = T::augment_args(clap::Command::new("thryve-bridge")).mut_args(|arg| {
        let Some(value) = arg.get_env().and_then(|name| vars.get(name.to_str()?)) else {
            return arg.env(None);
        };
        // The looked-up value takes the default's place: the same parser reads it.
        let value = value.clone();
        arg.env(None).default_value(value)
    });
    let matches = command.try_get_matches_from([OsString::from("thryve-bridge")])?;
    T::from_arg_matches(&matches)
}

/// `Ok` when `ok`, else the error that names `variable` and says what is wrong.
pub(crate) fn require(
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

/// A path, where an empty value means "not set".
pub fn parse_optional_path(text: &str) -> Result<Option<PathBuf>, String> {
    Ok((!text.trim().is_empty()).then(|| PathBuf::from(text)))
}

/// A credential setting, where an empty value (`WEBHOOK_BASIC_AUTH=` as in `.env.example`)
/// means "not set".
pub fn parse_optional_secret(text: &str) -> Result<Option<Secret>, String> {
    Ok((!text.trim().is_empty()).then(|| Secret::new(text)))
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

#[cfg(test)]
mod tests {
    use super::*;

    fn serve(vars: &[(&str, &str)]) -> ServeConfig {
        ServeConfig::from_env(vars.iter().copied()).unwrap()
    }

    #[test]
    fn a_process_without_the_receiver_needs_no_webhook_credential() {
        let everything_else_off = [
            ("RECEIVER_ENABLED", "false"),
            ("POLLER_ENABLED", "false"),
            ("HOUSEKEEPING_ENABLED", "false"),
        ];
        // Poller-only (the Kubernetes poller), housekeeping-only, fetcher-only.
        for (component, switch, extra) in [
            ("poller", "POLLER_ENABLED", &[][..]),
            ("housekeeping", "HOUSEKEEPING_ENABLED", &[][..]),
            (
                "fetcher",
                "FETCHER_ENABLED",
                &[
                    ("THRYVE_API_USER", "u"),
                    ("THRYVE_API_PASSWORD", "p"),
                    ("THRYVE_APP_ID", "a"),
                    ("THRYVE_APP_SECRET", "s"),
                ][..],
            ),
        ] {
            let mut vars = everything_else_off.to_vec();
            vars.push((switch, "true"));
            vars.extend_from_slice(extra);
            let config = serve(&vars);
            assert!(config.validate().is_ok(), "{component}-only");
        }
        let receiver = serve(&[]).validate().unwrap_err();
        assert_eq!(receiver.variable, "WEBHOOK_BASIC_AUTH");
    }

    #[test]
    fn a_component_that_is_off_is_not_checked() {
        let bad = [
            ("POLL_BATCH_SIZE", "0", "POLLER_ENABLED"),
            ("HOUSEKEEPING_BATCH", "0", "HOUSEKEEPING_ENABLED"),
            ("HOUSEKEEPING_INTERVAL_SECS", "0", "HOUSEKEEPING_ENABLED"),
            ("INGEST_WRITERS", "0", "RECEIVER_ENABLED"),
            ("FETCHER_CONCURRENCY", "0", "FETCHER_ENABLED"),
        ];
        for (variable, value, switch) in bad {
            let base = [
                ("WEBHOOK_BASIC_AUTH", "a:b"),
                ("THRYVE_API_USER", "u"),
                ("THRYVE_API_PASSWORD", "p"),
                ("THRYVE_APP_ID", "a"),
                ("THRYVE_APP_SECRET", "s"),
                (variable, value),
            ];
            let on = serve(&[&base[..], &[(switch, "true")]].concat());
            assert_eq!(on.validate().unwrap_err().variable, variable);
            let off = serve(&[&base[..], &[(switch, "false")]].concat());
            assert!(off.validate().is_ok(), "{variable} with {switch}=false");
        }
    }

    #[test]
    fn settings_come_from_the_map_alone_and_parse_as_the_binary_parses_them() {
        let config = serve(&[
            ("POLL_INTERVAL_MS", "250"),
            ("INBOX_RETENTION", "12h"),
            ("PAYLOAD_RETENTION", ""),
            ("RECEIVER_ENABLED", "no"),
            ("SPOOL_DIR", "/var/spool/x"),
        ]);
        assert_eq!(config.poller.interval(), Duration::from_millis(250));
        let retention = &config.housekeeping.retention;
        assert_eq!(retention.inbox_retention, Duration::from_secs(12 * 3600));
        assert_eq!(retention.payload_retention, None);
        assert!(!config.receiver.receiver_enabled);
        assert_eq!(config.spool.spool_dir, Some(PathBuf::from("/var/spool/x")));
        assert!(ServeConfig::from_env([("POLL_BATCH_SIZE", "many")]).is_err());
    }

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
