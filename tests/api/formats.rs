//! The other delivery formats: compressed data pushes, legacy `sourceUpdate` (JSON and form), HMAC-signed deliveries.

use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;
use thryve_bridge::http::hmac::{HmacMode, Layout, LayoutSetting};

use crate::support::{
    answer, gzip, receiver_only, signed_config, spawn_app, spawn_app_with, test_config,
    thryve_wire, zstd, TestApp, HMAC_SECRET, PASSWORD, USER,
};

/// The row's identity columns and its typed columns (nulls left out, instants as epoch ms).
async fn stored_row(app: &TestApp, inbox_id: &Value) -> Value {
    sqlx::query_scalar(
        "SELECT jsonb_strip_nulls(jsonb_build_object(
             'status', status, 'error', error, 'event_type', event_type,
             'end_user_id', end_user_id, 'end_user_alias', end_user_alias, 'payload', payload,
             'data_source_id', data_source_id, 'data_type_ids', data_type_ids,
             'start_ms', (extract(epoch FROM start_time) * 1000)::bigint,
             'end_ms', (extract(epoch FROM end_time) * 1000)::bigint,
             'start_day', start_day, 'end_day', end_day, 'connected', connected,
             'event_ms', (extract(epoch FROM event_time) * 1000)::bigint))
         FROM thryve.inbox WHERE id = $1",
    )
    .bind(inbox_id.as_i64().expect("an inbox id"))
    .fetch_one(&app.db.pool)
    .await
    .unwrap()
}

fn data_push(event_type: &str, form: &str, value: &str) -> Value {
    let (start, end, day) = if form == "unix" {
        (
            json!(1763083020000_i64),
            json!(1763084220000_i64),
            json!(1765584000000_i64),
        )
    } else {
        (
            json!("2025-11-14T01:17:00Z"),
            json!("2025-11-14T01:37:00Z"),
            json!("2025-12-13"),
        )
    };
    let data = if event_type.contains("epoch") {
        json!([{"dataSourceId": 8, "dataSourceName": "Nokia", "epochData": [
            {"startTimestamp": start, "endTimestamp": end, "timezoneOffset": 0, "dataTypeId": 2005, "value": value},
            {"startTimestamp": start, "timezoneOffset": 0, "dataTypeId": 1200, "value": "102"}]}])
    } else {
        json!([{"dataSourceId": 8, "dataSourceName": "Nokia", "dailyData": [
            {"day": day, "timezoneOffset": 0, "dataTypeId": 3001, "value": value}]}])
    };
    json!({"endUserId": "push-user", "endUserAlias": "push-alias", "timestampType": form,
           "type": event_type, "data": data})
}

#[tokio::test]
async fn data_pushes_of_each_type_base64_zstd_or_gzip_are_stored_without_typed_columns() {
    // The server's poller off: the test reads rows (`pending`) as the receiver stored them.
    let app = spawn_app_with(receiver_only()).await;
    for event_type in [
        "event.data.epoch.create",
        "event.data.epoch.update",
        "event.data.daily.create",
        "event.data.daily.update",
    ] {
        for (encoding, form) in [("zstd", "unix"), ("gzip", "iso")] {
            let body = data_push(event_type, form, &format!("{encoding}-{form}"));
            let bytes = body.to_string().into_bytes();
            let packed = if encoding == "zstd" {
                thryve_wire(&bytes)
            } else {
                gzip(&bytes)
            };
            let (status, ack) = answer(app.post_encoded(encoding, packed).await).await;
            assert_eq!(
                (status, ack["outcome"].as_str()),
                (200, Some("stored")),
                "{event_type} {encoding}"
            );
            // Pushed values do not fit the typed columns, so they stay null and the poller
            // reads the payload.
            assert_eq!(
                stored_row(&app, &ack["inbox_id"]).await,
                json!({"status": "pending", "event_type": event_type, "end_user_id": "push-user",
                       "end_user_alias": "push-alias", "payload": body}),
                "{event_type} {encoding}"
            );
        }
    }
    assert_eq!(app.inbox_count().await, 8);
}

#[tokio::test]
async fn a_data_push_with_a_bad_point_is_quarantined_naming_it() {
    let app = spawn_app().await;
    let mut body = data_push("event.data.epoch.update", "unix", "v");
    body["data"][0]["epochData"][1]["value"] = json!(true);
    let (status, ack) = answer(
        app.post_encoded("zstd", thryve_wire(body.to_string().as_bytes()))
            .await,
    )
    .await;
    assert_eq!(
        (status, ack["outcome"].as_str()),
        (200, Some("quarantined"))
    );
    let row = stored_row(&app, &ack["inbox_id"]).await;
    assert_eq!(
        row["error"],
        "data[0].epochData[1].value: expected a string or a number, got a boolean"
    );
}

#[tokio::test]
async fn a_corrupt_zstd_stream_gets_400_and_nothing_is_stored() {
    let app = spawn_app().await;
    let packed = zstd(
        data_push("event.data.daily.update", "unix", "59")
            .to_string()
            .as_bytes(),
    );
    let truncated = packed[..packed.len() - 6].to_vec();
    let mut flipped = packed.clone();
    let middle = flipped.len() / 2;
    flipped[middle] ^= 0xff;
    for (name, body) in [
        ("truncated", truncated),
        ("flipped", flipped),
        ("garbage", b"(\xb5/\xfd not really zstd".to_vec()),
    ] {
        let (status, error) = answer(app.post_encoded("zstd", body).await).await;
        assert_eq!(status, 400, "{name}");
        assert!(
            error["error"]
                .as_str()
                .unwrap()
                .starts_with("body is not valid zstd")
                || error["error"]
                    .as_str()
                    .unwrap()
                    .starts_with("body is not JSON"),
            "{name}: {error}"
        );
    }
    assert_eq!(app.inbox_count().await, 0);
}

#[tokio::test]
async fn a_zstd_decompression_bomb_gets_413_and_nothing_is_stored() {
    let app = spawn_app().await;
    let bomb = zstd::encode_all(&vec![b' '; 64 * 1024 * 1024][..], 1).unwrap();
    assert!(bomb.len() < 64 * 1024, "{} bytes on the wire", bomb.len());
    let (status, error) = answer(app.post_encoded("zstd", bomb).await).await;
    assert_eq!(status, 413);
    assert_eq!(
        error["error"],
        "decompressed body is larger than the 1048576-byte limit"
    );
    assert_eq!(app.inbox_count().await, 0);
}

fn form_body(update: &Value) -> String {
    form_urlencoded::Serializer::new(String::new())
        .append_pair("sourceUpdate", &update.to_string())
        .append_pair("other", "ignored")
        .finish()
}

async fn post_form(app: &TestApp, body: String) -> reqwest::Response {
    app.webhook()
        .basic_auth(USER, Some(PASSWORD))
        .header(
            "content-type",
            "application/x-www-form-urlencoded; charset=UTF-8",
        )
        .body(body)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn each_legacy_shape_is_stored_the_same_as_json_or_as_a_form() {
    // The server's poller off: the test reads rows (`pending`) as the receiver stored them.
    let app = spawn_app_with(receiver_only()).await;
    let user = json!({"authenticationToken": "legacy-user", "partnerUserID": "partner-1", "dataSource": 1});
    let with = |extra: Value| {
        let mut update = user.clone();
        for (k, v) in extra.as_object().unwrap() {
            update[k] = v.clone();
        }
        update
    };
    let daily = json!({"startDay": "2020-02-26", "endDay": "2020-02-27", "dailyDynamicValueTypes": [2001, 2000],
        "startTimestampUnix": 1582675200000_i64, "endTimestampUnix": 1582761600000_i64});
    let epoch = json!({"startTimestamp": "2020-02-26T12:38:00Z", "endTimestamp": "2020-02-26T16:55:00Z",
        "dynamicValueTypes": [3000, 1012], "startTimestampUnix": 1582720680000_i64, "endTimestampUnix": 1582736100000_i64});
    let cases = [
        (
            "connect",
            with(json!({"connectionStatus": "NEW", "createdAt": "2020-02-26T16:54:30Z"})),
            json!({"status": "pending", "data_source_id": 1, "connected": true, "event_ms": 1582736070000_i64}),
        ),
        (
            "disconnect",
            with(json!({"connectionStatus": "DELETED", "createdAt": "2020-02-26T16:54:30Z"})),
            json!({"status": "pending", "data_source_id": 1, "connected": false, "event_ms": 1582736070000_i64}),
        ),
        (
            "daily span",
            with(json!({"createdAt": "2020-02-26T16:54:30Z", "/v5/dailyDynamicValues": daily})),
            json!({"status": "pending", "data_source_id": 1, "data_type_ids": [2000, 2001],
                   "start_day": "2020-02-26", "end_day": "2020-02-27"}),
        ),
        (
            "epoch span",
            with(json!({"createdAt": "2020-02-26T16:54:30Z", "/v5/dynamicEpochValues": epoch})),
            json!({"status": "pending", "data_source_id": 1, "data_type_ids": [1012, 3000],
                   "start_ms": 1582720680000_i64, "end_ms": 1582736100000_i64}),
        ),
        (
            // Two spans do not fit the typed columns: left null, the poller reads the payload.
            "both spans",
            with(
                json!({"createdAt": "2020-02-26T16:54:30Z", "/v5/dailyDynamicValues": daily,
                        "/v5/dynamicEpochValues": epoch}),
            ),
            json!({"status": "pending"}),
        ),
        (
            "no part",
            with(json!({"createdAt": "2020-02-26T16:54:30Z"})),
            json!({"status": "quarantined", "error": "sourceUpdate: names none of \
                   /v5/dailyDynamicValues, /v5/dynamicEpochValues, updateType, connectionStatus: nothing to do"}),
        ),
    ];
    for (name, update, expected) in cases {
        let body = json!({ "sourceUpdate": update });
        let (status, first) = answer(app.post_json(&body).await).await;
        assert_eq!(status, 200, "{name}");
        let mut expected = expected;
        expected["event_type"] = json!("sourceUpdate");
        expected["end_user_id"] = json!("legacy-user");
        expected["end_user_alias"] = json!("partner-1");
        expected["payload"] = body.clone();
        assert_eq!(
            stored_row(&app, &first["inbox_id"]).await,
            expected,
            "{name}"
        );
        // The form spelling of the same delivery is the same content.
        let (status, again) = answer(post_form(&app, form_body(&update)).await).await;
        assert_eq!(
            (status, again["outcome"].as_str()),
            (200, Some("duplicate")),
            "{name}"
        );
        assert_eq!(again["inbox_id"], first["inbox_id"], "{name}");
    }
    assert_eq!(app.inbox_count().await, 6);
}

#[tokio::test]
async fn a_form_encoded_legacy_body_is_stored_on_its_own_and_equals_its_json() {
    let app = spawn_app().await;
    let update = json!({"authenticationToken": "form-user", "dataSource": 8,
        "connectionStatus": "NEW", "createdAt": "2024-05-01T10:00:00Z"});
    let (status, ack) = answer(post_form(&app, form_body(&update)).await).await;
    assert_eq!((status, ack["outcome"].as_str()), (200, Some("stored")));
    let row = stored_row(&app, &ack["inbox_id"]).await;
    assert_eq!(row["payload"], json!({ "sourceUpdate": update }));
    assert_eq!(row["connected"], true);
    // The same delivery as JSON under a form content-type is read as JSON, not refused.
    let mislabelled = json!({ "sourceUpdate": update }).to_string();
    let (status, again) = answer(post_form(&app, mislabelled).await).await;
    assert_eq!(
        (status, again["outcome"].as_str()),
        (200, Some("duplicate"))
    );
}

#[tokio::test]
async fn form_bodies_without_a_json_source_update_get_400_and_nothing_is_stored() {
    let app = spawn_app().await;
    for (body, message) in [
        (
            "other=1".to_owned(),
            "form body: no sourceUpdate field (content-type is application/x-www-form-urlencoded)",
        ),
        (String::new(), "form body: no sourceUpdate field"),
        (
            "sourceUpdate=%7Bnot+json".to_owned(),
            "form body: field sourceUpdate is not JSON",
        ),
    ] {
        let (status, error) = answer(post_form(&app, body.clone()).await).await;
        assert_eq!(status, 400, "{body:?}");
        assert!(
            error["error"].as_str().unwrap().starts_with(message),
            "{body:?}: {error}"
        );
    }
    assert_eq!(app.inbox_count().await, 0);
}

/// HMAC-SHA256 computed here with the `hmac` crate directly, not with the bridge's helper.
fn signature(message: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(HMAC_SECRET.as_bytes()).unwrap();
    mac.update(message);
    hex::encode(mac.finalize().into_bytes())
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

fn signed(app: &TestApp, body: &[u8], timestamp: &str, signature: &str) -> reqwest::RequestBuilder {
    app.webhook()
        .header("content-type", "application/json")
        .header("x-hmac-timestamp", timestamp)
        .header("x-hmac-signature", signature)
        .header("x-hmac-algorithm", "hmac-sha256")
        .body(body.to_vec())
}

#[tokio::test]
async fn a_signed_push_is_accepted_with_the_default_layout_over_the_wire_bytes() {
    let app = spawn_app_with(signed_config(
        LayoutSetting::Fixed(Layout::WIRE_THEN_TIMESTAMP),
        HmacMode::Enforce,
    ))
    .await;
    let body = thryve_wire(
        data_push("event.data.epoch.update", "unix", "true")
            .to_string()
            .as_bytes(),
    );
    let ts = now_ms().to_string();
    let good = signature(&[&body[..], ts.as_bytes()].concat());
    let response = signed(&app, &body, &ts, &good.to_ascii_uppercase())
        .header("content-encoding", "zstd")
        .send()
        .await
        .unwrap();
    let (status, ack) = answer(response).await;
    assert_eq!((status, ack["outcome"].as_str()), (200, Some("stored")));
    // A signature over the decompressed JSON is another layout (json+timestamp).
    let json = data_push("event.data.epoch.update", "unix", "false").to_string();
    let packed = thryve_wire(json.as_bytes());
    let over_json = signature(&[json.as_bytes(), ts.as_bytes()].concat());
    let response = signed(&app, &packed, &ts, &over_json)
        .header("content-encoding", "zstd")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    assert_eq!(app.inbox_count().await, 1);
}

#[tokio::test]
async fn the_configured_layout_is_the_one_checked() {
    let app = spawn_app_with(signed_config(
        LayoutSetting::Fixed("timestamp.body".parse().unwrap()),
        HmacMode::Enforce,
    ))
    .await;
    let body = data_push("event.data.daily.create", "unix", "59").to_string();
    let ts = now_ms().to_string();
    let dotted = signature(format!("{ts}.{body}").as_bytes());
    let default_layout = signature(format!("{body}{ts}").as_bytes());
    let ok = signed(&app, body.as_bytes(), &ts, &dotted)
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    let wrong = signed(&app, body.as_bytes(), &ts, &default_layout)
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
}

#[tokio::test]
async fn bad_or_missing_hmac_gets_401_naming_the_problem_and_nothing_is_stored() {
    let app = spawn_app_with(signed_config(
        LayoutSetting::Fixed(Layout::WIRE_THEN_TIMESTAMP),
        HmacMode::Enforce,
    ))
    .await;
    let body = data_push("event.data.daily.update", "unix", "59").to_string();
    let body = body.as_bytes();
    let ts = now_ms().to_string();
    let sign_at = |ts: &str| signature(&[body, ts.as_bytes()].concat());
    let good = sign_at(&ts);
    let stale = (now_ms() - 600_000).to_string();
    let future = (now_ms() + 600_000).to_string();
    let bomb = zstd::encode_all(&vec![b' '; 64 * 1024 * 1024][..], 1).unwrap();
    let attempts = [
        (
            "wrong signature",
            signed(&app, body, &ts, &signature(b"something else")),
            "HMAC signature refused: x-hmac-signature does not match",
        ),
        (
            "tampered body",
            signed(&app, &[body, b" "].concat(), &ts, &good),
            "HMAC signature refused: x-hmac-signature does not match",
        ),
        (
            "missing signature",
            app.webhook()
                .header("x-hmac-timestamp", &ts)
                .body(body.to_vec()),
            "HMAC signature refused: missing x-hmac-signature header",
        ),
        (
            "missing timestamp",
            app.webhook()
                .header("x-hmac-signature", &good)
                .body(body.to_vec()),
            "HMAC signature refused: missing x-hmac-timestamp header",
        ),
        (
            "no headers",
            app.webhook().body(body.to_vec()),
            "HMAC signature refused: missing x-hmac-signature header",
        ),
        (
            "bad hex",
            signed(&app, body, &ts, &format!("{}zz", &good[..62])),
            "HMAC signature refused: x-hmac-signature is not 64 hex characters",
        ),
        (
            "stale timestamp",
            signed(&app, body, &stale, &sign_at(&stale)),
            "s old, outside the 300 s window",
        ),
        (
            "future timestamp",
            signed(&app, body, &future, &sign_at(&future)),
            "s in the future, outside the 300 s window",
        ),
        (
            "timestamp in seconds",
            signed(&app, body, &ts[..10], &sign_at(&ts[..10])),
            "s old, outside the 300 s window",
        ),
        (
            // Inflating stops at the limit; a body that does not decode can only have been
            // signed over the wire bytes, and this one was not.
            "unsigned bomb",
            app.webhook()
                .header("content-encoding", "zstd")
                .header("x-hmac-timestamp", &ts)
                .header("x-hmac-signature", &good)
                .body(bomb),
            "HMAC signature refused: x-hmac-signature does not match",
        ),
    ];
    for (name, request, message) in attempts {
        let response = request.send().await.unwrap();
        assert!(
            !response.headers().contains_key("www-authenticate"),
            "{name}: HMAC refusals do not invite Basic credentials"
        );
        let (status, error) = answer(response).await;
        assert_eq!(status, 401, "{name}");
        assert!(
            error["error"].as_str().unwrap().contains(message),
            "{name}: {error}"
        );
    }
    assert_eq!(app.inbox_count().await, 0);
    let ok = signed(&app, body, &ts, &good).send().await.unwrap();
    assert_eq!(ok.status(), 200);
}

#[tokio::test]
async fn with_basic_and_hmac_configured_both_are_required() {
    let mut config = signed_config(
        LayoutSetting::Fixed(Layout::WIRE_THEN_TIMESTAMP),
        HmacMode::Enforce,
    );
    config.receiver.webhook_basic_auth = test_config().receiver.webhook_basic_auth;
    let app = spawn_app_with(config).await;
    let body = data_push("event.data.daily.update", "unix", "59").to_string();
    let ts = now_ms().to_string();
    let good = signature(&[body.as_bytes(), ts.as_bytes()].concat());

    let basic_only = app
        .webhook()
        .basic_auth(USER, Some(PASSWORD))
        .body(body.clone())
        .send()
        .await
        .unwrap();
    let (status, error) = answer(basic_only).await;
    assert_eq!(status, 401);
    assert!(
        error["error"]
            .as_str()
            .unwrap()
            .contains("missing x-hmac-signature"),
        "{error}"
    );

    let hmac_only = signed(&app, body.as_bytes(), &ts, &good)
        .send()
        .await
        .unwrap();
    let (status, error) = answer(hmac_only).await;
    assert_eq!(
        (status, error["error"].as_str()),
        (401, Some("missing or wrong credentials"))
    );

    let wrong_password = signed(&app, body.as_bytes(), &ts, &good)
        .basic_auth(USER, Some("wrong"))
        .send()
        .await
        .unwrap();
    assert_eq!(wrong_password.status(), 401);
    assert_eq!(app.inbox_count().await, 0);

    let both = signed(&app, body.as_bytes(), &ts, &good)
        .basic_auth(USER, Some(PASSWORD))
        .send()
        .await
        .unwrap();
    let (status, ack) = answer(both).await;
    assert_eq!((status, ack["outcome"].as_str()), (200, Some("stored")));
}
