//! What the black-box tests share: a database per test, the real server on the default
//! settings, bodies as Thryve sends them, and waiting on conditions.

mod app;
mod bodies;
mod db;
mod docs;
mod wait;

pub use app::{
    answer, post_to, receiver_only, signed_config, spawn_app, spawn_app_with, spawn_on,
    test_config, TestApp, HMAC_SECRET, PASSWORD, ROTATED_PASSWORD, USER,
};
pub use bodies::{base64, epoch_notification, epoch_point, epoch_push, gzip, thryve_wire, zstd};
pub use db::{admin_url, drop_as_admin, migrated_before, TestDb};
pub use docs::{blocks, read_doc, sql_block, Block};
pub use wait::wait_until;
