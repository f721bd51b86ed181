//! A load generator for benchmarks and tests: a realistic mix of Thryve deliveries sent at a
//! fixed concurrency (or rate), latency recorded in an HDR histogram, and a verification that
//! every acknowledged delivery is in the inbox and, once the poller is idle, covered.

use std::{
    collections::BTreeMap,
    sync::Arc,
    time::{Duration, Instant},
};

use chrono::{DateTime, Utc};
use hdrhistogram::Histogram;
use serde::Serialize;
use serde_json::{json, Value};
use sqlx::PgPool;

use crate::thryve::{self, Parsed, Span};

/// What to send and how hard.
#[derive(Debug, Clone)]
pub struct LoadConfig {
    /// e.g. `http://127.0.0.1:8080/webhooks/thryve`
    pub url: String,
    pub basic_auth: Option<(String, String)>,
    pub concurrency: usize,
    /// Stop after this many requests...
    pub requests: u64,
    /// ...or after this long, whichever comes first.
    pub duration: Duration,
    /// Requests per second over all workers; `None` = as fast as answers come.
    pub rate: Option<f64>,
    pub users: u32,
    /// Share of requests that repeat an earlier body byte for byte.
    pub retry_share: f64,
    pub seed: u64,
    /// Measure the lag from each 200 to its row being processed (ranges visible), by
    /// watching the inbox through this pool.
    pub lag_pool: Option<PgPool>,
}

/// One answered request.
#[derive(Debug, Clone)]
pub struct Sent {
    pub status: u16,
    pub inbox_id: Option<i64>,
    /// The `Retry-After` header, if any (a 503 must carry one).
    pub retry_after: Option<String>,
    /// The `error` of a JSON error body.
    pub error: Option<String>,
    pub body: Arc<Value>,
    pub answered_at: Instant,
}

/// Throughput and latency of a run.
#[derive(Debug, Clone, Serialize)]
pub struct LoadReport {
    pub requests: u64,
    pub seconds: f64,
    pub rate_per_s: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    pub statuses: BTreeMap<u16, u64>,
    pub transport_errors: u64,
    /// From a 200 to the poller's commit of that row, when measured (5 ms resolution).
    pub lag_p50_ms: Option<f64>,
    pub lag_p99_ms: Option<f64>,
    pub lag_max_ms: Option<f64>,
}

/// The outcome of a run: the figures, and every answer for [`verify`].
pub struct LoadRun {
    pub report: LoadReport,
    pub sent: Vec<Sent>,
}

/// A small deterministic generator (xorshift64*), so a seed replays the same mix.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed.max(1))
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
    pub fn chance(&mut self, p: f64) -> bool {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64 <= p
    }
}

const SOURCES: [i64; 14] = [1, 2, 3, 5, 6, 8, 11, 16, 17, 18, 38, 41, 42, 44];
const EPOCH_TYPES: [i64; 6] = [1000, 1001, 1010, 1200, 3000, 3100];
const DAILY_TYPES: [i64; 5] = [1000, 2000, 3001, 5020, 1010];
const DAY_MS: i64 = 86_400_000;
/// 2025-11-24T00:00:00Z: the mix's "today", fixed so runs are comparable.
const TODAY_MS: i64 = 1_763_942_400_000;

/// One delivery of the mix: body, and whether it goes out as Thryve sends a data push: base64
/// text of a zstd frame under `content-encoding: zstd`.
pub fn delivery(rng: &mut Rng, users: u32) -> (Value, bool) {
    let user = format!(
        "{:032x}",
        u128::from(rng.below(u64::from(users))) * 0x9e37_79b9_7f4a_7c15
    );
    let source = SOURCES[rng.below(SOURCES.len() as u64) as usize];
    let unix = rng.chance(0.75);
    let roll = rng.below(100);
    let instant = |ms: i64| -> Value {
        if unix {
            json!(ms)
        } else {
            json!(DateTime::<Utc>::from_timestamp_millis(ms)
                .unwrap_or_default()
                .to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        }
    };
    let day = |ms: i64| -> Value {
        let ms = ms - ms.rem_euclid(DAY_MS);
        if unix {
            json!(ms)
        } else {
            json!(DateTime::<Utc>::from_timestamp_millis(ms)
                .unwrap_or_default()
                .date_naive()
                .to_string())
        }
    };
    let start = TODAY_MS - rng.below(30 * DAY_MS as u64) as i64;
    let stamp = if unix { "unix" } else { "iso" };
    match roll {
        0..=39 => {
            let end = start + rng.below(3 * 3_600_000) as i64;
            (
                json!({"endUserId": user, "timestampType": stamp, "type": "notification.data.epoch.createupdate",
                    "data": {"startTimestamp": instant(start), "endTimestamp": instant(end), "dataSourceId": source,
                             "dataTypeIds": pick_types(rng, &EPOCH_TYPES)}}),
                false,
            )
        }
        40..=59 => {
            let end = start + rng.below(3) as i64 * DAY_MS;
            (
                json!({"endUserId": user, "endUserAlias": format!("alias-{user}"), "timestampType": stamp,
                    "type": "notification.data.daily.createupdate",
                    "data": {"startDay": day(start), "endDay": day(end), "dataSourceId": source,
                             "dataTypeIds": pick_types(rng, &DAILY_TYPES)}}),
                false,
            )
        }
        60..=64 => {
            let kind = if rng.chance(0.8) {
                "notification.source.connect"
            } else {
                "notification.source.disconnect"
            };
            (
                json!({"endUserId": user, "timestampType": stamp, "type": kind,
                    "data": {"timestamp": instant(start), "dataSourceId": source}}),
                false,
            )
        }
        65..=84 => {
            let points: Vec<Value> = (0..1 + rng.below(20))
                .map(|i| {
                    let at = start + i as i64 * 60_000;
                    json!({"startTimestamp": at, "endTimestamp": at + 60_000, "timezoneOffset": 60,
                           "dataTypeId": EPOCH_TYPES[rng.below(EPOCH_TYPES.len() as u64) as usize],
                           "value": (60 + rng.below(80)).to_string()})
                })
                .collect();
            (
                json!({"endUserId": user, "timestampType": "unix", "type": "event.data.epoch.update",
                    "data": [{"dataSourceId": source, "dataSourceName": "Source", "epochData": points}]}),
                true,
            )
        }
        85..=94 => {
            let points: Vec<Value> = (0..1 + rng.below(5))
                .map(|i| json!({"day": start - start.rem_euclid(DAY_MS) - i as i64 * DAY_MS, "timezoneOffset": 0,
                                "dataTypeId": DAILY_TYPES[rng.below(DAILY_TYPES.len() as u64) as usize],
                                "value": (rng.below(20_000)).to_string()}))
                .collect();
            (
                json!({"endUserId": user, "timestampType": "unix", "type": "event.data.daily.create",
                    "data": [{"dataSourceId": source, "dataSourceName": "Source", "dailyData": points}]}),
                true,
            )
        }
        _ => {
            let end = start + rng.below(6 * 3_600_000) as i64;
            let iso = |ms: i64| {
                DateTime::<Utc>::from_timestamp_millis(ms)
                    .unwrap_or_default()
                    .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            };
            // Half in the v5 shape, half in the older trigger shape (no types, a string id).
            let body = if rng.chance(0.5) {
                json!({"sourceUpdate": {"authenticationToken": user, "partnerUserID": format!("alias-{user}"),
                    "dataSource": source, "createdAt": iso(end),
                    "/v5/dynamicEpochValues": {"startTimestamp": iso(start), "endTimestamp": iso(end),
                        "dynamicValueTypes": pick_types(rng, &EPOCH_TYPES), "startTimestampUnix": start, "endTimestampUnix": end}}})
            } else {
                let update_type = ["MINUTE", "DAILY", "BOTH"][rng.below(3) as usize];
                json!({"sourceUpdate": {"authenticationToken": user, "partnerUserID": format!("alias-{user}"),
                    "dataSource": source.to_string(), "startTimestamp": iso(start), "endTimestamp": iso(end),
                    "updateType": update_type}})
            };
            (body, false)
        }
    }
}

fn pick_types(rng: &mut Rng, pool: &[i64]) -> Vec<i64> {
    (0..1 + rng.below(3))
        .map(|_| pool[rng.below(pool.len() as u64) as usize])
        .collect()
}

/// One request of the run, made ready before the clock starts so that building JSON and
/// compressing it do not compete with the bridge for the CPU while it is measured.
#[derive(Clone)]
struct Prepared {
    body: Arc<Value>,
    wire: bytes::Bytes,
    zstd: bool,
}

/// Each worker's requests: fresh deliveries of the mix, and (with `retry_share`) exact
/// byte-for-byte repeats of earlier ones, as Thryve's retries are.
fn prepare(config: &LoadConfig, worker: usize) -> Vec<Prepared> {
    let workers = config.concurrency.max(1) as f64;
    let expected = match (config.requests, config.rate) {
        (n, _) if n != u64::MAX => n as f64 / workers,
        (_, Some(rate)) => rate * config.duration.as_secs_f64() / workers * 1.1,
        // As fast as answers come: enough for 25,000 requests a second.
        _ => 25_000.0 * config.duration.as_secs_f64() / workers,
    };
    let count = expected.ceil() as usize + 1;
    let mut rng = Rng::new(config.seed.wrapping_add(worker as u64 * 7919));
    let mut out: Vec<Prepared> = Vec::with_capacity(count);
    while out.len() < count {
        if !out.is_empty() && rng.chance(config.retry_share) {
            let earlier = out[rng.below(out.len() as u64) as usize].clone();
            out.push(earlier);
            continue;
        }
        let (body, zstd) = delivery(&mut rng, config.users);
        let json = serde_json::to_vec(&body).expect("JSON serialises");
        let wire = if zstd {
            use base64::Engine as _;
            let frame = zstd::encode_all(&json[..], 3).expect("zstd in memory");
            base64::engine::general_purpose::STANDARD
                .encode(frame)
                .into_bytes()
        } else {
            json
        };
        out.push(Prepared {
            body: Arc::new(body),
            wire: wire.into(),
            zstd,
        });
    }
    out
}

/// Sends the mix and records every answer.
pub async fn run(config: &LoadConfig) -> LoadRun {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(config.concurrency)
        .timeout(Duration::from_secs(10))
        .build()
        .expect("an HTTP client builds");
    let prepared: Vec<Vec<Prepared>> = (0..config.concurrency.max(1))
        .map(|w| prepare(config, w))
        .collect();
    let started = Instant::now();
    let deadline = started + config.duration;
    let issued = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let (lag_tx, lag_rx) = tokio::sync::mpsc::unbounded_channel::<(i64, Instant)>();
    let lag_watcher = config
        .lag_pool
        .clone()
        .map(|pool| tokio::spawn(watch_lag(pool, lag_rx)));
    let workers: Vec<_> = prepared
        .into_iter()
        .map(|requests| {
            let (client, config, issued) = (client.clone(), config.clone(), issued.clone());
            let lag_tx = lag_tx.clone();
            tokio::spawn(async move {
                let mut latencies = latency_histogram();
                let mut sent = Vec::new();
                let mut errors = 0u64;
                let mut ticker = config.rate.map(|rate| {
                    let period =
                        Duration::from_secs_f64(config.concurrency as f64 / rate.max(0.001));
                    let mut t = tokio::time::interval(period);
                    t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                    t
                });
                // Past the prepared list (a faster bridge than planned for) it starts over:
                // the repeats are then duplicates, still valid traffic.
                for prepared in requests.iter().cycle() {
                    if Instant::now() >= deadline
                        || issued.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
                            >= config.requests
                    {
                        break;
                    }
                    if let Some(t) = ticker.as_mut() {
                        t.tick().await;
                    }
                    let mut request = client
                        .post(&config.url)
                        .header("content-type", "application/json");
                    if let Some((user, password)) = &config.basic_auth {
                        request = request.basic_auth(user, Some(password));
                    }
                    if prepared.zstd {
                        request = request.header("content-encoding", "zstd");
                    }
                    let t0 = Instant::now();
                    match request.body(prepared.wire.clone()).send().await {
                        Ok(response) => {
                            let status = response.status().as_u16();
                            let retry_after = response
                                .headers()
                                .get(reqwest::header::RETRY_AFTER)
                                .and_then(|v| v.to_str().ok())
                                .map(str::to_owned);
                            let ack: Option<Value> = response.json().await.ok();
                            let answered_at = Instant::now();
                            latencies.saturating_record((answered_at - t0).as_micros() as u64);
                            let inbox_id = ack.as_ref().and_then(|a| a["inbox_id"].as_i64());
                            if let (200, Some(id)) = (status, inbox_id) {
                                let _ = lag_tx.send((id, answered_at));
                            }
                            let error = ack
                                .as_ref()
                                .and_then(|a| a["error"].as_str())
                                .map(str::to_owned);
                            sent.push(Sent {
                                status,
                                inbox_id,
                                retry_after,
                                error,
                                body: prepared.body.clone(),
                                answered_at,
                            });
                        }
                        Err(_) => errors += 1,
                    }
                }
                (latencies, sent, errors)
            })
        })
        .collect();
    let mut latencies = latency_histogram();
    let mut sent = Vec::new();
    let mut transport_errors = 0;
    for worker in workers {
        let (h, s, e) = worker.await.expect("a load worker does not panic");
        latencies.add(h).expect("histograms of one precision add");
        sent.extend(s);
        transport_errors += e;
    }
    let seconds = started.elapsed().as_secs_f64();
    drop(lag_tx);
    let lag = match lag_watcher {
        Some(watcher) => Some(watcher.await.expect("the lag watcher does not panic")),
        None => None,
    };
    let lag_ms = |q: f64| {
        lag.as_ref()
            .filter(|h| !h.is_empty())
            .map(|h| h.value_at_quantile(q) as f64 / 1000.0)
    };
    let mut statuses = BTreeMap::new();
    for s in &sent {
        *statuses.entry(s.status).or_insert(0) += 1;
    }
    let ms = |q: f64| latencies.value_at_quantile(q) as f64 / 1000.0;
    let report = LoadReport {
        requests: sent.len() as u64,
        seconds,
        rate_per_s: sent.len() as f64 / seconds,
        p50_ms: ms(0.5),
        p90_ms: ms(0.9),
        p99_ms: ms(0.99),
        max_ms: latencies.max() as f64 / 1000.0,
        statuses,
        transport_errors,
        lag_p50_ms: lag_ms(0.5),
        lag_p99_ms: lag_ms(0.99),
        lag_max_ms: lag
            .as_ref()
            .filter(|h| !h.is_empty())
            .map(|h| h.max() as f64 / 1000.0),
    };
    LoadRun { report, sent }
}

/// Watches acknowledged rows until the poller has processed them; one query per 5 ms for all
/// of them, so watching does not load the database it measures.
async fn watch_lag(
    pool: PgPool,
    mut acked: tokio::sync::mpsc::UnboundedReceiver<(i64, Instant)>,
) -> Histogram<u64> {
    let mut lags = latency_histogram();
    let mut waiting: std::collections::HashMap<i64, Instant> = std::collections::HashMap::new();
    let mut open = true;
    let mut give_up = None;
    loop {
        while let Ok((id, at)) = acked.try_recv() {
            waiting.entry(id).or_insert(at);
        }
        if open && acked.is_closed() && acked.is_empty() {
            open = false;
            give_up = Some(Instant::now() + Duration::from_secs(30));
        }
        if !open && (waiting.is_empty() || give_up.is_some_and(|t| Instant::now() > t)) {
            return lags;
        }
        if !waiting.is_empty() {
            let ids: Vec<i64> = waiting.keys().copied().collect();
            let done: Vec<i64> = sqlx::query_scalar(
                "SELECT id FROM thryve.inbox WHERE id = ANY($1) AND status <> 'pending'",
            )
            .bind(&ids)
            .fetch_all(&pool)
            .await
            .unwrap_or_default();
            let now = Instant::now();
            for id in done {
                if let Some(at) = waiting.remove(&id) {
                    lags.saturating_record((now - at).as_micros() as u64);
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// What [`verify`] found.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Verification {
    /// Deliveries answered 200.
    pub acknowledged: u64,
    /// Of those, how many have no inbox row: must be 0.
    pub missing: u64,
    /// Acknowledged rows still pending when the poller was waited for (or quarantined or
    /// ignored): their coverage is not checked, so this must be 0 for a clean run.
    pub not_processed: u64,
    /// (user, source, type, span) of processed deliveries not inside a range dirtied at or
    /// after processing: must be 0.
    pub uncovered: u64,
}

/// Checks every 200 against the database: its row exists, and once no row is pending (the
/// poller is idle, waited for up to `idle_timeout`), everything it names is covered.
pub async fn verify(
    pool: &PgPool,
    sent: &[Sent],
    idle_timeout: Duration,
) -> sqlx::Result<Verification> {
    let acked: Vec<&Sent> = sent.iter().filter(|s| s.status == 200).collect();
    let ids: Vec<i64> = acked.iter().filter_map(|s| s.inbox_id).collect();
    let found: i64 =
        sqlx::query_scalar("SELECT count(DISTINCT id) FROM thryve.inbox WHERE id = ANY($1)")
            .bind(&ids)
            .fetch_one(pool)
            .await?;
    let mut distinct = ids.clone();
    distinct.sort_unstable();
    distinct.dedup();
    let missing = (distinct.len() as i64 - found).max(0) as u64 + (acked.len() - ids.len()) as u64;

    let waited = Instant::now();
    loop {
        let pending: i64 =
            sqlx::query_scalar("SELECT count(*) FROM thryve.inbox WHERE status = 'pending'")
                .fetch_one(pool)
                .await?;
        if pending == 0 || waited.elapsed() > idle_timeout {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let not_processed: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM thryve.inbox WHERE id = ANY($1) AND status <> 'processed'",
    )
    .bind(&distinct)
    .fetch_one(pool)
    .await?;

    let (mut inbox_ids, mut users, mut sources, mut grans, mut types) =
        (vec![], vec![], vec![], vec![], vec![]);
    let (mut starts, mut ends, mut start_days, mut end_days) = (vec![], vec![], vec![], vec![]);
    for s in &acked {
        let (Some(id), Value::Object(body)) = (s.inbox_id, &*s.body) else {
            continue;
        };
        let Parsed::Valid(n) = thryve::parse(body) else {
            continue;
        };
        for span in n.effects().spans {
            let (source, ids, gran, st, et, sd, ed) = match span {
                Span::Epoch(e) => (
                    e.data_source_id,
                    e.data_type_ids,
                    "epoch",
                    Some(e.start),
                    Some(e.end),
                    None,
                    None,
                ),
                Span::Daily(d) => (
                    d.data_source_id,
                    d.data_type_ids,
                    "daily",
                    None,
                    None,
                    Some(d.start),
                    Some(d.end),
                ),
            };
            // No types means all types (legacy triggers): 0 stands for "all" below.
            let ids = if ids.is_empty() { vec![0] } else { ids };
            for t in ids {
                inbox_ids.push(id);
                users.push(n.end_user_id.clone());
                sources.push(source);
                grans.push(gran);
                types.push(t);
                starts.push(st);
                ends.push(et);
                start_days.push(sd);
                end_days.push(ed);
            }
        }
    }
    let uncovered: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM unnest($1::bigint[], $2::text[], $3::int[], $4::text[], $5::int[],
                                     $6::timestamptz[], $7::timestamptz[], $8::date[], $9::date[])
                AS w(inbox_id, u, ds, g, t, st, et, sd, ed)
         JOIN thryve.inbox i ON i.id = w.inbox_id AND i.status = 'processed'
         WHERE NOT EXISTS (
             SELECT 1 FROM thryve.dirty_ranges r
             WHERE r.end_user_id = w.u AND r.data_source_id = w.ds AND r.granularity = w.g
               AND (cardinality(r.data_type_ids) = 0 OR w.t = ANY (r.data_type_ids))
               AND r.last_dirtied_at >= i.processed_at
               AND (w.g = 'epoch' AND r.start_time <= w.st AND r.end_time >= w.et
                 OR w.g = 'daily' AND r.start_day <= w.sd AND r.end_day >= w.ed))",
    )
    .bind(inbox_ids)
    .bind(users)
    .bind(sources)
    .bind(grans)
    .bind(types)
    .bind(starts)
    .bind(ends)
    .bind(start_days)
    .bind(end_days)
    .fetch_one(pool)
    .await?;
    Ok(Verification {
        acknowledged: acked.len() as u64,
        missing,
        not_processed: not_processed as u64,
        uncovered: uncovered as u64,
    })
}

/// How fast pollers drained a pre-filled inbox.
#[derive(Debug, Clone, Serialize)]
pub struct DrainReport {
    pub rows: usize,
    pub pollers: usize,
    pub batch_size: i64,
    pub fill_seconds: f64,
    pub drain_seconds: f64,
    pub rows_per_s: f64,
}

/// Inserts `rows` pending deliveries of the mix (straight into the inbox, no HTTP), then runs
/// `pollers` pollers until none is left, and times that.
pub async fn drain_benchmark(
    pool: &PgPool,
    rows: usize,
    pollers: usize,
    batch_size: i64,
    users: u32,
) -> sqlx::Result<DrainReport> {
    use crate::{
        inbox::{insert_batch, NewDelivery},
        poller::{Poller, PollerConfig},
    };
    let filled = Instant::now();
    let mut rng = Rng::new(7);
    let mut remaining = rows;
    while remaining > 0 {
        let mut chunk: BTreeMap<[u8; 32], NewDelivery> = BTreeMap::new();
        while chunk.len() < remaining.min(2000) {
            let (body, _) = delivery(&mut rng, users);
            if let Value::Object(map) = body {
                let d = NewDelivery::from_body(&map);
                chunk.insert(d.fingerprint, d);
            }
        }
        let batch: Vec<(&NewDelivery, i32)> = chunk.values().map(|d| (d, 1)).collect();
        let inserted = insert_batch(pool, &batch).await?;
        remaining -= inserted
            .iter()
            .filter(|r| r.inserted)
            .count()
            .min(remaining);
    }
    let fill_seconds = filled.elapsed().as_secs_f64();
    let started = Instant::now();
    let tasks: Vec<_> = (0..pollers.max(1))
        .map(|_| {
            let poller = Poller::new(
                pool.clone(),
                PollerConfig {
                    batch_size,
                    interval: Duration::from_secs(1),
                    listen: false,
                },
            );
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
    })
}

/// Microseconds from 1 µs to 60 s at 3 significant digits; `saturating_record` clamps to it.
fn latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid histogram bounds")
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
    use crate::{
        config::{FetcherConfig, Secret},
        fetcher::{Fetcher, FetcherSettings, ThryveClient},
        metrics::Metrics,
        ranges::{merge_spans, Extent, MergedSpan},
    };
    use axum::{routing::post, Router};
    use std::sync::{Arc, Mutex};

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
    let config = FetcherConfig {
        fetcher_enabled: true,
        thryve_api_url: format!("http://{addr}"),
        thryve_api_user: "bench".to_owned(),
        thryve_api_password: Some(Secret::new("bench")),
        thryve_app_id: "bench".to_owned(),
        thryve_app_secret: Some(Secret::new("bench")),
        fetcher_concurrency: concurrency,
        fetcher_rate_per_sec: rate,
        fetcher_timeout_ms: 30_000,
        fetcher_max_response_bytes: 64 * 1024 * 1024,
        fetcher_max_tries: 3,
        fetcher_backoff_ms: 100,
        fetcher_backoff_max_ms: 1_000,
        fetcher_lease_secs: 300,
        fetcher_interval_ms: 100,
        fetcher_auth_pause_secs: 60,
        fetcher_worker: format!("bench-{run}"),
    };
    config.validate().map_err(|e| e.to_string())?;
    let metrics = Arc::new(Metrics::new());
    let fetcher = Fetcher::new(
        pool.clone(),
        ThryveClient::new(&config, metrics.clone()).map_err(|e| e.to_string())?,
        FetcherSettings::from_config(&config),
        metrics,
    );
    let shutdown = tokio_util::sync::CancellationToken::new();
    let started = Instant::now();
    let task = tokio::spawn(fetcher.run(shutdown.clone()));
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
    let _ = task.await;
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
