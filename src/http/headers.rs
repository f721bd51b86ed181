//! Reading a header that must appear at most once (credentials, signatures, trace ids).

use axum::http::{header::AsHeaderName, HeaderMap, HeaderValue};

/// A header that must appear at most once appeared more than once: which copy would count
/// is a guess (a proxy may have added or kept one), so the request is refused.
pub(crate) struct RepeatedHeader;

/// The value of a header that must not be repeated, if present.
pub(crate) fn single_header<K: AsHeaderName>(
    headers: &HeaderMap,
    name: K,
) -> Result<Option<&HeaderValue>, RepeatedHeader> {
    let mut values = headers.get_all(name).iter();
    let first = values.next();
    match values.next() {
        Some(_) => Err(RepeatedHeader),
        None => Ok(first),
    }
}
