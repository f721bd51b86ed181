//! The HTTP surface: the webhook endpoint, health checks, and the router that joins them.

pub mod auth;
pub mod decode;
pub mod delivery;
mod error;
mod headers;
mod health;
pub mod hmac;
pub mod listener;
pub mod trace;
mod webhook;

use std::{sync::Arc, time::Duration};

use axum::{
    routing::{get, post},
    Router,
};
use sqlx::PgPool;
use tokio::sync::Semaphore;

pub use delivery::{decode_delivery, parse_content, parse_delivery};
pub use error::ApiError;

use crate::{inbox::InboxWriter, metrics::Metrics, spool::Spool};
use auth::Authenticator;

/// Limits a webhook request is held to.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_body_bytes: usize,
    pub ack_deadline: Duration,
    pub retry_after_secs: u64,
    /// With a spool: stop waiting for the commit this long before the ack deadline.
    pub spool_margin: Duration,
    /// `x-hmac-timestamp` within this of the receipt is taken as the delivery's signing time.
    pub signing_window: Duration,
}

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub pool: PgPool,
    pub writer: InboxWriter,
    pub auth: Arc<Authenticator>,
    pub limits: Limits,
    /// False on a poller-only instance: the webhook route is not served.
    pub receiver_enabled: bool,
    pub metrics: Arc<Metrics>,
    /// `SPOOL_DIR`: where deliveries go when the database cannot take them in time.
    pub spool: Option<Spool>,
    /// `BODY_BUDGET_BYTES`: one permit per body byte held by a request.
    pub body_budget: Arc<Semaphore>,
    /// One permit per core: large bodies parsed at once, off the async workers.
    pub parse_slots: Arc<Semaphore>,
    /// On a fetcher instance: whether Thryve's 401 paused fetching (`/readyz` then says so).
    pub fetcher: Option<Arc<crate::fetcher::FetcherStatus>>,
}

/// The router, apart from any listener, so tests can drive it in-process or over a socket.
pub fn app(state: AppState) -> Router {
    let router = if state.receiver_enabled {
        Router::new().route("/webhooks/thryve", post(webhook::receive))
    } else {
        Router::new()
    };
    router
        .route("/healthz", get(health::live))
        .route("/readyz", get(health::ready))
        .route("/metrics", get(health::metrics))
        .with_state(state)
}
