//! The server as a process would run it: graceful shutdown under load, TLS, slow clients.

use std::{
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
    sync::Notify,
};

use crate::support::{
    answer, epoch_notification, receiver_only, spawn_app_with, test_config, PASSWORD, USER,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn shutdown_under_load_loses_no_acknowledged_delivery() {
    let mut app = spawn_app_with(test_config()).await;
    let ok = Arc::new(AtomicUsize::new(0));
    let enough = Arc::new(Notify::new());
    let senders: Vec<_> = (0..16)
        .map(|sender| {
            let (client, url, ok, enough) = (
                app.client.clone(),
                app.url("/webhooks/thryve"),
                ok.clone(),
                enough.clone(),
            );
            tokio::spawn(async move {
                let mut acknowledged = Vec::new();
                for i in 0..10_000_i64 {
                    let body = epoch_notification(&format!("load-{sender}"), i, i + 1, &[1]);
                    let Ok(response) = client
                        .post(&url)
                        .basic_auth(USER, Some(PASSWORD))
                        .json(&body)
                        .send()
                        .await
                    else {
                        break; // the server has stopped accepting
                    };
                    if response.status() != 200 {
                        assert_eq!(response.status(), 503, "only an honest refusal besides 200");
                        continue;
                    }
                    let ack: serde_json::Value = response.json().await.unwrap();
                    acknowledged.push(ack["inbox_id"].as_i64().unwrap());
                    if ok.fetch_add(1, Ordering::SeqCst) == 300 {
                        enough.notify_one();
                    }
                }
                acknowledged
            })
        })
        .collect();
    enough.notified().await;
    let started = Instant::now();
    app.stop().await;
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "stopped within its shutdown timeout"
    );
    let mut acknowledged = Vec::new();
    for s in senders {
        acknowledged.extend(s.await.unwrap());
    }
    assert!(acknowledged.len() > 300);
    let stored: Vec<i64> = sqlx::query_scalar("SELECT id FROM thryve.inbox WHERE id = ANY($1)")
        .bind(&acknowledged)
        .fetch_all(&app.db.pool)
        .await
        .unwrap();
    assert_eq!(
        stored.len(),
        acknowledged.len(),
        "every 200 is a committed row"
    );
}

#[tokio::test]
async fn serves_https_with_the_configured_certificate() {
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let dir = std::env::temp_dir().join(format!("thryve-tls-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let (cert_path, key_path) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert_path, cert.cert.pem()).unwrap();
    std::fs::write(&key_path, cert.key_pair.serialize_pem()).unwrap();
    let mut config = test_config();
    // TLS is what the test is about: off by default.
    config.listener.tls_cert_path = Some(cert_path);
    config.listener.tls_key_path = Some(key_path);
    let app = spawn_app_with(config).await;

    let client = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(cert.cert.pem().as_bytes()).unwrap())
        .resolve("localhost", app.addr)
        .build()
        .unwrap();
    let url = format!("https://localhost:{}/webhooks/thryve", app.addr.port());
    let response = client
        .post(&url)
        .basic_auth(USER, Some(PASSWORD))
        .json(&epoch_notification("tls", 1, 2, &[1]))
        .send()
        .await
        .unwrap();
    let (status, ack) = answer(response).await;
    assert_eq!((status, ack["outcome"].as_str()), (200, Some("stored")));
    // Plain HTTP to the TLS port gets no answer.
    assert!(app.client.get(app.url("/healthz")).send().await.is_err());
    std::fs::remove_dir_all(dir).ok();
}

#[tokio::test]
async fn a_client_that_never_finishes_its_headers_is_dropped() {
    let mut config = test_config();
    // 300 ms instead of 10 s: the test waits for the timeout to drop the client.
    config.listener.header_read_timeout_ms = 300;
    let app = spawn_app_with(config).await;
    let mut slow = TcpStream::connect(app.addr).await.unwrap();
    slow.write_all(b"POST /webhooks/thryve HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let started = Instant::now();
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), slow.read_to_end(&mut buf)).await;
    assert!(read.is_ok(), "the server closed the connection");
    assert!(started.elapsed() >= Duration::from_millis(250));
    // Everyone else is still served.
    assert_eq!(app.get_status("/healthz").await, 200);
}

#[tokio::test]
async fn a_body_that_trickles_in_past_the_deadline_gets_408_and_nothing_is_stored() {
    let mut config = test_config();
    // 300 ms instead of 1.5 s: the test trickles a body in past the deadline.
    config.receiver.ack_deadline_ms = 300;
    let app = spawn_app_with(config).await;
    let mut slow = TcpStream::connect(app.addr).await.unwrap();
    let auth = base64_basic();
    slow.write_all(format!("POST /webhooks/thryve HTTP/1.1\r\nHost: x\r\nAuthorization: {auth}\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"a\":").as_bytes())
        .await
        .unwrap();
    let mut buf = vec![0; 4096];
    let n = tokio::time::timeout(Duration::from_secs(10), slow.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    let text = String::from_utf8_lossy(&buf[..n]);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(text.contains("request body not received within 300 ms"));
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM thryve.inbox")
        .fetch_one(&app.db.pool)
        .await
        .unwrap();
    assert_eq!(rows, 0);
}

fn base64_basic() -> String {
    use base64::Engine;
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{PASSWORD}"))
    )
}

#[tokio::test]
async fn metrics_describe_real_traffic() {
    // The server's poller off: the inbox gauges count rows as the receiver stored them.
    let app = spawn_app_with(receiver_only()).await;
    let body = epoch_notification("metrics", 1, 2, &[1]);
    app.post_json(&body).await;
    app.post_json(&body).await;
    app.post_json(
        &serde_json::json!({"type": "notification.data.epoch.createupdate", "endUserId": "m"}),
    )
    .await;
    app.post_json(&serde_json::json!({"type": "brand.new.kind", "endUserId": "m"}))
        .await;
    app.webhook().body("{}").send().await.unwrap();
    app.post("[]").await;
    let response = app.client.get(app.url("/metrics")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let text = response.text().await.unwrap();
    for line in [
        r#"thryve_bridge_deliveries_total{outcome="stored",event_type="notification.data.epoch.createupdate"} 1"#,
        r#"thryve_bridge_deliveries_total{outcome="duplicate",event_type="notification.data.epoch.createupdate"} 1"#,
        r#"thryve_bridge_deliveries_total{outcome="quarantined",event_type="notification.data.epoch.createupdate"} 1"#,
        r#"thryve_bridge_deliveries_total{outcome="ignored",event_type="other"} 1"#,
        r#"thryve_bridge_deliveries_total{outcome="unauthorized",event_type=""} 1"#,
        r#"thryve_bridge_deliveries_total{outcome="bad_request",event_type=""} 1"#,
        "thryve_bridge_ack_latency_seconds_count 6",
        r#"thryve_bridge_inbox_rows{status="pending"} 1"#,
        r#"thryve_bridge_inbox_rows{status="quarantined"} 1"#,
        r#"thryve_bridge_inbox_rows{status="ignored"} 1"#,
        r#"thryve_bridge_inbox_rows{status="processed"} 0"#,
        r#"thryve_bridge_dirty_ranges{status="pending"} 0"#,
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "missing {line:?} in\n{text}"
        );
    }
    for name in [
        "thryve_bridge_inbox_oldest_pending_age_seconds",
        "thryve_bridge_dirty_ranges_oldest_pending_age_seconds",
        "thryve_bridge_seconds_since_last_delivery",
        "thryve_bridge_db_pool_connections_in_use",
        "thryve_bridge_last_delivery_timestamp_seconds",
        "thryve_bridge_poller_batch_rows_count",
    ] {
        assert!(
            text.lines().any(|l| l.starts_with(name)),
            "missing {name} in\n{text}"
        );
    }
    assert!(
        !text.contains(crate::support::PASSWORD),
        "no secret in metrics"
    );
}
