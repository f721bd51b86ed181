//! Parse + fingerprint cost of each payload kind, from raw bytes to a ready inbox row: the
//! receiver's own `parse_delivery` (decode, JSON, checks, classification, fingerprint).

use axum::http::{header::CONTENT_ENCODING, HeaderMap, HeaderValue};
use base64::{engine::general_purpose::STANDARD, Engine as _};
use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use serde_json::Value;
use thryve_bridge::http::parse_delivery;
use thryve_loadgen as loadgen;

fn kinds() -> Vec<(&'static str, Value, bool)> {
    // Draw from the load generator's mix until each kind has an example.
    let mut rng = loadgen::Rng::new(42);
    let mut found: Vec<(&'static str, Value, bool)> = Vec::new();
    while found.len() < 6 {
        let (body, zstd) = loadgen::delivery(&mut rng, 100);
        let name = match (body["type"].as_str(), body["timestampType"].as_str()) {
            (Some("notification.data.epoch.createupdate"), Some("unix")) => {
                "epoch_notification_unix"
            }
            (Some("notification.data.daily.createupdate"), Some("iso")) => "daily_notification_iso",
            (Some("notification.source.connect"), _) => "source_connect",
            (Some("event.data.epoch.update"), _) => "data_push_epoch_base64_zstd",
            (Some("event.data.daily.create"), _) => "data_push_daily_base64_zstd",
            (None, _) if body.get("sourceUpdate").is_some() => "legacy_source_update",
            _ => continue,
        };
        if !found.iter().any(|(n, ..)| *n == name) {
            found.push((name, body, zstd));
        }
    }
    found
}

fn parse_and_fingerprint(c: &mut Criterion) {
    let mut group = c.benchmark_group("parse_and_fingerprint");
    for (name, body, compress) in kinds() {
        let raw = serde_json::to_vec(&body).unwrap();
        // Pushes as Thryve sends them: base64 text of a zstd frame.
        let (wire, encoding) = if compress {
            let frame = zstd::encode_all(&raw[..], 3).unwrap();
            (STANDARD.encode(frame).into_bytes(), Some("zstd"))
        } else {
            (raw.clone(), None)
        };
        group.throughput(Throughput::Bytes(raw.len() as u64));
        let mut headers = HeaderMap::new();
        if let Some(encoding) = encoding {
            headers.insert(CONTENT_ENCODING, HeaderValue::from_static(encoding));
        }
        group.bench_function(name, |b| {
            b.iter(|| black_box(parse_delivery(&headers, black_box(&wire), 1 << 20).unwrap()))
        });
    }
    group.finish();
}

criterion_group!(benches, parse_and_fingerprint);
criterion_main!(benches);
