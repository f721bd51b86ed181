//! The HTTP surface: the webhook endpoint, health checks, and the router that joins them.

pub mod auth;
pub mod decode;
mod error;
mod health;
pub mod hmac;
mod webhook;

use std::{sync::Arc, time::Duration};

use axum::{
    routing::{get, post},
    Router,
};
use sqlx::PgPool;

pub use error::ApiError;

use crate::inbox::InboxWriter;
use auth::Authenticator;

/// Limits a webhook request is held to.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_body_bytes: usize,
    pub ack_deadline: Duration,
    pub retry_after_secs: u64,
}

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub pool: PgPool,
    pub writer: InboxWriter,
    pub auth: Arc<Authenticator>,
    pub limits: Limits,
}

/// The router, apart from any listener, so tests can drive it in-process or over a socket.
pub fn app(state: AppState) -> Router {
    Router::new()
        .route("/webhooks/thryve", post(webhook::receive))
        .route("/healthz", get(health::live))
        .route("/readyz", get(health::ready))
        .with_state(state)
}
