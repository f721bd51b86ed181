//! Data pushes through the real server: tight push-only ranges, values that never collide,
//! the newest signing wins; how fetching and recomputing workers claim; claim tokens; the
//! "all types" range; and the migration of values stored before their key changed.

use std::{borrow::Cow, time::Duration};

use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use thryve_bridge::{
    db,
    ranges::{ClaimMode, Consumer, DirtyRange},
};

use crate::{
    invariants::assert_guarantees,
    poller::poller,
    support::{
        self, answer, epoch_notification, epoch_point, receiver_only, spawn_app, spawn_app_with,
        TestApp, TestDb, PASSWORD, USER,
    },
};

const MINUTE: i64 = 60_000;
const DAY: i64 = 86_400_000;
const T0: i64 = 1_763_083_020_000; // 2025-11-14T01:17:00Z

/// POSTs `body` as Thryve does, signed at `signed_ms` when given (the test server checks no
/// HMAC, so the timestamp is taken as the signing time when within the window).
async fn send(app: &TestApp, body: &Value, signed_ms: Option<i64>) -> (u16, Value) {
    let mut request = app
        .webhook()
        .basic_auth(USER, Some(PASSWORD))
        .header("content-type", "application/json");
    if let Some(ms) = signed_ms {
        request = request.header("x-hmac-timestamp", ms.to_string());
    }
    answer(request.body(body.to_string()).send().await.unwrap()).await
}

/// An epoch push of (start, end, type, value) points from source 8 ("Withings").
fn epoch_push(kind: &str, points: &[(i64, Option<i64>, i32, &str)]) -> Value {
    let points = points
        .iter()
        .map(|(start, end, t, v)| epoch_point(*start, *end, 0, *t, v))
        .collect();
    support::epoch_push("u1", kind, Some("Withings"), points)
}

/// (type, start ms, end ms, value) of every stored epoch value, in key order.
async fn values(app: &TestApp) -> Vec<(i32, i64, Option<i64>, String)> {
    sqlx::query_as(
        "SELECT data_type_id, (extract(epoch FROM start_time) * 1000)::bigint,
                (extract(epoch FROM end_time) * 1000)::bigint, value
         FROM thryve.epoch_values ORDER BY data_type_id, start_time, end_key",
    )
    .fetch_all(&app.db.pool)
    .await
    .unwrap()
}

async fn pending(app: &TestApp) -> Vec<DirtyRange> {
    sqlx::query_as("SELECT * FROM thryve.dirty_ranges WHERE status = 'pending' ORDER BY start_time, start_day, id")
        .fetch_all(&app.db.pool)
        .await
        .unwrap()
}

fn span_ms(range: &DirtyRange) -> (i64, i64) {
    (
        range.start_time.unwrap().timestamp_millis(),
        range.end_time.unwrap().timestamp_millis(),
    )
}

fn now_ms() -> i64 {
    Utc::now().timestamp_millis()
}

#[tokio::test]
async fn sparse_instants_over_four_weeks_make_tight_push_only_ranges() {
    let app = spawn_app().await;
    // The observed shape: 9 instant values over 28 days, two types.
    let points: Vec<(i64, Option<i64>, i32, &str)> = (0..9)
        .map(|i| {
            (
                T0 + i * 84 * 60 * MINUTE + i * 7 * MINUTE,
                None,
                if i % 2 == 0 { 5020 } else { 3001 },
                "70",
            )
        })
        .collect();
    assert_eq!(
        send(&app, &epoch_push("create", &points), None).await.0,
        200
    );
    app.wait_processed().await;

    let ranges = pending(&app).await;
    assert_eq!(ranges.len(), 9, "one range per instant, not a 28-day hull");
    for (range, (start, _, t, _)) in ranges.iter().zip(&points) {
        assert_eq!(span_ms(range), (*start, *start));
        assert_eq!(range.data_type_ids, vec![*t]);
        assert!(
            !range.needs_fetch,
            "the values are stored: nothing to fetch"
        );
    }
    assert_eq!(values(&app).await.len(), 9);
    assert_guarantees(&app.db.pool).await;
}

#[tokio::test]
async fn a_point_and_an_aggregate_with_one_start_are_both_kept() {
    let app = spawn_app().await;
    let body = epoch_push(
        "create",
        &[
            (T0, Some(T0 + MINUTE), 1011, "10"),
            (T0 + MINUTE, Some(T0 + 2 * MINUTE), 1011, "12"),
            (T0, Some(T0 + 2 * MINUTE), 1011, "22"),
        ],
    );
    send(&app, &body, None).await;
    app.wait_processed().await;
    assert_eq!(
        values(&app).await,
        vec![
            (1011, T0, Some(T0 + MINUTE), "10".to_owned()),
            (1011, T0, Some(T0 + 2 * MINUTE), "22".to_owned()),
            (1011, T0 + MINUTE, Some(T0 + 2 * MINUTE), "12".to_owned()),
        ]
    );
    // The same shapes arriving in two pushes, aggregate first, keep both too.
    let later = epoch_push(
        "create",
        &[(T0 + DAY, Some(T0 + DAY + 5 * MINUTE), 1011, "50")],
    );
    let point = epoch_push("create", &[(T0 + DAY, Some(T0 + DAY + MINUTE), 1011, "9")]);
    send(&app, &later, None).await;
    send(&app, &point, None).await;
    app.wait_processed().await;
    assert_eq!(values(&app).await.len(), 5);
    assert_guarantees(&app.db.pool).await;
}

#[tokio::test]
async fn an_end_time_update_replaces_the_value_it_updates() {
    // The server's poller off: the test puts a create and its update in one batch.
    let app = spawn_app_with(receiver_only()).await;
    // Sleep: created, then updated with a later end.
    send(
        &app,
        &epoch_push("create", &[(T0, Some(T0 + 360 * MINUTE), 2000, "360")]),
        None,
    )
    .await;
    poller(&app.db).drain().await.unwrap();
    send(
        &app,
        &epoch_push("update", &[(T0, Some(T0 + 420 * MINUTE), 2000, "420")]),
        None,
    )
    .await;
    poller(&app.db).drain().await.unwrap();
    // An aggregate beside a point of its start grows: the aggregate is replaced, the point kept.
    // Created and updated within one poller batch, too.
    let s = T0 + DAY;
    send(
        &app,
        &epoch_push(
            "create",
            &[
                (s, Some(s + MINUTE), 1011, "3"),
                (s, Some(s + 5 * MINUTE), 1011, "20"),
            ],
        ),
        None,
    )
    .await;
    send(
        &app,
        &epoch_push("update", &[(s, Some(s + 10 * MINUTE), 1011, "41")]),
        None,
    )
    .await;
    poller(&app.db).drain().await.unwrap();
    assert_eq!(
        values(&app).await,
        vec![
            (1011, s, Some(s + MINUTE), "3".to_owned()),
            (1011, s, Some(s + 10 * MINUTE), "41".to_owned()),
            (2000, T0, Some(T0 + 420 * MINUTE), "420".to_owned()),
        ]
    );
    assert_guarantees(&app.db.pool).await;
}

#[tokio::test]
async fn the_same_push_twice_80_ms_apart_is_one_row_one_range() {
    let app = spawn_app().await;
    let body = epoch_push(
        "update",
        &[
            (T0, Some(T0 + MINUTE), 1000, "12"),
            (T0 + 2 * MINUTE, None, 3000, "61"),
        ],
    );
    let signed = now_ms() - 1000;
    let (_, first) = send(&app, &body, Some(signed)).await;
    let (_, second) = send(&app, &body, Some(signed + 80)).await;
    assert_eq!(first["outcome"], "stored");
    assert_eq!(second["outcome"], "duplicate");
    assert_eq!(first["inbox_id"], second["inbox_id"]);
    app.wait_processed().await;
    let (rows, deliveries, signed_at): (i64, i64, Option<DateTime<Utc>>) =
        sqlx::query_as("SELECT count(*), sum(delivery_count), min(signed_at) FROM thryve.inbox")
            .fetch_one(&app.db.pool)
            .await
            .unwrap();
    assert_eq!((rows, deliveries), (1, 2));
    assert_eq!(
        signed_at.unwrap().timestamp_millis(),
        signed,
        "the earliest signing is the version"
    );
    assert_eq!(values(&app).await.len(), 2);
    assert_eq!(pending(&app).await.len(), 1);
    // A third copy after the poller ran re-arms the row: still one pending range.
    send(&app, &body, Some(signed + 160)).await;
    app.wait_processed().await;
    assert_eq!(pending(&app).await.len(), 1);
    assert_eq!(values(&app).await.len(), 2);
    assert_guarantees(&app.db.pool).await;
}

#[tokio::test]
async fn two_pushes_out_of_order_the_newer_by_signing_time_wins() {
    // The server's poller off: the test decides which deliveries share a batch.
    let app = spawn_app_with(receiver_only()).await;
    let signed = now_ms() - 10_000;
    let older = epoch_push("update", &[(T0, Some(T0 + MINUTE), 3000, "60")]);
    let newer = epoch_push("update", &[(T0, Some(T0 + MINUTE), 3000, "61")]);
    let daily = |value: &str| {
        json!({"endUserId": "u1", "timestampType": "iso", "type": "event.data.daily.update",
               "data": [{"dataSourceId": 8, "dailyData": [{"day": "2025-11-14", "dataTypeId": 1000, "value": value}]}]})
    };
    // The newer signing arrives first; the older one arrives after, in the same batch and in a
    // later one.
    send(&app, &newer, Some(signed + 1000)).await;
    send(&app, &daily("5000"), Some(signed + 1000)).await;
    send(&app, &older, Some(signed)).await;
    send(&app, &daily("4000"), Some(signed)).await;
    poller(&app.db).drain().await.unwrap();
    let again_older = epoch_push("update", &[(T0, Some(T0 + MINUTE), 3000, "59")]);
    send(&app, &again_older, Some(signed + 500)).await;
    poller(&app.db).drain().await.unwrap();
    assert_eq!(
        values(&app).await,
        vec![(3000, T0, Some(T0 + MINUTE), "61".to_owned())]
    );
    let (value, version): (String, DateTime<Utc>) =
        sqlx::query_as("SELECT value, version_at FROM thryve.epoch_values")
            .fetch_one(&app.db.pool)
            .await
            .unwrap();
    assert_eq!(
        (value.as_str(), version.timestamp_millis()),
        ("61", signed + 1000)
    );
    let daily_value: String = sqlx::query_scalar("SELECT value FROM thryve.daily_values")
        .fetch_one(&app.db.pool)
        .await
        .unwrap();
    assert_eq!(daily_value, "5000");
    // Unsigned, the receipt orders them: the later delivery wins.
    send(
        &app,
        &epoch_push("update", &[(T0, Some(T0 + MINUTE), 3000, "62")]),
        None,
    )
    .await;
    poller(&app.db).drain().await.unwrap();
    assert_eq!(values(&app).await[0].3, "62");
}

#[tokio::test]
async fn a_fetching_workers_claim_returns_no_push_only_range_and_a_recomputing_workers_does() {
    let app = spawn_app().await;
    // Push-only at T0; a notification elsewhere; a push and a notification that overlap.
    send(&app, &epoch_push("create", &[(T0, None, 3000, "61")]), None).await;
    send(
        &app,
        &epoch_notification("u1", T0 + DAY, T0 + DAY + MINUTE, &[1000]),
        None,
    )
    .await;
    send(
        &app,
        &epoch_push(
            "create",
            &[(T0 + 2 * DAY, Some(T0 + 2 * DAY + MINUTE), 1000, "7")],
        ),
        None,
    )
    .await;
    send(
        &app,
        &epoch_notification("u1", T0 + 2 * DAY, T0 + 2 * DAY + 30_000, &[1000]),
        None,
    )
    .await;
    app.wait_processed().await;
    let shapes: Vec<((i64, i64), bool)> = pending(&app)
        .await
        .iter()
        .map(|r| (span_ms(r), r.needs_fetch))
        .collect();
    assert_eq!(
        shapes,
        vec![
            ((T0, T0), false),
            ((T0 + DAY, T0 + DAY + MINUTE), true),
            ((T0 + 2 * DAY, T0 + 2 * DAY + MINUTE), true),
        ],
        "a notification in the mix makes the merge need a fetch"
    );
    assert_guarantees(&app.db.pool).await;

    let lease = Duration::from_secs(300);
    let fetcher = Consumer::new(app.db.pool.clone(), "fetch-1");
    let fetched = fetcher.claim(10, lease).await.unwrap();
    assert_eq!(fetched.len(), 2);
    assert!(fetched.iter().all(|r| r.needs_fetch));
    // The old SQL call is the fetching one too.
    let old: Vec<DirtyRange> = sqlx::query_as(
        "SELECT * FROM thryve.claim_dirty_ranges('fetch-2', 10, interval '5 minutes')",
    )
    .fetch_all(&app.db.pool)
    .await
    .unwrap();
    assert!(old.is_empty(), "only the push-only range is left: {old:?}");

    let recomputer = Consumer::new(app.db.pool.clone(), "recompute-1");
    let all = recomputer
        .claim_for(ClaimMode::All, 10, lease)
        .await
        .unwrap();
    assert_eq!(
        all.iter()
            .map(|r| (span_ms(r), r.needs_fetch))
            .collect::<Vec<_>>(),
        vec![((T0, T0), false)]
    );
    assert!(recomputer.complete(&all[0]).await.unwrap());

    // Fetch ranges released back to pending are the recomputing worker's as well.
    assert!(fetcher
        .fail(&fetched[0], "Thryve 502", Duration::ZERO)
        .await
        .unwrap());
    let again = recomputer
        .claim_for(ClaimMode::All, 10, lease)
        .await
        .unwrap();
    assert_eq!(again.len(), 1);
    assert!(again[0].needs_fetch);
}

#[tokio::test]
async fn push_ranges_can_be_turned_off_and_the_values_still_land() {
    let app = spawn_app().await;
    sqlx::query("UPDATE thryve.settings SET value = 'off' WHERE key = 'push_ranges'")
        .execute(&app.db.pool)
        .await
        .unwrap();
    send(&app, &epoch_push("create", &[(T0, None, 3000, "61")]), None).await;
    send(
        &app,
        &epoch_notification("u1", T0 + DAY, T0 + DAY, &[1000]),
        None,
    )
    .await;
    app.wait_processed().await;
    let ranges = pending(&app).await;
    assert_eq!(ranges.len(), 1);
    assert!(ranges[0].needs_fetch);
    assert_eq!(values(&app).await.len(), 1);
    assert_guarantees(&app.db.pool).await;
}

#[tokio::test]
async fn the_data_source_name_stays_readable_after_payloads_are_blanked() {
    let app = spawn_app().await;
    send(&app, &epoch_push("create", &[(T0, None, 3000, "61")]), None).await;
    app.wait_processed().await;
    sqlx::query("UPDATE thryve.inbox SET payload = 'null'::jsonb")
        .execute(&app.db.pool)
        .await
        .unwrap();
    let name: String =
        sqlx::query_scalar("SELECT name FROM thryve.data_sources WHERE data_source_id = 8")
            .fetch_one(&app.db.pool)
            .await
            .unwrap();
    assert_eq!(name, "Withings");
}

#[tokio::test]
async fn a_stale_worker_of_the_same_name_cannot_finish_the_current_claim() {
    let app = spawn_app().await;
    send(
        &app,
        &epoch_notification("u1", T0, T0 + MINUTE, &[1000]),
        None,
    )
    .await;
    app.wait_processed().await;
    let lease = Duration::from_secs(300);
    // Two processes that were both started as "worker-1".
    let stale = Consumer::new(app.db.pool.clone(), "worker-1");
    let current = Consumer::new(app.db.pool.clone(), "worker-1");
    let first = stale.claim(1, lease).await.unwrap().remove(0);
    sqlx::query("UPDATE thryve.dirty_ranges SET lease_expires_at = now() - interval '1 second'")
        .execute(&app.db.pool)
        .await
        .unwrap();
    let second = current.claim(1, lease).await.unwrap().remove(0);
    assert_eq!(first.id, second.id);
    assert_ne!(first.claim_token, second.claim_token);

    assert!(!stale.complete(&first).await.unwrap());
    assert!(!stale.extend(&first, lease).await.unwrap());
    assert!(!stale.fail(&first, "late", Duration::ZERO).await.unwrap());
    assert!(!stale.abandon(&first, "gone").await.unwrap());
    assert!(current.extend(&second, lease).await.unwrap());
    assert!(current.complete(&second).await.unwrap());
    let status: String = sqlx::query_scalar("SELECT status FROM thryve.dirty_ranges WHERE id = $1")
        .bind(second.id)
        .fetch_one(&app.db.pool)
        .await
        .unwrap();
    assert_eq!(status, "done");
}

#[tokio::test]
async fn the_old_calls_without_a_token_check_the_name_only() {
    let app = spawn_app().await;
    send(
        &app,
        &epoch_notification("u1", T0, T0 + MINUTE, &[1000]),
        None,
    )
    .await;
    app.wait_processed().await;
    let worker = Consumer::new(app.db.pool.clone(), "worker-1");
    let range = worker
        .claim(1, Duration::from_secs(300))
        .await
        .unwrap()
        .remove(0);
    // The documented weaker guarantee: any process named worker-1 may complete it.
    let by_name: bool = sqlx::query_scalar("SELECT thryve.complete_dirty_range($1, 'worker-1')")
        .bind(range.id)
        .fetch_one(&app.db.pool)
        .await
        .unwrap();
    assert!(by_name);
    assert!(!worker.complete(&range).await.unwrap(), "already done");
    // And abandoning by name, as before abandoning took a token.
    send(
        &app,
        &epoch_notification("u2", T0, T0 + MINUTE, &[1000]),
        None,
    )
    .await;
    app.wait_processed().await;
    let range = worker
        .claim(1, Duration::from_secs(300))
        .await
        .unwrap()
        .remove(0);
    let by_name: bool =
        sqlx::query_scalar("SELECT thryve.abandon_dirty_range($1, 'worker-1', 'gone')")
            .bind(range.id)
            .fetch_one(&app.db.pool)
            .await
            .unwrap();
    assert!(by_name);
    assert!(
        !worker.abandon(&range, "again").await.unwrap(),
        "already failed"
    );
}

#[tokio::test]
async fn an_all_types_range_merged_with_typed_ones_stays_all_types() {
    let db = TestDb::new().await;
    let merge = |types: &'static str, start: &'static str, end: &'static str| {
        let pool = db.pool.clone();
        async move {
            sqlx::query_scalar::<_, i64>(
                "SELECT thryve.merge_dirty_range('u1', 8, 'daily', $1::integer[], NULL, NULL, $2::date, $3::date)",
            )
            .bind(types)
            .bind(start)
            .bind(end)
            .fetch_one(&pool)
            .await
            .unwrap()
        }
    };
    merge("{2000,2001}", "2025-11-01", "2025-11-03").await;
    merge("{}", "2025-11-03", "2025-11-05").await;
    merge("{3001}", "2025-11-06", "2025-11-06").await;
    // All types alone is kept too (it used to vanish from the merge).
    merge("{}", "2025-12-01", "2025-12-01").await;
    let ranges: Vec<DirtyRange> =
        sqlx::query_as("SELECT * FROM thryve.dirty_ranges ORDER BY start_day")
            .fetch_all(&db.pool)
            .await
            .unwrap();
    let shapes: Vec<(String, String, Vec<i32>)> = ranges
        .iter()
        .map(|r| {
            (
                r.start_day.unwrap().to_string(),
                r.end_day.unwrap().to_string(),
                r.data_type_ids.clone(),
            )
        })
        .collect();
    assert_eq!(
        shapes,
        vec![
            ("2025-11-01".to_owned(), "2025-11-06".to_owned(), vec![]),
            ("2025-12-01".to_owned(), "2025-12-01".to_owned(), vec![]),
        ]
    );
    let (_, body) = ranges[0].thryve_request();
    assert!(
        body.get("valueTypes").is_none(),
        "all types: no valueTypes, {body}"
    );
}

#[tokio::test]
async fn values_stored_before_the_key_changed_are_migrated() {
    let db = TestDb::unmigrated().await;
    let before: Vec<_> = db::MIGRATOR
        .iter()
        .filter(|m| m.version < 20261201000010)
        .cloned()
        .collect();
    let old = sqlx::migrate::Migrator {
        migrations: Cow::Owned(before),
        ignore_missing: false,
        locking: true,
        no_tx: false,
    };
    old.run(&db.pool).await.unwrap();
    sqlx::raw_sql(
        r#"INSERT INTO thryve.inbox (fingerprint, event_type, end_user_id, payload, status,
               first_received_at, processed_at)
           VALUES (sha256('a'), 'event.data.epoch.create', 'u1',
               '{"data":[{"dataSourceId":8,"dataSourceName":"Withings","epochData":[]}]}',
               'processed', '2025-11-14T01:00:00Z', now());
           INSERT INTO thryve.epoch_values (end_user_id, data_source_id, data_type_id, start_time,
               end_time, value, inbox_id)
           VALUES ('u1', 8, 1011, '2025-11-14T01:17:00Z', '2025-11-14T01:18:00Z', '10', 1),
                  ('u1', 8, 3000, '2025-11-14T01:17:00Z', NULL, '61', 99);
           INSERT INTO thryve.daily_values (end_user_id, data_source_id, data_type_id, day, value, inbox_id)
           VALUES ('u1', 8, 1000, '2025-11-14', '5000', 1);"#,
    )
    .execute(&db.pool)
    .await
    .unwrap();
    db::migrate(&db.pool).await.unwrap();

    let rows: Vec<(i32, DateTime<Utc>, bool)> = sqlx::query_as(
        "SELECT data_type_id, version_at, version_at = updated_at
         FROM thryve.epoch_values ORDER BY data_type_id",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    let received: DateTime<Utc> = "2025-11-14T01:00:00Z".parse().unwrap();
    assert_eq!(rows[0].1, received, "the delivery's receipt is the version");
    assert!(rows[1].2, "no inbox row left: when it was written");
    let daily_version: DateTime<Utc> =
        sqlx::query_scalar("SELECT version_at FROM thryve.daily_values")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(daily_version, received);
    // The aggregate of the migrated point's start is a value of its own now.
    sqlx::query(
        "INSERT INTO thryve.epoch_values (end_user_id, data_source_id, data_type_id, start_time,
             end_time, value, inbox_id, version_at)
         VALUES ('u1', 8, 1011, '2025-11-14T01:17:00Z', '2025-11-14T01:22:00Z', '50', 2, now())",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    let name: String =
        sqlx::query_scalar("SELECT name FROM thryve.data_sources WHERE data_source_id = 8")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(name, "Withings");
}
