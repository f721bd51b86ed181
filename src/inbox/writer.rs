//! Group commit: concurrent deliveries share one INSERT (one commit), each answered only after it.

use std::{collections::HashMap, sync::Arc, time::Duration};

use sqlx::{PgConnection, PgPool};
use tokio::{
    sync::{mpsc, oneshot, watch, Mutex},
    task::JoinHandle,
};
use tokio_util::sync::CancellationToken;

use super::{insert_batch, notify, NewDelivery, Outcome, Receipt};
use crate::{
    db::{self, Failure, Phase},
    service::{Backoff, Pass, Service, Services, Wake},
};

/// Why a delivery was not committed.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// No connection could be had (see [`Phase::Connect`]): nothing was sent.
    #[error("database unavailable: {0}")]
    Connect(sqlx::Error),
    /// The INSERT failed: refused, or its outcome unknown if the connection was lost.
    #[error("database error: {0}")]
    Statement(sqlx::Error),
    /// The connection was lost mid-write, and a fresh connection found none of the batch's
    /// rows: nothing was stored.
    #[error("database error: {0} (checked since: not stored)")]
    NotCommitted(sqlx::Error),
    #[error("the inbox writer has stopped")]
    Closed,
}

/// What a 503 can truthfully say about a delivery: a write under way at the deadline (or cut
/// off with its connection) may still commit after the answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MaybeStored {
    /// The database never got it (no connection), or refused it.
    No,
    /// It may have been stored; a resend is counted as a duplicate of it if so.
    Maybe,
}

impl std::fmt::Display for MaybeStored {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            MaybeStored::No => "nothing was stored, resend later",
            MaybeStored::Maybe => "not acknowledged; it may have been stored, resend",
        })
    }
}

impl WriteError {
    /// Whether the delivery may be in the inbox after this error. An error the database sent
    /// back means the INSERT (its own transaction) did not commit; a connection lost
    /// mid-statement leaves that unknown.
    pub fn stored(&self) -> MaybeStored {
        match self {
            WriteError::Connect(_)
            | WriteError::Closed
            | WriteError::NotCommitted(_)
            | WriteError::Statement(sqlx::Error::Database(_)) => MaybeStored::No,
            WriteError::Statement(_) => MaybeStored::Maybe,
        }
    }

    /// Whether the database was out (the same write may succeed later, from the spool) or
    /// refused this delivery.
    pub fn failure(&self) -> Failure {
        match self {
            WriteError::Connect(e) => db::classify(Phase::Connect, e),
            WriteError::Statement(e) | WriteError::NotCommitted(e) => {
                db::classify(Phase::Statement, e)
            }
            WriteError::Closed => Failure::Outage,
        }
    }

    /// Whether the deliveries of a failed batch are worth one statement each: the database
    /// refused the batch for its content, or answered with an error one row may have raised
    /// whatever its class (a trigger's `disk_full`, a deadlock), so that only the delivery
    /// that causes it is answered 503. Not after a timeout or a lock wait, which each
    /// delivery alone would only sit through again, nor when the connection was lost (the
    /// batch may have committed).
    fn retried_one_by_one(&self) -> bool {
        match self {
            WriteError::Statement(error @ sqlx::Error::Database(_)) => {
                !db::is_timeout(error) && !db::is_lock_wait(error)
            }
            _ => self.failure() == Failure::Refused,
        }
    }
}

struct Job {
    delivery: NewDelivery,
    reply: oneshot::Sender<Result<Receipt, Arc<WriteError>>>,
}

/// A delivery in the queue. Its requester takes it back when it stops waiting, so that a
/// queue stuck behind a locked inbox holds no bodies nobody waits for (they would be memory
/// outside the receiver's body budget).
type Slot = Arc<std::sync::Mutex<Option<NewDelivery>>>;

struct Queued {
    delivery: Slot,
    reply: oneshot::Sender<Result<Receipt, Arc<WriteError>>>,
}

impl Queued {
    /// The job, unless its requester has gone.
    fn take(self) -> Option<Job> {
        if self.reply.is_closed() {
            return None;
        }
        let delivery = lock(&self.delivery).take()?;
        Some(Job {
            delivery,
            reply: self.reply,
        })
    }
}

fn lock(slot: &Slot) -> std::sync::MutexGuard<'_, Option<NewDelivery>> {
    // An Option stays valid whatever a panicking holder did.
    slot.lock().unwrap_or_else(|e| e.into_inner())
}

/// Empties the slot when the requester's wait ends, answered or abandoned.
struct Reclaim(Slot);

impl Drop for Reclaim {
    fn drop(&mut self) {
        lock(&self.0).take();
    }
}

/// Hands deliveries to a few writer tasks that each take whatever has queued up (up to
/// `batch_max`) and write it in one statement. An idle writer takes the next delivery at
/// once, so a lone request waits for nothing; under load, batches form by themselves.
///
/// The writers stop once every clone of the `InboxWriter` is dropped and the queue is empty,
/// so a server that drains its requests before dropping its state loses nothing queued.
#[derive(Clone)]
pub struct InboxWriter {
    queue: mpsc::Sender<Queued>,
}

impl InboxWriter {
    /// Starts `writers` tasks on `pool`; `committed` is bumped after every successful write
    /// (the poller and the NOTIFY task watch it).
    pub fn start(
        pool: PgPool,
        writers: usize,
        batch_max: usize,
        committed: Arc<watch::Sender<u64>>,
    ) -> (Self, Vec<JoinHandle<()>>) {
        let batch_max = batch_max.max(1);
        let (queue, jobs) = mpsc::channel(batch_max * writers.max(1) * 4);
        let jobs = Arc::new(Mutex::new(jobs));
        let tasks = (0..writers.max(1))
            .map(|_| {
                tokio::spawn(write_loop(
                    pool.clone(),
                    jobs.clone(),
                    batch_max,
                    committed.clone(),
                ))
            })
            .collect();
        (Self { queue }, tasks)
    }

    /// Commits `delivery` and says how it was taken. Dropping the returned future abandons
    /// the wait: a delivery still queued is then not written, one already being written may
    /// still commit (a later retry is then a duplicate).
    pub async fn store(&self, delivery: NewDelivery) -> Result<Receipt, Arc<WriteError>> {
        let (reply, answer) = oneshot::channel();
        let slot = Arc::new(std::sync::Mutex::new(Some(delivery)));
        let _reclaim = Reclaim(slot.clone());
        self.queue
            .send(Queued {
                delivery: slot,
                reply,
            })
            .await
            .map_err(|_| Arc::new(WriteError::Closed))?;
        answer.await.map_err(|_| Arc::new(WriteError::Closed))?
    }
}

async fn write_loop(
    pool: PgPool,
    jobs: Arc<Mutex<mpsc::Receiver<Queued>>>,
    batch_max: usize,
    committed: Arc<watch::Sender<u64>>,
) {
    loop {
        let mut batch = Vec::new();
        {
            let mut jobs = jobs.lock().await;
            match jobs.recv().await {
                Some(job) => batch.push(job),
                None => return,
            }
            while batch.len() < batch_max {
                match jobs.try_recv() {
                    Ok(job) => batch.push(job),
                    Err(_) => break,
                }
            }
        }
        // A requester that stopped waiting has already answered (spooled, or 503 so Thryve
        // retries): writing its delivery now would only add work after an outage.
        let batch: Vec<Job> = batch.into_iter().filter_map(Queued::take).collect();
        if !batch.is_empty() {
            write_batch(&pool, batch, &committed).await;
        }
    }
}

/// Writes a batch on one connection. Identical deliveries in one batch become one row with
/// their count; the first of them gets the row's outcome and the rest `duplicate`, as if they
/// had come one after another.
async fn write_batch(pool: &PgPool, batch: Vec<Job>, committed: &watch::Sender<u64>) {
    // Acquired apart from the statement, so that a failure to connect is never mistaken for
    // the database refusing these rows.
    let mut conn = match pool.acquire().await {
        Ok(conn) => conn,
        Err(error) => return fail(group(batch), WriteError::Connect(error)),
    };
    // Waiting for the connection may outlast a requester's deadline: it has been answered
    // (503, or spooled), and its delivery written now would only add work after an outage.
    let groups = group(batch.into_iter().filter(|job| !job.reply.is_closed()));
    if groups.is_empty() {
        return;
    }
    match write_groups(&mut conn, &groups).await {
        Ok(receipts) => {
            committed.send_modify(|n| *n += 1);
            answer(groups, receipts);
        }
        // A failed statement may come from one row: write the rows one by one so the others
        // still commit and only the bad one is answered 503.
        Err(error) if groups.len() > 1 && error.retried_one_by_one() => {
            for group in groups {
                let group = vec![group];
                match write_groups(&mut conn, &group).await {
                    Ok(receipts) => {
                        committed.send_modify(|n| *n += 1);
                        answer(group, receipts);
                    }
                    Err(error) => settle(pool, group, error, committed).await,
                }
            }
        }
        Err(error) => {
            drop(conn);
            settle(pool, groups, error, committed).await
        }
    }
}

/// Answers the jobs of a failed write. When the connection cannot tell whether it committed
/// (lost mid-commit, a protocol error), asks on a connection of its own: deliveries whose
/// content is now a row are answered with it (committed by this write, or there before:
/// either way in the inbox, which the lost connection could not say which), the others as
/// not stored. Only if that question fails too do they stay "may have been stored".
async fn settle(
    pool: &PgPool,
    groups: Vec<Vec<Job>>,
    error: WriteError,
    committed: &watch::Sender<u64>,
) {
    let cause = match error {
        WriteError::Statement(cause) if error_stored_unknown(&cause) => cause,
        error => return fail(groups, error),
    };
    let fingerprints: Vec<&[u8]> = groups
        .iter()
        .map(|g| g[0].delivery.fingerprint.as_slice())
        .collect();
    let found = match recheck(pool, &fingerprints).await {
        Ok(found) => found,
        Err(recheck) => {
            tracing::warn!(%recheck, "could not tell whether a write cut off committed");
            return fail(groups, WriteError::Statement(cause));
        }
    };
    tracing::warn!(
        error = %cause,
        deliveries = groups.len(),
        committed = found.len(),
        "inbox write cut off; checked on a fresh connection whether it committed"
    );
    let (stored, not_stored): (Vec<_>, Vec<_>) = groups
        .into_iter()
        .partition(|g| found.contains_key(&g[0].delivery.fingerprint[..]));
    if !stored.is_empty() {
        committed.send_modify(|n| *n += 1);
        let receipts = stored
            .iter()
            .map(|g| Receipt {
                inbox_id: found[&g[0].delivery.fingerprint[..]],
                outcome: Outcome::Duplicate,
            })
            .collect();
        answer(stored, receipts);
    }
    if !not_stored.is_empty() {
        fail(not_stored, WriteError::NotCommitted(cause));
    }
}

/// Whether a failed INSERT may have committed: only when the database sent no answer.
fn error_stored_unknown(cause: &sqlx::Error) -> bool {
    !matches!(cause, sqlx::Error::Database(_))
}

/// [`super::existing`] on a new connection, not one of the pool's (which may have been cut
/// off as the one that failed was).
async fn recheck(pool: &PgPool, fingerprints: &[&[u8]]) -> sqlx::Result<HashMap<Vec<u8>, i64>> {
    let mut conn =
        <PgConnection as sqlx::Connection>::connect_with(&pool.connect_options()).await?;
    let found = super::existing(&mut conn, fingerprints).await;
    let _ = sqlx::Connection::close(conn).await;
    found
}

/// Jobs of identical content together, in the order each content first came.
fn group(batch: impl IntoIterator<Item = Job>) -> Vec<Vec<Job>> {
    let mut groups: Vec<Vec<Job>> = Vec::new();
    let mut index: HashMap<[u8; 32], usize> = HashMap::new();
    for job in batch {
        match index.get(&job.delivery.fingerprint) {
            Some(&i) => groups[i].push(job),
            None => {
                index.insert(job.delivery.fingerprint, groups.len());
                groups.push(vec![job]);
            }
        }
    }
    groups
}

async fn write_groups(
    conn: &mut PgConnection,
    groups: &[Vec<Job>],
) -> Result<Vec<Receipt>, WriteError> {
    let rows: Vec<(&NewDelivery, i32)> = groups
        .iter()
        .map(|g| (&g[0].delivery, i32::try_from(g.len()).unwrap_or(i32::MAX)))
        .collect();
    let written = insert_batch(&mut *conn, &rows)
        .await
        .map_err(WriteError::Statement)?;
    let by_fingerprint: HashMap<&[u8], (i64, bool)> = written
        .iter()
        .map(|r| (r.fingerprint.as_slice(), (r.id, r.inserted)))
        .collect();
    groups
        .iter()
        .map(|g| {
            let d = &g[0].delivery;
            let &(inbox_id, inserted) = by_fingerprint
                .get(&d.fingerprint[..])
                .ok_or(WriteError::Statement(sqlx::Error::RowNotFound))?;
            let outcome = if inserted {
                d.first_outcome()
            } else {
                Outcome::Duplicate
            };
            Ok(Receipt { inbox_id, outcome })
        })
        .collect()
}

fn answer(groups: Vec<Vec<Job>>, receipts: Vec<Receipt>) {
    for (group, receipt) in groups.into_iter().zip(receipts) {
        for (i, job) in group.into_iter().enumerate() {
            let outcome = if i == 0 {
                receipt.outcome
            } else {
                Outcome::Duplicate
            };
            // The requester may have given up at its deadline; the row is committed regardless.
            let _ = job.reply.send(Ok(Receipt {
                inbox_id: receipt.inbox_id,
                outcome,
            }));
        }
    }
}

fn fail(groups: Vec<Vec<Job>>, error: WriteError) {
    let error = Arc::new(error);
    for job in groups.into_iter().flatten() {
        let _ = job.reply.send(Err(error.clone()));
    }
}

/// Tells pollers in other processes that the inbox has new rows: one `NOTIFY thryve_inbox` per
/// burst of commits, sent from here rather than inside each commit so it adds nothing to ack
/// latency.
pub struct Notifier {
    pool: PgPool,
}

impl Notifier {
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }

    /// A NOTIFY per change of `commits` (the writers' and the spool loader's).
    pub fn start(self, services: &mut Services, commits: watch::Receiver<u64>) {
        services.start(self, Wake::on(commits));
    }
}

impl Service for Notifier {
    const NAME: &'static str = "notifier";
    const FAILED: &'static str = "NOTIFY failed; pollers elsewhere fall back to their interval";
    type Error = sqlx::Error;

    async fn run_once(&mut self, _: &CancellationToken) -> sqlx::Result<Pass> {
        notify(&self.pool).await?;
        Ok(Pass::Idle)
    }

    fn backoff(&self) -> Backoff {
        Backoff::new(Duration::from_millis(250), Duration::from_secs(5))
    }
}
