//! The built-in fetcher: claims dirty ranges like any worker, calls Thryve's data API for each,
//! and commits the values with the range's completion, so a crash re-fetches and never
//! half-writes.

mod client;

pub use client::{CallError, ThryveClient};

use std::{
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use chrono::{DateTime, NaiveDate, TimeDelta, Utc};
use sqlx::PgPool;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::{
    config::FetcherConfig,
    metrics::{FetchOutcomeLabels, Metrics},
    ranges::{self, Consumer, DirtyRange},
    service::{self, Backoff, Pass, Service, Services, Wake},
    thryve::{
        api::{self, TypeName},
        DailyValue, EpochValue,
    },
    values,
};

/// Longest span of one epoch call: Thryve answers at most 30 days per call.
pub const MAX_EPOCH_SPAN: TimeDelta = TimeDelta::days(30);
/// Most days of one daily call (a year, as Thryve's clients use).
pub const MAX_DAILY_DAYS: i64 = 365;

/// Whether fetching is paused by a 401 (shared with `/readyz`), and what this process has
/// done since it started (written to `thryve.fetchers` for `stats`).
#[derive(Debug)]
pub struct FetcherStatus {
    paused: AtomicBool,
    /// Bumped when a pause starts or ends, so that the status row says so at once, as
    /// `/readyz` does, not at the next periodic report.
    pause_changed: tokio::sync::watch::Sender<u64>,
    resume_at: Mutex<Option<Instant>>,
    reason: Mutex<Option<String>>,
    done: AtomicU64,
    retried: AtomicU64,
    failed: AtomicU64,
    values_written: AtomicU64,
    last_done_at: Mutex<Option<DateTime<Utc>>>,
}

impl Default for FetcherStatus {
    fn default() -> Self {
        Self {
            paused: AtomicBool::default(),
            pause_changed: tokio::sync::watch::Sender::new(0),
            resume_at: Mutex::default(),
            reason: Mutex::default(),
            done: AtomicU64::default(),
            retried: AtomicU64::default(),
            failed: AtomicU64::default(),
            values_written: AtomicU64::default(),
            last_done_at: Mutex::default(),
        }
    }
}

impl FetcherStatus {
    fn count(&self, outcome: Outcome) {
        match outcome {
            Outcome::Done { values_written } => {
                self.done.fetch_add(1, Ordering::Relaxed);
                self.values_written
                    .fetch_add(values_written, Ordering::Relaxed);
                *self.last_done_at.lock().expect("not poisoned") = Some(Utc::now());
            }
            Outcome::Retry => {
                self.retried.fetch_add(1, Ordering::Relaxed);
            }
            Outcome::Failed => {
                self.failed.fetch_add(1, Ordering::Relaxed);
            }
            Outcome::Lost => {}
        }
    }

    /// Writes this process's row of `thryve.fetchers`.
    async fn report(
        &self,
        pool: &PgPool,
        worker: &str,
        started_at: DateTime<Utc>,
    ) -> sqlx::Result<()> {
        let n = |c: &AtomicU64| c.load(Ordering::Relaxed) as i64;
        let last_done_at = *self.last_done_at.lock().expect("not poisoned");
        sqlx::query(
            "INSERT INTO thryve.fetchers AS f (worker, started_at, seen_at, paused_reason,
                 ranges_done, ranges_retried, ranges_failed, values_written, last_done_at)
             VALUES ($1, $2, now(), $3, $4, $5, $6, $7, $8)
             ON CONFLICT (worker) DO UPDATE SET started_at = EXCLUDED.started_at,
                 seen_at = now(), paused_reason = EXCLUDED.paused_reason,
                 ranges_done = EXCLUDED.ranges_done, ranges_retried = EXCLUDED.ranges_retried,
                 ranges_failed = EXCLUDED.ranges_failed, values_written = EXCLUDED.values_written,
                 last_done_at = EXCLUDED.last_done_at",
        )
        .bind(worker)
        .bind(started_at)
        .bind(self.paused())
        .bind(n(&self.done))
        .bind(n(&self.retried))
        .bind(n(&self.failed))
        .bind(n(&self.values_written))
        .bind(last_done_at)
        .execute(pool)
        .await
        .map(drop)
    }

    /// Why fetching is paused (Thryve's 401), or `None` while it runs.
    pub fn paused(&self) -> Option<String> {
        if self.paused.load(Ordering::Relaxed) {
            self.reason.lock().expect("not poisoned").clone()
        } else {
            None
        }
    }

    fn pause(&self, reason: String, for_: Duration) {
        *self.reason.lock().expect("not poisoned") = Some(reason);
        *self.resume_at.lock().expect("not poisoned") = Some(Instant::now() + for_);
        if !self.paused.swap(true, Ordering::Relaxed) {
            self.pause_changed.send_modify(|n| *n += 1);
        }
    }

    fn resume(&self) -> bool {
        *self.resume_at.lock().expect("not poisoned") = None;
        let was_paused = self.paused.swap(false, Ordering::Relaxed);
        if was_paused {
            self.pause_changed.send_modify(|n| *n += 1);
        }
        was_paused
    }

    /// When the pause (if any) ends and one call may try the credentials again.
    fn resume_at(&self) -> Option<Instant> {
        *self.resume_at.lock().expect("not poisoned")
    }
}

/// One Thryve call of a range: its path and form fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    pub path: &'static str,
    pub form: Vec<(&'static str, String)>,
}

/// The calls that fetch `range`: [`DirtyRange::thryve_request`] for each piece of its span
/// (epoch: at most 30 days each; daily: at most a year), as form fields with `detailed=true`
/// (for the timezone offset). Pieces do not overlap; values overlapping two come back twice.
///
/// ```
/// # use thryve_bridge::{fetcher::calls, ranges::DirtyRange};
/// # fn show(range: &DirtyRange) {
/// for call in calls(range) {
///     assert!(call.form.iter().any(|(k, v)| *k == "detailed" && v == "true"));
/// }
/// # }
/// ```
pub fn calls(range: &DirtyRange) -> Vec<Call> {
    let pieces: Vec<DirtyRange> = match (
        range.start_time,
        range.end_time,
        range.start_day,
        range.end_day,
    ) {
        (Some(start), Some(end), _, _) => {
            let mut pieces = Vec::new();
            let mut from = start;
            loop {
                let to = (from + MAX_EPOCH_SPAN).min(end);
                pieces.push(DirtyRange {
                    start_time: Some(from),
                    end_time: Some(to),
                    ..range.clone()
                });
                if to >= end {
                    break pieces;
                }
                from = to + TimeDelta::milliseconds(1);
            }
        }
        (_, _, Some(start), Some(end)) => {
            let mut pieces = Vec::new();
            let mut from: NaiveDate = start;
            loop {
                let to = (from + TimeDelta::days(MAX_DAILY_DAYS - 1)).min(end);
                pieces.push(DirtyRange {
                    start_day: Some(from),
                    end_day: Some(to),
                    ..range.clone()
                });
                if to >= end {
                    break pieces;
                }
                from = to + TimeDelta::days(1);
            }
        }
        _ => vec![range.clone()],
    };
    pieces
        .iter()
        .map(|piece| {
            let (path, body) = piece.thryve_request();
            let mut form: Vec<(&'static str, String)> = [
                "authenticationToken",
                "startTimestampUnix",
                "endTimestampUnix",
                "startDay",
                "endDay",
                "dataSources",
                "valueTypes",
            ]
            .into_iter()
            .filter_map(|key| {
                let value = body.get(key)?;
                let text = match value {
                    serde_json::Value::String(s) => s.clone(),
                    serde_json::Value::Null => return None,
                    other => other.to_string(),
                };
                Some((key, text))
            })
            .collect();
            form.push(("detailed", "true".to_owned()));
            Call { path, form }
        })
        .collect()
}

/// The fetcher: `FETCHER_CONCURRENCY` claim loops, each claiming one range at a time, so at
/// most that many calls are in flight; all share the rate cap and wake on `NOTIFY
/// thryve_dirty_ranges`. A status reporter writes this process's row of `thryve.fetchers`.
pub struct Fetcher {
    pool: PgPool,
    client: Arc<ThryveClient>,
    config: FetcherConfig,
    /// This process's name in `claimed_by` (each loop adds `-<n>`) and `thryve.fetchers`.
    worker: String,
    status: Arc<FetcherStatus>,
    metrics: Arc<Metrics>,
}

/// What became of one claimed range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Values and completion committed together.
    Done { values_written: u64 },
    /// This attempt failed; the range is pending again after a backoff (or failed when out
    /// of attempts).
    Retry,
    /// Failed for good (403, 400): asking again cannot help.
    Failed,
    /// The claim was lost (lease expired and re-claimed) before the commit: nothing written.
    Lost,
}

impl Outcome {
    fn label(self) -> &'static str {
        match self {
            Outcome::Done { .. } => "done",
            Outcome::Retry => "retry",
            Outcome::Failed => "failed",
            Outcome::Lost => "lost",
        }
    }
}

/// How often a fetcher writes its row of `thryve.fetchers` (at once, too, when a pause starts
/// or ends).
pub const REPORT_EVERY: Duration = Duration::from_secs(5);
/// The longest wait after claims that keep failing (the database out), or the interval.
const BACKOFF_MAX: Duration = Duration::from_secs(30);

impl Fetcher {
    /// From validated settings ([`FetcherConfig::validate`]).
    pub fn new(
        pool: PgPool,
        config: &FetcherConfig,
        metrics: Arc<Metrics>,
    ) -> Result<Self, reqwest::Error> {
        let worker = if config.fetcher_worker.is_empty() {
            let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "local".to_owned());
            format!(
                "fetcher-{host}-{}",
                &uuid::Uuid::new_v4().simple().to_string()[..8]
            )
        } else {
            config.fetcher_worker.clone()
        };
        let status = Arc::<FetcherStatus>::default();
        let client = ThryveClient::new(&config.api, metrics.clone())?.with_pause(status.clone());
        Ok(Self {
            pool,
            client: Arc::new(client),
            config: config.clone(),
            worker,
            status,
            metrics,
        })
    }

    /// Shared with `/readyz`: whether a 401 paused fetching.
    pub fn status(&self) -> Arc<FetcherStatus> {
        self.status.clone()
    }

    /// Starts the claim loops (woken by `NOTIFY thryve_dirty_ranges` or their interval) and
    /// the status reporter in `services`. On shutdown calls under way end early, their
    /// ranges' leases lapse and other fetchers take them (nothing of theirs was committed).
    pub fn start(self, services: &mut Services) {
        let notified = services.listen(self.pool.clone(), ranges::CHANNEL);
        let wake = Wake::every(self.config.interval()).or(notified);
        tracing::info!(
            worker = %self.worker,
            concurrency = self.config.fetcher_concurrency,
            "fetcher started"
        );
        let status_changed = self.status.pause_changed.subscribe();
        let this = Arc::new(self);
        for i in 0..this.config.fetcher_concurrency {
            let consumer = Consumer::new(this.pool.clone(), format!("{}-{i}", this.worker));
            services.start(
                ClaimLoop {
                    fetcher: this.clone(),
                    consumer,
                },
                wake.clone(),
            );
        }
        services.start(
            StatusReporter {
                fetcher: this,
                started_at: Utc::now(),
            },
            Wake::every(REPORT_EVERY).or(status_changed),
        );
    }

    /// Claims one range and fetches it; `None` when no range was claimable.
    pub async fn fetch_one(
        &self,
        consumer: &Consumer,
        shutdown: &CancellationToken,
    ) -> sqlx::Result<Option<Outcome>> {
        let Some(range) = consumer.claim(1, self.config.lease()).await?.pop() else {
            return Ok(None);
        };
        let outcome = self.fetch(consumer, &range, shutdown).await?;
        self.status.count(outcome);
        self.metrics
            .fetcher
            .ranges
            .get_or_create(&FetchOutcomeLabels {
                outcome: outcome.label(),
            })
            .inc();
        Ok(Some(outcome))
    }

    /// Fetches one claimed range: every call, then values and completion in one transaction.
    pub async fn fetch(
        &self,
        consumer: &Consumer,
        range: &DirtyRange,
        shutdown: &CancellationToken,
    ) -> sqlx::Result<Outcome> {
        let version_at = chrono::Utc::now();
        // Retries and backoffs can outlast a lease: keep it while the range is worked on.
        let keeper = CancellationToken::new();
        let _stop_keeper = keeper.clone().drop_guard();
        let lease = self.config.lease();
        tokio::spawn(service::run(
            LeaseKeeper {
                consumer: consumer.clone(),
                range: range.clone(),
                lease,
            },
            Wake::after(lease / 3),
            keeper,
        ));
        let mut epoch: Vec<EpochValue> = Vec::new();
        let mut daily: Vec<DailyValue> = Vec::new();
        let mut types: Vec<TypeName> = Vec::new();
        for (i, call) in calls(range).into_iter().enumerate() {
            if i > 0 && !consumer.extend(range, lease).await? {
                return Ok(Outcome::Lost);
            }
            let answer = match self.client.call(call.path, &call.form, shutdown).await {
                Ok(answer) => {
                    if self.status.resume() {
                        self.metrics.fetcher.paused.set(0);
                        tracing::info!(
                            "fetcher: Thryve accepts the credentials again; fetching resumed"
                        );
                    }
                    answer
                }
                Err(error) => return self.give_up(consumer, range, error).await,
            };
            let parsed = if call.path == "/v5/dailyDynamicValues" {
                api::daily_values(&answer).map(|a| {
                    daily.extend(a.values);
                    types.extend(a.types);
                })
            } else {
                api::epoch_values(&answer).map(|a| {
                    epoch.extend(a.values);
                    types.extend(a.types);
                })
            };
            if let Err(error) = parsed {
                let reason = format!("unreadable answer from Thryve: {error}");
                tracing::warn!(range_id = range.id, %reason, "fetcher: range attempt failed");
                return self.retry(consumer, range, &reason).await;
            }
        }
        let mut tx = self.pool.begin().await?;
        let values_written = values::apply_fetched(
            &mut tx,
            &range.end_user_id,
            range.id,
            version_at,
            epoch,
            daily,
        )
        .await?;
        values::learn_type_names(&mut *tx, range.granularity, &types).await?;
        if !consumer.complete_in(&mut *tx, range).await? {
            tx.rollback().await?;
            tracing::warn!(
                range_id = range.id,
                "fetcher: claim lost before the commit; nothing written"
            );
            return Ok(Outcome::Lost);
        }
        tx.commit().await?;
        self.metrics.fetcher.values_written.inc_by(values_written);
        tracing::info!(
            range_id = range.id,
            end_user_id = %range.end_user_id,
            data_source_id = range.data_source_id,
            granularity = %range.granularity,
            values_written,
            "range fetched"
        );
        Ok(Outcome::Done { values_written })
    }

    async fn give_up(
        &self,
        consumer: &Consumer,
        range: &DirtyRange,
        error: CallError,
    ) -> sqlx::Result<Outcome> {
        let reason = error.to_string();
        match error {
            CallError::Unauthorized(_) => {
                let pause = self.config.auth_pause();
                self.status.pause(reason.clone(), pause);
                self.metrics.fetcher.paused.set(1);
                tracing::error!(
                    %reason,
                    pause_secs = pause.as_secs(),
                    "fetcher PAUSED: Thryve refuses the credentials; check THRYVE_API_USER/THRYVE_API_PASSWORD and THRYVE_APP_ID/THRYVE_APP_SECRET"
                );
                consumer.fail(range, &reason, pause).await?;
                Ok(Outcome::Retry)
            }
            CallError::Paused => {
                // Back when the pause ends, without a call that would meet the 401 again.
                let until = self
                    .status
                    .resume_at()
                    .map(|at| at.saturating_duration_since(Instant::now()));
                let retry_in = until.unwrap_or_else(|| self.config.auth_pause());
                consumer.fail(range, &reason, retry_in).await?;
                Ok(Outcome::Retry)
            }
            CallError::Forbidden(_) | CallError::Refused { .. } => {
                tracing::warn!(range_id = range.id, end_user_id = %range.end_user_id, %reason, "fetcher: range failed for good");
                Ok(if consumer.abandon(range, &reason).await? {
                    Outcome::Failed
                } else {
                    Outcome::Lost
                })
            }
            CallError::Cancelled => {
                // Shutdown: the lease lapses and another fetcher takes the range.
                Ok(Outcome::Retry)
            }
            CallError::Exhausted(_) | CallError::TooLarge(_) => {
                tracing::warn!(range_id = range.id, %reason, "fetcher: range attempt failed");
                self.retry(consumer, range, &reason).await
            }
        }
    }

    /// Puts the range back after a backoff that grows with its attempts.
    async fn retry(
        &self,
        consumer: &Consumer,
        range: &DirtyRange,
        reason: &str,
    ) -> sqlx::Result<Outcome> {
        let backoff = Backoff::new(self.config.api.backoff(), self.config.api.backoff_max());
        let retry_in = backoff.delay(range.attempts.max(1) as u32 - 1);
        Ok(if consumer.fail(range, reason, retry_in).await? {
            Outcome::Retry
        } else {
            Outcome::Lost
        })
    }
}

/// One of the fetcher's claim loops: a range per pass, more at once while there are any.
struct ClaimLoop {
    fetcher: Arc<Fetcher>,
    consumer: Consumer,
}

impl Service for ClaimLoop {
    const NAME: &'static str = "fetcher";
    const FAILED: &'static str = "fetcher: database error; claiming again after a backoff";
    type Error = sqlx::Error;

    async fn run_once(&mut self, shutdown: &CancellationToken) -> sqlx::Result<Pass> {
        if let Some(at) = self.fetcher.status.resume_at() {
            tokio::select! {
                _ = tokio::time::sleep_until(at) => {}
                _ = shutdown.cancelled() => return Ok(Pass::Done),
            }
        }
        Ok(
            match self.fetcher.fetch_one(&self.consumer, shutdown).await? {
                Some(_) => Pass::More,
                None => Pass::Idle,
            },
        )
    }

    fn backoff(&self) -> Backoff {
        let interval = self.fetcher.config.interval();
        Backoff::new(interval, BACKOFF_MAX.max(interval))
    }

    fn stopped(&self) {
        tracing::debug!(worker = self.consumer.worker(), "fetcher loop stopped");
    }
}

/// Writes this process's row of `thryve.fetchers` every [`REPORT_EVERY`].
struct StatusReporter {
    fetcher: Arc<Fetcher>,
    started_at: DateTime<Utc>,
}

impl Service for StatusReporter {
    const NAME: &'static str = "fetcher status";
    const FAILED: &'static str = "fetcher: status row not written";
    type Error = sqlx::Error;

    async fn run_once(&mut self, _: &CancellationToken) -> sqlx::Result<Pass> {
        let f = &self.fetcher;
        f.status.report(&f.pool, &f.worker, self.started_at).await?;
        Ok(Pass::Idle)
    }

    fn backoff(&self) -> Backoff {
        Backoff::new(REPORT_EVERY, BACKOFF_MAX)
    }

    fn stopped(&self) {
        tracing::info!("fetcher stopped");
    }
}

/// Extends a claimed range's lease every third of it while the range is worked on; ends
/// when the claim is lost.
struct LeaseKeeper {
    consumer: Consumer,
    range: DirtyRange,
    lease: Duration,
}

impl Service for LeaseKeeper {
    const NAME: &'static str = "lease keeper";
    const FAILED: &'static str = "fetcher: lease not extended";
    type Error = sqlx::Error;

    async fn run_once(&mut self, _: &CancellationToken) -> sqlx::Result<Pass> {
        Ok(match self.consumer.extend(&self.range, self.lease).await? {
            true => Pass::Idle,
            false => Pass::Done,
        })
    }

    fn backoff(&self) -> Backoff {
        Backoff::new(self.lease / 3, self.lease / 3)
    }

    fn stopped(&self) {}
}

#[cfg(test)]
mod tests {
    use chrono::{DateTime, Utc};

    use super::*;

    fn range(types: &[i32]) -> DirtyRange {
        let now: DateTime<Utc> = "2025-12-01T00:00:00Z".parse().unwrap();
        DirtyRange {
            id: 1,
            end_user_id: "u".to_owned(),
            data_source_id: 8,
            granularity: ranges::Granularity::Daily,
            data_type_ids: types.to_vec(),
            start_time: None,
            end_time: None,
            start_day: Some("2024-01-01".parse().unwrap()),
            end_day: Some("2025-06-30".parse().unwrap()),
            status: ranges::RangeStatus::Claimed,
            notification_count: 1,
            first_dirtied_at: now,
            last_dirtied_at: now,
            claimed_by: None,
            lease_expires_at: None,
            attempts: 1,
            last_error: None,
            needs_fetch: true,
            claim_token: None,
            available_at: now,
            completed_at: None,
        }
    }

    fn field<'a>(call: &'a Call, key: &str) -> Option<&'a str> {
        call.form
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| v.as_str())
    }

    #[test]
    fn an_all_types_range_asks_without_value_types() {
        for call in calls(&range(&[])) {
            assert_eq!(field(&call, "valueTypes"), None);
            assert_eq!(field(&call, "dataSources"), Some("8"));
            assert_eq!(field(&call, "detailed"), Some("true"));
        }
        let typed = calls(&range(&[1000, 3000]));
        assert_eq!(field(&typed[0], "valueTypes"), Some("1000,3000"));
    }

    #[test]
    fn a_daily_span_over_a_year_is_split_into_contiguous_years() {
        let calls = calls(&range(&[1000]));
        let spans: Vec<(&str, &str)> = calls
            .iter()
            .map(|c| (field(c, "startDay").unwrap(), field(c, "endDay").unwrap()))
            .collect();
        assert_eq!(
            spans,
            vec![("2024-01-01", "2024-12-30"), ("2024-12-31", "2025-06-30")]
        );
        assert!(calls.iter().all(|c| c.path == "/v5/dailyDynamicValues"));
    }
}
