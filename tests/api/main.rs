//! Black-box tests: the real server on a random port, a fresh Postgres database per test.

mod cli;
mod deployments;
mod docs;
mod fake_thryve;
mod fetcher;
mod formats;
mod invariants;
mod listen;
mod loadgen;
mod ops;
mod poller;
mod properties;
mod proxy;
mod pushes;
mod receiver;
mod reconcile;
mod reliability;
mod schema;
mod server;
mod support;
mod trace;
mod v6;
mod wire;
