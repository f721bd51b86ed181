//! From a request's headers and raw body bytes to a delivery ready to store: pure and total.

use std::time::Duration;

use axum::http::{header, HeaderMap};
use chrono::{DateTime, Utc};
use serde_json::{Map, Value};

use super::{
    decode::{decode, DecodeError, Decoded},
    error::ApiError,
    json::{self, ReadError},
};
use crate::{
    inbox::NewDelivery,
    thryve::{json_kind, LEGACY_EVENT_TYPE},
};

/// Deepest nesting of arrays and objects a stored payload may have: what serde_json reads
/// back (its recursion limit refuses 128). A body that reads in at most this deep is stored
/// as it came; only the form spelling adds a level, so it is checked there.
pub const MAX_DEPTH: usize = 127;

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
    let decoded = decode_delivery(headers, raw, max_body_bytes)?;
    parse_content(headers, &decoded.content)
}

/// Undoes the request's content codings (and any transfer coding but `chunked`, which the
/// HTTP layer has undone), keeping each form the body passed through for the signature check.
pub fn decode_delivery(
    headers: &HeaderMap,
    raw: &[u8],
    max_body_bytes: usize,
) -> Result<Decoded, ApiError> {
    let encoding = content_encoding(headers)?;
    Ok(decode(encoding.as_deref(), raw, max_body_bytes)?)
}

/// Reads and classifies decoded content: a JSON object (a UTF-8 byte order mark before it is
/// skipped, as RFC 8259 allows) or a legacy form.
pub fn parse_content(headers: &HeaderMap, content: &[u8]) -> Result<NewDelivery, ApiError> {
    let content = content.strip_prefix(b"\xef\xbb\xbf").unwrap_or(content);
    // A JSON object under a form content-type is still JSON: a mislabelled delivery is kept.
    let object = if is_form(headers) && !content.trim_ascii_start().starts_with(b"{") {
        legacy_form(content)?
    } else {
        let value = json::from_slice(content).map_err(|error| match error {
            ReadError::Json(e) => ApiError::NotJson(e.to_string()),
            ReadError::Duplicate(path) => ApiError::Duplicate(format!("key {path}")),
        })?;
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

/// When the delivery was signed: its `x-hmac-timestamp` (epoch ms) if it is one and lies within
/// `window` of `received_at`, either way. With `WEBHOOK_HMAC_SECRET` set the signature check
/// has already vouched for it; without, it is the sender's word, which is as good as the body's.
pub fn signed_at(
    headers: &HeaderMap,
    received_at: DateTime<Utc>,
    window: Duration,
) -> Option<DateTime<Utc>> {
    let mut values = headers.get_all(super::hmac::TIMESTAMP_HEADER).iter();
    let (Some(value), None) = (values.next(), values.next()) else {
        return None;
    };
    let ms: i64 = value.to_str().ok()?.trim().parse().ok()?;
    let at = DateTime::from_timestamp_millis(ms)?;
    let window = chrono::TimeDelta::from_std(window).ok()?;
    ((at - received_at).abs() <= window).then_some(at)
}

/// The transfer codings the bridge undoes besides `chunked` (the HTTP layer's): the content
/// codings it knows. `identity` is no transfer coding (RFC 9112 dropped it).
const TRANSFER_CODINGS: [&str; 4] = ["gzip", "x-gzip", "deflate", "zstd"];

/// The request's `Transfer-Encoding` (all its lines, as one list) without the final `chunked`:
/// empty when there is none. Accepted only as exactly `chunked`, or codings the bridge undoes
/// ending in one `chunked`: anything else is framing a proxy in front may read otherwise
/// (`chunked, chunked`, `identity, chunked`, an unknown coding, an empty list element), so it
/// is refused (400, connection closed) before the body is read.
pub fn transfer_codings(headers: &HeaderMap) -> Result<Vec<String>, ApiError> {
    let mut lines = headers.get_all(header::TRANSFER_ENCODING).iter().peekable();
    if lines.peek().is_none() {
        return Ok(Vec::new());
    }
    let mut joined = String::new();
    for line in lines {
        let text = line.to_str().map_err(|_| {
            ApiError::TransferEncoding("Transfer-Encoding is not visible ASCII".to_owned())
        })?;
        if !joined.is_empty() {
            joined.push_str(", ");
        }
        joined.push_str(text);
    }
    let refuse = |why: String| {
        let shown: String = joined.chars().take(100).collect();
        ApiError::TransferEncoding(format!("Transfer-Encoding {shown:?}: {why}"))
    };
    let mut codings: Vec<String> = joined
        .split(',')
        .map(|c| c.trim().to_ascii_lowercase())
        .collect();
    if codings.last().map(String::as_str) != Some("chunked") {
        return Err(refuse("the last coding must be chunked".to_owned()));
    }
    codings.pop();
    for coding in &codings {
        if coding == "chunked" {
            return Err(refuse("chunked may be given once, last".to_owned()));
        }
        if !TRANSFER_CODINGS.contains(&coding.as_str()) {
            let shown: String = coding.chars().take(40).collect();
            return Err(refuse(format!(
                "{shown:?} is not a transfer coding the bridge undoes (before the final chunked: {})",
                TRANSFER_CODINGS.join(", ")
            )));
        }
    }
    Ok(codings)
}

/// Every coding applied to the body, in order: the `content-encoding` lines (several mean the
/// same as one comma-separated line, RFC 9110 8.4), then the transfer codings other than
/// `chunked` (applied after the content codings, RFC 9112 6.1; hyper undoes only `chunked`).
fn content_encoding(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let mut codings = Vec::new();
    for value in headers.get_all(header::CONTENT_ENCODING) {
        let text = value
            .to_str()
            .map_err(|_| DecodeError::UnsupportedEncoding("(not visible ASCII)".to_owned()))?;
        if !text.trim().is_empty() {
            codings.push(text.to_owned());
        }
    }
    codings.extend(transfer_codings(headers)?);
    Ok((!codings.is_empty()).then(|| codings.join(", ")))
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
    let json = form_field(body, LEGACY_EVENT_TYPE)?.ok_or_else(|| {
        ApiError::Form(format!(
            "no {LEGACY_EVENT_TYPE} field (content-type is application/x-www-form-urlencoded)"
        ))
    })?;
    // From bytes, not a lossily decoded string: invalid UTF-8 is refused as in a JSON body,
    // never replaced (two different bodies must not become one fingerprint).
    let update = json::from_slice(&json).map_err(|error| match error {
        ReadError::Json(e) => ApiError::Form(format!("field {LEGACY_EVENT_TYPE} is not JSON: {e}")),
        // The path as stored: the field's JSON under its name.
        ReadError::Duplicate(path) => {
            ApiError::Duplicate(format!("key {LEGACY_EVENT_TYPE}.{path}"))
        }
    })?;
    if depth(&update) >= MAX_DEPTH {
        return Err(ApiError::Form(format!(
            "field {LEGACY_EVENT_TYPE} nests deeper than {} levels",
            MAX_DEPTH - 1
        )));
    }
    Ok(Map::from_iter([(LEGACY_EVENT_TYPE.to_owned(), update)]))
}

/// The field called `name` of an `application/x-www-form-urlencoded` body, percent- and
/// `+`-decoded to bytes (the WHATWG rules, without the lossy UTF-8 step); refused if given
/// twice, as a JSON key is.
fn form_field(body: &[u8], name: &str) -> Result<Option<Vec<u8>>, ApiError> {
    let mut found = body
        .split(|&b| b == b'&')
        .filter(|pair| !pair.is_empty())
        .filter_map(|pair| {
            let (key, value) = match pair.iter().position(|&b| b == b'=') {
                Some(at) => (&pair[..at], &pair[at + 1..]),
                None => (pair, &[][..]),
            };
            (percent_decode(key) == name.as_bytes()).then_some(value)
        });
    let first = found.next();
    if found.next().is_some() {
        return Err(ApiError::Duplicate(format!("form field {name}")));
    }
    Ok(first.map(percent_decode))
}

fn percent_decode(text: &[u8]) -> Vec<u8> {
    let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let mut out = Vec::with_capacity(text.len());
    let mut i = 0;
    while i < text.len() {
        match text[i] {
            b'+' => out.push(b' '),
            b'%' => match (
                text.get(i + 1).and_then(|&b| hex(b)),
                text.get(i + 2).and_then(|&b| hex(b)),
            ) {
                (Some(high), Some(low)) => {
                    out.push(high << 4 | low);
                    i += 2;
                }
                // A `%` not followed by two hex digits is itself.
                _ => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    out
}

/// Nesting depth of arrays and objects (a scalar is 0). Recursion is safe: serde_json has
/// already refused anything deeper than [`MAX_DEPTH`].
fn depth(value: &Value) -> usize {
    match value {
        Value::Array(items) => 1 + items.iter().map(depth).max().unwrap_or(0),
        Value::Object(map) => 1 + map.values().map(depth).max().unwrap_or(0),
        _ => 0,
    }
}

fn has_nul(value: &Value) -> bool {
    match value {
        Value::String(s) => s.contains('\0'),
        Value::Array(items) => items.iter().any(has_nul),
        Value::Object(map) => map.iter().any(|(k, v)| k.contains('\0') || has_nul(v)),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    fn form_headers() -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/x-www-form-urlencoded"),
        );
        headers
    }

    #[test]
    fn form_fields_decode_like_whatwg_but_keep_bytes() {
        let field = |body: &[u8], name| form_field(body, name).unwrap();
        assert_eq!(
            field(b"a=1&sourceUpdate=%7B%22x%22%3A+1%7D&a=2", "sourceUpdate"),
            Some(br#"{"x": 1}"#.to_vec())
        );
        assert_eq!(field(b"&&source%55pdate", "sourceUpdate"), Some(vec![]));
        assert_eq!(field(b"x=%zz%4", "x"), Some(b"%zz%4".to_vec()));
        assert_eq!(field(b"x=%FF", "x"), Some(vec![0xff]));
        assert_eq!(field(b"y=1", "x"), None);
    }

    #[test]
    fn a_key_or_the_form_field_given_twice_is_refused_naming_it() {
        let refused = |headers: &HeaderMap, body: &[u8]| {
            let error = parse_delivery(headers, body, 1 << 20).unwrap_err();
            assert_eq!(error.status(), 400, "{error}");
            error.to_string()
        };
        let error = refused(
            &form_headers(),
            b"sourceUpdate=%7B%7D&source%55pdate=%7B%7D",
        );
        assert!(
            error.starts_with("form field sourceUpdate is given twice"),
            "{error}"
        );
        let error = refused(
            &form_headers(),
            br#"sourceUpdate={"dataSource":1,"dataSource":2}"#,
        );
        assert!(
            error.starts_with("key sourceUpdate.dataSource is given twice"),
            "{error}"
        );
        let error = refused(&HeaderMap::new(), br#"{"type":"x","data":[{"a":1,"a":1}]}"#);
        assert!(error.starts_with("key data[0].a is given twice"), "{error}");
    }

    #[test]
    fn invalid_utf8_in_a_form_field_is_refused_not_replaced() {
        let error = parse_delivery(
            &form_headers(),
            b"sourceUpdate=%7B%22a%22%3A%22%FF%22%7D",
            1024,
        )
        .unwrap_err();
        assert_eq!(error.status(), 400);
        assert!(error.to_string().contains("is not JSON"), "{error}");
    }

    #[test]
    fn a_form_field_as_deep_as_a_stored_payload_may_be_is_refused_once_wrapped() {
        let nested = |n: usize| format!("{}{}", "[".repeat(n), "]".repeat(n));
        let body = |n: usize| format!("sourceUpdate={}", nested(n));
        // 126 + the wrapping object = 127 levels: the most serde_json reads back.
        let error = parse_delivery(&form_headers(), body(127).as_bytes(), 1 << 20).unwrap_err();
        assert_eq!(error.status(), 400);
        assert!(
            error.to_string().contains("nests deeper than 126"),
            "{error}"
        );
        // The stored payload of the deepest accepted form reads back.
        let deepest = parse_delivery(&form_headers(), body(126).as_bytes(), 1 << 20).unwrap();
        assert!(serde_json::from_str::<Value>(&deepest.payload).is_ok());
    }

    #[test]
    fn the_signing_time_counts_only_within_the_window() {
        let now = DateTime::from_timestamp_millis(1_765_635_343_541).unwrap();
        let window = Duration::from_secs(300);
        let with = |ts: &str| {
            let mut headers = HeaderMap::new();
            headers.insert("x-hmac-timestamp", HeaderValue::from_str(ts).unwrap());
            signed_at(&headers, now, window)
        };
        assert_eq!(
            with("1765635342741"),
            DateTime::from_timestamp_millis(1_765_635_342_741)
        );
        assert_eq!(
            with("1765635043541"),
            DateTime::from_timestamp_millis(1_765_635_043_541)
        );
        assert_eq!(with("1765635043540"), None, "just outside the window");
        assert_eq!(with("soon"), None);
        assert_eq!(signed_at(&HeaderMap::new(), now, window), None);
    }

    #[test]
    fn several_content_encoding_lines_are_one_list() {
        let mut headers = HeaderMap::new();
        headers.append(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        headers.append(header::CONTENT_ENCODING, HeaderValue::from_static("zstd"));
        assert_eq!(
            content_encoding(&headers).unwrap().as_deref(),
            Some("gzip, zstd")
        );
        headers.append(
            header::CONTENT_ENCODING,
            HeaderValue::from_bytes(b"\xffgzip").unwrap(),
        );
        assert_eq!(content_encoding(&headers).unwrap_err().status(), 415);
    }

    #[test]
    fn transfer_codings_other_than_chunked_follow_the_content_codings() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("gzip, chunked"),
        );
        assert_eq!(content_encoding(&headers).unwrap().as_deref(), Some("gzip"));
        headers.insert(header::CONTENT_ENCODING, HeaderValue::from_static("zstd"));
        assert_eq!(
            content_encoding(&headers).unwrap().as_deref(),
            Some("zstd, gzip")
        );
        headers.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        assert_eq!(content_encoding(&headers).unwrap().as_deref(), Some("zstd"));
    }

    #[test]
    fn transfer_encoding_is_chunked_last_once_after_codings_the_bridge_undoes() {
        let with = |lines: &[&'static str]| {
            let mut headers = HeaderMap::new();
            for line in lines {
                headers.append(header::TRANSFER_ENCODING, HeaderValue::from_static(line));
            }
            transfer_codings(&headers).map_err(|e| (e.status().as_u16(), e.to_string()))
        };
        assert_eq!(with(&[]), Ok(vec![]));
        assert_eq!(with(&["chunked"]), Ok(vec![]));
        assert_eq!(with(&["Chunked"]), Ok(vec![]));
        assert_eq!(with(&["gzip, chunked"]), Ok(vec!["gzip".to_owned()]));
        assert_eq!(with(&["gzip", "chunked"]), Ok(vec!["gzip".to_owned()]));
        for (lines, why) in [
            (&["chunked, chunked"][..], "chunked may be given once, last"),
            (&["chunked", "chunked"], "chunked may be given once, last"),
            (
                &["identity, chunked"],
                "\"identity\" is not a transfer coding",
            ),
            (&["br, chunked"], "\"br\" is not a transfer coding"),
            (&["gzip,, chunked"], "\"\" is not a transfer coding"),
            (&["gzip"], "the last coding must be chunked"),
            (&["chunked, gzip"], "the last coding must be chunked"),
            (&[""], "the last coding must be chunked"),
        ] {
            let (status, error) = with(lines).unwrap_err();
            assert_eq!(status, 400, "{lines:?}");
            assert!(error.contains(why), "{lines:?}: {error}");
        }
    }

    #[test]
    fn a_byte_order_mark_before_the_json_is_skipped() {
        let plain = parse_delivery(&HeaderMap::new(), br#"{"type":"x.y"}"#, 1024).unwrap();
        let marked =
            parse_delivery(&HeaderMap::new(), b"\xef\xbb\xbf{\"type\":\"x.y\"}", 1024).unwrap();
        assert_eq!(marked.fingerprint, plain.fingerprint);
    }
}
