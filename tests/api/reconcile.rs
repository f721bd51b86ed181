//! `thryve-bridge users reconcile` against a fake Thryve answering `/v5/userInformation`:
//! connections lost while the bridge was down are repaired, a second run changes nothing, a
//! newer webhook event stands, a user Thryve no longer knows is reported, not erased.

use std::process::Output;

use chrono::Utc;
use serde_json::{json, Value};

use crate::{
    cli::{bridge, json_out},
    fake_thryve::{user_information, FakeThryve, Reply},
    poller::{poller, store},
    support::TestDb,
};

const DAY: i64 = 86_400_000;

fn connect(user: &str, source: i32, connected: bool, at_ms: i64) -> Value {
    let kind = if connected { "connect" } else { "disconnect" };
    json!({"endUserId": user, "timestampType": "unix", "type": format!("notification.source.{kind}"),
           "data": {"timestamp": at_ms, "dataSourceId": source}})
}

/// A fake Thryve that knows `users` (each with its connected sources); any other user gets
/// Thryve's 403.
async fn thryve(users: &'static [(&'static str, &'static [i32])]) -> FakeThryve {
    FakeThryve::start(move |_, seen| {
        seen.assert_well_formed();
        assert_eq!(seen.path, "/v5/userInformation");
        let user = seen.field("authenticationToken").unwrap();
        match users.iter().find(|(u, _)| *u == user) {
            Some((_, sources)) => Reply::ok(user_information(user, sources)),
            None => Reply::status(403, "AuthenticationToken is invalid for given appID"),
        }
    })
    .await
}

/// `users reconcile` with the fetcher's credentials pointed at `fake`, and `extra` arguments;
/// the process runs off the test's runtime, which serves the fake meanwhile.
async fn reconcile(db: &TestDb, fake: &FakeThryve, extra: &[&str], env: &[(&str, &str)]) -> Output {
    let vars: Vec<(String, String)> = [
        ("THRYVE_API_URL", fake.url().as_str()),
        ("THRYVE_API_USER", "partner"),
        ("THRYVE_API_PASSWORD", "partner-pw"),
        ("THRYVE_APP_ID", "app-id"),
        ("THRYVE_APP_SECRET", "app-secret"),
        ("FETCHER_BACKOFF_MS", "10"),
        ("FETCHER_TIMEOUT_MS", "5000"),
    ]
    .iter()
    .chain(env)
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let mut args = vec!["users".to_owned(), "reconcile".to_owned()];
    args.extend(extra.iter().map(|a| a.to_string()));
    let url = db.url();
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let vars: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        bridge(&url, &args, &vars)
    })
    .await
    .unwrap()
}

/// (user, source, connected, origin) of every stored connection.
async fn connections(db: &TestDb) -> Vec<(String, i32, bool, String)> {
    sqlx::query_as(
        "SELECT end_user_id, data_source_id, connected, origin FROM thryve.source_connections
         ORDER BY 1, 2",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap()
}

fn row(user: &str, source: i32, connected: bool, origin: &str) -> (String, i32, bool, String) {
    (user.to_owned(), source, connected, origin.to_owned())
}

#[tokio::test]
async fn reconcile_repairs_connections_lost_while_the_bridge_was_down_and_then_changes_nothing() {
    let db = TestDb::new().await;
    let long_ago = Utc::now().timestamp_millis() - 10 * DAY;
    store(
        &db,
        &[
            connect("a", 8, true, long_ago),
            connect("b", 1, true, long_ago),
            connect("c", 2, true, long_ago),
        ],
    )
    .await;
    poller(&db).drain().await.unwrap();
    // While the bridge was down, "a" disconnected 8 and connected 5; Thryve's webhooks for
    // both ran out of retries. Thryve no longer knows "c".
    let fake = thryve(&[("a", &[5]), ("b", &[1])]).await;

    let out = json_out(&reconcile(&db, &fake, &[], &[]).await);
    assert_eq!(
        out,
        json!({
            "users": 3,
            "changed": [
                {"end_user_id": "a", "data_source_id": 5, "connected": true, "was": null},
                {"end_user_id": "a", "data_source_id": 8, "connected": false, "was": true},
            ],
            "unknown_to_thryve": [
                {"end_user_id": "c", "error": "403 from Thryve: AuthenticationToken is invalid for given appID"}
            ],
            "failed": [],
            "stopped": null,
        })
    );
    let repaired = vec![
        row("a", 5, true, "reconcile"),
        row("a", 8, false, "reconcile"),
        row("b", 1, true, "webhook"),
        // Reported, not erased.
        row("c", 2, true, "webhook"),
    ];
    assert_eq!(connections(&db).await, repaired);
    assert_eq!(fake.seen().len(), 3);

    // `ranges dirty` re-fetches for the repaired connections.
    let dirty = json_out(&bridge(
        &db.url(),
        &["ranges", "dirty", "--days", "1", "--granularity", "epoch"],
        &[],
    ));
    assert_eq!(dirty["targets"], 3);
    let pairs: Vec<(String, i32)> = sqlx::query_as(
        "SELECT end_user_id, data_source_id FROM thryve.dirty_ranges WHERE status = 'pending'
         ORDER BY 1, 2",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert_eq!(
        pairs,
        vec![("a".into(), 5), ("b".into(), 1), ("c".into(), 2)]
    );

    // From cron again: nothing changed at Thryve, nothing changes here.
    let again = json_out(&reconcile(&db, &fake, &[], &[]).await);
    assert_eq!(again["changed"], json!([]));
    assert_eq!(again["users"], 3);
    assert_eq!(connections(&db).await, repaired);
    assert_eq!(fake.seen().len(), 6);
}

#[tokio::test]
async fn a_newer_webhook_event_stands_and_overrides_a_reconciled_state() {
    let db = TestDb::new().await;
    let now = Utc::now().timestamp_millis();
    // "d" connected 8 after the call to Thryve will start (its clock a little ahead), and 1
    // a day ago.
    store(
        &db,
        &[
            connect("d", 8, true, now + 60_000),
            connect("d", 1, true, now - DAY),
        ],
    )
    .await;
    poller(&db).drain().await.unwrap();
    let fake = thryve(&[("d", &[])]).await;
    let out = json_out(&reconcile(&db, &fake, &["--user", "d"], &[]).await);
    assert_eq!(
        out["changed"],
        json!([{"end_user_id": "d", "data_source_id": 1, "connected": false, "was": true}])
    );
    assert_eq!(
        connections(&db).await,
        vec![
            row("d", 1, false, "reconcile"),
            row("d", 8, true, "webhook")
        ]
    );
    // A delayed event older than the reconciliation changes nothing; a newer one wins.
    store(&db, &[connect("d", 1, true, now - 3_600_000)]).await;
    poller(&db).drain().await.unwrap();
    assert_eq!(connections(&db).await[0], row("d", 1, false, "reconcile"));
    store(&db, &[connect("d", 1, true, now + 120_000)]).await;
    poller(&db).drain().await.unwrap();
    assert_eq!(connections(&db).await[0], row("d", 1, true, "webhook"));
}

#[tokio::test]
async fn one_user_without_an_answer_is_reported_and_the_others_reconciled() {
    let db = TestDb::new().await;
    let long_ago = Utc::now().timestamp_millis() - DAY;
    store(
        &db,
        &[
            connect("e", 8, true, long_ago),
            connect("f", 8, true, long_ago),
        ],
    )
    .await;
    poller(&db).drain().await.unwrap();
    let fake = FakeThryve::start(|_, seen| match seen.field("authenticationToken") {
        Some("e") => Reply::status(503, "maintenance"),
        _ => Reply::ok(user_information("f", &[])),
    })
    .await;
    let output = reconcile(&db, &fake, &[], &[("FETCHER_MAX_TRIES", "2")]).await;
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("1 users got no answer from Thryve"),
        "{stderr}"
    );
    let out: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(
        out["failed"],
        json!([{"end_user_id": "e", "error": "503 Service Unavailable from Thryve: maintenance (after every try)"}])
    );
    assert_eq!(
        out["changed"],
        json!([{"end_user_id": "f", "data_source_id": 8, "connected": false, "was": true}])
    );
    // Tried again with the fetcher's backoff: two tries for "e", one for "f".
    assert_eq!(fake.seen().len(), 3);
    assert_eq!(
        connections(&db).await,
        vec![
            row("e", 8, true, "webhook"),
            row("f", 8, false, "reconcile")
        ]
    );
}

#[tokio::test]
async fn reconcile_without_credentials_names_the_missing_variable() {
    let db = TestDb::new().await;
    let output = bridge(&db.url(), &["users", "reconcile"], &[]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("THRYVE_API_USER: must be set when running users reconcile"),
        "{stderr}"
    );
}
