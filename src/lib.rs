//! thryve-bridge: receives Thryve webhooks into a Postgres inbox (committed before the 200)
//! and turns them into coalesced per-user dirty ranges for downstream jobs.
//!
//! A delivery's path: [`http`] (auth, decode) -> [`thryve`] (pure parsing) -> [`inbox`]
//! (group-committed rows) -> [`poller`] -> [`ranges`] (coalesced dirty ranges and the
//! consumer API); [`spool`] holds deliveries on local disk while the database is out. Beside
//! that path: [`housekeeping`] (retention), [`stats`], [`users`] (erasure) and
//! [`reconcile`] (connections repaired from Thryve's answer), for operators.

pub mod cli;
pub mod config;
pub mod db;
pub mod fetcher;
pub mod housekeeping;
pub mod http;
pub mod inbox;
pub mod metrics;
pub mod poller;
pub mod ranges;
pub mod reconcile;
pub mod server;
pub mod service;
pub mod sources;
pub mod spool;
pub mod stats;
pub mod telemetry;
pub mod thryve;
pub mod users;
pub mod values;

/// The Rust examples of `docs/consumer-api.md`, compiled as doctests so that they cannot
/// drift from the API (its shell and SQL examples are run by `tests/api/docs.rs`).
#[cfg(doctest)]
#[doc = include_str!("../docs/consumer-api.md")]
pub struct ConsumerApiDocs;
