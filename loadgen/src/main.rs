//! `thryve-loadgen`: sends a realistic Thryve mix at a bridge, or measures the poller's drain.

use std::{process::ExitCode, time::Duration};

use clap::{Parser, Subcommand};
use thryve_loadgen as loadgen;

#[derive(Parser)]
#[command(
    name = "thryve-loadgen",
    about = "Load generator and drain benchmark for thryve-bridge"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// POST the mix; print throughput, latency and the load generator's own CPU and memory as
    /// JSON; optionally verify against the database.
    Send {
        /// One URL, or several comma-separated (workers spread over them round-robin).
        #[arg(long, default_value = "http://127.0.0.1:8080/webhooks/thryve")]
        url: String,
        /// user:password
        #[arg(long)]
        basic_auth: Option<String>,
        #[arg(long, default_value_t = 32)]
        concurrency: usize,
        #[arg(long, default_value_t = u64::MAX)]
        requests: u64,
        #[arg(long, default_value_t = 10.0)]
        seconds: f64,
        /// Requests per second over all connections (default: as fast as answers come).
        #[arg(long)]
        rate: Option<f64>,
        #[arg(long, default_value_t = 2000)]
        users: u32,
        #[arg(long, default_value_t = 0.05)]
        retry_share: f64,
        /// Share of pushes sent again byte for byte 80 ms later, as real traffic shows.
        #[arg(long, default_value_t = 0.25)]
        twin_share: f64,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Measure 200-to-processed lag (needs DATABASE_URL).
        #[arg(long)]
        lag: bool,
        /// Send only notifications (epoch and daily), no pushes.
        #[arg(long)]
        notifications_only: bool,
        /// Check every 200 in the inbox and covered once the poller is idle (needs DATABASE_URL).
        #[arg(long)]
        verify: bool,
    },
    /// Fill the inbox with N pending rows of the mix, then time pollers draining them.
    Drain {
        #[arg(long, default_value_t = 200_000)]
        rows: usize,
        #[arg(long, default_value_t = 2)]
        pollers: usize,
        #[arg(long, default_value_t = 1000)]
        batch_size: i64,
        #[arg(long, default_value_t = 2000)]
        users: u32,
    },
    /// Time the built-in fetcher over N pending ranges against an in-process fake of Thryve's
    /// data API (writes to DATABASE_URL: use a scratch database).
    Fetch {
        #[arg(long, default_value_t = 2000)]
        ranges: usize,
        #[arg(long, default_value_t = 8)]
        concurrency: usize,
        /// Calls per second cap (FETCHER_RATE_PER_SEC); 0 = no cap.
        #[arg(long, default_value_t = 0.0)]
        rate: f64,
        #[arg(long, default_value_t = 24)]
        values_per_call: usize,
    },
}

#[tokio::main]
async fn main() -> ExitCode {
    let _ = dotenvy::dotenv();
    let cli = Cli::parse();
    let pool = || async {
        let url = std::env::var("DATABASE_URL").map_err(|_| "DATABASE_URL: not set".to_owned())?;
        let options =
            thryve_bridge::db::connect_options(&url).map_err(|e| format!("DATABASE_URL: {e}"))?;
        thryve_bridge::db::pool_options(8)
            .connect_with(options)
            .await
            .map_err(|e| format!("DATABASE_URL: {e}"))
    };
    let result: Result<serde_json::Value, String> = async {
        match cli.command {
            Command::Send {
                url,
                basic_auth,
                concurrency,
                requests,
                seconds,
                rate,
                users,
                retry_share,
                twin_share,
                seed,
                lag,
                verify,
                notifications_only,
            } => {
                let db = if lag || verify {
                    Some(pool().await?)
                } else {
                    None
                };
                let config = loadgen::LoadConfig {
                    url,
                    basic_auth: basic_auth
                        .and_then(|b| b.split_once(':').map(|(u, p)| (u.to_owned(), p.to_owned()))),
                    concurrency,
                    requests,
                    duration: Duration::from_secs_f64(seconds),
                    rate,
                    users,
                    retry_share,
                    twin_share,
                    seed,
                    lag_pool: if lag { db.clone() } else { None },
                    notifications_only,
                };
                let run = loadgen::run(&config).await;
                let mut out = serde_json::to_value(&run.report).map_err(|e| e.to_string())?;
                if let (true, Some(db)) = (verify, db) {
                    let v = loadgen::verify(&db, &run.sent, Duration::from_secs(120))
                        .await
                        .map_err(|e| e.to_string())?;
                    out["verification"] = serde_json::to_value(v).map_err(|e| e.to_string())?;
                }
                Ok(out)
            }
            Command::Drain {
                rows,
                pollers,
                batch_size,
                users,
            } => {
                let db = pool().await?;
                let report = loadgen::drain_benchmark(&db, rows, pollers, batch_size, users)
                    .await
                    .map_err(|e| e.to_string())?;
                serde_json::to_value(report).map_err(|e| e.to_string())
            }
            Command::Fetch {
                ranges,
                concurrency,
                rate,
                values_per_call,
            } => {
                let db = pool().await?;
                let report =
                    loadgen::fetch_benchmark(&db, ranges, concurrency, rate, values_per_call)
                        .await?;
                serde_json::to_value(report).map_err(|e| e.to_string())
            }
        }
    }
    .await;
    match result {
        Ok(out) => {
            println!("{out}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
