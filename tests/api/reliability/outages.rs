//! Every way the database can be out, made real on the shared Postgres without stopping it:
//! a role refused at login, a database closed to connections, renamed, full for the role, or
//! read-only. A delivery is then spooled (or 503 with `Retry-After`), never refused as bad
//! content; spooled records stay in the spool until the database takes them; `/readyz` says
//! not ready. Also a set-aside record listed and reloaded by the CLI, and the 503 wording when
//! the commit may land after the answer.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use serde_json::{json, Value};
use sqlx::{ConnectOptions, Connection, PgConnection, PgPool};
use thryve_bridge::poller::{Poller, MAX_ROW_TIMEOUTS};

use super::{faults::Bridge, spool::Server};
use crate::{
    poller::store,
    support::{
        admin_url, drop_as_admin, epoch_notification, post_to, test_config, wait_until, TestDb,
    },
};

/// A fresh directory under the system temp dir, removed when the test ends.
pub(super) struct TempDir(pub(super) PathBuf);

impl TempDir {
    pub(super) fn new() -> Self {
        let path = std::env::temp_dir().join(format!("thryve-outage-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&path).unwrap();
        Self(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A login role of the test's own (not a superuser, so connection limits apply to it),
/// dropped when the test ends; declare it before the [`TestDb`] it is granted on, so that the
/// database goes first.
struct TestRole {
    name: String,
}

impl TestRole {
    async fn new() -> Self {
        let name = format!("thryve_role_{}", uuid::Uuid::new_v4().simple());
        admin(&format!("CREATE ROLE {name} LOGIN")).await;
        Self { name }
    }

    /// Lets the role do what `serve` does in `db`.
    async fn grant(&self, db: &TestDb) {
        let r = &self.name;
        for sql in [
            format!("GRANT USAGE ON SCHEMA thryve TO {r}"),
            format!("GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA thryve TO {r}"),
            format!("GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA thryve TO {r}"),
            format!("GRANT SELECT ON _sqlx_migrations TO {r}"),
        ] {
            sqlx::query(&sql).execute(&db.pool).await.unwrap();
        }
    }

    fn url(&self, db: &TestDb) -> String {
        db.options
            .clone()
            .username(&self.name)
            .to_url_lossy()
            .to_string()
    }

    /// Ends the role's sessions, so that what changed at login applies to its next ones.
    async fn disconnect(&self) {
        admin(&format!(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = '{}'",
            self.name
        ))
        .await;
    }
}

impl Drop for TestRole {
    fn drop(&mut self) {
        drop_as_admin(format!("DROP ROLE IF EXISTS {}", self.name));
    }
}

/// Runs one statement as the cluster's admin (in the `postgres` database, never the test's).
async fn admin(sql: &str) {
    let mut conn = PgConnection::connect(&admin_url()).await.unwrap();
    sqlx::query(sql).execute(&mut conn).await.unwrap();
    conn.close().await.ok();
}

pub(super) async fn get_status(addr: SocketAddr, path: &str) -> u16 {
    reqwest::get(format!("http://{addr}{path}"))
        .await
        .expect("answered")
        .status()
        .as_u16()
}

/// The value of one sample in `/metrics` (`name` as rendered, e.g. `..._total`).
pub(super) async fn metric(addr: SocketAddr, name: &str) -> f64 {
    let text = reqwest::get(format!("http://{addr}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("{name} in /metrics"))
        .parse()
        .unwrap()
}

fn set_aside_files(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("rejected-")
        })
        .collect()
}

async fn inbox_rows(pool: &PgPool) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM thryve.inbox")
        .fetch_one(pool)
        .await
        .unwrap_or(-1)
}

/// How the test takes the database away from the bridge, and gives it back.
#[derive(Debug, Clone, Copy)]
enum Way {
    /// `ALTER ROLE ... NOLOGIN`: 28000 at login, what a `pg_hba` reject also sends (this
    /// cluster is shared, so its `pg_hba.conf` is not the test's to edit).
    LoginRefused,
    /// `ALTER DATABASE ... ALLOW_CONNECTIONS false`: 55000 at login.
    ClosedToConnections,
    /// `ALTER DATABASE ... RENAME`: 3D000 at login.
    Renamed,
    /// `ALTER ROLE ... CONNECTION LIMIT 0`: 53300 at login ("too many connections").
    TooManyClients,
    /// `default_transaction_read_only` on the database: logins work, every write gets 25006.
    ReadOnly,
}

impl Way {
    fn away_name(db: &TestDb) -> String {
        format!("{}_away", db.name)
    }

    async fn apply(self, role: &TestRole, db: &TestDb) {
        let (r, d) = (&role.name, &db.name);
        match self {
            Way::LoginRefused => admin(&format!("ALTER ROLE {r} NOLOGIN")).await,
            Way::ClosedToConnections => {
                admin(&format!("ALTER DATABASE {d} ALLOW_CONNECTIONS false")).await
            }
            Way::TooManyClients => admin(&format!("ALTER ROLE {r} CONNECTION LIMIT 0")).await,
            Way::ReadOnly => {
                admin(&format!(
                    "ALTER DATABASE {d} SET default_transaction_read_only = on"
                ))
                .await
            }
            Way::Renamed => {
                // A database with sessions cannot be renamed: end them until it can.
                let away = Self::away_name(db);
                wait_until(Duration::from_secs(20), "the database renamed", || async {
                    let mut conn = PgConnection::connect(&admin_url()).await.unwrap();
                    sqlx::query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()")
                        .bind(d)
                        .execute(&mut conn)
                        .await
                        .unwrap();
                    sqlx::query(&format!("ALTER DATABASE {d} RENAME TO {away}"))
                        .execute(&mut conn)
                        .await
                        .is_ok()
                })
                .await;
            }
        }
        role.disconnect().await;
    }

    async fn heal(self, role: &TestRole, db: &TestDb) {
        let (r, d) = (&role.name, &db.name);
        match self {
            Way::LoginRefused => admin(&format!("ALTER ROLE {r} LOGIN")).await,
            Way::ClosedToConnections => {
                admin(&format!("ALTER DATABASE {d} ALLOW_CONNECTIONS true")).await
            }
            Way::TooManyClients => admin(&format!("ALTER ROLE {r} CONNECTION LIMIT -1")).await,
            Way::ReadOnly => {
                admin(&format!(
                    "ALTER DATABASE {d} RESET default_transaction_read_only"
                ))
                .await;
                role.disconnect().await;
            }
            Way::Renamed => {
                admin(&format!(
                    "ALTER DATABASE {} RENAME TO {d}",
                    Self::away_name(db)
                ))
                .await
            }
        }
    }

    /// What Postgres now answers the role: the SQLSTATE the row of the fault table names.
    async fn observed_code(self, url: &str) -> String {
        let code = |e: sqlx::Error| {
            e.as_database_error()
                .and_then(|e| e.code())
                .map(|c| c.into_owned())
                .unwrap_or_else(|| format!("not a database error: {e}"))
        };
        match PgConnection::connect(url).await {
            Err(e) => code(e),
            Ok(mut conn) => {
                let written = sqlx::query("CREATE TEMP TABLE probe (x int)")
                    .execute(&mut conn)
                    .await;
                written.map_or_else(code, |_| "writable".to_owned())
            }
        }
    }

    /// The fault, as the fault table names it.
    fn describe(self) -> &'static str {
        match self {
            Way::LoginRefused => "the bridge's role refused at login (NOLOGIN)",
            Way::ClosedToConnections => "the database closed to connections",
            Way::Renamed => "the database renamed away",
            Way::TooManyClients => "too many clients",
            Way::ReadOnly => "the database read-only",
        }
    }

    fn code(self) -> &'static str {
        match self {
            Way::LoginRefused => "28000",
            Way::ClosedToConnections => "55000",
            Way::Renamed => "3D000",
            Way::TooManyClients => "53300",
            Way::ReadOnly => "25006",
        }
    }
}

/// The fault table's rows "comes back refusing the bridge" and "... while serving", for one
/// way: with `SPOOL_DIR` each delivery is spooled (200), without it 503 + `Retry-After`; the
/// spool loader keeps every record while the database refuses it (no `rejected-*.jsonl`,
/// `spool_records` stays), `/readyz` says not ready; once healed, everything loads.
async fn outage_is_spooled_and_loaded_after(way: Way) {
    let role = TestRole::new().await;
    let db = TestDb::new().await;
    role.grant(&db).await;
    let dir = TempDir::new();
    let mut spooling = test_config();
    spooling.spool.spool_dir = Some(dir.0.clone());
    let url = role.url(&db);
    let with_spool = Server::start(&spooling, &url).await;
    let without_spool = Server::start(&test_config(), &url).await;
    let mut answers = Answers::default();
    let first = epoch_notification("before", 1_000, 2_000, &[1]);
    assert_eq!(answers.post(with_spool.addr, &first).await.0, 200);
    assert_eq!(get_status(with_spool.addr, "/readyz").await, 200);

    way.apply(&role, &db).await;
    assert_eq!(way.observed_code(&url).await, way.code(), "{way:?}");

    let bodies: Vec<Value> = (0..5)
        .map(|i| epoch_notification("during", 10_000 * i, 10_000 * i + 500, &[1, 2]))
        .collect();
    for body in &bodies {
        let (status, _, answer) = answers.post(with_spool.addr, body).await;
        assert_eq!(
            (status, &answer),
            (200, &json!({"outcome": "spooled"})),
            "{way:?}"
        );
    }
    let (status, retry_after, answer) = answers
        .post(
            without_spool.addr,
            &epoch_notification("refused", 1, 2, &[1]),
        )
        .await;
    assert_eq!(status, 503, "{way:?}: {answer}");
    assert_eq!(retry_after.as_deref(), Some("5"));
    // "nothing was stored" when the login failed at once; sqlx retries 53300 until the
    // deadline, after which the receiver cannot know, and says it may have been.
    assert!(
        answer["error"].as_str().unwrap().contains("resend"),
        "{way:?}: {answer}"
    );
    assert_eq!(get_status(with_spool.addr, "/readyz").await, 503, "{way:?}");
    assert_eq!(get_status(without_spool.addr, "/readyz").await, 503);

    // The loader has met the refusing database more than once, and kept every record.
    wait_until(LOADER_RETRIES_WITHIN, "the loader tried twice", || async {
        metric(with_spool.addr, "thryve_bridge_spool_load_errors_total").await >= 2.0
    })
    .await;
    assert_eq!(
        metric(with_spool.addr, "thryve_bridge_spool_records").await,
        5.0,
        "{way:?}"
    );
    assert_eq!(
        metric(with_spool.addr, "thryve_bridge_spool_set_aside_records").await,
        0.0
    );
    assert!(set_aside_files(&dir.0).is_empty(), "{way:?}");

    way.heal(&role, &db).await;
    wait_until(Duration::from_secs(30), "the spool loaded", || async {
        inbox_rows(&db.pool).await == 6
            && metric(with_spool.addr, "thryve_bridge_spool_records").await == 0.0
    })
    .await;
    // Each delivery's count in its row: 0 is lost, more than 1 counted twice.
    let counts = counts_in_inbox(&db.pool, &bodies.iter().collect::<Vec<_>>()).await;
    answers.row(
        &format!(
            "{} ({}), with a spool and without",
            way.describe(),
            way.code()
        ),
        (
            counts.iter().filter(|&&n| n == 0).count(),
            set_aside_files(&dir.0).len(),
            counts.iter().filter(|&&n| n > 1).count(),
        ),
        "yes, once the database was healed",
    );
    assert!(set_aside_files(&dir.0).is_empty());
    assert_eq!(counts, vec![1; bodies.len()], "each spooled delivery once");
    wait_until(Duration::from_secs(10), "ready again", || async {
        get_status(with_spool.addr, "/readyz").await == 200
    })
    .await;
    with_spool.stop().await;
    without_spool.stop().await;
}

#[tokio::test]
async fn a_role_refused_at_login_is_an_outage_spooled_and_loaded_after() {
    outage_is_spooled_and_loaded_after(Way::LoginRefused).await;
}

#[tokio::test]
async fn a_database_closed_to_connections_is_an_outage_spooled_and_loaded_after() {
    outage_is_spooled_and_loaded_after(Way::ClosedToConnections).await;
}

#[tokio::test]
async fn a_renamed_database_is_an_outage_spooled_and_loaded_after() {
    outage_is_spooled_and_loaded_after(Way::Renamed).await;
}

#[tokio::test]
async fn too_many_clients_is_an_outage_spooled_and_loaded_after() {
    outage_is_spooled_and_loaded_after(Way::TooManyClients).await;
}

#[tokio::test]
async fn a_read_only_database_is_an_outage_spooled_and_loaded_after() {
    outage_is_spooled_and_loaded_after(Way::ReadOnly).await;
}

/// Content this test's database refuses (see the constraint below).
fn poison() -> Value {
    epoch_notification("poison", 1_000, 2_000, &[1])
}

#[tokio::test]
async fn a_set_aside_record_stays_visible_is_listed_and_reloads_once_fixed() {
    let dir = TempDir::new();
    let db = TestDb::new().await;
    // Stands for any row the inbox refuses for its content (not an outage).
    sqlx::query(
        "ALTER TABLE thryve.inbox ADD CONSTRAINT test_refuses_poison
         CHECK (end_user_id IS DISTINCT FROM 'poison')",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    let good = epoch_notification("fine", 1_000, 2_000, &[1]);
    let now = chrono::Utc::now();
    let segment = [
        thryve_bridge::spool::encode_record(&good.to_string(), now),
        thryve_bridge::spool::encode_record(&poison().to_string(), now),
    ]
    .concat();
    std::fs::write(dir.0.join("segment-00000000000000000003.jsonl"), segment).unwrap();
    let mut config = test_config();
    config.spool.spool_dir = Some(dir.0.clone());
    let server = Server::start(&config, &db.url()).await;
    // The segment is done once the good record committed and the refused one was set aside.
    wait_until(Duration::from_secs(20), "the segment loaded", || async {
        inbox_rows(&db.pool).await == 1
            && metric(server.addr, "thryve_bridge_spool_set_aside_records").await == 1.0
    })
    .await;
    assert_eq!(
        metric(server.addr, "thryve_bridge_spool_records").await,
        0.0
    );

    let dir_text = dir.0.to_str().unwrap();
    let list_args = ["spool", "list", "--dir", dir_text];
    let list = || cli(&list_args, &[]);
    let (ok, out) = list().await;
    assert!(ok, "{out}");
    let listed = json_line(&out, "[");
    assert_eq!(listed.as_array().unwrap().len(), 1, "{listed}");
    assert_eq!(listed[0]["end_user_id"], "poison");
    assert_eq!(listed[0]["file"], "rejected-00000000000000000003.jsonl");

    // Reloading needs the directory's lock: refused while the server holds it.
    let url = db.url();
    let reload_args = ["spool", "reload", "--dir", dir_text];
    let reload_env = [("DATABASE_URL", url.as_str())];
    let reload = || cli(&reload_args, &reload_env);
    let (ok, out) = reload().await;
    assert!(!ok && out.contains("held by another process"), "{out}");

    // A restart keeps it visible.
    server.stop().await;
    let server = Server::start(&config, &db.url()).await;
    assert_eq!(
        metric(server.addr, "thryve_bridge_spool_set_aside_records").await,
        1.0
    );
    server.stop().await;

    sqlx::query("ALTER TABLE thryve.inbox DROP CONSTRAINT test_refuses_poison")
        .execute(&db.pool)
        .await
        .unwrap();
    let (ok, out) = reload().await;
    assert!(ok, "{out}");
    assert_eq!(
        json_line(&out, "{\"requeued\""),
        json!({"requeued": 1, "waiting": 0, "set_aside": 0})
    );
    assert_eq!(inbox_rows(&db.pool).await, 2);
    assert!(set_aside_files(&dir.0).is_empty());
    let (_, out) = list().await;
    assert_eq!(json_line(&out, "["), json!([]));
}

/// Runs the binary to its end; whether it succeeded, and everything it wrote.
pub(super) async fn cli(args: &[&str], env: &[(&str, &str)]) -> (bool, String) {
    let mut env = env.to_vec();
    env.push(("LOG_FORMAT", "json"));
    let mut bridge = Bridge::spawn(args, &env);
    let mut exit = None;
    wait_until(Duration::from_secs(30), "the command exits", || {
        exit = bridge.try_wait();
        std::future::ready(exit.is_some())
    })
    .await;
    (exit.unwrap().success(), bridge.finish())
}

/// The first line of `output` that starts with `prefix`, as JSON.
fn json_line(output: &str, prefix: &str) -> Value {
    let line = output
        .lines()
        .find(|l| l.starts_with(prefix))
        .unwrap_or_else(|| panic!("a line starting {prefix}: {output}"));
    serde_json::from_str(line).unwrap()
}

#[tokio::test]
async fn a_locked_inbox_is_not_ready_and_a_late_commit_is_not_called_unstored() {
    let db = TestDb::new().await;
    let server = Server::start(&test_config(), &db.url()).await;
    assert_eq!(get_status(server.addr, "/readyz").await, 200);

    let mut locker = PgConnection::connect(&db.url()).await.unwrap();
    sqlx::query("BEGIN").execute(&mut locker).await.unwrap();
    sqlx::query("LOCK TABLE thryve.inbox IN SHARE MODE")
        .execute(&mut locker)
        .await
        .unwrap();
    let answer = reqwest::get(format!("http://{}/readyz", server.addr))
        .await
        .unwrap();
    assert_eq!(answer.status(), 503);
    let answer: Value = answer.json().await.unwrap();
    assert!(
        answer["error"].as_str().unwrap().contains("locked"),
        "{answer}"
    );

    let late = epoch_notification("late", 1_000, 2_000, &[1]);
    let (status, retry_after, answer) = post_to(server.addr, &late).await;
    assert_eq!(status, 503, "{answer}");
    assert_eq!(retry_after.as_deref(), Some("5"));
    let error = answer["error"].as_str().unwrap();
    assert!(
        error.contains("not acknowledged; it may have been stored, resend"),
        "{error}"
    );
    assert!(!error.contains("nothing was stored"), "{error}");

    // The INSERT under way when the answer went commits once the lock goes: the 503 said so.
    sqlx::query("ROLLBACK").execute(&mut locker).await.unwrap();
    wait_until(Duration::from_secs(10), "the late commit", || async {
        inbox_rows(&db.pool).await == 1
    })
    .await;
    assert_eq!(get_status(server.addr, "/readyz").await, 200);
    server.stop().await;
}

async fn statuses(pool: &PgPool) -> Vec<(String, i64)> {
    sqlx::query_as("SELECT status, count(*) FROM thryve.inbox GROUP BY status ORDER BY status")
        .fetch_all(pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn statement_timeouts_behind_a_held_lock_quarantine_nothing_and_a_row_slow_on_its_own_is_set_aside(
) {
    let role = TestRole::new().await;
    let db = TestDb::new().await;
    role.grant(&db).await;
    admin(&format!(
        "ALTER ROLE {} SET statement_timeout = '1s'",
        role.name
    ))
    .await;
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(2)
        .connect(&role.url(&db))
        .await
        .unwrap();
    let poller = Poller::new(pool, &test_config().poller);
    let healthy: Vec<Value> = (0..10)
        .map(|i| epoch_notification(&format!("u{i}"), 1_000, 2_000, &[1]))
        .collect();
    store(&db, &healthy).await;

    let mut locker = PgConnection::connect(&db.url()).await.unwrap();
    sqlx::query("BEGIN").execute(&mut locker).await.unwrap();
    sqlx::query("LOCK TABLE thryve.dirty_ranges IN EXCLUSIVE MODE")
        .execute(&mut locker)
        .await
        .unwrap();
    // More polls than a slow row is allowed: the lock is no row's fault.
    for attempt in 0..=MAX_ROW_TIMEOUTS {
        let error = poller
            .poll_once()
            .await
            .expect_err("the lock holds the batch");
        assert!(
            error.to_string().contains("lock timeout"),
            "attempt {attempt}: {error}"
        );
    }
    assert_eq!(statuses(&db.pool).await, [("pending".to_owned(), 10)]);
    sqlx::query("ROLLBACK").execute(&mut locker).await.unwrap();
    assert_eq!(poller.poll_once().await.unwrap().processed, 10);

    // A row whose own merge is slow (a trigger sleeping for it alone) holds nobody up and is
    // set aside after a bounded number of tries, with a reason that says so.
    sqlx::query(
        "CREATE FUNCTION thryve.test_slow() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN IF NEW.end_user_id = 'slow' THEN PERFORM pg_sleep(5); END IF; RETURN NEW; END $$",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    sqlx::query(
        "CREATE TRIGGER test_slow BEFORE INSERT ON thryve.dirty_ranges
         FOR EACH ROW EXECUTE FUNCTION thryve.test_slow()",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    let slow = epoch_notification("slow", 1_000, 2_000, &[1]);
    let later: Vec<Value> = (0..3)
        .map(|i| epoch_notification(&format!("after{i}"), 1_000, 2_000, &[1]))
        .collect();
    store(&db, &[vec![slow.clone()], later].concat()).await;
    let first = poller.poll_once().await.unwrap();
    assert_eq!((first.processed, first.quarantined), (3, 0), "{first:?}");
    for _ in 2..MAX_ROW_TIMEOUTS {
        assert_eq!(poller.poll_once().await.unwrap().quarantined, 0);
    }
    let last = poller.poll_once().await.unwrap();
    assert_eq!(last.quarantined, 1, "{last:?}");
    let reason: String =
        sqlx::query_scalar("SELECT error FROM thryve.inbox WHERE end_user_id = 'slow'")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert!(
        reason.contains(&format!(
            "set aside after {MAX_ROW_TIMEOUTS} statement timeouts applying this row on its own"
        )),
        "{reason}"
    );
    assert_eq!(
        statuses(&db.pool).await,
        [("processed".to_owned(), 13), ("quarantined".to_owned(), 1)]
    );
}

/// A Postgres cluster of the test's own (`pg_createcluster`, port 54331), so that it may
/// require passwords over TCP and edit `pg_hba.conf`, which the shared cluster's tests must
/// not. Dropped with the test. None where the tools or the rights to run them are missing.
pub(super) struct OwnCluster {
    version: String,
    name: String,
    port: u16,
}

impl OwnCluster {
    const PORT: u16 = 54331;

    fn create() -> Option<Self> {
        Self::create_as("thryve13", Self::PORT, "scram-sha-256")
    }

    /// A cluster named `name` on `port`, trusting local connections and authenticating TCP
    /// ones with `auth_host`.
    pub(super) fn create_as(name: &str, port: u16, auth_host: &str) -> Option<Self> {
        let version = std::fs::read_dir("/usr/lib/postgresql")
            .ok()?
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .max()?;
        let name = name.to_owned();
        let run = |program: &str, args: &[&str]| {
            std::process::Command::new(program)
                .args(args)
                .output()
                .is_ok_and(|o| o.status.success())
        };
        // A cluster left by an interrupted run goes first.
        let _ = run("pg_dropcluster", &["--stop", &version, &name]);
        let port_text = port.to_string();
        let auth_host = format!("--auth-host={auth_host}");
        let created = run(
            "pg_createcluster",
            &[
                &version,
                &name,
                "--port",
                &port_text,
                "--start",
                "--",
                "--auth-local=trust",
                &auth_host,
            ],
        );
        created.then_some(Self {
            version,
            name,
            port,
        })
    }

    /// Restarts the cluster (`pg_ctlcluster restart`, fast shutdown: every session ended);
    /// returns once it accepts connections again.
    pub(super) fn restart(&self) {
        let restarted = std::process::Command::new("pg_ctlcluster")
            .args([&self.version, &self.name, "restart", "-m", "fast"])
            .output()
            .unwrap();
        assert!(restarted.status.success(), "{restarted:?}");
    }

    /// A TCP URL for `database` as the superuser (for a cluster created with `trust`).
    pub(super) fn tcp_url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }

    /// As the superuser, over the Unix socket (trusted).
    fn admin_url(&self, database: &str) -> String {
        format!(
            "postgres://postgres@localhost/{database}?host=/var/run/postgresql&port={}",
            self.port
        )
    }

    fn hba(&self) -> PathBuf {
        PathBuf::from(format!(
            "/etc/postgresql/{}/{}/pg_hba.conf",
            self.version, self.name
        ))
    }

    pub(super) async fn sql(&self, database: &str, sql: &str) {
        let mut conn = PgConnection::connect(&self.admin_url(database))
            .await
            .unwrap();
        sqlx::query(sql).execute(&mut conn).await.unwrap();
        conn.close().await.ok();
    }
}

impl Drop for OwnCluster {
    fn drop(&mut self) {
        let _ = std::process::Command::new("pg_dropcluster")
            .args(["--stop", &self.version, &self.name])
            .output();
    }
}

/// The rows "password changed (28P01)" and "`pg_hba` reject (28000)" on a cluster of the
/// test's own: each a spooled outage while serving, loaded once the cause is undone.
#[tokio::test]
async fn a_changed_password_and_a_pg_hba_reject_are_outages_spooled_and_loaded_after() {
    let Some(cluster) = OwnCluster::create() else {
        eprintln!(
            "SKIPPED: needs pg_createcluster and the rights to run it (root or postgres); \
             28000 is also shown by the NOLOGIN test on the shared cluster"
        );
        return;
    };
    cluster.sql("postgres", "CREATE DATABASE thryve_own").await;
    cluster
        .sql(
            "postgres",
            "CREATE ROLE bridge LOGIN SUPERUSER PASSWORD 'first-password'",
        )
        .await;
    let admin_pool = PgPool::connect(&cluster.admin_url("thryve_own"))
        .await
        .unwrap();
    thryve_bridge::db::migrate(&admin_pool).await.unwrap();
    let url = |password: &str| {
        format!(
            "postgres://bridge:{password}@127.0.0.1:{}/thryve_own",
            cluster.port
        )
    };
    let dir = TempDir::new();
    let mut config = test_config();
    config.spool.spool_dir = Some(dir.0.clone());
    let server = Server::start(&config, &url("first-password")).await;
    assert_eq!(
        post_to(server.addr, &epoch_notification("own", 1, 2, &[1]))
            .await
            .0,
        200
    );
    let hba = std::fs::read_to_string(cluster.hba()).unwrap();
    let disconnect =
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = 'bridge'";
    let faults = [
        (
            "28P01",
            "ALTER ROLE bridge PASSWORD 'changed-password'",
            "ALTER ROLE bridge PASSWORD 'first-password'",
        ),
        ("28000", "pg_hba reject", "pg_hba restore"),
    ];
    let mut expected_rows = 1;
    for (round, (code, break_it, heal_it)) in faults.into_iter().enumerate() {
        match break_it {
            "pg_hba reject" => {
                std::fs::write(
                    cluster.hba(),
                    format!("host all bridge 127.0.0.1/32 reject\n{hba}"),
                )
                .unwrap();
                cluster.sql("postgres", "SELECT pg_reload_conf()").await;
            }
            sql => cluster.sql("postgres", sql).await,
        }
        cluster.sql("postgres", disconnect).await;
        let refused = PgConnection::connect(&url("first-password"))
            .await
            .expect_err("the login is refused");
        assert_eq!(
            refused
                .as_database_error()
                .and_then(|e| e.code())
                .as_deref(),
            Some(code)
        );
        let bodies: Vec<Value> = (0..3)
            .map(|i| epoch_notification(&format!("own{round}"), 10_000 * i, 10_000 * i + 1, &[1]))
            .collect();
        let mut answers = Answers::default();
        for body in &bodies {
            let (status, _, answer) = answers.post(server.addr, body).await;
            assert_eq!(
                (status, &answer),
                (200, &json!({"outcome": "spooled"})),
                "{code}"
            );
        }
        let errors_before = metric(server.addr, "thryve_bridge_spool_load_errors_total").await;
        wait_until(LOADER_RETRIES_WITHIN, "the loader tried again", || async {
            metric(server.addr, "thryve_bridge_spool_load_errors_total").await
                >= errors_before + 2.0
        })
        .await;
        assert_eq!(
            metric(server.addr, "thryve_bridge_spool_records").await,
            3.0,
            "{code}"
        );
        assert!(set_aside_files(&dir.0).is_empty(), "{code}");
        match heal_it {
            "pg_hba restore" => {
                std::fs::write(cluster.hba(), &hba).unwrap();
                cluster.sql("postgres", "SELECT pg_reload_conf()").await;
            }
            sql => cluster.sql("postgres", sql).await,
        }
        expected_rows += 3;
        wait_until(Duration::from_secs(30), "the spool loaded", || async {
            inbox_rows(&admin_pool).await == expected_rows
                && metric(server.addr, "thryve_bridge_spool_records").await == 0.0
        })
        .await;
        let fault = match code {
            "28P01" => "the bridge's password changed (28P01, a cluster of the test's own), spool",
            _ => "pg_hba.conf rejects the bridge (28000, a cluster of the test's own), spool",
        };
        answers.row(
            fault,
            (0, set_aside_files(&dir.0).len(), 0),
            "yes, once the database was healed",
        );
    }
    server.stop().await;
    admin_pool.close().await;
}

/// How long a test waits for the spool loader to fail twice against a refusing database: a
/// bound on liveness, not a figure (its backoff is at most 5 s a try; a CI run of the whole
/// suite on 2 cores once took more than 20 s for a login-refused cluster of the test's own).
const LOADER_RETRIES_WITHIN: Duration = Duration::from_secs(60);

/// One delivery of a [`Load`] and how it was answered.
#[derive(Debug, Clone)]
pub(super) struct Answered {
    pub(super) body: Value,
    pub(super) status: u16,
    pub(super) answer: Value,
    /// When it was sent.
    pub(super) sent: Instant,
    /// How long its answer took.
    pub(super) took: Duration,
}

/// The answers of a fault table's row (`bench/faults` collects the rows): how many of each
/// status and outcome, and the slowest.
#[derive(Default)]
pub(super) struct Answers {
    by_kind: std::collections::BTreeMap<String, usize>,
    slowest: Duration,
}

impl Answers {
    pub(super) fn add(&mut self, status: u16, answer: &Value, took: Duration) {
        let outcome = answer["outcome"].as_str().unwrap_or("error");
        *self
            .by_kind
            .entry(format!("{status} {outcome}"))
            .or_default() += 1;
        self.slowest = self.slowest.max(took);
    }

    /// [`post_to`], its answer counted.
    pub(super) async fn post(
        &mut self,
        addr: SocketAddr,
        body: &Value,
    ) -> (u16, Option<String>, Value) {
        let sent = Instant::now();
        let answered = post_to(addr, body).await;
        self.add(answered.0, &answered.2, sent.elapsed());
        answered
    }

    /// Prints the row: the fault, these answers, acknowledged deliveries lost, set aside and
    /// counted twice, whether the bridge recovered without an operator, the slowest answer.
    pub(super) fn row(
        &self,
        fault: &str,
        (lost, set_aside, twice): (usize, usize, usize),
        recovered: &str,
    ) {
        let answers: Vec<String> = self
            .by_kind
            .iter()
            .map(|(k, n)| format!("{n} {k}"))
            .collect();
        println!(
            "FAULT-ROW | {fault} | {} | {lost} | {set_aside} | {twice} | {recovered} | {} ms |",
            answers.join(", "),
            self.slowest.as_millis()
        );
    }
}

/// The fault table's row of a [`Load`]'s ledger.
pub(super) fn fault_row(
    fault: &str,
    ledger: &[Answered],
    counts: (usize, usize, usize),
    recovered: &str,
) {
    let mut answers = Answers::default();
    for a in ledger {
        answers.add(a.status, &a.answer, a.took);
    }
    answers.row(fault, counts, recovered);
}

/// Distinct deliveries posted back to back by a few tasks until stopped, every answer kept:
/// the ledger a fault test checks the inbox against.
pub(super) struct Load {
    stop: Arc<AtomicBool>,
    ledger: Arc<Mutex<Vec<Answered>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    pub(super) fn start(addr: SocketAddr, user: &str, tasks: usize) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let ledger = Arc::new(Mutex::new(Vec::new()));
        let tasks = (0..tasks)
            .map(|task| {
                let (stop, ledger, user) = (stop.clone(), ledger.clone(), format!("{user}-{task}"));
                tokio::spawn(async move {
                    let mut n = 0;
                    while !stop.load(Ordering::SeqCst) {
                        let body = epoch_notification(&user, n * 1_000, n * 1_000 + 500, &[1]);
                        let sent = Instant::now();
                        let (status, _, answer) = post_to(addr, &body).await;
                        ledger.lock().unwrap().push(Answered {
                            body,
                            status,
                            answer,
                            sent,
                            took: sent.elapsed(),
                        });
                        n += 1;
                    }
                })
            })
            .collect();
        Self {
            stop,
            ledger,
            tasks,
        }
    }

    pub(super) fn answered(&self) -> usize {
        self.ledger.lock().unwrap().len()
    }

    /// Waits until `more` deliveries beyond those answered now have been answered.
    pub(super) async fn answers(&self, more: usize, what: &str) {
        let target = self.answered() + more;
        wait_until(Duration::from_secs(60), what, || {
            std::future::ready(self.answered() >= target)
        })
        .await;
    }

    /// Stops the load; its ledger, every answer a 200 (stored or spooled).
    pub(super) async fn stop(self) -> Vec<Answered> {
        self.stop.store(true, Ordering::SeqCst);
        for task in self.tasks {
            task.await.unwrap();
        }
        let ledger = self.ledger.lock().unwrap().clone();
        let not_ok: Vec<&Answered> = ledger.iter().filter(|a| a.status != 200).collect();
        assert!(
            not_ok.is_empty(),
            "every delivery answered 200 (stored or spooled): {} not, e.g. {:?}",
            not_ok.len(),
            not_ok.first()
        );
        ledger
    }
}

/// `/readyz`: its status and its `error`, if any.
async fn readyz(addr: SocketAddr) -> (u16, String) {
    let response = reqwest::get(format!("http://{addr}/readyz")).await.unwrap();
    let status = response.status().as_u16();
    let body: Value = response.json().await.unwrap();
    (
        status,
        body["error"].as_str().unwrap_or_default().to_owned(),
    )
}

/// The delivery count of each body's row, 0 where there is none.
pub(super) async fn counts_in_inbox(pool: &PgPool, bodies: &[&Value]) -> Vec<i32> {
    let mut counts = Vec::with_capacity(bodies.len());
    for body in bodies {
        let count: Option<i32> =
            sqlx::query_scalar("SELECT delivery_count FROM thryve.inbox WHERE payload = $1")
                .bind(body)
                .fetch_optional(pool)
                .await
                .unwrap();
        counts.push(count.unwrap_or(0));
    }
    counts
}

/// The fault table's row "database dropped and recreated": while it is gone (3D000 at login)
/// and while it is back without the bridge's schema (42P01 on `thryve.inbox`), deliveries are
/// spooled, never refused; the spool loader keeps every record (nothing in `rejected-*`) and
/// waits for the migrations; `/readyz` says the schema is missing. After `migrate`, every
/// delivery acknowledged since the drop is in the inbox, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_database_dropped_and_recreated_under_load_spools_and_loads_everything_after_migrate() {
    let db = TestDb::new().await;
    let dir = TempDir::new();
    let mut spooling = test_config();
    spooling.spool.spool_dir = Some(dir.0.clone());
    let server = Server::start(&spooling, &db.url()).await;
    let load = Load::start(server.addr, "recreated", 4);
    load.answers(40, "deliveries before the drop").await;

    admin(&format!("DROP DATABASE {} WITH (FORCE)", db.name)).await;
    let dropped = Instant::now();
    load.answers(20, "deliveries while the database is gone")
        .await;
    // Back empty, as a new database, or one restored without the bridge's schema, is.
    admin(&format!("CREATE DATABASE {}", db.name)).await;
    load.answers(20, "deliveries to the empty database").await;
    let errors = metric(server.addr, "thryve_bridge_spool_load_errors_total").await;
    // The loader waits (and fails its passes), or sets records aside: either, then look.
    wait_until(
        Duration::from_secs(20),
        "the loader met the empty database twice",
        || async {
            metric(server.addr, "thryve_bridge_spool_load_errors_total").await >= errors + 2.0
                || !set_aside_files(&dir.0).is_empty()
        },
    )
    .await;
    assert_eq!(
        set_aside_files(&dir.0),
        Vec::<PathBuf>::new(),
        "nothing acknowledged set aside"
    );
    let (status, why) = readyz(server.addr).await;
    assert_eq!(status, 503, "{why}");
    assert!(why.contains("schema missing"), "{why}");
    assert_eq!(
        metric(server.addr, "thryve_bridge_spool_set_aside_records").await,
        0.0
    );

    let (migrated, out) = cli(&["migrate"], &[("DATABASE_URL", &db.url())]).await;
    assert!(migrated, "{out}");
    load.answers(20, "deliveries after migrate").await;
    let ledger = load.stop().await;
    let since: Vec<&Value> = ledger
        .iter()
        .filter(|a| a.sent >= dropped)
        .map(|a| &a.body)
        .collect();
    let spooled = ledger
        .iter()
        .filter(|a| a.sent >= dropped && a.answer["outcome"] == "spooled")
        .count();
    assert!(spooled >= 40, "{spooled} of {} spooled", since.len());
    wait_until(Duration::from_secs(60), "the spool loaded", || async {
        metric(server.addr, "thryve_bridge_spool_records").await == 0.0
    })
    .await;
    let counts = counts_in_inbox(&db.pool, &since).await;
    let missing = counts.iter().filter(|&&c| c == 0).count();
    let twice = counts.iter().filter(|&&c| c > 1).count();
    fault_row(
        "database dropped and recreated under load, spool (`migrate` run by the test)",
        &ledger,
        (missing, set_aside_files(&dir.0).len(), twice),
        "yes, once migrated",
    );
    assert_eq!(
        (missing, twice),
        (0, 0),
        "of {} acknowledged since the drop ({spooled} spooled): missing, counted twice",
        since.len()
    );
    assert!(set_aside_files(&dir.0).is_empty());
    wait_until(Duration::from_secs(10), "ready again", || async {
        readyz(server.addr).await.0 == 200
    })
    .await;
    server.stop().await;
}
