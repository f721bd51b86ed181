//! The `thryve.inbox` table: turning a decoded body into a row, and the queries on it.

mod columns;
mod writer;

pub use writer::{InboxWriter, MaybeStored, Notifier, WriteError};

use std::time::Duration;

use chrono::{DateTime, NaiveDate, Utc};
use serde::Serialize;
use serde_json::{Map, Value};
use sqlx::{postgres::PgArguments, Arguments, Connection, PgConnection, PgExecutor};

use crate::{
    db,
    thryve::{self, ConnectionChange, DaySpan, Event, InstantSpan, Parsed},
};

/// Where a row stands; the text values are the `status` column's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Pending,
    Processed,
    Quarantined,
    Ignored,
}

db::text_enum!(Status {
    Pending => "pending",
    Processed => "processed",
    Quarantined => "quarantined",
    Ignored => "ignored",
});

/// What the receiver tells Thryve about one delivery (the `outcome` of a 200, and of the
/// deliveries metric).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Stored,
    Duplicate,
    Quarantined,
    Ignored,
    /// Held in the outage spool, not yet in the inbox (no row yet); never a [`Receipt`]'s.
    Spooled,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Stored => "stored",
            Outcome::Duplicate => "duplicate",
            Outcome::Quarantined => "quarantined",
            Outcome::Ignored => "ignored",
            Outcome::Spooled => "spooled",
        }
    }
}

/// A committed delivery: its row and how it was taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Receipt {
    pub inbox_id: i64,
    pub outcome: Outcome,
}

/// The typed columns of a row, filled only where they describe the whole event (see
/// `typed_columns`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TypedColumns {
    pub data_source_id: Option<i32>,
    pub data_type_ids: Option<Vec<i32>>,
    pub start_time: Option<DateTime<Utc>>,
    pub end_time: Option<DateTime<Utc>>,
    pub start_day: Option<NaiveDate>,
    pub end_day: Option<NaiveDate>,
    pub connected: Option<bool>,
    pub event_time: Option<DateTime<Utc>>,
}

/// A delivery ready to be written: everything the row needs, computed without I/O.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewDelivery {
    pub fingerprint: [u8; 32],
    /// Canonical JSON text of the body.
    pub payload: String,
    pub status: Status,
    pub error: Option<String>,
    pub event_type: Option<String>,
    pub end_user_id: Option<String>,
    pub end_user_alias: Option<String>,
    pub typed: TypedColumns,
    /// How many values it carries: a data push's values, 0 for any other valid event, `None`
    /// when it is not valid (the poller never reads it). The poller sizes batches by it.
    pub value_count: Option<i32>,
    /// When the bridge first received it, if not now (a delivery loaded from the spool).
    pub received_at: Option<DateTime<Utc>>,
    /// When Thryve signed it (`x-hmac-timestamp` within the window), if known: the version
    /// of the values it carries.
    pub signed_at: Option<DateTime<Utc>>,
    /// The delivery's W3C `traceparent`, if it sent a well-formed one.
    pub traceparent: Option<String>,
}

impl NewDelivery {
    /// Classifies a body and fingerprints its canonical form.
    ///
    /// ```
    /// use thryve_bridge::inbox::{NewDelivery, Status};
    /// let body = serde_json::json!({"type": "something.new", "endUserId": "u1"});
    /// let d = NewDelivery::from_body(body.as_object().unwrap());
    /// assert_eq!(d.status, Status::Ignored);
    /// assert_eq!(d.end_user_id.as_deref(), Some("u1"));
    /// ```
    pub fn from_body(body: &Map<String, Value>) -> Self {
        let canonical = thryve::canonical_object(body);
        let fingerprint = thryve::fingerprint(&canonical);
        let payload = String::from_utf8(canonical).expect("serde_json writes UTF-8");
        let (status, error, envelope, typed, value_count) = match thryve::parse(body) {
            Parsed::Valid(n) => {
                let typed = typed_columns(&n.event);
                let value_count = Some(i32::try_from(n.event.value_count()).unwrap_or(i32::MAX));
                let envelope = thryve::Envelope {
                    event_type: Some(n.event_type),
                    end_user_id: Some(n.end_user_id),
                    end_user_alias: n.end_user_alias,
                };
                (Status::Pending, None, envelope, typed, value_count)
            }
            Parsed::Invalid { envelope, error } => (
                Status::Quarantined,
                Some(error.to_string()),
                envelope,
                TypedColumns::default(),
                None,
            ),
            Parsed::Unknown { envelope } => (
                Status::Ignored,
                None,
                envelope,
                TypedColumns::default(),
                None,
            ),
        };
        Self {
            fingerprint,
            payload,
            status,
            error,
            event_type: envelope.event_type,
            end_user_id: envelope.end_user_id,
            end_user_alias: envelope.end_user_alias,
            typed,
            value_count,
            received_at: None,
            signed_at: None,
            traceparent: None,
        }
    }

    /// The outcome of a first delivery of this content.
    pub fn first_outcome(&self) -> Outcome {
        match self.status {
            Status::Quarantined => Outcome::Quarantined,
            Status::Ignored => Outcome::Ignored,
            Status::Pending | Status::Processed => Outcome::Stored,
        }
    }
}

/// The typed columns of a valid event.
///
/// Rule: `data_source_id` is filled only when the typed columns describe the *whole* event
/// (one connection change, or one span and nothing else). The poller reads a non-null
/// `data_source_id` as "the columns are complete, no need to parse payload", so an event that
/// carries more (several spans, pushed values) must leave every column null and be re-parsed.
fn typed_columns(event: &Event) -> TypedColumns {
    match event {
        Event::SourceConnection {
            data_source_id,
            connected,
            at,
        } => connection_columns(&ConnectionChange {
            data_source_id: *data_source_id,
            connected: *connected,
            at: Some(*at),
        }),
        Event::EpochData(span) => epoch_columns(span),
        Event::DailyData(span) => daily_columns(span),
        Event::Legacy {
            daily,
            epoch,
            connection,
        } => match (daily, epoch, connection) {
            (Some(span), None, None) => daily_columns(span),
            (None, Some(span), None) => epoch_columns(span),
            (None, None, Some(change)) => connection_columns(change),
            _ => TypedColumns::default(),
        },
        Event::EpochPush(_) | Event::DailyPush(_) => TypedColumns::default(),
    }
}

fn connection_columns(change: &ConnectionChange) -> TypedColumns {
    TypedColumns {
        data_source_id: Some(change.data_source_id),
        connected: Some(change.connected),
        event_time: change.at,
        ..TypedColumns::default()
    }
}

fn epoch_columns(span: &InstantSpan) -> TypedColumns {
    TypedColumns {
        data_source_id: Some(span.data_source_id),
        data_type_ids: Some(span.data_type_ids.clone()),
        start_time: Some(span.start),
        end_time: Some(span.end),
        ..TypedColumns::default()
    }
}

fn daily_columns(span: &DaySpan) -> TypedColumns {
    TypedColumns {
        data_source_id: Some(span.data_source_id),
        data_type_ids: Some(span.data_type_ids.clone()),
        start_day: Some(span.start),
        end_day: Some(span.end),
        ..TypedColumns::default()
    }
}

/// One row written by [`insert_batch`].
#[derive(Debug, sqlx::FromRow)]
pub struct InsertedRow {
    pub fingerprint: Vec<u8>,
    pub id: i64,
    pub inserted: bool,
}

/// Writes distinct deliveries in one statement (so one commit): new content becomes a row with
/// `delivery_count` = its count; known content adds its count to the existing row, and a
/// `processed` row goes back to `pending` so its work is done again, with its payload back if
/// payload retention had blanked it.
///
/// `batch` must not repeat a fingerprint. Rows are written in fingerprint order so that
/// concurrent batches lock the unique index in the same order and cannot deadlock.
pub async fn insert_batch(
    executor: impl PgExecutor<'_>,
    batch: &[(&NewDelivery, i32)],
) -> sqlx::Result<Vec<InsertedRow>> {
    let mut rows = columns::Rows::default();
    for (delivery, count) in batch {
        rows.push(delivery, *count);
    }
    sqlx::query_as_with::<_, InsertedRow, _>(&columns::INSERT, rows.arguments()?)
        .fetch_all(executor)
        .await
}

/// The rows (`id` by fingerprint) that hold any of `fingerprints`: whether a write whose
/// outcome the connection could not tell committed, and whether a spooled record marked
/// `maybe_stored` is already in.
pub async fn existing(
    executor: impl PgExecutor<'_>,
    fingerprints: &[&[u8]],
) -> sqlx::Result<std::collections::HashMap<Vec<u8>, i64>> {
    let rows: Vec<(Vec<u8>, i64)> =
        sqlx::query_as("SELECT fingerprint, id FROM thryve.inbox WHERE fingerprint = ANY ($1)")
            .bind(fingerprints)
            .fetch_all(executor)
            .await?;
    Ok(rows.into_iter().collect())
}

/// A pending row as the poller sees it: the typed columns, how many values it carries, and
/// the payload only where the typed columns do not describe the whole event (`data_source_id`
/// is null) and it carries no more values than the claim allows.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct PendingRow {
    pub id: i64,
    pub event_type: Option<String>,
    pub end_user_id: Option<String>,
    pub data_source_id: Option<i32>,
    pub data_type_ids: Option<Vec<i32>>,
    pub start_time: Option<DateTime<Utc>>,
    pub end_time: Option<DateTime<Utc>>,
    pub start_day: Option<NaiveDate>,
    pub end_day: Option<NaiveDate>,
    pub connected: Option<bool>,
    pub event_time: Option<DateTime<Utc>>,
    /// The values it carries (`value_count`, or counted in its payload for a row written
    /// before there was one).
    pub value_count: i64,
    pub payload: Option<Value>,
    /// The version of the values it carries: when it was signed, else first received.
    pub version_at: DateTime<Utc>,
}

/// How much one claim may take: rows, and values summed over them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClaimLimits {
    /// Most rows.
    pub rows: i64,
    /// Most values summed over the rows; a row with more than this is claimed alone.
    pub values: i64,
    /// A row with more values than this is claimed without its payload (the poller sets it
    /// aside unread).
    pub values_per_row: i64,
}

const PENDING_COLUMNS: &str =
    "i.id, i.event_type, i.end_user_id, i.data_source_id, i.data_type_ids,
    i.start_time, i.end_time, i.start_day, i.end_day, i.connected, i.event_time,
    coalesce(i.signed_at, i.first_received_at) AS version_at";

/// Row `i`'s values: its `value_count`, or for a row written before that column (or by an
/// older binary) the values counted in its payload, an element or an array of elements with
/// `epochData` or `dailyData` arrays (rows with typed columns carry none).
const VALUE_COUNT: &str =
    "coalesce(i.value_count, CASE WHEN i.data_source_id IS NOT NULL THEN 0 ELSE (
        SELECT coalesce(sum(jsonb_array_length(CASE
                   WHEN jsonb_typeof(s.e -> 'epochData') = 'array' THEN s.e -> 'epochData'
                   WHEN jsonb_typeof(s.e -> 'dailyData') = 'array' THEN s.e -> 'dailyData'
                   ELSE '[]' END)), 0)
        FROM jsonb_array_elements(CASE jsonb_typeof(i.payload -> 'data')
                 WHEN 'array' THEN i.payload -> 'data'
                 WHEN 'object' THEN jsonb_build_array(i.payload -> 'data')
                 ELSE '[]' END) AS s(e)) END)::bigint";

/// Claims pending rows within `limits`, oldest first, skipping rows another poller holds, for
/// the rest of the transaction.
///
/// A claim is an advisory lock on the row's id ([`CLAIM_LOCK`]), not a row lock: the
/// receiver's upsert of a duplicate (Thryve sends every push twice, moments apart, and
/// retries) must not wait for the whole batch. With `FOR UPDATE SKIP LOCKED` it did, for the
/// length of a poller batch, stalling the group commit the duplicate was in (bench/README.md
/// has what that cost the ingest of the real mix). Rows are locked only by [`finish`], as the transaction's last
/// statement. The status is read again after the locks are taken (a second statement, so a
/// fresh snapshot): a row another poller processed and committed meanwhile drops out.
///
/// The values are counted before any payload is read: the batch ends at the first row that
/// would take it past `limits.values` (such a row leads the next batch, alone if need be), so
/// what a poller holds follows the limit, not what was pushed. Rows held but left out stay
/// pending; their locks end with the transaction.
pub async fn claim_pending(
    conn: &mut PgConnection,
    limits: ClaimLimits,
) -> sqlx::Result<Vec<PendingRow>> {
    // A claim whose rows all turned out processed by another poller (locked between that
    // poller's commit and this statement) is tried again: the next snapshot skips them.
    for _ in 0..3 {
        let rows = claim_some(&mut *conn, limits).await?;
        if rows.as_ref().is_none_or(|rows| !rows.is_empty()) {
            return Ok(rows.unwrap_or_default());
        }
    }
    Ok(Vec::new())
}

/// One try of [`claim_pending`]: `None` when nothing pending was free.
async fn claim_some(
    conn: &mut PgConnection,
    limits: ClaimLimits,
) -> sqlx::Result<Option<Vec<PendingRow>>> {
    // The window is a few batches deep, so that several pollers each find a batch's worth
    // that nobody holds; the try-locks run on candidates in id order until `limit` rows are
    // held. A row is taken only with its user ([`USER_CLAIM_LOCK`]): pollers then work on
    // disjoint users, and never queue on each other's range locks for the rest of a batch
    // (two batches of 100 of the mix's 2,000 users nearly always shared one).
    let held: Vec<(i64, i64)> = sqlx::query_as(&format!(
        "WITH candidates AS MATERIALIZED (
             SELECT id, end_user_id FROM thryve.inbox WHERE status = 'pending'
             ORDER BY id LIMIT $1 * 4),
         held AS MATERIALIZED (
             SELECT id FROM candidates
             WHERE CASE WHEN pg_try_advisory_xact_lock($2, hashtext(coalesce(end_user_id, '')))
                        THEN pg_try_advisory_xact_lock($3 + (id >> 31)::integer,
                                                       (id & 2147483647)::integer)
                        ELSE false END
             LIMIT $1)
         SELECT i.id, {VALUE_COUNT} FROM held JOIN thryve.inbox i USING (id) ORDER BY i.id"
    ))
    .bind(limits.rows)
    .bind(USER_CLAIM_LOCK)
    .bind(CLAIM_LOCK)
    .fetch_all(&mut *conn)
    .await?;
    if held.is_empty() {
        return Ok(None);
    }
    let (ids, counts): (Vec<i64>, Vec<i64>) = within_values(&held, limits).into_iter().unzip();
    sqlx::query_as(&format!(
        "SELECT {PENDING_COLUMNS}, c.n AS value_count,
                CASE WHEN i.data_source_id IS NULL AND c.n <= $3 THEN i.payload END AS payload
         FROM unnest($1::bigint[], $2::bigint[]) AS c(id, n) JOIN thryve.inbox i USING (id)
         WHERE i.status = 'pending' ORDER BY i.id"
    ))
    .bind(ids)
    .bind(counts)
    .bind(limits.values_per_row)
    .fetch_all(&mut *conn)
    .await
    .map(Some)
}

/// The first of `held` (id, values), in order, whose values sum to at most `limits.values`,
/// and always the first; rows over `limits.values_per_row` cost nothing (their payload is
/// not read).
fn within_values(held: &[(i64, i64)], limits: ClaimLimits) -> Vec<(i64, i64)> {
    let mut taken = Vec::with_capacity(held.len());
    let mut values = 0;
    for &(id, n) in held {
        let cost = if n > limits.values_per_row { 0 } else { n };
        if !taken.is_empty() && values + cost > limits.values {
            break;
        }
        values += cost;
        taken.push((id, n));
    }
    taken
}

/// The advisory lock that claims inbox row `id` for a poller's transaction, in the two-key
/// form (a key space of its own, apart from the one-key range locks): `(CLAIM_LOCK + (id >>
/// 31), id & (2^31 - 1))`, `CLAIM_LOCK` being "thry" in ASCII. Shown in `pg_locks` as
/// `locktype = 'advisory'`, `classid`/`objid` those two numbers.
pub const CLAIM_LOCK: i32 = 1_952_936_569;

/// The advisory lock a poller's transaction holds on each user whose rows it claimed:
/// `(USER_CLAIM_LOCK, hashtext(end_user_id))`, `''` for rows without a user.
pub const USER_CLAIM_LOCK: i32 = 1_952_936_568;

/// In the current transaction, makes any lock wait end (55P03) at half the statement timeout
/// in force, so that a statement that fails waiting for a lock says so instead of ending in a
/// statement timeout (57014) that looks like the row's own slowness. No-op without one.
pub async fn bound_lock_waits(executor: impl PgExecutor<'_>) -> sqlx::Result<()> {
    sqlx::query(
        "SELECT set_config('lock_timeout', (t.ms / 2 + 1)::text, true)
         FROM (SELECT setting::bigint AS ms FROM pg_settings WHERE name = 'statement_timeout') t
         WHERE t.ms > 0",
    )
    .execute(executor)
    .await?;
    Ok(())
}

/// Claims one row ([`claim_pending`]'s way) if it is still pending and free; its payload
/// only if it carries at most `values_per_row` values.
pub async fn claim_one(
    conn: &mut PgConnection,
    id: i64,
    values_per_row: i64,
) -> sqlx::Result<Option<PendingRow>> {
    let claimed: bool = sqlx::query_scalar(
        "SELECT pg_try_advisory_xact_lock($2 + ($1::bigint >> 31)::integer,
                                          ($1::bigint & 2147483647)::integer)",
    )
    .bind(id)
    .bind(CLAIM_LOCK)
    .fetch_one(&mut *conn)
    .await?;
    if !claimed {
        return Ok(None);
    }
    sqlx::query_as(&format!(
        "SELECT {PENDING_COLUMNS}, c.n AS value_count,
                CASE WHEN i.data_source_id IS NULL AND c.n <= $2 THEN i.payload END AS payload
         FROM thryve.inbox i, LATERAL (SELECT {VALUE_COUNT} AS n) c
         WHERE i.id = $1 AND i.status = 'pending'"
    ))
    .bind(id)
    .bind(values_per_row)
    .fetch_optional(&mut *conn)
    .await
}

/// Sets the final status of rows the poller has handled; `errors[i]` goes with `ids[i]`.
pub async fn finish(
    executor: impl PgExecutor<'_>,
    ids: &[i64],
    statuses: &[Status],
    errors: &[Option<String>],
) -> sqlx::Result<u64> {
    if ids.is_empty() {
        return Ok(0);
    }
    // Row locks in fingerprint order, the order the receiver's upsert takes them in, so
    // that a poller finishing and a receiver counting a duplicate never wait on each other
    // in a cycle (the claim itself locks no row: see [`claim_pending`]). The UPDATE names
    // `locked` so that it runs: a CTE no one reads is never executed.
    let done = sqlx::query(
        "WITH locked AS MATERIALIZED (
             SELECT id FROM thryve.inbox WHERE id = ANY ($1) ORDER BY fingerprint FOR UPDATE)
         UPDATE thryve.inbox i SET status = u.status, error = coalesce(u.error, i.error),
                processed_at = CASE WHEN u.status = 'processed' THEN now() ELSE i.processed_at END
         FROM unnest($1::bigint[], $2::text[], $3::text[]) AS u(id, status, error)
         WHERE i.id = u.id AND i.id IN (SELECT id FROM locked)",
    )
    .bind(ids)
    .bind(statuses)
    .bind(errors)
    .execute(executor)
    .await?;
    Ok(done.rows_affected())
}

/// A row of `thryve.inbox` without its payload, as `thryve-bridge inbox list` prints it.
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
pub struct InboxSummary {
    pub id: i64,
    /// SHA-256 of the canonical JSON, in hex.
    pub fingerprint: String,
    pub event_type: Option<String>,
    pub end_user_id: Option<String>,
    pub end_user_alias: Option<String>,
    pub status: Status,
    pub error: Option<String>,
    pub delivery_count: i32,
    pub first_received_at: DateTime<Utc>,
    pub last_received_at: DateTime<Utc>,
    pub processed_at: Option<DateTime<Utc>>,
    pub data_source_id: Option<i32>,
    pub data_type_ids: Option<Vec<i32>>,
    pub start_time: Option<DateTime<Utc>>,
    pub end_time: Option<DateTime<Utc>>,
    pub start_day: Option<NaiveDate>,
    pub end_day: Option<NaiveDate>,
    pub connected: Option<bool>,
    pub event_time: Option<DateTime<Utc>>,
    /// W3C `traceparent` of the latest delivery of this content, to quote to Thryve.
    pub traceparent: Option<String>,
}

/// A whole row of `thryve.inbox`.
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
pub struct InboxRow {
    #[serde(flatten)]
    #[sqlx(flatten)]
    pub summary: InboxSummary,
    /// The decoded body; JSON `null` once payload retention has blanked it.
    pub payload: Value,
}

const SUMMARY_COLUMNS: &str = "id, encode(fingerprint, 'hex') AS fingerprint, event_type,
    end_user_id, end_user_alias, status, error, delivery_count, first_received_at,
    last_received_at, processed_at, data_source_id, data_type_ids, start_time, end_time,
    start_day, end_day, connected, event_time, traceparent";

/// One row, payload included.
pub async fn get(executor: impl PgExecutor<'_>, id: i64) -> sqlx::Result<Option<InboxRow>> {
    sqlx::query_as(&format!(
        "SELECT {SUMMARY_COLUMNS}, payload FROM thryve.inbox WHERE id = $1"
    ))
    .bind(id)
    .fetch_optional(executor)
    .await
}

/// Rows in `status` (every status when `None`; of `end_user_id` if given), newest first, at most `limit`.
pub async fn list(
    executor: impl PgExecutor<'_>,
    status: Option<Status>,
    end_user_id: Option<&str>,
    limit: i64,
) -> sqlx::Result<Vec<InboxSummary>> {
    sqlx::query_as(&format!(
        "SELECT {SUMMARY_COLUMNS} FROM thryve.inbox
         WHERE ($1::text IS NULL OR status = $1) AND ($2::text IS NULL OR end_user_id = $2)
         ORDER BY id DESC LIMIT $3"
    ))
    .bind(status)
    .bind(end_user_id)
    .bind(limit)
    .fetch_all(executor)
    .await
}

/// Deletes up to `limit` `processed` rows processed more than `older_than` ago (by the
/// database's clock), skipping rows someone else holds; returns how many it deleted. Never
/// touches other statuses. A re-delivery racing the delete either turns the row `pending`
/// first (and the row is skipped) or waits for the delete and is stored anew.
pub async fn delete_processed(
    executor: impl PgExecutor<'_>,
    older_than: Duration,
    limit: i64,
) -> sqlx::Result<u64> {
    crate::db::bounded_batch(
        executor,
        "DELETE FROM thryve.inbox",
        "thryve.inbox",
        "status = 'processed' AND processed_at < now() - make_interval(secs => $1)",
        older_than,
        limit,
    )
    .await
}

/// Sets the payload of up to `limit` `processed` rows processed more than `older_than` ago to
/// JSON `null` (JSON, not SQL: the column stays NOT NULL, and no real body is `null`, since
/// the receiver stores only objects). Typed columns and the fingerprint stay, so a late
/// re-delivery is still a duplicate, and brings the payload back. Returns how many it blanked.
pub async fn blank_payloads(
    executor: impl PgExecutor<'_>,
    older_than: Duration,
    limit: i64,
) -> sqlx::Result<u64> {
    crate::db::bounded_batch(
        executor,
        "UPDATE thryve.inbox SET payload = 'null'::jsonb",
        "thryve.inbox",
        "status = 'processed' AND payload <> 'null'::jsonb
           AND processed_at < now() - make_interval(secs => $1)",
        older_than,
        limit,
    )
    .await
}

/// `NOTIFY thryve_inbox` ([`db::INBOX_CHANNEL`]): pollers in every process look for pending
/// rows at once (delivered when the surrounding transaction commits).
pub async fn notify(executor: impl PgExecutor<'_>) -> sqlx::Result<()> {
    sqlx::query("SELECT pg_notify($1, '')")
        .bind(db::INBOX_CHANNEL)
        .execute(executor)
        .await
        .map(drop)
}

/// Where [`replay`] put each row it read again.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ReplayReport {
    /// Rows that parse now: typed columns filled, back to `pending` for the poller.
    pub pending: Vec<i64>,
    /// Rows still invalid; `error` holds today's reason.
    pub quarantined: Vec<i64>,
    /// Rows of a type the bridge still does not handle.
    pub ignored: Vec<i64>,
}

/// Runs `quarantined` and `ignored` rows (only those in `status`, or only row `id`, if given)
/// through today's parser, oldest first, at most `limit`, in one transaction: each row gets
/// the status, reason, envelope and typed columns a first delivery of its payload would get
/// now. Fingerprint, payload and delivery counts stay. Other statuses are never touched.
pub async fn replay(
    conn: &mut PgConnection,
    status: Option<Status>,
    id: Option<i64>,
    limit: i64,
) -> sqlx::Result<ReplayReport> {
    let mut tx = conn.begin().await?;
    let rows: Vec<(i64, Value)> = sqlx::query_as(
        "SELECT id, payload FROM thryve.inbox
         WHERE status IN ('quarantined', 'ignored') AND ($1::text IS NULL OR status = $1)
           AND ($2::bigint IS NULL OR id = $2) AND jsonb_typeof(payload) = 'object'
         ORDER BY id LIMIT $3 FOR UPDATE SKIP LOCKED",
    )
    .bind(status.map(Status::as_str))
    .bind(id)
    .bind(limit)
    .fetch_all(&mut *tx)
    .await?;
    let mut report = ReplayReport::default();
    let mut ids = Vec::with_capacity(rows.len());
    let mut deliveries = Vec::with_capacity(rows.len());
    for (id, payload) in rows {
        let Value::Object(body) = payload else {
            continue;
        };
        let delivery = NewDelivery::from_body(&body);
        match delivery.status {
            Status::Pending | Status::Processed => report.pending.push(id),
            Status::Quarantined => report.quarantined.push(id),
            Status::Ignored => report.ignored.push(id),
        }
        ids.push(id);
        deliveries.push(delivery);
    }
    let mut classified = columns::Classified::default();
    for delivery in &deliveries {
        classified.push(delivery);
    }
    let mut args = PgArguments::default();
    args.add(ids).map_err(sqlx::Error::Encode)?;
    classified.arguments(&mut args)?;
    sqlx::query_with(&columns::REPLAY, args)
        .execute(&mut *tx)
        .await?;
    if !report.pending.is_empty() {
        // Delivered at commit, so pollers in every process start on the rows at once.
        notify(&mut *tx).await?;
    }
    tx.commit().await?;
    Ok(report)
}
