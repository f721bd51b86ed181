//! Operations: retention, payload blanking, replay, stats and erasure, through the library and
//! the real binary. Time moves by updating timestamps into the past, never by waiting.

use serde_json::{json, Value};

use crate::{
    cli::{bridge, json_out},
    helpers::{epoch_notification, TestDb},
    poller::store,
};

/// A body the parser quarantines: a known type without `data`.
fn broken(user: &str) -> Value {
    json!({"endUserId": user, "timestampType": "unix", "type": "notification.data.epoch.createupdate"})
}

fn unknown(user: &str) -> Value {
    json!({"endUserId": user, "type": "measurement.something.new", "data": {}})
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
