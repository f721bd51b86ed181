//! Bodies as Thryve sends them: notifications, data pushes, and the codings they travel in.

use serde_json::{json, Value};

/// A valid unix-form epoch notification for `user`.
pub fn epoch_notification(user: &str, start_ms: i64, end_ms: i64, types: &[i32]) -> Value {
    json!({
        "endUserId": user, "timestampType": "unix", "type": "notification.data.epoch.createupdate",
        "data": {"startTimestamp": start_ms, "endTimestamp": end_ms, "dataSourceId": 8, "dataTypeIds": types}
    })
}

/// An epoch data push (`event.data.epoch.<kind>`, `kind` create or update) of `points` from
/// source 8, named `source_name` if given, in its decoded (JSON) form.
pub fn epoch_push(user: &str, kind: &str, source_name: Option<&str>, points: Vec<Value>) -> Value {
    let mut source = json!({"dataSourceId": 8, "epochData": points});
    if let Some(name) = source_name {
        source["dataSourceName"] = json!(name);
    }
    json!({"endUserId": user, "timestampType": "unix", "type": format!("event.data.epoch.{kind}"),
           "data": [source]})
}

/// One value of an epoch push: an instant (`end_ms` `None`) or a span, in UTC+`tz` minutes.
pub fn epoch_point(
    start_ms: i64,
    end_ms: Option<i64>,
    tz: i64,
    type_id: i32,
    value: &str,
) -> Value {
    let mut point = json!({"startTimestamp": start_ms, "timezoneOffset": tz, "dataTypeId": type_id,
                           "value": value});
    if let Some(end) = end_ms {
        point["endTimestamp"] = json!(end);
    }
    point
}

/// `data` as a zstd frame.
pub fn zstd(data: &[u8]) -> Vec<u8> {
    zstd::encode_all(data, 3).unwrap()
}

/// `data` as a gzip member.
pub fn gzip(data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

/// Standard base64 with padding, as Thryve writes it.
pub fn base64(data: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(data)
}

/// A data push as Thryve puts it on the wire: base64 text of a zstd frame.
pub fn thryve_wire(json: &[u8]) -> Vec<u8> {
    base64(&zstd(json)).into_bytes()
}
