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

use thryve_bridge::thryve::{self, Parsed, Span};

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
const MINUTE_MS: i64 = 60_000;
/// 2025-11-24T00:00:00Z: the mix's "today", fixed so runs are comparable.
const TODAY_MS: i64 = 1_763_942_400_000;
/// Stands for the end user in a template's JSON until a request fills it in.
const USER_MARK: &str = "@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@";
/// Distinct bodies prepared per kind; with `users` end users each, the mix draws from
/// (templates x users) distinct contents, so accidental repeats stay rare.
const TEMPLATES: [(Kind, usize); 6] = [
    (Kind::EpochPush, 1024),
    (Kind::DailyPush, 512),
    (Kind::EpochNotification, 256),
    (Kind::DailyNotification, 256),
    (Kind::Connection, 64),
    (Kind::Legacy, 128),
];

/// What a delivery of the mix is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    EpochPush,
    DailyPush,
    EpochNotification,
    DailyNotification,
    Connection,
    Legacy,
}

impl Kind {
    /// The mix of real traffic (thryve-facts.md): about 90% data pushes, the rest
    /// notifications of both kinds, connection changes and legacy triggers.
    fn draw(rng: &mut Rng) -> Self {
        match rng.below(100) {
            0..=54 => Kind::EpochPush,
            55..=89 => Kind::DailyPush,
            90..=93 => Kind::EpochNotification,
            94..=95 => Kind::DailyNotification,
            96 => Kind::Connection,
            _ => Kind::Legacy,
        }
    }

    fn is_push(self) -> bool {
        matches!(self, Kind::EpochPush | Kind::DailyPush)
    }
}

/// A standard normal draw (sum of twelve uniforms, minus six): enough for a mix.
fn normal(rng: &mut Rng) -> f64 {
    (0..12)
        .map(|_| (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64)
        .sum::<f64>()
        - 6.0
}

/// Values in an epoch push: 3% full pages of 1,000, the rest log-normal around the observed
/// median of 32.
fn epoch_value_count(rng: &mut Rng) -> usize {
    if rng.chance(0.03) {
        return 1000;
    }
    (32.0 * (0.9 * normal(rng)).exp()).round().clamp(1.0, 999.0) as usize
}

/// Values in a daily push: median about 10, at most 34.
fn daily_value_count(rng: &mut Rng) -> usize {
    (10.0 * (0.6 * normal(rng)).exp()).round().clamp(1.0, 34.0) as usize
}

/// One body of the mix with the end user left open: `head`, the user's id, `tail`. Pushes
/// also carry their wire form, made once: see [`Template::wire`].
#[derive(Debug)]
pub struct Template {
    pub kind: Kind,
    /// Values the body carries (pushes only).
    pub values: usize,
    head: Vec<u8>,
    tail: Vec<u8>,
    zstd: Option<ZstdWire>,
}

/// A push's wire form split where the user goes. The frame is one zstd frame whose first
/// block is a raw (stored) block holding `head` + user and whose other blocks are `tail`
/// compressed once; the raw part is a multiple of 3 bytes long, so the base64 text of the
/// whole frame is the base64 of the raw part followed by `tail_base64`, made once.
#[derive(Debug)]
struct ZstdWire {
    raw_prefix: Vec<u8>,
    tail_base64: Vec<u8>,
}

/// The 32 hex digits of end user `n` (the same ids as before the templates).
pub fn user_id(n: u32) -> String {
    format!("{:032x}", u128::from(n) * 0x9e37_79b9_7f4a_7c15)
}

impl Template {
    fn new(kind: Kind, values: usize, json: &str) -> Self {
        let at = json.find(USER_MARK).expect("a template names its user");
        let (head, tail) = (&json[..at], &json[at + USER_MARK.len()..]);
        let mut template = Template {
            kind,
            values,
            head: head.as_bytes().to_vec(),
            tail: tail.as_bytes().to_vec(),
            zstd: None,
        };
        if kind.is_push() {
            template.zstd = Some(ZstdWire::new(head.as_bytes(), tail.as_bytes()));
        }
        template
    }

    /// The JSON text for `user` (32 hex digits).
    pub fn json(&self, user: &str) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.head.len() + user.len() + self.tail.len());
        out.extend_from_slice(&self.head);
        out.extend_from_slice(user.as_bytes());
        out.extend_from_slice(&self.tail);
        out
    }

    /// The bytes sent for `user`, and whether they go under `content-encoding: zstd`: a push
    /// as base64 text of a zstd frame, anything else as plain JSON. One allocation and two
    /// copies; nothing is compressed per request.
    pub fn wire(&self, user: &str) -> (Vec<u8>, bool) {
        use base64::Engine as _;
        let Some(z) = &self.zstd else {
            return (self.json(user), false);
        };
        let mut raw = [0u8; 96];
        let n = z.raw_prefix.len();
        raw[..n].copy_from_slice(&z.raw_prefix);
        raw[n..n + user.len()].copy_from_slice(user.as_bytes());
        let raw = &raw[..n + user.len()];
        let mut out = vec![0u8; raw.len() / 3 * 4 + z.tail_base64.len()];
        let written = base64::engine::general_purpose::STANDARD
            .encode_slice(raw, &mut out)
            .expect("the output holds the raw part's base64");
        out[written..].copy_from_slice(&z.tail_base64);
        (out, true)
    }
}

impl ZstdWire {
    /// `head` + a user of `USER_MARK`'s length + `tail` as one frame (see [`ZstdWire`]).
    fn new(head: &[u8], tail: &[u8]) -> Self {
        let raw_len = head.len() + USER_MARK.len();
        let content = u32::try_from(raw_len + tail.len()).expect("a push is under 4 GiB");
        // Magic; a single-segment frame with a 4-byte content size, no checksum, no dictionary.
        let mut raw_prefix = vec![0x28, 0xb5, 0x2f, 0xfd, 0xa0];
        raw_prefix.extend_from_slice(&content.to_le_bytes());
        // A raw block (type 0), not the last: its size in bits 3 and up, 3 bytes little-endian.
        let block = u32::try_from(raw_len).expect("a head is small") << 3;
        raw_prefix.extend_from_slice(&block.to_le_bytes()[..3]);
        raw_prefix.extend_from_slice(head);
        assert_eq!(
            (raw_prefix.len() + USER_MARK.len()) % 3,
            0,
            "the raw part is padded"
        );
        let frame = zstd::encode_all(tail, 3).expect("zstd in memory");
        use base64::Engine as _;
        ZstdWire {
            raw_prefix,
            tail_base64: base64::engine::general_purpose::STANDARD
                .encode(frame_blocks(&frame))
                .into_bytes(),
        }
    }
}

/// The blocks of a zstd frame: what follows its header, less its checksum (RFC 8878 3.1.1).
/// The first block of a frame refers to nothing before it, so the blocks stay valid after
/// a raw block that leaves the repeat offsets as a frame starts them.
fn frame_blocks(frame: &[u8]) -> &[u8] {
    let descriptor = frame[4];
    let single_segment = descriptor & 0x20 != 0;
    let checksum = descriptor & 0x04 != 0;
    let dictionary = [0, 1, 2, 4][usize::from(descriptor & 3)];
    let content_size = match descriptor >> 6 {
        0 => usize::from(single_segment),
        1 => 2,
        2 => 4,
        _ => 8,
    };
    let start = 5 + usize::from(!single_segment) + dictionary + content_size;
    &frame[start..frame.len() - if checksum { 4 } else { 0 }]
}

/// A push's JSON with the user first, and spaces after `{` so that the frame's raw part
/// (12 bytes of frame and block header, this head, the user) is a multiple of 3 bytes.
fn push_json(kind: &str, data: &Value) -> String {
    let head = "{\"endUserId\":\"";
    let pad = (3 - (12 + head.len() + USER_MARK.len()) % 3) % 3;
    format!(
        "{{{spaces}\"endUserId\":\"{USER_MARK}\",\"timestampType\":\"unix\",\"type\":\"{kind}\",\"data\":{data}}}",
        spaces = " ".repeat(pad),
    )
}

/// One body of `kind` with its user left as `USER_MARK`, and the values it carries.
fn template_json(kind: Kind, rng: &mut Rng) -> (String, usize) {
    let source = SOURCES[rng.below(SOURCES.len() as u64) as usize];
    let unix = rng.chance(0.75);
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
    let start = start - start.rem_euclid(MINUTE_MS);
    let stamp = if unix { "unix" } else { "iso" };
    let alias = format!("alias-{}", rng.below(1 << 20));
    let name = "Source";
    match kind {
        Kind::EpochPush => {
            let n = epoch_value_count(rng);
            let mut values: Vec<Value> = Vec::with_capacity(n);
            if rng.chance(0.05) {
                // Instants sparse over four weeks (a scale's weight readings).
                for i in 0..n as i64 {
                    values.push(json!({"startTimestamp": start - i * 28 * DAY_MS / n as i64,
                        "timezoneOffset": 60, "dataTypeId": 5020,
                        "value": format!("{:.1}", 60.0 + rng.below(400) as f64 / 10.0)}));
                }
            } else {
                if rng.chance(0.3) {
                    // Sleep phases with an end, which Thryve updates when the end moves.
                    for (i, t) in (2000..2004).enumerate().take(n) {
                        let at = start - 8 * 60 * MINUTE_MS + i as i64 * 37 * MINUTE_MS;
                        values.push(
                            json!({"startTimestamp": at, "endTimestamp": at + 20 * MINUTE_MS,
                            "timezoneOffset": 60, "dataTypeId": t, "value": (20 + i).to_string()}),
                        );
                    }
                }
                let mut i = 0i64;
                while values.len() < n {
                    let at = start + i * MINUTE_MS;
                    values.push(if i % 3 == 2 {
                        // Heart rate: an instant, no endTimestamp.
                        json!({"startTimestamp": at, "timezoneOffset": 60, "dataTypeId": 3000,
                               "value": (55 + rng.below(85)).to_string()})
                    } else {
                        json!({"startTimestamp": at, "endTimestamp": at + MINUTE_MS, "timezoneOffset": 60,
                               "dataTypeId": 1000, "value": rng.below(130).to_string()})
                    });
                    i += 1;
                }
            }
            let op = if rng.chance(0.5) { "create" } else { "update" };
            let data =
                json!([{"dataSourceId": source, "dataSourceName": name, "epochData": values}]);
            (push_json(&format!("event.data.epoch.{op}"), &data), n)
        }
        Kind::DailyPush => {
            let n = daily_value_count(rng);
            let first = start - start.rem_euclid(DAY_MS);
            let offset = rng.below(5) as usize;
            let values: Vec<Value> = (0..n)
                .map(|i| json!({"day": first - (i / DAILY_TYPES.len()) as i64 * DAY_MS, "timezoneOffset": 0,
                                "dataTypeId": DAILY_TYPES[(i + offset) % DAILY_TYPES.len()],
                                "value": rng.below(20_000).to_string()}))
                .collect();
            let op = if rng.chance(0.5) { "create" } else { "update" };
            let data =
                json!([{"dataSourceId": source, "dataSourceName": name, "dailyData": values}]);
            (push_json(&format!("event.data.daily.{op}"), &data), n)
        }
        Kind::EpochNotification => {
            let end = start + rng.below(3 * 3_600_000) as i64;
            let body = json!({"endUserId": USER_MARK, "timestampType": stamp,
                "type": "notification.data.epoch.createupdate",
                "data": {"startTimestamp": instant(start), "endTimestamp": instant(end), "dataSourceId": source,
                         "dataTypeIds": pick_types(rng, &EPOCH_TYPES)}});
            (body.to_string(), 0)
        }
        Kind::DailyNotification => {
            let end = start + rng.below(3) as i64 * DAY_MS;
            let body = json!({"endUserId": USER_MARK, "endUserAlias": alias, "timestampType": stamp,
                "type": "notification.data.daily.createupdate",
                "data": {"startDay": day(start), "endDay": day(end), "dataSourceId": source,
                         "dataTypeIds": pick_types(rng, &DAILY_TYPES)}});
            (body.to_string(), 0)
        }
        Kind::Connection => {
            let kind = if rng.chance(0.8) {
                "notification.source.connect"
            } else {
                "notification.source.disconnect"
            };
            let body = json!({"endUserId": USER_MARK, "timestampType": stamp, "type": kind,
                "data": {"timestamp": instant(start), "dataSourceId": source}});
            (body.to_string(), 0)
        }
        Kind::Legacy => {
            let end = start + rng.below(6 * 3_600_000) as i64;
            let iso = |ms: i64| {
                DateTime::<Utc>::from_timestamp_millis(ms)
                    .unwrap_or_default()
                    .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            };
            // Half in the v5 shape, half in the older trigger shape (no types, a string id).
            let body = if rng.chance(0.5) {
                json!({"sourceUpdate": {"authenticationToken": USER_MARK, "partnerUserID": alias,
                    "dataSource": source, "createdAt": iso(end),
                    "/v5/dynamicEpochValues": {"startTimestamp": iso(start), "endTimestamp": iso(end),
                        "dynamicValueTypes": pick_types(rng, &EPOCH_TYPES), "startTimestampUnix": start, "endTimestampUnix": end}}})
            } else {
                let update_type = ["MINUTE", "DAILY", "BOTH"][rng.below(3) as usize];
                json!({"sourceUpdate": {"authenticationToken": USER_MARK, "partnerUserID": alias,
                    "dataSource": source.to_string(), "startTimestamp": iso(start), "endTimestamp": iso(end),
                    "updateType": update_type}})
            };
            (body.to_string(), 0)
        }
    }
}

fn pick_types(rng: &mut Rng, pool: &[i64]) -> Vec<i64> {
    (0..1 + rng.below(3))
        .map(|_| pool[rng.below(pool.len() as u64) as usize])
        .collect()
}

/// One delivery of the mix for one of `users` end users: body, and whether it goes out as
/// Thryve sends a data push (base64 text of a zstd frame under `content-encoding: zstd`).
pub fn delivery(rng: &mut Rng, users: u32) -> (Value, bool) {
    let kind = Kind::draw(rng);
    let (json, _) = template_json(kind, rng);
    let user = user_id(rng.below(u64::from(users)) as u32);
    let body = serde_json::from_str(&json.replacen(USER_MARK, &user, 1)).expect("valid JSON");
    (body, kind.is_push())
}

/// The templates of a run, made before the clock starts and shared by every worker.
pub struct Mix {
    templates: Vec<Vec<Arc<Template>>>,
    users: Vec<String>,
}

impl Mix {
    /// `TEMPLATES` bodies per kind from `seed`, for `users` end users.
    pub fn new(seed: u64, users: u32) -> Self {
        let mut rng = Rng::new(seed);
        let templates = TEMPLATES
            .iter()
            .map(|&(kind, count)| {
                (0..count)
                    .map(|_| {
                        let (json, values) = template_json(kind, &mut rng);
                        Arc::new(Template::new(kind, values, &json))
                    })
                    .collect()
            })
            .collect();
        let users = (0..users.max(1)).map(user_id).collect();
        Mix { templates, users }
    }

    /// A fresh delivery: a kind drawn by the mix's shares, one of its templates, a user.
    pub fn draw(&self, rng: &mut Rng) -> SentBody {
        let kind = Kind::draw(rng);
        let list = &self.templates[TEMPLATES
            .iter()
            .position(|(k, _)| *k == kind)
            .expect("every kind has templates")];
        SentBody {
            template: list[rng.below(list.len() as u64) as usize].clone(),
            user: rng.below(self.users.len() as u64) as u32,
        }
    }

    /// What goes on the wire for `body`.
    pub fn wire(&self, body: &SentBody) -> (Vec<u8>, bool) {
        body.template.wire(&self.users[body.user as usize])
    }
}

/// Which delivery a request sent: a template and an end user, cheap to keep per request.
#[derive(Debug, Clone)]
pub struct SentBody {
    pub template: Arc<Template>,
    pub user: u32,
}

impl SentBody {
    /// The delivery's JSON body.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.template.json(&user_id(self.user))).expect("valid JSON")
    }
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
                        let body = mix.draw(&mut rng);
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
        let Some(id) = s.inbox_id else {
            continue;
        };
        let Value::Object(body) = s.body.json() else {
            continue;
        };
        let Parsed::Valid(n) = thryve::parse(&body) else {
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

#[cfg(test)]
mod tests {
    use super::*;
    use thryve_bridge::http::decode::{decode, WireForm};

    #[test]
    fn every_template_goes_out_in_the_wire_form_and_decodes_to_its_json() {
        let mix = Mix::new(1, 10);
        for list in &mix.templates {
            for template in list.iter().step_by(7) {
                let user = user_id(3);
                let (wire, zstd) = template.wire(&user);
                assert_eq!(zstd, template.kind.is_push());
                let decoded = decode(zstd.then_some("zstd"), &wire, 4 << 20).unwrap();
                if zstd {
                    assert_eq!(decoded.form, WireForm::Base64);
                }
                assert_eq!(decoded.content, template.json(&user));
                let body: Value = serde_json::from_slice(&decoded.content).unwrap();
                let Value::Object(body) = body else {
                    panic!("not an object")
                };
                assert!(
                    matches!(thryve::parse(&body), Parsed::Valid(_)),
                    "{:?}",
                    template.kind
                );
            }
        }
    }

    #[test]
    fn the_mix_is_mostly_pushes_with_the_observed_value_counts() {
        let mut rng = Rng::new(9);
        let kinds: Vec<Kind> = (0..10_000).map(|_| Kind::draw(&mut rng)).collect();
        let pushes = kinds.iter().filter(|k| k.is_push()).count();
        assert!((8_800..=9_200).contains(&pushes), "{pushes}");
        let mut epoch: Vec<usize> = (0..10_000).map(|_| epoch_value_count(&mut rng)).collect();
        epoch.sort_unstable();
        assert!((28..=36).contains(&epoch[5_000]), "{}", epoch[5_000]);
        assert_eq!(epoch[9_999], 1000);
        let mut daily: Vec<usize> = (0..10_000).map(|_| daily_value_count(&mut rng)).collect();
        daily.sort_unstable();
        assert!((9..=11).contains(&daily[5_000]) && daily[9_999] <= 34);
    }
}
