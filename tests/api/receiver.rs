//! The receiver's contract: what each delivery is answered, and what is stored.

use std::{io::Write, time::Instant};

use serde_json::{json, Value};
use sqlx::{ConnectOptions, Connection, Row};

use crate::{
    proxy::PgProxy,
    support::{
        answer, epoch_notification, receiver_only, spawn_app, spawn_app_with, spawn_on,
        test_config, TestDb, PASSWORD, ROTATED_PASSWORD, USER,
    },
};

async fn inbox_rows(app: &crate::support::TestApp) -> Vec<sqlx::postgres::PgRow> {
    sqlx::query("SELECT * FROM thryve.inbox ORDER BY id")
        .fetch_all(&app.db.pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn every_notification_type_in_both_timestamp_forms_is_stored_typed() {
    // The server's poller off: the test reads rows (`pending`) as the receiver stored them.
    let app = spawn_app_with(receiver_only()).await;
    let cases = [
        (
            json!({"endUserId": "u1", "endUserAlias": "alias-1", "timestampType": "unix", "type": "notification.source.connect",
                "data": {"timestamp": 1765635343541_i64, "dataSourceId": 8}}),
            json!({"data_source_id": 8, "connected": true, "event_time": "2025-12-13T14:15:43.541+00:00"}),
        ),
        (
            json!({"endUserId": "u1", "timestampType": "iso", "type": "notification.source.connect",
                "data": {"timestamp": "2022-09-07T17:40:00Z", "dataSourceId": 1}}),
            json!({"data_source_id": 1, "connected": true, "event_time": "2022-09-07T17:40:00+00:00"}),
        ),
        (
            json!({"endUserId": "u1", "timestampType": "unix", "type": "notification.source.disconnect",
                "data": {"timestamp": 1765635343541_i64, "dataSourceId": 8}}),
            json!({"data_source_id": 8, "connected": false, "event_time": "2025-12-13T14:15:43.541+00:00"}),
        ),
        (
            json!({"endUserId": "u1", "timestampType": "iso", "type": "webhook.source.disconnect",
                "data": {"timestamp": "2022-09-07T17:40:00Z", "dataSourceId": 1}}),
            json!({"data_source_id": 1, "connected": false, "event_time": "2022-09-07T17:40:00+00:00"}),
        ),
        (
            json!({"endUserId": "u1", "timestampType": "iso", "type": "webhook.source.connect",
                "data": {"timestamp": "2022-09-07T17:40:00Z", "dataSourceId": 2}}),
            json!({"data_source_id": 2, "connected": true, "event_time": "2022-09-07T17:40:00+00:00"}),
        ),
        (
            json!({"endUserId": "u1", "timestampType": "unix", "type": "notification.data.epoch.createupdate",
                "data": {"startTimestamp": 1763973390000_i64, "endTimestamp": 1763973450000_i64, "dataSourceId": 8, "dataTypeIds": [3000, 1000, 3000]}}),
            json!({"data_source_id": 8, "data_type_ids": [1000, 3000], "start_time": "2025-11-24T08:36:30+00:00", "end_time": "2025-11-24T08:37:30+00:00"}),
        ),
        (
            json!({"endUserId": "u1", "timestampType": "iso", "type": "notification.data.epoch.createupdate",
                "data": {"startTimestamp": "2022-09-07T17:40:00Z", "endTimestamp": "2022-09-07T18:40:00+01:00", "dataSourceId": 1, "dataTypeIds": [3000]}}),
            json!({"data_source_id": 1, "data_type_ids": [3000], "start_time": "2022-09-07T17:40:00+00:00", "end_time": "2022-09-07T17:40:00+00:00"}),
        ),
        (
            json!({"endUserId": "u1", "timestampType": "unix", "type": "notification.data.daily.createupdate",
                "data": {"startDay": 1763510400000_i64, "endDay": 1766102400000_i64, "dataSourceId": 8, "dataTypeIds": [2000, 2001, 3001]}}),
            json!({"data_source_id": 8, "data_type_ids": [2000, 2001, 3001], "start_day": "2025-11-19", "end_day": "2025-12-19"}),
        ),
        (
            json!({"endUserId": "u1", "timestampType": "iso", "type": "notification.data.daily.createupdate",
                "data": {"startDay": "2022-09-07", "endDay": "2022-09-07", "dataSourceId": 1, "dataTypeIds": [2000]}}),
            json!({"data_source_id": 1, "data_type_ids": [2000], "start_day": "2022-09-07", "end_day": "2022-09-07"}),
        ),
    ];
    for (body, expected) in cases {
        let (status, ack) = answer(app.post_json(&body).await).await;
        assert_eq!(
            (status, ack["outcome"].as_str()),
            (200, Some("stored")),
            "{body}"
        );
        let row: Value = sqlx::query_scalar(
            "SELECT jsonb_strip_nulls(jsonb_build_object(
                 'data_source_id', data_source_id, 'data_type_ids', data_type_ids,
                 'start_time', start_time, 'end_time', end_time, 'start_day', start_day, 'end_day', end_day,
                 'connected', connected, 'event_time', event_time))
             FROM thryve.inbox WHERE id = $1 AND status = 'pending' AND end_user_id = 'u1'
               AND event_type = $2 AND payload = $3",
        )
        .bind(ack["inbox_id"].as_i64().unwrap())
        .bind(body["type"].as_str().unwrap())
        .bind(&body)
        .fetch_one(&app.db.pool)
        .await
        .unwrap();
        // Postgres renders timestamps in the session zone; compare instants, not strings.
        for (key, want) in expected.as_object().unwrap() {
            let got = &row[key];
            match (want.as_str(), got.as_str()) {
                (Some(w), Some(g)) if w.contains('T') => assert_eq!(
                    chrono::DateTime::parse_from_rfc3339(g).unwrap(),
                    chrono::DateTime::parse_from_rfc3339(w).unwrap(),
                    "{key} of {body}"
                ),
                _ => assert_eq!(got, want, "{key} of {body}"),
            }
        }
    }
    let alias: Option<String> =
        sqlx::query_scalar("SELECT end_user_alias FROM thryve.inbox WHERE id = 1")
            .fetch_one(&app.db.pool)
            .await
            .unwrap();
    assert_eq!(alias.as_deref(), Some("alias-1"));
}

#[tokio::test]
async fn each_bad_field_is_quarantined_with_a_reason_naming_it() {
    let app = spawn_app().await;
    let epoch = |data: Value| json!({"endUserId": "u", "timestampType": "unix", "type": "notification.data.epoch.createupdate", "data": data});
    let cases = [
        (
            epoch(json!({"startTimestamp": 1, "endTimestamp": 2, "dataTypeIds": [1]})),
            "data.dataSourceId: missing",
        ),
        (
            epoch(
                json!({"startTimestamp": "yesterday", "endTimestamp": 2, "dataSourceId": 1, "dataTypeIds": [1]}),
            ),
            "data.startTimestamp",
        ),
        (
            json!({"endUserId": "u", "timestampType": "iso", "type": "notification.data.epoch.createupdate",
                "data": {"startTimestamp": "2022-13-45T99:00:00Z", "endTimestamp": "2022-09-07T17:40:00Z", "dataSourceId": 1, "dataTypeIds": [1]}}),
            "data.startTimestamp",
        ),
        (
            epoch(
                json!({"startTimestamp": 2000, "endTimestamp": 1000, "dataSourceId": 1, "dataTypeIds": [1]}),
            ),
            "data.startTimestamp",
        ),
        (
            json!({"endUserId": "u", "timestampType": "iso", "type": "notification.data.daily.createupdate",
                "data": {"startDay": "2022-09-08", "endDay": "2022-09-07", "dataSourceId": 1, "dataTypeIds": [1]}}),
            "data.startDay",
        ),
        (
            json!({"endUserId": "u", "timestampType": "local", "type": "notification.source.connect",
                "data": {"timestamp": 1, "dataSourceId": 1}}),
            "timestampType",
        ),
        (
            json!({"timestampType": "unix", "type": "notification.source.connect", "data": {"timestamp": 1, "dataSourceId": 1}}),
            "endUserId: missing",
        ),
        (
            json!({"endUserId": "u", "timestampType": "unix", "type": "notification.source.connect", "data": {"dataSourceId": 1}}),
            "data.timestamp: missing",
        ),
        (
            epoch(json!({"startTimestamp": 1, "endTimestamp": 2, "dataSourceId": 1})),
            "data.dataTypeIds: missing",
        ),
        (
            epoch(
                json!({"startTimestamp": 1, "endTimestamp": 2, "dataSourceId": "8", "dataTypeIds": [1]}),
            ),
            "data.dataSourceId",
        ),
        (
            epoch(
                json!({"startTimestamp": 1, "endTimestamp": 2, "dataSourceId": 1, "dataTypeIds": [9_999_999_999_i64]}),
            ),
            "data.dataTypeIds[0]",
        ),
        (
            json!({"endUserId": "u", "timestampType": "unix", "type": "notification.data.daily.createupdate", "data": [1]}),
            "data: expected an object",
        ),
    ];
    for (body, field) in cases {
        let (status, ack) = answer(app.post_json(&body).await).await;
        assert_eq!(
            (status, ack["outcome"].as_str()),
            (200, Some("quarantined")),
            "{body}"
        );
        let (stored_status, error): (String, String) =
            sqlx::query_as("SELECT status, error FROM thryve.inbox WHERE id = $1")
                .bind(ack["inbox_id"].as_i64().unwrap())
                .fetch_one(&app.db.pool)
                .await
                .unwrap();
        assert_eq!(stored_status, "quarantined");
        assert!(
            error.starts_with(field),
            "reason {error:?} should name {field:?}"
        );
    }
}

#[tokio::test]
async fn unknown_type_is_stored_as_ignored() {
    let app = spawn_app().await;
    let body = json!({"endUserId": "u9", "type": "notification.data.measurement.createupdate", "data": {"x": 1}});
    let (status, ack) = answer(app.post_json(&body).await).await;
    assert_eq!((status, ack["outcome"].as_str()), (200, Some("ignored")));
    let row = &inbox_rows(&app).await[0];
    assert_eq!(row.get::<String, _>("status"), "ignored");
    assert_eq!(row.get::<String, _>("end_user_id"), "u9");
    assert_eq!(row.get::<Value, _>("payload"), body);
}

#[tokio::test]
async fn bodies_that_are_not_json_objects_get_400_and_nothing_is_stored() {
    let app = spawn_app().await;
    for body in [
        "not json",
        "[1,2]",
        "\"text\"",
        "",
        "{\"a\":",
        "{\"a\":\"nul \\u0000 here\"}",
    ] {
        let (status, error) = answer(app.post(body).await).await;
        assert_eq!(status, 400, "{body:?}");
        assert!(
            error["error"].as_str().unwrap().starts_with("body"),
            "{error}"
        );
    }
    let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
    assert_eq!(app.post(deep).await.status(), 400);
    assert!(inbox_rows(&app).await.is_empty());
}

#[tokio::test]
async fn missing_or_wrong_credentials_get_401_and_nothing_is_stored() {
    let app = spawn_app().await;
    let body = epoch_notification("u", 1, 2, &[1]).to_string();
    let attempts = [
        app.webhook().body(body.clone()),
        app.webhook()
            .basic_auth(USER, Some("wrong"))
            .body(body.clone()),
        app.webhook()
            .basic_auth("someone", Some(PASSWORD))
            .body(body.clone()),
        app.webhook().bearer_auth(PASSWORD).body(body.clone()),
    ];
    for attempt in attempts {
        let response = attempt.send().await.unwrap();
        assert_eq!(
            response.headers()["www-authenticate"],
            "Basic realm=\"thryve-bridge\""
        );
        let (status, error) = answer(response).await;
        assert_eq!(status, 401);
        assert_eq!(error["error"], "missing or wrong credentials");
    }
    assert!(inbox_rows(&app).await.is_empty());
}

#[tokio::test]
async fn both_passwords_work_while_credentials_rotate() {
    let app = spawn_app().await;
    for (i, password) in [PASSWORD, ROTATED_PASSWORD].into_iter().enumerate() {
        let body = epoch_notification("u", 1, 2 + i as i64, &[1]).to_string();
        let response = app
            .webhook()
            .basic_auth(USER, Some(password))
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(answer(response).await.1["outcome"], "stored");
    }
}

#[tokio::test]
async fn a_fixed_header_credential_is_accepted() {
    let mut config = test_config();
    // The fixed header as the only credential: the test is about it.
    config.receiver.webhook_basic_auth = None;
    config.receiver.webhook_auth_header = Some(thryve_bridge::config::Secret::new(
        "X-Thryve-Key: k-old, X-Thryve-Key: k-new",
    ));
    let app = spawn_app_with(config).await;
    let body = epoch_notification("u", 1, 2, &[1]).to_string();
    let ok = app
        .webhook()
        .header("x-thryve-key", "k-new")
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    let bad = app
        .webhook()
        .header("x-thryve-key", "k-other")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 401);
}

#[tokio::test]
async fn oversize_bodies_get_413_and_unknown_encodings_415() {
    let mut config = test_config();
    // 4 KiB instead of 1 MiB, so that oversize bodies are small to send.
    config.receiver.max_body_bytes = 4096;
    let app = spawn_app_with(config).await;
    let mut big = epoch_notification("u", 1, 2, &[1]);
    big["padding"] = json!("x".repeat(5000));
    let (status, error) = answer(app.post_json(&big).await).await;
    assert_eq!(status, 413);
    assert_eq!(error["error"], "body is larger than the 4096-byte limit");
    // Small on the wire, large once inflated: refused while inflating.
    let packed = zstd::encode_all(big.to_string().as_bytes(), 3).unwrap();
    assert!(packed.len() < 4096);
    let response = app
        .webhook()
        .basic_auth(USER, Some(PASSWORD))
        .header("content-encoding", "zstd")
        .body(packed)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 413);
    let response = app
        .webhook()
        .basic_auth(USER, Some(PASSWORD))
        .header("content-encoding", "br")
        .body("x")
        .send()
        .await
        .unwrap();
    let (status, error) = answer(response).await;
    assert_eq!(status, 415);
    assert!(error["error"].as_str().unwrap().contains("\"br\""));
    assert!(inbox_rows(&app).await.is_empty());
}

#[tokio::test]
async fn compressed_notifications_are_decoded() {
    let app = spawn_app().await;
    let body = epoch_notification("u", 1, 2, &[1]).to_string();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(body.as_bytes()).unwrap();
    for (encoding, bytes) in [
        ("zstd", zstd::encode_all(body.as_bytes(), 3).unwrap()),
        ("gzip", gz.finish().unwrap()),
    ] {
        let response = app
            .webhook()
            .basic_auth(USER, Some(PASSWORD))
            .header("content-encoding", encoding)
            .body(bytes)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{encoding}");
    }
    let rows = inbox_rows(&app).await;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].get::<i32, _>("delivery_count"), 2);
    let corrupt = app
        .webhook()
        .basic_auth(USER, Some(PASSWORD))
        .header("content-encoding", "zstd")
        .body("garbage")
        .send()
        .await
        .unwrap();
    assert_eq!(corrupt.status(), 400);
}

#[tokio::test]
async fn a_retry_with_reordered_keys_and_other_whitespace_is_a_duplicate() {
    let app = spawn_app().await;
    let first = r#"{"endUserId":"u","timestampType":"unix","type":"notification.data.epoch.createupdate","data":{"startTimestamp":1,"endTimestamp":2,"dataSourceId":8,"dataTypeIds":[3000]}}"#;
    let retry = "{ \"data\" : { \"dataTypeIds\" : [3000], \"dataSourceId\": 8, \"endTimestamp\": 2, \"startTimestamp\": 1 },\n  \"type\": \"notification.data.epoch.createupdate\", \"timestampType\": \"unix\", \"endUserId\": \"u\" }";
    let (_, a) = answer(app.post(first).await).await;
    let (_, b) = answer(app.post(retry).await).await;
    assert_eq!(a["outcome"], "stored");
    assert_eq!(b["outcome"], "duplicate");
    assert_eq!(a["inbox_id"], b["inbox_id"]);
    let rows = inbox_rows(&app).await;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].get::<i32, _>("delivery_count"), 2);
    assert!(
        rows[0].get::<chrono::DateTime<chrono::Utc>, _>("last_received_at")
            >= rows[0].get::<chrono::DateTime<chrono::Utc>, _>("first_received_at")
    );
}

#[tokio::test]
async fn twenty_concurrent_identical_deliveries_make_one_row_counted_twenty_times() {
    let app = spawn_app().await;
    let body = epoch_notification("racer", 10, 20, &[1000]).to_string();
    let requests = (0..20).map(|_| {
        let request = app
            .webhook()
            .basic_auth(USER, Some(PASSWORD))
            .body(body.clone());
        async move { request.send().await.unwrap() }
    });
    let answers = futures_join_all(requests).await;
    let mut outcomes = Vec::new();
    for response in answers {
        let (status, ack) = answer(response).await;
        assert_eq!(status, 200);
        outcomes.push(ack["outcome"].as_str().unwrap().to_owned());
    }
    assert_eq!(
        outcomes.iter().filter(|o| *o == "stored").count(),
        1,
        "{outcomes:?}"
    );
    assert_eq!(outcomes.iter().filter(|o| *o == "duplicate").count(), 19);
    let rows = inbox_rows(&app).await;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].get::<i32, _>("delivery_count"), 20);
}

/// Runs futures concurrently on the test's runtime (each on its own task).
async fn futures_join_all<F>(futures: impl Iterator<Item = F>) -> Vec<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futures.map(tokio::spawn).collect();
    let mut out = Vec::new();
    for h in handles {
        out.push(h.await.unwrap());
    }
    out
}

#[tokio::test]
async fn a_duplicate_of_a_processed_row_puts_it_back_to_pending() {
    // The server's poller off: it would process the re-armed row while the test looks.
    let app = spawn_app_with(receiver_only()).await;
    let body = epoch_notification("u", 1, 2, &[1]);
    let (_, ack) = answer(app.post_json(&body).await).await;
    sqlx::query("UPDATE thryve.inbox SET status = 'processed', processed_at = now() WHERE id = $1")
        .bind(ack["inbox_id"].as_i64())
        .execute(&app.db.pool)
        .await
        .unwrap();
    let (_, again) = answer(app.post_json(&body).await).await;
    assert_eq!(again["outcome"], "duplicate");
    let row = &inbox_rows(&app).await[0];
    assert_eq!(row.get::<String, _>("status"), "pending");
    assert!(row
        .get::<Option<chrono::DateTime<chrono::Utc>>, _>("processed_at")
        .is_none());
    assert_eq!(row.get::<i32, _>("delivery_count"), 2);
}

#[tokio::test]
async fn a_duplicate_of_a_quarantined_row_stays_quarantined() {
    let app = spawn_app().await;
    let body = json!({"endUserId": "u", "type": "notification.source.connect", "timestampType": "unix", "data": {}});
    let (_, first) = answer(app.post_json(&body).await).await;
    let (_, again) = answer(app.post_json(&body).await).await;
    assert_eq!(
        (first["outcome"].as_str(), again["outcome"].as_str()),
        (Some("quarantined"), Some("duplicate"))
    );
    assert_eq!(
        inbox_rows(&app).await[0].get::<String, _>("status"),
        "quarantined"
    );
}

#[tokio::test]
async fn database_outage_gives_503_with_retry_after_and_the_server_recovers() {
    let db = TestDb::new().await;
    let upstream = db.options.get_host().to_owned();
    let port = db.options.get_port();
    let upstream: std::net::SocketAddr = tokio::net::lookup_host((upstream.as_str(), port))
        .await
        .unwrap()
        .next()
        .unwrap();
    let proxy = PgProxy::start(upstream).await;
    let mut config = test_config();
    config.receiver.ack_deadline_ms = 500;
    let pool = thryve_bridge::db::pool(
        db.options
            .clone()
            .host("127.0.0.1")
            .port(proxy.addr.port())
            .to_url_lossy()
            .as_str(),
        4,
        config.receiver.ack_deadline(),
    )
    .unwrap();
    let app = spawn_on(db, pool, config).await;
    assert_eq!(
        app.post_json(&epoch_notification("u", 1, 2, &[1]))
            .await
            .status(),
        200
    );

    proxy.down();
    let started = Instant::now();
    let response = app.post_json(&epoch_notification("u", 3, 4, &[1])).await;
    assert!(
        started.elapsed().as_millis() < 1500,
        "answered within the deadline, not hung"
    );
    assert_eq!(response.headers()["retry-after"], "5");
    let (status, error) = answer(response).await;
    assert_eq!(status, 503);
    assert!(
        error["error"].as_str().unwrap().contains("resend"),
        "{error}"
    );
    assert_eq!(app.get_status("/readyz").await, 503);
    assert_eq!(app.get_status("/healthz").await, 200);

    proxy.up();
    let (status, ack) = answer(app.post_json(&epoch_notification("u", 3, 4, &[1])).await).await;
    assert_eq!((status, ack["outcome"].as_str()), (200, Some("stored")));
    assert_eq!(app.get_status("/readyz").await, 200);
    assert_eq!(inbox_rows(&app).await.len(), 2);
}

#[tokio::test]
async fn an_unreachable_database_url_gives_503_not_a_crash() {
    let db = TestDb::new().await;
    // A port nothing listens on: bind one, note it, close it.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut config = test_config();
    config.receiver.ack_deadline_ms = 300;
    let pool = thryve_bridge::db::pool(
        &format!("postgres://postgres@127.0.0.1:{port}/none"),
        2,
        config.receiver.ack_deadline(),
    )
    .unwrap();
    let app = spawn_on(db, pool, config).await;
    let response = app.post_json(&epoch_notification("u", 1, 2, &[1])).await;
    assert_eq!(response.status(), 503);
    assert!(response.headers().contains_key("retry-after"));
    assert_eq!(app.get_status("/readyz").await, 503);
}

#[tokio::test]
async fn a_commit_that_misses_the_ack_deadline_gets_503_and_the_pool_recovers() {
    let mut config = test_config();
    config.receiver.ack_deadline_ms = 400;
    let app = spawn_app_with(config).await;
    let mut locker = sqlx::PgConnection::connect(&app.db.url()).await.unwrap();
    let mut tx = locker.begin().await.unwrap();
    sqlx::query("LOCK TABLE thryve.inbox IN EXCLUSIVE MODE")
        .execute(&mut *tx)
        .await
        .unwrap();

    let started = Instant::now();
    let response = app.post_json(&epoch_notification("slow", 1, 2, &[1])).await;
    let waited = started.elapsed();
    assert_eq!(response.status(), 503);
    assert!(
        waited.as_millis() >= 400 && waited.as_millis() < 1400,
        "{waited:?}"
    );
    let (_, error) = answer(response).await;
    assert!(
        error["error"]
            .as_str()
            .unwrap()
            .contains("400 ms ack deadline"),
        "{error}"
    );

    tx.rollback().await.unwrap();
    // The abandoned write commits once the lock is gone; the retry finds it.
    let (status, ack) = answer(app.post_json(&epoch_notification("slow", 1, 2, &[1])).await).await;
    assert_eq!(status, 200);
    assert!(
        matches!(ack["outcome"].as_str(), Some("duplicate" | "stored")),
        "{ack}"
    );
    for i in 0..10 {
        assert_eq!(
            app.post_json(&epoch_notification("after", i, i + 1, &[1]))
                .await
                .status(),
            200
        );
    }
}

#[tokio::test]
async fn readyz_is_503_until_the_database_is_migrated() {
    let db = TestDb::unmigrated().await;
    let pool = thryve_bridge::db::pool(&db.url(), 2, std::time::Duration::from_secs(2)).unwrap();
    let mut app = spawn_on(db, pool.clone(), test_config()).await;
    let (status, body) = answer(app.client.get(app.url("/readyz")).send().await.unwrap()).await;
    assert_eq!(status, 503);
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("thryve-bridge migrate"),
        "{body}"
    );
    thryve_bridge::db::migrate(&pool).await.unwrap();
    assert_eq!(app.get_status("/readyz").await, 200);
    app.stop().await;
}
