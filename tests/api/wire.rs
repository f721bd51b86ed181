//! What Thryve really puts on the wire: data pushes as base64 text of a zstd frame (and every
//! other plausible form), signatures over any form of the body in `enforce` and `report` mode,
//! the older legacy trigger, and `hmac check` on a captured delivery.

use std::path::{Path, PathBuf};

use serde_json::{json, Value};
use thryve_bridge::{
    http::hmac::{sign, HmacMode, Layout, LayoutSetting, Signed},
    ranges::DirtyRange,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::{
    cli::{bridge, json_out},
    poller::{poller, store},
    support::{
        answer, base64, epoch_point, epoch_push, gzip, receiver_only, signed_config, spawn_app,
        spawn_app_with, zstd, TestApp, HMAC_SECRET, PASSWORD, USER,
    },
};

fn corpus(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/corpus")
        .join(name)
}

/// A data push of `values` epoch values (as the real ones: 1-minute points).
fn push(user: &str, values: usize) -> Value {
    let items: Vec<Value> = (0..values as i64)
        .map(|i| {
            let start = 1763083020000_i64 + i * 60_000;
            epoch_point(
                start,
                Some(start + 60_000),
                60,
                1000,
                &(i * 7 % 120).to_string(),
            )
        })
        .collect();
    epoch_push(user, "update", Some("Nokia"), items)
}

pub async fn post_wire(
    app: &TestApp,
    encoding: &str,
    body: impl Into<reqwest::Body>,
) -> (u16, Value) {
    answer(app.post_encoded(encoding, body).await).await
}

#[tokio::test]
async fn a_data_push_is_stored_in_every_form_and_one_content_is_one_row() {
    let app = spawn_app().await;
    // The corpus push exactly as captured: base64 text of a zstd frame.
    let captured = std::fs::read(corpus("push-epoch-unix.zst.b64")).unwrap();
    let (status, ack) = post_wire(&app, "zstd", captured.clone()).await;
    assert_eq!((status, ack["outcome"].as_str()), (200, Some("stored")));

    let lines = |text: String| {
        text.as_bytes()
            .chunks(76)
            .map(|l| String::from_utf8(l.to_vec()).unwrap())
            .collect::<Vec<_>>()
            .join("\r\n")
    };
    type Form = fn(&[u8]) -> (Vec<u8>, &'static str);
    let forms: [(&str, Form); 6] = [
        ("base64 of zstd", |j| {
            (base64(&zstd(j)).into_bytes(), "zstd")
        }),
        ("base64 of zstd without padding", |j| {
            let mut text = base64(&zstd(j));
            while text.ends_with('=') {
                text.pop();
            }
            (text.into_bytes(), "zstd")
        }),
        ("raw zstd", |j| (zstd(j), "zstd")),
        ("base64 of gzip", |j| {
            (base64(&gzip(j)).into_bytes(), "gzip")
        }),
        ("raw gzip", |j| (gzip(j), "gzip")),
        ("raw x-gzip", |j| (gzip(j), "x-gzip")),
    ];
    for (i, (name, form)) in forms.iter().enumerate() {
        let json = push(&format!("form-{i}"), 32).to_string();
        let (wire, encoding) = form(json.as_bytes());
        let (status, ack) = post_wire(&app, encoding, wire).await;
        assert_eq!(
            (status, ack["outcome"].as_str()),
            (200, Some("stored")),
            "{name}: {ack}"
        );
    }
    // Line breaks: its own content, then the same content in two other forms is one row.
    let json = push("lines", 32).to_string();
    let (status, first) = post_wire(&app, "zstd", lines(base64(&zstd(json.as_bytes())))).await;
    assert_eq!((status, first["outcome"].as_str()), (200, Some("stored")));
    for (encoding, wire) in [
        ("zstd", zstd(json.as_bytes())),
        ("gzip", base64(&gzip(json.as_bytes())).into_bytes()),
    ] {
        let (status, again) = post_wire(&app, encoding, wire).await;
        assert_eq!(
            (status, again["outcome"].as_str()),
            (200, Some("duplicate"))
        );
        assert_eq!(again["inbox_id"], first["inbox_id"]);
    }
    assert_eq!(app.inbox_count().await, 8);
    let count: i32 = sqlx::query_scalar("SELECT delivery_count FROM thryve.inbox WHERE id = $1")
        .bind(first["inbox_id"].as_i64().unwrap())
        .fetch_one(&app.db.pool)
        .await
        .unwrap();
    assert_eq!(count, 3);
    let metrics = app.metrics().await;
    assert!(
        metrics.contains("thryve_bridge_body_forms_total{form=\"base64\"} 6"),
        "{metrics}"
    );
    assert!(
        metrics.contains("thryve_bridge_body_forms_total{form=\"frame\"} 4"),
        "{metrics}"
    );
}

#[tokio::test]
async fn broken_base64_gets_400_naming_the_step_that_failed_and_nothing_is_stored() {
    let app = spawn_app().await;
    let frame = zstd(push("broken", 5).to_string().as_bytes());
    let text = base64(&frame);
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "JSON sent as if it were zstd",
            push("x", 1).to_string().into_bytes(),
            "body is neither a zstd frame nor base64 text of one: byte 0x7b at offset 0 is outside the base64 alphabet",
        ),
        (
            "a byte outside the alphabet",
            format!("{}*{}", &text[..10], &text[10..]).into_bytes(),
            "byte 0x2a at offset 10 is outside the base64 alphabet",
        ),
        (
            "bad padding",
            format!("{text}=").into_bytes(),
            "body is base64 text but does not decode",
        ),
        (
            "base64 of JSON",
            base64(b"{\"a\":1}").into_bytes(),
            "body is base64 text, but what it decodes to is not a zstd frame (it starts 0x7b22",
        ),
        (
            "base64 of base64",
            base64(text.as_bytes()).into_bytes(),
            "what it decodes to is not a zstd frame",
        ),
        (
            "base64 of a frame cut short",
            base64(&frame[..frame.len() / 2]).into_bytes(),
            "the base64-decoded body is not valid zstd",
        ),
        ("empty", Vec::new(), "body is not valid zstd: body is empty"),
    ];
    for (name, body, message) in cases {
        let (status, error) = post_wire(&app, "zstd", body).await;
        assert_eq!(status, 400, "{name}: {error}");
        let text = error["error"].as_str().unwrap();
        assert!(text.contains(message), "{name}: {text}");
    }
    // A bomb wrapped in base64: refused at the limit (the heap it takes is measured in
    // tests/fuzz.rs, `a_base64_wrapped_bomb_is_refused_in_bounded_heap`).
    let bomb = base64(&zstd::encode_all(&vec![b'['; 64 << 20][..], 19).unwrap());
    assert!(bomb.len() < 16 << 10);
    let (status, error) = post_wire(&app, "zstd", bomb).await;
    assert_eq!(status, 413, "{error}");
    assert_eq!(app.inbox_count().await, 0);
}

#[tokio::test]
async fn a_byte_order_mark_and_a_gzip_transfer_coding_are_read_not_refused() {
    let app = spawn_app().await;
    let json = push("bom", 3).to_string();
    let (status, first) = answer(
        app.post([&b"\xef\xbb\xbf"[..], json.as_bytes()].concat())
            .await,
    )
    .await;
    assert_eq!((status, first["outcome"].as_str()), (200, Some("stored")));
    // Transfer-Encoding: gzip, chunked, which no HTTP client library sends: written by hand.
    let packed = gzip(json.as_bytes());
    let mut request = format!(
        "POST /webhooks/thryve HTTP/1.1\r\nHost: bridge\r\nAuthorization: Basic {}\r\n\
         Content-Type: application/json\r\nTransfer-Encoding: gzip, chunked\r\nConnection: close\r\n\r\n{:x}\r\n",
        base64(format!("{USER}:{PASSWORD}").as_bytes()),
        packed.len()
    )
    .into_bytes();
    request.extend_from_slice(&packed);
    request.extend_from_slice(b"\r\n0\r\n\r\n");
    let mut stream = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    stream.write_all(&request).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.contains("\"outcome\":\"duplicate\""), "{response}");
}

/// A push in its wire form, and its three forms.
struct Push {
    wire: String,
    frame: Vec<u8>,
    json: Vec<u8>,
}

fn wire_push(user: &str) -> Push {
    let json = push(user, 32).to_string().into_bytes();
    let frame = zstd(&json);
    Push {
        wire: base64(&frame),
        frame,
        json,
    }
}

impl Push {
    fn form(&self, signed: Signed) -> &[u8] {
        match signed {
            Signed::Wire => self.wire.as_bytes(),
            Signed::Frame => &self.frame,
            Signed::Json => &self.json,
        }
    }

    async fn send_signed(
        &self,
        app: &TestApp,
        timestamp: &str,
        signature: Option<&str>,
    ) -> (u16, Value) {
        let mut request = app
            .webhook()
            .header("content-type", "application/json")
            .header("content-encoding", "zstd")
            .header("x-hmac-algorithm", "hmac-sha256")
            .header("x-hmac-timestamp", timestamp)
            .body(self.wire.clone());
        if let Some(signature) = signature {
            request = request.header("x-hmac-signature", signature);
        }
        answer(request.send().await.unwrap()).await
    }

    /// Sends it signed under `layout` now.
    async fn send(&self, app: &TestApp, layout: Layout) -> (u16, Value) {
        let ts = chrono::Utc::now().timestamp_millis().to_string();
        let signature = sign(
            HMAC_SECRET.as_bytes(),
            layout,
            self.form(layout.signed),
            ts.as_bytes(),
        );
        self.send_signed(app, &ts, Some(&signature)).await
    }
}

#[tokio::test]
async fn enforce_accepts_each_layout_over_its_form_and_refuses_the_others() {
    for layout in Layout::ALL {
        let app = spawn_app_with(signed_config(
            LayoutSetting::Fixed(layout),
            HmacMode::Enforce,
        ))
        .await;
        let push = wire_push(layout.as_str());
        let (status, ack) = push.send(&app, layout).await;
        assert_eq!(
            (status, ack["outcome"].as_str()),
            (200, Some("stored")),
            "{layout}: {ack}"
        );
        // The same join over another form is another message.
        let other = Layout::new(
            if layout.signed == Signed::Json {
                Signed::Frame
            } else {
                Signed::Json
            },
            layout.join,
        );
        let (status, error) = wire_push("other").send(&app, other).await;
        assert_eq!(status, 401, "{layout}: {error}");
        let m = app.metrics().await;
        let matched = format!(
            "thryve_bridge_hmac_checks_total{{result=\"matched\",layout=\"{layout}\",mode=\"enforce\"}} 1"
        );
        assert!(m.contains(&matched), "{layout}: {m}");
        assert_eq!(app.inbox_count().await, 1, "{layout}");
    }
}

#[tokio::test]
async fn enforce_refuses_wrong_missing_and_stale_signatures_over_base64_pushes() {
    let frame_ts: Layout = "frame+timestamp".parse().unwrap();
    let app = spawn_app_with(signed_config(
        LayoutSetting::Fixed(frame_ts),
        HmacMode::Enforce,
    ))
    .await;
    let push = wire_push("enforced");
    let now = chrono::Utc::now().timestamp_millis();
    let stale = (now - 301_000).to_string();
    let stale_signature = sign(
        HMAC_SECRET.as_bytes(),
        frame_ts,
        &push.frame,
        stale.as_bytes(),
    );
    let ts = now.to_string();
    let wrong = sign(b"another secret", frame_ts, &push.frame, ts.as_bytes());
    for (name, timestamp, signature, message) in [
        ("wrong", ts.as_str(), Some(wrong.as_str()), "does not match"),
        ("missing", ts.as_str(), None, "missing x-hmac-signature"),
        (
            "stale",
            stale.as_str(),
            Some(stale_signature.as_str()),
            "outside the 300 s window",
        ),
    ] {
        let (status, error) = push.send_signed(&app, timestamp, signature).await;
        assert_eq!(status, 401, "{name}");
        assert!(
            error["error"].as_str().unwrap().contains(message),
            "{name}: {error}"
        );
    }
    assert_eq!(app.inbox_count().await, 0);
    let (status, _) = push.send(&app, frame_ts).await;
    assert_eq!(status, 200);
    let m = app.metrics().await;
    for result in ["mismatched", "missing", "outside_window", "matched"] {
        assert!(m.contains(&format!("result=\"{result}\"")), "{result}: {m}");
    }
}

#[tokio::test]
async fn report_stores_every_delivery_and_counts_the_layout_each_matched() {
    let app = spawn_app_with(signed_config(
        LayoutSetting::Fixed(Layout::WIRE_THEN_TIMESTAMP),
        HmacMode::Report,
    ))
    .await;
    for layout in Layout::ALL {
        let (status, ack) = wire_push(layout.as_str()).send(&app, layout).await;
        assert_eq!(
            (status, ack["outcome"].as_str()),
            (200, Some("stored")),
            "{layout}"
        );
    }
    let push = wire_push("unsigned");
    let ts = chrono::Utc::now().timestamp_millis().to_string();
    let (status, _) = push.send_signed(&app, &ts, None).await;
    assert_eq!(status, 200);
    let (status, _) = wire_push("wrong")
        .send_signed(&app, &ts, Some(&"0".repeat(64)))
        .await;
    assert_eq!(status, 200);
    let stale = (chrono::Utc::now().timestamp_millis() - 3_600_000).to_string();
    let (status, _) = wire_push("stale")
        .send_signed(&app, &stale, Some(&"0".repeat(64)))
        .await;
    assert_eq!(status, 200);
    assert_eq!(app.inbox_count().await, 24);
    let m = app.metrics().await;
    assert!(
        m.contains(
            "hmac_checks_total{result=\"matched\",layout=\"wire+timestamp\",mode=\"report\"} 1"
        ),
        "{m}"
    );
    for layout in Layout::ALL
        .into_iter()
        .filter(|l| *l != Layout::WIRE_THEN_TIMESTAMP)
    {
        // Not the configured layout, so a mismatch, labelled with the layout that matched.
        let line = format!(
            "hmac_checks_total{{result=\"mismatched\",layout=\"{layout}\",mode=\"report\"}} 1"
        );
        assert!(m.contains(&line), "{line}: {m}");
    }
    for line in [
        "hmac_checks_total{result=\"mismatched\",layout=\"\",mode=\"report\"} 1",
        "hmac_checks_total{result=\"missing\",layout=\"\",mode=\"report\"} 1",
        "hmac_checks_total{result=\"outside_window\",layout=\"\",mode=\"report\"} 1",
    ] {
        assert!(m.contains(line), "{line}: {m}");
    }
}

#[tokio::test]
async fn auto_learns_the_layout_from_a_push_and_then_enforces_it() {
    let app = spawn_app_with(signed_config(LayoutSetting::Auto, HmacMode::Enforce)).await;
    let json_dot: Layout = "timestamp.json".parse().unwrap();
    // A plain notification narrows to the join; a push to the form.
    let notification = crate::support::epoch_notification("n", 1, 2, &[1]).to_string();
    let ts = chrono::Utc::now().timestamp_millis().to_string();
    let signature = sign(
        HMAC_SECRET.as_bytes(),
        json_dot,
        notification.as_bytes(),
        ts.as_bytes(),
    );
    let response = app
        .webhook()
        .header("content-type", "application/json")
        .header("x-hmac-timestamp", &ts)
        .header("x-hmac-signature", signature)
        .body(notification)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(wire_push("learn").send(&app, json_dot).await.0, 200);
    let (status, _) = wire_push("other form")
        .send(&app, "timestamp.frame".parse().unwrap())
        .await;
    assert_eq!(status, 401);
    assert_eq!(wire_push("again").send(&app, json_dot).await.0, 200);
    assert_eq!(app.inbox_count().await, 3);
}

/// The older trigger and connection bodies, as JSON and as a form, through the poller.
#[tokio::test]
async fn legacy_triggers_make_all_type_ranges_and_string_ids_change_connections() {
    // The server's poller off: the test reads the report of one batch of its own.
    let app = spawn_app_with(receiver_only()).await;
    let update = |update_type: &str, user: &str| {
        json!({"authenticationToken": user, "partnerUserID": "alias", "dataSource": "8",
               "startTimestamp": "2019-08-21T21:17:00Z", "endTimestamp": "2019-08-22T10:00:00Z",
               "updateType": update_type})
    };
    let form = |update: &Value| {
        form_urlencoded::Serializer::new(String::new())
            .append_pair("sourceUpdate", &update.to_string())
            .finish()
    };
    let mut sent = Vec::new();
    for (i, update_type) in ["MINUTE", "DAILY", "BOTH"].into_iter().enumerate() {
        let json_user = format!("json-{update_type}");
        let (status, ack) = answer(
            app.post_json(&json!({ "sourceUpdate": update(update_type, &json_user) }))
                .await,
        )
        .await;
        assert_eq!(
            (status, ack["outcome"].as_str()),
            (200, Some("stored")),
            "{update_type}"
        );
        let form_user = format!("form-{update_type}");
        let response = app
            .webhook()
            .basic_auth(USER, Some(PASSWORD))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(form(&update(update_type, &form_user)))
            .send()
            .await
            .unwrap();
        let (status, ack) = answer(response).await;
        assert_eq!(
            (status, ack["outcome"].as_str()),
            (200, Some("stored")),
            "{update_type} form"
        );
        sent.push((i, json_user, form_user));
    }
    for (connection_status, user) in [("NEW", "conn-json"), ("DELETED", "conn-form")] {
        let body = json!({"authenticationToken": user, "partnerUserID": "alias", "dataSource": "8",
                          "connectionStatus": connection_status});
        let response = if user.ends_with("form") {
            app.webhook()
                .basic_auth(USER, Some(PASSWORD))
                .header("content-type", "application/x-www-form-urlencoded")
                .body(form(&body))
                .send()
                .await
                .unwrap()
        } else {
            app.post_json(&json!({ "sourceUpdate": body })).await
        };
        assert_eq!(answer(response).await.1["outcome"], "stored");
    }
    let report = poller(&app.db).poll_once().await.unwrap();
    assert_eq!((report.processed, report.quarantined), (8, 0), "{report:?}");
    type Row = (String, String, Vec<i32>, Option<String>, Option<String>);
    let ranges: Vec<Row> = sqlx::query_as(
        "SELECT end_user_id, granularity, data_type_ids,
                to_char(start_time AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS'),
                start_day::text || '..' || end_day::text
         FROM thryve.dirty_ranges ORDER BY end_user_id, granularity",
    )
    .fetch_all(&app.db.pool)
    .await
    .unwrap();
    let mut expected = Vec::new();
    for prefix in ["form", "json"] {
        for update_type in ["BOTH", "DAILY", "MINUTE"] {
            let user = format!("{prefix}-{update_type}");
            if update_type != "MINUTE" {
                expected.push((
                    user.clone(),
                    "daily".to_owned(),
                    vec![],
                    None,
                    Some("2019-08-21..2019-08-22".to_owned()),
                ));
            }
            if update_type != "DAILY" {
                expected.push((
                    user.clone(),
                    "epoch".to_owned(),
                    vec![],
                    Some("2019-08-21T21:17:00".to_owned()),
                    None,
                ));
            }
        }
    }
    expected.sort();
    assert_eq!(ranges, expected);
    let connections: Vec<(String, i32, bool)> = sqlx::query_as(
        "SELECT end_user_id, data_source_id, connected FROM thryve.source_connections ORDER BY 1",
    )
    .fetch_all(&app.db.pool)
    .await
    .unwrap();
    assert_eq!(
        connections,
        vec![
            ("conn-form".to_owned(), 8, false),
            ("conn-json".to_owned(), 8, true)
        ]
    );
}

/// "No type list" means all types, and stays so when a typed range merges with it.
#[tokio::test]
async fn an_all_types_range_merged_with_a_typed_one_stays_all_types() {
    // The server's poller off: the test orders the merges by polling between deliveries.
    let app = spawn_app_with(receiver_only()).await;
    let trigger = json!({"sourceUpdate": {"authenticationToken": "u", "dataSource": "8",
        "startTimestamp": "2019-08-21T21:17:00Z", "endTimestamp": "2019-08-22T10:00:00Z",
        "updateType": "MINUTE"}});
    let typed = crate::support::epoch_notification(
        "u",
        chrono::DateTime::parse_from_rfc3339("2019-08-22T09:00:00Z")
            .unwrap()
            .timestamp_millis(),
        chrono::DateTime::parse_from_rfc3339("2019-08-22T12:00:00Z")
            .unwrap()
            .timestamp_millis(),
        &[3000, 1000],
    );
    // Both orders: typed first, then all-types; and all-types first (another source).
    store(&app.db, std::slice::from_ref(&typed)).await;
    poller(&app.db).poll_once().await.unwrap();
    store(&app.db, std::slice::from_ref(&trigger)).await;
    poller(&app.db).poll_once().await.unwrap();
    let mut other = trigger.clone();
    other["sourceUpdate"]["dataSource"] = json!("1");
    let mut typed_other = typed.clone();
    typed_other["data"]["dataSourceId"] = json!(1);
    store(&app.db, &[other]).await;
    poller(&app.db).poll_once().await.unwrap();
    store(&app.db, &[typed_other]).await;
    poller(&app.db).poll_once().await.unwrap();
    let ranges: Vec<DirtyRange> =
        sqlx::query_as("SELECT * FROM thryve.dirty_ranges ORDER BY data_source_id")
            .fetch_all(&app.db.pool)
            .await
            .unwrap();
    assert_eq!(ranges.len(), 2, "{ranges:?}");
    for range in ranges {
        assert!(range.data_type_ids.is_empty(), "{range:?}");
        assert_eq!(
            range.end_time.unwrap().to_rfc3339(),
            "2019-08-22T12:00:00+00:00"
        );
    }
}

#[tokio::test]
async fn hmac_check_finds_the_layout_from_a_delivery_as_captured() {
    let dir = tempfile_dir();
    let push = wire_push("captured");
    let layout: Layout = "frame+timestamp".parse().unwrap();
    let ts = "1765635343541";
    let signature = sign(HMAC_SECRET.as_bytes(), layout, &push.frame, ts.as_bytes());
    let body = dir.join("body");
    std::fs::write(&body, &push.wire).unwrap();
    let headers = dir.join("headers");
    std::fs::write(
        &headers,
        format!(
            "POST /webhooks/thryve HTTP/1.1\r\ncontent-type: application/json\r\ncontent-encoding: zstd\r\n\
             user-agent: Apache-HttpClient/5.4 (Java/21)\r\nx-hmac-algorithm: hmac-sha256\r\n\
             x-hmac-signature: {signature}\r\nx-hmac-timestamp: {ts}\r\n"
        ),
    )
    .unwrap();
    let args = [
        "hmac",
        "check",
        "--body",
        body.to_str().unwrap(),
        "--headers",
        headers.to_str().unwrap(),
    ];
    let out = json_out(&bridge(
        "postgres://unused",
        &args,
        &[("WEBHOOK_HMAC_SECRET", HMAC_SECRET)],
    ));
    assert_eq!(out["form"], "base64");
    assert_eq!(out["matches"], json!(["frame+timestamp"]));
    assert_eq!(out["setting"], "WEBHOOK_HMAC_LAYOUT=frame+timestamp");
    assert_eq!(out["tried"].as_array().unwrap().len(), 21);
    // The wrong secret: no match, exit 1, and the advice names the base64 text.
    let failed = bridge(
        "postgres://unused",
        &args,
        &[("WEBHOOK_HMAC_SECRET", "wrong")],
    );
    assert!(!failed.status.success());
    let stdout: Value = serde_json::from_slice(&failed.stdout).unwrap();
    assert_eq!(stdout["matches"], json!([]));
    assert!(String::from_utf8_lossy(&failed.stderr).contains("base64 text"));
    std::fs::remove_dir_all(dir).unwrap();
}

fn tempfile_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("thryve-wire-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
