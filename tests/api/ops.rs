//! Operations: retention, payload blanking, replay, stats and erasure, through the library and
//! the real binary. Time moves by updating timestamps into the past, never by waiting.

use std::time::Duration;

use serde_json::{json, Value};
use thryve_bridge::{
    config::RetentionConfig,
    db,
    housekeeping::{Housekeeping, PassReport},
    inbox,
    ranges::{self, Consumer},
    users::{self, UserRows},
};
use tokio_util::sync::CancellationToken;

use crate::{
    cli::{bridge, json_out},
    poller::{poller, store},
    support::{
        answer, epoch_notification, receiver_only, spawn_app_with, spawn_on, test_config, TestDb,
    },
};

fn housekeeping(db: &TestDb, retention: RetentionConfig) -> Housekeeping {
    Housekeeping::new(db.pool.clone(), retention, Duration::from_secs(3600))
}

fn connect(user: &str) -> Value {
    json!({"endUserId": user, "timestampType": "unix", "type": "notification.source.connect",
           "data": {"timestamp": 1_765_635_343_541_i64, "dataSourceId": 8}})
}

/// A body the parser quarantines: a known type without `data`.
fn broken(user: &str) -> Value {
    json!({"endUserId": user, "timestampType": "unix", "type": "notification.data.epoch.createupdate"})
}

fn unknown(user: &str) -> Value {
    json!({"endUserId": user, "type": "measurement.something.new", "data": {}})
}

/// Sets status and a processed_at `days` ago on inbox rows, whatever status they are given,
/// so that only the status can keep a row from retention.
async fn age_inbox(db: &TestDb, ids: &[i64], status: &str, days: i32) {
    sqlx::query(
        "UPDATE thryve.inbox SET status = $2, processed_at = now() - make_interval(days => $3)
         WHERE id = ANY ($1)",
    )
    .bind(ids)
    .bind(status)
    .bind(days)
    .execute(&db.pool)
    .await
    .unwrap();
}

/// An epoch range per (status, days since completed_at), each for a user of its own.
async fn insert_ranges(db: &TestDb, ranges: &[(&str, i32)]) -> Vec<i64> {
    let mut ids = Vec::new();
    for (i, (status, days)) in ranges.iter().enumerate() {
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO thryve.dirty_ranges (end_user_id, data_source_id, granularity,
                 data_type_ids, start_time, end_time, status, claimed_by, completed_at)
             VALUES ($1, 8, 'epoch', '{1000}', now(), now(), $2, 'w',
                     now() - make_interval(days => $3))
             RETURNING id",
        )
        .bind(format!("range-user-{i}"))
        .bind(status)
        .bind(days)
        .fetch_one(&db.pool)
        .await
        .unwrap();
        ids.push(id);
    }
    ids
}

async fn ids(db: &TestDb, table: &str) -> Vec<i64> {
    sqlx::query_scalar(&format!("SELECT id FROM thryve.{table} ORDER BY id"))
        .fetch_all(&db.pool)
        .await
        .unwrap()
}

/// Stores `n` distinct valid notifications of `user`.
async fn store_epochs(db: &TestDb, user: &str, n: i64) -> Vec<i64> {
    let bodies: Vec<Value> = (0..n)
        .map(|i| {
            let start = 1_700_000_000_000 + 1_000 * i;
            epoch_notification(user, start, start + 500, &[1000])
        })
        .collect();
    store(db, &bodies).await
}

#[tokio::test]
async fn retention_deletes_only_old_processed_rows_and_done_ranges_in_batches() {
    let db = TestDb::new().await;
    let rows = store_epochs(&db, "retention", 10).await;
    let (old_processed, kept) = rows.split_at(5);
    age_inbox(&db, old_processed, "processed", 31).await;
    age_inbox(&db, &kept[0..1], "processed", 29).await;
    age_inbox(&db, &kept[1..2], "quarantined", 31).await;
    age_inbox(&db, &kept[2..3], "ignored", 31).await;
    age_inbox(&db, &kept[3..4], "pending", 31).await;
    // kept[4] stays pending with no processed_at at all.
    let ranges = insert_ranges(
        &db,
        &[
            ("done", 8),
            ("done", 8),
            ("done", 8),
            ("done", 8),
            ("done", 8),
            ("done", 6),
            ("pending", 8),
            ("claimed", 8),
            ("failed", 8),
        ],
    )
    .await;

    let retention = RetentionConfig {
        housekeeping_batch: 2,
        ..test_config().housekeeping.retention
    };
    let report = housekeeping(&db, retention)
        .pass(&CancellationToken::new())
        .await
        .unwrap();

    assert_eq!(
        report,
        PassReport {
            inbox_deleted: 5,
            ranges_deleted: 5,
            payloads_blanked: 0
        }
    );
    assert_eq!(ids(&db, "inbox").await, kept);
    assert_eq!(ids(&db, "dirty_ranges").await, ranges[5..]);
}

#[tokio::test]
async fn no_batch_starts_after_shutdown() {
    let db = TestDb::new().await;
    let rows = store_epochs(&db, "stopping", 3).await;
    age_inbox(&db, &rows, "processed", 31).await;
    insert_ranges(&db, &[("done", 8)]).await;
    let shutdown = CancellationToken::new();
    shutdown.cancel();
    let retention = RetentionConfig {
        payload_retention: Some(Duration::ZERO),
        ..test_config().housekeeping.retention
    };
    let report = housekeeping(&db, retention).pass(&shutdown).await.unwrap();
    assert_eq!(report, PassReport::default());
    assert_eq!(ids(&db, "inbox").await, rows);
}

#[tokio::test]
async fn the_served_housekeeping_runs_at_start_and_stops_at_once_on_shutdown() {
    let db = TestDb::new().await;
    let rows = store_epochs(&db, "served", 2).await;
    age_inbox(&db, &rows[..1], "processed", 31).await;
    let mut config = test_config();
    config.housekeeping.housekeeping_interval_secs = 3600; // only the pass at start can delete the row
    let pool = db::pool(&db.url(), 10, config.receiver.ack_deadline()).unwrap();
    let mut app = spawn_on(db, pool, config).await;
    let started = std::time::Instant::now();
    while ids(&app.db, "inbox").await != rows[1..] {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "housekeeping never ran"
        );
        tokio::task::yield_now().await;
    }
    // Its hour-long sleep must end on shutdown, or this would hang.
    tokio::time::timeout(Duration::from_secs(10), app.stop())
        .await
        .expect("the server stops while housekeeping sleeps");
}

#[tokio::test]
async fn blanked_payloads_keep_typed_columns_and_a_redelivery_is_still_a_duplicate() {
    // The server's poller off: it would process the redelivered row while the test looks.
    let app = spawn_app_with(receiver_only()).await;
    let old_body = epoch_notification("blank", 1_700_000_000_000, 1_700_000_060_000, &[1000]);
    let recent_body = epoch_notification("blank", 1_700_000_100_000, 1_700_000_160_000, &[1000]);
    let (_, old) = answer(app.post_json(&old_body).await).await;
    let (_, recent) = answer(app.post_json(&recent_body).await).await;
    let (old_id, recent_id) = (
        old["inbox_id"].as_i64().unwrap(),
        recent["inbox_id"].as_i64().unwrap(),
    );
    poller(&app.db).drain().await.unwrap();
    sqlx::query("UPDATE thryve.inbox SET processed_at = now() - interval '2 days' WHERE id = $1")
        .bind(old_id)
        .execute(&app.db.pool)
        .await
        .unwrap();
    let before = inbox::get(&app.db.pool, old_id).await.unwrap().unwrap();
    let retention = RetentionConfig {
        payload_retention: Some(Duration::from_secs(86_400)),
        housekeeping_batch: 1,
        ..test_config().housekeeping.retention
    };
    let keeper = housekeeping(&app.db, retention);

    let report = keeper.pass(&CancellationToken::new()).await.unwrap();
    assert_eq!(report.payloads_blanked, 1);
    let blanked = inbox::get(&app.db.pool, old_id).await.unwrap().unwrap();
    assert_eq!(blanked.payload, Value::Null);
    assert_eq!(
        blanked.summary, before.summary,
        "typed columns and fingerprint stay"
    );
    assert_eq!(
        inbox::get(&app.db.pool, recent_id)
            .await
            .unwrap()
            .unwrap()
            .payload,
        recent_body
    );
    let again = keeper.pass(&CancellationToken::new()).await.unwrap();
    assert_eq!(
        again.payloads_blanked, 0,
        "a blanked row is not blanked again"
    );

    let (status, ack) = answer(app.post_json(&old_body).await).await;
    assert_eq!(
        (status, ack["outcome"].as_str(), ack["inbox_id"].as_i64()),
        (200, Some("duplicate"), Some(old_id))
    );
    let redelivered = inbox::get(&app.db.pool, old_id).await.unwrap().unwrap();
    assert_eq!(
        redelivered.payload, old_body,
        "the payload came back with it"
    );
    assert_eq!(redelivered.summary.status, "pending");
    assert_eq!(redelivered.summary.delivery_count, 2);
    poller(&app.db).drain().await.unwrap();
    let processed = inbox::get(&app.db.pool, old_id).await.unwrap().unwrap();
    assert_eq!(processed.summary.status, "processed");
}

#[tokio::test]
async fn housekeeping_run_through_the_binary_prints_what_it_did() {
    let db = TestDb::new().await;
    let rows = store_epochs(&db, "cli-housekeeping", 4).await;
    age_inbox(&db, &rows[..3], "processed", 31).await;
    age_inbox(&db, &rows[3..], "processed", 2).await;
    insert_ranges(&db, &[("done", 8), ("done", 1)]).await;
    let out = json_out(&bridge(
        &db.url(),
        &["housekeeping", "run"],
        &[("HOUSEKEEPING_BATCH", "2"), ("PAYLOAD_RETENTION", "1d")],
    ));
    assert_eq!(
        out,
        json!({"inbox_deleted": 3, "ranges_deleted": 1, "payloads_blanked": 1})
    );
    // An empty PAYLOAD_RETENTION (as .env.example has it) keeps payloads.
    let out = json_out(&bridge(
        &db.url(),
        &["housekeeping", "run", "--inbox-retention", "1d"],
        &[("PAYLOAD_RETENTION", "")],
    ));
    assert_eq!(
        out,
        json!({"inbox_deleted": 1, "ranges_deleted": 0, "payloads_blanked": 0})
    );
}

#[test]
fn bad_housekeeping_and_poller_settings_name_their_variable() {
    let url = crate::support::admin_url();
    for (variable, value) in [
        ("INBOX_RETENTION", "30 days"),
        ("RANGE_RETENTION", "7"),
        ("PAYLOAD_RETENTION", "1w"),
    ] {
        for args in [&["housekeeping", "run"][..], &["serve"][..]] {
            let out = bridge(
                &url,
                args,
                &[
                    (variable, value),
                    ("WEBHOOK_BASIC_AUTH", "a:b"),
                    ("BIND_ADDR", "127.0.0.1:0"),
                ],
            );
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(!out.status.success(), "{variable}={value} {args:?}");
            assert!(stderr.contains(variable), "{variable}: {stderr}");
        }
    }
    for (variable, args) in [
        ("HOUSEKEEPING_BATCH", &["housekeeping", "run"][..]),
        ("HOUSEKEEPING_BATCH", &["serve"][..]),
        ("HOUSEKEEPING_INTERVAL_SECS", &["serve"][..]),
        ("POLL_CONCURRENCY", &["serve"][..]),
    ] {
        let out = bridge(
            &url,
            args,
            &[
                (variable, "0"),
                ("WEBHOOK_BASIC_AUTH", "a:b"),
                ("BIND_ADDR", "127.0.0.1:0"),
            ],
        );
        assert_eq!(out.status.code(), Some(1));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr
                .lines()
                .last()
                .unwrap()
                .starts_with(&format!("error: {variable}: must be at least 1")),
            "{stderr}"
        );
    }
}

#[tokio::test]
async fn inbox_show_and_list_print_rows() {
    let db = TestDb::new().await;
    let ids = store(
        &db,
        &[
            epoch_notification("show-a", 1_000, 2_000, &[1000, 3000]),
            broken("show-a"),
            broken("show-b"),
            unknown("show-a"),
        ],
    )
    .await;
    let url = db.url();

    let row = json_out(&bridge(&url, &["inbox", "show", &ids[0].to_string()], &[]));
    assert_eq!(row["id"], ids[0]);
    assert_eq!(row["status"], "pending");
    assert_eq!(row["data_type_ids"], json!([1000, 3000]));
    assert_eq!(row["payload"]["endUserId"], "show-a");
    assert_eq!(row["fingerprint"].as_str().unwrap().len(), 64);

    let missing = bridge(&url, &["inbox", "show", "999999"], &[]);
    assert_eq!(missing.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&missing.stderr).trim(),
        "error: inbox row 999999: not found"
    );

    let quarantined = json_out(&bridge(
        &url,
        &["inbox", "list", "--status", "quarantined"],
        &[],
    ));
    let listed: Vec<i64> = quarantined
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_i64().unwrap())
        .collect();
    assert_eq!(listed, [ids[2], ids[1]], "newest first");
    assert_eq!(quarantined[0]["error"], "data: missing");
    assert!(
        quarantined[0].get("payload").is_none(),
        "list leaves payloads out"
    );

    let one = json_out(&bridge(
        &url,
        &[
            "inbox",
            "list",
            "--status",
            "quarantined",
            "--end-user",
            "show-a",
            "--limit",
            "1",
        ],
        &[],
    ));
    assert_eq!(one.as_array().unwrap().len(), 1);
    assert_eq!(one[0]["id"], ids[1]);
}

/// A row as a receiver of an older build would have left it: status and reason by SQL,
/// no typed columns.
async fn insert_held(db: &TestDb, payload: &Value, status: &str) -> i64 {
    sqlx::query_scalar(
        "INSERT INTO thryve.inbox (fingerprint, payload, status, error, end_user_id)
         VALUES (sha256(convert_to($1::text, 'UTF8')), $1, $2, 'an old reason', $3)
         RETURNING id",
    )
    .bind(payload)
    .bind(status)
    .bind(payload["endUserId"].as_str())
    .fetch_one(&db.pool)
    .await
    .unwrap()
}

#[tokio::test]
async fn replay_requeues_rows_that_parse_now_and_the_poller_makes_their_ranges() {
    let db = TestDb::new().await;
    let valid = insert_held(
        &db,
        &epoch_notification(
            "replayed",
            1_700_000_000_000,
            1_700_000_060_000,
            &[3000, 1000],
        ),
        "quarantined",
    )
    .await;
    let still_broken = insert_held(&db, &broken("replayed"), "quarantined").await;
    let still_unknown = insert_held(&db, &unknown("replayed"), "ignored").await;
    let valid_but_ignored = insert_held(
        &db,
        &epoch_notification("replayed", 1_700_000_100_000, 1_700_000_160_000, &[1000]),
        "ignored",
    )
    .await;
    let pending = store_epochs(&db, "untouched", 1).await[0];
    let url = db.url();

    let out = json_out(&bridge(
        &url,
        &["inbox", "replay", "--status", "quarantined"],
        &[],
    ));
    assert_eq!(
        out,
        json!({
            "examined": 2,
            "counts": {"pending": 1, "quarantined": 1, "ignored": 0},
            "ids": {"pending": [valid], "quarantined": [still_broken], "ignored": []},
        })
    );
    let row = inbox::get(&db.pool, valid).await.unwrap().unwrap().summary;
    assert_eq!(
        (row.status.as_str(), row.error, row.event_type.as_deref()),
        (
            "pending",
            None,
            Some("notification.data.epoch.createupdate")
        )
    );
    assert_eq!(row.data_source_id, Some(8));
    assert_eq!(row.data_type_ids, Some(vec![1000, 3000]));
    assert_eq!(
        row.start_time.map(|t| t.timestamp_millis()),
        Some(1_700_000_000_000)
    );
    let broken_row = inbox::get(&db.pool, still_broken).await.unwrap().unwrap();
    assert_eq!(broken_row.summary.status, "quarantined");
    assert_eq!(broken_row.summary.error.as_deref(), Some("data: missing"));

    let out = json_out(&bridge(
        &url,
        &["inbox", "replay", "--id", &valid_but_ignored.to_string()],
        &[],
    ));
    assert_eq!(out["ids"]["pending"], json!([valid_but_ignored]));
    let out = json_out(&bridge(&url, &["inbox", "replay"], &[]));
    assert_eq!(
        out["ids"],
        json!({"pending": [], "quarantined": [still_broken], "ignored": [still_unknown]})
    );
    let refused = bridge(
        &url,
        &["inbox", "replay", "--id", &pending.to_string()],
        &[],
    );
    assert_eq!(refused.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("not quarantined or ignored"));

    poller(&db).drain().await.unwrap();
    let made = ranges::list(&db.pool, Some(ranges::RangeStatus::Pending), 10)
        .await
        .unwrap();
    let mut replayed: Vec<_> = made
        .iter()
        .filter(|r| r.end_user_id == "replayed")
        .map(|r| {
            (
                r.start_time.unwrap().timestamp_millis(),
                r.end_time.unwrap().timestamp_millis(),
                r.data_type_ids.clone(),
            )
        })
        .collect();
    replayed.sort();
    assert_eq!(
        replayed,
        [
            (1_700_000_000_000, 1_700_000_060_000, vec![1000, 3000]),
            (1_700_000_100_000, 1_700_000_160_000, vec![1000]),
        ]
    );
}

#[tokio::test]
async fn stats_counts_and_ages_every_table() {
    let db = TestDb::new().await;
    let url = db.url();
    let empty = json_out(&bridge(&url, &["stats"], &[]));
    assert_eq!(empty["inbox"]["pending"]["count"], 0);
    assert_eq!(empty["seconds_since_last_delivery"], Value::Null);
    assert_eq!(empty["oldest_pending_inbox_age_secs"], Value::Null);

    store(
        &db,
        &[
            epoch_notification("stats-a", 1_000, 2_000, &[1]),
            epoch_notification("stats-b", 1_000, 2_000, &[1]),
            connect("stats-a"),
        ],
    )
    .await;
    poller(&db).drain().await.unwrap();
    let waiting = store(
        &db,
        &[
            epoch_notification("stats-c", 1_000, 2_000, &[1]),
            broken("stats-c"),
            unknown("stats-c"),
        ],
    )
    .await;
    sqlx::query(
        "UPDATE thryve.inbox SET last_received_at = now() - interval '100 seconds' WHERE id = $1",
    )
    .bind(waiting[0])
    .execute(&db.pool)
    .await
    .unwrap();
    Consumer::new(db.pool.clone(), "stats-worker")
        .claim(1, Duration::from_secs(300))
        .await
        .unwrap();
    sqlx::query(
        "UPDATE thryve.dirty_ranges SET first_dirtied_at = now() - interval '50 seconds'
         WHERE status = 'pending'",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO thryve.epoch_values (end_user_id, data_source_id, data_type_id, start_time,
             value, inbox_id)
         SELECT 'stats-a', 8, 1000, to_timestamp(g), '1', 1 FROM generate_series(1, 3) g",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    sqlx::query("ANALYZE thryve.epoch_values")
        .execute(&db.pool)
        .await
        .unwrap();

    let stats = json_out(&bridge(&url, &["stats"], &[]));
    let count = |table: &str, status: &str| stats[table][status]["count"].as_i64().unwrap();
    assert_eq!(
        [
            count("inbox", "pending"),
            count("inbox", "processed"),
            count("inbox", "quarantined"),
            count("inbox", "ignored"),
        ],
        [1, 3, 1, 1]
    );
    assert_eq!(
        [
            count("dirty_ranges", "pending"),
            count("dirty_ranges", "claimed"),
            count("dirty_ranges", "done"),
            count("dirty_ranges", "failed"),
        ],
        [1, 1, 0, 0]
    );
    assert_eq!(stats["source_connections"]["count"], 1);
    assert_eq!(stats["epoch_values"]["rows_estimate"], 3);
    let secs = |v: &Value| v.as_f64().unwrap();
    let pending_age = secs(&stats["oldest_pending_inbox_age_secs"]);
    assert!((100.0..160.0).contains(&pending_age), "{pending_age}");
    assert_eq!(stats["inbox"]["pending"]["oldest_age_secs"], pending_age);
    let range_age = secs(&stats["oldest_pending_range_age_secs"]);
    assert!((50.0..110.0).contains(&range_age), "{range_age}");
    let since = secs(&stats["seconds_since_last_delivery"]);
    assert!((0.0..60.0).contains(&since), "{since}");
    assert!(secs(&stats["inbox"]["processed"]["oldest_age_secs"]) >= since);
}

async fn every_table_has(db: &TestDb, user: &str) -> UserRows {
    users::count(&db.pool, user).await.unwrap()
}

#[tokio::test]
async fn erasing_a_user_deletes_their_rows_everywhere_and_only_theirs() {
    let db = TestDb::new().await;
    for user in ["erased", "kept"] {
        store(
            &db,
            &[
                epoch_notification(user, 1_000, 2_000, &[1000]),
                connect(user),
                broken(user),
            ],
        )
        .await;
        // Data-push parsing is not on this branch: the values a push would write, by hand.
        for insert in [
            "INSERT INTO thryve.epoch_values (end_user_id, data_source_id, data_type_id,
                 start_time, value, inbox_id) VALUES ($1, 8, 1000, now(), '42', 1)",
            "INSERT INTO thryve.daily_values (end_user_id, data_source_id, data_type_id, day,
                 value, inbox_id) VALUES ($1, 8, 1000, current_date, '42', 1)",
        ] {
            sqlx::query(insert)
                .bind(user)
                .execute(&db.pool)
                .await
                .unwrap();
        }
    }
    poller(&db).drain().await.unwrap();
    let all = UserRows {
        inbox: 3,
        dirty_ranges: 1,
        source_connections: 1,
        epoch_values: 1,
        daily_values: 1,
    };
    assert_eq!(every_table_has(&db, "erased").await, all);
    let url = db.url();

    let refused = bridge(&url, &["users", "erase", "erased"], &[]);
    assert_eq!(refused.status.code(), Some(1));
    let preview: Value = serde_json::from_slice(&refused.stdout).unwrap();
    assert_eq!(preview["would_delete"], serde_json::to_value(all).unwrap());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("without --yes"));
    assert_eq!(every_table_has(&db, "erased").await, all, "nothing deleted");

    let out = json_out(&bridge(&url, &["users", "erase", "erased", "--yes"], &[]));
    assert_eq!(out["end_user_id"], "erased");
    assert_eq!(out["deleted"], serde_json::to_value(all).unwrap());
    assert_eq!(every_table_has(&db, "erased").await, UserRows::default());
    assert_eq!(every_table_has(&db, "kept").await, all);
}

#[tokio::test]
async fn stats_estimates_a_table_never_analysed_from_the_rows_written() {
    let db = TestDb::new().await;
    let mut conn = db.pool.acquire().await.unwrap();
    sqlx::query(
        "INSERT INTO thryve.daily_values (end_user_id, data_source_id, data_type_id, day, value,
             inbox_id)
         SELECT 'stats-b', 8, 1000, date '2026-01-01' + g, '1', 1 FROM generate_series(1, 4) g",
    )
    .execute(&mut *conn)
    .await
    .unwrap();
    // The session's counters reach the statistics system when it next goes idle; this makes
    // that flush happen then instead of up to a second later, and the backend has gone idle
    // (and flushed) before it reads the next statement.
    for statement in ["SELECT pg_stat_force_next_flush()", "SELECT 1"] {
        sqlx::query(statement).execute(&mut *conn).await.unwrap();
    }
    drop(conn);
    let analysed: Option<chrono::DateTime<chrono::Utc>> = sqlx::query_scalar(
        "SELECT greatest(last_analyze, last_autoanalyze) FROM pg_stat_all_tables
         WHERE relid = 'thryve.daily_values'::regclass",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(analysed, None, "the test is about a table never analysed");

    let stats = json_out(&bridge(&db.url(), &["stats"], &[]));
    assert_eq!(stats["daily_values"]["rows_estimate"], 4, "{stats}");
}
