//! Operations: retention, payload blanking, replay, stats and erasure, through the library and
//! the real binary. Time moves by updating timestamps into the past, never by waiting.

use serde_json::{json, Value};
use thryve_bridge::{inbox, ranges};

use crate::{
    cli::{bridge, json_out},
    helpers::{epoch_notification, TestDb},
    poller::{poller, store},
};

/// A body the parser quarantines: a known type without `data`.
fn broken(user: &str) -> Value {
    json!({"endUserId": user, "timestampType": "unix", "type": "notification.data.epoch.createupdate"})
}

fn unknown(user: &str) -> Value {
    json!({"endUserId": user, "type": "measurement.something.new", "data": {}})
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
    let made = ranges::list(&db.pool, Some("pending"), 10).await.unwrap();
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
