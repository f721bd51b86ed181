//! The W3C `traceparent` header of a delivery: checked, so only a well-formed id is logged
//! and stored.

use axum::http::HeaderMap;

/// Longest value kept. Version `00` is 55 characters; later versions may append fields, and
/// this bounds what a sender can make the bridge store and log.
pub const MAX_LEN: usize = 128;

/// The request's `traceparent` if it is well-formed (W3C Trace Context, level 1): exactly one
/// header, `version-traceid-parentid-flags` in lowercase hex, neither id all zeros, version
/// not `ff`, exactly 55 characters for version `00`; a later version may carry more after a
/// `-`, up to [`MAX_LEN`]. Anything else is `None`: a bad header never refuses a delivery.
///
/// ```
/// use axum::http::HeaderMap;
/// use thryve_bridge::http::trace::traceparent;
/// let mut headers = HeaderMap::new();
/// headers.insert("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".parse().unwrap());
/// assert_eq!(traceparent(&headers).as_deref(), Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"));
/// headers.insert("traceparent", "00-00000000000000000000000000000000-00f067aa0ba902b7-01".parse().unwrap());
/// assert_eq!(traceparent(&headers), None);
/// ```
pub fn traceparent(headers: &HeaderMap) -> Option<String> {
    let text = super::headers::single_header(headers, "traceparent")
        .ok()
        .flatten()?
        .to_str()
        .ok()?;
    is_well_formed(text).then(|| text.to_owned())
}

fn is_well_formed(text: &str) -> bool {
    let bytes = text.as_bytes();
    if bytes.len() < 55 || bytes.len() > MAX_LEN {
        return false;
    }
    let hex = |field: &[u8]| {
        field
            .iter()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(b))
    };
    let zeros = |field: &[u8]| field.iter().all(|&b| b == b'0');
    let (version, trace_id, parent_id, flags) =
        (&bytes[0..2], &bytes[3..35], &bytes[36..52], &bytes[53..55]);
    let dashes = bytes[2] == b'-' && bytes[35] == b'-' && bytes[52] == b'-';
    let tail_ok = match version {
        b"00" => bytes.len() == 55,
        _ => {
            bytes.len() == 55 || (bytes[55] == b'-' && bytes[56..].iter().all(u8::is_ascii_graphic))
        }
    };
    dashes
        && hex(version)
        && version != b"ff"
        && hex(trace_id)
        && !zeros(trace_id)
        && hex(parent_id)
        && !zeros(parent_id)
        && hex(flags)
        && tail_ok
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(values: &[&str]) -> Option<String> {
        let mut headers = HeaderMap::new();
        for value in values {
            headers.append("traceparent", value.parse().unwrap());
        }
        traceparent(&headers)
    }

    const GOOD: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn a_well_formed_traceparent_is_kept_as_sent() {
        assert_eq!(parsed(&[GOOD]).as_deref(), Some(GOOD));
        let future = format!("cc{}-what-comes-next", &GOOD[2..]);
        assert_eq!(parsed(&[&future]), Some(future));
    }

    #[test]
    fn malformed_traceparents_are_dropped() {
        let cases = [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-600f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0g",
            "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x",
        ];
        for case in cases {
            assert_eq!(parsed(&[case]), None, "{case:?}");
        }
        let long = format!("cc{}-{}", &GOOD[2..], "a".repeat(MAX_LEN));
        assert_eq!(parsed(&[&long]), None, "over {MAX_LEN} characters");
        assert_eq!(parsed(&[GOOD, GOOD]), None, "two headers");
        assert_eq!(parsed(&[]), None);
    }
}
