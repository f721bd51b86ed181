//! A load generator for benchmarks and tests: a realistic mix of Thryve deliveries ([`mix`])
//! sent at a fixed concurrency (or rate), latency recorded in an HDR histogram ([`send`]), a
//! verification that every acknowledged delivery is in the inbox and, once the poller is
//! idle, covered ([`verify`]), and the drain and fetch benchmarks ([`bench`]).

mod bench;
mod mix;
mod send;
mod verify;

pub use bench::{drain_benchmark, fetch_benchmark, DrainReport, FetchReport};
pub use mix::{delivery, user_id, Kind, Mix, Rng, SentBody, Template};
pub use send::{run, LoadConfig, LoadReport, LoadRun, Sent};
pub use verify::{verify, Verification};
