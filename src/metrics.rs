//! Prometheus metrics: what the process counts as it works, rendered by `GET /metrics`.

use std::sync::atomic::AtomicU64;

use prometheus_client::{
    encoding::{text::encode, EncodeLabelSet},
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::{Metric, Registry},
};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DeliveryLabels {
    /// stored, duplicate, quarantined, ignored, spooled, or the refusal (unauthorized, bad_request,
    /// too_large, unsupported_encoding, timeout, unavailable).
    pub outcome: &'static str,
    /// The webhook type for answered deliveries (`other` for unknown types); empty for refusals.
    pub event_type: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HmacLabels {
    /// matched, mismatched, missing, malformed, outside_window.
    pub result: &'static str,
    /// The layout that matched; empty when none did.
    pub layout: &'static str,
    /// enforce or report: whether a failed check refused the delivery.
    pub mode: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FormLabels {
    /// plain (no content coding), frame (compressed bytes), base64 (base64 text of the frame).
    pub form: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FetchCallLabels {
    /// dynamicEpochValues or dailyDynamicValues.
    pub endpoint: &'static str,
    /// The HTTP status (`200`, `429`, ...), or timeout, connect_error, too_large.
    pub status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EndpointLabels {
    pub endpoint: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FetchOutcomeLabels {
    /// done (values committed with the completion), retry (attempt failed, range back to
    /// pending later), failed (403/400: no retry), lost (claim lost before the commit).
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StatusLabels {
    pub status: String,
}

/// Every metric this process exports, in one group per component; each group registers its
/// own, so a component's metrics are declared beside each other.
pub struct Metrics {
    registry: Registry,
    pub receiver: ReceiverMetrics,
    pub poller: PollerMetrics,
    pub database: DatabaseMetrics,
    pub spool: SpoolMetrics,
    pub fetcher: FetcherMetrics,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("thryve_bridge");
        let receiver = ReceiverMetrics::register(&mut registry);
        let poller = PollerMetrics::register(&mut registry);
        let database = DatabaseMetrics::register(&mut registry);
        let spool = SpoolMetrics::register(&mut registry);
        let fetcher = FetcherMetrics::register(&mut registry);
        Self {
            registry,
            receiver,
            poller,
            database,
            spool,
            fetcher,
        }
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = String::new();
        encode(&mut out, &self.registry).expect("writing to a String cannot fail");
        out
    }
}

/// Registers `metric` under `name` and returns the handle the code updates.
fn register<M: Metric + Clone>(registry: &mut Registry, name: &str, help: &str, metric: M) -> M {
    registry.register(name, help, metric.clone());
    metric
}

/// The webhook route and the connections it is served on.
#[derive(Clone)]
pub struct ReceiverMetrics {
    pub deliveries: Family<DeliveryLabels, Counter>,
    pub hmac_checks: Family<HmacLabels, Counter>,
    pub body_forms: Family<FormLabels, Counter>,
    pub ack_latency: Histogram,
    pub last_delivery: Gauge<f64, AtomicU64>,
    pub bodies_refused: Counter,
    pub http_connections_open: Gauge,
    pub http_connections_shed: Counter,
}

impl ReceiverMetrics {
    fn register(registry: &mut Registry) -> Self {
        Self {
            deliveries: register(
                registry,
                "deliveries",
                "Webhook deliveries by outcome and event type",
                Family::default(),
            ),
            hmac_checks: register(
                registry,
                "hmac_checks",
                "Signature checks by result, matching layout and mode",
                Family::default(),
            ),
            body_forms: register(
                registry,
                "body_forms",
                "Decoded webhook bodies by the form they came in",
                Family::default(),
            ),
            // From well under a millisecond to Thryve's 2 s limit.
            ack_latency: register(
                registry,
                "ack_latency_seconds",
                "Time from request start to the answer",
                Histogram::new([
                    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 1.5, 2.0,
                ]),
            ),
            last_delivery: register(
                registry,
                "last_delivery_timestamp_seconds",
                "Unix time of the last delivery this process answered 200",
                Gauge::default(),
            ),
            bodies_refused: register(
                registry,
                "bodies_over_budget",
                "Requests answered 503 at once because the bodies already held filled BODY_BUDGET_BYTES",
                Counter::default(),
            ),
            http_connections_open: register(
                registry,
                "http_connections_open",
                "Client connections being served (at most MAX_CONNECTIONS)",
                Gauge::default(),
            ),
            http_connections_shed: register(
                registry,
                "http_connections_shed",
                "Client connections closed before a complete request head to make room: at MAX_CONNECTIONS, or past HEADER_READ_TIMEOUT_CROWDED_MS",
                Counter::default(),
            ),
        }
    }
}

/// The poller's batches.
#[derive(Clone)]
pub struct PollerMetrics {
    pub batch_rows: Histogram,
    pub batch_seconds: Histogram,
    pub errors: Counter,
}

impl PollerMetrics {
    fn register(registry: &mut Registry) -> Self {
        Self {
            batch_rows: register(
                registry,
                "poller_batch_rows",
                "Inbox rows per poller batch",
                Histogram::new([1.0, 10.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 5000.0]),
            ),
            batch_seconds: register(
                registry,
                "poller_batch_duration_seconds",
                "Time per poller batch, claim to commit",
                Histogram::new([
                    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                ]),
            ),
            errors: register(
                registry,
                "poller_errors",
                "Poller batches that failed and were retried",
                Counter::default(),
            ),
        }
    }
}

/// The pool, and the tables' figures refreshed at each scrape of `/metrics`.
#[derive(Clone)]
pub struct DatabaseMetrics {
    pub pool_connections_in_use: Gauge,
    pub pool_connections_open: Gauge,
    pub inbox_rows: Family<StatusLabels, Gauge>,
    pub dirty_ranges: Family<StatusLabels, Gauge>,
    pub inbox_oldest_pending_seconds: Gauge<f64, AtomicU64>,
    pub ranges_oldest_pending_seconds: Gauge<f64, AtomicU64>,
    pub seconds_since_last_delivery: Gauge<f64, AtomicU64>,
}

impl DatabaseMetrics {
    fn register(registry: &mut Registry) -> Self {
        Self {
            pool_connections_in_use: register(
                registry,
                "db_pool_connections_in_use",
                "Database connections checked out",
                Gauge::default(),
            ),
            pool_connections_open: register(
                registry,
                "db_pool_connections_open",
                "Database connections open",
                Gauge::default(),
            ),
            inbox_rows: register(
                registry,
                "inbox_rows",
                "Inbox rows by status (at scrape time)",
                Family::default(),
            ),
            dirty_ranges: register(
                registry,
                "dirty_ranges",
                "Dirty ranges by status (at scrape time)",
                Family::default(),
            ),
            inbox_oldest_pending_seconds: register(
                registry,
                "inbox_oldest_pending_age_seconds",
                "Age of the oldest pending inbox row (0 when none)",
                Gauge::default(),
            ),
            ranges_oldest_pending_seconds: register(
                registry,
                "dirty_ranges_oldest_pending_age_seconds",
                "Age of the oldest pending dirty range (0 when none)",
                Gauge::default(),
            ),
            seconds_since_last_delivery: register(
                registry,
                "seconds_since_last_delivery",
                "Seconds since any receiver last stored a delivery (from the inbox; -1 when empty)",
                Gauge::default(),
            ),
        }
    }
}

/// What the outage spool holds and does; `Default` gives unregistered ones, for a command
/// that opens a spool outside `serve`.
#[derive(Clone, Default)]
pub struct SpoolMetrics {
    /// Records on disk waiting to be loaded.
    pub waiting: Gauge,
    /// Records ever set aside in `rejected-*.jsonl` by this process.
    pub rejected: Counter,
    /// Records in `rejected-*.jsonl` now: stays above 0 until an operator has dealt with them.
    pub set_aside: Gauge,
    /// Attempts to load that failed (the database out): the records stay and are retried.
    pub load_errors: Counter,
}

impl SpoolMetrics {
    fn register(registry: &mut Registry) -> Self {
        Self {
            waiting: register(
                registry,
                "spool_records",
                "Deliveries in this process's spool (SPOOL_DIR) waiting to be loaded into the inbox",
                Gauge::default(),
            ),
            rejected: register(
                registry,
                "spool_rejected_records",
                "Spooled records the inbox refused or that could not be read, kept in rejected-*.jsonl",
                Counter::default(),
            ),
            set_aside: register(
                registry,
                "spool_set_aside_records",
                "Spooled records in SPOOL_DIR/rejected-*.jsonl now; not loaded until `thryve-bridge spool reload`",
                Gauge::default(),
            ),
            load_errors: register(
                registry,
                "spool_load_errors",
                "Attempts to load the spool into the inbox that failed because the database is out; the records stay",
                Counter::default(),
            ),
        }
    }
}

/// The built-in fetcher's calls to Thryve and what became of its ranges.
#[derive(Clone)]
pub struct FetcherMetrics {
    pub calls: Family<FetchCallLabels, Counter>,
    pub call_seconds: Family<EndpointLabels, Histogram>,
    pub values_written: Counter,
    pub ranges: Family<FetchOutcomeLabels, Counter>,
    pub paused: Gauge,
}

impl FetcherMetrics {
    fn register(registry: &mut Registry) -> Self {
        Self {
            calls: register(
                registry,
                "fetcher_calls",
                "Calls to Thryve's data API by endpoint and answer (HTTP status, timeout, connect_error, too_large)",
                Family::default(),
            ),
            call_seconds: register(
                registry,
                "fetcher_call_duration_seconds",
                "Time per call to Thryve's data API, request to last byte",
                Family::new_with_constructor(|| {
                    Histogram::new([0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0])
                }),
            ),
            values_written: register(
                registry,
                "fetcher_values_written",
                "Value rows the fetcher inserted or changed",
                Counter::default(),
            ),
            ranges: register(
                registry,
                "fetcher_ranges",
                "Ranges the fetcher handled, by outcome (done, retry, failed, lost)",
                Family::default(),
            ),
            paused: register(
                registry,
                "fetcher_paused",
                "1 while fetching is paused because Thryve answered 401 (credentials wrong)",
                Gauge::default(),
            ),
        }
    }
}

/// Known webhook types map to themselves; anything else to `other`, so a sender cannot grow
/// the label set without bound.
pub fn event_type_label(event_type: Option<&str>) -> &'static str {
    const KNOWN: [&str; 11] = [
        "notification.source.connect",
        "notification.source.disconnect",
        "webhook.source.connect",
        "webhook.source.disconnect",
        "notification.data.epoch.createupdate",
        "notification.data.daily.createupdate",
        "event.data.epoch.create",
        "event.data.epoch.update",
        "event.data.daily.create",
        "event.data.daily.update",
        crate::thryve::LEGACY_EVENT_TYPE,
    ];
    match event_type {
        None => "none",
        Some(t) => KNOWN.into_iter().find(|k| *k == t).unwrap_or("other"),
    }
}
