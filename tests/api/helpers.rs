//! Test fixtures: a throw-away database per test and the real server bound to port 0.

use std::{net::SocketAddr, str::FromStr, time::Duration};

use sqlx::{
    postgres::{PgConnectOptions, PgPoolOptions},
    ConnectOptions, Connection, PgConnection, PgPool,
};
use thryve_bridge::{
    config::{FetcherConfig, RetentionConfig, Secret, ServeConfig},
    db,
    http::hmac::{HmacMode, Layout, LayoutSetting},
    server::Application,
};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub const USER: &str = "thryve";
pub const PASSWORD: &str = "s3cret";
pub const ROTATED_PASSWORD: &str = "n3w-s3cret";

/// The server under test reaches Postgres here: `DATABASE_URL` if set, else the local default.
pub fn admin_url() -> String {
    std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

/// A database of its own for one test, dropped when the test ends.
pub struct TestDb {
    pub name: String,
    pub options: PgConnectOptions,
    pub pool: PgPool,
}

impl TestDb {
    pub async fn new() -> Self {
        let db = Self::unmigrated().await;
        db::migrate(&db.pool)
            .await
            .expect("migrations apply to a fresh database");
        db
    }

    pub async fn unmigrated() -> Self {
        let admin =
            PgConnectOptions::from_str(&admin_url()).expect("DATABASE_URL is a valid postgres URL");
        let mut conn = admin.connect().await.unwrap_or_else(|e| {
            panic!(
                "cannot reach Postgres at {} ({e}).\nStart one (`docker compose up -d db`, or \
                 `pg_ctlcluster <version> main start`) or set DATABASE_URL to a server where this \
                 user may CREATE DATABASE.",
                admin_url()
            )
        });
        let name = format!("thryve_test_{}", uuid::Uuid::new_v4().simple());
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut conn)
            .await
            .expect("the test user may create databases");
        conn.close().await.ok();
        let options = admin.database(&name);
        let pool = PgPoolOptions::new()
            .max_connections(5)
            .connect_with(options.clone())
            .await
            .expect("connect to the new test database");
        Self {
            name,
            options,
            pool,
        }
    }

    /// A connection string for this database, for a process or pool of the test's own.
    pub fn url(&self) -> String {
        self.options.to_url_lossy().to_string()
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let name = self.name.clone();
        // Drop runs outside async context guarantees; a thread with its own runtime is safe anywhere.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                if let Ok(mut conn) = PgConnection::connect(&admin_url()).await {
                    let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                        .execute(&mut conn)
                        .await;
                }
            });
        })
        .join();
    }
}

/// The service's settings in tests: two valid Basic passwords; the poller and housekeeping
/// off, so a test drives them (or turns them on) itself.
pub fn test_config() -> ServeConfig {
    ServeConfig {
        bind_addr: "127.0.0.1:0".parse().unwrap(),
        webhook_basic_auth: Some(Secret::new(format!(
            "{USER}:{PASSWORD},{USER}:{ROTATED_PASSWORD}"
        ))),
        webhook_auth_header: None,
        webhook_hmac_secret: None,
        webhook_hmac_layout: LayoutSetting::Fixed(Layout::WIRE_THEN_TIMESTAMP),
        webhook_hmac_mode: HmacMode::Enforce,
        webhook_hmac_window_secs: 300,
        webhook_allow_unauthenticated: false,
        max_body_bytes: 1024 * 1024,
        body_budget_bytes: 32 * 1024 * 1024,
        ack_deadline_ms: 1500,
        retry_after_secs: 5,
        migrate_on_start: false,
        ingest_batch_max: 128,
        ingest_writers: 4,
        receiver_enabled: true,
        poller_enabled: false,
        poll_batch_size: 500,
        poll_concurrency: 1,
        poll_interval_ms: 1000,
        poll_notify: true,
        tls_cert_path: None,
        tls_key_path: None,
        header_read_timeout_ms: 10_000,
        max_connections: 1024,
        shutdown_timeout_secs: 10,
        housekeeping_enabled: false,
        housekeeping_interval_secs: 60,
        spool_dir: None,
        spool_margin_ms: 250,
        retention: test_retention(),
        fetcher: test_fetcher_config(),
    }
}

/// The fetcher's settings in tests: off, with credentials a fake Thryve checks, no rate cap
/// and short waits; a test turns it on and points THRYVE_API_URL at its fake.
pub fn test_fetcher_config() -> FetcherConfig {
    FetcherConfig {
        fetcher_enabled: false,
        thryve_api_url: "http://127.0.0.1:9".to_owned(),
        thryve_api_user: "partner".to_owned(),
        thryve_api_password: Some(Secret::new("partner-pw")),
        thryve_app_id: "app-id".to_owned(),
        thryve_app_secret: Some(Secret::new("app-secret")),
        fetcher_concurrency: 2,
        fetcher_rate_per_sec: 0.0,
        fetcher_timeout_ms: 5_000,
        fetcher_max_response_bytes: 1024 * 1024,
        fetcher_max_tries: 3,
        fetcher_backoff_ms: 10,
        fetcher_backoff_max_ms: 100,
        fetcher_lease_secs: 60,
        fetcher_interval_ms: 200,
        fetcher_auth_pause_secs: 60,
        fetcher_worker: "test-fetcher".to_owned(),
    }
}

/// The documented retention defaults; tests shorten what they exercise.
pub fn test_retention() -> RetentionConfig {
    RetentionConfig {
        inbox_retention: Duration::from_secs(30 * 86_400),
        range_retention: Duration::from_secs(7 * 86_400),
        payload_retention: None,
        housekeeping_batch: 1000,
    }
}

/// The real server, listening on a random local port.
pub struct TestApp {
    pub addr: SocketAddr,
    pub db: TestDb,
    pub client: reqwest::Client,
    shutdown: CancellationToken,
    server: Option<JoinHandle<()>>,
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(test_config()).await
}

pub async fn spawn_app_with(config: ServeConfig) -> TestApp {
    let db = TestDb::new().await;
    let pool = db::pool(&db.url(), 10, config.ack_deadline()).unwrap();
    spawn_on(db, pool, config).await
}

/// Serves with a pool of the caller's making (e.g. through a proxy that can cut the database off).
pub async fn spawn_on(db: TestDb, pool: PgPool, config: ServeConfig) -> TestApp {
    let app = Application::build(&config, pool).await.expect("app builds");
    let addr = app.local_addr();
    let shutdown = CancellationToken::new();
    let server = tokio::spawn({
        let shutdown = shutdown.clone();
        async move { app.run_until_stopped(shutdown).await.expect("server runs") }
    });
    TestApp {
        addr,
        db,
        client: reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap(),
        shutdown,
        server: Some(server),
    }
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// POSTs a webhook with the valid credentials.
    pub async fn post(&self, body: impl Into<reqwest::Body>) -> reqwest::Response {
        self.webhook()
            .basic_auth(USER, Some(PASSWORD))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .expect("request completes")
    }

    pub async fn post_json(&self, body: &serde_json::Value) -> reqwest::Response {
        self.post(body.to_string()).await
    }

    /// The status of a GET of `path` (`/readyz`, `/healthz`, ...).
    pub async fn get_status(&self, path: &str) -> reqwest::StatusCode {
        self.client
            .get(self.url(path))
            .send()
            .await
            .expect("request completes")
            .status()
    }

    /// The text of `GET /metrics`.
    pub async fn metrics(&self) -> String {
        self.client
            .get(self.url("/metrics"))
            .send()
            .await
            .expect("request completes")
            .text()
            .await
            .expect("a text body")
    }

    pub fn webhook(&self) -> reqwest::RequestBuilder {
        self.client.post(self.url("/webhooks/thryve"))
    }

    /// Stops the server gracefully and waits for it; the database stays for inspection.
    pub async fn stop(&mut self) {
        self.shutdown.cancel();
        if let Some(server) = self.server.take() {
            server.await.unwrap();
        }
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// Status and JSON body of a response.
pub async fn answer(response: reqwest::Response) -> (u16, serde_json::Value) {
    let status = response.status().as_u16();
    let body = response.json().await.expect("every answer is JSON");
    (status, body)
}

/// A valid unix-form epoch notification for `user`.
pub fn epoch_notification(
    user: &str,
    start_ms: i64,
    end_ms: i64,
    types: &[i32],
) -> serde_json::Value {
    serde_json::json!({
        "endUserId": user, "timestampType": "unix", "type": "notification.data.epoch.createupdate",
        "data": {"startTimestamp": start_ms, "endTimestamp": end_ms, "dataSourceId": 8, "dataTypeIds": types}
    })
}

/// `data` as a zstd frame.
pub fn zstd(data: &[u8]) -> Vec<u8> {
    zstd::encode_all(data, 3).unwrap()
}

/// `data` as a gzip member.
pub fn gzip(data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

/// Standard base64 with padding, as Thryve writes it.
pub fn base64(data: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(data)
}

/// A data push as Thryve puts it on the wire: base64 text of a zstd frame.
pub fn thryve_wire(json: &[u8]) -> Vec<u8> {
    base64(&zstd(json)).into_bytes()
}

// issue 22

/// A database migrated only up to (not including) migration `version`, as an installation of
/// an older release has it; `db::migrate` then applies the rest.
pub async fn migrated_before(version: i64) -> TestDb {
    let db = TestDb::unmigrated().await;
    let before: Vec<_> = db::MIGRATOR
        .iter()
        .filter(|m| m.version < version)
        .cloned()
        .collect();
    sqlx::migrate::Migrator {
        migrations: std::borrow::Cow::Owned(before),
        ignore_missing: false,
        locking: true,
        no_tx: false,
    }
    .run(&db.pool)
    .await
    .expect("the earlier migrations apply");
    db
}
