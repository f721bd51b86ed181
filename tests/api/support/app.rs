//! The real server bound to port 0, on the settings a user gets.

use std::{net::SocketAddr, time::Duration};

use sqlx::PgPool;
use thryve_bridge::{
    config::{
        hmac::{HmacMode, LayoutSetting},
        parse_env, DatabaseConfig, Secret, ServeConfig,
    },
    db,
    server::Application,
};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::{wait_until, TestDb};

pub const USER: &str = "thryve";
pub const PASSWORD: &str = "s3cret";
pub const ROTATED_PASSWORD: &str = "n3w-s3cret";

/// The settings a user gets (`serve` parsed from an empty environment), with only what every
/// test must change: port 0, because tests run in parallel; and Basic credentials, because
/// the receiver refuses to start without one (the tests post with the first; the second is
/// a rotated password). A test overrides what it is about, and says why.
pub fn test_config() -> ServeConfig {
    ServeConfig::from_env([
        ("BIND_ADDR", "127.0.0.1:0".to_owned()),
        (
            "WEBHOOK_BASIC_AUTH",
            format!("{USER}:{PASSWORD},{USER}:{ROTATED_PASSWORD}"),
        ),
    ])
    .expect("the test settings parse")
}

/// [`test_config`] with the poller off, for a test that reads rows as the receiver left them
/// (`pending`, their typed columns) or drives the poller itself: with the default poller
/// running, those rows would turn `processed` while the test looks.
pub fn receiver_only() -> ServeConfig {
    let mut config = test_config();
    config.poller.poller_enabled = false;
    config
}

/// The HMAC secret of [`signed_config`].
pub const HMAC_SECRET: &str = "thryve-hmac-secret";

/// [`test_config`] with signatures (secret [`HMAC_SECRET`]) of `layout` checked in `mode`,
/// and no Basic credential: a signed delivery needs nothing else.
pub fn signed_config(layout: LayoutSetting, mode: HmacMode) -> ServeConfig {
    let mut config = test_config();
    config.receiver.webhook_basic_auth = None;
    config.receiver.webhook_hmac_secret = Some(Secret::new(HMAC_SECRET));
    config.receiver.webhook_hmac_layout = layout;
    config.receiver.webhook_hmac_mode = mode;
    config
}

/// The real server, listening on a random local port.
pub struct TestApp {
    pub addr: SocketAddr,
    pub db: TestDb,
    pub client: reqwest::Client,
    shutdown: CancellationToken,
    server: Option<JoinHandle<()>>,
}

/// The server on the defaults ([`test_config`]).
pub async fn spawn_app() -> TestApp {
    spawn_app_with(test_config()).await
}

/// The server on `config`, with a pool of the default size (`DATABASE_MAX_CONNECTIONS`).
pub async fn spawn_app_with(config: ServeConfig) -> TestApp {
    let db = TestDb::new().await;
    let database: DatabaseConfig =
        parse_env::<_, &str, &str>([]).expect("the database defaults parse");
    let pool = db::pool(
        &db.url(),
        database.database_max_connections,
        config.receiver.ack_deadline(),
    )
    .unwrap();
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

    /// POSTs `body` under `content-encoding: encoding`, with the valid credentials.
    pub async fn post_encoded(
        &self,
        encoding: &str,
        body: impl Into<reqwest::Body>,
    ) -> reqwest::Response {
        self.webhook()
            .basic_auth(USER, Some(PASSWORD))
            .header("content-type", "application/json")
            .header("content-encoding", encoding)
            .body(body)
            .send()
            .await
            .expect("request completes")
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

    /// Rows in `thryve.inbox`, whatever their status.
    pub async fn inbox_count(&self) -> i64 {
        sqlx::query_scalar("SELECT count(*) FROM thryve.inbox")
            .fetch_one(&self.db.pool)
            .await
            .unwrap()
    }

    /// Waits until the serving poller has processed every inbox row (none is `pending`):
    /// with the default settings it takes each delivery as it commits.
    pub async fn wait_processed(&self) {
        let pool = &self.db.pool;
        wait_until(Duration::from_secs(20), "no pending inbox row", || async {
            let pending: i64 =
                sqlx::query_scalar("SELECT count(*) FROM thryve.inbox WHERE status = 'pending'")
                    .fetch_one(pool)
                    .await
                    .unwrap();
            pending == 0
        })
        .await;
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

/// Status, `Retry-After` and JSON body of one delivery with the valid credentials to a
/// server at `addr` (one the test started itself).
pub async fn post_to(
    addr: SocketAddr,
    body: &serde_json::Value,
) -> (u16, Option<String>, serde_json::Value) {
    let response = reqwest::Client::new()
        .post(format!("http://{addr}/webhooks/thryve"))
        .basic_auth(USER, Some(PASSWORD))
        .json(body)
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .expect("answered");
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    (
        status,
        retry_after,
        response.json().await.expect("JSON answer"),
    )
}

/// Status and JSON body of a response.
pub async fn answer(response: reqwest::Response) -> (u16, serde_json::Value) {
    let status = response.status().as_u16();
    let body = response.json().await.expect("every answer is JSON");
    (status, body)
}
