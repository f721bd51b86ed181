//! Prometheus metrics: what the process counts as it works, rendered by `GET /metrics`.

use std::sync::atomic::AtomicU64;

use prometheus_client::{
    encoding::{text::encode, EncodeLabelSet},
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::Registry,
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

/// Every metric this process exports.
pub struct Metrics {
    registry: Registry,
    pub deliveries: Family<DeliveryLabels, Counter>,
    pub hmac_checks: Family<HmacLabels, Counter>,
    pub body_forms: Family<FormLabels, Counter>,
    pub ack_latency: Histogram,
    pub last_delivery: Gauge<f64, AtomicU64>,
    pub poller_batch_rows: Histogram,
    pub poller_batch_seconds: Histogram,
    pub poller_errors: Counter,
    pub pool_connections_in_use: Gauge,
    pub pool_connections_open: Gauge,
    pub http_connections_open: Gauge,
    pub inbox_rows: Family<StatusLabels, Gauge>,
    pub dirty_ranges: Family<StatusLabels, Gauge>,
    pub inbox_oldest_pending_seconds: Gauge<f64, AtomicU64>,
    pub ranges_oldest_pending_seconds: Gauge<f64, AtomicU64>,
    pub seconds_since_last_delivery: Gauge<f64, AtomicU64>,
    pub spool_records: Gauge,
    pub spool_rejected: Counter,
    pub spool_set_aside: Gauge,
    pub spool_load_errors: Counter,
    pub bodies_refused: Counter,
    pub fetcher_calls: Family<FetchCallLabels, Counter>,
    pub fetcher_call_seconds: Family<EndpointLabels, Histogram>,
    pub fetcher_values_written: Counter,
    pub fetcher_ranges: Family<FetchOutcomeLabels, Counter>,
    pub fetcher_paused: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("thryve_bridge");
        let deliveries = Family::<DeliveryLabels, Counter>::default();
        registry.register(
            "deliveries",
            "Webhook deliveries by outcome and event type",
            deliveries.clone(),
        );
        let hmac_checks = Family::<HmacLabels, Counter>::default();
        registry.register(
            "hmac_checks",
            "Signature checks by result, matching layout and mode",
            hmac_checks.clone(),
        );
        let body_forms = Family::<FormLabels, Counter>::default();
        registry.register(
            "body_forms",
            "Decoded webhook bodies by the form they came in",
            body_forms.clone(),
        );
        // From well under a millisecond to Thryve's 2 s limit.
        let ack_latency = Histogram::new([
            0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 1.5, 2.0,
        ]);
        registry.register(
            "ack_latency_seconds",
            "Time from request start to the answer",
            ack_latency.clone(),
        );
        let last_delivery = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "last_delivery_timestamp_seconds",
            "Unix time of the last delivery this process answered 200",
            last_delivery.clone(),
        );
        let poller_batch_rows =
            Histogram::new([1.0, 10.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 5000.0]);
        registry.register(
            "poller_batch_rows",
            "Inbox rows per poller batch",
            poller_batch_rows.clone(),
        );
        let poller_batch_seconds = Histogram::new([
            0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
        ]);
        registry.register(
            "poller_batch_duration_seconds",
            "Time per poller batch, claim to commit",
            poller_batch_seconds.clone(),
        );
        let poller_errors = Counter::default();
        registry.register(
            "poller_errors",
            "Poller batches that failed and were retried",
            poller_errors.clone(),
        );
        let pool_connections_in_use = Gauge::default();
        registry.register(
            "db_pool_connections_in_use",
            "Database connections checked out",
            pool_connections_in_use.clone(),
        );
        let pool_connections_open = Gauge::default();
        registry.register(
            "db_pool_connections_open",
            "Database connections open",
            pool_connections_open.clone(),
        );
        let http_connections_open = Gauge::default();
        registry.register(
            "http_connections_open",
            "Client connections being served (at most MAX_CONNECTIONS)",
            http_connections_open.clone(),
        );
        let inbox_rows = Family::<StatusLabels, Gauge>::default();
        registry.register(
            "inbox_rows",
            "Inbox rows by status (at scrape time)",
            inbox_rows.clone(),
        );
        let dirty_ranges = Family::<StatusLabels, Gauge>::default();
        registry.register(
            "dirty_ranges",
            "Dirty ranges by status (at scrape time)",
            dirty_ranges.clone(),
        );
        let inbox_oldest_pending_seconds = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "inbox_oldest_pending_age_seconds",
            "Age of the oldest pending inbox row (0 when none)",
            inbox_oldest_pending_seconds.clone(),
        );
        let ranges_oldest_pending_seconds = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "dirty_ranges_oldest_pending_age_seconds",
            "Age of the oldest pending dirty range (0 when none)",
            ranges_oldest_pending_seconds.clone(),
        );
        let seconds_since_last_delivery = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "seconds_since_last_delivery",
            "Seconds since any receiver last stored a delivery (from the inbox; -1 when empty)",
            seconds_since_last_delivery.clone(),
        );
        let spool_records = Gauge::default();
        registry.register(
            "spool_records",
            "Deliveries in this process's spool (SPOOL_DIR) waiting to be loaded into the inbox",
            spool_records.clone(),
        );
        let spool_rejected = Counter::default();
        registry.register(
            "spool_rejected_records",
            "Spooled records the inbox refused or that could not be read, kept in rejected-*.jsonl",
            spool_rejected.clone(),
        );
        let spool_set_aside = Gauge::default();
        registry.register(
            "spool_set_aside_records",
            "Spooled records in SPOOL_DIR/rejected-*.jsonl now; not loaded until `thryve-bridge spool reload`",
            spool_set_aside.clone(),
        );
        let spool_load_errors = Counter::default();
        registry.register(
            "spool_load_errors",
            "Attempts to load the spool into the inbox that failed because the database is out; the records stay",
            spool_load_errors.clone(),
        );
        let bodies_refused = Counter::default();
        registry.register(
            "bodies_over_budget",
            "Requests answered 503 at once because the bodies already held filled BODY_BUDGET_BYTES",
            bodies_refused.clone(),
        );
        let fetcher_calls = Family::<FetchCallLabels, Counter>::default();
        registry.register(
            "fetcher_calls",
            "Calls to Thryve's data API by endpoint and answer (HTTP status, timeout, connect_error, too_large)",
            fetcher_calls.clone(),
        );
        let fetcher_call_seconds =
            Family::<EndpointLabels, Histogram>::new_with_constructor(|| {
                Histogram::new([0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0])
            });
        registry.register(
            "fetcher_call_duration_seconds",
            "Time per call to Thryve's data API, request to last byte",
            fetcher_call_seconds.clone(),
        );
        let fetcher_values_written = Counter::default();
        registry.register(
            "fetcher_values_written",
            "Value rows the fetcher inserted or changed",
            fetcher_values_written.clone(),
        );
        let fetcher_ranges = Family::<FetchOutcomeLabels, Counter>::default();
        registry.register(
            "fetcher_ranges",
            "Ranges the fetcher handled, by outcome (done, retry, failed, lost)",
            fetcher_ranges.clone(),
        );
        let fetcher_paused = Gauge::default();
        registry.register(
            "fetcher_paused",
            "1 while fetching is paused because Thryve answered 401 (credentials wrong)",
            fetcher_paused.clone(),
        );
        Self {
            registry,
            deliveries,
            hmac_checks,
            body_forms,
            ack_latency,
            last_delivery,
            poller_batch_rows,
            poller_batch_seconds,
            poller_errors,
            pool_connections_in_use,
            pool_connections_open,
            http_connections_open,
            inbox_rows,
            dirty_ranges,
            inbox_oldest_pending_seconds,
            ranges_oldest_pending_seconds,
            seconds_since_last_delivery,
            spool_records,
            spool_rejected,
            spool_set_aside,
            spool_load_errors,
            bodies_refused,
            fetcher_calls,
            fetcher_call_seconds,
            fetcher_values_written,
            fetcher_ranges,
            fetcher_paused,
        }
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = String::new();
        encode(&mut out, &self.registry).expect("writing to a String cannot fail");
        out
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
