//! `thryve.dirty_ranges`: merging new spans in, and the consumer API that claims, completes,
//! fails, extends and abandons ranges (thin wrappers over the SQL functions users may call
//! directly).

mod coalesce;

pub use coalesce::{coalesce, coalesce_marked, Extent, Granularity, MergedSpan};

use std::time::Duration;

use chrono::{DateTime, NaiveDate, Utc};
use serde::Serialize;
use serde_json::{json, Value};
use sqlx::{PgExecutor, PgPool};

/// Where a range stands; the text values are the `status` column's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum RangeStatus {
    /// Waiting for a worker (again, after a failed attempt with attempts left).
    Pending,
    /// Held by a worker until its lease expires.
    Claimed,
    Done,
    /// Out of attempts.
    Failed,
}

crate::db::text_enum!(RangeStatus {
    Pending => "pending",
    Claimed => "claimed",
    Done => "done",
    Failed => "failed",
});

/// One row of `thryve.dirty_ranges`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct DirtyRange {
    pub id: i64,
    pub end_user_id: String,
    pub data_source_id: i32,
    pub granularity: Granularity,
    pub data_type_ids: Vec<i32>,
    pub start_time: Option<DateTime<Utc>>,
    pub end_time: Option<DateTime<Utc>>,
    pub start_day: Option<NaiveDate>,
    pub end_day: Option<NaiveDate>,
    pub status: RangeStatus,
    pub notification_count: i32,
    pub first_dirtied_at: DateTime<Utc>,
    pub last_dirtied_at: DateTime<Utc>,
    pub claimed_by: Option<String>,
    pub lease_expires_at: Option<DateTime<Utc>>,
    pub attempts: i32,
    pub last_error: Option<String>,
    pub available_at: DateTime<Utc>,
    pub completed_at: Option<DateTime<Utc>>,
    /// True when something in the range came from a notification and must be fetched from
    /// Thryve; false when only data pushes made it (their values are stored).
    pub needs_fetch: bool,
    /// Set by each claim; every call of [`Consumer`] on the range passes it back.
    pub claim_token: Option<uuid::Uuid>,
}

impl DirtyRange {
    /// The Thryve data-API call that re-fetches this range: its path and JSON body (add your
    /// own credentials). One range is one user, one source, its types, one span. A range
    /// with no types (all types) leaves `valueTypes` out, which asks for every type.
    ///
    /// ```
    /// # use thryve_bridge::ranges::DirtyRange;
    /// # fn show(range: &DirtyRange) {
    /// let (path, body) = range.thryve_request();
    /// assert!(path == "/v5/dynamicEpochValues" || path == "/v5/dailyDynamicValues");
    /// assert_eq!(body["authenticationToken"], range.end_user_id.as_str());
    /// # }
    /// ```
    ///
    /// An empty `data_type_ids` means every type (a legacy trigger names none): the body then
    /// has no `valueTypes`, which asks Thryve for all of them.
    pub fn thryve_request(&self) -> (&'static str, Value) {
        let (path, mut body) = match (self.start_time, self.end_time, self.start_day, self.end_day)
        {
            (Some(start), Some(end), _, _) => (
                "/v5/dynamicEpochValues",
                json!({
                    "authenticationToken": self.end_user_id,
                    "startTimestampUnix": start.timestamp_millis(),
                    "endTimestampUnix": end.timestamp_millis(),
                    "dataSources": self.data_source_id.to_string(),
                }),
            ),
            (_, _, start, end) => (
                "/v5/dailyDynamicValues",
                json!({
                    "authenticationToken": self.end_user_id,
                    "startDay": start.map(|d| d.to_string()),
                    "endDay": end.map(|d| d.to_string()),
                    "dataSources": self.data_source_id.to_string(),
                }),
            ),
        };
        if !self.data_type_ids.is_empty() {
            let types: Vec<String> = self.data_type_ids.iter().map(i32::to_string).collect();
            body["valueTypes"] = Value::from(types.join(","));
        }
        (path, body)
    }
}

/// Takes the advisory lock of each (user, source, granularity) in `keys` (duplicates allowed)
/// for the rest of the transaction, in the global order `thryve.merge_dirty_ranges` uses, so
/// that a merge of the same keys afterwards takes none out of order.
pub async fn lock_keys<'k>(
    executor: impl PgExecutor<'_>,
    keys: impl IntoIterator<Item = (&'k str, i32, Granularity)>,
) -> sqlx::Result<()> {
    // Distinct here, not in SQL: a batch names a key once per value, and hashing each copy
    // in the database was a large share of a poller batch.
    let distinct: std::collections::BTreeSet<_> = keys
        .into_iter()
        .map(|(user, source, granularity)| (user, source, granularity.as_str()))
        .collect();
    let mut users = Vec::with_capacity(distinct.len());
    let mut sources = Vec::with_capacity(distinct.len());
    let mut granularities = Vec::with_capacity(distinct.len());
    for (user, source, granularity) in distinct {
        users.push(user);
        sources.push(source);
        granularities.push(granularity);
    }
    if users.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "SELECT pg_advisory_xact_lock(k) FROM (
             SELECT DISTINCT thryve.range_lock_key(u, ds, g) AS k
             FROM unnest($1::text[], $2::integer[], $3::text[]) AS s(u, ds, g)
             ORDER BY 1) keys",
    )
    .bind(users)
    .bind(sources)
    .bind(granularities)
    .execute(executor)
    .await?;
    Ok(())
}

/// Merges spans into pending work in one statement (`thryve.merge_dirty_ranges`), which
/// takes each key's lock in a global order. Returns how many spans were merged.
pub async fn merge_spans(executor: impl PgExecutor<'_>, spans: &[MergedSpan]) -> sqlx::Result<i32> {
    if spans.is_empty() {
        return Ok(0);
    }
    let mut users = Vec::with_capacity(spans.len());
    let mut sources = Vec::with_capacity(spans.len());
    let mut granularities = Vec::with_capacity(spans.len());
    let mut types = Vec::with_capacity(spans.len());
    let mut start_times = Vec::with_capacity(spans.len());
    let mut end_times = Vec::with_capacity(spans.len());
    let mut start_days = Vec::with_capacity(spans.len());
    let mut end_days = Vec::with_capacity(spans.len());
    let mut counts = Vec::with_capacity(spans.len());
    let mut needs_fetch = Vec::with_capacity(spans.len());
    for s in spans {
        users.push(s.end_user_id.as_str());
        sources.push(s.data_source_id);
        granularities.push(s.granularity().as_str());
        types.push(crate::db::int_array_literal(&s.data_type_ids));
        let (st, et, sd, ed) = match s.extent {
            Extent::Epoch(a, b) => (Some(a), Some(b), None, None),
            Extent::Daily(a, b) => (None, None, Some(a), Some(b)),
        };
        start_times.push(st);
        end_times.push(et);
        start_days.push(sd);
        end_days.push(ed);
        counts.push(s.notification_count);
        needs_fetch.push(s.needs_fetch);
    }
    sqlx::query_scalar(
        "SELECT thryve.merge_dirty_ranges($1::text[], $2::integer[], $3::text[], $4::text[],
                $5::timestamptz[], $6::timestamptz[], $7::date[], $8::date[], $9::integer[],
                p_needs_fetch => $10::boolean[])",
    )
    .bind(users)
    .bind(sources)
    .bind(granularities)
    .bind(types)
    .bind(start_times)
    .bind(end_times)
    .bind(start_days)
    .bind(end_days)
    .bind(counts)
    .bind(needs_fetch)
    .fetch_one(executor)
    .await
}

/// Which ranges a claim may return.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum ClaimMode {
    /// Only ranges whose data must be fetched from Thryve (`needs_fetch`): for workers that
    /// re-fetch. What the three-argument `thryve.claim_dirty_ranges` returns.
    Fetch,
    /// Every range, push-only ones too: for workers that recompute from what changed (and
    /// fetch where `needs_fetch` says so).
    All,
}

impl ClaimMode {
    pub fn as_str(self) -> &'static str {
        match self {
            ClaimMode::Fetch => "fetch",
            ClaimMode::All => "all",
        }
    }
}

/// What [`enqueue_refetch`] asks for: every listed (user, source), each granularity, one span
/// from `since` (00:00 UTC) to `until`, of `data_type_ids` (empty: all types).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refetch {
    pub targets: Vec<(String, i32)>,
    pub granularities: Vec<Granularity>,
    pub since: NaiveDate,
    pub until: DateTime<Utc>,
    pub data_type_ids: Vec<i32>,
}

/// Enqueues re-fetch work (recovery after lost webhooks) through the same merge as
/// notifications, so it joins pending work of the same keys: a second run while the first's
/// ranges wait adds nothing new. Returns the spans merged.
pub async fn enqueue_refetch(
    executor: impl PgExecutor<'_>,
    refetch: &Refetch,
) -> sqlx::Result<i32> {
    let start = refetch.since.and_time(chrono::NaiveTime::MIN).and_utc();
    let spans: Vec<MergedSpan> = refetch
        .targets
        .iter()
        .flat_map(|(user, source)| {
            refetch.granularities.iter().map(move |g| MergedSpan {
                end_user_id: user.clone(),
                data_source_id: *source,
                data_type_ids: refetch.data_type_ids.clone(),
                extent: match g {
                    Granularity::Epoch => Extent::Epoch(start, refetch.until.max(start)),
                    Granularity::Daily => {
                        Extent::Daily(refetch.since, refetch.until.date_naive().max(refetch.since))
                    }
                },
                notification_count: 0,
                needs_fetch: true,
            })
        })
        .collect();
    merge_spans(executor, &spans).await
}

/// A downstream worker's handle on the dirty ranges: claim, then complete, fail, extend or
/// abandon each claimed range. Every call after the claim passes the range's `claim_token`,
/// so a stale process of the same worker name cannot finish another's claim.
///
/// ```no_run
/// # async fn job(pool: sqlx::PgPool) -> Result<(), sqlx::Error> {
/// use std::time::Duration;
/// use thryve_bridge::ranges::Consumer;
/// let consumer = Consumer::new(pool, "refetch-worker-1");
/// for range in consumer.claim(10, Duration::from_secs(300)).await? {
///     let (path, body) = range.thryve_request();
///     // POST body to https://api.thryve.de{path}; store what comes back ...
///     consumer.complete(&range).await?;
/// }
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct Consumer {
    pool: PgPool,
    worker: String,
}

impl Consumer {
    /// `worker` names this claimer in `claimed_by`.
    pub fn new(pool: PgPool, worker: impl Into<String>) -> Self {
        Self {
            pool,
            worker: worker.into(),
        }
    }

    pub fn worker(&self) -> &str {
        &self.worker
    }

    /// Claims up to `max` ranges that need a fetch ([`ClaimMode::Fetch`]), oldest work first,
    /// held for `lease`.
    pub async fn claim(&self, max: i32, lease: Duration) -> sqlx::Result<Vec<DirtyRange>> {
        self.claim_for(ClaimMode::Fetch, max, lease).await
    }

    /// Claims up to `max` ranges of `mode`, oldest work first, held for `lease`.
    ///
    /// ```no_run
    /// # async fn job(pool: sqlx::PgPool) -> Result<(), sqlx::Error> {
    /// use std::time::Duration;
    /// use thryve_bridge::ranges::{ClaimMode, Consumer};
    /// let consumer = Consumer::new(pool, "recompute-1");
    /// for range in consumer.claim_for(ClaimMode::All, 10, Duration::from_secs(300)).await? {
    ///     if range.needs_fetch {
    ///         // fetch range.thryve_request() from Thryve first ...
    ///     }
    ///     // recompute from thryve.epoch_values / daily_values over the range ...
    ///     consumer.complete(&range).await?;
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn claim_for(
        &self,
        mode: ClaimMode,
        max: i32,
        lease: Duration,
    ) -> sqlx::Result<Vec<DirtyRange>> {
        sqlx::query_as(
            "SELECT * FROM thryve.claim_dirty_ranges($1, $2, make_interval(secs => $3), $4)",
        )
        .bind(&self.worker)
        .bind(max)
        .bind(lease.as_secs_f64())
        .bind(mode.as_str())
        .fetch_all(&self.pool)
        .await
    }

    /// Marks a range this very claim holds done: false if the claim is gone, even when
    /// another worker of the same name holds the range now.
    pub async fn complete(&self, range: &DirtyRange) -> sqlx::Result<bool> {
        self.complete_in(&self.pool, range).await
    }

    /// [`complete`](Self::complete) on a connection of the caller's, so that the range's
    /// completion commits with what the job wrote for it, or not at all.
    pub async fn complete_in(
        &self,
        executor: impl PgExecutor<'_>,
        range: &DirtyRange,
    ) -> sqlx::Result<bool> {
        match range.claim_token {
            Some(token) => complete(executor, range.id, &self.worker, Some(token)).await,
            None => Ok(false),
        }
    }

    /// Records a failed attempt of this claim: the range retries after `retry_in`, or ends
    /// `failed` once out of attempts. False if the claim is gone.
    pub async fn fail(
        &self,
        range: &DirtyRange,
        error: &str,
        retry_in: Duration,
    ) -> sqlx::Result<bool> {
        match range.claim_token {
            Some(token) => {
                fail(
                    &self.pool,
                    range.id,
                    &self.worker,
                    error,
                    retry_in,
                    Some(token),
                )
                .await
            }
            None => Ok(false),
        }
    }

    /// Keeps a long job's claim: the lease now ends `lease` from now. False if the claim is
    /// gone.
    pub async fn extend(&self, range: &DirtyRange, lease: Duration) -> sqlx::Result<bool> {
        match range.claim_token {
            Some(token) => extend(&self.pool, range.id, &self.worker, lease, Some(token)).await,
            None => Ok(false),
        }
    }

    /// Fails this claim's range for good, with no retry: for an answer that asking again
    /// cannot change. False if the claim is gone.
    pub async fn abandon(&self, range: &DirtyRange, error: &str) -> sqlx::Result<bool> {
        match range.claim_token {
            Some(token) => abandon(&self.pool, range.id, &self.worker, error, Some(token)).await,
            None => Ok(false),
        }
    }
}

// The calls on a claimed range, by id, worker name and claim token. A token of `None` is
// SQL's NULL, which the functions take as "any claim of this worker": only `ranges complete`
// and its siblings pass it, for a person at a shell who gave no `--token`.

/// `thryve.complete_dirty_range`: the range done, if `worker` (with `token`) holds it.
pub async fn complete(
    executor: impl PgExecutor<'_>,
    range_id: i64,
    worker: &str,
    token: Option<uuid::Uuid>,
) -> sqlx::Result<bool> {
    sqlx::query_scalar("SELECT thryve.complete_dirty_range($1, $2, $3)")
        .bind(range_id)
        .bind(worker)
        .bind(token)
        .fetch_one(executor)
        .await
}

/// `thryve.fail_dirty_range`: a failed attempt, retried after `retry_in` (or `failed` when
/// out of attempts), if `worker` (with `token`) holds the range.
pub async fn fail(
    executor: impl PgExecutor<'_>,
    range_id: i64,
    worker: &str,
    error: &str,
    retry_in: Duration,
    token: Option<uuid::Uuid>,
) -> sqlx::Result<bool> {
    sqlx::query_scalar("SELECT thryve.fail_dirty_range($1, $2, $3, make_interval(secs => $4), $5)")
        .bind(range_id)
        .bind(worker)
        .bind(error)
        .bind(retry_in.as_secs_f64())
        .bind(token)
        .fetch_one(executor)
        .await
}

/// `thryve.extend_dirty_range_lease`: the lease ends `lease` from now, if `worker` (with
/// `token`) holds the range.
pub async fn extend(
    executor: impl PgExecutor<'_>,
    range_id: i64,
    worker: &str,
    lease: Duration,
    token: Option<uuid::Uuid>,
) -> sqlx::Result<bool> {
    sqlx::query_scalar(
        "SELECT thryve.extend_dirty_range_lease($1, $2, make_interval(secs => $3), $4)",
    )
    .bind(range_id)
    .bind(worker)
    .bind(lease.as_secs_f64())
    .bind(token)
    .fetch_one(executor)
    .await
}

/// `thryve.abandon_dirty_range`: the range `failed` for good, if `worker` (with `token`)
/// holds it.
pub async fn abandon(
    executor: impl PgExecutor<'_>,
    range_id: i64,
    worker: &str,
    error: &str,
    token: Option<uuid::Uuid>,
) -> sqlx::Result<bool> {
    sqlx::query_scalar("SELECT thryve.abandon_dirty_range($1, $2, $3, $4)")
        .bind(range_id)
        .bind(worker)
        .bind(error)
        .bind(token)
        .fetch_one(executor)
        .await
}

/// The channel on which the database NOTIFYs when a statement leaves pending ranges behind
/// (migration 20261201000040): `LISTEN thryve_dirty_ranges` and claim when it fires.
pub const CHANNEL: &str = "thryve_dirty_ranges";

/// Ranges in `status` (any status if `None`), oldest first, at most `limit`.
pub async fn list(
    executor: impl PgExecutor<'_>,
    status: Option<RangeStatus>,
    limit: i64,
) -> sqlx::Result<Vec<DirtyRange>> {
    sqlx::query_as(
        "SELECT * FROM thryve.dirty_ranges WHERE $1::text IS NULL OR status = $1
         ORDER BY first_dirtied_at, id LIMIT $2",
    )
    .bind(status)
    .bind(limit)
    .fetch_all(executor)
    .await
}

/// Deletes up to `limit` `done` ranges completed more than `older_than` ago (by the database's
/// clock), skipping rows someone else holds; returns how many it deleted. Pending, claimed
/// and failed ranges are never touched.
pub async fn delete_done(
    executor: impl PgExecutor<'_>,
    older_than: Duration,
    limit: i64,
) -> sqlx::Result<u64> {
    crate::db::bounded_batch(
        executor,
        "DELETE FROM thryve.dirty_ranges",
        "thryve.dirty_ranges",
        "status = 'done' AND completed_at < now() - make_interval(secs => $1)",
        older_than,
        limit,
    )
    .await
}
