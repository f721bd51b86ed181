//! The `thryve-bridge` command line: `serve` (the default), `migrate`, `healthcheck`, `hmac
//! check`, and the operator commands, which print JSON.

use std::{path::PathBuf, process::ExitCode, sync::Arc, time::Duration};

use axum::http::{HeaderMap, HeaderName, HeaderValue};
use clap::{Parser, Subcommand, ValueEnum};
use serde::Serialize;
use sqlx::PgPool;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    sync::watch,
};
use tokio_util::sync::CancellationToken;

use crate::{
    config::{DatabaseConfig, RetentionConfig, Secret, ServeConfig},
    db,
    housekeeping::Housekeeping,
    http::hmac,
    inbox::{self, Status},
    ranges::{self, ClaimMode, Consumer, RangeStatus},
    server::Application,
    sources,
    spool::{self, Spool, SpoolLoader, SpoolMetrics},
    stats, telemetry, users,
};

#[derive(Debug, Parser)]
#[command(
    name = "thryve-bridge",
    version,
    about = "Stores Thryve webhooks in Postgres and turns them into dirty ranges for your jobs",
    long_about = "Stores Thryve webhooks in Postgres and turns them into dirty ranges for your jobs.\n\
                  Every setting is also read from the environment (a .env file is read first).",
    after_help = "Settings: `thryve-bridge serve --help` lists the server's; each subcommand's \
                  --help lists its own. Every variable, with its default and meaning, is in \
                  .env.example and the README's Configuration table."
)]
pub struct Cli {
    #[command(flatten)]
    pub database: DatabaseConfig,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the webhook receiver (the default when no command is given).
    Serve(Box<ServeConfig>),
    /// Apply the embedded migrations (schema `thryve`) and exit.
    Migrate,
    /// HMAC signature tools (JSON out).
    #[command(subcommand)]
    Hmac(HmacCommand),
    /// Exit 0 if the local server answers `/readyz` with 200 (for container health checks).
    Healthcheck {
        /// URL to probe; only plain http is supported.
        #[arg(
            long,
            env = "HEALTHCHECK_URL",
            default_value = "http://127.0.0.1:8080/readyz"
        )]
        url: String,
    },
    /// Claim, complete, fail or list dirty ranges by hand (JSON out).
    #[command(subcommand)]
    Ranges(RangesCommand),
    /// Show, list or replay inbox rows (JSON out).
    #[command(subcommand)]
    Inbox(InboxCommand),
    /// Counts and ages per table and status, and seconds since the last delivery (JSON out).
    Stats,
    /// Erase one end user's rows (JSON out).
    #[command(subcommand)]
    Users(UsersCommand),
    /// Run housekeeping (retention) by hand (JSON out).
    #[command(subcommand)]
    Housekeeping(HousekeepingCommand),
    /// List or reload the spool's set-aside records (JSON out).
    #[command(subcommand)]
    Spool(SpoolCommand),
}

#[derive(Debug, Subcommand)]
pub enum SpoolCommand {
    /// List the records set aside in SPOOL_DIR/rejected-*.jsonl (no payloads). Reads only:
    /// safe while a server owns the directory.
    List {
        #[arg(long, env = "SPOOL_DIR")]
        dir: PathBuf,
    },
    /// Load the set-aside records into the inbox again, once what refused them is fixed; any
    /// still refused are set aside again. Takes the directory's lock, so run it while the
    /// server that owns SPOOL_DIR is stopped (e.g. between stopping and starting a replica).
    Reload {
        #[arg(long, env = "SPOOL_DIR")]
        dir: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
pub enum InboxCommand {
    /// Print one row, payload included.
    Show { id: i64 },
    /// List rows in one status, newest first, without payloads.
    List {
        #[arg(long, value_enum)]
        status: Status,
        #[arg(long, default_value_t = 100)]
        limit: i64,
        #[arg(long)]
        end_user: Option<String>,
    },
    /// Run quarantined and ignored rows through today's parser, oldest first: rows that parse
    /// now get their typed columns and go back to pending for the poller; the others get
    /// today's reason. Prints counts and ids.
    Replay {
        /// Only rows in this status (both when absent).
        #[arg(long, value_enum)]
        status: Option<HeldStatus>,
        /// Only this row.
        #[arg(long)]
        id: Option<i64>,
        #[arg(long, default_value_t = 1000)]
        limit: i64,
    },
}

/// The statuses a row can be held in that `inbox replay` reads again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum HeldStatus {
    Quarantined,
    Ignored,
}

impl From<HeldStatus> for Status {
    fn from(held: HeldStatus) -> Self {
        match held {
            HeldStatus::Quarantined => Status::Quarantined,
            HeldStatus::Ignored => Status::Ignored,
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum UsersCommand {
    /// Delete every row of END_USER_ID from every table, in one transaction (GDPR erasure).
    /// Without --yes, prints what it would delete and exits 1.
    Erase {
        end_user_id: String,
        /// Really delete.
        #[arg(long)]
        yes: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum HousekeepingCommand {
    /// One pass now with the retention settings; prints what it deleted and blanked.
    Run(RetentionConfig),
}

#[derive(Debug, Subcommand)]
pub enum RangesCommand {
    /// Claim up to --max ranges, oldest first; prints them with the Thryve call for each.
    Claim {
        #[arg(long)]
        worker: String,
        #[arg(long, default_value_t = 10)]
        max: i32,
        #[arg(long, default_value_t = 300)]
        lease_secs: u64,
        /// fetch: only ranges that need a fetch from Thryve; all: push-only ones too.
        #[arg(long, value_enum, default_value_t = ClaimMode::Fetch)]
        mode: ClaimMode,
    },
    /// Mark a claimed range done (exit 1 if the worker no longer holds it).
    Complete {
        range_id: i64,
        #[arg(long)]
        worker: String,
    },
    /// Record a failed attempt: retried after --retry-in-secs, or failed when out of attempts.
    Fail {
        range_id: i64,
        #[arg(long)]
        worker: String,
        #[arg(long)]
        error: String,
        #[arg(long, default_value_t = 60)]
        retry_in_secs: u64,
    },
    /// Extend a claimed range's lease (exit 1 if the worker no longer holds it).
    Extend {
        range_id: i64,
        #[arg(long)]
        worker: String,
        #[arg(long, default_value_t = 300)]
        lease_secs: u64,
    },
    /// Enqueue re-fetch work for recent days (recovery after Thryve disabled the webhook or
    /// deliveries were lost): for every connected (user, source) in source_connections, or the
    /// given ones, one span per granularity from --since (or --days ago) to now, merged with
    /// pending work like a notification, so running it twice adds nothing. Safe from cron.
    Dirty {
        /// Span start: this many days before today (UTC), from 00:00 UTC.
        #[arg(long, conflicts_with = "since", required_unless_present = "since")]
        days: Option<u32>,
        /// Span start: this day (YYYY-MM-DD), from 00:00 UTC.
        #[arg(long)]
        since: Option<chrono::NaiveDate>,
        /// Only this end user (with --source: that pair, connected or not).
        #[arg(long)]
        user: Option<String>,
        /// Only this data source id (with --user: that pair, connected or not).
        #[arg(long)]
        source: Option<i32>,
        /// Which kind of range: epoch, daily or both.
        #[arg(long, value_enum, default_value_t = GranularityArg::Both)]
        granularity: GranularityArg,
        /// Only these data type ids (comma-separated); none: all types.
        #[arg(long, value_delimiter = ',')]
        types: Vec<i32>,
    },
    /// List ranges, oldest first.
    List {
        /// pending, claimed, done or failed (all when absent).
        #[arg(long, value_enum)]
        status: Option<RangeStatus>,
        #[arg(long, default_value_t = 100)]
        limit: i64,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum GranularityArg {
    Epoch,
    Daily,
    Both,
}

/// `serve`'s settings when no subcommand is given: read from the environment alone.
#[derive(Debug, Parser)]
struct ServeFromEnv {
    #[command(flatten)]
    serve: ServeConfig,
}

/// Entry point of the binary: reads `.env`, parses, runs, and turns errors into one line.
pub async fn main() -> ExitCode {
    let dotenv = dotenvy::dotenv();
    let cli = Cli::parse();
    telemetry::init(cli.database.log_format);
    if let Err(e) = &dotenv {
        if !e.not_found() {
            eprintln!("error: .env: {e}");
            return ExitCode::FAILURE;
        }
    }
    let command = match cli.command {
        Some(command) => command,
        None => Command::Serve(Box::new(ServeFromEnv::parse_from(["thryve-bridge"]).serve)),
    };
    match run(command, &cli.database).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}

async fn run(command: Command, database: &DatabaseConfig) -> Result<(), String> {
    match command {
        Command::Serve(config) => {
            let pool = db::pool(
                database.url().map_err(|e| e.to_string())?,
                database.database_max_connections,
                config.ack_deadline(),
            )
            .map_err(|e| format!("DATABASE_URL: {e}"))?;
            let app = Application::build(&config, pool)
                .await
                .map_err(|e| e.to_string())?;
            let shutdown = CancellationToken::new();
            tokio::spawn(stop_on_signal(shutdown.clone()));
            app.run_until_stopped(shutdown)
                .await
                .map_err(|e| e.to_string())
        }
        Command::Migrate => {
            let pool = operator_pool(database)?;
            db::migrate(&pool)
                .await
                .map_err(|e| format!("migrate: {e}"))?;
            let version = db::MIGRATOR.iter().map(|m| m.version).max().unwrap_or(0);
            println!(
                "{}",
                serde_json::json!({ "migrated": true, "version": version })
            );
            Ok(())
        }
        Command::Hmac(HmacCommand::Check {
            body,
            headers,
            header,
            timestamp,
            signature,
            secret,
        }) => {
            hmac_check(
                &body,
                headers.as_deref(),
                &header,
                timestamp,
                signature,
                &secret,
            )
            .await
        }
        Command::Healthcheck { url } => healthcheck(&url).await,
        Command::Ranges(command) => ranges_command(command, operator_pool(database)?).await,
        Command::Inbox(command) => inbox_command(command, operator_pool(database)?).await,
        Command::Stats => {
            let stats = stats::collect(&operator_pool(database)?)
                .await
                .map_err(db_error)?;
            print_json(&stats);
            Ok(())
        }
        Command::Users(UsersCommand::Erase { end_user_id, yes }) => {
            let pool = operator_pool(database)?;
            if !yes {
                let rows = users::count(&pool, &end_user_id).await.map_err(db_error)?;
                print_json(
                    &serde_json::json!({ "end_user_id": end_user_id, "would_delete": rows }),
                );
                return Err(format!(
                    "refusing to erase {end_user_id:?} without --yes (would_delete on stdout is what it would delete)"
                ));
            }
            let mut conn = pool.acquire().await.map_err(db_error)?;
            let rows = users::erase(&mut conn, &end_user_id)
                .await
                .map_err(db_error)?;
            print_json(&serde_json::json!({ "end_user_id": end_user_id, "deleted": rows }));
            Ok(())
        }
        Command::Spool(SpoolCommand::List { dir }) => {
            let listed = spool::list_set_aside(&dir)
                .map_err(|e| format!("SPOOL_DIR: {}: {e}", dir.display()))?;
            print_json(&listed);
            Ok(())
        }
        Command::Spool(SpoolCommand::Reload { dir }) => {
            spool_reload(&dir, operator_pool(database)?).await
        }
        Command::Housekeeping(HousekeepingCommand::Run(retention)) => {
            retention.validate().map_err(|e| e.to_string())?;
            // One pass, so the interval between passes plays no part.
            let report = Housekeeping::new(operator_pool(database)?, retention, Duration::ZERO)
                .run_once(&CancellationToken::new())
                .await
                .map_err(db_error)?;
            print_json(&report);
            Ok(())
        }
    }
}

/// Requeues the set-aside records and loads everything the spool holds, as the server's loader
/// would; prints what is left.
async fn spool_reload(dir: &std::path::Path, pool: PgPool) -> Result<(), String> {
    let metrics = SpoolMetrics::default();
    let (spool, writer) =
        Spool::open(dir, metrics.clone()).map_err(|e| format!("SPOOL_DIR: {e}"))?;
    let requeued = spool
        .requeue_set_aside()
        .map_err(|e| format!("SPOOL_DIR: {}: {e}", dir.display()))?;
    let loader = SpoolLoader::new(spool, pool, Arc::new(watch::channel(0).0));
    let loaded = loader.load_all(&CancellationToken::new()).await;
    drop(loader);
    // The writer thread ends (and the lock goes) with the last handle.
    let _ = tokio::task::spawn_blocking(move || writer.join()).await;
    loaded.map_err(|e| format!("{e}; the records stay in the spool"))?;
    print_json(&serde_json::json!({
        "requeued": requeued,
        "waiting": metrics.waiting.get(),
        "set_aside": metrics.set_aside.get(),
    }));
    Ok(())
}

/// A small pool for a one-shot command.
fn operator_pool(database: &DatabaseConfig) -> Result<PgPool, String> {
    db::pool(
        database.url().map_err(|e| e.to_string())?,
        2,
        Duration::from_secs(30),
    )
    .map_err(|e| format!("DATABASE_URL: {e}"))
}

fn db_error(e: sqlx::Error) -> String {
    format!("database: {e}")
}

fn print_json(value: &impl Serialize) {
    println!(
        "{}",
        serde_json::to_string(value).expect("operator output serialises")
    );
}

async fn inbox_command(command: InboxCommand, pool: PgPool) -> Result<(), String> {
    match command {
        InboxCommand::Show { id } => {
            let row = inbox::get(&pool, id)
                .await
                .map_err(db_error)?
                .ok_or_else(|| format!("inbox row {id}: not found"))?;
            print_json(&row);
            Ok(())
        }
        InboxCommand::List {
            status,
            limit,
            end_user,
        } => {
            let rows = inbox::list(&pool, status, end_user.as_deref(), limit)
                .await
                .map_err(db_error)?;
            print_json(&rows);
            Ok(())
        }
        InboxCommand::Replay { status, id, limit } => {
            let mut conn = pool.acquire().await.map_err(db_error)?;
            let report = inbox::replay(&mut conn, status.map(Status::from), id, limit)
                .await
                .map_err(db_error)?;
            let examined = report.pending.len() + report.quarantined.len() + report.ignored.len();
            print_json(&serde_json::json!({
                "examined": examined,
                "counts": {
                    "pending": report.pending.len(),
                    "quarantined": report.quarantined.len(),
                    "ignored": report.ignored.len(),
                },
                "ids": report,
            }));
            match id {
                Some(id) if examined == 0 => Err(format!(
                    "inbox row {id}: not found, not quarantined or ignored, or held by another replay"
                )),
                _ => Ok(()),
            }
        }
    }
}

async fn ranges_command(command: RangesCommand, pool: PgPool) -> Result<(), String> {
    let held = |range_id: i64, action: &str, ok: bool| {
        println!(
            "{}",
            serde_json::json!({ "range_id": range_id, action: ok })
        );
        if ok {
            Ok(())
        } else {
            Err(format!("range {range_id}: this worker does not hold its claim (lease expired and re-claimed, or never claimed)"))
        }
    };
    match command {
        RangesCommand::Claim {
            worker,
            max,
            lease_secs,
            mode,
        } => {
            let claimed = Consumer::new(pool, worker)
                .claim_for(mode, max, Duration::from_secs(lease_secs))
                .await
                .map_err(db_error)?;
            let out: Vec<serde_json::Value> = claimed
                .iter()
                .map(|range| {
                    let (path, body) = range.thryve_request();
                    let mut value = serde_json::to_value(range).expect("a range serialises");
                    value["thryve_request"] = serde_json::json!({ "path": path, "body": body });
                    value
                })
                .collect();
            println!("{}", serde_json::Value::Array(out));
            Ok(())
        }
        RangesCommand::Complete { range_id, worker } => {
            let ok = Consumer::new(pool, worker)
                .complete(range_id)
                .await
                .map_err(db_error)?;
            held(range_id, "completed", ok)
        }
        RangesCommand::Fail {
            range_id,
            worker,
            error,
            retry_in_secs,
        } => {
            let ok = Consumer::new(pool, worker)
                .fail(range_id, &error, Duration::from_secs(retry_in_secs))
                .await
                .map_err(db_error)?;
            held(range_id, "failed", ok)
        }
        RangesCommand::Extend {
            range_id,
            worker,
            lease_secs,
        } => {
            let ok = Consumer::new(pool, worker)
                .extend_lease(range_id, Duration::from_secs(lease_secs))
                .await
                .map_err(db_error)?;
            held(range_id, "extended", ok)
        }
        RangesCommand::Dirty {
            days,
            since,
            user,
            source,
            granularity,
            types,
        } => {
            let until = chrono::Utc::now();
            let since = match (since, days) {
                (Some(since), _) => since,
                (None, Some(days)) => until.date_naive() - chrono::TimeDelta::days(days.into()),
                (None, None) => return Err("give --days N or --since YYYY-MM-DD".to_owned()),
            };
            let targets = match (user, source) {
                (Some(user), Some(source)) => vec![(user, source)],
                (user, source) => sources::connected(&pool, user.as_deref(), source)
                    .await
                    .map_err(db_error)?,
            };
            let granularities = match granularity {
                GranularityArg::Epoch => vec![ranges::Granularity::Epoch],
                GranularityArg::Daily => vec![ranges::Granularity::Daily],
                GranularityArg::Both => {
                    vec![ranges::Granularity::Epoch, ranges::Granularity::Daily]
                }
            };
            let mut data_type_ids = types;
            data_type_ids.sort_unstable();
            data_type_ids.dedup();
            let refetch = ranges::Refetch {
                targets,
                granularities,
                since,
                until,
                data_type_ids,
            };
            let spans = ranges::enqueue_refetch(&pool, &refetch)
                .await
                .map_err(db_error)?;
            print_json(&serde_json::json!({
                "since": refetch.since,
                "until": refetch.until,
                "targets": refetch.targets.len(),
                "granularities": refetch.granularities.iter().map(|g| g.as_str()).collect::<Vec<_>>(),
                "data_type_ids": refetch.data_type_ids,
                "spans_merged": spans,
            }));
            Ok(())
        }
        RangesCommand::List { status, limit } => {
            let ranges = ranges::list(&pool, status, limit).await.map_err(db_error)?;
            print_json(&ranges);
            Ok(())
        }
    }
}

async fn stop_on_signal(shutdown: CancellationToken) {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = terminate => {},
    }
    tracing::info!("shutdown signal received; finishing in-flight requests");
    shutdown.cancel();
}

/// A minimal HTTP/1.0 GET, because slim runtime images have no curl.
async fn healthcheck(url: &str) -> Result<(), String> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| format!("HEALTHCHECK_URL: {url:?} must start with http://"))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let probe = async {
        let mut stream = tokio::net::TcpStream::connect(authority).await?;
        stream
            .write_all(format!("GET {path} HTTP/1.0\r\nHost: {authority}\r\n\r\n").as_bytes())
            .await?;
        let mut response = String::new();
        stream.read_to_string(&mut response).await?;
        Ok::<_, std::io::Error>(response)
    };
    let response = tokio::time::timeout(Duration::from_secs(5), probe)
        .await
        .map_err(|_| format!("{url}: no answer within 5 s"))?
        .map_err(|e| format!("{url}: {e}"))?;
    let status_line = response.lines().next().unwrap_or_default();
    // The body says why (`/readyz` answers `{"error":"..."}`): print it, so the container's
    // health log (`docker inspect`) shows the reason and not just a status.
    let body = response
        .split_once("\r\n\r\n")
        .map_or("", |(_, body)| body.trim());
    let body = &body[..body.floor_char_boundary(512)];
    if status_line.split_whitespace().nth(1) == Some("200") {
        if !body.is_empty() {
            println!("{body}");
        }
        Ok(())
    } else if body.is_empty() {
        Err(format!("{url}: {status_line}"))
    } else {
        Err(format!("{url}: {status_line}: {body}"))
    }
}

#[derive(Debug, Subcommand)]
pub enum HmacCommand {
    /// Find the WEBHOOK_HMAC_LAYOUT of a captured delivery, given as it came over the wire:
    /// decodes the body as its headers say (base64 text of a zstd frame included), tries every
    /// layout over every form of it, prints {"form":..,"matches":[...],"setting":..,"tried":[...]},
    /// exits 1 if none matches.
    Check {
        /// File holding the body exactly as received (for a data push: the base64 text).
        #[arg(long)]
        body: PathBuf,
        /// File holding the request's header lines, `Name: value` each (as `curl -D` or a
        /// proxy's log writes them; a request or status line is skipped).
        #[arg(long)]
        headers: Option<PathBuf>,
        /// One header line, `Name: value`; may be repeated, and adds to --headers.
        #[arg(long)]
        header: Vec<String>,
        /// The delivery's x-hmac-timestamp header (else taken from the headers).
        #[arg(long)]
        timestamp: Option<String>,
        /// The delivery's x-hmac-signature header, hex (else taken from the headers).
        #[arg(long)]
        signature: Option<String>,
        /// The HMAC secret; prefer the variable, as `ps` shows command lines.
        #[arg(long, env = "WEBHOOK_HMAC_SECRET", hide_env_values = true)]
        secret: Secret,
    },
}

/// Header lines as `curl -D` or a proxy log writes them: `Name: value`, anything else skipped.
fn header_map(lines: impl IntoIterator<Item = String>) -> Result<HeaderMap, String> {
    let mut map = HeaderMap::new();
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let name =
            HeaderName::try_from(name.trim()).map_err(|e| format!("header line {line:?}: {e}"))?;
        let value = HeaderValue::try_from(value.trim())
            .map_err(|e| format!("header line {line:?}: {e}"))?;
        map.append(name, value);
    }
    Ok(map)
}

async fn hmac_check(
    body: &std::path::Path,
    headers_file: Option<&std::path::Path>,
    header_lines: &[String],
    timestamp: Option<String>,
    signature: Option<String>,
    secret: &Secret,
) -> Result<(), String> {
    let raw = tokio::fs::read(body)
        .await
        .map_err(|e| format!("--body {}: {e}", body.display()))?;
    let mut lines = Vec::new();
    if let Some(file) = headers_file {
        let text = tokio::fs::read_to_string(file)
            .await
            .map_err(|e| format!("--headers {}: {e}", file.display()))?;
        lines.extend(text.lines().map(str::to_owned));
    }
    lines.extend(header_lines.iter().cloned());
    let headers = header_map(lines)?;
    let from_headers = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let timestamp = timestamp
        .or_else(|| from_headers(hmac::TIMESTAMP_HEADER))
        .ok_or("no timestamp: pass --timestamp or an x-hmac-timestamp header line")?;
    let signature = signature
        .or_else(|| from_headers(hmac::SIGNATURE_HEADER))
        .ok_or("no signature: pass --signature or an x-hmac-signature header line")?;
    let signature =
        hmac::decode_signature(signature.as_bytes()).map_err(|e| format!("signature: {e}"))?;
    // The body as the server would see it, under a generous limit: this is an operator's file.
    let decoded = crate::http::decode_delivery(&headers, &raw, 1 << 30);
    let forms = match &decoded {
        Ok(decoded) => hmac::Forms {
            wire: &raw,
            frame: Some(decoded.frame(&raw)),
            json: Some(&decoded.content),
        },
        Err(_) => hmac::Forms {
            wire: &raw,
            frame: None,
            json: None,
        },
    };
    // While the secret rotates the variable holds two; a layout matches under either.
    let mut matches: Vec<hmac::Layout> = hmac::secret_list(secret.expose())
        .flat_map(|secret| {
            hmac::matching_layouts(secret.as_bytes(), forms, timestamp.as_bytes(), &signature)
        })
        .collect();
    matches.sort_by_key(|layout| hmac::Layout::ALL.iter().position(|l| l == layout));
    matches.dedup();
    let names = |layouts: &[hmac::Layout]| layouts.iter().map(|l| l.as_str()).collect::<Vec<_>>();
    // Several matches mean the forms were the same bytes (a plain JSON notification): any of
    // them holds for such bodies, and a data push tells which holds for all.
    let setting = match &matches[..] {
        [only] => Some(format!("WEBHOOK_HMAC_LAYOUT={only}")),
        _ => None,
    };
    println!(
        "{}",
        serde_json::json!({
            "form": decoded.as_ref().map(|d| d.form.as_str()).ok(),
            "decode_error": decoded.as_ref().err().map(|e| e.to_string()),
            "matches": names(&matches),
            "setting": setting,
            "tried": names(&hmac::Layout::ALL),
        })
    );
    if matches.is_empty() {
        Err(
            "no layout matches: check the secret, and that the body file holds the bytes as \
             received (for a data push, the base64 text) with its content-encoding header"
                .to_owned(),
        )
    } else {
        Ok(())
    }
}
