//! The outage spool (`SPOOL_DIR`): a delivery the database cannot take in time is answered
//! 200 `spooled` only once it is on local disk, and reaches the inbox exactly once later,
//! across a SIGKILL, a torn write and a reload of rows that already committed.

use std::{
    io::{BufRead, BufReader},
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::{Arc, Mutex},
    time::Duration,
};

use serde_json::{json, Value};
use sqlx::{ConnectOptions, PgPool};
use thryve_bridge::{
    config::ServeConfig,
    server::{Application, StartError},
};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::{
    invariants::assert_guarantees,
    proxy::PgProxy,
    support::{
        admin_url, epoch_notification, post_to, test_config, wait_until, TestDb, PASSWORD, USER,
    },
};

/// A fresh directory under the system temp dir, removed when the test ends.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Self {
        let path = std::env::temp_dir().join(format!("thryve-spool-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&path).unwrap();
        Self(path)
    }

    fn join(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The segment files in a spool directory, oldest first.
fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .map(|e| e.unwrap().path())
                .filter(|p| {
                    let name = p.file_name().unwrap().to_string_lossy();
                    name.starts_with("segment-") && name.ends_with(".jsonl")
                })
                .collect()
        })
        .unwrap_or_default();
    found.sort();
    found
}

fn spooled_lines(dir: &Path) -> usize {
    segments(dir)
        .iter()
        .map(|p| {
            std::fs::read(p)
                .unwrap()
                .iter()
                .filter(|&&b| b == b'\n')
                .count()
        })
        .sum()
}

/// A test database and a proxy in front of it that the test can cut.
pub(super) async fn behind_proxy() -> (TestDb, PgProxy, String) {
    let db = TestDb::new().await;
    let upstream = tokio::net::lookup_host((db.options.get_host(), db.options.get_port()))
        .await
        .unwrap()
        .next()
        .unwrap();
    let proxy = PgProxy::start(upstream).await;
    let url = db
        .options
        .clone()
        .host("127.0.0.1")
        .port(proxy.addr.port())
        .to_url_lossy()
        .to_string();
    (db, proxy, url)
}

fn spool_config(dir: &Path) -> ServeConfig {
    let mut config = test_config();
    config.spool.spool_dir = Some(dir.to_owned());
    config
}

/// The real server in this process, stopped and started again by the test (also the outage
/// tests', connecting as a role of their own).
pub(super) struct Server {
    pub(super) addr: SocketAddr,
    shutdown: CancellationToken,
    task: JoinHandle<Result<(), StartError>>,
}

impl Server {
    pub(super) async fn start(config: &ServeConfig, url: &str) -> Self {
        let pool = thryve_bridge::db::pool(url, 4, config.receiver.ack_deadline()).unwrap();
        let app = Application::build(config, pool).await.expect("app builds");
        let addr = app.local_addr();
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(app.run_until_stopped(shutdown.clone()));
        Self {
            addr,
            shutdown,
            task,
        }
    }

    pub(super) async fn stop(self) {
        self.shutdown.cancel();
        self.task.await.unwrap().expect("server stops cleanly");
    }
}

/// Posts every body at once; each must be answered 200 `spooled`, with no inbox id.
async fn post_all_spooled(addr: SocketAddr, bodies: &[Value]) {
    let tasks: Vec<_> = bodies
        .iter()
        .cloned()
        .map(|body| tokio::spawn(async move { post_to(addr, &body).await }))
        .collect();
    for task in tasks {
        let (status, _, answer) = task.await.unwrap();
        assert_eq!(
            (status, &answer),
            (200, &json!({"outcome": "spooled"})),
            "{answer}"
        );
    }
}

fn bodies(user: &str, n: i64) -> Vec<Value> {
    (0..n)
        .map(|i| epoch_notification(user, 1_000 * i, 1_000 * i + 500, &[1, 2]))
        .collect()
}

async fn inbox_rows(pool: &PgPool) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM thryve.inbox")
        .fetch_one(pool)
        .await
        .unwrap()
}

/// The `delivery_count` of the one row holding `body`; fails unless exactly one row does.
async fn delivery_count(pool: &PgPool, body: &Value) -> i32 {
    let counts: Vec<i32> =
        sqlx::query_scalar("SELECT delivery_count FROM thryve.inbox WHERE payload = $1")
            .bind(body)
            .fetch_all(pool)
            .await
            .unwrap();
    assert_eq!(counts.len(), 1, "one row for {body}");
    counts[0]
}

/// The binary as a child process, its stderr drained (and kept) by a thread.
struct Child {
    process: std::process::Child,
    addr: SocketAddr,
}

impl Child {
    async fn spawn(workdir: &Path, spool_dir: &Path, database_url: &str) -> Self {
        let mut process = Command::new(env!("CARGO_BIN_EXE_thryve-bridge"))
            .arg("serve")
            .current_dir(workdir)
            .env_clear()
            .env("DATABASE_URL", database_url)
            .env("DATABASE_MAX_CONNECTIONS", "4")
            .env("BIND_ADDR", "127.0.0.1:0")
            .env("WEBHOOK_BASIC_AUTH", format!("{USER}:{PASSWORD}"))
            .env("ACK_DEADLINE_MS", "1000")
            .env("SPOOL_DIR", spool_dir)
            .env("POLLER_ENABLED", "false")
            .env("HOUSEKEEPING_ENABLED", "false")
            .env("LOG_FORMAT", "json")
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the binary starts");
        let stderr = process.stderr.take().unwrap();
        let (found, addr) = tokio::sync::oneshot::channel();
        let log = Arc::new(Mutex::new(Vec::new()));
        std::thread::spawn({
            let log = log.clone();
            move || {
                let mut found = Some(found);
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    if let Ok(event) = serde_json::from_str::<Value>(&line) {
                        if event["message"] == "thryve-bridge started" {
                            let addr = event["bind_addr"].as_str().unwrap().parse().unwrap();
                            if let Some(found) = found.take() {
                                let _ = found.send(addr);
                            }
                        }
                    }
                    log.lock().unwrap().push(line);
                }
            }
        });
        let addr: SocketAddr = tokio::time::timeout(Duration::from_secs(20), addr)
            .await
            .ok()
            .and_then(Result::ok)
            .unwrap_or_else(|| panic!("no start line; stderr: {:?}", log.lock().unwrap()));
        Self { process, addr }
    }

    fn kill(mut self) {
        self.process.kill().unwrap();
        self.process.wait().unwrap();
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}

#[tokio::test]
async fn spooled_deliveries_survive_sigkill_and_reach_the_inbox_exactly_once() {
    let (db, proxy, url) = behind_proxy().await;
    let work = TempDir::new();
    let spool_dir = work.join("spool");
    proxy.down();

    let first = Child::spawn(&work.0, &spool_dir, &url).await;
    let sent = bodies("killed", 5);
    post_all_spooled(first.addr, &sent).await;
    first.kill();
    let killed_at = chrono::Utc::now();
    assert_eq!(
        spooled_lines(&spool_dir),
        sent.len(),
        "every 200 is a line on disk"
    );
    assert_eq!(
        inbox_rows(&db.pool).await,
        0,
        "nothing reached the database"
    );

    proxy.up();
    let second = Child::spawn(&work.0, &spool_dir, &url).await;
    wait_until(
        Duration::from_secs(20),
        "the spool is loaded and emptied",
        || async {
            inbox_rows(&db.pool).await == sent.len() as i64 && segments(&spool_dir).is_empty()
        },
    )
    .await;
    for body in &sent {
        assert_eq!(delivery_count(&db.pool, body).await, 1, "{body}");
    }
    let latest_first_received: chrono::DateTime<chrono::Utc> =
        sqlx::query_scalar("SELECT max(first_received_at) FROM thryve.inbox")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert!(
        latest_first_received <= killed_at,
        "rows keep the time the spool received them"
    );
    assert_guarantees(&db.pool).await;
    second.kill();
}

#[tokio::test]
async fn a_torn_trailing_record_is_skipped_and_the_records_before_it_load() {
    let (db, proxy, url) = behind_proxy().await;
    let dir = TempDir::new();
    let config = spool_config(&dir.0);
    proxy.down();
    let server = Server::start(&config, &url).await;
    let sent = bodies("torn", 3);
    post_all_spooled(server.addr, &sent).await;
    server.stop().await;

    // What a process killed in the middle of an append leaves: part of a line, no newline.
    let newest = segments(&dir.0).pop().expect("a segment");
    let mut bytes = std::fs::read(&newest).unwrap();
    let first_line = bytes.split(|&b| b == b'\n').next().unwrap().to_vec();
    bytes.extend_from_slice(&first_line[..first_line.len() / 2]);
    std::fs::write(&newest, bytes).unwrap();

    proxy.up();
    let server = Server::start(&config, &url).await;
    wait_until(
        Duration::from_secs(20),
        "the spool is loaded and emptied",
        || async { segments(&dir.0).is_empty() },
    )
    .await;
    assert_eq!(inbox_rows(&db.pool).await, sent.len() as i64);
    for body in &sent {
        assert_eq!(delivery_count(&db.pool, body).await, 1, "{body}");
    }
    let kept_aside = std::fs::read_dir(&dir.0)
        .unwrap()
        .filter(|e| {
            let name = e.as_ref().unwrap().file_name();
            name.to_string_lossy().starts_with("rejected-")
        })
        .count();
    assert_eq!(
        kept_aside, 0,
        "a torn record was never acknowledged: skipped, not kept"
    );
    server.stop().await;
}

#[tokio::test]
async fn reloading_a_segment_whose_rows_committed_leaves_one_row_each() {
    let (db, proxy, url) = behind_proxy().await;
    let dir = TempDir::new();
    let copies = TempDir::new();
    let config = spool_config(&dir.0);
    proxy.down();
    let server = Server::start(&config, &url).await;
    let sent = bodies("reload", 3);
    post_all_spooled(server.addr, &sent).await;
    let metrics = reqwest::get(format!("http://{}/metrics", server.addr))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("thryve_bridge_spool_records 3"),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"outcome="spooled""#),
        "deliveries counted as spooled"
    );
    server.stop().await;
    for segment in segments(&dir.0) {
        std::fs::copy(
            &segment,
            copies.join(&segment.file_name().unwrap().to_string_lossy()),
        )
        .unwrap();
    }

    proxy.up();
    let server = Server::start(&config, &url).await;
    wait_until(Duration::from_secs(20), "the spool is loaded", || async {
        segments(&dir.0).is_empty()
    })
    .await;
    assert_eq!(inbox_rows(&db.pool).await, sent.len() as i64);
    server.stop().await;

    // A crash between the commit and the delete: the same segment is there again.
    for segment in segments(&copies.0) {
        std::fs::copy(
            &segment,
            dir.join(&segment.file_name().unwrap().to_string_lossy()),
        )
        .unwrap();
    }
    let server = Server::start(&config, &url).await;
    wait_until(
        Duration::from_secs(20),
        "the segment is loaded again",
        || async { segments(&dir.0).is_empty() },
    )
    .await;
    assert_eq!(inbox_rows(&db.pool).await, sent.len() as i64);
    for body in &sent {
        // Loaded twice: one row, counted as a second delivery of the same content.
        assert_eq!(delivery_count(&db.pool, body).await, 2, "{body}");
    }
    assert_guarantees(&db.pool).await;
    server.stop().await;
}

#[tokio::test]
async fn a_spool_dir_that_is_a_file_stops_start_up_naming_spool_dir() {
    let dir = TempDir::new();
    let file = dir.join("not-a-directory");
    std::fs::write(&file, b"x").unwrap();
    let pool = thryve_bridge::db::pool(&admin_url(), 1, Duration::from_secs(1)).unwrap();
    let error = match Application::build(&spool_config(&file), pool).await {
        Ok(_) => panic!("started with a file as SPOOL_DIR"),
        Err(e) => e.to_string(),
    };
    assert!(error.starts_with("SPOOL_DIR: "), "{error}");
    assert!(error.contains("not-a-directory"), "{error}");
}

#[tokio::test]
async fn a_spool_that_cannot_be_written_gives_503_not_200() {
    let (db, proxy, url) = behind_proxy().await;
    let dir = TempDir::new();
    let spool_dir = dir.join("spool");
    let server = Server::start(&spool_config(&spool_dir), &url).await;
    let (status, _, answer) = post_to(server.addr, &epoch_notification("w", 1, 2, &[1])).await;
    assert_eq!(status, 200);
    assert_eq!(
        answer["outcome"], "stored",
        "with the database up the spool is not used"
    );

    proxy.down();
    std::fs::remove_dir_all(&spool_dir).unwrap();
    std::fs::write(&spool_dir, b"the spool directory is gone").unwrap();
    let (status, _, answer) = post_to(server.addr, &epoch_notification("w", 3, 4, &[1])).await;
    assert_eq!(status, 503, "{answer}");
    assert!(
        answer["error"].as_str().unwrap().contains("spool"),
        "{answer}"
    );
    proxy.up();
    assert_eq!(inbox_rows(&db.pool).await, 1);
    server.stop().await;
}

#[tokio::test]
async fn a_second_server_on_the_same_spool_dir_is_refused_until_the_first_stops() {
    let dir = TempDir::new();
    let config = spool_config(&dir.0);
    let pool = || thryve_bridge::db::pool(&admin_url(), 1, Duration::from_secs(1)).unwrap();
    let first = Application::build(&config, pool())
        .await
        .expect("first builds");
    let error = match Application::build(&config, pool()).await {
        Ok(_) => panic!("two servers share one spool"),
        Err(e) => e.to_string(),
    };
    assert!(
        error.starts_with("SPOOL_DIR: ") && error.contains("another process"),
        "{error}"
    );
    let shutdown = CancellationToken::new();
    shutdown.cancel();
    first.run_until_stopped(shutdown).await.unwrap();
    Application::build(&config, pool())
        .await
        .expect("the lock goes with the first server");
}

#[tokio::test]
async fn writers_skip_deliveries_whose_requester_gave_up_so_a_spooled_one_counts_once() {
    let dir = TempDir::new();
    let mut config = spool_config(&dir.0);
    // One writer, one delivery per statement: the queue behind a stuck write stays queued.
    config.receiver.ingest_writers = 1;
    config.receiver.ingest_batch_max = 1;
    let db = TestDb::new().await;
    let server = Server::start(&config, &db.url()).await;

    // The database answers, but every write to the inbox waits: each request gives up at
    // its deadline and spools.
    let mut lock = db.pool.begin().await.unwrap();
    sqlx::query("LOCK TABLE thryve.inbox IN ACCESS EXCLUSIVE MODE")
        .execute(&mut *lock)
        .await
        .unwrap();
    let sent = bodies("slow", 5);
    post_all_spooled(server.addr, &sent).await;
    lock.rollback().await.unwrap();

    wait_until(Duration::from_secs(20), "the spool is loaded", || async {
        inbox_rows(&db.pool).await == sent.len() as i64 && segments(&dir.0).is_empty()
    })
    .await;
    // Stopping drains the writers' queue, so whatever they were going to write is written.
    server.stop().await;
    let total: i64 = sqlx::query_scalar("SELECT sum(delivery_count) FROM thryve.inbox")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    // Each delivery once from the spool, plus at most the one write that was already under
    // way when the table was locked; abandoned queued writes would double the rest.
    assert!(total <= sent.len() as i64 + 1, "delivery_count sum {total}");
}

/// Content this test's database refuses (see the constraint below).
fn refused_by_the_database() -> Value {
    epoch_notification("poison", 1_000, 2_000, &[1])
}

#[tokio::test]
async fn a_spooled_record_the_inbox_refuses_is_kept_aside_and_the_others_load() {
    let dir = TempDir::new();
    let config = spool_config(&dir.0);
    let db = TestDb::new().await;
    // Stands for any row the inbox refuses (not an outage): the parser keeps real ones rare.
    sqlx::query(
        "ALTER TABLE thryve.inbox ADD CONSTRAINT test_refuses_poison
         CHECK (end_user_id IS DISTINCT FROM 'poison')",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    let good = bodies("aside", 2);
    let now = chrono::Utc::now();
    let segment = [
        thryve_bridge::spool::encode_record(&good[0].to_string(), now),
        thryve_bridge::spool::encode_record(&refused_by_the_database().to_string(), now),
        thryve_bridge::spool::encode_record(&good[1].to_string(), now),
    ]
    .concat();
    std::fs::write(dir.join("segment-00000000000000000007.jsonl"), segment).unwrap();

    let server = Server::start(&config, &db.url()).await;
    wait_until(Duration::from_secs(20), "the segment is loaded", || async {
        segments(&dir.0).is_empty()
    })
    .await;
    assert_eq!(inbox_rows(&db.pool).await, 2);
    for body in &good {
        assert_eq!(delivery_count(&db.pool, body).await, 1, "{body}");
    }
    let rejected = std::fs::read_to_string(dir.join("rejected-00000000000000000007.jsonl"))
        .expect("the refused record is kept");
    assert_eq!(rejected.lines().count(), 1);
    let kept: Value = serde_json::from_str(rejected.lines().next().unwrap()).unwrap();
    assert_eq!(kept["body"], refused_by_the_database());

    // Live, the same content is not spooled: the database would refuse it again.
    let (status, _, answer) = post_to(server.addr, &refused_by_the_database()).await;
    assert_eq!(status, 503, "{answer}");
    assert!(segments(&dir.0).is_empty());
    server.stop().await;
}
