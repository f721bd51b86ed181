//! Reliability: the guarantees under faults (outages, crashes, torn writes), hostile input,
//! bounded resources, and credential hygiene.

mod auth;
mod faults;
mod hostile;
mod limits;
mod outages;
mod spool;
