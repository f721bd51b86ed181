//! `POST /webhooks/thryve`: authenticate, read, verify, decode, classify, commit (or spool),
//! then answer.

use std::time::{Duration, Instant};

use axum::{
    body::Body,
    extract::State,
    http::{header, HeaderMap},
    Json,
};
use chrono::{DateTime, Utc};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use serde::Serialize;

use super::{
    decode_delivery,
    delivery::signed_at,
    error::MaybeStored,
    hmac::{Check, Forms, HmacMode},
    parse_content, trace, ApiError, AppState,
};
use crate::{
    db::Failure,
    inbox::{Outcome, Receipt, WriteError},
    metrics::{event_type_label, DeliveryLabels, FormLabels, HmacLabels},
};

/// The body of a 200: a committed row, or a delivery held in the spool (no row yet).
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum Ack {
    Committed(Receipt),
    /// Always [`Outcome::Spooled`].
    Spooled {
        outcome: Outcome,
    },
}

impl Ack {
    fn outcome(&self) -> Outcome {
        match self {
            Ack::Committed(receipt) => receipt.outcome,
            Ack::Spooled { outcome } => *outcome,
        }
    }
}

/// Bodies up to this size are parsed on the request's own task (microseconds); larger ones on
/// the blocking pool.
const INLINE_PARSE_MAX: usize = 64 * 1024;

/// How long after the ack deadline a body refused for the budget is still read (and dropped)
/// so that its sender reads the 503 before the connection closes.
const DRAIN_GRACE: Duration = Duration::from_secs(5);

pub async fn receive(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Ack>, ApiError> {
    let started = Instant::now();
    // Thryve's trace id for this delivery, so an operator can quote it back to Thryve.
    let traceparent = trace::traceparent(&headers);
    let result = handle(&state, &headers, body, started, traceparent.clone()).await;
    let traceparent = traceparent.as_deref().unwrap_or("");
    let elapsed = started.elapsed().as_secs_f64();
    let latency_ms = elapsed * 1000.0;
    let metrics = &state.metrics;
    metrics.ack_latency.observe(elapsed);
    match &result {
        Ok((ack, event_type)) => {
            metrics
                .deliveries
                .get_or_create(&DeliveryLabels {
                    outcome: ack.outcome().as_str(),
                    event_type: event_type_label(event_type.as_deref()),
                })
                .inc();
            metrics
                .last_delivery
                .set(chrono::Utc::now().timestamp_millis() as f64 / 1000.0);
            let event_type = event_type.as_deref().unwrap_or("");
            match ack {
                Ack::Committed(receipt) => tracing::info!(
                    inbox_id = receipt.inbox_id,
                    outcome = receipt.outcome.as_str(),
                    event_type,
                    latency_ms,
                    traceparent,
                    "delivery"
                ),
                // Acknowledged but not yet in the database: the database is out or slow.
                Ack::Spooled { outcome } => {
                    let outcome = outcome.as_str();
                    tracing::warn!(outcome, event_type, latency_ms, traceparent, "delivery")
                }
            }
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
                tracing::warn!(status = error.status().as_u16(), %error, latency_ms, traceparent, "delivery refused")
            } else {
                tracing::info!(status = error.status().as_u16(), %error, latency_ms, traceparent, "delivery rejected")
            }
        }
    }
    result.map(|(ack, _)| Json(ack))
}

async fn handle(
    state: &AppState,
    headers: &HeaderMap,
    body: Body,
    started: Instant,
    traceparent: Option<String>,
) -> Result<(Ack, Option<String>), ApiError> {
    let received_at = Utc::now();
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
    // A body of unknown length may be as large as the limit.
    let wanted = declared.map_or(limits.max_body_bytes, |len| len as usize);
    let Some(held) = u32::try_from(wanted)
        .ok()
        .and_then(|n| state.body_budget.clone().try_acquire_many_owned(n).ok())
    else {
        state.metrics.bodies_refused.inc();
        // Answered at once, while a task reads the rest of the body (at most the body limit,
        // a frame at a time, nothing kept) until the sender stops: closing on unread bytes
        // resets the connection, and a reset that overtakes the answer leaves the sender
        // with a transport error instead of the 503 and its Retry-After (the limits test saw
        // it in 2 of ~14 runs when at most 64 KiB was read). Reading costs a copy, no parse.
        let mut body = body;
        let max = limits.max_body_bytes;
        tokio::spawn(tokio::time::timeout_at(
            (deadline + DRAIN_GRACE).into(),
            async move {
                let mut drained = 0;
                while drained <= max {
                    match body.frame().await {
                        Some(Ok(frame)) => drained += frame.data_ref().map_or(0, |d| d.len()),
                        _ => break,
                    }
                }
            },
        ));
        return Err(ApiError::Unavailable {
            reason: "the receiver holds as many request bodies as it may (BODY_BUDGET_BYTES)"
                .to_owned(),
            stored: MaybeStored::No,
            retry_after_secs: limits.retry_after_secs,
        });
    };
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
    let decoded = decode_delivery(headers, &raw, limits.max_body_bytes);
    // Any form of the body may be the signed one; a body that does not decode can only have
    // been signed as it came, and gets 401 rather than 400 unless that signature holds.
    let forms = match &decoded {
        Ok(decoded) => Forms {
            wire: &raw,
            frame: Some(decoded.frame(&raw)),
            json: Some(&decoded.content),
        },
        Err(_) => Forms {
            wire: &raw,
            frame: None,
            json: None,
        },
    };
    let verified_at = match state.auth.check_signature(headers, forms, Utc::now()) {
        Some(check) => signature_checked(state, &check)?,
        None => None,
    };
    let decoded = decoded?;
    state
        .metrics
        .body_forms
        .get_or_create(&FormLabels {
            form: decoded.form.as_str(),
        })
        .inc();
    let (mut delivery, _held) = if decoded.content.len() <= INLINE_PARSE_MAX {
        (parse_content(headers, &decoded.content)?, held)
    } else {
        // Large content takes milliseconds to parse: on the runtime's few worker threads, a
        // burst of them would hold up every other request's deadline. Off them, the deadline
        // holds; one parse per core at a time, or a hundred parsing threads would starve the
        // workers just the same. The budget and the slot stay taken until the parse ends,
        // answered or not.
        let headers = headers.clone();
        let content = decoded.content;
        let slots = state.parse_slots.clone();
        let parsing = async move {
            let slot = slots.acquire_owned().await.expect("never closed");
            tokio::task::spawn_blocking(move || {
                let _slot = slot;
                (parse_content(&headers, &content), held)
            })
            .await
        };
        match tokio::time::timeout_at(deadline.into(), parsing).await {
            Ok(Ok((parsed, held))) => (parsed?, held),
            Ok(Err(panicked)) => std::panic::resume_unwind(panicked.into_panic()),
            Err(_) => {
                return Err(ApiError::Unavailable {
                    reason: format!(
                        "body not parsed within the {} ms ack deadline",
                        limits.ack_deadline.as_millis()
                    ),
                    stored: MaybeStored::No,
                    retry_after_secs: limits.retry_after_secs,
                })
            }
        }
    };
    // The version of pushed values: the verified signing time, else the header's if it lies
    // within the window (see `signed_at`).
    delivery.signed_at =
        verified_at.or_else(|| signed_at(headers, received_at, limits.signing_window));
    delivery.traceparent = traceparent;
    let event_type = delivery.event_type.clone();
    let unavailable = |reason: String, stored: MaybeStored| ApiError::Unavailable {
        reason,
        stored,
        retry_after_secs: limits.retry_after_secs,
    };
    // With a spool, the margin before the deadline is the spool's to write and fsync in.
    let wait_until = match &state.spool {
        Some(_) => deadline
            .checked_sub(limits.spool_margin)
            .unwrap_or(started)
            .max(started),
        None => deadline,
    };
    // The spool would need the body after the writer took the delivery.
    let body = state
        .spool
        .as_ref()
        .map(|_| (delivery.payload.clone(), delivery.traceparent.clone()));
    let stored = tokio::time::timeout_at(wait_until.into(), state.writer.store(delivery)).await;
    let (reason, stored) = match stored {
        Ok(Ok(receipt)) => return Ok((Ack::Committed(receipt), event_type)),
        Ok(Err(error)) => {
            tracing::error!(%error, "inbox write failed");
            // An error the database sent back means the INSERT (its own transaction) did
            // not commit; a connection lost mid-statement leaves that unknown.
            let stored = match &*error {
                WriteError::Connect(_)
                | WriteError::Closed
                | WriteError::Statement(sqlx::Error::Database(_)) => MaybeStored::No,
                WriteError::Statement(_) => MaybeStored::Maybe,
            };
            // Content the database refuses would be refused again when loaded from the spool.
            if error.failure() == Failure::Refused {
                return Err(unavailable(
                    "the database refused the delivery".to_owned(),
                    MaybeStored::No,
                ));
            }
            ("database unavailable".to_owned(), stored)
        }
        // The write may be under way and commit after this answer.
        Err(_) => (
            format!(
                "not committed within the {} ms ack deadline",
                limits.ack_deadline.as_millis()
            ),
            MaybeStored::Maybe,
        ),
    };
    let (Some(spool), Some((body, traceparent))) = (&state.spool, body) else {
        return Err(unavailable(reason, stored));
    };
    let append = spool.append(&body, received_at, traceparent.as_deref());
    match tokio::time::timeout_at(deadline.into(), append).await {
        Ok(Ok(())) => Ok((
            Ack::Spooled {
                outcome: Outcome::Spooled,
            },
            event_type,
        )),
        Ok(Err(error)) => {
            tracing::error!(%error, "spool append failed");
            Err(unavailable(
                format!("{reason}, and the spool failed too"),
                stored,
            ))
        }
        Err(_) => Err(unavailable(
            format!("{reason}, and the spool did not fsync in time"),
            // A line written but not yet fsync'd may still be loaded.
            MaybeStored::Maybe,
        )),
    }
}

/// Counts and logs a signature check; in `enforce` mode a failed one refuses the delivery.
/// Returns when Thryve signed the delivery, if the signature holds.
fn signature_checked(state: &AppState, check: &Check) -> Result<Option<DateTime<Utc>>, ApiError> {
    let Some(hmac) = state.auth.hmac() else {
        return Ok(None);
    };
    let mode = hmac.mode();
    state
        .metrics
        .hmac_checks
        .get_or_create(&HmacLabels {
            result: check.metric_result(),
            layout: check.metric_layout(),
            mode: mode.as_str(),
        })
        .inc();
    if let Some(candidates) = check.narrowed {
        match candidates.len() {
            1 => tracing::warn!(
                layout = candidates.names(),
                "hmac layout found: set WEBHOOK_HMAC_LAYOUT={} (WEBHOOK_HMAC_LAYOUT=auto learnt it from this delivery)",
                candidates.names()
            ),
            _ => tracing::info!(
                candidates = candidates.names(),
                "hmac layout narrowed to {} candidates; a data push (base64, zstd) tells the forms apart",
                candidates.len()
            ),
        }
    }
    if !check.instead.is_empty() {
        let first = check.instead.iter().next().map_or("", |l| l.as_str());
        tracing::warn!(
            configured = %hmac.setting(),
            matches = check.instead.names(),
            "hmac signature does not match WEBHOOK_HMAC_LAYOUT={} but matches {}: set WEBHOOK_HMAC_LAYOUT={first}",
            hmac.setting(),
            check.instead.names()
        );
    }
    match (&check.error, mode) {
        (None, HmacMode::Report) => {
            tracing::info!(layout = check.metric_layout(), "hmac signature matched")
        }
        (None, HmacMode::Enforce) => {
            tracing::debug!(layout = check.metric_layout(), "hmac signature matched")
        }
        (Some(error), HmacMode::Report) => tracing::warn!(
            %error,
            "hmac signature matched no layout; stored all the same (WEBHOOK_HMAC_MODE=report)"
        ),
        (Some(error), HmacMode::Enforce) => return Err(ApiError::Signature(error.clone())),
    }
    Ok(check.signed_at)
}
