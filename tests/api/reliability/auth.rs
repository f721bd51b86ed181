//! Credentials: ambiguous requests are refused, and no secret reaches a log line, an error
//! body, the metrics or the command line's output.

use std::time::Duration;

use base64::{engine::general_purpose::STANDARD, Engine as _};
use reqwest::header::{HeaderMap, HeaderValue, AUTHORIZATION};
use serde_json::Value;
use thryve_bridge::{
    config::Secret,
    http::hmac::{sign, Layout, SIGNATURE_HEADER, TIMESTAMP_HEADER},
};

use super::faults::Bridge;
use crate::support::{
    answer, epoch_notification, spawn_app_with, test_config, wait_until, TestDb, PASSWORD, USER,
};

fn basic(user: &str, password: &str) -> String {
    format!("Basic {}", STANDARD.encode(format!("{user}:{password}")))
}

#[tokio::test]
async fn repeated_credential_headers_get_401_and_nothing_is_stored() {
    let mut config = test_config();
    // A fixed header besides Basic: the test repeats both.
    config.receiver.webhook_auth_header = Some(Secret::new("X-Thryve-Key: k1"));
    let app = spawn_app_with(config).await;
    let right = basic(USER, PASSWORD);
    let wrong = basic(USER, "nope");
    let body = epoch_notification("twice", 1, 2, &[1]).to_string();
    let cases: [&[(&str, &str)]; 5] = [
        &[("authorization", &right), ("authorization", &wrong)],
        &[("authorization", &wrong), ("authorization", &right)],
        &[("authorization", &right), ("authorization", &right)],
        &[("x-thryve-key", "k1"), ("x-thryve-key", "k0")],
        &[("x-thryve-key", "k1"), ("x-thryve-key", "k1")],
    ];
    for headers in cases {
        let mut request = app.webhook().header("content-type", "application/json");
        for (name, value) in headers {
            // `header` appends, so each pair is its own header line.
            request = request.header(*name, *value);
        }
        let (status, error) = answer(request.body(body.clone()).send().await.unwrap()).await;
        assert_eq!(status, 401, "{headers:?}: {error}");
    }
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM thryve.inbox")
        .fetch_one(&app.db.pool)
        .await
        .unwrap();
    assert_eq!(rows, 0);
    // Each alone is taken.
    for (name, value) in [("authorization", right.as_str()), ("x-thryve-key", "k1")] {
        let response = app
            .webhook()
            .header(name, value)
            .body(body.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{name}");
    }
}

const DB_PASSWORD: &str = "Db-Pa55-XYZ";
const BASIC_USER: &str = "hook-user";
const BASIC_PASSWORD: &str = "Basic-Pa55-QRS";
/// Shares all but its last character with the real password.
const NEAR_PASSWORD: &str = "Basic-Pa55-QRT";
const HEADER_NAME: &str = "X-Thryve-Key";
const HEADER_VALUE: &str = "Hdr-S3cret-TUV";
const NEAR_HEADER_VALUE: &str = "Hdr-S3cret-TUW";
const HMAC_SECRET: &str = "Hmac-S3cret-WXY";
const NEAR_HMAC_SECRET: &str = "Hmac-S3cret-WXZ";

/// Signature headers over `body` by `secret`, timestamped now.
fn signed(secret: &str, body: &[u8]) -> HeaderMap {
    let timestamp = chrono::Utc::now().timestamp_millis().to_string();
    let signature = sign(
        secret.as_bytes(),
        Layout::WIRE_THEN_TIMESTAMP,
        body,
        timestamp.as_bytes(),
    );
    let mut headers = HeaderMap::new();
    headers.insert(TIMESTAMP_HEADER, timestamp.parse().unwrap());
    headers.insert(SIGNATURE_HEADER, signature.parse().unwrap());
    headers
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_reaches_logs_error_bodies_metrics_or_cli_output() {
    let db = TestDb::new().await;
    // Trust authentication ignores the password, so it can be any recognisable string.
    let database_url = format!(
        "postgres://{}:{DB_PASSWORD}@{}:{}/{}",
        db.options.get_username(),
        db.options.get_host(),
        db.options.get_port(),
        db.name
    );
    // A delivery the database refuses, so a database error is logged too.
    sqlx::raw_sql(
        "CREATE FUNCTION public.refuse() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN
             IF NEW.end_user_id = 'refused' THEN RAISE EXCEPTION 'refused' USING ERRCODE = 'disk_full'; END IF;
             RETURN NEW;
         END $$;
         CREATE TRIGGER refuse BEFORE INSERT ON thryve.inbox FOR EACH ROW EXECUTE FUNCTION public.refuse();",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    let basic_auth = format!("{BASIC_USER}:{BASIC_PASSWORD}");
    let header_auth = format!("{HEADER_NAME}: {HEADER_VALUE}");
    let env = [
        ("DATABASE_URL", database_url.as_str()),
        ("BIND_ADDR", "127.0.0.1:0"),
        ("LOG_FORMAT", "json"),
        ("RUST_LOG", "debug"),
        ("WEBHOOK_BASIC_AUTH", basic_auth.as_str()),
        ("WEBHOOK_AUTH_HEADER", header_auth.as_str()),
        ("WEBHOOK_HMAC_SECRET", HMAC_SECRET),
        ("POLL_INTERVAL_MS", "100"),
        ("ACK_DEADLINE_MS", "3000"),
    ];
    let mut bridge = Bridge::spawn(&["serve"], &env);
    let mut started = None;
    wait_until(Duration::from_secs(20), "the start-up line", || {
        started = bridge
            .output()
            .lines()
            .filter_map(|line| serde_json::from_str::<Value>(line).ok())
            .find(|line| line["message"] == "thryve-bridge started");
        std::future::ready(started.is_some())
    })
    .await;
    let addr = started.unwrap()["bind_addr"].as_str().unwrap().to_owned();
    let url = format!("http://{addr}/webhooks/thryve");
    let client = reqwest::Client::new();
    let mut seen = String::new();

    let body = |user: &str| {
        epoch_notification(user, 1, 2, &[1])
            .to_string()
            .into_bytes()
    };
    let right = basic(BASIC_USER, BASIC_PASSWORD);
    let near = basic(BASIC_USER, NEAR_PASSWORD);
    type Headers = Vec<(&'static str, HeaderValue)>;
    let cases: Vec<(&str, Headers, &str, u16)> = vec![
        (
            "right basic",
            vec![("authorization", right.parse().unwrap())],
            HMAC_SECRET,
            200,
        ),
        (
            "right header",
            vec![(HEADER_NAME, HEADER_VALUE.parse().unwrap())],
            HMAC_SECRET,
            200,
        ),
        (
            "near password",
            vec![("authorization", near.parse().unwrap())],
            HMAC_SECRET,
            401,
        ),
        (
            "near header",
            vec![(HEADER_NAME, NEAR_HEADER_VALUE.parse().unwrap())],
            HMAC_SECRET,
            401,
        ),
        (
            "near hmac",
            vec![("authorization", right.parse().unwrap())],
            NEAR_HMAC_SECRET,
            401,
        ),
        (
            "raw password",
            vec![(
                "authorization",
                format!("Basic {BASIC_USER}:{BASIC_PASSWORD}")
                    .parse()
                    .unwrap(),
            )],
            HMAC_SECRET,
            401,
        ),
        (
            "not utf-8",
            vec![(
                "authorization",
                HeaderValue::from_bytes(b"Basic \xffBasic-Pa55-QRS").unwrap(),
            )],
            HMAC_SECRET,
            401,
        ),
        (
            "twice",
            vec![
                ("authorization", right.parse().unwrap()),
                ("authorization", near.parse().unwrap()),
            ],
            HMAC_SECRET,
            401,
        ),
        (
            "refused by the database",
            vec![("authorization", right.parse().unwrap())],
            HMAC_SECRET,
            503,
        ),
    ];
    for (i, (case, headers, hmac_key, expected)) in cases.into_iter().enumerate() {
        let user = if expected == 503 {
            "refused".to_owned()
        } else {
            format!("user-{i}")
        };
        let body = body(&user);
        let mut request = client
            .post(&url)
            .headers(signed(hmac_key, &body))
            .header("content-type", "application/json");
        for (name, value) in headers {
            request = request.header(name, value);
        }
        let response = request.body(body).send().await.unwrap();
        let status = response.status().as_u16();
        seen.push_str(&format!("{:?}\n", response.headers()));
        let text = response.text().await.unwrap();
        assert_eq!(status, expected, "{case}: {text}");
        seen.push_str(&text);
        seen.push('\n');
    }
    // A malformed signature header, with the right credential.
    let body = body("malformed-signature");
    let mut headers = signed(HMAC_SECRET, &body);
    headers.insert(SIGNATURE_HEADER, "zz".parse().unwrap());
    let response = client
        .post(&url)
        .headers(headers)
        .header(AUTHORIZATION, &right)
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    seen.push_str(&response.text().await.unwrap());
    for path in ["/metrics", "/readyz", "/healthz"] {
        let response = client
            .get(format!("http://{addr}{path}"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{path}");
        seen.push_str(&response.text().await.unwrap());
    }
    assert!(
        seen.contains("thryve_bridge_deliveries_total"),
        "metrics read"
    );
    assert!(bridge.terminate(Duration::from_secs(25)).await.success());
    let log = bridge.finish();
    assert!(
        log.contains("\"level\":\"DEBUG\""),
        "debug lines are captured:\n{log}"
    );
    assert!(log.contains("delivery rejected"), "{log}");
    assert!(log.contains("inbox write failed"), "{log}");
    assert!(log.contains("thryve-bridge stopped"), "{log}");
    seen.push_str(&log);

    // Settings that stop the command line, each output captured.
    let runs: [(&[&str], (&str, String), &str); 5] = [
        (
            &["serve"],
            (
                "WEBHOOK_BASIC_AUTH",
                format!("{BASIC_USER}-{BASIC_PASSWORD}"),
            ),
            "WEBHOOK_BASIC_AUTH",
        ),
        (
            &["serve"],
            (
                "WEBHOOK_AUTH_HEADER",
                format!("{HEADER_NAME} {HEADER_VALUE}"),
            ),
            "WEBHOOK_AUTH_HEADER",
        ),
        (
            &["migrate"],
            (
                "DATABASE_URL",
                format!("postgres://postgres:{DB_PASSWORD}@127.0.0.1:notaport/x"),
            ),
            "DATABASE_URL",
        ),
        (
            &["migrate"],
            (
                "DATABASE_URL",
                format!(
                    "postgres://postgres:{DB_PASSWORD}@{}:{}/no_such_database_here",
                    db.options.get_host(),
                    db.options.get_port()
                ),
            ),
            "no_such_database_here",
        ),
        (
            &["serve", "--help"],
            ("LOG_FORMAT", "json".to_owned()),
            "WEBHOOK_HMAC_SECRET",
        ),
    ];
    for (args, (variable, value), names) in runs {
        let mut run_env: Vec<(&str, &str)> = env
            .iter()
            .copied()
            .filter(|(k, _)| *k != variable)
            .collect();
        run_env.push((variable, &value));
        let mut run = Bridge::spawn(args, &run_env);
        let mut exited = None;
        wait_until(Duration::from_secs(20), "the command exits", || {
            exited = run.try_wait();
            std::future::ready(exited.is_some())
        })
        .await;
        let output = run.finish();
        assert_eq!(
            exited.unwrap().success(),
            args.contains(&"--help"),
            "{args:?}: {output}"
        );
        assert!(
            output.contains(names),
            "{args:?} names the problem: {output}"
        );
        seen.push_str(&output);
    }

    for secret in [
        DB_PASSWORD,
        BASIC_PASSWORD,
        NEAR_PASSWORD,
        &STANDARD.encode(format!("{BASIC_USER}:{BASIC_PASSWORD}")),
        &STANDARD.encode(format!("{BASIC_USER}:{NEAR_PASSWORD}")),
        HEADER_VALUE,
        NEAR_HEADER_VALUE,
        HMAC_SECRET,
        NEAR_HMAC_SECRET,
    ] {
        assert!(!seen.contains(secret), "{secret} leaked:\n{seen}");
    }
}
