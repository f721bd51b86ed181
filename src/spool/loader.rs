//! Loading the spool into the inbox: segment by segment, each in one transaction, a segment
//! refused as a whole record by record, with what the inbox refuses set aside.

use std::{collections::HashMap, io, sync::Arc, time::Duration};

use sqlx::PgPool;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::{decode_segment, Record, Segment, Spool};
use crate::{
    db::{self, Failure, PhasedError},
    inbox::{self, NewDelivery},
    service::{Backoff, Pass, Service, Services, Wake},
};

/// How often the loader looks for records when nothing wakes it (a commit of this process
/// wakes it at once: the database is back).
pub const CHECK_INTERVAL: Duration = Duration::from_secs(1);
/// Rows per `insert_batch` statement while loading (all of a segment's in one transaction).
const LOAD_CHUNK: usize = 250;
/// Waits after failed loads: short at first, as the database is often back at once.
const RETRY_MIN: Duration = Duration::from_millis(250);
const RETRY_MAX: Duration = Duration::from_secs(5);

/// What loading one segment did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SegmentReport {
    pub records: usize,
    /// Rows that did not exist before.
    pub inserted: usize,
    /// Records whose content was already a row (loaded before, or also committed directly).
    pub duplicates: usize,
    pub rejected: usize,
    pub torn_bytes: usize,
}

/// Why a segment could not be loaded now; it stays and is tried again.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("database: {0}")]
    Database(#[from] PhasedError),
    /// The database is not at this binary's migration (recreated or restored without the
    /// bridge's schema, or behind): the records wait for `migrate`.
    #[error("{0}")]
    NotMigrated(db::NotReady),
    #[error("spool file: {0}")]
    Io(#[from] io::Error),
}

/// Loads sealed segments into the inbox whenever the spool holds records: at start, every
/// second, and at once when an inbox write succeeds (the database is back). A segment is
/// deleted only after its rows committed; a crash in between loads it again, which only adds
/// to the rows' `delivery_count` (`insert_batch` is idempotent through the fingerprint).
pub struct SpoolLoader {
    spool: Spool,
    pool: PgPool,
    committed: Arc<watch::Sender<u64>>,
}

impl SpoolLoader {
    /// `committed` is bumped after each loaded segment, as the inbox writers do, so pollers wake.
    pub fn new(spool: Spool, pool: PgPool, committed: Arc<watch::Sender<u64>>) -> Self {
        Self {
            spool,
            pool,
            committed,
        }
    }

    /// Starts it in `services`: it looks every [`CHECK_INTERVAL`], and at once when `commits`
    /// changes (a write went through: the database is back).
    pub fn start(self, services: &mut Services, commits: watch::Receiver<u64>) {
        services.start(self, Wake::every(CHECK_INTERVAL).or(commits));
    }

    /// Loads every segment, oldest first, until none is left or one fails.
    pub async fn load_all(&self, shutdown: &CancellationToken) -> Result<(), LoadError> {
        let mut loaded_any = false;
        while !shutdown.is_cancelled() {
            let spool = self.spool.clone();
            // Sealing may wait for the writer thread's fsync: off the async workers.
            let next = tokio::task::spawn_blocking(move || spool.next_to_load())
                .await
                .map_err(io::Error::other)?;
            let Some(segment) = next else {
                if loaded_any {
                    give_back_memory();
                }
                return Ok(());
            };
            loaded_any = true;
            let report = self.load(&segment).await?;
            tracing::info!(
                segment = segment.seq,
                records = report.records,
                inserted = report.inserted,
                duplicates = report.duplicates,
                rejected = report.rejected,
                torn_bytes = report.torn_bytes,
                waiting = self.spool.waiting(),
                "spool segment loaded"
            );
        }
        Ok(())
    }

    /// Loads one segment in one transaction, then deletes it.
    async fn load(&self, segment: &Segment) -> Result<SegmentReport, LoadError> {
        let bytes = read_segment(segment).await?;
        let decoded = decode_segment(&bytes);
        if decoded.torn > 0 {
            tracing::warn!(
                segment = segment.seq,
                torn_bytes = decoded.torn,
                "spool segment ends in a torn record (a write cut short, never acknowledged); skipped"
            );
        }
        if !decoded.unreadable.is_empty() {
            tracing::error!(
                segment = segment.seq,
                lines = decoded.unreadable.len(),
                "spool segment has unreadable lines; kept in the spool's rejected file"
            );
        }
        let groups = group(&decoded.records);
        let (inserted, refused) = match self.insert_all(&groups).await {
            Ok(inserted) => (inserted, Vec::new()),
            // Failing to connect or begin, or any outage, says nothing about the records:
            // they stay in the spool until the database takes them.
            Err(e) if e.failure() == Failure::Outage => return Err(e.into()),
            Err(e) => {
                tracing::warn!(segment = segment.seq, error = %e, "spool segment refused as a whole; loading its records one by one");
                self.insert_each(segment, &groups).await?
            }
        };
        let report = SegmentReport {
            records: decoded.records.len(),
            inserted,
            duplicates: decoded.records.len() - inserted - refused.len(),
            rejected: refused.len() + decoded.unreadable.len(),
            torn_bytes: decoded.torn,
        };
        self.committed.send_modify(|n| *n += 1);
        let rejected: Vec<Vec<u8>> = decoded
            .unreadable
            .iter()
            .chain(&refused)
            .map(|l| l.to_vec())
            .collect();
        let (spool, segment) = (self.spool.clone(), segment.clone());
        tokio::task::spawn_blocking(move || {
            let rejected: Vec<&[u8]> = rejected.iter().map(Vec::as_slice).collect();
            spool.finish(&segment, &rejected)
        })
        .await
        .map_err(io::Error::other)??;
        Ok(report)
    }

    /// One record the inbox refuses must not hold back the others: loads the groups one by
    /// one; returns how many rows are new and the lines of the refused ones, to set aside.
    async fn insert_each<'a>(
        &self,
        segment: &Segment,
        groups: &[Group<'a>],
    ) -> Result<(usize, Vec<&'a [u8]>), LoadError> {
        let mut conn = self.pool.acquire().await.map_err(PhasedError::connect)?;
        let counts = counts(&mut conn, groups).await?;
        let (mut inserted, mut refused) = (0, Vec::new());
        for (group, &count) in groups.iter().zip(&counts) {
            if count == 0 {
                continue;
            }
            match inbox::insert_batch(&mut *conn, &[(&group.delivery, count)])
                .await
                .map_err(PhasedError::statement)
            {
                Ok(rows) => inserted += rows.iter().filter(|r| r.inserted).count(),
                Err(e) if e.failure() == Failure::Outage => return Err(e.into()),
                Err(e) => {
                    tracing::error!(
                        segment = segment.seq,
                        fingerprint = %hex::encode(group.delivery.fingerprint),
                        error = %e,
                        "spooled delivery refused by the inbox; kept in the spool's rejected file"
                    );
                    refused.extend(group.lines.iter().copied());
                }
            }
        }
        Ok((inserted, refused))
    }

    /// Writes every group in one transaction; returns how many rows are new.
    async fn insert_all(&self, groups: &[Group<'_>]) -> Result<usize, PhasedError> {
        let mut tx = self.pool.begin().await.map_err(PhasedError::connect)?;
        let counts = counts(&mut tx, groups).await?;
        let rows: Vec<(&NewDelivery, i32)> = groups
            .iter()
            .zip(counts)
            .filter(|(_, count)| *count > 0)
            .map(|(g, count)| (&g.delivery, count))
            .collect();
        let mut inserted = 0;
        for rows in rows.chunks(LOAD_CHUNK) {
            let written = inbox::insert_batch(&mut *tx, rows)
                .await
                .map_err(PhasedError::statement)?;
            inserted += written.iter().filter(|r| r.inserted).count();
        }
        tx.commit().await.map_err(PhasedError::statement)?;
        Ok(inserted)
    }
}

impl Service for SpoolLoader {
    const NAME: &'static str = "spool loader";
    const FAILED: &'static str = "spool not loaded yet";
    type Error = LoadError;

    /// Loads every segment there is, if any.
    async fn run_once(&mut self, shutdown: &CancellationToken) -> Result<Pass, LoadError> {
        if self.spool.waiting() > 0 {
            let loaded = match db::at_migration(&self.pool).await {
                Ok(()) => self.load_all(shutdown).await,
                Err(db::NotReady::Unreachable(error)) => {
                    Err(LoadError::Database(PhasedError::connect(error)))
                }
                Err(not_migrated) => Err(LoadError::NotMigrated(not_migrated)),
            };
            if let Err(error) = loaded {
                self.spool.metrics().load_errors.inc();
                return Err(error);
            }
        }
        Ok(Pass::Idle)
    }

    fn backoff(&self) -> Backoff {
        Backoff::new(RETRY_MIN, RETRY_MAX)
    }

    fn stopped(&self) {
        tracing::info!(waiting = self.spool.waiting(), "spool loader stopped");
    }
}

/// A segment's bytes; none if someone else removed it.
async fn read_segment(segment: &Segment) -> io::Result<Vec<u8>> {
    match tokio::fs::read(&segment.path).await {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            tracing::warn!(
                segment = segment.seq,
                "spool segment removed by someone else; its records are gone"
            );
            Ok(Vec::new())
        }
        read => read,
    }
}

/// Identical content becomes one row with its count, as the writers' group commit does;
/// groups come in fingerprint order so concurrent writers cannot deadlock with the load.
fn group<'a>(records: &[(Record, &'a [u8])]) -> Vec<Group<'a>> {
    let mut groups: HashMap<[u8; 32], Group> = HashMap::new();
    for (record, line) in records {
        let mut delivery = NewDelivery::from_body(&record.body);
        delivery.received_at = Some(record.received_at);
        let group = groups.entry(delivery.fingerprint).or_insert_with(|| Group {
            delivery,
            lines: Vec::new(),
            maybe_stored: 0,
        });
        let earliest = group.delivery.received_at.min(Some(record.received_at));
        group.delivery.received_at = earliest;
        // Lines are in arrival order: the row keeps the latest trace id, as live writes do.
        if record.traceparent.is_some() {
            group.delivery.traceparent.clone_from(&record.traceparent);
        }
        group.lines.push(line);
        group.maybe_stored += usize::from(record.maybe_stored);
    }
    let mut groups: Vec<Group> = groups.into_values().collect();
    groups.sort_by_key(|g| g.delivery.fingerprint);
    groups
}

struct Group<'a> {
    delivery: NewDelivery,
    lines: Vec<&'a [u8]>,
    /// How many of the lines are marked `maybe_stored`.
    maybe_stored: usize,
}

impl Group<'_> {
    /// The count a group adds to its row: every line, except that lines marked
    /// `maybe_stored` add nothing when the row is already there (the write they were
    /// spooled after may have committed it).
    fn count(&self, in_inbox: bool) -> i32 {
        let lines = if in_inbox {
            self.lines.len() - self.maybe_stored
        } else {
            self.lines.len()
        };
        i32::try_from(lines).unwrap_or(i32::MAX)
    }
}

/// What each group adds to its row ([`Group::count`]); asks the inbox only about groups with
/// a line marked `maybe_stored`.
async fn counts(
    conn: &mut sqlx::PgConnection,
    groups: &[Group<'_>],
) -> Result<Vec<i32>, PhasedError> {
    let unsure: Vec<&[u8]> = groups
        .iter()
        .filter(|g| g.maybe_stored > 0)
        .map(|g| g.delivery.fingerprint.as_slice())
        .collect();
    let found = if unsure.is_empty() {
        Default::default()
    } else {
        inbox::existing(&mut *conn, &unsure)
            .await
            .map_err(PhasedError::statement)?
    };
    Ok(groups
        .iter()
        .map(|g| g.count(found.contains_key(&g.delivery.fingerprint[..])))
        .collect())
}

/// Gives the heap a load freed back to the system. glibc keeps what its arenas freed for
/// reuse: the memory of reading and binding a backlog of segments (each up to
/// `SEGMENT_MAX_BYTES` of deliveries) stayed resident after the load, for good.
fn give_back_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free pages of the heap to the kernel; it takes the
    // arenas' locks itself.
    unsafe {
        libc::malloc_trim(0);
    }
}
