//! Sending the mix: workers at a fixed concurrency (or rate), exact retries and 80 ms twins,
//! every answer recorded, latency and lag in HDR histograms.

use std::{
    collections::BTreeMap,
    sync::Arc,
    time::{Duration, Instant},
};

use hdrhistogram::Histogram;
use serde::Serialize;
use serde_json::Value;
use sqlx::PgPool;

use crate::mix::{Mix, Rng, SentBody};

/// What to send and how hard.
#[derive(Debug, Clone)]
pub struct LoadConfig {
    /// e.g. `http://127.0.0.1:8080/webhooks/thryve`; several, comma-separated, spread the
    /// workers over them round-robin.
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
    /// Share of pushes sent again byte for byte 80 ms later.
    pub twin_share: f64,
    pub seed: u64,
    /// Measure the lag from each 200 to its row being processed (ranges visible), by
    /// watching the inbox through this pool.
    pub lag_pool: Option<PgPool>,
    /// Send only notifications (epoch and daily), no pushes: the receiver's own limit on its
    /// smallest deliveries.
    pub notifications_only: bool,
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
    /// What was sent; [`SentBody::json`] rebuilds the body.
    pub body: SentBody,
    pub answered_at: Instant,
}

/// Throughput and latency of a run.
#[derive(Debug, Clone, Serialize)]
pub struct LoadReport {
    pub requests: u64,
    pub seconds: f64,
    pub rate_per_s: f64,
    /// Values carried by the pushes sent, per second.
    pub values_per_s: f64,
    /// Values carried per delivery sent (twins and retries included, as they were sent).
    pub values_per_delivery: f64,
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
    /// With lag measured: the pending inbox rows, sampled once a second while sending, as
    /// the mean of the first and of the last quarter of the samples and the largest. A
    /// backlog that keeps growing shows as last well above first.
    pub backlog_first_quarter: Option<f64>,
    pub backlog_last_quarter: Option<f64>,
    pub backlog_max: Option<i64>,
    /// Time spent making the templates, before the clock started.
    pub loadgen_prepare_seconds: f64,
    /// The load generator's own CPU while sending, in cores (1.0 = one core busy).
    pub loadgen_cpu_cores: f64,
    /// The load generator's own peak resident memory.
    pub loadgen_peak_rss_mb: f64,
}

/// The outcome of a run: the figures, and every answer for [`verify`].
pub struct LoadRun {
    pub report: LoadReport,
    pub sent: Vec<Sent>,
}

/// This process's CPU time so far (user + system, all threads) and its peak RSS, from
/// `/proc/self`: what the load generator itself costs the machine it measures.
fn own_usage() -> (f64, f64) {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name's closing parenthesis; utime and stime are the 12th and
    // 13th there, in clock ticks of 1/100 s (USER_HZ on Linux).
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    let cpu_seconds = (ticks(11) + ticks(12)) / 100.0;
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let hwm_kb = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .unwrap_or(0.0);
    (cpu_seconds, hwm_kb / 1024.0)
}

/// A request about to go out: its bytes, their coding, and what they are.
#[derive(Clone)]
struct Outgoing {
    wire: bytes::Bytes,
    zstd: bool,
    body: SentBody,
}

/// Sends the mix and records every answer. Each worker draws fresh deliveries from the
/// templates; `retry_share` of requests repeat an earlier body byte for byte (Thryve's
/// retries), and `twin_share` of pushes are sent again, byte-identical, 80 ms later (as
/// real traffic shows). The report includes the load generator's own CPU and memory.
pub async fn run(config: &LoadConfig) -> LoadRun {
    let prepared_at = Instant::now();
    let mix = Arc::new(Mix::new(config.seed, config.users));
    let prepare_seconds = prepared_at.elapsed().as_secs_f64();
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(config.concurrency)
        .timeout(Duration::from_secs(10))
        .build()
        .expect("an HTTP client builds");
    let urls: Vec<reqwest::Url> = config
        .url
        .split(',')
        .map(|u| reqwest::Url::parse(u.trim()).expect("a valid URL"))
        .collect();
    let authorization = config.basic_auth.as_ref().map(|(user, password)| {
        use base64::Engine as _;
        let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        reqwest::header::HeaderValue::from_str(&format!("Basic {token}")).expect("a header value")
    });
    let (cpu_before, _) = own_usage();
    let started = Instant::now();
    let deadline = started + config.duration;
    let issued = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let (lag_tx, lag_rx) = tokio::sync::mpsc::unbounded_channel::<(i64, Instant)>();
    let lag_watcher = config
        .lag_pool
        .clone()
        .map(|pool| tokio::spawn(watch_lag(pool, lag_rx)));
    let backlog_watcher = config
        .lag_pool
        .clone()
        .map(|pool| tokio::spawn(watch_backlog(pool, deadline)));
    let workers: Vec<_> = (0..config.concurrency.max(1))
        .map(|worker| {
            let (client, config, issued) = (client.clone(), config.clone(), issued.clone());
            let (mix, lag_tx, authorization) = (mix.clone(), lag_tx.clone(), authorization.clone());
            let url = urls[worker % urls.len()].clone();
            tokio::spawn(async move {
                let mut rng = Rng::new(config.seed.wrapping_add(worker as u64 * 7919));
                let mut latencies = latency_histogram();
                let mut sent = Vec::new();
                let (mut errors, mut values) = (0u64, 0u64);
                let mut recent: Vec<Outgoing> = Vec::with_capacity(RECENT);
                let mut twins: std::collections::VecDeque<(Instant, Outgoing)> =
                    std::collections::VecDeque::new();
                let mut ticker = config.rate.map(|rate| {
                    let period =
                        Duration::from_secs_f64(config.concurrency as f64 / rate.max(0.001));
                    let mut t = tokio::time::interval(period);
                    t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                    t
                });
                while Instant::now() < deadline
                    && issued.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < config.requests
                {
                    if let Some(t) = ticker.as_mut() {
                        t.tick().await;
                    }
                    let now = Instant::now();
                    let out = if twins.front().is_some_and(|(due, _)| *due <= now) {
                        twins.pop_front().expect("a twin is due").1
                    } else if !recent.is_empty() && rng.chance(config.retry_share) {
                        recent[rng.below(recent.len() as u64) as usize].clone()
                    } else {
                        let body = if config.notifications_only {
                            mix.draw_notification(&mut rng)
                        } else {
                            mix.draw(&mut rng)
                        };
                        let (wire, zstd) = mix.wire(&body);
                        let out = Outgoing {
                            wire: wire.into(),
                            zstd,
                            body,
                        };
                        if out.body.template.kind.is_push() && rng.chance(config.twin_share) {
                            twins.push_back((now + TWIN_DELAY, out.clone()));
                        }
                        if recent.len() < RECENT {
                            recent.push(out.clone());
                        } else {
                            recent[rng.below(RECENT as u64) as usize] = out.clone();
                        }
                        out
                    };
                    values += out.body.template.values as u64;
                    let mut request = client
                        .post(url.clone())
                        .header("content-type", "application/json");
                    if let Some(value) = &authorization {
                        request = request.header(reqwest::header::AUTHORIZATION, value.clone());
                    }
                    if out.zstd {
                        request = request.header("content-encoding", "zstd");
                    }
                    let t0 = Instant::now();
                    match request.body(out.wire).send().await {
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
                                body: out.body,
                                answered_at,
                            });
                        }
                        Err(_) => errors += 1,
                    }
                }
                (latencies, sent, errors, values)
            })
        })
        .collect();
    let mut latencies = latency_histogram();
    let mut sent = Vec::new();
    let (mut transport_errors, mut values) = (0, 0);
    for worker in workers {
        let (h, s, e, v) = worker.await.expect("a load worker does not panic");
        latencies.add(h).expect("histograms of one precision add");
        sent.extend(s);
        transport_errors += e;
        values += v;
    }
    let seconds = started.elapsed().as_secs_f64();
    let (cpu_after, rss_mb) = own_usage();
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
    let backlog = match backlog_watcher {
        Some(watcher) => watcher.await.expect("the backlog watcher does not panic"),
        None => Vec::new(),
    };
    let quarter = |last: bool| {
        let n = (backlog.len() / 4).max(1);
        let part = if last {
            &backlog[backlog.len().saturating_sub(n)..]
        } else {
            &backlog[..n.min(backlog.len())]
        };
        (!part.is_empty()).then(|| part.iter().sum::<i64>() as f64 / part.len() as f64)
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
        values_per_s: values as f64 / seconds,
        values_per_delivery: values as f64 / (sent.len() as f64).max(1.0),
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
        backlog_first_quarter: quarter(false),
        backlog_last_quarter: quarter(true),
        backlog_max: backlog.iter().copied().max(),
        loadgen_prepare_seconds: prepare_seconds,
        loadgen_cpu_cores: (cpu_after - cpu_before) / seconds,
        loadgen_peak_rss_mb: rss_mb,
    };
    LoadRun { report, sent }
}

/// Earlier bodies a worker keeps for exact retries.
const RECENT: usize = 256;
/// How long after a push its byte-identical twin arrives in real traffic.
const TWIN_DELAY: Duration = Duration::from_millis(80);

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

/// The pending inbox rows once a second until `deadline`.
async fn watch_backlog(pool: PgPool, deadline: Instant) -> Vec<i64> {
    let mut samples = Vec::new();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        if Instant::now() >= deadline {
            return samples;
        }
        if let Ok(n) = sqlx::query_scalar::<_, i64>(
            "SELECT count(*) FROM thryve.inbox WHERE status = 'pending'",
        )
        .fetch_one(&pool)
        .await
        {
            samples.push(n);
        }
    }
}

/// Microseconds from 1 µs to 60 s at 3 significant digits; `saturating_record` clamps to it.
fn latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid histogram bounds")
}
