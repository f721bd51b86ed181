//! `/healthz` (the process answers), `/readyz` (the database answers and is migrated, and on
//! a fetcher instance fetching is not paused by Thryve's 401) and
//! `/metrics` (Prometheus text).

use axum::{
    extract::State,
    http::{header, StatusCode},
    response::IntoResponse,
    Json,
};
use serde_json::{json, Value};

use super::AppState;
use crate::metrics::StatusLabels;
use crate::{db, stats};

pub async fn live() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

pub async fn ready(State(state): State<AppState>) -> (StatusCode, Json<Value>) {
    if let Some(reason) = state.fetcher.as_ref().and_then(|f| f.paused()) {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "error": format!("fetcher paused: {reason}") })),
        );
    }
    let check = tokio::time::timeout(state.database_timeout, db::readiness(&state.pool)).await;
    match check {
        Ok(Ok(())) => (StatusCode::OK, Json(json!({ "status": "ready" }))),
        Ok(Err(e)) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "error": e.to_string() })),
        ),
        Err(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "error": "database did not answer within the ack deadline" })),
        ),
    }
}

/// Refreshes the database gauges (within the ack deadline; stale values are kept if the
/// database does not answer) and renders every metric.
pub async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    let m = &state.metrics.database;
    let size = i64::from(state.pool.size());
    m.pool_connections_open.set(size);
    m.pool_connections_in_use
        .set(size - state.pool.num_idle() as i64);
    match tokio::time::timeout(state.database_timeout, stats::collect(&state.pool)).await {
        Ok(Ok(stats)) => {
            for (status, figures) in &stats.inbox {
                m.inbox_rows
                    .get_or_create(&StatusLabels {
                        status: status.clone(),
                    })
                    .set(figures.count);
            }
            for (status, figures) in &stats.dirty_ranges {
                m.dirty_ranges
                    .get_or_create(&StatusLabels {
                        status: status.clone(),
                    })
                    .set(figures.count);
            }
            m.inbox_oldest_pending_seconds
                .set(stats.oldest_pending_inbox_age_secs.unwrap_or(0.0));
            m.ranges_oldest_pending_seconds
                .set(stats.oldest_pending_range_age_secs.unwrap_or(0.0));
            m.seconds_since_last_delivery
                .set(stats.seconds_since_last_delivery.unwrap_or(-1.0));
        }
        Ok(Err(error)) => tracing::warn!(%error, "metrics: database gauges not refreshed"),
        Err(_) => tracing::warn!("metrics: database gauges not refreshed within the ack deadline"),
    }
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.render(),
    )
}
