//! Benchmarks beside the HTTP load: the poller draining a filled inbox, and the built-in
//! fetcher against an in-process fake of Thryve's data API.

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use serde::Serialize;
use serde_json::{json, Value};
use sqlx::PgPool;

use crate::mix::{Mix, Rng};

/// How fast pollers drained a pre-filled inbox.
#[derive(Debug, Clone, Serialize)]
pub struct DrainReport {
    pub rows: usize,
    pub pollers: usize,
    pub batch_size: i64,
    pub fill_seconds: f64,
    pub drain_seconds: f64,
    pub rows_per_s: f64,
    /// Values carried by the drained pushes, and per second of the drain.
    pub values: u64,
    pub values_per_s: f64,
}

/// Inserts `rows` pending deliveries of the mix (as [`run`] sends it) (straight into the inbox, no HTTP), then runs
/// `pollers` pollers until none is left, and times that.
pub async fn drain_benchmark(
    pool: &PgPool,
    rows: usize,
    pollers: usize,
    batch_size: i64,
    users: u32,
) -> sqlx::Result<DrainReport> {
    use thryve_bridge::{
        config::{parse_env, PollerConfig},
        inbox::{insert_batch, NewDelivery},
        poller::Poller,
    };
    let filled = Instant::now();
    let mix = Mix::new(7, users);
    let mut rng = Rng::new(7);
    let mut remaining = rows;
    let mut values = 0u64;
    while remaining > 0 {
        let mut chunk: BTreeMap<[u8; 32], (NewDelivery, usize)> = BTreeMap::new();
        while chunk.len() < remaining.min(2000) {
            let sent = mix.draw(&mut rng);
            if let Value::Object(map) = sent.json() {
                let d = NewDelivery::from_body(&map);
                chunk.insert(d.fingerprint, (d, sent.template.values));
            }
        }
        let batch: Vec<(&NewDelivery, i32)> = chunk.values().map(|(d, _)| (d, 1)).collect();
        let inserted = insert_batch(pool, &batch).await?;
        for row in inserted.iter().filter(|r| r.inserted) {
            let key: Option<[u8; 32]> = row.fingerprint.as_slice().try_into().ok();
            if let (Some((_, n)), true) = (key.and_then(|k| chunk.get(&k)), remaining > 0) {
                values += *n as u64;
                remaining -= 1;
            }
        }
    }
    let fill_seconds = filled.elapsed().as_secs_f64();
    let started = Instant::now();
    // The defaults, but for the batch size this bench varies.
    let config: PollerConfig = parse_env([("POLL_BATCH_SIZE", batch_size.to_string())])
        .expect("a whole number of rows is a valid POLL_BATCH_SIZE");
    let tasks: Vec<_> = (0..pollers.max(1))
        .map(|_| {
            let poller = Poller::new(pool.clone(), &config);
            tokio::spawn(async move { poller.drain().await })
        })
        .collect();
    let mut drained = 0;
    for t in tasks {
        drained += t.await.expect("a poller task does not panic")?;
    }
    let drain_seconds = started.elapsed().as_secs_f64();
    Ok(DrainReport {
        rows: drained,
        pollers,
        batch_size,
        fill_seconds,
        drain_seconds,
        rows_per_s: drained as f64 / drain_seconds,
        values,
        values_per_s: values as f64 / drain_seconds,
    })
}

/// What [`fetch_benchmark`] measured.
#[derive(Debug, Clone, Serialize)]
pub struct FetchReport {
    pub ranges: usize,
    pub concurrency: usize,
    /// FETCHER_RATE_PER_SEC of the run (0: no cap).
    pub rate_cap_per_sec: f64,
    pub values_per_call: usize,
    pub seconds: f64,
    pub ranges_per_sec: f64,
    pub calls: usize,
    /// Most calls the fake API received in any one-second window.
    pub max_calls_in_any_second: usize,
    pub values_written: i64,
}

/// Times the built-in fetcher over `ranges` pending epoch ranges (one user each, one call
/// each) against an in-process fake of Thryve's data API that answers at once with
/// `values_per_call` values, with `concurrency` loops and a rate cap of `rate` calls/s (0:
/// none). Writes to the database at `pool`: use a scratch one.
pub async fn fetch_benchmark(
    pool: &PgPool,
    ranges: usize,
    concurrency: usize,
    rate: f64,
    values_per_call: usize,
) -> Result<FetchReport, String> {
    use axum::{routing::post, Router};
    use std::sync::{Arc, Mutex};
    use thryve_bridge::{
        config::{parse_env, FetcherConfig},
        fetcher::Fetcher,
        metrics::Metrics,
        ranges::{merge_spans, Extent, MergedSpan},
        service::Services,
    };

    let items: Vec<Value> = (0..values_per_call)
        .map(|i| {
            json!({"startTimestampUnix": 1_764_547_200_000_i64 + i as i64 * 60_000,
                   "endTimestamp": "null", "dynamicValueType": 3000, "value": (60 + i % 40).to_string(),
                   "valueType": "LONG", "details": {"timezoneOffset": 60}})
        })
        .collect();
    let body = json!([{"authenticationToken": "bench", "partnerUserID": "bench",
                       "dataSources": [{"dataSource": 8, "data": items}]}])
    .to_string();
    let calls: Arc<Mutex<Vec<Instant>>> = Arc::default();
    let app = Router::new().fallback(post({
        let calls = calls.clone();
        move || {
            calls.lock().expect("not poisoned").push(Instant::now());
            let body = body.clone();
            async move { ([("content-type", "application/json")], body) }
        }
    }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| e.to_string())?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let server = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });

    let run = uuid::Uuid::new_v4().simple().to_string();
    let start = chrono::DateTime::from_timestamp_millis(1_764_547_200_000).expect("a valid time");
    let spans: Vec<MergedSpan> = (0..ranges)
        .map(|i| MergedSpan {
            end_user_id: format!("bench-{run}-{i}"),
            data_source_id: 8,
            data_type_ids: vec![3000],
            extent: Extent::Epoch(start, start + chrono::TimeDelta::hours(1)),
            notification_count: 1,
            needs_fetch: true,
        })
        .collect();
    for chunk in spans.chunks(1000) {
        merge_spans(pool, chunk).await.map_err(|e| e.to_string())?;
    }
    // The defaults, but for what this bench varies, the fake's address and credentials, and
    // shorter waits than Thryve needs (the fake answers at once).
    let config: FetcherConfig = parse_env([
        ("FETCHER_ENABLED", "true".to_owned()),
        ("THRYVE_API_URL", format!("http://{addr}")),
        ("THRYVE_API_USER", "bench".to_owned()),
        ("THRYVE_API_PASSWORD", "bench".to_owned()),
        ("THRYVE_APP_ID", "bench".to_owned()),
        ("THRYVE_APP_SECRET", "bench".to_owned()),
        ("FETCHER_CONCURRENCY", concurrency.to_string()),
        ("FETCHER_RATE_PER_SEC", rate.to_string()),
        ("FETCHER_BACKOFF_MS", "100".to_owned()),
        ("FETCHER_BACKOFF_MAX_MS", "1000".to_owned()),
        ("FETCHER_INTERVAL_MS", "100".to_owned()),
        ("FETCHER_WORKER", format!("bench-{run}")),
    ])
    .map_err(|e| e.to_string())?;
    config.validate().map_err(|e| e.to_string())?;
    let metrics = Arc::new(Metrics::new());
    let fetcher = Fetcher::new(pool.clone(), &config, metrics).map_err(|e| e.to_string())?;
    let shutdown = tokio_util::sync::CancellationToken::new();
    let started = Instant::now();
    let mut services = Services::new(shutdown.clone());
    fetcher.start(&mut services);
    let pattern = format!("bench-{run}-%");
    let done = loop {
        let done: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM thryve.dirty_ranges WHERE end_user_id LIKE $1 AND status = 'done'",
        )
        .bind(&pattern)
        .fetch_one(pool)
        .await
        .map_err(|e| e.to_string())?;
        if done as usize >= ranges {
            break started.elapsed();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    shutdown.cancel();
    services.stopped().await;
    server.abort();
    let values_written: i64 =
        sqlx::query_scalar("SELECT count(*) FROM thryve.epoch_values WHERE end_user_id LIKE $1")
            .bind(&pattern)
            .fetch_one(pool)
            .await
            .map_err(|e| e.to_string())?;
    let calls = calls.lock().expect("not poisoned").clone();
    let max_calls_in_any_second = calls
        .iter()
        .enumerate()
        .map(|(i, t)| {
            calls[i..]
                .iter()
                .take_while(|u| u.duration_since(*t) < Duration::from_secs(1))
                .count()
        })
        .max()
        .unwrap_or(0);
    Ok(FetchReport {
        ranges,
        concurrency,
        rate_cap_per_sec: rate,
        values_per_call,
        seconds: done.as_secs_f64(),
        ranges_per_sec: ranges as f64 / done.as_secs_f64(),
        calls: calls.len(),
        max_calls_in_any_second,
        values_written,
    })
}
