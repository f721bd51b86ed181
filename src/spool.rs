//! The outage spool: a delivery the database cannot take within the ack deadline is fsync'd
//! to a local segment file before its 200, and [`SpoolLoader`] moves it into the inbox later.
//!
//! Layout of `SPOOL_DIR`: `spool.lock` (held by the one process that owns the directory),
//! `segment-<seq>.jsonl` (one JSON line per delivery: `{"received_at":...,"body":{...}}`;
//! new lines go to the newest segment only), and `rejected-<seq>.jsonl` (lines the inbox
//! refused for their content or that could not be read, set aside for an operator, who lists
//! them with [`list_set_aside`] and loads them again with [`Spool::requeue_set_aside`]). An
//! outage, whatever the database says while connecting, never sets a record aside.

use std::{
    collections::{HashMap, VecDeque},
    fs::{self, File, OpenOptions, TryLockError},
    io::{self, Write},
    path::{Path, PathBuf},
    sync::{Arc, Mutex, MutexGuard},
    time::Duration,
};

use chrono::{DateTime, Utc};
use prometheus_client::metrics::{counter::Counter, gauge::Gauge};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sqlx::PgPool;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;

use crate::{
    db::{Failure, PhasedError},
    inbox::{self, NewDelivery},
};

/// A segment takes new lines until it holds this many records (or [`SEGMENT_MAX_BYTES`]);
/// each segment is loaded in one transaction.
pub const SEGMENT_MAX_RECORDS: usize = 1000;
pub const SEGMENT_MAX_BYTES: u64 = 16 * 1024 * 1024;
const LOCK_FILE: &str = "spool.lock";
const SEGMENT_PREFIX: &str = "segment-";
const REJECTED_PREFIX: &str = "rejected-";
const SUFFIX: &str = ".jsonl";
/// Most appends that share one fsync.
const GROUP_MAX: usize = 256;
/// Rows per `insert_batch` statement while loading (all of a segment's in one transaction).
const LOAD_CHUNK: usize = 250;
const CHECK_INTERVAL: Duration = Duration::from_secs(1);
const RETRY_MIN: Duration = Duration::from_millis(250);
const RETRY_MAX: Duration = Duration::from_secs(5);

/// One spooled delivery: what [`NewDelivery`] is rebuilt from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    pub received_at: DateTime<Utc>,
    /// The delivery's W3C `traceparent` (absent in lines written before it was kept).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<String>,
    pub body: Map<String, Value>,
}

/// Serialises a record as one line, newline included; `body` is the JSON text of an object.
///
/// ```
/// use thryve_bridge::spool::{decode_segment, encode_record};
/// let body = serde_json::json!({"type": "x"});
/// let line = encode_record(&body.to_string(), chrono::Utc::now());
/// assert_eq!(decode_segment(&line).records.len(), 1);
/// ```
pub fn encode_record(body: &str, received_at: DateTime<Utc>) -> Vec<u8> {
    encode_traced_record(body, received_at, None)
}

/// [`encode_record`] with the delivery's `traceparent`, kept so the row gets it when loaded.
pub fn encode_traced_record(
    body: &str,
    received_at: DateTime<Utc>,
    traceparent: Option<&str>,
) -> Vec<u8> {
    // `body` is JSON text (the delivery's canonical payload: compact, so without a newline);
    // it goes into the line as it is, not parsed and printed again.
    let mut line = Vec::with_capacity(body.len() + 128);
    line.extend_from_slice(b"{\"received_at\":");
    serde_json::to_writer(&mut line, &received_at).expect("a timestamp always serialises");
    if let Some(traceparent) = traceparent {
        line.extend_from_slice(b",\"traceparent\":");
        serde_json::to_writer(&mut line, traceparent).expect("a string always serialises");
    }
    line.extend_from_slice(b",\"body\":");
    line.extend_from_slice(body.as_bytes());
    line.extend_from_slice(b"}\n");
    line
}

/// What a segment's bytes hold.
#[derive(Debug, Default)]
pub struct Decoded<'a> {
    /// Complete records, in file order, each with its line (newline excluded).
    pub records: Vec<(Record, &'a [u8])>,
    /// Complete lines that are not a record (kept aside as rejected, never dropped silently).
    pub unreadable: Vec<&'a [u8]>,
    /// Bytes after the last newline: a write cut short, never acknowledged.
    pub torn: usize,
}

/// Splits a segment into records. A record counts only with its newline: a torn last line
/// (the process died mid-write, before the fsync that would have let it be acknowledged)
/// is skipped rather than poisoning the records before it.
pub fn decode_segment(bytes: &[u8]) -> Decoded<'_> {
    let complete = bytes
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |last| last + 1);
    let mut decoded = Decoded {
        torn: bytes.len() - complete,
        ..Decoded::default()
    };
    for line in bytes[..complete].split(|&b| b == b'\n') {
        if line.is_empty() {
            continue;
        }
        match serde_json::from_slice::<Record>(line) {
            Ok(record) => decoded.records.push((record, line)),
            Err(_) => decoded.unreadable.push(line),
        }
    }
    decoded
}

/// Why the spool directory cannot be used; the message names the directory.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("{0}: held by another process (one spool directory per process)")]
    Locked(PathBuf),
    #[error("{0}: {1}")]
    Io(PathBuf, io::Error),
}

/// Why an append was not made durable.
#[derive(Debug, Clone, thiserror::Error)]
#[error("spool write failed: {0}")]
pub struct AppendError(Arc<io::Error>);

/// Metrics the spool keeps up to date.
#[derive(Clone, Default)]
pub struct SpoolMetrics {
    /// Records on disk waiting to be loaded.
    pub waiting: Gauge,
    /// Records ever set aside in `rejected-*.jsonl` by this process.
    pub rejected: Counter,
    /// Records in `rejected-*.jsonl` now: stays above 0 until an operator has dealt with them.
    pub set_aside: Gauge,
    /// Attempts to load that failed (the database out): the records stay and are retried.
    pub load_errors: Counter,
}

/// A handle on the spool directory; clones share one writer thread and one lock.
///
/// ```no_run
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// use thryve_bridge::spool::{Spool, SpoolMetrics};
/// let (spool, _writer) = Spool::open("/var/lib/thryve-bridge/spool".as_ref(), SpoolMetrics::default())?;
/// let body = serde_json::json!({"type": "x"});
/// spool.append(&body.to_string(), chrono::Utc::now(), None).await?; // durable now
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Spool {
    queue: mpsc::Sender<Append>,
    shared: Arc<Shared>,
}

struct Append {
    line: Vec<u8>,
    reply: oneshot::Sender<Result<(), AppendError>>,
}

struct Shared {
    dir: PathBuf,
    state: Mutex<State>,
    metrics: SpoolMetrics,
    _lock: File,
}

struct State {
    next_seq: u64,
    active: Option<Active>,
    sealed: VecDeque<Segment>,
}

struct Active {
    segment: Segment,
    file: File,
    len: u64,
}

/// A segment file and the records it holds.
#[derive(Debug, Clone)]
pub struct Segment {
    pub seq: u64,
    pub path: PathBuf,
    pub records: usize,
}

impl Spool {
    /// Creates `dir` if needed, locks it (a second process fails here), counts what an earlier
    /// process left (all of it is loaded, none appended to) and starts the writer thread. The
    /// thread ends once every clone is dropped; join it to know the lock is released.
    pub fn open(
        dir: &Path,
        metrics: SpoolMetrics,
    ) -> Result<(Self, std::thread::JoinHandle<()>), OpenError> {
        let io_error = |e| OpenError::Io(dir.to_owned(), e);
        fs::create_dir_all(dir).map_err(io_error)?;
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join(LOCK_FILE))
            .map_err(io_error)?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => return Err(OpenError::Locked(dir.to_owned())),
            Err(TryLockError::Error(e)) => return Err(io_error(e)),
        }
        let mut sealed = Vec::new();
        for entry in fs::read_dir(dir).map_err(io_error)? {
            let path = entry.map_err(io_error)?.path();
            let Some(seq) = segment_seq(&path) else {
                continue;
            };
            let bytes = fs::read(&path).map_err(io_error)?;
            let records = bytes.iter().filter(|&&b| b == b'\n').count();
            sealed.push(Segment { seq, path, records });
        }
        sealed.sort_by_key(|s| s.seq);
        let waiting: usize = sealed.iter().map(|s| s.records).sum();
        metrics.waiting.set(waiting as i64);
        let set_aside = set_aside_files(dir)
            .map_err(io_error)?
            .iter()
            .map(|(_, path)| fs::read(path).map(|b| b.iter().filter(|&&b| b == b'\n').count()))
            .sum::<io::Result<usize>>()
            .map_err(io_error)?;
        metrics.set_aside.set(set_aside as i64);
        if set_aside > 0 {
            tracing::warn!(
                spool_dir = %dir.display(),
                records = set_aside,
                "spool holds records set aside (rejected-*.jsonl); list them with `thryve-bridge spool list`"
            );
        }
        if !sealed.is_empty() {
            tracing::info!(
                spool_dir = %dir.display(),
                segments = sealed.len(),
                records = waiting,
                "spool holds records from an earlier run; loading them"
            );
        }
        let shared = Arc::new(Shared {
            dir: dir.to_owned(),
            state: Mutex::new(State {
                next_seq: sealed.last().map_or(1, |s| s.seq + 1),
                active: None,
                sealed: sealed.into(),
            }),
            metrics,
            _lock: lock,
        });
        let (queue, appends) = mpsc::channel(GROUP_MAX * 4);
        let thread = std::thread::Builder::new()
            .name("spool-writer".to_owned())
            .spawn({
                let shared = shared.clone();
                move || write_loop(&shared, appends)
            })
            .map_err(io_error)?;
        Ok((Self { queue, shared }, thread))
    }

    /// Appends one delivery and returns once it is on disk (fsync'd); concurrent appends
    /// share one fsync.
    pub async fn append(
        &self,
        body: &str,
        received_at: DateTime<Utc>,
        traceparent: Option<&str>,
    ) -> Result<(), AppendError> {
        let stopped = || AppendError(Arc::new(io::Error::other("the spool writer has stopped")));
        let (reply, answer) = oneshot::channel();
        let line = encode_traced_record(body, received_at, traceparent);
        self.queue
            .send(Append { line, reply })
            .await
            .map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }

    pub fn dir(&self) -> &Path {
        &self.shared.dir
    }

    /// Records on disk not yet loaded.
    pub fn waiting(&self) -> i64 {
        self.shared.metrics.waiting.get()
    }

    /// The oldest segment that takes no more lines; when there is none, the segment taking
    /// lines is sealed first (if it holds any), so that it can be loaded.
    fn next_to_load(&self) -> Option<Segment> {
        let mut state = self.shared.lock();
        if state.sealed.is_empty() {
            if let Some(active) = state.active.take() {
                state.sealed.push_back(active.segment);
            }
        }
        state.sealed.front().cloned()
    }

    /// Deletes a loaded segment; `rejected` lines are first kept in a file of their own.
    fn finish(&self, segment: &Segment, rejected: &[&[u8]]) -> io::Result<()> {
        if !rejected.is_empty() {
            let path = self
                .shared
                .dir
                .join(format!("{REJECTED_PREFIX}{:020}{SUFFIX}", segment.seq));
            let mut file = OpenOptions::new().create(true).append(true).open(&path)?;
            let mut bytes = Vec::new();
            for line in rejected {
                bytes.extend_from_slice(line);
                bytes.push(b'\n');
            }
            file.write_all(&bytes)?;
            file.sync_data()?;
            sync_dir(&self.shared.dir)?;
            self.shared.metrics.rejected.inc_by(rejected.len() as u64);
            self.shared.metrics.set_aside.inc_by(rejected.len() as i64);
        }
        match fs::remove_file(&segment.path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        // Without this a crash may bring the segment back: loaded again, duplicates only.
        sync_dir(&self.shared.dir)?;
        let mut state = self.shared.lock();
        state.sealed.retain(|s| s.seq != segment.seq);
        self.shared.metrics.waiting.dec_by(segment.records as i64);
        Ok(())
    }
}

impl Spool {
    /// Puts every set-aside record back in line to be loaded: each `rejected-*.jsonl` becomes
    /// a segment again (a rename, so nothing is copied or lost). Once the operator has fixed
    /// what the inbox refused them for, the loader takes them like any other; whatever is
    /// still refused is set aside again. Returns how many records were requeued.
    pub fn requeue_set_aside(&self) -> io::Result<usize> {
        let mut state = self.shared.lock();
        let mut requeued = 0;
        for (_, path) in set_aside_files(&self.shared.dir)? {
            let records = fs::read(&path)?.iter().filter(|&&b| b == b'\n').count();
            let seq = state.next_seq;
            let segment = self
                .shared
                .dir
                .join(format!("{SEGMENT_PREFIX}{seq:020}{SUFFIX}"));
            fs::rename(&path, &segment)?;
            sync_dir(&self.shared.dir)?;
            state.next_seq += 1;
            state.sealed.push_back(Segment {
                seq,
                path: segment,
                records,
            });
            self.shared.metrics.waiting.inc_by(records as i64);
            self.shared.metrics.set_aside.dec_by(records as i64);
            requeued += records;
        }
        Ok(requeued)
    }
}

/// One set-aside record as `spool list` shows it: where it is and what it is about, never the
/// payload itself.
#[derive(Debug, Clone, Serialize)]
pub struct SetAside {
    pub file: String,
    pub line: usize,
    pub received_at: Option<DateTime<Utc>>,
    pub event_type: Option<String>,
    pub end_user_id: Option<String>,
    /// SHA-256 of the canonical body, as `thryve.inbox.fingerprint`; none for an unreadable line.
    pub fingerprint: Option<String>,
    pub bytes: usize,
}

/// Every set-aside record in `dir`, oldest file first. Reads only, so it is safe while a
/// server owns the directory.
pub fn list_set_aside(dir: &Path) -> io::Result<Vec<SetAside>> {
    let mut listed = Vec::new();
    for (_, path) in set_aside_files(dir)? {
        let bytes = fs::read(&path)?;
        let file = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        for (i, line) in bytes.split(|&b| b == b'\n').enumerate() {
            if line.is_empty() {
                continue;
            }
            let record = serde_json::from_slice::<Record>(line).ok();
            let delivery = record.as_ref().map(|r| NewDelivery::from_body(&r.body));
            listed.push(SetAside {
                file: file.clone(),
                line: i + 1,
                received_at: record.map(|r| r.received_at),
                event_type: delivery.as_ref().and_then(|d| d.event_type.clone()),
                end_user_id: delivery.as_ref().and_then(|d| d.end_user_id.clone()),
                fingerprint: delivery.map(|d| hex::encode(d.fingerprint)),
                bytes: line.len(),
            });
        }
    }
    Ok(listed)
}

/// The `rejected-<seq>.jsonl` files in `dir`, by sequence number.
fn set_aside_files(dir: &Path) -> io::Result<Vec<(u64, PathBuf)>> {
    let mut found = Vec::new();
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        let seq = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_prefix(REJECTED_PREFIX)?.strip_suffix(SUFFIX))
            .and_then(|digits| digits.parse::<u64>().ok());
        if let Some(seq) = seq {
            found.push((seq, path));
        }
    }
    found.sort();
    Ok(found)
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves the state as valid as any I/O error would.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Writes `lines` at the end of the active segment (a new one if none) and fsyncs. On an
    /// error the segment is cut back to its last durable length and takes no more lines.
    fn append(&self, lines: &[&[u8]]) -> io::Result<()> {
        let mut state = self.lock();
        let state = &mut *state;
        if state.active.is_none() {
            let seq = state.next_seq;
            let path = self.dir.join(format!("{SEGMENT_PREFIX}{seq:020}{SUFFIX}"));
            let file = OpenOptions::new()
                .create_new(true)
                .append(true)
                .open(&path)?;
            state.next_seq += 1;
            // The new name must be durable too, or an fsync'd record could vanish with it.
            if let Err(e) = sync_dir(&self.dir) {
                let _ = fs::remove_file(&path);
                return Err(e);
            }
            state.active = Some(Active {
                segment: Segment {
                    seq,
                    path,
                    records: 0,
                },
                file,
                len: 0,
            });
        }
        let active = state.active.as_mut().expect("just opened");
        let bytes = lines.concat();
        let written = active
            .file
            .write_all(&bytes)
            .and_then(|()| active.file.sync_data());
        match written {
            Ok(()) => {
                active.len += bytes.len() as u64;
                active.segment.records += lines.len();
                self.metrics.waiting.inc_by(lines.len() as i64);
                if active.segment.records >= SEGMENT_MAX_RECORDS || active.len >= SEGMENT_MAX_BYTES
                {
                    let full = state.active.take().expect("active");
                    state.sealed.push_back(full.segment);
                }
                Ok(())
            }
            Err(e) => {
                let broken = state.active.take().expect("active");
                // Best effort: a tail left behind is a torn line, skipped on load.
                let _ = broken.file.set_len(broken.len);
                let _ = broken.file.sync_data();
                if broken.segment.records > 0 {
                    state.sealed.push_back(broken.segment);
                } else {
                    let _ = fs::remove_file(&broken.segment.path);
                }
                Err(e)
            }
        }
    }
}

/// Takes whatever appends have queued up, writes them with one fsync, then answers each.
fn write_loop(shared: &Shared, mut appends: mpsc::Receiver<Append>) {
    while let Some(first) = appends.blocking_recv() {
        let mut group = vec![first];
        while group.len() < GROUP_MAX {
            match appends.try_recv() {
                Ok(next) => group.push(next),
                Err(_) => break,
            }
        }
        let lines: Vec<&[u8]> = group.iter().map(|a| a.line.as_slice()).collect();
        let result = shared.append(&lines).map_err(|e| {
            tracing::error!(error = %e, spool_dir = %shared.dir.display(), records = group.len(), "spool write failed");
            AppendError(Arc::new(e))
        });
        for append in group {
            let _ = append.reply.send(result.clone());
        }
    }
}

fn segment_seq(path: &Path) -> Option<u64> {
    let name = path.file_name()?.to_str()?;
    let digits = name.strip_prefix(SEGMENT_PREFIX)?.strip_suffix(SUFFIX)?;
    digits.parse().ok()
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

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

    pub async fn run(self, mut wake: watch::Receiver<u64>, shutdown: CancellationToken) {
        let mut retry = RETRY_MIN;
        while !shutdown.is_cancelled() {
            let pause = if self.spool.waiting() == 0 {
                CHECK_INTERVAL
            } else {
                match self.load_all(&shutdown).await {
                    Ok(()) => {
                        retry = RETRY_MIN;
                        CHECK_INTERVAL
                    }
                    Err(error) => {
                        self.spool.shared.metrics.load_errors.inc();
                        tracing::warn!(
                            %error,
                            waiting = self.spool.waiting(),
                            retry_in_ms = retry.as_millis() as u64,
                            "spool not loaded yet"
                        );
                        let pause = retry;
                        retry = (retry * 2).min(RETRY_MAX);
                        pause
                    }
                }
            };
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(pause) => {}
                _ = wake.changed() => {}
            }
        }
        tracing::info!(waiting = self.spool.waiting(), "spool loader stopped");
    }

    /// Loads every segment, oldest first, until none is left or one fails.
    pub async fn load_all(&self, shutdown: &CancellationToken) -> Result<(), LoadError> {
        while !shutdown.is_cancelled() {
            let spool = self.spool.clone();
            // Sealing may wait for the writer thread's fsync: off the async workers.
            let next = tokio::task::spawn_blocking(move || spool.next_to_load())
                .await
                .map_err(io::Error::other)?;
            let Some(segment) = next else {
                return Ok(());
            };
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
        let bytes = match tokio::fs::read(&segment.path).await {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                tracing::warn!(
                    segment = segment.seq,
                    "spool segment removed by someone else; its records are gone"
                );
                Vec::new()
            }
            Err(e) => return Err(e.into()),
        };
        let decoded = decode_segment(&bytes);
        if decoded.torn > 0 {
            tracing::warn!(
                segment = segment.seq,
                torn_bytes = decoded.torn,
                "spool segment ends in a torn record (a write cut short, never acknowledged); skipped"
            );
        }
        // Identical content becomes one row with its count, as the writers' group commit does;
        // rows go in fingerprint order so concurrent writers cannot deadlock with this transaction.
        let mut groups: HashMap<[u8; 32], Group> = HashMap::new();
        for (record, line) in &decoded.records {
            let mut delivery = NewDelivery::from_body(&record.body);
            delivery.received_at = Some(record.received_at);
            let group = groups.entry(delivery.fingerprint).or_insert_with(|| Group {
                delivery,
                lines: Vec::new(),
            });
            let earliest = group.delivery.received_at.min(Some(record.received_at));
            group.delivery.received_at = earliest;
            // Lines are in arrival order: the row keeps the latest trace id, as live writes do.
            if record.traceparent.is_some() {
                group.delivery.traceparent.clone_from(&record.traceparent);
            }
            group.lines.push(line);
        }
        let mut groups: Vec<Group> = groups.into_values().collect();
        groups.sort_by_key(|g| g.delivery.fingerprint);
        let mut report = SegmentReport {
            records: decoded.records.len(),
            torn_bytes: decoded.torn,
            ..SegmentReport::default()
        };
        let mut refused: Vec<&[u8]> = Vec::new();
        match self.insert_all(&groups).await {
            Ok(inserted) => report.inserted = inserted,
            // Failing to connect or begin, or any outage, says nothing about the records:
            // they stay in the spool until the database takes them.
            Err(e) if e.failure() == Failure::Outage => return Err(e.into()),
            Err(e) => {
                // One record the inbox refuses must not hold back the others: load them one
                // by one and keep the refused ones aside.
                tracing::warn!(segment = segment.seq, error = %e, "spool segment refused as a whole; loading its records one by one");
                let mut conn = self.pool.acquire().await.map_err(PhasedError::connect)?;
                for group in &groups {
                    match inbox::insert_batch(&mut *conn, &[(&group.delivery, group.count())])
                        .await
                        .map_err(PhasedError::statement)
                    {
                        Ok(rows) => report.inserted += rows.iter().filter(|r| r.inserted).count(),
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
            }
        }
        if !decoded.unreadable.is_empty() {
            tracing::error!(
                segment = segment.seq,
                lines = decoded.unreadable.len(),
                "spool segment has unreadable lines; kept in the spool's rejected file"
            );
        }
        report.rejected = refused.len() + decoded.unreadable.len();
        report.duplicates = report.records - report.inserted - refused.len();
        self.committed.send_modify(|n| *n += 1);
        let spool = self.spool.clone();
        let segment = segment.clone();
        let rejected: Vec<Vec<u8>> = decoded
            .unreadable
            .iter()
            .chain(&refused)
            .map(|l| l.to_vec())
            .collect();
        tokio::task::spawn_blocking(move || {
            let rejected: Vec<&[u8]> = rejected.iter().map(Vec::as_slice).collect();
            spool.finish(&segment, &rejected)
        })
        .await
        .map_err(io::Error::other)??;
        Ok(report)
    }

    /// Writes every group in one transaction; returns how many rows are new.
    async fn insert_all(&self, groups: &[Group<'_>]) -> Result<usize, PhasedError> {
        let mut tx = self.pool.begin().await.map_err(PhasedError::connect)?;
        let mut inserted = 0;
        for chunk in groups.chunks(LOAD_CHUNK) {
            let rows: Vec<(&NewDelivery, i32)> =
                chunk.iter().map(|g| (&g.delivery, g.count())).collect();
            let written = inbox::insert_batch(&mut *tx, &rows)
                .await
                .map_err(PhasedError::statement)?;
            inserted += written.iter().filter(|r| r.inserted).count();
        }
        tx.commit().await.map_err(PhasedError::statement)?;
        Ok(inserted)
    }
}

struct Group<'a> {
    delivery: NewDelivery,
    lines: Vec<&'a [u8]>,
}

impl Group<'_> {
    fn count(&self) -> i32 {
        i32::try_from(self.lines.len()).unwrap_or(i32::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(n: i64) -> Map<String, Value> {
        serde_json::json!({"type": "t", "n": n, "s": "a\nb"})
            .as_object()
            .unwrap()
            .clone()
    }

    /// `body(n)` as the compact JSON text a delivery's payload is.
    fn text(n: i64) -> String {
        serde_json::to_string(&body(n)).unwrap()
    }

    #[test]
    fn a_traced_record_keeps_its_traceparent() {
        let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let line = encode_traced_record(&text(1), Utc::now(), Some(traceparent));
        let decoded = decode_segment(&line);
        let (record, _) = &decoded.records[0];
        assert_eq!(record.traceparent.as_deref(), Some(traceparent));
        assert_eq!(record.body, body(1));
    }

    #[test]
    fn records_round_trip_one_line_each() {
        let at = Utc::now();
        let bytes = [encode_record(&text(1), at), encode_record(&text(2), at)].concat();
        assert_eq!(bytes.iter().filter(|&&b| b == b'\n').count(), 2);
        let decoded = decode_segment(&bytes);
        let records: Vec<&Record> = decoded.records.iter().map(|(r, _)| r).collect();
        assert_eq!(
            records,
            [
                &Record {
                    received_at: at,
                    traceparent: None,
                    body: body(1)
                },
                &Record {
                    received_at: at,
                    traceparent: None,
                    body: body(2)
                }
            ]
        );
        assert_eq!((decoded.torn, decoded.unreadable.len()), (0, 0));
    }

    #[test]
    fn a_torn_last_record_is_skipped_and_the_ones_before_it_kept() {
        let at = Utc::now();
        let whole = encode_record(&text(1), at);
        let second = encode_record(&text(2), at);
        for cut in 1..second.len() {
            let bytes = [&whole[..], &second[..cut]].concat();
            let decoded = decode_segment(&bytes);
            assert_eq!(decoded.records.len(), 1, "cut at {cut}");
            assert_eq!(decoded.records[0].0.body, body(1));
            assert_eq!(decoded.torn, cut, "cut at {cut}");
            assert!(decoded.unreadable.is_empty());
        }
    }

    #[test]
    fn a_complete_line_that_is_no_record_is_set_aside() {
        let at = Utc::now();
        let bytes = [
            encode_record(&text(1), at),
            b"{\"received_at\":\0\0\0\n".to_vec(),
            encode_record(&text(2), at),
        ]
        .concat();
        let decoded = decode_segment(&bytes);
        assert_eq!(decoded.records.len(), 2);
        assert_eq!(decoded.unreadable, [&b"{\"received_at\":\0\0\0"[..]]);
    }

    #[test]
    fn only_segment_names_are_segments() {
        assert_eq!(
            segment_seq(Path::new("/s/segment-00000000000000000042.jsonl")),
            Some(42)
        );
        for name in [
            "/s/spool.lock",
            "/s/rejected-00000000000000000042.jsonl",
            "/s/segment-x.jsonl",
        ] {
            assert_eq!(segment_seq(Path::new(name)), None, "{name}");
        }
    }
}
