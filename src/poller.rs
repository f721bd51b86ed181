//! The poller: turns pending inbox rows into dirty ranges, connection states and values, one
//! batch per transaction, woken by local commits, LISTEN/NOTIFY, or its interval.

use std::{
    collections::HashMap,
    sync::Arc,
    time::{Duration, Instant},
};

use sqlx::{postgres::PgListener, PgPool, Postgres, Transaction};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::{
    db,
    inbox::{self, PendingRow},
    metrics::Metrics,
    ranges::{self, Granularity, MergedSpan},
    sources,
    thryve::{
        self, ConnectionChange, DailyValue, DaySpan, Effects, EpochValue, InstantSpan, Parsed, Span,
    },
    values::{self, Versioned},
};

/// The channel receivers NOTIFY after commits and pollers LISTEN on.
pub const CHANNEL: &str = "thryve_inbox";

/// How the poller runs.
#[derive(Debug, Clone, Copy)]
pub struct PollerConfig {
    /// Most inbox rows per transaction.
    pub batch_size: i64,
    /// Longest sleep between polls when nothing wakes the poller.
    pub interval: Duration,
    /// Also wake on `NOTIFY thryve_inbox` from other processes.
    pub listen: bool,
}

/// What one batch did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BatchReport {
    pub rows: usize,
    pub processed: usize,
    pub quarantined: usize,
    pub ignored: usize,
    pub spans_merged: usize,
}

impl std::ops::AddAssign for BatchReport {
    fn add_assign(&mut self, other: Self) {
        self.rows += other.rows;
        self.processed += other.processed;
        self.quarantined += other.quarantined;
        self.ignored += other.ignored;
        self.spans_merged += other.spans_merged;
    }
}

/// Turns pending inbox rows into their effects. Any number may run against one database.
#[derive(Clone)]
pub struct Poller {
    pool: PgPool,
    config: PollerConfig,
    metrics: Option<Arc<Metrics>>,
}

impl Poller {
    pub fn new(pool: PgPool, config: PollerConfig) -> Self {
        Self {
            pool,
            config,
            metrics: None,
        }
    }

    /// Records batch sizes, durations and errors in `metrics`.
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// Polls until `shutdown`; a batch under way is finished first. `wake` changes when this
    /// process commits a delivery.
    pub async fn run(self, mut wake: watch::Receiver<u64>, shutdown: CancellationToken) {
        let mut listener = None;
        let mut wake_open = true;
        while !shutdown.is_cancelled() {
            wake.borrow_and_update();
            let started = Instant::now();
            let more = match self.poll_once().await {
                Ok(report) => {
                    if report.rows > 0 {
                        tracing::debug!(?report, "poller batch");
                        if let Some(m) = &self.metrics {
                            m.poller_batch_rows.observe(report.rows as f64);
                            m.poller_batch_seconds
                                .observe(started.elapsed().as_secs_f64());
                        }
                    }
                    report.rows as i64 >= self.config.batch_size
                }
                Err(error) => {
                    if let Some(m) = &self.metrics {
                        m.poller_errors.inc();
                    }
                    tracing::warn!(%error, "poller batch failed; retrying after the interval");
                    false
                }
            };
            if more {
                continue;
            }
            if self.config.listen && listener.is_none() {
                listener = self.listen().await;
            }
            tokio::select! {
                _ = shutdown.cancelled() => break,
                changed = wake.changed(), if wake_open => wake_open = changed.is_ok(),
                _ = tokio::time::sleep(self.config.interval) => {}
                notified = recv(&mut listener) => {
                    if notified.is_err() {
                        listener = None;
                    }
                }
            }
        }
        tracing::info!("poller stopped");
    }

    async fn listen(&self) -> Option<PgListener> {
        let mut listener = PgListener::connect_with(&self.pool).await.ok()?;
        listener.listen(CHANNEL).await.ok()?;
        Some(listener)
    }

    /// Processes pending rows until none is left; returns how many rows were handled.
    pub async fn drain(&self) -> sqlx::Result<usize> {
        let mut total = 0;
        loop {
            let report = self.poll_once().await?;
            total += report.rows;
            if report.rows == 0 {
                return Ok(total);
            }
        }
    }

    /// One batch in one transaction. If the batch hits a database error, its rows are retried
    /// one per transaction, so a poison row is quarantined with the error and the rest go on.
    /// An error that is the database's state, not the rows' (see [`is_transient`]), fails the
    /// batch instead: its rows stay pending for the next poll.
    pub async fn poll_once(&self) -> sqlx::Result<BatchReport> {
        let mut tx = self.pool.begin().await?;
        let rows = inbox::claim_pending(&mut *tx, self.config.batch_size).await?;
        if rows.is_empty() {
            tx.commit().await?;
            return Ok(BatchReport::default());
        }
        let plan = plan(&rows);
        match commit_plan(tx, &plan).await? {
            Applied::Committed => Ok(plan.report(rows.len())),
            Applied::Refused(error) => {
                tracing::warn!(%error, rows = rows.len(), "batch failed; retrying its rows one by one");
                let mut report = BatchReport::default();
                for row in &rows {
                    report += self.poll_row(row.id).await?;
                }
                Ok(report)
            }
        }
    }

    async fn poll_row(&self, id: i64) -> sqlx::Result<BatchReport> {
        let mut tx = self.pool.begin().await?;
        let Some(row) = inbox::claim_one(&mut *tx, id).await? else {
            return Ok(BatchReport::default());
        };
        let plan = plan(std::slice::from_ref(&row));
        match commit_plan(tx, &plan).await? {
            Applied::Committed => Ok(plan.report(1)),
            Applied::Refused(error) => {
                tracing::error!(inbox_id = id, %error, "inbox row quarantined: applying it fails");
                let mut tx = self.pool.begin().await?;
                if inbox::claim_one(&mut *tx, id).await?.is_some() {
                    let reason = Some(format!("poller: database error applying this row: {error}"));
                    inbox::finish(&mut *tx, &[id], &["quarantined"], &[reason]).await?;
                }
                tx.commit().await?;
                Ok(BatchReport {
                    rows: 1,
                    quarantined: 1,
                    ..BatchReport::default()
                })
            }
        }
    }
}

/// How [`commit_plan`] ended when neither the connection nor the database's state failed it.
enum Applied {
    Committed,
    /// The database refused a statement (a row's data, not the connection); rolled back.
    Refused(Box<dyn sqlx::error::DatabaseError>),
}

/// Applies `plan` in `tx` and commits it, or rolls back if the database refuses it for the
/// rows' sake; a transient error (see [`is_transient`]) is returned as the error it is.
async fn commit_plan(mut tx: Transaction<'_, Postgres>, plan: &Plan) -> sqlx::Result<Applied> {
    match apply(&mut tx, plan).await {
        Ok(()) => {
            tx.commit().await?;
            Ok(Applied::Committed)
        }
        Err(sqlx::Error::Database(error)) if !is_transient(&*error) => {
            tx.rollback().await?;
            Ok(Applied::Refused(error))
        }
        Err(error) => {
            // Rolled back here, not when dropped: a dropped transaction's rollback runs later
            // on its own, and until then the next poll skips these still-locked rows.
            tx.rollback().await.ok();
            Err(error)
        }
    }
}

/// Errors that say nothing about the rows being applied ([`db::is_transient_code`]):
/// quarantining on these would park healthy rows, every pending row in turn while a disk stays
/// full. A statement timeout (57014) is the exception: a row whose merge always times out
/// would otherwise hold up the queue forever, so it is quarantined like a refused row.
fn is_transient(error: &dyn sqlx::error::DatabaseError) -> bool {
    error
        .code()
        .is_some_and(|code| code != "57014" && db::is_transient_code(&code))
}

async fn recv(listener: &mut Option<PgListener>) -> sqlx::Result<()> {
    match listener {
        Some(l) => l.recv().await.map(drop),
        None => std::future::pending().await,
    }
}

/// Everything one batch writes, worked out without I/O.
#[derive(Debug, Default)]
struct Plan {
    spans: Vec<MergedSpan>,
    connections: Vec<(String, i64, ConnectionChange)>,
    epoch_values: Vec<Versioned<EpochValue>>,
    daily_values: Vec<Versioned<DailyValue>>,
    source_names: Vec<(i32, String, i64)>,
    ids: Vec<i64>,
    statuses: Vec<&'static str>,
    errors: Vec<Option<String>>,
}

impl Plan {
    fn report(&self, rows: usize) -> BatchReport {
        let count = |s: &str| self.statuses.iter().filter(|x| **x == s).count();
        BatchReport {
            rows,
            processed: count("processed"),
            quarantined: count("quarantined"),
            ignored: count("ignored"),
            spans_merged: self.spans.len(),
        }
    }
}

fn plan(rows: &[PendingRow]) -> Plan {
    let mut plan = Plan::default();
    let mut spans = Vec::new();
    let mut connections: HashMap<(String, i32), (i64, ConnectionChange)> = HashMap::new();
    let mut source_names: HashMap<i32, (String, i64)> = HashMap::new();
    for row in rows {
        plan.ids.push(row.id);
        let (user, effects) = match row_effects(row) {
            Ok(found) => found,
            Err(RowProblem::Invalid(reason)) => {
                plan.statuses.push("quarantined");
                plan.errors.push(Some(reason));
                continue;
            }
            Err(RowProblem::Unknown) => {
                plan.statuses.push("ignored");
                plan.errors.push(None);
                continue;
            }
        };
        plan.statuses.push("processed");
        plan.errors.push(None);
        spans.extend(effects.spans.into_iter().map(|s| (user.clone(), s, true)));
        spans.extend(
            effects
                .stored_spans
                .into_iter()
                .map(|s| (user.clone(), s, false)),
        );
        for change in effects.connections {
            let key = (user.clone(), change.data_source_id);
            let newer = connections
                .get(&key)
                .is_none_or(|(id, old)| (change.at, row.id) > (old.at, *id));
            if newer {
                connections.insert(key, (row.id, change));
            }
        }
        // Rows come in id order, so a later insert is the newer delivery's name.
        for (id, name) in effects.source_names {
            source_names.insert(id, (name, row.id));
        }
        // An `update` push may move a value's end; `values` keeps the newest of each key.
        let update = row
            .event_type
            .as_deref()
            .is_some_and(|t| t.ends_with(".update"));
        let versioned = |value| Versioned {
            end_user_id: user.clone(),
            inbox_id: row.id,
            version_at: row.version_at,
            update,
            value,
        };
        plan.epoch_values
            .extend(effects.epoch_values.into_iter().map(versioned));
        let versioned = |value| Versioned {
            end_user_id: user.clone(),
            inbox_id: row.id,
            version_at: row.version_at,
            update,
            value,
        };
        plan.daily_values
            .extend(effects.daily_values.into_iter().map(versioned));
    }
    plan.spans = ranges::coalesce_marked(spans);
    plan.connections = connections
        .into_iter()
        .map(|((u, _), (id, c))| (u, id, c))
        .collect();
    plan.source_names = source_names
        .into_iter()
        .map(|(id, (name, inbox_id))| (id, name, inbox_id))
        .collect();
    plan
}

enum RowProblem {
    Invalid(String),
    Unknown,
}

/// A row's effects: from its typed columns when they describe the whole event, else by
/// parsing its payload with today's parser.
fn row_effects(row: &PendingRow) -> Result<(String, Effects), RowProblem> {
    if let Some(data_source_id) = row.data_source_id {
        let user = row
            .end_user_id
            .clone()
            .ok_or_else(|| RowProblem::Invalid("end_user_id: missing".to_owned()))?;
        let types = || row.data_type_ids.clone().unwrap_or_default();
        let effects = match (row.connected, row.event_time, row.start_time, row.end_time, row.start_day, row.end_day) {
            (Some(connected), at, ..) => Effects {
                connections: vec![ConnectionChange {
                    data_source_id,
                    connected,
                    at,
                }],
                ..Effects::default()
            },
            (None, None, Some(start), Some(end), None, None) if start <= end => Effects {
                spans: vec![Span::Epoch(InstantSpan {
                    data_source_id,
                    data_type_ids: types(),
                    start,
                    end,
                })],
                ..Effects::default()
            },
            (None, None, None, None, Some(start), Some(end)) if start <= end => Effects {
                spans: vec![Span::Daily(DaySpan {
                    data_source_id,
                    data_type_ids: types(),
                    start,
                    end,
                })],
                ..Effects::default()
            },
            _ => {
                return Err(RowProblem::Invalid(
                    "typed columns: need connected+event_time, start_time<=end_time, or start_day<=end_day".to_owned(),
                ))
            }
        };
        return Ok((user, effects));
    }
    let Some(serde_json::Value::Object(body)) = &row.payload else {
        return Err(RowProblem::Invalid("payload: not a JSON object".to_owned()));
    };
    match thryve::parse(body) {
        Parsed::Valid(n) => {
            let effects = n.effects();
            Ok((n.end_user_id, effects))
        }
        Parsed::Invalid { error, .. } => Err(RowProblem::Invalid(error.to_string())),
        Parsed::Unknown { .. } => Err(RowProblem::Unknown),
    }
}

/// Writes a plan. Every transaction takes its locks in the same phases (connections, source
/// names, inbox, range keys, then values), each phase in sorted order, so concurrent pollers
/// and consumers never wait on each other in a cycle. The range keys' advisory locks come late
/// so another poller that needs one of the same keys waits only for the merge, the values and
/// the commit. They also cover the epoch values' (user, source): an update may replace a
/// stored value of another key, which no unique index serialises, so two pollers must not
/// apply one user's values of one source at once.
async fn apply(tx: &mut Transaction<'_, Postgres>, plan: &Plan) -> sqlx::Result<()> {
    sources::apply(&mut **tx, &plan.connections).await?;
    values::apply_source_names(&mut **tx, &plan.source_names).await?;
    inbox::finish(&mut **tx, &plan.ids, &plan.statuses, &plan.errors).await?;
    let keys = plan
        .spans
        .iter()
        .map(|s| (s.end_user_id.as_str(), s.data_source_id, s.granularity()))
        .chain(plan.epoch_values.iter().map(|v| {
            (
                v.end_user_id.as_str(),
                v.value.data_source_id,
                Granularity::Epoch,
            )
        }));
    ranges::lock_keys(&mut **tx, keys).await?;
    ranges::merge_spans(&mut **tx, &plan.spans).await?;
    values::apply_epoch(tx, &plan.epoch_values).await?;
    values::apply_daily(&mut **tx, &plan.daily_values).await?;
    Ok(())
}
