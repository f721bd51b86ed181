//! A fake of Thryve's API (the data calls and `/v5/userInformation`): a real HTTP server on
//! port 0 that records every request and answers as a test's script says, in the documented
//! format.

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use axum::{
    body::Bytes,
    http::{HeaderMap, Method, StatusCode, Uri},
    response::{IntoResponse, Response},
    Router,
};
use base64::Engine;
use serde_json::{json, Value};

/// One request as the fake saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: Method,
    pub path: String,
    pub authorization: Option<String>,
    pub app_authorization: Option<String>,
    pub content_type: Option<String>,
    pub form: Vec<(String, String)>,
    pub at: Instant,
}

impl Seen {
    pub fn field(&self, key: &str) -> Option<&str> {
        self.form
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// POST, form-encoded, with the test credentials in both headers (see
    /// `support::test_fetcher_config`).
    pub fn assert_well_formed(&self) {
        let basic = |s: &str| {
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(s)
            )
        };
        assert_eq!(self.method, Method::POST);
        assert!(
            [
                "/v5/dynamicEpochValues",
                "/v5/dailyDynamicValues",
                "/v5/userInformation"
            ]
            .contains(&self.path.as_str()),
            "{}",
            self.path
        );
        assert_eq!(
            self.authorization.as_deref(),
            Some(basic("partner:partner-pw").as_str())
        );
        assert_eq!(
            self.app_authorization.as_deref(),
            Some(basic("app-id:app-secret").as_str())
        );
        assert_eq!(
            self.content_type.as_deref(),
            Some("application/x-www-form-urlencoded")
        );
        if self.path != "/v5/userInformation" {
            assert_eq!(self.field("detailed"), Some("true"));
        }
        assert!(self.field("authenticationToken").is_some());
    }
}

/// What the fake answers to one request.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub body: String,
    pub delay: Duration,
    pub retry_after: Option<u64>,
}

impl Reply {
    pub fn ok(body: Value) -> Self {
        Self::status(200, body.to_string())
    }

    pub fn status(status: u16, body: impl Into<String>) -> Self {
        Self {
            status,
            body: body.into(),
            delay: Duration::ZERO,
            retry_after: None,
        }
    }

    pub fn after(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }
}

/// The answer to the `n`th request (from 0), given the request.
pub type Script = Arc<dyn Fn(usize, &Seen) -> Reply + Send + Sync>;

pub struct FakeThryve {
    pub addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    task: tokio::task::JoinHandle<()>,
}

impl FakeThryve {
    pub async fn start(script: impl Fn(usize, &Seen) -> Reply + Send + Sync + 'static) -> Self {
        let script: Script = Arc::new(script);
        let seen = Arc::new(Mutex::new(Vec::new()));
        let app = Router::new().fallback({
            let seen = seen.clone();
            move |method: Method, uri: Uri, headers: HeaderMap, body: Bytes| {
                let seen = seen.clone();
                let script = script.clone();
                async move { handle(seen, script, method, uri, headers, body).await }
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Self { addr, seen, task }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

impl Drop for FakeThryve {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn handle(
    seen: Arc<Mutex<Vec<Seen>>>,
    script: Script,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let request = Seen {
        method,
        path: uri.path().to_owned(),
        authorization: header("authorization"),
        app_authorization: header("appauthorization"),
        content_type: header("content-type"),
        form: form_urlencoded::parse(&body)
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect(),
        at: Instant::now(),
    };
    let n = {
        let mut seen = seen.lock().unwrap();
        seen.push(request.clone());
        seen.len() - 1
    };
    let reply = script(n, &request);
    tokio::time::sleep(reply.delay).await;
    let mut response = (
        StatusCode::from_u16(reply.status).unwrap(),
        [("content-type", "application/json")],
        reply.body,
    )
        .into_response();
    if let Some(secs) = reply.retry_after {
        response
            .headers_mut()
            .insert("retry-after", secs.to_string().parse().unwrap());
    }
    response
}

/// An answer in the documented shape: one user entry per element of `pages` (as Thryve may
/// split one user's data), each with its data sources and their items.
pub fn answer(user: &str, pages: &[&[(i32, Vec<Value>)]]) -> Value {
    Value::Array(
        pages
            .iter()
            .map(|sources| {
                json!({
                    "authenticationToken": user,
                    "partnerUserID": format!("partner-{user}"),
                    "dataSources": sources.iter().map(|(source, data)| json!({
                        "dataSource": source, "data": data,
                    })).collect::<Vec<_>>(),
                })
            })
            .collect(),
    )
}

/// A `/v5/userInformation` answer in the documented shape: an array with one `UserInformation`
/// per user asked about, its `connectedSources` naming each source (`dataSource`) and when it
/// was connected.
pub fn user_information(user: &str, connected: &[i32]) -> Value {
    json!([{
        "authenticationToken": user,
        "partnerUserID": format!("partner-{user}"),
        "height": 180, "weight": 70.5, "birthdate": "1980-01-01", "gender": "male",
        "connectedSources": connected.iter().map(|source| json!({
            "dataSource": source, "connectedAt": "2025-11-02T10:00:00Z",
        })).collect::<Vec<_>>(),
        "devices": [],
    }])
}
