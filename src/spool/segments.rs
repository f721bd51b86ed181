//! The spool directory: its lock, the segment files new records are appended to (one fsync
//! per group of appends, on a thread of its own), and the set-aside `rejected-*` files.

use std::{
    collections::VecDeque,
    fs::{self, File, OpenOptions, TryLockError},
    io::{self, Write},
    path::{Path, PathBuf},
    sync::{Arc, Mutex, MutexGuard},
};

use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio::sync::{mpsc, oneshot};

use super::record::{encode_line, Record};
use crate::{inbox::NewDelivery, metrics::SpoolMetrics};

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

/// A handle on the spool directory; clones share one writer thread and one lock.
///
/// ```no_run
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// use thryve_bridge::spool::{Spool, SpoolMetrics};
/// let (spool, _writer) = Spool::open("/var/lib/thryve-bridge/spool".as_ref(), SpoolMetrics::default())?;
/// let body = serde_json::json!({"type": "x"});
/// spool.append(&body.to_string(), chrono::Utc::now(), None, false).await?; // durable now
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
        let lock = lock(dir)?;
        let sealed = left_behind(dir, &metrics).map_err(io_error)?;
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
    /// share one fsync. `maybe_stored`: the delivery may already be in the inbox (a write
    /// whose outcome is unknown), so that loading it adds no count to its row.
    pub async fn append(
        &self,
        body: &str,
        received_at: DateTime<Utc>,
        traceparent: Option<&str>,
        maybe_stored: bool,
    ) -> Result<(), AppendError> {
        let stopped = || AppendError(Arc::new(io::Error::other("the spool writer has stopped")));
        let (reply, answer) = oneshot::channel();
        let line = encode_line(body, received_at, traceparent, maybe_stored);
        self.queue
            .send(Append { line, reply })
            .await
            .map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }

    pub fn dir(&self) -> &Path {
        &self.shared.dir
    }

    pub(super) fn metrics(&self) -> &SpoolMetrics {
        &self.shared.metrics
    }

    /// Records on disk not yet loaded.
    pub fn waiting(&self) -> i64 {
        self.shared.metrics.waiting.get()
    }

    /// The oldest segment that takes no more lines; when there is none, the segment taking
    /// lines is sealed first (if it holds any), so that it can be loaded.
    pub(super) fn next_to_load(&self) -> Option<Segment> {
        let mut state = self.shared.lock();
        if state.sealed.is_empty() {
            if let Some(active) = state.active.take() {
                state.sealed.push_back(active.segment);
            }
        }
        state.sealed.front().cloned()
    }

    /// Deletes a loaded segment; `rejected` lines are first kept in a file of their own.
    pub(super) fn finish(&self, segment: &Segment, rejected: &[&[u8]]) -> io::Result<()> {
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

/// Creates `dir` if needed and takes its lock, held as long as the returned file is open.
fn lock(dir: &Path) -> Result<File, OpenError> {
    let io_error = |e| OpenError::Io(dir.to_owned(), e);
    fs::create_dir_all(dir).map_err(io_error)?;
    let lock = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join(LOCK_FILE))
        .map_err(io_error)?;
    match lock.try_lock() {
        Ok(()) => Ok(lock),
        Err(TryLockError::WouldBlock) => Err(OpenError::Locked(dir.to_owned())),
        Err(TryLockError::Error(e)) => Err(io_error(e)),
    }
}

/// What an earlier process left in `dir`: its segments, oldest first (all to be loaded, none
/// appended to), counted into `metrics` with the records set aside, and said in the log.
fn left_behind(dir: &Path, metrics: &SpoolMetrics) -> io::Result<Vec<Segment>> {
    let lines = |path: &Path| fs::read(path).map(|b| b.iter().filter(|&&b| b == b'\n').count());
    let mut sealed = Vec::new();
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        if let Some(seq) = segment_seq(&path) {
            let records = lines(&path)?;
            sealed.push(Segment { seq, path, records });
        }
    }
    sealed.sort_by_key(|s| s.seq);
    let waiting: usize = sealed.iter().map(|s| s.records).sum();
    metrics.waiting.set(waiting as i64);
    let set_aside = set_aside_files(dir)?
        .iter()
        .map(|(_, path)| lines(path))
        .sum::<io::Result<usize>>()?;
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
    Ok(sealed)
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

#[cfg(test)]
mod tests {
    use super::*;

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
