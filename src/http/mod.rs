//! The HTTP surface: the webhook endpoint, health checks, and the router that joins them.

pub mod auth;
pub mod decode;
pub mod delivery;
mod error;
mod headers;
mod health;
pub mod hmac;
pub mod json;
pub mod listener;
pub mod trace;
mod webhook;

use std::{sync::Arc, time::Duration};

use axum::{
    routing::{get, post},
    Router,
};
use sqlx::PgPool;

pub use delivery::{decode_delivery, parse_content, parse_delivery};
pub use error::ApiError;
pub use webhook::Receiver;

use crate::{fetcher::FetcherStatus, metrics::Metrics};

/// What the health and metrics handlers reach.
#[derive(Clone)]
pub struct AppState {
    pub pool: PgPool,
    pub metrics: Arc<Metrics>,
    /// How long `/readyz` and `/metrics` wait for the database (`ACK_DEADLINE_MS`).
    pub database_timeout: Duration,
    /// On a fetcher instance: whether Thryve's 401 paused fetching (`/readyz` then says so).
    pub fetcher: Option<Arc<FetcherStatus>>,
}

/// The router, apart from any listener, so tests can drive it in-process or over a socket:
/// health and metrics always, `POST /webhooks/thryve` with a receiver (none on a poller-only
/// instance).
pub fn app(state: AppState, receiver: Option<Arc<Receiver>>) -> Router {
    let health = Router::new()
        .route("/healthz", get(health::live))
        .route("/readyz", get(health::ready))
        .route("/metrics", get(health::metrics))
        .with_state(state);
    match receiver {
        Some(receiver) => Router::new()
            .route("/webhooks/thryve", post(webhook::receive))
            .with_state(receiver)
            .merge(health),
        None => health,
    }
}
