//! Reliability: the guarantees under faults (outages, crashes, torn writes), and credential
//! hygiene.

mod auth;
mod faults;
mod spool;
