//! Operator figures over every table (counts, ages, time since the last delivery), read in
//! one statement through indexes, for `thryve-bridge stats` and the metrics endpoint.

use std::collections::BTreeMap;

use serde::Serialize;
use sqlx::PgExecutor;

/// How many rows a set holds and how old its oldest and newest are, in seconds before now
/// (`null` when the set is empty).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Figures {
    pub count: i64,
    pub oldest_age_secs: Option<f64>,
    pub newest_age_secs: Option<f64>,
}

/// A table too large to count on every call: the planner's row estimate (`pg_class.reltuples`,
/// refreshed by autovacuum and ANALYZE), or before the table was first analysed the live rows
/// the statistics system counts as they are written (`pg_stat_all_tables.n_live_tup`, which
/// lags a commit by up to a second).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Estimate {
    pub rows_estimate: Option<i64>,
}

/// The figures `thryve-bridge stats` prints. All ages are seconds before the statement's
/// `now()`, and all come from one snapshot.
///
/// - `inbox`: by status (`pending`, `processed`, `quarantined`, `ignored`; every key always
///   present), counts and ages on `last_received_at` (the latest delivery of the row's content).
/// - `dirty_ranges`: by status (`pending`, `claimed`, `done`, `failed`), ages on
///   `first_dirtied_at` (when the work first appeared).
/// - `source_connections`: count and ages on `updated_at`.
/// - `epoch_values`, `daily_values`: estimates only, since these tables grow without bound and
///   have no index on time that would not slow their writes.
/// - `oldest_pending_inbox_age_secs`: how long the oldest pending inbox row has waited for the
///   poller; `oldest_pending_range_age_secs`: for a worker.
/// - `fetchers`: each fetcher process, from its own reports (`thryve.fetchers`): paused or
///   not, ranges done/retried/failed and values written since it started.
/// - `seconds_since_last_delivery`: since the newest `last_received_at` of any inbox row, so an
///   operator notices when Thryve silently stops sending (`null` when the inbox is empty).
///
/// Cost: one index-only scan per status (processed inbox rows through their `processed_at`
/// index, which carries `last_received_at`), so the busy statuses cost what retention lets
/// them hold; pending inbox rows are counted through `inbox_pending_idx` and their ages read
/// from the table, a cost only while a backlog waits; `source_connections` (a row per user and
/// source) is read whole.
///
/// ```no_run
/// # async fn show(pool: sqlx::PgPool) -> sqlx::Result<()> {
/// let stats = thryve_bridge::stats::collect(&pool).await?;
/// println!("{} pending", stats.inbox["pending"].count);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Stats {
    pub inbox: BTreeMap<String, Figures>,
    pub dirty_ranges: BTreeMap<String, Figures>,
    pub source_connections: Figures,
    pub epoch_values: Estimate,
    pub daily_values: Estimate,
    pub oldest_pending_inbox_age_secs: Option<f64>,
    pub oldest_pending_range_age_secs: Option<f64>,
    pub seconds_since_last_delivery: Option<f64>,
    /// Each fetcher process (`thryve.fetchers`), by worker name.
    pub fetchers: Vec<FetcherFigures>,
}

/// One fetcher process as it last reported itself (every 5 s while it runs).
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
pub struct FetcherFigures {
    pub worker: String,
    /// Seconds since its last report: more than a few means it stopped.
    pub seen_age_secs: f64,
    pub started_at: chrono::DateTime<chrono::Utc>,
    /// Why fetching is paused (Thryve's 401), `null` while it runs.
    pub paused_reason: Option<String>,
    pub ranges_done: i64,
    pub ranges_retried: i64,
    pub ranges_failed: i64,
    pub values_written: i64,
    pub last_done_age_secs: Option<f64>,
}

#[derive(sqlx::FromRow)]
struct Line {
    relation: String,
    status: Option<String>,
    count: Option<i64>,
    oldest_age_secs: Option<f64>,
    newest_age_secs: Option<f64>,
}

/// One `SELECT ... UNION ALL` per status of `table`: the status is a literal in each, so the
/// planner can use a partial index that holds only that status (see migration
/// 20261127000004: `inbox_pending_idx`, `inbox_processed_idx`, `inbox_parked_received_idx`;
/// `dirty_ranges_pending_order_idx`, `dirty_ranges_settled_dirtied_idx`).
fn per_status(table: &str, time_column: &str, statuses: &[&str]) -> String {
    statuses
        .iter()
        .map(|status| {
            format!(
                "SELECT '{table}' AS relation, '{status}' AS status, count(*) AS count,
                        extract(epoch FROM now() - min({time_column}))::float8 AS oldest_age_secs,
                        extract(epoch FROM now() - max({time_column}))::float8 AS newest_age_secs
                 FROM thryve.{table} WHERE status = '{status}'
                 UNION ALL\n"
            )
        })
        .collect()
}

/// Reads every figure: one statement over the tables, one over `thryve.fetchers`.
pub async fn collect(executor: impl PgExecutor<'_> + Copy) -> sqlx::Result<Stats> {
    let mut sql = per_status(
        "inbox",
        "last_received_at",
        &["pending", "processed", "quarantined", "ignored"],
    );
    sql += &per_status(
        "dirty_ranges",
        "first_dirtied_at",
        &["pending", "claimed", "done", "failed"],
    );
    sql += "SELECT 'source_connections', NULL, count(*),
                extract(epoch FROM now() - min(updated_at))::float8,
                extract(epoch FROM now() - max(updated_at))::float8
         FROM thryve.source_connections
         UNION ALL
         SELECT c.relname::text, NULL,
                CASE WHEN c.reltuples >= 0 THEN c.reltuples::bigint ELSE s.n_live_tup END,
                NULL, NULL
         FROM pg_class c LEFT JOIN pg_stat_all_tables s ON s.relid = c.oid
         WHERE c.oid IN ('thryve.epoch_values'::regclass, 'thryve.daily_values'::regclass)";
    let lines: Vec<Line> = sqlx::query_as(&sql).fetch_all(executor).await?;

    let mut stats = Stats::default();
    for line in lines {
        let figures = Figures {
            count: line.count.unwrap_or(0),
            oldest_age_secs: line.oldest_age_secs,
            newest_age_secs: line.newest_age_secs,
        };
        match (line.relation.as_str(), line.status) {
            ("inbox", Some(status)) => {
                stats.inbox.insert(status, figures);
            }
            ("dirty_ranges", Some(status)) => {
                stats.dirty_ranges.insert(status, figures);
            }
            ("source_connections", _) => stats.source_connections = figures,
            ("epoch_values", _) => stats.epoch_values.rows_estimate = line.count,
            ("daily_values", _) => stats.daily_values.rows_estimate = line.count,
            _ => {}
        }
    }
    stats.fetchers = sqlx::query_as(
        "SELECT worker, extract(epoch FROM now() - seen_at)::float8 AS seen_age_secs, started_at,
                paused_reason, ranges_done, ranges_retried, ranges_failed, values_written,
                extract(epoch FROM now() - last_done_at)::float8 AS last_done_age_secs
         FROM thryve.fetchers ORDER BY worker",
    )
    .fetch_all(executor)
    .await?;
    stats.oldest_pending_inbox_age_secs =
        stats.inbox.get("pending").and_then(|f| f.oldest_age_secs);
    stats.oldest_pending_range_age_secs = stats
        .dirty_ranges
        .get("pending")
        .and_then(|f| f.oldest_age_secs);
    stats.seconds_since_last_delivery = stats
        .inbox
        .values()
        .filter_map(|f| f.newest_age_secs)
        .reduce(f64::min);
    Ok(stats)
}
