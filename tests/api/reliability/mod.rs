//! Reliability: the guarantees under faults (outages, crashes, torn writes), hostile input,
//! and credential hygiene.

mod auth;
mod faults;
mod hostile;
mod spool;
