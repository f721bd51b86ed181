//! The HTTP layer's one error type and the one place it becomes a status and a JSON body.

use axum::{
    http::{header, HeaderValue, StatusCode},
    response::{IntoResponse, Response},
    Json,
};
use serde_json::json;

use super::{decode::DecodeError, hmac::HmacError};
pub use crate::inbox::MaybeStored;

/// Everything a webhook request can fail with. Internal details (database errors) are logged
/// by the handler, never sent.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("missing or wrong credentials")]
    Unauthorized { basic_challenge: bool },
    #[error("HMAC signature refused: {0}")]
    Signature(#[from] HmacError),
    #[error("body is larger than the {0}-byte limit")]
    TooLarge(usize),
    #[error(transparent)]
    Decode(#[from] DecodeError),
    #[error("body is not JSON: {0}")]
    NotJson(String),
    #[error("body must be a JSON object, got {0}")]
    NotObject(&'static str),
    #[error("form body: {0}")]
    Form(String),
    /// A key (or the form field read) given twice: which one counts is up to each reader.
    #[error("{0} is given twice; each key of an object, and the form field sourceUpdate, may be given once")]
    Duplicate(String),
    /// Framing a proxy in front may read otherwise: answered with the connection closed.
    #[error("{0}")]
    TransferEncoding(String),
    #[error("body contains a NUL character (\\u0000), which Postgres cannot store")]
    NulCharacter,
    #[error("could not read the request body: {0}")]
    BodyRead(String),
    #[error("request body not received within {0} ms")]
    BodyTimeout(u128),
    #[error("{reason}; {stored}")]
    Unavailable {
        reason: String,
        stored: MaybeStored,
        retry_after_secs: u64,
    },
}

impl ApiError {
    /// The status and the `outcome` label of the deliveries metric, decided together so the
    /// two cannot disagree.
    fn kind(&self) -> (StatusCode, &'static str) {
        match self {
            ApiError::Unauthorized { .. } | ApiError::Signature(_) => {
                (StatusCode::UNAUTHORIZED, "unauthorized")
            }
            ApiError::TooLarge(_) | ApiError::Decode(DecodeError::TooLarge(_)) => {
                (StatusCode::PAYLOAD_TOO_LARGE, "too_large")
            }
            ApiError::Decode(
                DecodeError::UnsupportedEncoding(_) | DecodeError::TooManyCodings(_),
            ) => (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_encoding"),
            ApiError::Decode(
                DecodeError::Corrupt { .. }
                | DecodeError::NotBase64 { .. }
                | DecodeError::BadBase64 { .. }
                | DecodeError::Base64NotFrame { .. },
            )
            | ApiError::NotJson(_)
            | ApiError::NotObject(_)
            | ApiError::Form(_)
            | ApiError::TransferEncoding(_)
            | ApiError::Duplicate(_)
            | ApiError::NulCharacter
            | ApiError::BodyRead(_) => (StatusCode::BAD_REQUEST, "bad_request"),
            ApiError::BodyTimeout(_) => (StatusCode::REQUEST_TIMEOUT, "timeout"),
            ApiError::Unavailable { .. } => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
        }
    }

    pub fn status(&self) -> StatusCode {
        self.kind().0
    }

    /// The `outcome` label of the deliveries metric.
    pub fn metric_outcome(&self) -> &'static str {
        self.kind().1
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response =
            (self.status(), Json(json!({ "error": self.to_string() }))).into_response();
        let headers = response.headers_mut();
        match self {
            ApiError::Unauthorized {
                basic_challenge: true,
            } => {
                headers.insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Basic realm=\"thryve-bridge\""),
                );
            }
            ApiError::Unavailable {
                retry_after_secs, ..
            } => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(retry_after_secs));
            }
            // The request's framing is in doubt, so nothing more is read from the connection.
            ApiError::TransferEncoding(_) => {
                headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            _ => {}
        }
        response
    }
}
