//! Reliability under faults: outages, crashes, torn writes.

mod spool;
