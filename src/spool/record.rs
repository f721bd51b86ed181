//! The spool's record format: one JSON line per delivery, `{"received_at":...,"body":{...}}`
//! (with `traceparent` when the delivery had one), and reading a segment's lines back.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// One spooled delivery: what [`crate::inbox::NewDelivery`] is rebuilt from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    pub received_at: DateTime<Utc>,
    /// The delivery's W3C `traceparent` (absent in lines written before it was kept).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<String>,
    /// The delivery may already be in the inbox: spooled after a write whose outcome the
    /// connection could not tell (cut off mid-commit, or still under way at the deadline).
    /// Loaded, it adds no count to a row its content already has.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub maybe_stored: bool,
    pub body: Map<String, Value>,
}

/// Serialises a record as one line, newline included; `body` is the JSON text of an object.
///
/// ```
/// use thryve_bridge::spool::{decode_segment, encode_record};
/// let body = serde_json::json!({"type": "x"});
/// let line = encode_record(&body.to_string(), chrono::Utc::now());
/// assert_eq!(decode_segment(&line).records.len(), 1);
/// ```
pub fn encode_record(body: &str, received_at: DateTime<Utc>) -> Vec<u8> {
    encode_traced_record(body, received_at, None)
}

/// [`encode_record`] with the delivery's `traceparent`, kept so the row gets it when loaded.
pub fn encode_traced_record(
    body: &str,
    received_at: DateTime<Utc>,
    traceparent: Option<&str>,
) -> Vec<u8> {
    encode_line(body, received_at, traceparent, false)
}

/// [`encode_traced_record`], marked `maybe_stored` when the delivery may already be in the
/// inbox (see [`Record::maybe_stored`]).
pub fn encode_line(
    body: &str,
    received_at: DateTime<Utc>,
    traceparent: Option<&str>,
    maybe_stored: bool,
) -> Vec<u8> {
    // `body` is JSON text (the delivery's canonical payload: compact, so without a newline);
    // it goes into the line as it is, not parsed and printed again.
    let mut line = Vec::with_capacity(body.len() + 128);
    line.extend_from_slice(b"{\"received_at\":");
    serde_json::to_writer(&mut line, &received_at).expect("a timestamp always serialises");
    if let Some(traceparent) = traceparent {
        line.extend_from_slice(b",\"traceparent\":");
        serde_json::to_writer(&mut line, traceparent).expect("a string always serialises");
    }
    if maybe_stored {
        line.extend_from_slice(b",\"maybe_stored\":true");
    }
    line.extend_from_slice(b",\"body\":");
    line.extend_from_slice(body.as_bytes());
    line.extend_from_slice(b"}\n");
    line
}

/// What a segment's bytes hold.
#[derive(Debug, Default)]
pub struct Decoded<'a> {
    /// Complete records, in file order, each with its line (newline excluded).
    pub records: Vec<(Record, &'a [u8])>,
    /// Complete lines that are not a record (kept aside as rejected, never dropped silently).
    pub unreadable: Vec<&'a [u8]>,
    /// Bytes after the last newline: a write cut short, never acknowledged.
    pub torn: usize,
}

/// Splits a segment into records. A record counts only with its newline: a torn last line
/// (the process died mid-write, before the fsync that would have let it be acknowledged)
/// is skipped rather than poisoning the records before it.
pub fn decode_segment(bytes: &[u8]) -> Decoded<'_> {
    let complete = bytes
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |last| last + 1);
    let mut decoded = Decoded {
        torn: bytes.len() - complete,
        ..Decoded::default()
    };
    for line in bytes[..complete].split(|&b| b == b'\n') {
        if line.is_empty() {
            continue;
        }
        match serde_json::from_slice::<Record>(line) {
            Ok(record) => decoded.records.push((record, line)),
            Err(_) => decoded.unreadable.push(line),
        }
    }
    decoded
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(n: i64) -> Map<String, Value> {
        serde_json::json!({"type": "t", "n": n, "s": "a\nb"})
            .as_object()
            .unwrap()
            .clone()
    }

    /// `body(n)` as the compact JSON text a delivery's payload is.
    fn text(n: i64) -> String {
        serde_json::to_string(&body(n)).unwrap()
    }

    #[test]
    fn a_traced_record_keeps_its_traceparent() {
        let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let line = encode_traced_record(&text(1), Utc::now(), Some(traceparent));
        let decoded = decode_segment(&line);
        let (record, _) = &decoded.records[0];
        assert_eq!(record.traceparent.as_deref(), Some(traceparent));
        assert_eq!(record.body, body(1));
    }

    #[test]
    fn a_record_that_may_be_stored_says_so_and_others_do_not() {
        let maybe = encode_line(&text(1), Utc::now(), None, true);
        let surely_not = encode_line(&text(1), Utc::now(), None, false);
        assert!(decode_segment(&maybe).records[0].0.maybe_stored);
        assert!(!decode_segment(&surely_not).records[0].0.maybe_stored);
        assert!(!String::from_utf8(surely_not)
            .unwrap()
            .contains("maybe_stored"));
    }

    #[test]
    fn records_round_trip_one_line_each() {
        let at = Utc::now();
        let bytes = [encode_record(&text(1), at), encode_record(&text(2), at)].concat();
        assert_eq!(bytes.iter().filter(|&&b| b == b'\n').count(), 2);
        let decoded = decode_segment(&bytes);
        let records: Vec<&Record> = decoded.records.iter().map(|(r, _)| r).collect();
        assert_eq!(
            records,
            [
                &Record {
                    received_at: at,
                    traceparent: None,
                    maybe_stored: false,
                    body: body(1)
                },
                &Record {
                    received_at: at,
                    traceparent: None,
                    maybe_stored: false,
                    body: body(2)
                }
            ]
        );
        assert_eq!((decoded.torn, decoded.unreadable.len()), (0, 0));
    }

    #[test]
    fn a_torn_last_record_is_skipped_and_the_ones_before_it_kept() {
        let at = Utc::now();
        let whole = encode_record(&text(1), at);
        let second = encode_record(&text(2), at);
        for cut in 1..second.len() {
            let bytes = [&whole[..], &second[..cut]].concat();
            let decoded = decode_segment(&bytes);
            assert_eq!(decoded.records.len(), 1, "cut at {cut}");
            assert_eq!(decoded.records[0].0.body, body(1));
            assert_eq!(decoded.torn, cut, "cut at {cut}");
            assert!(decoded.unreadable.is_empty());
        }
    }

    #[test]
    fn a_complete_line_that_is_no_record_is_set_aside() {
        let at = Utc::now();
        let bytes = [
            encode_record(&text(1), at),
            b"{\"received_at\":\0\0\0\n".to_vec(),
            encode_record(&text(2), at),
        ]
        .concat();
        let decoded = decode_segment(&bytes);
        assert_eq!(decoded.records.len(), 2);
        assert_eq!(decoded.unreadable, [&b"{\"received_at\":\0\0\0"[..]]);
    }
}
