//! `ranges ...`: claim, complete, fail, extend, dirty and list dirty ranges by hand (JSON out).

use std::time::Duration;

use clap::{Subcommand, ValueEnum};
use sqlx::PgPool;

use super::common::{print_json, CliError};
use crate::{
    ranges::{self, ClaimMode, Consumer, RangeStatus},
    sources,
};

#[derive(Debug, Subcommand)]
pub enum RangesCommand {
    /// Claim up to --max ranges, oldest first; prints them with the Thryve call for each.
    Claim {
        /// This worker's name, recorded in claimed_by.
        #[arg(long)]
        worker: String,
        /// Most ranges to claim.
        #[arg(long, default_value_t = 10)]
        max: i32,
        /// How long the claim holds before another worker may take the range.
        #[arg(long, default_value_t = 300)]
        lease_secs: u64,
        /// fetch: only ranges that need a fetch from Thryve; all: push-only ones too.
        #[arg(long, value_enum, default_value_t = ClaimMode::Fetch)]
        mode: ClaimMode,
    },
    /// Mark a claimed range done (exit 1 if the worker no longer holds it).
    Complete {
        range_id: i64,
        /// The worker that claimed it.
        #[arg(long)]
        worker: String,
        /// The range's `claim_token` as `ranges claim` printed it: only that claim may finish
        /// it. Without it, any claim of --worker may (a person at a shell is one worker).
        #[arg(long)]
        token: Option<uuid::Uuid>,
    },
    /// Record a failed attempt: retried after --retry-in-secs, or failed when out of attempts.
    Fail {
        range_id: i64,
        /// The worker that claimed it.
        #[arg(long)]
        worker: String,
        /// Why, kept in last_error.
        #[arg(long)]
        error: String,
        /// When the range is offered again.
        #[arg(long, default_value_t = 60)]
        retry_in_secs: u64,
        /// As for `complete`.
        #[arg(long)]
        token: Option<uuid::Uuid>,
    },
    /// Extend a claimed range's lease (exit 1 if the worker no longer holds it).
    Extend {
        range_id: i64,
        /// The worker that claimed it.
        #[arg(long)]
        worker: String,
        /// The new lease, from now.
        #[arg(long, default_value_t = 300)]
        lease_secs: u64,
        /// As for `complete`.
        #[arg(long)]
        token: Option<uuid::Uuid>,
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

pub(super) async fn run(command: RangesCommand, pool: PgPool) -> Result<(), CliError> {
    match command {
        RangesCommand::Claim {
            worker,
            max,
            lease_secs,
            mode,
        } => claim(pool, worker, mode, max, Duration::from_secs(lease_secs)).await,
        RangesCommand::Complete {
            range_id,
            worker,
            token,
        } => {
            let ok = ranges::complete(&pool, range_id, &worker, token).await?;
            held(range_id, "completed", ok)
        }
        RangesCommand::Fail {
            range_id,
            worker,
            error,
            retry_in_secs,
            token,
        } => {
            let retry_in = Duration::from_secs(retry_in_secs);
            let ok = ranges::fail(&pool, range_id, &worker, &error, retry_in, token).await?;
            held(range_id, "failed", ok)
        }
        RangesCommand::Extend {
            range_id,
            worker,
            lease_secs,
            token,
        } => {
            let lease = Duration::from_secs(lease_secs);
            let ok = ranges::extend(&pool, range_id, &worker, lease, token).await?;
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
                (None, None) => return Err("give --days N or --since YYYY-MM-DD".into()),
            };
            let targets = match (user, source) {
                (Some(user), Some(source)) => vec![(user, source)],
                (user, source) => sources::connected(&pool, user.as_deref(), source).await?,
            };
            let mut data_type_ids = types;
            data_type_ids.sort_unstable();
            data_type_ids.dedup();
            let refetch = ranges::Refetch {
                targets,
                granularities: granularity.granularities(),
                since,
                until,
                data_type_ids,
            };
            dirty(&pool, &refetch).await
        }
        RangesCommand::List { status, limit } => {
            let ranges = ranges::list(&pool, status, limit).await?;
            print_json(&ranges);
            Ok(())
        }
    }
}

impl GranularityArg {
    fn granularities(self) -> Vec<ranges::Granularity> {
        match self {
            GranularityArg::Epoch => vec![ranges::Granularity::Epoch],
            GranularityArg::Daily => vec![ranges::Granularity::Daily],
            GranularityArg::Both => vec![ranges::Granularity::Epoch, ranges::Granularity::Daily],
        }
    }
}

/// Prints the claimed ranges, each with the Thryve call that re-fetches it.
async fn claim(
    pool: PgPool,
    worker: String,
    mode: ClaimMode,
    max: i32,
    lease: Duration,
) -> Result<(), CliError> {
    let claimed = Consumer::new(pool, worker)
        .claim_for(mode, max, lease)
        .await?;
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

/// `{"range_id": .., action: ok}`, and exit 1 when the claim was not held.
fn held(range_id: i64, action: &str, ok: bool) -> Result<(), CliError> {
    println!(
        "{}",
        serde_json::json!({ "range_id": range_id, action: ok })
    );
    if ok {
        Ok(())
    } else {
        Err(CliError::Failed(format!("range {range_id}: this worker does not hold its claim (lease expired and re-claimed, or never claimed)")))
    }
}

/// Enqueues `refetch` and prints what it asked for.
async fn dirty(pool: &PgPool, refetch: &ranges::Refetch) -> Result<(), CliError> {
    let spans = ranges::enqueue_refetch(pool, refetch).await?;
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
