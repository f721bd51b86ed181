//! `/healthz` (the process answers) and `/readyz` (the database answers and is migrated).

use axum::{extract::State, http::StatusCode, Json};
use serde_json::{json, Value};

use super::AppState;
use crate::db;

pub async fn live() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

pub async fn ready(State(state): State<AppState>) -> (StatusCode, Json<Value>) {
    let check = tokio::time::timeout(state.limits.ack_deadline, db::readiness(&state.pool)).await;
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
