//! `POST /webhooks/thryve`: authenticate, read, verify, decode, classify, commit, then answer.

use std::time::Instant;

use axum::{
    body::Body,
    extract::State,
    http::{header, HeaderMap},
    Json,
};
use chrono::Utc;
use http_body_util::{BodyExt, LengthLimitError, Limited};

use super::{parse_delivery, ApiError, AppState};
use crate::{
    inbox::Receipt,
    metrics::{event_type_label, DeliveryLabels},
};

pub async fn receive(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Receipt>, ApiError> {
    let started = Instant::now();
    let result = handle(&state, &headers, body, started).await;
    let elapsed = started.elapsed().as_secs_f64();
    let latency_ms = elapsed * 1000.0;
    let metrics = &state.metrics;
    metrics.ack_latency.observe(elapsed);
    match &result {
        Ok((receipt, event_type)) => {
            metrics
                .deliveries
                .get_or_create(&DeliveryLabels {
                    outcome: receipt.outcome.as_str(),
                    event_type: event_type_label(event_type.as_deref()),
                })
                .inc();
            metrics
                .last_delivery
                .set(chrono::Utc::now().timestamp_millis() as f64 / 1000.0);
            tracing::info!(
                inbox_id = receipt.inbox_id,
                outcome = receipt.outcome.as_str(),
                event_type = event_type.as_deref().unwrap_or(""),
                latency_ms,
                "delivery"
            )
        }
        Err(error) => {
            metrics
                .deliveries
                .get_or_create(&DeliveryLabels {
                    outcome: error.metric_outcome(),
                    event_type: "",
                })
                .inc();
            if matches!(error, ApiError::Unavailable { .. }) {
                tracing::warn!(status = error.status().as_u16(), %error, latency_ms, "delivery refused")
            } else {
                tracing::info!(status = error.status().as_u16(), %error, latency_ms, "delivery rejected")
            }
        }
    }
    result.map(|(receipt, _)| Json(receipt))
}

async fn handle(
    state: &AppState,
    headers: &HeaderMap,
    body: Body,
    started: Instant,
) -> Result<(Receipt, Option<String>), ApiError> {
    let limits = state.limits;
    // Static credentials first: they need no body, so a stranger's upload is never read.
    if !state.auth.admits(headers) {
        return Err(ApiError::Unauthorized {
            basic_challenge: true,
        });
    }
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > limits.max_body_bytes as u64) {
        return Err(ApiError::TooLarge(limits.max_body_bytes));
    }
    let deadline = started + limits.ack_deadline;
    let raw = tokio::time::timeout_at(
        deadline.into(),
        Limited::new(body, limits.max_body_bytes).collect(),
    )
    .await
    .map_err(|_| ApiError::BodyTimeout(limits.ack_deadline.as_millis()))?
    .map_err(|e| {
        if e.is::<LengthLimitError>() {
            ApiError::TooLarge(limits.max_body_bytes)
        } else {
            ApiError::BodyRead(e.to_string())
        }
    })?
    .to_bytes();
    // Over the bytes as received: the signer signed what it sent, compressed or not.
    state.auth.verify_signature(headers, &raw, Utc::now())?;
    let delivery = parse_delivery(headers, &raw, limits.max_body_bytes)?;
    let event_type = delivery.event_type.clone();
    let unavailable = |reason: String| ApiError::Unavailable {
        reason,
        retry_after_secs: limits.retry_after_secs,
    };
    let stored = tokio::time::timeout_at(
        (started + limits.ack_deadline).into(),
        state.writer.store(delivery),
    )
    .await;
    match stored {
        Ok(Ok(receipt)) => Ok((receipt, event_type)),
        Ok(Err(error)) => {
            tracing::error!(%error, "inbox write failed");
            Err(unavailable("database unavailable".to_owned()))
        }
        Err(_) => Err(unavailable(format!(
            "not committed within the {} ms ack deadline",
            limits.ack_deadline.as_millis()
        ))),
    }
}
