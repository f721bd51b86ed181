//! The poller and the consumer API: inbox rows become coalesced ranges that workers claim.

use std::time::Duration;

use chrono::{DateTime, NaiveDate, TimeZone, Utc};
use serde_json::{json, Value};
use thryve_bridge::{
    inbox::{self, NewDelivery},
    poller::Poller,
    ranges::{self, Consumer, DirtyRange},
    service::Services,
};

use crate::{
    invariants::assert_guarantees,
    support::{
        answer, epoch_notification, epoch_point, epoch_push, receiver_only, spawn_app_with,
        test_config, TestDb,
    },
};

/// A poller on the default settings, which the test drives itself (`drain`, `poll_once`).
pub fn poller(db: &TestDb) -> Poller {
    Poller::new(db.pool.clone(), &test_config().poller)
}

/// A poller's transaction on a connection of its own that has claimed up to `limit` rows
/// (within the default values limits) and not committed: the claim lasts until the caller
/// ends the transaction or drops the connection.
pub async fn open_claim(db: &TestDb, limit: i64) -> (sqlx::PgConnection, Vec<inbox::PendingRow>) {
    let defaults = test_config().poller;
    let limits = inbox::ClaimLimits {
        rows: limit,
        values: defaults.poll_batch_values,
        values_per_row: defaults.max_values_per_delivery,
    };
    let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&db.url())
        .await
        .unwrap();
    sqlx::query("BEGIN").execute(&mut conn).await.unwrap();
    let claimed = inbox::claim_pending(&mut conn, limits).await.unwrap();
    (conn, claimed)
}

/// Stores bodies as the receiver would, without HTTP (the receiver has its own tests).
pub async fn store(db: &TestDb, bodies: &[Value]) -> Vec<i64> {
    let deliveries: Vec<NewDelivery> = bodies
        .iter()
        .map(|b| NewDelivery::from_body(b.as_object().unwrap()))
        .collect();
    let mut ids = Vec::new();
    for d in &deliveries {
        let rows = inbox::insert_batch(&db.pool, &[(d, 1)]).await.unwrap();
        ids.push(rows[0].id);
    }
    ids
}

fn ms(s: &str) -> i64 {
    DateTime::parse_from_rfc3339(s).unwrap().timestamp_millis()
}

fn at(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

fn day(s: &str) -> NaiveDate {
    s.parse().unwrap()
}

fn epoch(user: &str, source: i32, start: &str, end: &str, types: &[i32]) -> Value {
    json!({"endUserId": user, "timestampType": "unix", "type": "notification.data.epoch.createupdate",
           "data": {"startTimestamp": ms(start), "endTimestamp": ms(end), "dataSourceId": source, "dataTypeIds": types}})
}

fn daily(user: &str, start: &str, end: &str, types: &[i32]) -> Value {
    json!({"endUserId": user, "timestampType": "iso", "type": "notification.data.daily.createupdate",
           "data": {"startDay": start, "endDay": end, "dataSourceId": 1, "dataTypeIds": types}})
}

fn connection(user: &str, connected: bool, at_ms: i64) -> Value {
    let kind = if connected { "connect" } else { "disconnect" };
    json!({"endUserId": user, "timestampType": "unix", "type": format!("notification.source.{kind}"),
           "data": {"timestamp": at_ms, "dataSourceId": 8}})
}

async fn pending(db: &TestDb) -> Vec<DirtyRange> {
    ranges::list(&db.pool, Some(ranges::RangeStatus::Pending), 1000)
        .await
        .unwrap()
}

type EpochShape = (DateTime<Utc>, DateTime<Utc>, Vec<i32>, i32);

fn epoch_shapes(ranges: &[DirtyRange]) -> Vec<EpochShape> {
    let mut shapes: Vec<_> = ranges
        .iter()
        .map(|r| {
            (
                r.start_time.unwrap(),
                r.end_time.unwrap(),
                r.data_type_ids.clone(),
                r.notification_count,
            )
        })
        .collect();
    shapes.sort();
    shapes
}

#[tokio::test]
async fn each_merge_case_gives_the_expected_pending_ranges() {
    // (existing notifications, new notification, pending ranges after: start, end, types, count)
    type Case = (
        &'static str,
        Vec<Value>,
        Value,
        Vec<(&'static str, &'static str, Vec<i32>, i32)>,
    );
    let u = "merge-user";
    let cases: Vec<Case> = vec![
        (
            "overlap",
            vec![epoch(
                u,
                8,
                "2024-01-01T10:00:00Z",
                "2024-01-01T12:00:00Z",
                &[1],
            )],
            epoch(u, 8, "2024-01-01T11:00:00Z", "2024-01-01T13:00:00Z", &[1]),
            vec![("2024-01-01T10:00:00Z", "2024-01-01T13:00:00Z", vec![1], 2)],
        ),
        (
            "touch at an equal instant",
            vec![epoch(
                u,
                8,
                "2024-01-01T10:00:00Z",
                "2024-01-01T12:00:00Z",
                &[1],
            )],
            epoch(u, 8, "2024-01-01T12:00:00Z", "2024-01-01T12:00:00Z", &[2]),
            vec![(
                "2024-01-01T10:00:00Z",
                "2024-01-01T12:00:00Z",
                vec![1, 2],
                2,
            )],
        ),
        (
            "disjoint",
            vec![epoch(
                u,
                8,
                "2024-01-01T10:00:00Z",
                "2024-01-01T12:00:00Z",
                &[1],
            )],
            epoch(u, 8, "2024-01-01T12:00:01Z", "2024-01-01T13:00:00Z", &[1]),
            vec![
                ("2024-01-01T10:00:00Z", "2024-01-01T12:00:00Z", vec![1], 1),
                ("2024-01-01T12:00:01Z", "2024-01-01T13:00:00Z", vec![1], 1),
            ],
        ),
        (
            "contained",
            vec![epoch(
                u,
                8,
                "2024-01-01T10:00:00Z",
                "2024-01-01T12:00:00Z",
                &[1, 2],
            )],
            epoch(u, 8, "2024-01-01T10:30:00Z", "2024-01-01T11:00:00Z", &[3]),
            vec![(
                "2024-01-01T10:00:00Z",
                "2024-01-01T12:00:00Z",
                vec![1, 2, 3],
                2,
            )],
        ),
        (
            "bridging two pending ranges",
            vec![
                epoch(u, 8, "2024-01-01T10:00:00Z", "2024-01-01T11:00:00Z", &[1]),
                epoch(u, 8, "2024-01-01T12:00:00Z", "2024-01-01T13:00:00Z", &[2]),
            ],
            epoch(u, 8, "2024-01-01T10:30:00Z", "2024-01-01T12:30:00Z", &[3]),
            vec![(
                "2024-01-01T10:00:00Z",
                "2024-01-01T13:00:00Z",
                vec![1, 2, 3],
                3,
            )],
        ),
        (
            "other source stays apart",
            vec![epoch(
                u,
                8,
                "2024-01-01T10:00:00Z",
                "2024-01-01T12:00:00Z",
                &[1],
            )],
            epoch(u, 9, "2024-01-01T10:00:00Z", "2024-01-01T12:00:00Z", &[1]),
            vec![
                ("2024-01-01T10:00:00Z", "2024-01-01T12:00:00Z", vec![1], 1),
                ("2024-01-01T10:00:00Z", "2024-01-01T12:00:00Z", vec![1], 1),
            ],
        ),
    ];
    for (name, before, news, expected) in cases {
        for one_batch in [false, true] {
            let db = TestDb::new().await;
            let poller = poller(&db);
            store(&db, &before).await;
            if !one_batch {
                poller.drain().await.unwrap();
            }
            store(&db, std::slice::from_ref(&news)).await;
            poller.drain().await.unwrap();
            let expected: Vec<EpochShape> = expected
                .iter()
                .map(|(a, b, t, c)| (at(a), at(b), t.clone(), *c))
                .collect();
            let mut expected = expected;
            expected.sort();
            assert_eq!(
                epoch_shapes(&pending(&db).await),
                expected,
                "{name} (one batch: {one_batch})"
            );
            assert_guarantees(&db.pool).await;
        }
    }
}

#[tokio::test]
async fn adjacent_days_merge_and_a_gap_day_does_not() {
    let db = TestDb::new().await;
    store(
        &db,
        &[
            daily("d", "2024-03-01", "2024-03-02", &[2000]),
            daily("d", "2024-03-05", "2024-03-05", &[2001]),
        ],
    )
    .await;
    poller(&db).drain().await.unwrap();
    store(&db, &[daily("d", "2024-03-03", "2024-03-03", &[3001])]).await;
    poller(&db).drain().await.unwrap();
    let days: Vec<_> = pending(&db)
        .await
        .iter()
        .map(|r| {
            (
                r.start_day.unwrap(),
                r.end_day.unwrap(),
                r.data_type_ids.clone(),
            )
        })
        .collect();
    assert_eq!(
        days,
        vec![
            (day("2024-03-01"), day("2024-03-03"), vec![2000, 3001]),
            (day("2024-03-05"), day("2024-03-05"), vec![2001]),
        ]
    );
    store(&db, &[daily("d", "2024-03-04", "2024-03-04", &[1])]).await;
    poller(&db).drain().await.unwrap();
    let all = pending(&db).await;
    assert_eq!(all.len(), 1);
    assert_eq!(
        (all[0].start_day, all[0].end_day),
        (Some(day("2024-03-01")), Some(day("2024-03-05")))
    );
    assert_eq!(all[0].notification_count, 4);
}

#[tokio::test]
async fn a_claimed_range_is_never_widened_and_news_makes_new_pending_work() {
    let db = TestDb::new().await;
    store(
        &db,
        &[epoch(
            "c",
            8,
            "2024-01-01T10:00:00Z",
            "2024-01-01T12:00:00Z",
            &[1],
        )],
    )
    .await;
    poller(&db).drain().await.unwrap();
    let worker = Consumer::new(db.pool.clone(), "w1");
    let claimed = worker.claim(10, Duration::from_secs(60)).await.unwrap();
    assert_eq!(claimed.len(), 1);

    store(
        &db,
        &[epoch(
            "c",
            8,
            "2024-01-01T11:00:00Z",
            "2024-01-01T13:00:00Z",
            &[2],
        )],
    )
    .await;
    poller(&db).drain().await.unwrap();
    let all = ranges::list(&db.pool, None, 10).await.unwrap();
    let still_claimed = all.iter().find(|r| r.id == claimed[0].id).unwrap();
    assert_eq!(
        (still_claimed.start_time, still_claimed.end_time),
        (claimed[0].start_time, claimed[0].end_time)
    );
    assert_eq!(still_claimed.data_type_ids, vec![1]);
    let fresh = pending(&db).await;
    assert_eq!(
        epoch_shapes(&fresh),
        vec![(
            at("2024-01-01T11:00:00Z"),
            at("2024-01-01T13:00:00Z"),
            vec![2],
            1
        )]
    );
    assert_guarantees(&db.pool).await;
}

#[tokio::test]
async fn the_same_notification_after_its_range_was_claimed_makes_new_work() {
    let db = TestDb::new().await;
    let body = epoch(
        "again",
        8,
        "2024-01-01T10:00:00Z",
        "2024-01-01T11:00:00Z",
        &[1],
    );
    store(&db, std::slice::from_ref(&body)).await;
    poller(&db).drain().await.unwrap();
    let worker = Consumer::new(db.pool.clone(), "w1");
    let range = worker
        .claim(1, Duration::from_secs(60))
        .await
        .unwrap()
        .remove(0);
    store(&db, &[body]).await; // a retry of the same content: the processed row is re-armed
    poller(&db).drain().await.unwrap();
    assert_eq!(pending(&db).await.len(), 1);
    assert!(worker.complete(&range).await.unwrap());
    assert_eq!(
        pending(&db).await.len(),
        1,
        "the re-armed notification still has pending work"
    );
    assert_guarantees(&db.pool).await;
}

#[tokio::test]
async fn a_failed_range_merges_back_into_pending_work_after_its_backoff() {
    let db = TestDb::new().await;
    store(
        &db,
        &[epoch(
            "f",
            8,
            "2024-01-01T10:00:00Z",
            "2024-01-01T11:00:00Z",
            &[1],
        )],
    )
    .await;
    poller(&db).drain().await.unwrap();
    let worker = Consumer::new(db.pool.clone(), "w1");
    let range = worker
        .claim(1, Duration::from_secs(60))
        .await
        .unwrap()
        .remove(0);
    // New work overlapping the claimed range arrives meanwhile.
    store(
        &db,
        &[epoch(
            "f",
            8,
            "2024-01-01T10:30:00Z",
            "2024-01-01T12:00:00Z",
            &[2],
        )],
    )
    .await;
    poller(&db).drain().await.unwrap();

    assert!(worker
        .fail(&range, "thryve answered 502", Duration::from_secs(3600))
        .await
        .unwrap());
    let all = pending(&db).await;
    assert_eq!(
        epoch_shapes(&all),
        vec![(
            at("2024-01-01T10:00:00Z"),
            at("2024-01-01T12:00:00Z"),
            vec![1, 2],
            2
        )]
    );
    assert_eq!(all[0].attempts, 1);
    assert_eq!(all[0].last_error.as_deref(), Some("thryve answered 502"));
    assert!(all[0].available_at > Utc::now() + chrono::Duration::minutes(59));
    assert!(
        worker
            .claim(10, Duration::from_secs(60))
            .await
            .unwrap()
            .is_empty(),
        "backing off"
    );
    assert!(
        !worker.fail(&range, "again", Duration::ZERO).await.unwrap(),
        "no longer held"
    );
    assert_guarantees(&db.pool).await;
}

#[tokio::test]
async fn a_range_out_of_attempts_ends_failed_with_its_error() {
    let db = TestDb::new().await;
    sqlx::query("UPDATE thryve.settings SET value = '2' WHERE key = 'range_max_attempts'")
        .execute(&db.pool)
        .await
        .unwrap();
    store(
        &db,
        &[epoch(
            "x",
            8,
            "2024-01-01T10:00:00Z",
            "2024-01-01T11:00:00Z",
            &[1],
        )],
    )
    .await;
    poller(&db).drain().await.unwrap();
    let worker = Consumer::new(db.pool.clone(), "w1");
    for attempt in 1..=2 {
        let range = worker
            .claim(1, Duration::from_secs(60))
            .await
            .unwrap()
            .remove(0);
        assert_eq!(range.attempts, attempt);
        assert!(worker
            .fail(&range, &format!("boom {attempt}"), Duration::ZERO)
            .await
            .unwrap());
    }
    let failed = ranges::list(&db.pool, Some(ranges::RangeStatus::Failed), 10)
        .await
        .unwrap();
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0].last_error.as_deref(), Some("boom 2"));
    assert!(worker
        .claim(1, Duration::from_secs(60))
        .await
        .unwrap()
        .is_empty());
}

#[tokio::test]
async fn an_expired_lease_is_reclaimed_and_the_stale_worker_is_refused() {
    let db = TestDb::new().await;
    store(
        &db,
        &[epoch(
            "l",
            8,
            "2024-01-01T10:00:00Z",
            "2024-01-01T11:00:00Z",
            &[1],
        )],
    )
    .await;
    poller(&db).drain().await.unwrap();
    let slow = Consumer::new(db.pool.clone(), "slow");
    let fast = Consumer::new(db.pool.clone(), "fast");
    let range = slow
        .claim(1, Duration::from_secs(60))
        .await
        .unwrap()
        .remove(0);
    assert!(
        fast.claim(1, Duration::from_secs(60))
            .await
            .unwrap()
            .is_empty(),
        "held by slow"
    );
    assert!(slow.extend(&range, Duration::from_secs(120)).await.unwrap());
    assert!(!fast.complete(&range).await.unwrap(), "fast never held it");
    // The lease runs out (moved into the past rather than waited for).
    sqlx::query("UPDATE thryve.dirty_ranges SET lease_expires_at = now() - interval '1 second' WHERE id = $1")
        .bind(range.id)
        .execute(&db.pool)
        .await
        .unwrap();
    let reclaimed = fast.claim(1, Duration::from_secs(60)).await.unwrap();
    assert_eq!(reclaimed.len(), 1);
    assert_eq!((reclaimed[0].id, reclaimed[0].attempts), (range.id, 2));
    assert!(!slow.complete(&range).await.unwrap());
    assert!(!slow.fail(&range, "late", Duration::ZERO).await.unwrap());
    assert!(!slow.extend(&range, Duration::from_secs(60)).await.unwrap());
    assert!(fast.complete(&reclaimed[0]).await.unwrap());
    assert_eq!(
        ranges::list(&db.pool, Some(ranges::RangeStatus::Done), 10)
            .await
            .unwrap()
            .len(),
        1
    );
}

#[tokio::test]
async fn claims_come_oldest_first() {
    let db = TestDb::new().await;
    for (i, user) in ["a", "b", "c"].iter().enumerate() {
        store(
            &db,
            &[epoch(
                user,
                8,
                "2024-01-01T10:00:00Z",
                "2024-01-01T11:00:00Z",
                &[1],
            )],
        )
        .await;
        poller(&db).drain().await.unwrap();
        sqlx::query("UPDATE thryve.dirty_ranges SET first_dirtied_at = now() - make_interval(mins => $1) WHERE end_user_id = $2")
            .bind(10 - i as i32)
            .bind(user)
            .execute(&db.pool)
            .await
            .unwrap();
    }
    let worker = Consumer::new(db.pool.clone(), "w");
    let users: Vec<String> = worker
        .claim(2, Duration::from_secs(60))
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.end_user_id)
        .collect();
    assert_eq!(users, vec!["a", "b"]);
}

#[tokio::test]
async fn connection_events_out_of_order_keep_the_newest_state() {
    let db = TestDb::new().await;
    let (t1, t2, t3) = (
        1_700_000_000_000_i64,
        1_700_000_100_000_i64,
        1_700_000_200_000_i64,
    );
    // Newest first, in separate batches, then older ones that must change nothing.
    store(&db, &[connection("s", false, t2)]).await;
    poller(&db).drain().await.unwrap();
    store(&db, &[connection("s", true, t1)]).await;
    poller(&db).drain().await.unwrap();
    let state: (bool, DateTime<Utc>) = sqlx::query_as(
        "SELECT connected, changed_at FROM thryve.source_connections WHERE end_user_id = 's'",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(state, (false, Utc.timestamp_millis_opt(t2).unwrap()));
    // Within one batch too: the newer event wins whatever the arrival order.
    store(
        &db,
        &[connection("s", true, t3), connection("s", false, t1 + 1)],
    )
    .await;
    poller(&db).drain().await.unwrap();
    let connected: bool = sqlx::query_scalar(
        "SELECT connected FROM thryve.source_connections WHERE end_user_id = 's'",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert!(connected);
    let processed: i64 =
        sqlx::query_scalar("SELECT count(*) FROM thryve.inbox WHERE status = 'processed'")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(processed, 4);
}

#[tokio::test]
async fn a_poison_row_is_quarantined_and_the_rest_of_its_batch_goes_on() {
    let db = TestDb::new().await;
    // A constraint only this test has makes applying one user's rows fail in the database.
    sqlx::query("ALTER TABLE thryve.dirty_ranges ADD CONSTRAINT test_poison CHECK (end_user_id <> 'poison')")
        .execute(&db.pool)
        .await
        .unwrap();
    let ids = store(
        &db,
        &[
            epoch(
                "ok-1",
                8,
                "2024-01-01T10:00:00Z",
                "2024-01-01T11:00:00Z",
                &[1],
            ),
            epoch(
                "poison",
                8,
                "2024-01-01T10:00:00Z",
                "2024-01-01T11:00:00Z",
                &[1],
            ),
            epoch(
                "ok-2",
                8,
                "2024-01-01T10:00:00Z",
                "2024-01-01T11:00:00Z",
                &[1],
            ),
        ],
    )
    .await;
    let report = poller(&db).poll_once().await.unwrap();
    assert_eq!((report.processed, report.quarantined), (2, 1));
    let rows: Vec<(i64, String, Option<String>)> =
        sqlx::query_as("SELECT id, status, error FROM thryve.inbox ORDER BY id")
            .fetch_all(&db.pool)
            .await
            .unwrap();
    assert_eq!(rows[0].1, "processed");
    assert_eq!((rows[1].0, rows[1].1.as_str()), (ids[1], "quarantined"));
    assert!(
        rows[1].2.as_deref().unwrap().contains("test_poison"),
        "{:?}",
        rows[1].2
    );
    assert_eq!(rows[2].1, "processed");
    assert_eq!(pending(&db).await.len(), 2);
}

#[tokio::test]
async fn a_row_whose_payload_no_longer_parses_is_quarantined_by_the_poller() {
    let db = TestDb::new().await;
    // As an operator might leave it: a pending row with a payload today's parser rejects.
    sqlx::query(
        "INSERT INTO thryve.inbox (fingerprint, event_type, end_user_id, payload, status)
         VALUES (sha256('x'), 'notification.data.epoch.createupdate', 'u',
                 '{\"type\":\"notification.data.epoch.createupdate\",\"endUserId\":\"u\"}', 'pending')",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    store(
        &db,
        &[epoch(
            "u",
            8,
            "2024-01-01T10:00:00Z",
            "2024-01-01T11:00:00Z",
            &[1],
        )],
    )
    .await;
    let report = poller(&db).poll_once().await.unwrap();
    assert_eq!((report.processed, report.quarantined), (1, 1));
    let error: String =
        sqlx::query_scalar("SELECT error FROM thryve.inbox WHERE status = 'quarantined'")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(error, "data: missing");
}

#[tokio::test]
async fn a_poller_that_dies_mid_batch_leaves_its_rows_pending_for_the_next() {
    let db = TestDb::new().await;
    store(
        &db,
        &[
            epoch(
                "crash",
                8,
                "2024-01-01T10:00:00Z",
                "2024-01-01T11:00:00Z",
                &[1],
            ),
            daily("crash", "2024-01-01", "2024-01-02", &[2]),
        ],
    )
    .await;
    // A poller's transaction: rows claimed, ranges written, then its connection dies.
    let (mut doomed, claimed) = open_claim(&db, 100).await;
    assert_eq!(claimed.len(), 2);
    sqlx::query(
        "SELECT thryve.merge_dirty_range('crash', 8, 'epoch', '{1}', now(), now(), NULL, NULL)",
    )
    .execute(&mut doomed)
    .await
    .unwrap();
    let pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
        .fetch_one(&mut doomed)
        .await
        .unwrap();
    // With a timeout it returns once the backend is gone (its locks with it), not when signalled.
    sqlx::query("SELECT pg_terminate_backend($1, 10000)")
        .bind(pid)
        .execute(&db.pool)
        .await
        .unwrap();
    drop(doomed);
    // pg_terminate_backend only signals: until the backend has aborted, its rows stay claimed
    // and a poller skips them. Its locks going is the event to wait for.
    loop {
        let gone: bool =
            sqlx::query_scalar("SELECT NOT EXISTS (SELECT 1 FROM pg_locks WHERE pid = $1)")
                .bind(pid)
                .fetch_one(&db.pool)
                .await
                .unwrap();
        if gone {
            break;
        }
        tokio::task::yield_now().await;
    }

    assert!(
        ranges::list(&db.pool, None, 10).await.unwrap().is_empty(),
        "nothing of the dead batch remains"
    );
    let handled = poller(&db).drain().await.unwrap();
    assert_eq!(handled, 2);
    assert_eq!(pending(&db).await.len(), 2);
    assert_guarantees(&db.pool).await;
}

#[tokio::test]
async fn the_serving_poller_wakes_on_a_local_commit() {
    let mut config = test_config();
    config.poller.poll_interval_ms = 3_600_000; // only a wake-up can explain a prompt range
    let app = spawn_app_with(config).await;
    let (status, _) = answer(
        app.post_json(&epoch_notification("wake", 1_000, 2_000, &[7]))
            .await,
    )
    .await;
    assert_eq!(status, 200);
    let started = std::time::Instant::now();
    loop {
        if !ranges::list(&app.db.pool, Some(ranges::RangeStatus::Pending), 10)
            .await
            .unwrap()
            .is_empty()
        {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the poller never woke"
        );
        tokio::task::yield_now().await;
    }
}

#[tokio::test]
async fn a_poller_elsewhere_wakes_on_notify() {
    // The server's own poller off: only the one "elsewhere" may find the row.
    let app = spawn_app_with(receiver_only()).await;
    let mut elsewhere = test_config().poller;
    elsewhere.poll_interval_ms = 3_600_000; // only the NOTIFY can explain a prompt range
    let listening = Poller::new(app.db.pool.clone(), &elsewhere);
    let (_never, commits) = tokio::sync::watch::channel(0u64);
    let shutdown = tokio_util::sync::CancellationToken::new();
    let mut services = Services::new(shutdown.clone());
    listening.start(&mut services, commits);
    // The poller must be listening before the commit, or only its interval would find the row.
    let started = std::time::Instant::now();
    loop {
        let listeners: i64 = sqlx::query_scalar("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND query LIKE 'LISTEN%'")
            .fetch_one(&app.db.pool)
            .await
            .unwrap();
        if listeners > 0 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the poller never listened"
        );
        tokio::task::yield_now().await;
    }
    assert_eq!(
        app.post_json(&epoch_notification("notify", 1_000, 2_000, &[7]))
            .await
            .status(),
        200
    );
    loop {
        if !ranges::list(&app.db.pool, Some(ranges::RangeStatus::Pending), 10)
            .await
            .unwrap()
            .is_empty()
        {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the NOTIFY never arrived"
        );
        tokio::task::yield_now().await;
    }
    shutdown.cancel();
    services.stopped().await;
}

fn push(user: &str, points: &[(i64, i32, &str)]) -> Value {
    let points = points
        .iter()
        .map(|(start, t, v)| epoch_point(*start, Some(start + 60_000), 60, *t, v))
        .collect();
    epoch_push(user, "update", Some("Withings"), points)
}

async fn epoch_values(db: &TestDb) -> Vec<(i32, String, Option<String>, i64)> {
    sqlx::query_as(
        "SELECT data_type_id, value, value_numeric::text, inbox_id FROM thryve.epoch_values ORDER BY data_type_id",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap()
}

#[tokio::test]
async fn pushed_values_are_upserted_an_update_replaces_and_a_replay_changes_nothing() {
    let db = TestDb::new().await;
    let t0 = 1_763_083_020_000_i64;
    let first = push("v", &[(t0, 1200, "102"), (t0, 2005, "true")]);
    let first_id = store(&db, std::slice::from_ref(&first)).await[0];
    poller(&db).drain().await.unwrap();
    assert_eq!(
        epoch_values(&db).await,
        vec![
            (1200, "102".to_owned(), Some("102".to_owned()), first_id),
            (2005, "true".to_owned(), None, first_id),
        ]
    );
    let range = &pending(&db).await[0];
    assert_eq!(
        (
            range.start_time.unwrap().timestamp_millis(),
            range.end_time.unwrap().timestamp_millis()
        ),
        (t0, t0 + 60_000)
    );
    assert_eq!(range.data_type_ids, vec![1200, 2005]);

    let update = push("v", &[(t0, 1200, "99.5")]);
    let update_id = store(&db, &[update]).await[0];
    poller(&db).drain().await.unwrap();
    let after_update = epoch_values(&db).await;
    assert_eq!(
        after_update[0],
        (1200, "99.5".to_owned(), Some("99.5".to_owned()), update_id)
    );

    // Thryve retries the first delivery: the row is re-armed and re-processed, the newer value stays.
    store(&db, &[first]).await;
    let report = poller(&db).poll_once().await.unwrap();
    assert_eq!(report.processed, 1);
    assert_eq!(epoch_values(&db).await, after_update);
    let updated_at: Vec<chrono::DateTime<Utc>> =
        sqlx::query_scalar("SELECT updated_at FROM thryve.epoch_values ORDER BY data_type_id")
            .fetch_all(&db.pool)
            .await
            .unwrap();
    assert!(updated_at[1] < Utc::now(), "untouched");
    assert_guarantees(&db.pool).await;
}

#[tokio::test]
async fn a_legacy_source_update_makes_epoch_and_daily_ranges_and_daily_push_values_land() {
    let db = TestDb::new().await;
    let legacy = json!({"sourceUpdate": {"authenticationToken": "legacy-user", "partnerUserID": "p", "dataSource": 1,
        "createdAt": "2020-02-26T16:54:30Z",
        "/v5/dailyDynamicValues": {"startDay": "2020-02-26", "endDay": "2020-02-26", "dailyDynamicValueTypes": [2000, 2001]},
        "/v5/dynamicEpochValues": {"startTimestamp": "2020-02-26T12:38:00Z", "endTimestamp": "2020-02-26T16:55:00Z",
            "dynamicValueTypes": [1012, 3000], "startTimestampUnix": 1582720680000_i64, "endTimestampUnix": 1582736100000_i64}}});
    let daily_push = json!({"endUserId": "legacy-user", "timestampType": "unix", "type": "event.data.daily.create",
        "data": [{"dataSourceId": 8, "dailyData": [{"day": 1765584000000_i64, "timezoneOffset": 0, "dataTypeId": 3001, "value": "59"}]}]});
    store(&db, &[legacy, daily_push]).await;
    poller(&db).drain().await.unwrap();
    let all = pending(&db).await;
    let mut shapes: Vec<(i32, String, Vec<i32>)> = all
        .iter()
        .map(|r| {
            (
                r.data_source_id,
                r.granularity.to_string(),
                r.data_type_ids.clone(),
            )
        })
        .collect();
    shapes.sort();
    assert_eq!(
        shapes,
        vec![
            (1, "daily".to_owned(), vec![2000, 2001]),
            (1, "epoch".to_owned(), vec![1012, 3000]),
            (8, "daily".to_owned(), vec![3001]),
        ]
    );
    let daily: (String, Option<String>, NaiveDate) =
        sqlx::query_as("SELECT value, value_numeric::text, day FROM thryve.daily_values")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(
        daily,
        ("59".to_owned(), Some("59".to_owned()), day("2025-12-13"))
    );
    assert_guarantees(&db.pool).await;
}

#[tokio::test]
async fn a_duplicate_of_a_row_a_poller_holds_is_counted_without_waiting_for_its_batch() {
    // Thryve sends each push twice ~80 ms apart: the second copy must not wait for the batch
    // the first is in (a 500-row batch holds its transaction for hundreds of milliseconds).
    // The server's poller off: the test holds the row in a poller transaction of its own.
    let app = spawn_app_with(receiver_only()).await;
    let body = epoch_notification("held", 1_763_973_390_000, 1_763_973_450_000, &[3000]);
    let (status, first) = answer(app.post_json(&body).await).await;
    assert_eq!((status, first["outcome"].as_str()), (200, Some("stored")));

    // A poller's transaction that has claimed the row and not committed.
    let (mut held, claimed) = open_claim(&app.db, 100).await;
    assert_eq!(claimed.len(), 1);

    // Acknowledged as a duplicate and counted while the claim is held (with a row lock as
    // the claim, this waited past the ack deadline and got 503).
    let (status, second) = answer(app.post_json(&body).await).await;
    assert_eq!(
        (status, second["outcome"].as_str(), &second["inbox_id"]),
        (200, Some("duplicate"), &first["inbox_id"])
    );
    let count: i32 = sqlx::query_scalar("SELECT delivery_count FROM thryve.inbox")
        .fetch_one(&app.db.pool)
        .await
        .unwrap();
    assert_eq!(count, 2);

    // A second poller does not take the held row.
    let other = poller(&app.db).poll_once().await.unwrap();
    assert_eq!(other.rows, 0);
    sqlx::query("ROLLBACK").execute(&mut held).await.unwrap();
    assert_eq!(poller(&app.db).poll_once().await.unwrap().processed, 1);
}

#[tokio::test]
async fn a_poller_does_not_take_rows_of_a_user_another_poller_holds() {
    // Pollers work on disjoint users, so none waits on another's range locks for a batch.
    let db = TestDb::new().await;
    store(
        &db,
        &[
            epoch_notification("held", 1_763_973_390_000, 1_763_973_450_000, &[3000]),
            epoch_notification("free", 1_763_973_390_000, 1_763_973_450_000, &[3000]),
            epoch_notification("held", 1_763_983_390_000, 1_763_983_450_000, &[3001]),
        ],
    )
    .await;
    let (mut other, claimed) = open_claim(&db, 1).await;
    assert_eq!(claimed[0].end_user_id.as_deref(), Some("held"));

    let report = poller(&db).poll_once().await.unwrap();
    assert_eq!((report.rows, report.processed), (1, 1));
    let pending: Vec<String> = sqlx::query_scalar(
        "SELECT end_user_id FROM thryve.inbox WHERE status = 'pending' ORDER BY id",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert_eq!(pending, ["held", "held"]);

    sqlx::query("ROLLBACK").execute(&mut other).await.unwrap();
    assert_eq!(poller(&db).poll_once().await.unwrap().processed, 2);
}

/// An epoch push of `n` one-minute heart rates of `user`.
fn push_of(user: &str, n: i64) -> Value {
    let points = (0..n)
        .map(|i| {
            epoch_point(
                ms("2026-12-01T00:00:00Z") + i * 60_000,
                None,
                60,
                3000,
                "61",
            )
        })
        .collect();
    epoch_push(user, "create", None, points)
}

#[tokio::test]
async fn a_batch_stops_growing_at_its_values_and_a_larger_row_goes_alone() {
    // Not the defaults: a budget of 15 values makes three pushes of 10 three batches.
    let db = TestDb::new().await;
    let ids = store(&db, &[push_of("a", 10), push_of("b", 10), push_of("c", 30)]).await;
    let counts: Vec<Option<i32>> =
        sqlx::query_scalar("SELECT value_count FROM thryve.inbox ORDER BY id")
            .fetch_all(&db.pool)
            .await
            .unwrap();
    assert_eq!(
        counts,
        [Some(10), Some(10), Some(30)],
        "the receiver counts values"
    );
    let mut config = test_config().poller;
    config.poll_batch_values = 15;
    let poller = Poller::new(db.pool.clone(), &config);
    let mut batches = Vec::new();
    loop {
        let report = poller.poll_once().await.unwrap();
        if report.rows == 0 {
            break;
        }
        batches.push((report.rows, report.processed));
    }
    // 10, then 10 (10 + 10 > 15), then the 30-value row alone: over the budget, not the limit.
    assert_eq!(batches, [(1, 1), (1, 1), (1, 1)], "{ids:?}");
    let values: i64 = sqlx::query_scalar("SELECT count(*) FROM thryve.epoch_values")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(values, 50);
}

#[tokio::test]
async fn a_delivery_over_max_values_is_quarantined_unread_naming_the_limit_and_replays_once_raised()
{
    // Not the defaults: MAX_VALUES_PER_DELIVERY of 20 against a push of 30.
    let db = TestDb::new().await;
    let ids = store(&db, &[push_of("big", 30), push_of("small", 5)]).await;
    // A row written before `value_count` (or by an older binary) is counted in SQL.
    sqlx::query("UPDATE thryve.inbox SET value_count = NULL WHERE id = $1")
        .bind(ids[0])
        .execute(&db.pool)
        .await
        .unwrap();
    let mut config = test_config().poller;
    config.max_values_per_delivery = 20;
    Poller::new(db.pool.clone(), &config).drain().await.unwrap();
    let rows: Vec<(String, Option<String>)> =
        sqlx::query_as("SELECT status, error FROM thryve.inbox ORDER BY id")
            .fetch_all(&db.pool)
            .await
            .unwrap();
    assert_eq!(rows[0].0, "quarantined");
    let error = rows[0].1.as_deref().unwrap();
    assert!(
        error.contains("30 values, more than MAX_VALUES_PER_DELIVERY (20)")
            && error.contains(&format!("inbox replay --id {}", ids[0])),
        "{error}"
    );
    assert_eq!(rows[1], ("processed".to_owned(), None));

    // Raised, and replayed as the error says: applied.
    let mut conn = db.pool.acquire().await.unwrap();
    inbox::replay(&mut conn, None, Some(ids[0]), 10)
        .await
        .unwrap();
    poller(&db).drain().await.unwrap();
    let (status, values): (String, i64) = sqlx::query_as(
        "SELECT status, (SELECT count(*) FROM thryve.epoch_values WHERE end_user_id = 'big')
         FROM thryve.inbox WHERE id = $1",
    )
    .bind(ids[0])
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!((status.as_str(), values), ("processed", 30));
}
