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
use sqlx::{postgres::PgListener, PgPool};
use tokio::{sync::Notify, task::JoinSet, time::Instant};
use tokio_util::sync::CancellationToken;

use crate::{
    config::FetcherConfig,
    metrics::{FetchOutcomeLabels, Metrics},
    ranges::{self, Consumer, DirtyRange},
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
#[derive(Debug, Default)]
pub struct FetcherStatus {
    paused: AtomicBool,
    resume_at: Mutex<Option<Instant>>,
    reason: Mutex<Option<String>>,
    done: AtomicU64,
    retried: AtomicU64,
    failed: AtomicU64,
    values_written: AtomicU64,
    last_done_at: Mutex<Option<DateTime<Utc>>>,
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
        self.paused.store(true, Ordering::Relaxed);
    }

    fn resume(&self) -> bool {
        *self.resume_at.lock().expect("not poisoned") = None;
        self.paused.swap(false, Ordering::Relaxed)
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

/// The fetcher's settings in the units it uses.
#[derive(Debug, Clone)]
pub struct FetcherSettings {
    pub worker: String,
    pub concurrency: usize,
    pub lease: Duration,
    pub interval: Duration,
    pub auth_pause: Duration,
    pub backoff: Duration,
    pub backoff_max: Duration,
}

impl FetcherSettings {
    pub fn from_config(config: &FetcherConfig) -> Self {
        let worker = if config.fetcher_worker.is_empty() {
            let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "local".to_owned());
            format!(
                "fetcher-{host}-{}",
                &uuid::Uuid::new_v4().simple().to_string()[..8]
            )
        } else {
            config.fetcher_worker.clone()
        };
        Self {
            worker,
            concurrency: config.fetcher_concurrency,
            lease: Duration::from_secs(config.fetcher_lease_secs),
            interval: Duration::from_millis(config.fetcher_interval_ms),
            auth_pause: Duration::from_secs(config.fetcher_auth_pause_secs),
            backoff: Duration::from_millis(config.fetcher_backoff_ms),
            backoff_max: Duration::from_millis(config.fetcher_backoff_max_ms),
        }
    }
}

/// The fetcher task: `concurrency` loops, each claiming one range at a time, so at most that
/// many calls are in flight; all share the rate cap and wake on `NOTIFY thryve_dirty_ranges`.
pub struct Fetcher {
    pool: PgPool,
    client: Arc<ThryveClient>,
    settings: FetcherSettings,
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

impl Fetcher {
    pub fn new(
        pool: PgPool,
        client: ThryveClient,
        settings: FetcherSettings,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            pool,
            client: Arc::new(client),
            settings,
            status: Arc::default(),
            metrics,
        }
    }

    /// Shared with `/readyz`: whether a 401 paused fetching.
    pub fn status(&self) -> Arc<FetcherStatus> {
        self.status.clone()
    }

    /// Fetches until `shutdown`; calls under way end early, their ranges' leases lapse and
    /// other fetchers take them (nothing of theirs was committed).
    pub async fn run(self, shutdown: CancellationToken) {
        let this = Arc::new(self);
        let wake = Arc::new(Notify::new());
        let mut tasks = JoinSet::new();
        tasks.spawn(listen(this.pool.clone(), wake.clone(), shutdown.clone()));
        tasks.spawn(
            this.clone()
                .report_every(Duration::from_secs(5), shutdown.clone()),
        );
        for i in 0..this.settings.concurrency {
            let consumer =
                Consumer::new(this.pool.clone(), format!("{}-{i}", this.settings.worker));
            tasks.spawn(this.clone().work(consumer, wake.clone(), shutdown.clone()));
        }
        tracing::info!(
            worker = %this.settings.worker,
            concurrency = this.settings.concurrency,
            "fetcher started"
        );
        while tasks.join_next().await.is_some() {}
        tracing::info!("fetcher stopped");
    }

    async fn report_every(self: Arc<Self>, every: Duration, shutdown: CancellationToken) {
        let started_at = Utc::now();
        loop {
            if let Err(error) = self
                .status
                .report(&self.pool, &self.settings.worker, started_at)
                .await
            {
                tracing::debug!(%error, "fetcher: status row not written");
            }
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = shutdown.cancelled() => break,
            }
        }
    }

    async fn work(
        self: Arc<Self>,
        consumer: Consumer,
        wake: Arc<Notify>,
        shutdown: CancellationToken,
    ) {
        while !shutdown.is_cancelled() {
            if let Some(at) = self.status.resume_at() {
                tokio::select! {
                    _ = tokio::time::sleep_until(at) => {}
                    _ = shutdown.cancelled() => break,
                }
            }
            let notified = wake.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            match self.fetch_one(&consumer, &shutdown).await {
                Ok(Some(_)) => continue,
                Ok(None) => {}
                Err(error) => {
                    tracing::warn!(%error, "fetcher: database error; retrying after the interval")
                }
            }
            tokio::select! {
                _ = notified => {}
                _ = tokio::time::sleep(self.settings.interval) => {}
                _ = shutdown.cancelled() => break,
            }
        }
    }

    /// Claims one range and fetches it; `None` when no range was claimable.
    pub async fn fetch_one(
        &self,
        consumer: &Consumer,
        shutdown: &CancellationToken,
    ) -> sqlx::Result<Option<Outcome>> {
        let Some(range) = consumer.claim(1, self.settings.lease).await?.pop() else {
            return Ok(None);
        };
        let outcome = self.fetch(consumer, &range, shutdown).await?;
        self.status.count(outcome);
        self.metrics
            .fetcher_ranges
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
        tokio::spawn(keep_lease(
            consumer.clone(),
            range.clone(),
            self.settings.lease,
            keeper,
        ));
        let mut epoch: Vec<EpochValue> = Vec::new();
        let mut daily: Vec<DailyValue> = Vec::new();
        let mut types: Vec<TypeName> = Vec::new();
        for (i, call) in calls(range).into_iter().enumerate() {
            if i > 0 && !consumer.extend_claimed(range, self.settings.lease).await? {
                return Ok(Outcome::Lost);
            }
            let answer = match self.client.call(call.path, &call.form, shutdown).await {
                Ok(answer) => {
                    if self.status.resume() {
                        self.metrics.fetcher_paused.set(0);
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
        self.metrics.fetcher_values_written.inc_by(values_written);
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
                self.status.pause(reason.clone(), self.settings.auth_pause);
                self.metrics.fetcher_paused.set(1);
                tracing::error!(
                    %reason,
                    pause_secs = self.settings.auth_pause.as_secs(),
                    "fetcher PAUSED: Thryve refuses the credentials; check THRYVE_API_USER/THRYVE_API_PASSWORD and THRYVE_APP_ID/THRYVE_APP_SECRET"
                );
                consumer
                    .fail(range.id, &reason, self.settings.auth_pause)
                    .await?;
                Ok(Outcome::Retry)
            }
            CallError::Forbidden(_) | CallError::Refused { .. } => {
                tracing::warn!(range_id = range.id, end_user_id = %range.end_user_id, %reason, "fetcher: range failed for good");
                Ok(if consumer.abandon(range.id, &reason).await? {
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

    async fn retry(
        &self,
        consumer: &Consumer,
        range: &DirtyRange,
        reason: &str,
    ) -> sqlx::Result<Outcome> {
        let exponent = range.attempts.clamp(1, 16) as u32 - 1;
        let retry_in = self
            .settings
            .backoff
            .saturating_mul(1 << exponent)
            .min(self.settings.backoff_max);
        Ok(if consumer.fail_claimed(range, reason, retry_in).await? {
            Outcome::Retry
        } else {
            Outcome::Lost
        })
    }
}

/// Extends `range_id`'s lease every third of it until `stop`, or until the claim is lost.
async fn keep_lease(
    consumer: Consumer,
    range: DirtyRange,
    lease: Duration,
    stop: CancellationToken,
) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(lease / 3) => {}
            _ = stop.cancelled() => return,
        }
        match consumer.extend_claimed(&range, lease).await {
            Ok(true) => {}
            Ok(false) => return,
            Err(error) => {
                tracing::debug!(%error, range_id = range.id, "fetcher: lease not extended")
            }
        }
    }
}

/// LISTENs on [`ranges::CHANNEL`] and wakes every idle loop; reconnects after errors.
async fn listen(pool: PgPool, wake: Arc<Notify>, shutdown: CancellationToken) {
    while !shutdown.is_cancelled() {
        let listener = async {
            let mut listener = PgListener::connect_with(&pool).await?;
            listener.listen(ranges::CHANNEL).await?;
            Ok::<_, sqlx::Error>(listener)
        };
        let mut listener = match listener.await {
            Ok(listener) => listener,
            Err(error) => {
                tracing::debug!(%error, "fetcher: LISTEN failed; claiming on the interval meanwhile");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(5)) => continue,
                    _ = shutdown.cancelled() => return,
                }
            }
        };
        // Ranges may have appeared while the LISTEN was down.
        wake.notify_waiters();
        loop {
            tokio::select! {
                received = listener.recv() => match received {
                    Ok(_) => wake.notify_waiters(),
                    Err(_) => break,
                },
                _ = shutdown.cancelled() => return,
            }
        }
    }
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
