//! `POST /webhooks/thryve`: the [`Receiver`] and its steps, each a method: admit (credentials,
//! size, body budget), read, verify (decode, signature), parse, then commit or spool; and the
//! one line and the metrics each answer gets.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use axum::{
    body::{Body, Bytes},
    extract::State,
    http::{header, HeaderMap},
    Json,
};
use chrono::{DateTime, Utc};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use serde::Serialize;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::{
    auth::Authenticator,
    decode::Decoded,
    decode_delivery,
    delivery::{signed_at, transfer_codings},
    error::MaybeStored,
    hmac::{Check, Forms, HmacMode},
    parse_content, trace, ApiError,
};
use crate::{
    config::{ConfigError, ReceiverConfig, SpoolConfig},
    db::Failure,
    inbox::{InboxWriter, NewDelivery, Outcome, Receipt},
    metrics::{event_type_label, DeliveryLabels, FormLabels, HmacLabels, Metrics},
    spool::Spool,
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

/// What the webhook route needs: built from the receiver's settings, with the inbox writers
/// and, with `SPOOL_DIR`, the spool.
pub struct Receiver {
    config: ReceiverConfig,
    auth: Authenticator,
    writer: InboxWriter,
    /// With `SPOOL_DIR`: the spool, and how long before the deadline it takes over.
    spool: Option<(Spool, Duration)>,
    /// `BODY_BUDGET_BYTES`: one permit per body byte held by a request.
    body_budget: Arc<Semaphore>,
    /// One permit per core: large bodies parsed at once, off the async workers.
    parse_slots: Arc<Semaphore>,
    metrics: Arc<Metrics>,
}

/// One request's deadline and what it was given.
struct Request<'a> {
    headers: &'a HeaderMap,
    /// Thryve's trace id for this delivery, so an operator can quote it back to Thryve.
    traceparent: Option<String>,
    started: Instant,
    received_at: DateTime<Utc>,
    deadline: Instant,
}

impl Receiver {
    /// From validated settings ([`ReceiverConfig::validate`]).
    pub fn new(
        config: &ReceiverConfig,
        writer: InboxWriter,
        spool: Option<(Spool, &SpoolConfig)>,
        metrics: Arc<Metrics>,
    ) -> Result<Self, ConfigError> {
        Ok(Self {
            config: config.clone(),
            auth: Authenticator::from_config(config)?,
            writer,
            spool: spool.map(|(spool, config)| (spool, config.margin())),
            body_budget: Arc::new(Semaphore::new(
                config.body_budget_bytes.min(Semaphore::MAX_PERMITS),
            )),
            parse_slots: Arc::new(Semaphore::new(
                std::thread::available_parallelism().map_or(2, usize::from),
            )),
            metrics,
        })
    }

    /// The credentials it accepts, for the start-up line (never the credentials).
    pub fn auth_modes(&self) -> String {
        self.auth.modes()
    }

    /// The steps, in order; the first that fails is the answer.
    async fn handle(
        &self,
        request: &Request<'_>,
        body: Body,
    ) -> Result<(Ack, Option<String>), ApiError> {
        // `held` is the body's share of the budget, kept until the answer: the body stays in
        // memory (as the delivery's payload) until it is committed or spooled.
        let (body, held) = self.admit(request, body)?;
        let raw = self.read(request, body).await?;
        let (decoded, verified_at) = self.verify(request, &raw)?;
        let (mut delivery, _held) = self.parse(request, decoded.content, held).await?;
        // The version of pushed values: the verified signing time, else the header's if it
        // lies within the window (see `signed_at`).
        delivery.signed_at = verified_at.or_else(|| {
            signed_at(
                request.headers,
                request.received_at,
                self.config.signing_window(),
            )
        });
        delivery.traceparent = request.traceparent.clone();
        let event_type = delivery.event_type.clone();
        Ok((self.commit_or_spool(request, delivery).await?, event_type))
    }

    /// Admit: static credentials first (they need no body, so a stranger's upload is never
    /// read), then the transfer codings, then the declared size, then room in the body
    /// budget for the body.
    fn admit(
        &self,
        request: &Request<'_>,
        body: Body,
    ) -> Result<(Body, OwnedSemaphorePermit), ApiError> {
        if !self.auth.admits(request.headers) {
            return Err(ApiError::Unauthorized {
                basic_challenge: true,
            });
        }
        transfer_codings(request.headers)?;
        let max = self.config.max_body_bytes;
        let declared = request
            .headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|len| len > max as u64) {
            return Err(ApiError::TooLarge(max));
        }
        // A body of unknown length may be as large as the limit.
        let wanted = declared.map_or(max, |len| len as usize);
        let held = u32::try_from(wanted)
            .ok()
            .and_then(|n| self.body_budget.clone().try_acquire_many_owned(n).ok());
        match held {
            Some(held) => Ok((body, held)),
            None => {
                self.metrics.receiver.bodies_refused.inc();
                self.drain(body, request.deadline + DRAIN_GRACE);
                Err(self.unavailable(
                    "the receiver holds as many request bodies as it may (BODY_BUDGET_BYTES)",
                    MaybeStored::No,
                ))
            }
        }
    }

    /// A body refused for the budget is answered at once, while a task reads the rest of it
    /// (at most the body limit, a frame at a time, nothing kept) until the sender stops or
    /// `until`: closing on unread bytes resets the connection, and a reset that overtakes the
    /// answer leaves the sender with a transport error instead of the 503 and its Retry-After
    /// (the limits test saw it in 2 of ~14 runs when at most 64 KiB was read). Reading costs
    /// a copy, no parse.
    fn drain(&self, mut body: Body, until: Instant) {
        let max = self.config.max_body_bytes;
        tokio::spawn(tokio::time::timeout_at(until.into(), async move {
            let mut drained = 0;
            while drained <= max {
                match body.frame().await {
                    Some(Ok(frame)) => drained += frame.data_ref().map_or(0, |d| d.len()),
                    _ => break,
                }
            }
        }));
    }

    /// Read: the whole body, at most `MAX_BODY_BYTES`, before the ack deadline.
    async fn read(&self, request: &Request<'_>, body: Body) -> Result<Bytes, ApiError> {
        let max = self.config.max_body_bytes;
        let collected =
            tokio::time::timeout_at(request.deadline.into(), Limited::new(body, max).collect())
                .await
                .map_err(|_| ApiError::BodyTimeout(self.config.ack_deadline().as_millis()))?;
        let collected = collected.map_err(|e| {
            if e.is::<LengthLimitError>() {
                ApiError::TooLarge(max)
            } else {
                ApiError::BodyRead(e.to_string())
            }
        })?;
        Ok(collected.to_bytes())
    }

    /// Verify: undoes the body's codings and checks its signature, if one is configured.
    /// Any form of the body may be the signed one; a body that does not decode can only have
    /// been signed as it came, and gets 401 rather than 400 unless that signature holds.
    /// Returns the decoded body and, if the signature holds, when Thryve signed it.
    fn verify(
        &self,
        request: &Request<'_>,
        raw: &[u8],
    ) -> Result<(Decoded, Option<DateTime<Utc>>), ApiError> {
        let decoded = decode_delivery(request.headers, raw, self.config.max_body_bytes);
        let forms = match &decoded {
            Ok(decoded) => Forms {
                wire: raw,
                frame: Some(decoded.frame(raw)),
                json: Some(&decoded.content),
            },
            Err(_) => Forms {
                wire: raw,
                frame: None,
                json: None,
            },
        };
        let verified_at = match self
            .auth
            .check_signature(request.headers, forms, Utc::now())
        {
            Some(check) => self.signature_checked(&check)?,
            None => None,
        };
        let decoded = decoded?;
        self.metrics
            .receiver
            .body_forms
            .get_or_create(&FormLabels {
                form: decoded.form.as_str(),
            })
            .inc();
        Ok((decoded, verified_at))
    }

    /// Parse: the content into a delivery. Large content takes milliseconds to parse: on the
    /// runtime's few worker threads, a burst of them would hold up every other request's
    /// deadline. Off them, the deadline holds; one parse per core at a time, or a hundred
    /// parsing threads would starve the workers just the same. The budget (`held`, handed
    /// back) and the slot stay taken until the parse ends, answered or not.
    async fn parse(
        &self,
        request: &Request<'_>,
        content: Vec<u8>,
        held: OwnedSemaphorePermit,
    ) -> Result<(NewDelivery, OwnedSemaphorePermit), ApiError> {
        if content.len() <= INLINE_PARSE_MAX {
            return Ok((parse_content(request.headers, &content)?, held));
        }
        let headers = request.headers.clone();
        let slots = self.parse_slots.clone();
        let parsing = async move {
            let slot = slots.acquire_owned().await.expect("never closed");
            tokio::task::spawn_blocking(move || {
                let _slot = slot;
                (parse_content(&headers, &content), held)
            })
            .await
        };
        match tokio::time::timeout_at(request.deadline.into(), parsing).await {
            Ok(Ok((parsed, held))) => Ok((parsed?, held)),
            Ok(Err(panicked)) => std::panic::resume_unwind(panicked.into_panic()),
            Err(_) => Err(self.unavailable(
                format!(
                    "body not parsed within the {} ms ack deadline",
                    self.config.ack_deadline_ms
                ),
                MaybeStored::No,
            )),
        }
    }

    /// Commit, or spool: waits for the inbox writer's commit until the deadline (with a spool,
    /// until the spool's margin before it); a delivery not committed by then goes to the
    /// spool if there is one, else the answer is 503.
    async fn commit_or_spool(
        &self,
        request: &Request<'_>,
        delivery: NewDelivery,
    ) -> Result<Ack, ApiError> {
        let wait_until = match &self.spool {
            Some((_, margin)) => request
                .deadline
                .checked_sub(*margin)
                .unwrap_or(request.started)
                .max(request.started),
            None => request.deadline,
        };
        // The spool would need the body after the writer took the delivery.
        let spooled = self
            .spool
            .as_ref()
            .map(|_| (delivery.payload.clone(), delivery.traceparent.clone()));
        let stored = tokio::time::timeout_at(wait_until.into(), self.writer.store(delivery)).await;
        let (reason, stored) = match stored {
            Ok(Ok(receipt)) => return Ok(Ack::Committed(receipt)),
            Ok(Err(error)) => {
                tracing::error!(%error, "inbox write failed");
                // Content the database refuses would be refused again when loaded from the spool.
                if error.failure() == Failure::Refused {
                    return Err(
                        self.unavailable("the database refused the delivery", MaybeStored::No)
                    );
                }
                ("database unavailable".to_owned(), error.stored())
            }
            // The write may be under way and commit after this answer.
            Err(_) => (
                format!(
                    "not committed within the {} ms ack deadline",
                    self.config.ack_deadline_ms
                ),
                MaybeStored::Maybe,
            ),
        };
        match (&self.spool, spooled) {
            (Some((spool, _)), Some((body, traceparent))) => {
                self.spool(
                    request,
                    spool,
                    &body,
                    traceparent.as_deref(),
                    reason,
                    stored,
                )
                .await
            }
            _ => Err(self.unavailable(reason, stored)),
        }
    }

    /// Spool: the delivery fsync'd to the spool before the deadline is a 200 `spooled`.
    async fn spool(
        &self,
        request: &Request<'_>,
        spool: &Spool,
        body: &str,
        traceparent: Option<&str>,
        reason: String,
        stored: MaybeStored,
    ) -> Result<Ack, ApiError> {
        let append = spool.append(
            body,
            request.received_at,
            traceparent,
            stored == MaybeStored::Maybe,
        );
        match tokio::time::timeout_at(request.deadline.into(), append).await {
            Ok(Ok(())) => Ok(Ack::Spooled {
                outcome: Outcome::Spooled,
            }),
            Ok(Err(error)) => {
                tracing::error!(%error, "spool append failed");
                Err(self.unavailable(format!("{reason}, and the spool failed too"), stored))
            }
            Err(_) => Err(self.unavailable(
                format!("{reason}, and the spool did not fsync in time"),
                // A line written but not yet fsync'd may still be loaded.
                MaybeStored::Maybe,
            )),
        }
    }

    fn unavailable(&self, reason: impl Into<String>, stored: MaybeStored) -> ApiError {
        ApiError::Unavailable {
            reason: reason.into(),
            stored,
            retry_after_secs: self.config.retry_after_secs,
        }
    }

    /// Counts and logs a signature check; in `enforce` mode a failed one refuses the
    /// delivery. Returns when Thryve signed the delivery, if the signature holds.
    fn signature_checked(&self, check: &Check) -> Result<Option<DateTime<Utc>>, ApiError> {
        let Some(hmac) = self.auth.hmac() else {
            return Ok(None);
        };
        let mode = hmac.mode();
        self.metrics
            .receiver
            .hmac_checks
            .get_or_create(&HmacLabels {
                result: check.metric_result(),
                layout: check.metric_layout(),
                mode: mode.as_str(),
            })
            .inc();
        log_layout_hints(check, hmac.setting());
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

    /// The answer's metrics and its one log line.
    fn record(
        &self,
        result: &Result<(Ack, Option<String>), ApiError>,
        started: Instant,
        traceparent: &str,
    ) {
        let elapsed = started.elapsed().as_secs_f64();
        let latency_ms = elapsed * 1000.0;
        let metrics = &self.metrics.receiver;
        metrics.ack_latency.observe(elapsed);
        let (outcome, event_type) = match result {
            Ok((ack, event_type)) => (
                ack.outcome().as_str(),
                event_type_label(event_type.as_deref()),
            ),
            Err(error) => (error.metric_outcome(), ""),
        };
        metrics
            .deliveries
            .get_or_create(&DeliveryLabels {
                outcome,
                event_type,
            })
            .inc();
        match result {
            Ok((ack, event_type)) => {
                metrics
                    .last_delivery
                    .set(Utc::now().timestamp_millis() as f64 / 1000.0);
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
            Err(error @ ApiError::Unavailable { .. }) => {
                tracing::warn!(status = error.status().as_u16(), %error, latency_ms, traceparent, "delivery refused")
            }
            Err(error) => {
                tracing::info!(status = error.status().as_u16(), %error, latency_ms, traceparent, "delivery rejected")
            }
        }
    }
}

/// What a signature check learnt about the layout: the one `auto` settled on, or the layout
/// that matched instead of the configured one.
fn log_layout_hints(check: &Check, setting: impl std::fmt::Display) {
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
            configured = %setting,
            matches = check.instead.names(),
            "hmac signature does not match WEBHOOK_HMAC_LAYOUT={} but matches {}: set WEBHOOK_HMAC_LAYOUT={first}",
            setting,
            check.instead.names()
        );
    }
}

pub async fn receive(
    State(receiver): State<Arc<Receiver>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Ack>, ApiError> {
    let started = Instant::now();
    let request = Request {
        headers: &headers,
        traceparent: trace::traceparent(&headers),
        started,
        received_at: Utc::now(),
        deadline: started + receiver.config.ack_deadline(),
    };
    let result = receiver.handle(&request, body).await;
    let traceparent = request.traceparent.as_deref().unwrap_or("");
    receiver.record(&result, started, traceparent);
    result.map(|(ack, _)| Json(ack))
}
