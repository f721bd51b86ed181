//! The built-in fetcher against a fake Thryve data API: what it sends, how it reads the
//! answers, how it treats Thryve's refusals, and that values commit with the completion.

use std::{
    sync::atomic::{AtomicUsize, Ordering},
    sync::Arc,
    time::Duration,
};

use chrono::{DateTime, NaiveDate, TimeDelta, Utc};
use serde_json::{json, Value};
use thryve_bridge::{
    config::{parse_env, FetcherConfig},
    fetcher::{self, Fetcher, Outcome},
    metrics::Metrics,
    ranges::{self, Consumer, DirtyRange, Extent, MergedSpan},
};
use tokio_util::sync::CancellationToken;

use crate::{
    fake_thryve::{answer, FakeThryve, Reply, Seen},
    poller::{poller, store},
    support::{spawn_app_with, test_config, wait_until, TestDb},
};

pub fn at(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

fn day(s: &str) -> NaiveDate {
    s.parse().unwrap()
}

/// The default settings with the fetcher on, pointed at `fake` with the credentials it checks
/// (`Seen::assert_well_formed`), under a worker name `stats` can be asked about.
pub fn config(fake: &FakeThryve) -> FetcherConfig {
    parse_env([
        ("FETCHER_ENABLED", "true".to_owned()),
        ("THRYVE_API_URL", fake.url()),
        ("THRYVE_API_USER", "partner".to_owned()),
        ("THRYVE_API_PASSWORD", "partner-pw".to_owned()),
        ("THRYVE_APP_ID", "app-id".to_owned()),
        ("THRYVE_APP_SECRET", "app-secret".to_owned()),
        ("FETCHER_WORKER", "test-fetcher".to_owned()),
    ])
    .unwrap()
}

/// Tries 10 ms apart (at most 100 ms) instead of the default 1 s doubling with jitter, for a
/// test that sits through every try: the defaults would make it wait up to 15 s, and could
/// not be told from a `Retry-After`.
fn quick_retries(config: &mut FetcherConfig) {
    config.api.fetcher_backoff_ms = 10;
    config.api.fetcher_backoff_max_ms = 100;
}

fn fetcher(db: &TestDb, config: &FetcherConfig) -> Fetcher {
    config.validate().unwrap();
    Fetcher::new(db.pool.clone(), config, Arc::new(Metrics::new())).unwrap()
}

pub async fn add(db: &TestDb, user: &str, source: i32, types: &[i32], extent: Extent) {
    let span = MergedSpan {
        end_user_id: user.to_owned(),
        data_source_id: source,
        data_type_ids: types.to_vec(),
        extent,
        notification_count: 1,
        needs_fetch: true,
    };
    ranges::merge_spans(&db.pool, &[span]).await.unwrap();
}

/// Claims and fetches one range with a fetcher of `config`.
pub async fn fetch_one(db: &TestDb, config: &FetcherConfig) -> Outcome {
    let consumer = Consumer::new(db.pool.clone(), "test-worker");
    fetcher(db, config)
        .fetch_one(&consumer, &CancellationToken::new())
        .await
        .unwrap()
        .expect("a range was claimable")
}

async fn all_ranges(db: &TestDb) -> Vec<DirtyRange> {
    ranges::list(&db.pool, None, 100).await.unwrap()
}

type EpochRow = (
    String,
    i32,
    i32,
    DateTime<Utc>,
    Option<DateTime<Utc>>,
    Option<i32>,
    String,
);

async fn epoch_rows(db: &TestDb) -> Vec<EpochRow> {
    sqlx::query_as(
        "SELECT end_user_id, data_source_id, data_type_id, start_time, end_time, timezone_offset, value
         FROM thryve.epoch_values ORDER BY data_source_id, data_type_id, start_time",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap()
}

async fn count(db: &TestDb, table: &str) -> i64 {
    sqlx::query_scalar(&format!("SELECT count(*) FROM thryve.{table}"))
        .fetch_one(&db.pool)
        .await
        .unwrap()
}

fn ms(s: &str) -> String {
    at(s).timestamp_millis().to_string()
}

#[tokio::test]
async fn an_epoch_range_is_one_documented_call_and_its_values_commit_with_done() {
    let db = TestDb::new().await;
    add(
        &db,
        "u1",
        8,
        &[1000, 3000],
        Extent::Epoch(at("2025-12-01T00:00:00Z"), at("2025-12-02T00:00:00Z")),
    )
    .await;
    // Two user entries ("pages") and two sources; both timestamp spellings, "null" ends.
    let fake = FakeThryve::start(|_, _| {
        Reply::ok(answer(
            "u1",
            &[
                &[(
                    8,
                    vec![
                        json!({"startTimestamp": "2025-12-01T08:00:00Z", "endTimestamp": "2025-12-01T08:01:00Z",
                               "createdAt": "2025-12-01T09:00:00Z", "dynamicValueType": 3000,
                               "dynamicValueTypeName": "HeartRate", "value": "61", "valueType": "LONG",
                               "details": {"timezoneOffset": 60, "generation": "automated"}}),
                        json!({"startTimestamp": "2025-12-01T10:00:00Z", "endTimestamp": "null",
                               "createdAt": "2025-12-01T10:00:00Z", "dynamicValueType": 1000,
                               "value": "12", "valueType": "LONG", "details": {"timezoneOffset": 60}}),
                    ],
                )],
                &[
                    (
                        8,
                        vec![json!({"startTimestampUnix": 1764579600000_i64, "endTimestampUnix": 1764579660000_i64,
                                     "createdAtUnix": 1764579700000_i64, "dynamicValueType": 3000,
                                     "value": "64", "valueType": "LONG", "details": {"timezoneOffset": 60}})],
                    ),
                    (
                        1,
                        vec![json!({"startTimestampUnix": 1764583200000_i64, "endTimestampUnix": null,
                                     "dynamicValueType": 1000, "value": "7.5", "valueType": "DOUBLE"})],
                    ),
                ],
            ],
        ))
    })
    .await;

    let outcome = fetch_one(&db, &config(&fake)).await;
    assert_eq!(outcome, Outcome::Done { values_written: 4 });

    let seen = fake.seen();
    assert_eq!(seen.len(), 1);
    let call = &seen[0];
    call.assert_well_formed();
    assert_eq!(call.path, "/v5/dynamicEpochValues");
    assert_eq!(call.field("authenticationToken"), Some("u1"));
    assert_eq!(
        call.field("startTimestampUnix"),
        Some(ms("2025-12-01T00:00:00Z").as_str())
    );
    assert_eq!(
        call.field("endTimestampUnix"),
        Some(ms("2025-12-02T00:00:00Z").as_str())
    );
    assert_eq!(call.field("dataSources"), Some("8"));
    assert_eq!(call.field("valueTypes"), Some("1000,3000"));

    let u = "u1".to_owned();
    assert_eq!(
        epoch_rows(&db).await,
        vec![
            (
                u.clone(),
                1,
                1000,
                at("2025-12-01T10:00:00Z"),
                None,
                None,
                "7.5".to_owned()
            ),
            (
                u.clone(),
                8,
                1000,
                at("2025-12-01T10:00:00Z"),
                None,
                Some(60),
                "12".to_owned()
            ),
            (
                u.clone(),
                8,
                3000,
                at("2025-12-01T08:00:00Z"),
                Some(at("2025-12-01T08:01:00Z")),
                Some(60),
                "61".to_owned()
            ),
            (
                u.clone(),
                8,
                3000,
                at("2025-12-01T09:00:00Z"),
                Some(at("2025-12-01T09:01:00Z")),
                Some(60),
                "64".to_owned()
            ),
        ]
    );
    let ranges = all_ranges(&db).await;
    assert_eq!(ranges[0].status, "done");
}

#[tokio::test]
async fn a_daily_range_is_one_documented_call_and_fills_daily_values() {
    let db = TestDb::new().await;
    add(
        &db,
        "u2",
        1,
        &[1000, 2000],
        Extent::Daily(day("2025-12-01"), day("2025-12-03")),
    )
    .await;
    let fake = FakeThryve::start(|_, _| {
        Reply::ok(answer(
            "u2",
            &[&[(
                1,
                vec![
                    json!({"day": "2025-12-01", "createdAt": "2025-12-02T00:00:00Z", "dailyDynamicValueType": 1000,
                           "dailyDynamicValueTypeName": "Steps", "value": "4200", "valueType": "LONG",
                           "details": {"timezoneOffset": 60}}),
                    json!({"dayUnix": 1764633600000_i64, "dailyDynamicValueType": 2000, "value": "420", "valueType": "LONG"}),
                ],
            )]],
        ))
    })
    .await;
    assert_eq!(
        fetch_one(&db, &config(&fake)).await,
        Outcome::Done { values_written: 2 }
    );
    let call = &fake.seen()[0];
    call.assert_well_formed();
    assert_eq!(call.path, "/v5/dailyDynamicValues");
    assert_eq!(call.field("startDay"), Some("2025-12-01"));
    assert_eq!(call.field("endDay"), Some("2025-12-03"));
    assert_eq!(call.field("dataSources"), Some("1"));
    assert_eq!(call.field("valueTypes"), Some("1000,2000"));
    let rows: Vec<(NaiveDate, i32, String, Option<i32>)> = sqlx::query_as(
        "SELECT day, data_type_id, value, timezone_offset FROM thryve.daily_values ORDER BY day",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert_eq!(
        rows,
        vec![
            (day("2025-12-01"), 1000, "4200".to_owned(), Some(60)),
            (day("2025-12-02"), 2000, "420".to_owned(), None),
        ]
    );
}

#[tokio::test]
async fn a_span_over_30_days_is_split_into_calls_of_at_most_30_days() {
    let db = TestDb::new().await;
    let (start, end) = (at("2025-10-01T00:00:00Z"), at("2025-12-14T12:00:00Z"));
    add(&db, "u3", 8, &[3000], Extent::Epoch(start, end)).await;
    // Every call returns the same value overlapping its span, as Thryve does for values
    // overlapping the boundaries: it must land once.
    let fake = FakeThryve::start(|_, _| {
        Reply::ok(answer(
            "u3",
            &[&[(
                8,
                vec![json!({"startTimestamp": "2025-10-31T23:59:00Z", "endTimestamp": "2025-11-01T00:01:00Z",
                            "dynamicValueType": 3000, "value": "70"})],
            )]],
        ))
    })
    .await;
    assert_eq!(
        fetch_one(&db, &config(&fake)).await,
        Outcome::Done { values_written: 1 }
    );
    let seen = fake.seen();
    assert_eq!(seen.len(), 3, "75 days: 30 + 30 + 15");
    let mut expected_start = start.timestamp_millis();
    for call in &seen {
        call.assert_well_formed();
        let from: i64 = call.field("startTimestampUnix").unwrap().parse().unwrap();
        let to: i64 = call.field("endTimestampUnix").unwrap().parse().unwrap();
        assert_eq!(from, expected_start, "pieces are contiguous");
        assert!(to - from <= TimeDelta::days(30).num_milliseconds());
        expected_start = to + 1;
    }
    assert_eq!(
        expected_start - 1,
        end.timestamp_millis(),
        "the last piece ends at the range's end"
    );
    assert_eq!(count(&db, "epoch_values").await, 1);
}

#[tokio::test]
async fn a_429_is_retried_after_its_retry_after() {
    let db = TestDb::new().await;
    add(
        &db,
        "u4",
        8,
        &[3000],
        Extent::Epoch(at("2025-12-01T00:00:00Z"), at("2025-12-01T01:00:00Z")),
    )
    .await;
    let fake = FakeThryve::start(|n, _| match n {
        0 => Reply {
            retry_after: Some(1),
            ..Reply::status(429, r#"{"error":"slow down"}"#)
        },
        _ => Reply::ok(answer("u4", &[])),
    })
    .await;
    let mut config = config(&fake);
    quick_retries(&mut config);
    assert_eq!(
        fetch_one(&db, &config).await,
        Outcome::Done { values_written: 0 }
    );
    let seen = fake.seen();
    assert_eq!(seen.len(), 2);
    // The backoff setting is 10 ms; only Retry-After explains a wait of a second.
    assert!(seen[1].at - seen[0].at >= Duration::from_millis(950));
}

#[tokio::test]
async fn a_500_then_an_answer_completes_the_range() {
    let db = TestDb::new().await;
    add(
        &db,
        "u5",
        8,
        &[3000],
        Extent::Epoch(at("2025-12-01T00:00:00Z"), at("2025-12-01T01:00:00Z")),
    )
    .await;
    let fake = FakeThryve::start(|n, _| match n {
        0 => Reply::status(500, "oops"),
        _ => Reply::ok(answer(
            "u5",
            &[&[(
                8,
                vec![
                    json!({"startTimestamp": "2025-12-01T00:30:00Z", "endTimestamp": "null",
                                "dynamicValueType": 3000, "value": "80"}),
                ],
            )]],
        )),
    })
    .await;
    assert_eq!(
        fetch_one(&db, &config(&fake)).await,
        Outcome::Done { values_written: 1 }
    );
    assert_eq!(fake.seen().len(), 2);
    assert_eq!(all_ranges(&db).await[0].status, "done");
}

#[tokio::test]
async fn a_403_fails_the_range_for_good_with_the_reason() {
    let db = TestDb::new().await;
    add(
        &db,
        "gone",
        8,
        &[3000],
        Extent::Epoch(at("2025-12-01T00:00:00Z"), at("2025-12-01T01:00:00Z")),
    )
    .await;
    let fake = FakeThryve::start(|_, _| {
        Reply::status(403, "AuthenticationToken is invalid for given appID")
    })
    .await;
    assert_eq!(fetch_one(&db, &config(&fake)).await, Outcome::Failed);
    assert_eq!(fake.seen().len(), 1, "no retry");
    let range = &all_ranges(&db).await[0];
    assert_eq!(range.status, "failed");
    assert!(
        range
            .last_error
            .as_deref()
            .unwrap()
            .contains("AuthenticationToken is invalid"),
        "{:?}",
        range.last_error
    );
}

#[tokio::test]
async fn a_400_fails_the_range_with_thryves_message() {
    let db = TestDb::new().await;
    add(
        &db,
        "u6",
        8,
        &[3000],
        Extent::Epoch(at("2025-12-01T00:00:00Z"), at("2025-12-01T01:00:00Z")),
    )
    .await;
    let fake = FakeThryve::start(|_, _| {
        Reply::status(
            400,
            r#"{"errorCode":1040,"errorMessage":"valueTypes: unknown type 99999"}"#,
        )
    })
    .await;
    assert_eq!(fetch_one(&db, &config(&fake)).await, Outcome::Failed);
    let range = &all_ranges(&db).await[0];
    assert_eq!(range.status, "failed");
    assert!(range
        .last_error
        .as_deref()
        .unwrap()
        .contains("unknown type 99999"));
    assert_eq!(fake.seen().len(), 1);
}

/// Each of these fails the attempt: the range goes back to pending with the reason, for a
/// later retry, and nothing is written.
async fn attempt_fails(
    reply: Reply,
    tweak: impl Fn(&mut FetcherConfig),
    reason: &str,
    calls: usize,
) {
    let db = TestDb::new().await;
    add(
        &db,
        "u7",
        8,
        &[3000],
        Extent::Epoch(at("2025-12-01T00:00:00Z"), at("2025-12-01T01:00:00Z")),
    )
    .await;
    let fake = FakeThryve::start(move |_, _| reply.clone()).await;
    let mut config = config(&fake);
    tweak(&mut config);
    assert_eq!(fetch_one(&db, &config).await, Outcome::Retry);
    assert_eq!(fake.seen().len(), calls);
    let range = &all_ranges(&db).await[0];
    assert_eq!(range.status, "pending");
    assert_eq!(range.attempts, 1);
    assert!(
        range.last_error.as_deref().unwrap().contains(reason),
        "{:?} should say {reason}",
        range.last_error
    );
    assert_eq!(count(&db, "epoch_values").await, 0);
}

#[tokio::test]
async fn a_slow_answer_past_the_client_timeout_is_tried_again_then_fails_the_attempt() {
    let value =
        json!({"startTimestamp": "2025-12-01T00:30:00Z", "dynamicValueType": 3000, "value": "1"});
    attempt_fails(
        Reply::ok(answer("u7", &[&[(8, vec![value])]])).after(Duration::from_secs(2)),
        |c| {
            c.api.fetcher_timeout_ms = 300;
            c.api.fetcher_max_tries = 2;
        },
        "timeout",
        2,
    )
    .await;
}

#[tokio::test]
async fn malformed_json_fails_the_attempt() {
    attempt_fails(
        Reply::status(
            200,
            r#"[{"authenticationToken":"u7","dataSources":[{"dataSource":8,"data":[{"#,
        ),
        |_| {},
        "not JSON",
        1,
    )
    .await;
}

#[tokio::test]
async fn an_answer_over_the_size_limit_fails_the_attempt() {
    let values: Vec<Value> = (0..200)
        .map(|i| json!({"startTimestampUnix": 1764547200000_i64 + i * 1000, "dynamicValueType": 3000, "value": "1"}))
        .collect();
    attempt_fails(
        Reply::ok(answer("u7", &[&[(8, values)]])),
        |c| c.api.fetcher_max_response_bytes = 2_000,
        "FETCHER_MAX_RESPONSE_BYTES",
        1,
    )
    .await;
}

#[tokio::test]
async fn repeated_5xx_fail_the_attempt_after_every_try() {
    let tries = parse_env::<FetcherConfig, &str, &str>([])
        .unwrap()
        .api
        .fetcher_max_tries as usize;
    attempt_fails(
        Reply::status(503, "maintenance"),
        quick_retries,
        "503",
        tries,
    )
    .await;
}

#[tokio::test]
async fn fetched_values_equal_to_pushed_ones_are_the_same_rows() {
    let db = TestDb::new().await;
    let push = json!({"endUserId": "pu", "timestampType": "iso", "type": "event.data.epoch.update",
        "data": [{"dataSourceId": 8, "epochData": [
            {"startTimestamp": "2025-11-14T01:17:00Z", "endTimestamp": "2025-11-14T01:37:00Z", "timezoneOffset": 60, "dataTypeId": 3000, "value": "61"},
            {"startTimestamp": "2025-11-14T01:40:00Z", "timezoneOffset": 60, "dataTypeId": 1000, "value": "102"}]}]});
    let ids = store(&db, &[push]).await;
    poller(&db).drain().await.unwrap();
    let pushed = epoch_rows(&db).await;
    assert_eq!(pushed.len(), 2);
    // The push left a push-only range (no fetch needed); a notification of the same span
    // makes it one to fetch, and Thryve answers the same data.
    add(
        &db,
        "pu",
        8,
        &[3000, 1000],
        Extent::Epoch(at("2025-11-14T01:17:00Z"), at("2025-11-14T01:40:00Z")),
    )
    .await;
    let fake = FakeThryve::start(|_, _| {
        Reply::ok(answer(
            "pu",
            &[&[(
                8,
                vec![
                    json!({"startTimestampUnix": 1763083020000_i64, "endTimestampUnix": 1763084220000_i64,
                           "dynamicValueType": 3000, "value": "61", "details": {"timezoneOffset": 60}}),
                    json!({"startTimestamp": "2025-11-14T01:40:00Z", "endTimestamp": "null",
                           "dynamicValueType": 1000, "value": "102", "details": {"timezoneOffset": 60}}),
                ],
            )]],
        ))
    })
    .await;
    assert_eq!(
        fetch_one(&db, &config(&fake)).await,
        Outcome::Done { values_written: 0 },
        "the same data changes nothing"
    );
    assert_eq!(epoch_rows(&db).await, pushed);
    let inbox_ids: Vec<i64> =
        sqlx::query_scalar("SELECT DISTINCT inbox_id FROM thryve.epoch_values")
            .fetch_all(&db.pool)
            .await
            .unwrap();
    assert_eq!(inbox_ids, ids, "still the push's rows");
}

#[tokio::test]
async fn a_call_waiting_under_the_rate_cap_when_a_401_pauses_fetching_is_not_sent() {
    let db = TestDb::new().await;
    for user in ["first", "second"] {
        add(
            &db,
            user,
            8,
            &[3000],
            Extent::Epoch(at("2025-12-01T00:00:00Z"), at("2025-12-01T01:00:00Z")),
        )
        .await;
    }
    let fake = FakeThryve::start(|_, _| Reply::status(401, "Unauthorized")).await;
    let mut config = config(&fake);
    // One call a second: the second range's call waits its turn while the first meets the 401.
    config.api.fetcher_rate_per_sec = 1.0;
    let fetcher = fetcher(&db, &config);
    let (a, b) = (
        Consumer::new(db.pool.clone(), "loop-0"),
        Consumer::new(db.pool.clone(), "loop-1"),
    );
    let stop = CancellationToken::new();
    let (first, second) = tokio::join!(fetcher.fetch_one(&a, &stop), fetcher.fetch_one(&b, &stop));
    assert_eq!(
        (first.unwrap(), second.unwrap()),
        (Some(Outcome::Retry), Some(Outcome::Retry))
    );
    assert_eq!(fake.seen().len(), 1, "only the first call was sent");
    let mut reasons: Vec<String> = all_ranges(&db)
        .await
        .into_iter()
        .map(|r| r.last_error.unwrap())
        .collect();
    reasons.sort();
    assert!(reasons[0].starts_with("401 from Thryve"), "{reasons:?}");
    assert!(
        reasons[1].starts_with("not called: fetching is paused"),
        "{reasons:?}"
    );
}

#[tokio::test]
async fn a_401_pauses_all_fetching_and_readyz_says_so() {
    let fake = FakeThryve::start(|_, _| Reply::status(401, "Unauthorized")).await;
    let mut config = test_config();
    config.fetcher = self::config(&fake);
    let app = spawn_app_with(config).await;
    assert_eq!(app.get_status("/readyz").await, 200);
    for user in ["a", "b", "c"] {
        add(
            &app.db,
            user,
            8,
            &[3000],
            Extent::Epoch(at("2025-12-01T00:00:00Z"), at("2025-12-01T01:00:00Z")),
        )
        .await;
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while app.get_status("/readyz").await != 503 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "readyz never said paused"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let ready = app.client.get(app.url("/readyz")).send().await.unwrap();
    let body: Value = ready.json().await.unwrap();
    assert!(
        body["error"].as_str().unwrap().contains("fetcher paused"),
        "{body}"
    );
    let metrics = app.metrics().await;
    assert!(
        metrics.contains("thryve_bridge_fetcher_paused 1"),
        "{metrics}"
    );
    assert!(metrics.contains(
        r#"thryve_bridge_fetcher_calls_total{endpoint="dynamicEpochValues",status="401"}"#
    ));
    // Paused: nothing more is called, though ranges wait (at most one more call raced in:
    // the rate cap spaces calls 200 ms apart, and one whose turn comes in the pause is not
    // sent).
    let calls = fake.seen().len();
    assert!(calls <= 2, "{calls}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(fake.seen().len(), calls);
    let failed_401 = all_ranges(&app.db)
        .await
        .iter()
        .filter(|r| r.last_error.as_deref().is_some_and(|e| e.contains("401")))
        .count();
    assert_eq!(
        failed_401, calls,
        "the ranges that met the 401 are pending again with it"
    );
}

#[tokio::test]
async fn a_pause_is_in_stats_as_soon_as_readyz_says_it_not_at_the_next_report() {
    let fake = FakeThryve::start(|_, _| Reply::status(401, "Unauthorized")).await;
    let mut config = test_config();
    config.fetcher = self::config(&fake);
    let app = spawn_app_with(config).await;
    add(
        &app.db,
        "a",
        8,
        &[3000],
        Extent::Epoch(at("2025-12-01T00:00:00Z"), at("2025-12-01T01:00:00Z")),
    )
    .await;
    wait_until(Duration::from_secs(10), "readyz says paused", || async {
        app.get_status("/readyz").await == 503
    })
    .await;
    // The periodic report would say it within REPORT_EVERY; the pause itself must, well
    // before that.
    let pool = &app.db.pool;
    wait_until(
        fetcher::REPORT_EVERY / 2,
        "thryve.fetchers shows the pause",
        || async {
            sqlx::query_scalar::<_, Option<String>>("SELECT paused_reason FROM thryve.fetchers")
                .fetch_optional(pool)
                .await
                .unwrap()
                .flatten()
                .is_some_and(|reason| reason.contains("401"))
        },
    )
    .await;
}

#[tokio::test]
async fn the_whole_loop_notification_range_call_values_done() {
    let fake = FakeThryve::start(|_, seen: &Seen| {
        let user = seen.field("authenticationToken").unwrap().to_owned();
        Reply::ok(answer(
            &user,
            &[&[(8, vec![json!({"startTimestamp": "2025-12-01T08:00:00Z", "endTimestamp": "2025-12-01T08:05:00Z",
                               "dynamicValueType": 3000, "value": "66", "details": {"timezoneOffset": 0}})])]],
        ))
    })
    .await;
    let mut config = test_config();
    config.fetcher = self::config(&fake);
    // Only the NOTIFY can wake the fetcher within the test's patience.
    config.fetcher.fetcher_interval_ms = 600_000;
    let app = spawn_app_with(config).await;
    tokio::time::sleep(Duration::from_millis(300)).await; // its LISTEN is up
    let notification = json!({"endUserId": "loop-user", "timestampType": "iso",
        "type": "notification.data.epoch.createupdate",
        "data": {"startTimestamp": "2025-12-01T08:00:00Z", "endTimestamp": "2025-12-01T09:00:00Z",
                 "dataSourceId": 8, "dataTypeIds": [3000]}});
    let response = app.post_json(&notification).await;
    assert_eq!(response.status(), 200);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let ranges = all_ranges(&app.db).await;
        if ranges.len() == 1 && ranges[0].status == "done" {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{ranges:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let seen = fake.seen();
    assert_eq!(seen.len(), 1);
    seen[0].assert_well_formed();
    assert_eq!(seen[0].field("authenticationToken"), Some("loop-user"));
    assert_eq!(seen[0].field("valueTypes"), Some("3000"));
    assert_eq!(
        epoch_rows(&app.db).await,
        vec![(
            "loop-user".to_owned(),
            8,
            3000,
            at("2025-12-01T08:00:00Z"),
            Some(at("2025-12-01T08:05:00Z")),
            Some(0),
            "66".to_owned()
        )]
    );
    let metrics = app.metrics().await;
    assert!(
        metrics.contains(r#"thryve_bridge_fetcher_ranges_total{outcome="done"} 1"#),
        "{metrics}"
    );
    assert!(metrics.contains("thryve_bridge_fetcher_values_written_total 1"));
}

#[tokio::test]
async fn a_pending_range_sends_a_notify_on_the_documented_channel() {
    let db = TestDb::new().await;
    let mut listener = sqlx::postgres::PgListener::connect(&db.url())
        .await
        .unwrap();
    listener.listen(ranges::CHANNEL).await.unwrap();
    assert_eq!(ranges::CHANNEL, "thryve_dirty_ranges");
    add(
        &db,
        "n",
        8,
        &[3000],
        Extent::Epoch(at("2025-12-01T00:00:00Z"), at("2025-12-01T01:00:00Z")),
    )
    .await;
    let got = tokio::time::timeout(Duration::from_secs(5), listener.recv())
        .await
        .expect("a NOTIFY within 5 s")
        .unwrap();
    assert_eq!(got.channel(), "thryve_dirty_ranges");
    // A claim leaves nothing pending behind: no NOTIFY.
    Consumer::new(db.pool.clone(), "w")
        .claim(1, Duration::from_secs(60))
        .await
        .unwrap();
    assert!(
        tokio::time::timeout(Duration::from_millis(300), listener.recv())
            .await
            .is_err()
    );
}

#[tokio::test]
async fn a_crash_between_the_call_and_the_commit_refetches_and_writes_nothing_half() {
    use std::process::{Command, Stdio};
    let db = TestDb::new().await;
    add(
        &db,
        "crash",
        8,
        &[3000],
        Extent::Epoch(at("2025-12-01T00:00:00Z"), at("2025-12-01T01:00:00Z")),
    )
    .await;
    let range_id = all_ranges(&db).await[0].id;
    let calls = Arc::new(AtomicUsize::new(0));
    let fake = FakeThryve::start({
        let calls = calls.clone();
        move |_, _| {
            calls.fetch_add(1, Ordering::SeqCst);
            Reply::ok(answer(
                "crash",
                &[&[(
                    8,
                    (0..50)
                        .map(|i| {
                            json!({"startTimestampUnix": 1764547200000_i64 + i * 60_000,
                        "endTimestamp": "null", "dynamicValueType": 3000, "value": i.to_string()})
                        })
                        .collect(),
                )]],
            ))
            .after(Duration::from_millis(500))
        }
    })
    .await;
    // The real binary, fetching only.
    let mut child = Command::new(env!("CARGO_BIN_EXE_thryve-bridge"))
        .arg("serve")
        .env_clear()
        .env(
            "DATABASE_URL",
            format!("{}&application_name=crash-child", db.url()),
        )
        .env("BIND_ADDR", "127.0.0.1:0")
        .env("WEBHOOK_ALLOW_UNAUTHENTICATED", "true")
        .env("POLLER_ENABLED", "false")
        .env("HOUSEKEEPING_ENABLED", "false")
        .env("FETCHER_ENABLED", "true")
        .env("FETCHER_CONCURRENCY", "1")
        .env("FETCHER_LEASE_SECS", "2")
        .env("FETCHER_INTERVAL_MS", "100")
        .env("FETCHER_WORKER", "child")
        .env("THRYVE_API_URL", fake.url())
        .env("THRYVE_API_USER", "partner")
        .env("THRYVE_API_PASSWORD", "partner-pw")
        .env("THRYVE_APP_ID", "app-id")
        .env("THRYVE_APP_SECRET", "app-secret")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("the binary starts");
    // Once the child holds the claim and waits for the answer, hold the range's row so that
    // its completion (after the values' upsert, in the same transaction) has to wait.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while calls.load(Ordering::SeqCst) == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the child never called"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut blocker = db.pool.begin().await.unwrap();
    sqlx::query("SELECT 1 FROM thryve.dirty_ranges WHERE id = $1 FOR UPDATE")
        .bind(range_id)
        .execute(&mut *blocker)
        .await
        .unwrap();
    // The child has written its values inside its transaction and waits on the row.
    loop {
        let waiting: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity
             WHERE application_name = 'crash-child' AND wait_event_type = 'Lock'",
        )
        .fetch_one(&db.pool)
        .await
        .unwrap();
        // (Its lease keeper may wait on the row too.)
        if waiting >= 1 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the child never reached its commit"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    child.kill().unwrap();
    child.wait().unwrap();
    blocker.rollback().await.unwrap();
    // Its backend notices the dead client and rolls back.
    loop {
        let left: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'crash-child'",
        )
        .fetch_one(&db.pool)
        .await
        .unwrap();
        if left == 0 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the child's session lingers"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(count(&db, "epoch_values").await, 0, "nothing half-written");
    let range = &all_ranges(&db).await[0];
    assert_eq!(
        (range.status.as_str(), range.claimed_by.as_deref()),
        ("claimed", Some("child-0"))
    );

    // Once the dead claim's lease lapses, another fetcher takes the range and fetches it again.
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    assert_eq!(
        fetch_one(&db, &config(&fake)).await,
        Outcome::Done { values_written: 50 }
    );
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    assert_eq!(all_ranges(&db).await[0].status, "done");
}

#[tokio::test]
async fn ranges_dirty_enqueues_each_connected_source_once_however_often_it_runs() {
    use crate::cli::{bridge, json_out};
    let db = TestDb::new().await;
    sqlx::query(
        "INSERT INTO thryve.source_connections (end_user_id, data_source_id, connected, changed_at)
         VALUES ('c1', 8, true, now()), ('c2', 8, true, now()), ('c2', 1, true, now()),
                ('gone', 8, false, now())",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    let args = ["ranges", "dirty", "--days", "3", "--types", "3000,1000"];
    for _ in 0..2 {
        let out = json_out(&bridge(&db.url(), &args, &[]));
        assert_eq!(out["targets"], 3, "{out}");
        assert_eq!(out["spans_merged"], 6);
    }
    let pending = ranges::list(&db.pool, Some(ranges::RangeStatus::Pending), 100)
        .await
        .unwrap();
    assert_eq!(
        pending.len(),
        6,
        "three pairs, epoch and daily, once: {pending:?}"
    );
    let since = Utc::now().date_naive() - TimeDelta::days(3);
    for range in &pending {
        assert_ne!(range.end_user_id, "gone");
        assert_eq!(range.data_type_ids, vec![1000, 3000]);
        assert_eq!(range.notification_count, 0, "no notification asked for it");
        match range.granularity.as_str() {
            "epoch" => assert_eq!(
                range.start_time.unwrap(),
                since.and_hms_opt(0, 0, 0).unwrap().and_utc()
            ),
            _ => assert_eq!(range.start_day.unwrap(), since),
        }
    }
    // One pair by name, connected or not, and only epoch.
    let out = json_out(&bridge(
        &db.url(),
        &[
            "ranges",
            "dirty",
            "--since",
            "2025-11-01",
            "--user",
            "gone",
            "--source",
            "8",
            "--granularity",
            "epoch",
            "--types",
            "1000",
        ],
        &[],
    ));
    assert_eq!(out["targets"], 1);
    let gone: Vec<DirtyRange> = ranges::list(&db.pool, Some(ranges::RangeStatus::Pending), 100)
        .await
        .unwrap()
        .into_iter()
        .filter(|r| r.end_user_id == "gone")
        .collect();
    assert_eq!(gone.len(), 1);
    assert_eq!(gone[0].start_time.unwrap(), at("2025-11-01T00:00:00Z"));
    // Neither --days nor --since: refused.
    assert!(!bridge(&db.url(), &["ranges", "dirty"], &[])
        .status
        .success());
}

#[tokio::test]
async fn stats_shows_each_fetcher_and_what_it_did() {
    let fake = FakeThryve::start(|_, _| Reply::ok(answer("s", &[]))).await;
    let mut config = test_config();
    config.fetcher = self::config(&fake);
    let app = spawn_app_with(config).await;
    add(
        &app.db,
        "s",
        8,
        &[3000],
        Extent::Epoch(at("2025-12-01T00:00:00Z"), at("2025-12-01T01:00:00Z")),
    )
    .await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let stats = thryve_bridge::stats::collect(&app.db.pool).await.unwrap();
        if let Some(f) = stats.fetchers.first().filter(|f| f.ranges_done == 1) {
            assert_eq!(f.worker, "test-fetcher");
            assert_eq!(f.paused_reason, None);
            assert!(f.last_done_age_secs.is_some());
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{:?}",
            stats.fetchers
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn a_call_longer_than_the_lease_keeps_its_claim() {
    let db = TestDb::new().await;
    add(
        &db,
        "slow",
        8,
        &[3000],
        Extent::Epoch(at("2025-12-01T00:00:00Z"), at("2025-12-01T01:00:00Z")),
    )
    .await;
    let fake = FakeThryve::start(|_, _| {
        Reply::ok(answer("slow", &[])).after(Duration::from_millis(2_500))
    })
    .await;
    let mut config = config(&fake);
    config.fetcher_lease_secs = 1; // the call (2.5 s) outlasts the lease

    let first = tokio::spawn({
        let fetcher = fetcher(&db, &config);
        let consumer = Consumer::new(db.pool.clone(), "first");
        async move {
            fetcher
                .fetch_one(&consumer, &CancellationToken::new())
                .await
                .unwrap()
        }
    });
    tokio::time::sleep(Duration::from_millis(1_800)).await;
    let second = fetcher(&db, &config)
        .fetch_one(
            &Consumer::new(db.pool.clone(), "second"),
            &CancellationToken::new(),
        )
        .await
        .unwrap();
    assert_eq!(second, None, "the lease was kept: nothing to claim");
    assert_eq!(
        first.await.unwrap(),
        Some(Outcome::Done { values_written: 0 })
    );
    assert_eq!(fake.seen().len(), 1);
}
