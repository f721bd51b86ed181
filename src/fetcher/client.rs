//! The HTTP side of the fetcher: one call to Thryve's API (the data calls, and the user
//! information `users reconcile` asks for) with both credentials, the rate cap, the
//! answer-size limit, and retries with backoff on what may pass.

use std::{sync::Arc, time::Duration};

use axum::http::{HeaderValue, StatusCode};
use base64::Engine;
use tokio::{sync::Mutex, time::Instant};
use tokio_util::sync::CancellationToken;

use super::FetcherStatus;
use crate::{
    config::ThryveApiConfig,
    metrics::{EndpointLabels, FetchCallLabels, Metrics},
    service::Backoff,
};

/// How a call ended when it brought no values.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    /// 401: the partner or app credentials are wrong, for every user.
    #[error("401 from Thryve (THRYVE_API_USER/PASSWORD or THRYVE_APP_ID/SECRET wrong): {0}")]
    Unauthorized(String),
    /// 403: this end user is gone or not of this app; asking again cannot help.
    #[error("403 from Thryve: {0}")]
    Forbidden(String),
    /// 400 (or another 4xx): Thryve refuses the request; its message says why.
    #[error("{status} from Thryve: {message}")]
    Refused { status: u16, message: String },
    /// 429, 5xx, a timeout or a connection error, still so after every try.
    #[error("{0} (after every try)")]
    Exhausted(String),
    /// The answer is larger than FETCHER_MAX_RESPONSE_BYTES.
    #[error("answer over FETCHER_MAX_RESPONSE_BYTES ({0} bytes)")]
    TooLarge(usize),
    /// Shutdown began while the call waited.
    #[error("shutting down")]
    Cancelled,
    /// Fetching was paused (another call met a 401) while this one waited for its turn
    /// under the rate cap: not sent, as the credentials are known to be refused.
    #[error("not called: fetching is paused until Thryve accepts the credentials again")]
    Paused,
}

/// One try's failure that another try may cure, with the wait Thryve asked for, if any.
struct Transient {
    reason: String,
    retry_after: Option<Duration>,
}

enum Try {
    Done(bytes::Bytes),
    Again(Transient),
    Stop(CallError),
}

/// Spaces call starts at least 1/rate apart, across every task of the process.
struct RateCap {
    every: Option<Duration>,
    next: Mutex<Instant>,
}

impl RateCap {
    fn new(per_sec: f64) -> Self {
        Self {
            every: (per_sec > 0.0).then(|| Duration::from_secs_f64(1.0 / per_sec)),
            next: Mutex::new(Instant::now()),
        }
    }

    async fn wait(&self, shutdown: &CancellationToken) -> bool {
        let Some(every) = self.every else { return true };
        let at = {
            let mut next = self.next.lock().await;
            let at = (*next).max(Instant::now());
            *next = at + every;
            at
        };
        tokio::select! {
            _ = tokio::time::sleep_until(at) => true,
            _ = shutdown.cancelled() => false,
        }
    }
}

/// A client of Thryve's data API.
pub struct ThryveClient {
    http: reqwest::Client,
    base: String,
    authorization: HeaderValue,
    app_authorization: HeaderValue,
    max_bytes: usize,
    max_tries: u32,
    backoff: Backoff,
    rate: RateCap,
    metrics: Arc<Metrics>,
    /// The fetcher's pause, checked once a call's turn comes.
    pause: Option<Arc<FetcherStatus>>,
}

fn basic(user: &str, password: &str) -> HeaderValue {
    let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    let mut value =
        HeaderValue::from_str(&format!("Basic {token}")).expect("base64 is a valid header value");
    value.set_sensitive(true);
    value
}

impl ThryveClient {
    /// From validated settings ([`ThryveApiConfig::validate`]).
    pub fn new(config: &ThryveApiConfig, metrics: Arc<Metrics>) -> Result<Self, reqwest::Error> {
        let secret = |s: &Option<crate::config::Secret>| {
            s.as_ref()
                .map(|s| s.expose().to_owned())
                .unwrap_or_default()
        };
        Ok(Self {
            http: reqwest::Client::builder()
                .timeout(config.timeout())
                .connect_timeout(Duration::from_millis(config.fetcher_timeout_ms.min(10_000)))
                .user_agent(concat!("thryve-bridge/", env!("CARGO_PKG_VERSION")))
                .build()?,
            base: config.thryve_api_url.trim_end_matches('/').to_owned(),
            authorization: basic(
                &config.thryve_api_user,
                &secret(&config.thryve_api_password),
            ),
            app_authorization: basic(&config.thryve_app_id, &secret(&config.thryve_app_secret)),
            max_bytes: config.fetcher_max_response_bytes,
            max_tries: config.fetcher_max_tries,
            backoff: Backoff::new(config.backoff(), config.backoff_max()).with_full_jitter(),
            rate: RateCap::new(config.fetcher_rate_per_sec),
            metrics,
            pause: None,
        })
    }

    /// Sends nothing while `status` says fetching is paused ([`CallError::Paused`]).
    pub fn with_pause(mut self, status: Arc<FetcherStatus>) -> Self {
        self.pause = Some(status);
        self
    }

    /// POSTs `form` to `path` until an answer, a permanent refusal or the last try; between
    /// tries waits Thryve's `Retry-After`, else an exponential backoff with full jitter.
    pub async fn call(
        &self,
        path: &'static str,
        form: &[(&'static str, String)],
        shutdown: &CancellationToken,
    ) -> Result<bytes::Bytes, CallError> {
        let mut last = String::new();
        for attempt in 0..self.max_tries {
            if !self.rate.wait(shutdown).await {
                return Err(CallError::Cancelled);
            }
            if self.pause.as_ref().is_some_and(|p| p.paused().is_some()) {
                return Err(CallError::Paused);
            }
            match self.try_once(path, form).await {
                Try::Done(body) => return Ok(body),
                Try::Stop(error) => return Err(error),
                Try::Again(transient) => {
                    if attempt + 1 == self.max_tries {
                        last = transient.reason;
                        break;
                    }
                    let wait = transient
                        .retry_after
                        .map(|d| d.min(Duration::from_secs(3600)))
                        .unwrap_or_else(|| self.backoff.delay(attempt));
                    tracing::debug!(path, reason = %transient.reason, wait_ms = wait.as_millis() as u64, "Thryve call will be tried again");
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => {}
                        _ = shutdown.cancelled() => return Err(CallError::Cancelled),
                    }
                    last = transient.reason;
                }
            }
        }
        Err(CallError::Exhausted(last))
    }

    /// Asks `/v5/userInformation` about one end user (its answer lists the user's
    /// `connectedSources`, see [`crate::thryve::api::connected_sources`]), with the data
    /// calls' credentials, rate cap and retries.
    pub async fn user_information(
        &self,
        end_user_id: &str,
        shutdown: &CancellationToken,
    ) -> Result<bytes::Bytes, CallError> {
        self.call(
            "/v5/userInformation",
            &[("authenticationToken", end_user_id.to_owned())],
            shutdown,
        )
        .await
    }

    async fn try_once(&self, path: &'static str, form: &[(&'static str, String)]) -> Try {
        let endpoint = path.trim_start_matches("/v5/");
        let started = std::time::Instant::now();
        let outcome = self.send(path, form).await;
        self.metrics
            .fetcher
            .call_seconds
            .get_or_create(&EndpointLabels { endpoint })
            .observe(started.elapsed().as_secs_f64());
        let status = match &outcome {
            Ok((status, _)) => status.as_u16().to_string(),
            Err(failure) => failure.label().to_owned(),
        };
        self.metrics
            .fetcher
            .calls
            .get_or_create(&FetchCallLabels { endpoint, status })
            .inc();
        match outcome {
            Err(NoAnswer::TooLarge) => Try::Stop(CallError::TooLarge(self.max_bytes)),
            Err(failure) => Try::Again(Transient {
                reason: failure.label().replace('_', " "),
                retry_after: None,
            }),
            Ok((status, answer)) => classify(status, answer),
        }
    }

    /// One POST; the answer's status and body, or what went wrong on the way.
    async fn send(
        &self,
        path: &str,
        form: &[(&'static str, String)],
    ) -> Result<(StatusCode, Answer), NoAnswer> {
        let mut response = self
            .http
            .post(format!("{}{path}", self.base))
            .header("Authorization", self.authorization.clone())
            .header("AppAuthorization", self.app_authorization.clone())
            .form(form)
            .send()
            .await
            .map_err(NoAnswer::of)?;
        let status = response.status();
        let retry_after = response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        if response
            .content_length()
            .is_some_and(|n| n > self.max_bytes as u64)
        {
            return Err(NoAnswer::TooLarge);
        }
        let mut body = bytes::BytesMut::new();
        while let Some(chunk) = response.chunk().await.map_err(NoAnswer::of)? {
            if body.len() + chunk.len() > self.max_bytes {
                return Err(NoAnswer::TooLarge);
            }
            body.extend_from_slice(&chunk);
        }
        Ok((
            status,
            Answer {
                body: body.freeze(),
                retry_after,
            },
        ))
    }
}

struct Answer {
    body: bytes::Bytes,
    retry_after: Option<Duration>,
}

/// Why a call got no complete answer: the `status` label of the calls metric, and whether
/// trying again can help (not for an answer over the size limit).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum NoAnswer {
    Timeout,
    ConnectError,
    TooLarge,
}

impl NoAnswer {
    fn of(error: reqwest::Error) -> Self {
        if error.is_timeout() {
            NoAnswer::Timeout
        } else {
            NoAnswer::ConnectError
        }
    }

    fn label(self) -> &'static str {
        match self {
            NoAnswer::Timeout => "timeout",
            NoAnswer::ConnectError => "connect_error",
            NoAnswer::TooLarge => "too_large",
        }
    }
}

/// What an answer means for the range.
fn classify(status: StatusCode, answer: Answer) -> Try {
    let message = || {
        let text = String::from_utf8_lossy(&answer.body);
        let text = text.trim();
        let mut cut = text.len().min(500);
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        if text.is_empty() {
            status.to_string()
        } else {
            text[..cut].to_owned()
        }
    };
    match status.as_u16() {
        200..=299 => Try::Done(answer.body),
        401 => Try::Stop(CallError::Unauthorized(message())),
        403 => Try::Stop(CallError::Forbidden(message())),
        408 | 429 | 500..=599 => Try::Again(Transient {
            reason: format!("{status} from Thryve: {}", message()),
            retry_after: answer.retry_after,
        }),
        other => Try::Stop(CallError::Refused {
            status: other,
            message: message(),
        }),
    }
}
