//! The poller: turns pending inbox rows into dirty ranges, connection states and values, one
//! batch per transaction, woken by local commits, LISTEN/NOTIFY, or its interval.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use sqlx::{PgPool, Postgres, Transaction};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::{
    config::PollerConfig,
    db::{self, Failure, Phase},
    inbox::{self, PendingRow, Status},
    metrics::Metrics,
    ranges::{self, Granularity, MergedSpan},
    service::{Backoff, Pass, Service, Services, Wake},
    sources,
    thryve::{
        self, ConnectionChange, DailyValue, DaySpan, Effects, EpochValue, InstantSpan, Parsed, Span,
    },
    values::{self, Origin, Versioned},
};

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

/// How often a row may time out applied on its own (not waiting for a lock) before it is set
/// aside: a few tries, so one slow row cannot hold the queue, and more than one, so a moment
/// of load does not park a healthy row.
pub const MAX_ROW_TIMEOUTS: u32 = 3;

/// The longest pause between polls while they keep failing (an outage, a lock held).
const BACKOFF_MAX: Duration = Duration::from_secs(30);

/// Turns pending inbox rows into their effects. Any number may run against one database; as
/// a [`Service`], a batch per pass, woken by local commits, `NOTIFY thryve_inbox` or its
/// interval.
#[derive(Clone)]
pub struct Poller {
    pool: PgPool,
    config: PollerConfig,
    metrics: Option<Arc<Metrics>>,
    /// Statement timeouts per inbox row applied on its own, by this poller. Kept in memory:
    /// a restart only grants a slow row a few more tries.
    timeouts: Arc<Mutex<HashMap<i64, u32>>>,
}

impl Service for Poller {
    const NAME: &'static str = "poller";
    const FAILED: &'static str = "poller batch failed; its rows stay pending and are retried";
    type Error = sqlx::Error;

    /// One batch; more at once when it was full.
    async fn run_once(&mut self, _: &CancellationToken) -> sqlx::Result<Pass> {
        let started = Instant::now();
        let report = match self.poll_once().await {
            Ok(report) => report,
            Err(error) => {
                if let Some(m) = &self.metrics {
                    m.poller.errors.inc();
                }
                return Err(error);
            }
        };
        if report.rows > 0 {
            tracing::debug!(?report, "poller batch");
            if let Some(m) = &self.metrics {
                m.poller.batch_rows.observe(report.rows as f64);
                m.poller
                    .batch_seconds
                    .observe(started.elapsed().as_secs_f64());
            }
        }
        Ok(if report.rows as i64 >= self.config.poll_batch_size {
            Pass::More
        } else {
            Pass::Idle
        })
    }

    /// While polls keep failing: the interval doubled, doubling up to [`BACKOFF_MAX`] (never
    /// shorter than the interval).
    fn backoff(&self) -> Backoff {
        let interval = self.config.interval();
        Backoff::new(interval.saturating_mul(2), BACKOFF_MAX.max(interval))
    }
}

impl Poller {
    pub fn new(pool: PgPool, config: &PollerConfig) -> Self {
        Self {
            pool,
            config: config.clone(),
            metrics: None,
            timeouts: Arc::default(),
        }
    }

    /// Records batch sizes, durations and errors in `metrics`.
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// Starts `POLL_CONCURRENCY` pollers in `services`: while one batch waits on the database
    /// for its statements or its commit, another is parsing, so both of the database's cores
    /// work. Each wakes on its interval, on `commits` (this process's inbox writes) and, with
    /// `POLL_NOTIFY`, on `NOTIFY thryve_inbox` (one LISTEN for all of them).
    pub fn start(self, services: &mut Services, commits: watch::Receiver<u64>) {
        let mut wake = Wake::every(self.config.interval()).or(commits);
        if self.config.poll_notify {
            wake = wake.or(services.listen(self.pool.clone(), db::INBOX_CHANNEL));
        }
        for _ in 0..self.config.poll_concurrency {
            services.start(self.clone(), wake.clone());
        }
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

    /// One batch in one transaction. If the database refuses the batch, or it runs out of
    /// time, its rows are retried one per transaction, so a poison row is quarantined with the
    /// error and the rest go on. An outage ([`db::classify`]) fails the batch instead: its
    /// rows stay pending for the next poll.
    pub async fn poll_once(&self) -> sqlx::Result<BatchReport> {
        let mut tx = self.pool.begin().await?;
        let rows = inbox::claim_pending(&mut tx, self.limits()).await?;
        if rows.is_empty() {
            tx.commit().await?;
            return Ok(BatchReport::default());
        }
        let plan = plan(&rows, self.config.max_values_per_delivery);
        match commit_plan(tx, &plan).await? {
            Applied::Committed => Ok(plan.report(rows.len())),
            Applied::Refused(error) | Applied::TimedOut(error) => {
                tracing::warn!(%error, rows = rows.len(), "batch failed; retrying its rows one by one");
                let mut report = BatchReport::default();
                for row in &rows {
                    report += self.poll_row(row.id).await?;
                }
                Ok(report)
            }
        }
    }

    /// One row in a transaction of its own, where waiting for a lock ends before the statement
    /// timeout would (see `inbox::bound_lock_waits`): a lock wait then fails the poll (the row
    /// stays pending, not counted), while a statement timeout is this row's own slowness.
    async fn poll_row(&self, id: i64) -> sqlx::Result<BatchReport> {
        let mut tx = self.pool.begin().await?;
        inbox::bound_lock_waits(&mut *tx).await?;
        let max = self.config.max_values_per_delivery;
        let Some(row) = inbox::claim_one(&mut tx, id, max).await? else {
            return Ok(BatchReport::default());
        };
        let plan = plan(std::slice::from_ref(&row), max);
        let reason = match commit_plan(tx, &plan).await? {
            Applied::Committed => {
                self.timeouts().remove(&id);
                return Ok(plan.report(1));
            }
            Applied::Refused(error) => {
                tracing::error!(inbox_id = id, %error, "inbox row quarantined: applying it fails");
                format!("poller: database error applying this row: {error}")
            }
            Applied::TimedOut(error) => {
                let tries = {
                    let mut timeouts = self.timeouts();
                    let tries = timeouts.entry(id).or_insert(0);
                    *tries += 1;
                    *tries
                };
                if tries < MAX_ROW_TIMEOUTS {
                    tracing::warn!(inbox_id = id, tries, %error, "inbox row timed out applied on its own; it stays pending");
                    return Ok(BatchReport::default());
                }
                self.timeouts().remove(&id);
                tracing::error!(inbox_id = id, tries, %error, "inbox row set aside: it keeps timing out on its own");
                format!(
                    "poller: set aside after {tries} statement timeouts applying this row on its own \
                     (not waiting for a lock); the data may be fine, replay it once the database \
                     is faster: {error}"
                )
            }
        };
        let mut tx = self.pool.begin().await?;
        if inbox::claim_one(&mut tx, id, 0).await?.is_some() {
            inbox::finish(&mut *tx, &[id], &[Status::Quarantined], &[Some(reason)]).await?;
        }
        tx.commit().await?;
        Ok(BatchReport {
            rows: 1,
            quarantined: 1,
            ..BatchReport::default()
        })
    }

    /// A batch's rows and values (`POLL_BATCH_SIZE`, `POLL_BATCH_VALUES`); rows over
    /// `MAX_VALUES_PER_DELIVERY` come without their payload.
    fn limits(&self) -> inbox::ClaimLimits {
        inbox::ClaimLimits {
            rows: self.config.poll_batch_size,
            values: self.config.poll_batch_values,
            values_per_row: self.config.max_values_per_delivery,
        }
    }

    fn timeouts(&self) -> std::sync::MutexGuard<'_, HashMap<i64, u32>> {
        // The map is valid whatever a panicking holder was doing.
        self.timeouts.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// How [`commit_plan`] ended when it was no outage.
enum Applied {
    Committed,
    /// The database refused a statement (a row's data, not the connection); rolled back.
    Refused(sqlx::Error),
    /// A statement ran out of time ([`db::is_timeout`]); rolled back.
    TimedOut(sqlx::Error),
}

/// Applies `plan` in `tx` and commits it, or rolls back if the database refuses it for the
/// rows' sake or it times out; any other outage ([`db::classify`]) is returned as the error
/// it is, and the rows stay pending.
async fn commit_plan(mut tx: Transaction<'_, Postgres>, plan: &Plan) -> sqlx::Result<Applied> {
    match apply(&mut tx, plan).await {
        Ok(()) => {
            tx.commit().await?;
            Ok(Applied::Committed)
        }
        Err(error) if db::is_timeout(&error) => {
            tx.rollback().await?;
            Ok(Applied::TimedOut(error))
        }
        // Only what the database itself answered can be about the rows.
        Err(error @ sqlx::Error::Database(_))
            if db::classify(Phase::Statement, &error) == Failure::Refused =>
        {
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

/// Everything one batch writes, worked out without I/O.
#[derive(Debug, Default)]
struct Plan {
    spans: Vec<MergedSpan>,
    connections: Vec<(String, i64, ConnectionChange)>,
    epoch_values: Vec<Versioned<EpochValue>>,
    daily_values: Vec<Versioned<DailyValue>>,
    source_names: Vec<(i32, String, i64)>,
    ids: Vec<i64>,
    statuses: Vec<Status>,
    errors: Vec<Option<String>>,
}

impl Plan {
    fn report(&self, rows: usize) -> BatchReport {
        let count = |s: Status| self.statuses.iter().filter(|x| **x == s).count();
        BatchReport {
            rows,
            processed: count(Status::Processed),
            quarantined: count(Status::Quarantined),
            ignored: count(Status::Ignored),
            spans_merged: self.spans.len(),
        }
    }
}

/// What `rows` write. A row with more than `max_values` values (`MAX_VALUES_PER_DELIVERY`)
/// is quarantined unread: its payload was not even fetched.
fn plan(rows: &[PendingRow], max_values: i64) -> Plan {
    let mut plan = Plan::default();
    let mut spans = Vec::new();
    let mut connections: HashMap<(String, i32), (i64, ConnectionChange)> = HashMap::new();
    let mut source_names: HashMap<i32, (String, i64)> = HashMap::new();
    for row in rows {
        plan.ids.push(row.id);
        if row.value_count > max_values {
            tracing::warn!(
                inbox_id = row.id,
                values = row.value_count,
                max_values,
                "inbox row quarantined: more values than MAX_VALUES_PER_DELIVERY"
            );
            plan.statuses.push(Status::Quarantined);
            plan.errors.push(Some(format!(
                "poller: {} values, more than MAX_VALUES_PER_DELIVERY ({max_values}); raise it \
                 and replay this row (thryve-bridge inbox replay --id {})",
                row.value_count, row.id
            )));
            continue;
        }
        let (user, effects) = match row_effects(row) {
            Ok(found) => found,
            Err(RowProblem::Invalid(reason)) => {
                plan.statuses.push(Status::Quarantined);
                plan.errors.push(Some(reason));
                continue;
            }
            Err(RowProblem::Unknown) => {
                plan.statuses.push(Status::Ignored);
                plan.errors.push(None);
                continue;
            }
        };
        plan.statuses.push(Status::Processed);
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
        plan.epoch_values.extend(
            effects
                .epoch_values
                .into_iter()
                .map(|v| versioned(&user, row, update, v)),
        );
        plan.daily_values.extend(
            effects
                .daily_values
                .into_iter()
                .map(|v| versioned(&user, row, update, v)),
        );
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

/// A value of `row`'s, with what orders it against other versions of its key.
fn versioned<V>(user: &str, row: &PendingRow, update: bool, value: V) -> Versioned<V> {
    Versioned {
        end_user_id: user.to_owned(),
        origin: Origin::Delivery(row.id),
        version_at: row.version_at,
        update,
        value,
    }
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

/// Writes a plan. Every transaction takes its locks in the same phases (connections, range
/// keys, values, source names, then the inbox rows), each phase in sorted order, so
/// concurrent pollers and consumers never wait on each other in a cycle. The inbox rows come
/// last and in fingerprint order, as the receiver locks them: a receiver counting a duplicate
/// of a row in this batch waits only for this commit, not for the batch. The range keys'
/// advisory locks come late so another poller that needs one of the same keys waits only for
/// the merge, the values and the commit (pollers claim disjoint users, so that is rare). They
/// also cover the epoch values' (user, source): an update may replace a stored value of
/// another key, which no unique index serialises, so two pollers must not apply one user's
/// values of one source at once.
async fn apply(tx: &mut Transaction<'_, Postgres>, plan: &Plan) -> sqlx::Result<()> {
    sources::apply(&mut **tx, &plan.connections).await?;
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
    values::apply_source_names(&mut **tx, &plan.source_names).await?;
    inbox::finish(&mut **tx, &plan.ids, &plan.statuses, &plan.errors).await?;
    Ok(())
}
