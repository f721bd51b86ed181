//! Reliability: the guarantees under faults, and credential hygiene.

mod auth;
mod faults;
