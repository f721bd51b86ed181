//! The outage spool: a delivery the database cannot take within the ack deadline is fsync'd
//! to a local segment file before its 200, and [`SpoolLoader`] moves it into the inbox later.
//!
//! Layout of `SPOOL_DIR`: `spool.lock` (held by the one process that owns the directory),
//! `segment-<seq>.jsonl` (one JSON line per delivery: `{"received_at":...,"body":{...}}`;
//! new lines go to the newest segment only), and `rejected-<seq>.jsonl` (lines the inbox
//! refused for their content or that could not be read, set aside for an operator, who lists
//! them with [`list_set_aside`] and loads them again with [`Spool::requeue_set_aside`]). An
//! outage, whatever the database says while connecting, never sets a record aside.
//!
//! [`record`]: the line format; [`segments`]: the directory and its writer; [`loader`]: into
//! the inbox.

mod loader;
mod record;
mod segments;

pub use loader::{LoadError, SegmentReport, SpoolLoader, CHECK_INTERVAL};
pub use record::{
    decode_segment, encode_line, encode_record, encode_traced_record, Decoded, Record,
};
pub use segments::{
    list_set_aside, AppendError, OpenError, Segment, SetAside, Spool, SEGMENT_MAX_BYTES,
    SEGMENT_MAX_RECORDS,
};

pub use crate::metrics::SpoolMetrics;
