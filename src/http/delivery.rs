//! From a request's headers and raw body bytes to a delivery ready to store: pure and total.

use axum::http::{header, HeaderMap};
use serde_json::{Map, Value};

use super::{decode::decode_body, ApiError};
use crate::{
    inbox::NewDelivery,
    thryve::{json_kind, LEGACY_EVENT_TYPE},
};

/// Decodes, reads and classifies one delivery body: everything between reading the body and
/// storing it. Every input ends in a delivery (stored, quarantined or ignored once written)
/// or an [`ApiError`] whose [`status`](ApiError::status) is 400, 413 or 415.
///
/// ```
/// use axum::http::HeaderMap;
/// use thryve_bridge::{http::parse_delivery, inbox::Status};
/// let body = br#"{"type": "something.new", "endUserId": "u1"}"#;
/// let delivery = parse_delivery(&HeaderMap::new(), body, 1 << 20).unwrap();
/// assert_eq!(delivery.status, Status::Ignored);
/// let refused = parse_delivery(&HeaderMap::new(), b"[1]", 1 << 20).unwrap_err();
/// assert_eq!(refused.status(), 400);
/// ```
pub fn parse_delivery(
    headers: &HeaderMap,
    raw: &[u8],
    max_body_bytes: usize,
) -> Result<NewDelivery, ApiError> {
    let encoding = headers
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok());
    let decoded = decode_body(encoding, raw, max_body_bytes)?;
    // A JSON object under a form content-type is still JSON: a mislabelled delivery is kept.
    let object = if is_form(headers) && !decoded.trim_ascii_start().starts_with(b"{") {
        legacy_form(&decoded)?
    } else {
        let value: Value =
            serde_json::from_slice(&decoded).map_err(|e| ApiError::NotJson(e.to_string()))?;
        let Value::Object(object) = value else {
            return Err(ApiError::NotObject(json_kind(&value)));
        };
        object
    };
    if object.iter().any(|(k, v)| k.contains('\0') || has_nul(v)) {
        return Err(ApiError::NulCharacter);
    }
    Ok(NewDelivery::from_body(&object))
}

fn is_form(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|media| {
            media
                .trim()
                .eq_ignore_ascii_case("application/x-www-form-urlencoded")
        })
}

/// Legacy deliveries may come as a form whose `sourceUpdate` field holds the JSON; the body
/// is then stored as if it had been `{"sourceUpdate": <that JSON>}`, so both spellings of
/// one delivery share a fingerprint.
fn legacy_form(body: &[u8]) -> Result<Map<String, Value>, ApiError> {
    let (_, json) = form_urlencoded::parse(body)
        .find(|(name, _)| name == LEGACY_EVENT_TYPE)
        .ok_or_else(|| {
            ApiError::Form(format!(
                "no {LEGACY_EVENT_TYPE} field (content-type is application/x-www-form-urlencoded)"
            ))
        })?;
    let update: Value = serde_json::from_str(&json)
        .map_err(|e| ApiError::Form(format!("field {LEGACY_EVENT_TYPE} is not JSON: {e}")))?;
    Ok(Map::from_iter([(LEGACY_EVENT_TYPE.to_owned(), update)]))
}

fn has_nul(value: &Value) -> bool {
    match value {
        Value::String(s) => s.contains('\0'),
        Value::Array(items) => items.iter().any(has_nul),
        Value::Object(map) => map.iter().any(|(k, v)| k.contains('\0') || has_nul(v)),
        _ => false,
    }
}
