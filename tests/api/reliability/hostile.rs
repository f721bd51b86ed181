//! Hostile input against the real server: each row of the README's "Hostile input" table.
//! Oversize bodies, decompression bombs and single slow clients are covered where they were
//! first written: `receiver::oversize_bodies_get_413_and_unknown_encodings_415`,
//! `formats::a_zstd_decompression_bomb_gets_413_and_nothing_is_stored`,
//! `server::a_client_that_never_finishes_its_headers_is_dropped` and
//! `server::a_body_that_trickles_in_past_the_deadline_gets_408_and_nothing_is_stored`.

use std::{
    io::{BufRead, BufReader},
    net::SocketAddr,
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use serde_json::{json, Value};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

use crate::support::{
    self, answer, epoch_notification, gzip, spawn_app, spawn_app_with, test_config, wait_until,
    zstd, TestApp, TestDb, PASSWORD, USER,
};

const SQL: &str = "'; DROP TABLE thryve.inbox; --";

fn nested(depth: usize) -> String {
    format!("{}1{}", "[".repeat(depth), "]".repeat(depth))
}

fn form(field: &str) -> Vec<u8> {
    form_urlencoded::Serializer::new(String::new())
        .append_pair("sourceUpdate", field)
        .finish()
        .into_bytes()
}

/// A valid legacy update naming both spans (so the poller re-reads its payload), with `extra`.
fn legacy_update(extra: &str) -> String {
    format!(
        r#"{{"authenticationToken":"legacy-deep","dataSource":1,
        "/v5/dailyDynamicValues":{{"startDay":"2024-01-01","endDay":"2024-01-02","dailyDynamicValueTypes":[2000]}},
        "/v5/dynamicEpochValues":{{"startTimestampUnix":1704067200000,"endTimestampUnix":1704070800000,"dynamicValueTypes":[3000]}},
        "extra":{extra}}}"#
    )
}

fn epoch_with(data: Value) -> Value {
    json!({"endUserId": "hostile", "timestampType": "unix",
           "type": "notification.data.epoch.createupdate", "data": data})
}

fn epoch_data(start: Value, source: Value, types: Value) -> Value {
    epoch_with(
        json!({"startTimestamp": start, "endTimestamp": 1_763_973_390_000_i64,
                      "dataSourceId": source, "dataTypeIds": types}),
    )
}

fn iso_epoch(start: &str) -> Value {
    json!({"endUserId": "hostile", "timestampType": "iso",
           "type": "notification.data.epoch.createupdate",
           "data": {"startTimestamp": start, "endTimestamp": "2024-01-01T00:00:00Z",
                    "dataSourceId": 8, "dataTypeIds": [3000]}})
}

fn daily(start: Value, end: Value, form: &str) -> Value {
    json!({"endUserId": "hostile", "timestampType": form,
           "type": "notification.data.daily.createupdate",
           "data": {"startDay": start, "endDay": end, "dataSourceId": 8, "dataTypeIds": [2000]}})
}

fn epoch_push(points: Vec<Value>) -> Value {
    support::epoch_push("hostile", "update", None, points)
}

fn point(type_id: Value, tz: Value, value: Value) -> Value {
    json!({"startTimestamp": 1_763_083_020_000_i64, "dataTypeId": type_id,
           "timezoneOffset": tz, "value": value})
}

/// One hostile request: body bytes and the headers that matter.
struct Request {
    body: Vec<u8>,
    content_type: &'static str,
    encodings: Vec<String>,
}

fn json_body(value: Value) -> Request {
    bytes(value.to_string().into_bytes())
}

fn bytes(body: Vec<u8>) -> Request {
    Request {
        body,
        content_type: "application/json",
        encodings: vec![],
    }
}

fn form_body(body: Vec<u8>) -> Request {
    Request {
        body,
        content_type: "application/x-www-form-urlencoded",
        encodings: vec![],
    }
}

/// What the contract says the answer is.
enum Expect {
    /// This status, a JSON error containing the text, nothing stored.
    Refused(u16, &'static str),
    /// 200 with this outcome; the row's `error` starts with the text (`None`: no error).
    Kept(&'static str, Option<&'static str>),
}

async fn send(app: &TestApp, request: &Request) -> reqwest::Response {
    let mut builder = app
        .webhook()
        .basic_auth(USER, Some(PASSWORD))
        .header("content-type", request.content_type);
    for coding in &request.encodings {
        builder = builder.header("content-encoding", coding);
    }
    builder.body(request.body.clone()).send().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_bodies_get_the_documented_answer_and_nothing_crashes() {
    let app = spawn_app().await;
    let long_id = "ab".repeat(1_500);
    let ids_150k: Vec<i64> = (1..=150_000).collect();
    let distinct_1001: Vec<i64> = (1..=1_001).collect();
    let repeated_10k: Vec<i64> = (0..10_000).map(|i| 1000 + i % 10).collect();
    let many_types: Vec<Value> = (1..=1_001)
        .map(|t| point(json!(t), json!(0), json!("1")))
        .collect();
    let mut sql_key = epoch_notification("sql-key", 1, 2, &[1]);
    sql_key[SQL] = json!(SQL);
    let valid = epoch_notification("codings", 1, 2, &[1]).to_string();
    let cases: Vec<(&str, Request, Expect)> = vec![
        (
            "100,000 open brackets",
            bytes("[".repeat(100_000).into_bytes()),
            Expect::Refused(400, "recursion limit exceeded"),
        ),
        (
            "nesting 200 deep inside a known field",
            bytes(
                format!(
                    r#"{{"endUserId":"u","type":"notification.data.epoch.createupdate","data":{{"dataTypeIds":{}}}}}"#,
                    nested(200)
                )
                .into_bytes(),
            ),
            Expect::Refused(400, "recursion limit exceeded"),
        ),
        (
            "nesting 120 deep inside a known field",
            bytes(
                format!(
                    r#"{{"endUserId":"u","timestampType":"unix","type":"notification.data.epoch.createupdate","data":{{"startTimestamp":1,"endTimestamp":2,"dataSourceId":8,"dataTypeIds":{}}}}}"#,
                    nested(120)
                )
                .into_bytes(),
            ),
            Expect::Kept(
                "quarantined",
                Some("data.dataTypeIds[0]: expected a positive 32-bit integer, got [[[["),
            ),
        ),
        (
            "150,000 dataTypeIds",
            json_body(epoch_data(json!(1), json!(8), json!(ids_150k))),
            Expect::Kept(
                "quarantined",
                Some("data.dataTypeIds: 150000 entries, more than the 10000 accepted"),
            ),
        ),
        (
            "1,001 distinct dataTypeIds",
            json_body(epoch_data(json!(1), json!(8), json!(distinct_1001))),
            Expect::Kept(
                "quarantined",
                Some("data.dataTypeIds: 1001 distinct data types, more than the 1000 accepted"),
            ),
        ),
        (
            "10,000 dataTypeIds, 10 distinct",
            json_body(epoch_data(json!(1), json!(8), json!(repeated_10k))),
            Expect::Kept("stored", None),
        ),
        (
            "a push naming 1,001 types in one source",
            json_body(epoch_push(many_types)),
            Expect::Kept(
                "quarantined",
                Some("data[0].epochData: 1001 distinct dataTypeIds, more than the 1000"),
            ),
        ),
        (
            "an escaped NUL in a value",
            bytes(br#"{"type":"x","endUserId":"nul\u0000"}"#.to_vec()),
            Expect::Refused(400, "NUL character"),
        ),
        (
            "an escaped NUL in a key",
            bytes(br#"{"type":"x","k\u0000":1}"#.to_vec()),
            Expect::Refused(400, "NUL character"),
        ),
        (
            "raw invalid UTF-8 in a string",
            bytes(b"{\"type\":\"x\",\"endUserId\":\"\xff\xfe\"}".to_vec()),
            Expect::Refused(400, "invalid unicode code point"),
        ),
        (
            "a lone surrogate escape",
            bytes(br#"{"type":"x","endUserId":"\ud800"}"#.to_vec()),
            Expect::Refused(400, "body is not JSON"),
        ),
        (
            "invalid UTF-8 in a form field",
            form_body(b"sourceUpdate=%7B%22authenticationToken%22%3A%22%FF%22%7D".to_vec()),
            Expect::Refused(400, "form body: field sourceUpdate is not JSON"),
        ),
        (
            "a form field nested 127 deep",
            form_body(form(&legacy_update(&nested(126)))),
            Expect::Refused(400, "form body: field sourceUpdate nests deeper than 126 levels"),
        ),
        (
            "dataSourceId 2^31",
            json_body(epoch_data(json!(1), json!(2_147_483_648_i64), json!([1]))),
            Expect::Kept(
                "quarantined",
                Some("data.dataSourceId: expected a positive 32-bit integer, got 2147483648"),
            ),
        ),
        (
            "dataSourceId 1e30",
            bytes(
                epoch_data(json!(1), json!("SOURCE"), json!([1]))
                    .to_string()
                    .replace("\"SOURCE\"", "1e30")
                    .into_bytes(),
            ),
            Expect::Kept(
                "quarantined",
                Some("data.dataSourceId: expected a positive 32-bit integer, got 1e+30"),
            ),
        ),
        (
            "a dataTypeId of 2^40",
            json_body(epoch_data(json!(1), json!(8), json!([1_i64 << 40]))),
            Expect::Kept(
                "quarantined",
                Some("data.dataTypeIds[0]: expected a positive 32-bit integer"),
            ),
        ),
        (
            "a timestamp of 1e20 ms",
            json_body(epoch_data(json!(1e20), json!(8), json!([1]))),
            Expect::Kept(
                "quarantined",
                Some("data.startTimestamp: 1e+20 is not an integer number of milliseconds"),
            ),
        ),
        (
            "a timestamp of 1e400",
            bytes(
                epoch_data(json!("START"), json!(8), json!([1]))
                    .to_string()
                    .replace("\"START\"", "1e400")
                    .into_bytes(),
            ),
            Expect::Refused(400, "number out of range"),
        ),
        (
            "a timezoneOffset of 2^31 in a push",
            json_body(epoch_push(vec![point(
                json!(3000),
                json!(2_147_483_648_i64),
                json!("1"),
            )])),
            Expect::Kept(
                "quarantined",
                Some("data[0].epochData[0].timezoneOffset: expected a 32-bit integer"),
            ),
        ),
        (
            "unix ms before 1970",
            json_body(epoch_data(json!(-1), json!(8), json!([1]))),
            Expect::Kept(
                "quarantined",
                Some("data.startTimestamp: -1 ms is outside 1970-01-01..9999-12-31"),
            ),
        ),
        (
            "1969-12-31T23:59:59Z",
            json_body(iso_epoch("1969-12-31T23:59:59Z")),
            Expect::Kept(
                "quarantined",
                Some("data.startTimestamp: 1969-12-31 23:59:59 UTC is outside 1970-01-01..9999-12-31"),
            ),
        ),
        (
            "+10000-01-01T00:00:00Z",
            json_body(iso_epoch("+10000-01-01T00:00:00Z")),
            Expect::Kept(
                "quarantined",
                Some("data.startTimestamp: +10000-01-01 00:00:00 UTC is outside 1970-01-01..9999-12-31"),
            ),
        ),
        (
            "year 262143",
            json_body(iso_epoch("+262143-01-01T00:00:00Z")),
            Expect::Kept(
                "quarantined",
                Some(r#"data.startTimestamp: "+262143-01-01T00:00:00Z" is outside 1970-01-01..9999-12-31"#),
            ),
        ),
        (
            "a day before 1970",
            json_body(daily(json!("1969-12-31"), json!("2024-01-01"), "iso")),
            Expect::Kept(
                "quarantined",
                Some("data.startDay: 1969-12-31 00:00:00 UTC is outside 1970-01-01..9999-12-31"),
            ),
        ),
        (
            "a unix day after 9999",
            json_body(daily(
                json!(1_704_067_200_000_i64),
                json!(253_402_300_800_000_i64),
                "unix",
            )),
            Expect::Kept(
                "quarantined",
                Some("data.endDay: 253402300800000 ms is outside 1970-01-01..9999-12-31"),
            ),
        ),
        (
            "a pushed day of +10000-01-01",
            json_body(json!({"endUserId": "hostile", "timestampType": "iso",
                "type": "event.data.daily.create",
                "data": [{"dataSourceId": 8, "dailyData": [
                    {"day": "+10000-01-01", "dataTypeId": 1000, "value": "1"}]}]})),
            Expect::Kept(
                "quarantined",
                Some("data[0].dailyData[0].day: +10000-01-01 00:00:00 UTC is outside 1970-01-01..9999-12-31"),
            ),
        ),
        (
            "a legacy createdAt before 1970",
            json_body(json!({"sourceUpdate": {"authenticationToken": "u", "dataSource": 1,
                "connectionStatus": "NEW", "createdAt": "1960-01-01T00:00:00Z"}})),
            Expect::Kept(
                "quarantined",
                Some("sourceUpdate.createdAt: 1960-01-01 00:00:00 UTC is outside"),
            ),
        ),
        (
            "SQL as endUserId",
            json_body(epoch_notification(SQL, 1, 2, &[1])),
            Expect::Kept("stored", None),
        ),
        (
            "SQL as a key",
            json_body(sql_key),
            Expect::Kept("stored", None),
        ),
        (
            "an endUserId of 3,000 bytes",
            json_body(epoch_notification(&long_id, 1, 2, &[1])),
            Expect::Kept(
                "quarantined",
                Some("endUserId: 3000 bytes, more than the 1024 accepted"),
            ),
        ),
        (
            "an unknown type with an endUserId of 3,000 bytes",
            json_body(json!({"type": "brand.new", "endUserId": long_id})),
            Expect::Kept("ignored", None),
        ),
        (
            "content-encoding listing 100 codings",
            Request {
                encodings: vec![vec!["gzip"; 100].join(", ")],
                ..bytes(gzip(valid.as_bytes()))
            },
            Expect::Refused(415, "content-encoding lists 100 codings; at most 3 are undone"),
        ),
        (
            "content-encoding on two header lines",
            Request {
                encodings: vec!["gzip".into(), "zstd".into()],
                ..bytes(zstd(&gzip(valid.as_bytes())))
            },
            Expect::Kept("stored", None),
        ),
    ];
    let mut kept = 0;
    for (name, request, expect) in &cases {
        let started = Instant::now();
        let (status, body) = answer(send(&app, request).await).await;
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{name}: answered in time, not hung"
        );
        match expect {
            Expect::Refused(code, text) => {
                assert_eq!(status, *code, "{name}: {body}");
                let error = body["error"]
                    .as_str()
                    .unwrap_or_else(|| panic!("{name}: {body}"));
                assert!(error.contains(text), "{name}: {error:?} lacks {text:?}");
            }
            Expect::Kept(outcome, reason) => {
                kept += 1;
                assert_eq!(
                    (status, body["outcome"].as_str()),
                    (200, Some(*outcome)),
                    "{name}: {body}"
                );
                let error: Option<String> =
                    sqlx::query_scalar("SELECT error FROM thryve.inbox WHERE id = $1")
                        .bind(body["inbox_id"].as_i64().unwrap())
                        .fetch_one(&app.db.pool)
                        .await
                        .unwrap();
                match (reason, error) {
                    (None, None) => {}
                    (Some(reason), Some(error)) => {
                        assert!(
                            error.starts_with(reason),
                            "{name}: {error:?} does not start with {reason:?}"
                        )
                    }
                    (reason, error) => panic!("{name}: reason {error:?}, expected {reason:?}"),
                }
            }
        }
    }
    assert_eq!(app.inbox_count().await, kept, "only the 200s are stored");
    // SQL-looking text is data: stored verbatim, the table intact.
    let sql_users: Vec<String> = sqlx::query_scalar(
        "SELECT end_user_id FROM thryve.inbox WHERE end_user_id = $1 OR payload ? $1 ORDER BY id",
    )
    .bind(SQL)
    .fetch_all(&app.db.pool)
    .await
    .unwrap();
    assert_eq!(sql_users, vec![SQL.to_owned(), "sql-key".to_owned()]);
    // An over-long id stays in the payload but out of the indexed column.
    let long: Vec<(Option<String>, i32)> = sqlx::query_as(
        "SELECT end_user_id, length(payload->>'endUserId') FROM thryve.inbox
         WHERE length(payload->>'endUserId') > 1024 ORDER BY id",
    )
    .fetch_all(&app.db.pool)
    .await
    .unwrap();
    assert_eq!(long, vec![(None, 3000), (None, 3000)]);
    assert_eq!(app.get_status("/healthz").await, 200);
}

async fn statuses(app: &TestApp) -> Vec<(i64, String, Option<String>)> {
    sqlx::query_as("SELECT id, status, error FROM thryve.inbox ORDER BY id")
        .fetch_all(&app.db.pool)
        .await
        .unwrap()
}

async fn all_processed(app: &TestApp, rows: usize) -> bool {
    let now = statuses(app).await;
    now.len() == rows && now.iter().all(|(_, s, _)| s == "processed")
}

/// A payload nested 128 deep cannot be read back by serde_json, and the poller reads pending
/// payloads in its batch query: one such row would stop all processing. The form spelling is
/// the one way to store a body deeper than it arrived, so its limit is one level less.
#[tokio::test]
async fn the_deepest_form_field_accepted_still_reads_back_and_the_poller_goes_on() {
    let app = spawn_app().await;
    let too_deep = form_body(form(&legacy_update(&nested(126))));
    let (status, error) = answer(send(&app, &too_deep).await).await;
    assert_eq!(status, 400, "{error}");
    let deepest = form_body(form(&legacy_update(&nested(125))));
    let (status, ack) = answer(send(&app, &deepest).await).await;
    assert_eq!((status, ack["outcome"].as_str()), (200, Some("stored")));
    let (status, _) = answer(
        app.post_json(&epoch_notification("after", 1, 2, &[1]))
            .await,
    )
    .await;
    assert_eq!(status, 200);
    wait_until(Duration::from_secs(15), "both rows processed", || {
        all_processed(&app, 2)
    })
    .await;
}

/// A value numeric cannot hold is kept as text; it used to fail the poller's batch.
#[tokio::test]
async fn a_pushed_value_too_long_for_numeric_is_kept_as_text() {
    let app = spawn_app().await;
    let digits = "9".repeat(140_000);
    let push = epoch_push(vec![point(json!(3000), json!(0), json!(digits))]);
    let request = Request {
        encodings: vec!["zstd".into()],
        ..bytes(zstd(push.to_string().as_bytes()))
    };
    let (status, ack) = answer(send(&app, &request).await).await;
    assert_eq!((status, ack["outcome"].as_str()), (200, Some("stored")));
    wait_until(
        Duration::from_secs(15),
        "processed, not quarantined",
        || all_processed(&app, 1),
    )
    .await;
    let (length, numeric): (i32, Option<String>) =
        sqlx::query_as("SELECT length(value), value_numeric::text FROM thryve.epoch_values")
            .fetch_one(&app.db.pool)
            .await
            .unwrap();
    assert_eq!((length, numeric), (140_000, None));
}

/// Writes `request` on a fresh connection and reads until the server closes it.
async fn raw_exchange(addr: SocketAddr, request: &[u8]) -> String {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    // The server may answer and close before a giant request is fully written.
    let _ = stream.write_all(request).await;
    let mut response = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(10), async {
        let mut buf = [0u8; 4096];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => response.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "the server closed the connection");
    String::from_utf8_lossy(&response).into_owned()
}

#[tokio::test]
async fn malformed_http_is_refused_the_connection_closed_and_nothing_stored() {
    let app = spawn_app().await;
    let body = epoch_notification("raw", 1, 2, &[1]).to_string();
    let auth = {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{PASSWORD}"))
    };
    let request = |extra: &str| {
        format!(
            "POST /webhooks/thryve HTTP/1.1\r\nHost: x\r\nAuthorization: Basic {auth}\r\n\
             Content-Type: application/json\r\n{extra}Content-Length: {}\r\n\r\n{body}",
            body.len()
        )
    };
    let cases = [
        (
            "bare CR inside a value",
            request("X-A: a\rb\r\n"),
            "HTTP/1.1 400",
        ),
        // A bare LF ends a header line (RFC 9112 lets a recipient accept that); text after it
        // is a header line of its own, here without a colon.
        (
            "bare LF inside a value",
            request("X-A: a\nb\r\n"),
            "HTTP/1.1 400",
        ),
        (
            "obs-fold continuation line",
            request("X-A: a\r\n  folded\r\n"),
            "HTTP/1.1 400",
        ),
        (
            "a header line without colon",
            request("NoColonHere\r\n"),
            "HTTP/1.1 400",
        ),
        (
            "space before the colon",
            request("X-A : b\r\n"),
            "HTTP/1.1 400",
        ),
        (
            "NUL inside a value",
            request("X-A: a\0b\r\n"),
            "HTTP/1.1 400",
        ),
        (
            "two different Content-Lengths",
            request("Content-Length: 5\r\n"),
            "HTTP/1.1 400",
        ),
        (
            "chunked and Content-Length, body not chunked",
            request("Transfer-Encoding: chunked\r\n"),
            "HTTP/1.1 400",
        ),
        (
            "a 2 MB header",
            request(&format!("X-Big: {}\r\n", "a".repeat(2_000_000))),
            "HTTP/1.1 431",
        ),
        (
            "150 header lines",
            request(&"X-H: 1\r\n".repeat(150)),
            "HTTP/1.1 431",
        ),
    ];
    for (name, raw, status_line) in cases {
        let response = raw_exchange(app.addr, raw.as_bytes()).await;
        assert!(response.starts_with(status_line), "{name}: {response:?}");
    }
    assert_eq!(app.inbox_count().await, 0, "nothing stored");
    // The same request, well formed, is stored: the refusals were about the framing.
    let response = raw_exchange(app.addr, request("Connection: close\r\n").as_bytes()).await;
    assert!(response.starts_with("HTTP/1.1 200"), "{response:?}");
    assert_eq!(app.inbox_count().await, 1);
}

/// One reading of each request for every party on the way: a transfer coding list a proxy in
/// front may frame otherwise, a request head over the documented 64 KiB, a key or the form
/// field given twice (which one counts is up to each reader) are all refused, naming what.
#[tokio::test]
async fn ambiguous_framing_oversize_heads_and_keys_given_twice_are_refused() {
    let app = spawn_app().await;
    let auth = {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{PASSWORD}"))
    };
    let head = |content_type: &str, extra: &str| {
        format!(
            "POST /webhooks/thryve HTTP/1.1\r\nHost: x\r\nAuthorization: Basic {auth}\r\n\
             Content-Type: {content_type}\r\n{extra}"
        )
    };
    let sized = |content_type: &str, extra: &str, body: &str| {
        format!(
            "{}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            head(content_type, extra),
            body.len()
        )
    };
    let valid = epoch_notification("framing", 1, 2, &[1]).to_string();
    // No `Connection: close`: the server closes after a refused transfer coding by itself.
    let chunked_body = |codings: &str, body: &[u8]| {
        let head = format!(
            "{}{codings}\r\n\r\n{:x}\r\n",
            head("application/json", ""),
            body.len()
        );
        [head.as_bytes(), body, b"\r\n0\r\n\r\n"].concat()
    };
    let chunked =
        |codings: &str| String::from_utf8(chunked_body(codings, valid.as_bytes())).unwrap();
    let padded = |head_bytes: usize| {
        let without = sized("application/json", "X-Pad: \r\n", &valid).len() - valid.len();
        sized(
            "application/json",
            &format!("X-Pad: {}\r\n", "a".repeat(head_bytes - without)),
            &valid,
        )
    };
    let json = "application/json";
    let form_type = "application/x-www-form-urlencoded";
    let update = r#"{"authenticationToken":"u","dataSource":1,"connectionStatus":"NEW"}"#;
    let cases = [
        (
            "chunked, chunked",
            chunked("Transfer-Encoding: chunked, chunked"),
            "HTTP/1.1 400",
            "Transfer-Encoding \"chunked, chunked\": chunked may be given once, last",
        ),
        (
            "chunked on two lines",
            chunked("Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked"),
            "HTTP/1.1 400",
            "chunked may be given once, last",
        ),
        (
            "identity, chunked",
            chunked("Transfer-Encoding: identity, chunked"),
            "HTTP/1.1 400",
            "\"identity\" is not a transfer coding the bridge undoes",
        ),
        (
            "an unknown coding before chunked",
            chunked("Transfer-Encoding: br, chunked"),
            "HTTP/1.1 400",
            "\"br\" is not a transfer coding the bridge undoes",
        ),
        (
            "a request head of 100 KB",
            padded(100_000),
            "HTTP/1.1 431",
            "",
        ),
        (
            "a request head one byte over 64 KiB",
            padded(64 * 1024 + 1),
            "HTTP/1.1 431",
            "",
        ),
        (
            "a key given twice at the top",
            sized(json, "", &valid.replacen('{', r#"{"type":"x","#, 1)),
            "HTTP/1.1 400",
            "key type is given twice",
        ),
        (
            "a key given twice inside data",
            sized(
                json,
                "",
                &valid.replacen(
                    r#""dataSourceId":8"#,
                    r#""dataSourceId":8,"dataSourceId":9"#,
                    1,
                ),
            ),
            "HTTP/1.1 400",
            "key data.dataSourceId is given twice",
        ),
        (
            "a key given twice inside a pushed value",
            sized(
                json,
                "",
                r#"{"type":"event.data.epoch.create","endUserId":"u","data":[{"dataSourceId":8,
                  "epochData":[{"dataTypeId":3000,"value":"1","value":"2"}]}]}"#,
            ),
            "HTTP/1.1 400",
            "key data[0].epochData[0].value is given twice",
        ),
        (
            "two sourceUpdate form fields",
            sized(
                form_type,
                "",
                &format!(
                    "{}&{}",
                    String::from_utf8(form(update)).unwrap(),
                    String::from_utf8(form(update)).unwrap()
                ),
            ),
            "HTTP/1.1 400",
            "form field sourceUpdate is given twice",
        ),
        (
            "a key given twice in the sourceUpdate form field",
            sized(
                form_type,
                "",
                &String::from_utf8(form(&update.replace('}', r#","dataSource":2}"#))).unwrap(),
            ),
            "HTTP/1.1 400",
            "key sourceUpdate.dataSource is given twice",
        ),
    ];
    for (name, raw, status_line, error) in cases {
        let response = raw_exchange(app.addr, raw.as_bytes()).await;
        assert!(response.starts_with(status_line), "{name}: {response:?}");
        if !error.is_empty() {
            let body = response.split_once("\r\n\r\n").map_or("", |(_, body)| body);
            let said: Value = serde_json::from_str(body).unwrap_or_default();
            let said = said["error"].as_str().unwrap_or_default();
            assert!(
                said.contains(error),
                "{name}: {error:?} not in {response:?}"
            );
        }
    }
    assert_eq!(app.inbox_count().await, 0, "nothing stored");
    // The same requests made unambiguous are stored: a head of exactly 64 KiB, chunked alone
    // and after a coding the bridge undoes.
    for (name, raw) in [
        ("a request head of 64 KiB", padded(64 * 1024).into_bytes()),
        (
            "chunked",
            chunked("Transfer-Encoding: chunked\r\nConnection: close").into_bytes(),
        ),
        (
            "gzip, chunked",
            chunked_body(
                "Transfer-Encoding: gzip, chunked\r\nConnection: close",
                &gzip(valid.as_bytes()),
            ),
        ),
    ] {
        let response = raw_exchange(app.addr, &raw).await;
        assert!(response.starts_with("HTTP/1.1 200"), "{name}: {response:?}");
        assert!(
            response.contains("\r\ncontent-length: "),
            "{name}: the answer's length is sent: {response:?}"
        );
    }
    assert_eq!(app.inbox_count().await, 1, "one content, three spellings");
}

/// A slow client: connected, its request head begun and never finished.
async fn partial_head(addr: SocketAddr) -> TcpStream {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(b"POST /webhooks/thryve HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    stream
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_slow_clients_at_once_are_dropped_while_others_are_served() {
    let mut config = test_config();
    // 500 ms instead of 10 s: the test waits for the slow clients to be dropped.
    config.listener.header_read_timeout_ms = 500;
    let app = spawn_app_with(config).await;
    let mut slow = Vec::new();
    for _ in 0..100 {
        slow.push(partial_head(app.addr).await);
    }
    let (status, ack) = answer(
        app.post_json(&epoch_notification("meanwhile", 1, 2, &[1]))
            .await,
    )
    .await;
    assert_eq!((status, ack["outcome"].as_str()), (200, Some("stored")));
    let deadline = Instant::now() + Duration::from_secs(15);
    for mut stream in slow {
        let mut rest = Vec::new();
        let left = deadline.saturating_duration_since(Instant::now());
        let read = tokio::time::timeout(left, stream.read_to_end(&mut rest)).await;
        assert!(
            read.is_ok(),
            "every slow client is dropped by the header timeout"
        );
    }
    assert_eq!(app.inbox_count().await, 1);
}

/// While three quarters of `MAX_CONNECTIONS` are open, a connection without a complete request
/// head is closed after `HEADER_READ_TIMEOUT_CROWDED_MS`, not `HEADER_READ_TIMEOUT_MS`, until
/// fewer than half are open. So of six slow clients under a cap of eight, at least three are
/// closed long before the 30 s timeout; the others only if they had waited the crowded timeout
/// by then (on a loaded machine the six connect over more than 500 ms, and the last ones are
/// left to the uncrowded timeout, as they should be).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crowded_connections_get_the_shorter_header_timeout() {
    let mut config = test_config();
    config.listener.max_connections = 8;
    config.listener.header_read_timeout_ms = 30_000;
    config.listener.header_read_timeout_crowded_ms = 500;
    let app = spawn_app_with(config).await;
    let started = Instant::now();
    let mut slow = Vec::new();
    // Six of eight: crowded.
    for _ in 0..6 {
        slow.push(partial_head(app.addr).await);
    }
    let mut closed = 0;
    for mut stream in slow {
        let mut rest = Vec::new();
        let left = Duration::from_secs(10).saturating_sub(started.elapsed());
        if tokio::time::timeout(left, stream.read_to_end(&mut rest))
            .await
            .is_ok()
        {
            closed += 1;
        }
    }
    eprintln!("{closed} of six connections closed within 10 s");
    assert!(
        closed >= 3,
        "{closed} of six closed long before the 30 s header timeout: crowding ends only below half of the cap"
    );
    let (status, _) = answer(
        app.post_json(&epoch_notification("uncrowded", 1, 2, &[1]))
            .await,
    )
    .await;
    assert_eq!(status, 200);
}

/// At the cap, only connections waiting for a request head are shed: one whose body is still
/// arriving is not, and its delivery is stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_under_way_is_never_shed_for_new_clients() {
    let mut config = test_config();
    config.listener.max_connections = 4;
    let app = spawn_app_with(config).await;
    let body = epoch_notification("under-way", 1, 2, &[1]).to_string();
    let auth = {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{PASSWORD}"))
    };
    let mut busy = TcpStream::connect(app.addr).await.unwrap();
    let (first, rest) = body.split_at(body.len() / 2);
    busy.write_all(
        format!(
            "POST /webhooks/thryve HTTP/1.1\r\nHost: x\r\nAuthorization: Basic {auth}\r\n\
             Content-Type: application/json\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{first}",
            body.len()
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    // Three fill the cap, three more each shed one of them.
    let mut idle = Vec::new();
    for _ in 0..6 {
        idle.push(TcpStream::connect(app.addr).await.unwrap());
    }
    let shed = || async {
        app.metrics()
            .await
            .lines()
            .find_map(|l| l.strip_prefix("thryve_bridge_http_connections_shed_total "))
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // /metrics needs a connection too: it sheds one more.
    wait_until(
        Duration::from_secs(10),
        "three idle connections shed",
        || async { shed().await >= 3.0 },
    )
    .await;
    busy.write_all(rest.as_bytes()).await.unwrap();
    let mut response = String::new();
    busy.read_to_string(&mut response).await.unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response:?}");
    assert_eq!(app.inbox_count().await, 1);
}

/// The real binary, killed when dropped; its stderr lines are collected as they come.
struct Bridge {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Drop for Bridge {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Bridge {
    fn start(db: &TestDb, env: &[(&str, &str)]) -> Self {
        let mut command = Command::new(env!("CARGO_BIN_EXE_thryve-bridge"));
        command
            .arg("serve")
            .current_dir(std::env::temp_dir())
            .env("DATABASE_URL", db.url())
            .env("BIND_ADDR", "127.0.0.1:0")
            .env("WEBHOOK_BASIC_AUTH", format!("{USER}:{PASSWORD}"))
            .env("POLLER_ENABLED", "false")
            .env("HOUSEKEEPING_ENABLED", "false")
            .env("LOG_FORMAT", "json")
            .env("RUST_LOG", "info")
            .env_remove("WEBHOOK_AUTH_HEADER")
            .env_remove("WEBHOOK_HMAC_SECRET")
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (k, v) in env {
            command.env(k, v);
        }
        let mut child = command.spawn().expect("the binary starts");
        let stderr = child.stderr.take().unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        std::thread::spawn({
            let lines = lines.clone();
            move || {
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    lines.lock().unwrap().push(line);
                }
            }
        });
        Self { child, lines }
    }

    fn logged(&self, message: &str) -> Vec<Value> {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|l| l["message"] == message)
            .collect()
    }

    async fn addr(&self) -> SocketAddr {
        let mut addr = None;
        wait_until(
            Duration::from_secs(15),
            "a start line with bind_addr",
            || {
                addr = self
                    .logged("thryve-bridge started")
                    .first()
                    .and_then(|l| l["bind_addr"].as_str()?.parse().ok());
                std::future::ready(addr.is_some())
            },
        )
        .await;
        addr.unwrap()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_idle_connections_over_max_connections_are_shed_and_a_delivery_gets_200() {
    let db = TestDb::new().await;
    let mut bridge = Bridge::start(
        &db,
        &[("MAX_CONNECTIONS", "4"), ("HEADER_READ_TIMEOUT_MS", "300")],
    );
    let addr = bridge.addr().await;
    let mut idle = Vec::new();
    for _ in 0..50 {
        idle.push(
            TcpStream::connect(addr)
                .await
                .expect("the backlog takes it"),
        );
    }
    // Behind the 50: at the cap of 4, each new client sheds the connection idle longest.
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap();
    let response = client
        .post(format!("http://{addr}/webhooks/thryve"))
        .basic_auth(USER, Some(PASSWORD))
        .json(&epoch_notification("after-the-crowd", 1, 2, &[1]))
        .send()
        .await
        .expect("answered within the deadline");
    let (status, ack) = answer(response).await;
    assert_eq!((status, ack["outcome"].as_str()), (200, Some("stored")));
    let deadline = Instant::now() + Duration::from_secs(10);
    for mut stream in idle {
        let mut rest = Vec::new();
        let left = deadline.saturating_duration_since(Instant::now());
        let read = tokio::time::timeout(left, stream.read_to_end(&mut rest)).await;
        assert!(
            read.is_ok(),
            "every idle connection is closed by the server"
        );
    }
    assert!(bridge.child.try_wait().unwrap().is_none(), "still running");
    let metrics = client
        .get(format!("http://{addr}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let open: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("thryve_bridge_http_connections_open "))
        .expect("the gauge is exported")
        .parse()
        .unwrap();
    assert!((1.0..=4.0).contains(&open), "{open} open connections");
    let shed: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("thryve_bridge_http_connections_shed_total "))
        .expect("the counter is exported")
        .parse()
        .unwrap();
    assert!(shed >= 1.0, "idle connections shed for new clients: {shed}");
    let warnings = bridge.logged(
        "connection limit reached (MAX_CONNECTIONS); shedding connections without a request head",
    );
    assert_eq!(warnings.len(), 1, "logged once, not per connection");
    assert_eq!(warnings[0]["level"], "WARN");
    assert_eq!(warnings[0]["max_connections"], 4);
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM thryve.inbox")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(stored, 1);
    let _ = bridge.child.kill();
}
