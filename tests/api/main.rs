//! Black-box tests: the real server on a random port, a fresh Postgres database per test.

mod formats;
mod helpers;
mod proxy;
mod receiver;
