//! Black-box tests: the real server on a random port, a fresh Postgres database per test.

mod cli;
mod helpers;
mod invariants;
mod ops;
mod poller;
mod properties;
mod proxy;
mod receiver;
