//! Canonical JSON and the content fingerprint that stands in for Thryve's missing delivery id.

use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

/// Serialises `value` with object keys sorted and no whitespace, so two deliveries that differ
/// only in key order or formatting give the same bytes.
///
/// ```
/// let a: serde_json::Value = serde_json::from_str(r#"{"b": 1, "a": [true, null]}"#).unwrap();
/// assert_eq!(thryve_bridge::thryve::canonical_json(&a), br#"{"a":[true,null],"b":1}"#);
/// ```
pub fn canonical_json(value: &Value) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    write_canonical(value, &mut out);
    out
}

/// [`canonical_json`] of an object, without first wrapping it in a `Value`.
pub fn canonical_object(map: &Map<String, Value>) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    write_object(map, &mut out);
    out
}

fn write_object(map: &Map<String, Value>, out: &mut Vec<u8>) {
    // Sorted explicitly: serde_json's map order depends on a crate feature
    // (`preserve_order`) that any dependency could switch on.
    let mut entries: Vec<(&String, &Value)> = map.iter().collect();
    entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
    out.push(b'{');
    for (i, (key, item)) in entries.into_iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        serde_json::to_writer(&mut *out, key)
            .expect("serialising a string into memory cannot fail");
        out.push(b':');
        write_canonical(item, out);
    }
    out.push(b'}');
}

fn write_canonical(value: &Value, out: &mut Vec<u8>) {
    match value {
        Value::Object(map) => write_object(map, out),
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_canonical(item, out);
            }
            out.push(b']');
        }
        scalar => write_scalar(scalar, out),
    }
}

fn write_scalar(value: &Value, out: &mut Vec<u8>) {
    // Writing a scalar into a Vec performs no I/O and has no map keys to reject.
    serde_json::to_writer(out, value).expect("serialising a JSON scalar into memory cannot fail");
}

/// SHA-256 of [`canonical_json`]: the inbox's de-duplication key.
pub fn fingerprint(canonical: &[u8]) -> [u8; 32] {
    Sha256::digest(canonical).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_order_and_whitespace_do_not_change_the_fingerprint() {
        let a: Value =
            serde_json::from_str(r#"{"x":{"b":2,"a":1},"y":[3,{"d":4,"c":5}]}"#).unwrap();
        let b: Value =
            serde_json::from_str("{ \"y\" : [3, {\"c\":5, \"d\":4}],\n \"x\": {\"a\":1,\"b\":2} }")
                .unwrap();
        assert_eq!(canonical_json(&a), canonical_json(&b));
        assert_eq!(
            fingerprint(&canonical_json(&a)),
            fingerprint(&canonical_json(&b))
        );
    }

    #[test]
    fn array_order_changes_the_fingerprint() {
        let a: Value = serde_json::from_str("[1,2]").unwrap();
        let b: Value = serde_json::from_str("[2,1]").unwrap();
        assert_ne!(
            fingerprint(&canonical_json(&a)),
            fingerprint(&canonical_json(&b))
        );
    }

    #[test]
    fn strings_are_escaped() {
        let v: Value = serde_json::from_str(r#"{"k\"ey":"line\nbreak"}"#).unwrap();
        assert_eq!(canonical_json(&v), br#"{"k\"ey":"line\nbreak"}"#);
    }
}
