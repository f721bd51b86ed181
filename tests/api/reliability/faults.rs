//! "Never loses an acknowledged delivery", shown under faults: database connections killed
//! under load, a poller process SIGKILLed mid-drain, a stalled database, statements that fail
//! for one delivery, and a pool with no connection to spare.

use std::{
    collections::{BTreeMap, HashMap},
    future::Future,
    io::{BufRead, BufReader},
    net::SocketAddr,
    pin::Pin,
    process::{Child, Command, ExitStatus, Stdio},
    sync::{Arc, Mutex},
    task::Poll,
    thread::JoinHandle,
    time::{Duration, Instant},
};

use serde_json::Value;
use sqlx::{Connection, PgConnection, PgPool};
use thryve_bridge::{
    db,
    inbox::{self, InboxWriter, NewDelivery, Outcome, Receipt, WriteError},
};
use thryve_loadgen::{self as loadgen, LoadConfig, Rng, Sent};

use super::{
    outages::{counts_in_inbox, fault_row, metric, Load, OwnCluster, TempDir},
    spool::behind_proxy,
};
use crate::{
    invariants::assert_guarantees,
    poller::{poller, store},
    proxy::PgProxy,
    support::{
        answer, epoch_notification, receiver_only, spawn_app, spawn_app_with, spawn_on,
        test_config, wait_until, TestDb, PASSWORD, USER,
    },
};

/// The real binary as a child process, configured only by the variables given, its stdout
/// and stderr collected line by line. Dropping it kills it.
pub(super) struct Bridge {
    child: Child,
    output: Arc<Mutex<String>>,
    readers: Vec<JoinHandle<()>>,
}

impl Bridge {
    pub(super) fn spawn(args: &[&str], env: &[(&str, &str)]) -> Self {
        Self::spawn_command(Command::new(env!("CARGO_BIN_EXE_thryve-bridge")), args, env)
    }

    /// [`Bridge::spawn`] with a command the caller prepared (e.g. with a `pre_exec` hook).
    pub(super) fn spawn_command(mut command: Command, args: &[&str], env: &[(&str, &str)]) -> Self {
        let mut child = command
            .args(args)
            .current_dir(std::env::temp_dir())
            .env_clear()
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the binary starts");
        let output = Arc::new(Mutex::new(String::new()));
        let stdout = child
            .stdout
            .take()
            .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>);
        let stderr = child
            .stderr
            .take()
            .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>);
        let readers = [stdout, stderr]
            .into_iter()
            .flatten()
            .map(|stream| {
                let output = output.clone();
                std::thread::spawn(move || {
                    for line in BufReader::new(stream).lines() {
                        let Ok(line) = line else { break };
                        let mut output = output.lock().unwrap();
                        output.push_str(&line);
                        output.push('\n');
                    }
                })
            })
            .collect();
        Self {
            child,
            output,
            readers,
        }
    }

    pub(super) fn pid(&self) -> u32 {
        self.child.id()
    }

    pub(super) fn output(&self) -> String {
        self.output.lock().unwrap().clone()
    }

    /// The exit status, once the process has exited.
    pub(super) fn try_wait(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().unwrap()
    }

    /// Sends SIGKILL (what `Child::kill` does on Unix) and reaps the process.
    pub(super) fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends SIGTERM and waits for the exit.
    pub(super) async fn terminate(&mut self, within: Duration) -> ExitStatus {
        // A signal from Rust, not a `kill` binary: slim test images have none.
        let pid = libc::pid_t::try_from(self.child.id()).expect("a pid fits pid_t");
        // SAFETY: kill(2) takes plain integers and touches no memory of ours.
        let sent = unsafe { libc::kill(pid, libc::SIGTERM) };
        assert_eq!(sent, 0, "SIGTERM: {}", std::io::Error::last_os_error());
        let mut exit = None;
        wait_until(within, "the bridge exits after SIGTERM", || {
            exit = self.try_wait();
            std::future::ready(exit.is_some())
        })
        .await;
        exit.unwrap()
    }

    /// Everything the process wrote, once it has exited.
    pub(super) fn finish(mut self) -> String {
        self.kill();
        for reader in self.readers.drain(..) {
            reader.join().unwrap();
        }
        self.output()
    }
}

impl Drop for Bridge {
    fn drop(&mut self) {
        self.kill();
    }
}

async fn count(conn: &mut PgConnection, sql: &str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(conn).await.unwrap()
}

/// Polls the count `sql` returns until `done` holds for it, failing the test after `within`.
async fn wait_for_count(
    conn: &mut PgConnection,
    sql: &str,
    within: Duration,
    done: impl Fn(i64) -> bool,
) -> i64 {
    let deadline = Instant::now() + within;
    loop {
        let n = count(conn, sql).await;
        if done(n) {
            return n;
        }
        assert!(
            Instant::now() < deadline,
            "not within {within:?}: {sql} = {n}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Terminates every other backend of the test's database, as a database restart would;
/// returns how many.
async fn terminate_backends(conn: &mut PgConnection) -> i64 {
    count(
        conn,
        "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity
          WHERE datname = current_database() AND pid <> pg_backend_pid()) AS killed",
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn database_connections_killed_twice_under_load_lose_no_acknowledged_delivery() {
    let config = test_config();
    let app = spawn_app_with(config).await;
    let mut killer = PgConnection::connect(&app.db.url()).await.unwrap();
    let load = LoadConfig {
        url: app.url("/webhooks/thryve"),
        basic_auth: Some((USER.to_owned(), PASSWORD.to_owned())),
        concurrency: 8,
        requests: 1500,
        duration: Duration::from_secs(60),
        rate: None,
        users: 50,
        retry_share: 0.05,
        twin_share: 0.25,
        seed: 11,
        lag_pool: None,
        notifications_only: false,
    };
    let run = tokio::spawn(async move { loadgen::run(&load).await });

    // Killed once traffic is flowing, and again once it has flowed on after the first kill:
    // the second threshold is only reached if the service recovered by itself.
    let mut killed = Vec::new();
    for rows in [200, 600] {
        wait_for_count(
            &mut killer,
            "SELECT count(*) FROM thryve.inbox",
            Duration::from_secs(30),
            |n| n >= rows,
        )
        .await;
        killed.push(terminate_backends(&mut killer).await);
    }
    let run = run.await.unwrap();
    assert!(
        killed.iter().all(|&n| n > 0),
        "each kill hit the server's connections: {killed:?}"
    );
    assert_eq!(run.report.transport_errors, 0, "every request was answered");
    assert!(
        run.report.statuses.keys().all(|s| *s == 200 || *s == 503),
        "only 200 or an honest 503: {:?}",
        run.report.statuses
    );
    let refused: Vec<&Sent> = run.sent.iter().filter(|s| s.status == 503).collect();
    for s in &refused {
        assert_eq!(s.retry_after.as_deref(), Some("5"), "{s:?}");
        assert!(
            s.error.as_deref().is_some_and(|e| e.contains("resend")),
            "{s:?}"
        );
    }

    // Thryve retries what was refused; each retry is taken, new or already there.
    let mut all = run.sent.clone();
    for s in &refused {
        let (status, ack) = answer(app.post_json(&s.body.json()).await).await;
        assert_eq!(status, 200, "{ack}");
        assert!(
            matches!(ack["outcome"].as_str(), Some("stored" | "duplicate")),
            "{ack}"
        );
        all.push(Sent {
            status,
            inbox_id: ack["inbox_id"].as_i64(),
            retry_after: None,
            error: None,
            body: s.body.clone(),
            answered_at: Instant::now(),
        });
    }
    let verification = loadgen::verify(&app.db.pool, &all, Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(
        (
            verification.missing,
            verification.not_processed,
            verification.uncovered
        ),
        (0, 0, 0),
        "{verification:?} ({} refused with 503)",
        refused.len()
    );
    assert_eq!(app.get_status("/readyz").await, 200);
    let (status, ack) = answer(
        app.post_json(&epoch_notification("after-restarts", 1, 2, &[1]))
            .await,
    )
    .await;
    assert_eq!((status, ack["outcome"].as_str()), (200, Some("stored")));
    assert_guarantees(&app.db.pool).await;
}

/// Pooled connections are pinged only after they sat idle (`db::PING_AFTER_IDLE`), not before
/// every write. A connection the server ended while it was in steady use therefore fails the
/// next write: answered as an outage (503, resend), never as stored, at most once per
/// connection ended, and the resend is stored once. One that sat idle past the threshold is
/// pinged and replaced before use: the delivery after a quiet spell is stored at once.
#[tokio::test]
async fn a_connection_ended_by_the_server_costs_at_most_an_honest_503_and_an_idle_one_nothing() {
    let app = spawn_app_with(test_config()).await;
    let mut killer = PgConnection::connect(&app.db.url()).await.unwrap();
    let delivery = |n: i64| epoch_notification("ended-connections", n, n + 60_000, &[1]);

    // In steady use: a delivery, the server ends every connection, at once the next one.
    let (status, _) = answer(app.post_json(&delivery(0)).await).await;
    assert_eq!(status, 200);
    let ended = terminate_backends(&mut killer).await;
    assert!(ended > 0, "the bridge's connections were ended");
    let body = delivery(1);
    let mut refused = 0;
    let ack = loop {
        let (status, ack) = answer(app.post_json(&body).await).await;
        if status == 200 {
            break ack;
        }
        assert_eq!(status, 503, "{ack}");
        assert!(
            ack["error"].as_str().is_some_and(|e| e.contains("resend")),
            "{ack}"
        );
        refused += 1;
        assert!(
            refused <= ended,
            "{refused} refusals for {ended} connections ended"
        );
    };
    assert_eq!(ack["outcome"], "stored", "{ack}");

    // Idle past the threshold: the dead connection is found by the ping, not by the write.
    let (status, _) = answer(app.post_json(&delivery(2)).await).await;
    assert_eq!(status, 200);
    assert!(terminate_backends(&mut killer).await > 0);
    // The precondition is time itself: the pool's connections must have sat idle this long.
    tokio::time::sleep(db::PING_AFTER_IDLE + Duration::from_millis(200)).await;
    let (status, ack) = answer(app.post_json(&delivery(3)).await).await;
    assert_eq!(
        (status, ack["outcome"].as_str()),
        (200, Some("stored")),
        "{ack}"
    );

    let rows = count(
        &mut killer,
        "SELECT count(*) FROM thryve.inbox WHERE end_user_id = 'ended-connections'",
    )
    .await;
    assert_eq!(rows, 4, "each delivery stored once");
}

/// Fills the inbox with `rows` distinct pending deliveries of the load generator's mix,
/// through the data layer.
async fn fill(pool: &PgPool, rows: usize) {
    let mut rng = Rng::new(5);
    let mut remaining = rows;
    while remaining > 0 {
        let mut chunk: BTreeMap<[u8; 32], NewDelivery> = BTreeMap::new();
        while chunk.len() < remaining.min(1000) {
            if let (Value::Object(body), _) = loadgen::delivery(&mut rng, 200) {
                let d = NewDelivery::from_body(&body);
                chunk.insert(d.fingerprint, d);
            }
        }
        let batch: Vec<(&NewDelivery, i32)> = chunk.values().map(|d| (d, 1)).collect();
        let written = inbox::insert_batch(pool, &batch).await.unwrap();
        remaining -= written.iter().filter(|r| r.inserted).count().min(remaining);
    }
}

fn poller_process(db: &TestDb) -> Bridge {
    Bridge::spawn(
        &["serve"],
        &[
            ("DATABASE_URL", &db.url()),
            ("BIND_ADDR", "127.0.0.1:0"),
            ("WEBHOOK_BASIC_AUTH", "thryve:s3cret"),
            ("RECEIVER_ENABLED", "false"),
            ("POLLER_ENABLED", "true"),
            ("POLL_BATCH_SIZE", "50"),
            ("POLL_INTERVAL_MS", "100"),
            ("HOUSEKEEPING_ENABLED", "false"),
            ("RUST_LOG", "warn"),
        ],
    )
}

#[tokio::test]
async fn a_poller_process_killed_mid_drain_leaves_nothing_lost_or_uncovered() {
    const ROWS: i64 = 6000;
    let db = TestDb::new().await;
    fill(&db.pool, ROWS as usize).await;
    let mut conn = PgConnection::connect(&db.url()).await.unwrap();
    let handled = "SELECT count(*) FROM thryve.inbox WHERE status <> 'pending'";
    let before = count(&mut conn, handled).await;

    let mut first = poller_process(&db);
    wait_for_count(&mut conn, handled, Duration::from_secs(20), |n| {
        n >= before + 150
    })
    .await;
    first.kill();
    let at_kill = count(&mut conn, handled).await;
    assert!(
        before < at_kill && at_kill < ROWS,
        "killed mid-drain: {at_kill} of {ROWS} rows handled ({before} at insert)\n{}",
        first.output()
    );

    let mut second = poller_process(&db);
    wait_for_count(&mut conn, handled, Duration::from_secs(60), |n| n == ROWS).await;
    assert!(second.terminate(Duration::from_secs(15)).await.success());
    let output = second.finish();

    let statuses: Vec<(String, i64)> =
        sqlx::query_as("SELECT status, count(*) FROM thryve.inbox GROUP BY 1 ORDER BY 1")
            .fetch_all(&db.pool)
            .await
            .unwrap();
    let statuses: HashMap<String, i64> = statuses.into_iter().collect();
    assert_eq!(statuses.values().sum::<i64>(), ROWS, "{statuses:?}");
    assert!(
        statuses
            .keys()
            .all(|s| matches!(s.as_str(), "processed" | "quarantined" | "ignored")),
        "{statuses:?}"
    );
    assert_eq!(
        statuses.get("quarantined"),
        None,
        "no row was quarantined by the crash\n{output}"
    );
    assert_guarantees(&db.pool).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stalled_database_answers_more_requests_than_connections_with_503_in_time_then_recovers()
{
    let app = spawn_app().await;
    let mut locker = PgConnection::connect(&app.db.url()).await.unwrap();
    let mut lock = locker.begin().await.unwrap();
    sqlx::query("LOCK TABLE thryve.inbox IN EXCLUSIVE MODE")
        .execute(&mut *lock)
        .await
        .unwrap();

    // 40 at once against a pool of 10: no request may wait for a connection past its deadline.
    let bodies: Vec<Value> = (0..40)
        .map(|i| epoch_notification(&format!("stalled-{i}"), i, i + 1, &[1]))
        .collect();
    let answers = join_all(bodies.iter().map(|body| {
        let app = &app;
        async move {
            let started = Instant::now();
            let response = app.post_json(body).await;
            let retry_after = response.headers().get("retry-after").cloned();
            let (status, error) = answer(response).await;
            (status, retry_after, error, started.elapsed())
        }
    }))
    .await;
    for (status, retry_after, error, waited) in &answers {
        assert_eq!(*status, 503, "{error}");
        assert_eq!(retry_after.as_ref().unwrap(), "5");
        assert!(
            error["error"]
                .as_str()
                .unwrap()
                .contains("500 ms ack deadline"),
            "{error}"
        );
        assert!(
            *waited < Duration::from_secs(5),
            "answered within the deadline plus slack, not hung: {waited:?}"
        );
    }

    lock.rollback().await.unwrap();
    let mut acknowledged = Vec::new();
    for i in 0..10 {
        let started = Instant::now();
        let (status, ack) = answer(
            app.post_json(&epoch_notification("unstalled", i, i + 1, &[1]))
                .await,
        )
        .await;
        assert_eq!(
            (status, ack["outcome"].as_str()),
            (200, Some("stored")),
            "{ack}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "the pool is not exhausted: {:?}",
            started.elapsed()
        );
        acknowledged.push(ack["inbox_id"].as_i64().unwrap());
    }
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM thryve.inbox WHERE id = ANY($1)")
        .bind(&acknowledged)
        .fetch_one(&app.db.pool)
        .await
        .unwrap();
    assert_eq!(stored, 10, "every 200 has its row");

    // An abandoned write may have committed after its 503, or not: Thryve's retry is taken
    // either way, and never makes a second row.
    for body in &bodies {
        let (status, ack) = answer(app.post_json(body).await).await;
        assert_eq!(status, 200, "{ack}");
        assert!(
            matches!(ack["outcome"].as_str(), Some("stored" | "duplicate")),
            "{ack}"
        );
    }
    let stalled: i64 =
        sqlx::query_scalar("SELECT count(*) FROM thryve.inbox WHERE end_user_id LIKE 'stalled-%'")
            .fetch_one(&app.db.pool)
            .await
            .unwrap();
    assert_eq!(stalled, 40);
}

/// A trigger that refuses two end users' rows as a full disk or a violated constraint would.
async fn refuse_two_users(pool: &PgPool) {
    sqlx::raw_sql(
        "CREATE FUNCTION public.refuse_some() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN
             IF NEW.end_user_id = 'refused-check' THEN
                 RAISE EXCEPTION 'no such user here' USING ERRCODE = 'check_violation';
             ELSIF NEW.end_user_id = 'refused-disk' THEN
                 RAISE EXCEPTION 'could not extend file' USING ERRCODE = 'disk_full';
             END IF;
             RETURN NEW;
         END $$;
         CREATE TRIGGER refuse_some BEFORE INSERT OR UPDATE ON thryve.inbox
             FOR EACH ROW EXECUTE FUNCTION public.refuse_some();",
    )
    .execute(pool)
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_statement_error_for_one_delivery_refuses_only_that_one_with_503() {
    let mut config = test_config();
    // One writer: the refused delivery's batch is retried one by one, and only its own
    // statement fails; 5 s, so that those one-by-one retries finish within the deadline.
    config.receiver.ingest_writers = 1;
    config.receiver.ack_deadline_ms = 5000;
    let app = spawn_app_with(config).await;
    refuse_two_users(&app.db.pool).await;

    let mut bodies: Vec<Value> = (0..30)
        .map(|i| epoch_notification(&format!("good-{i}"), i, i + 1, &[1]))
        .collect();
    bodies.insert(10, epoch_notification("refused-check", 1, 2, &[1]));
    bodies.insert(20, epoch_notification("refused-disk", 1, 2, &[1]));
    let answers = join_all(bodies.iter().map(|body| {
        let app = &app;
        async move {
            let response = app.post_json(body).await;
            let retry_after = response.headers().get("retry-after").cloned();
            let (status, ack) = answer(response).await;
            (
                body["endUserId"].as_str().unwrap().to_owned(),
                status,
                retry_after,
                ack,
            )
        }
    }))
    .await;
    let mut acknowledged = Vec::new();
    for (user, status, retry_after, ack) in &answers {
        if user.starts_with("refused-") {
            assert_eq!(*status, 503, "{user}: {ack}");
            assert_eq!(retry_after.as_ref().unwrap(), "5", "{user}");
            assert!(
                ack["error"]
                    .as_str()
                    .unwrap()
                    .contains("nothing was stored"),
                "{ack}"
            );
            assert!(
                !ack.to_string().contains("extend file"),
                "no database detail leaks"
            );
        } else {
            assert_eq!(
                (*status, ack["outcome"].as_str()),
                (200, Some("stored")),
                "{user}: {ack}"
            );
            acknowledged.push(ack["inbox_id"].as_i64().unwrap());
        }
    }
    let rows: Vec<i64> = sqlx::query_scalar("SELECT id FROM thryve.inbox ORDER BY id")
        .fetch_all(&app.db.pool)
        .await
        .unwrap();
    acknowledged.sort_unstable();
    assert_eq!(rows, acknowledged, "the rows are exactly the 200s");
}

/// Polls every future once, in order, then drives them all to completion: what is enqueued
/// on the first poll is enqueued before anything that runs after this returns its first
/// `Pending`.
async fn join_all<F: Future>(futures: impl Iterator<Item = F>) -> Vec<F::Output> {
    let mut futures: Vec<Pin<Box<F>>> = futures.map(Box::pin).collect();
    let mut outputs: Vec<Option<F::Output>> = futures.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut done = true;
        for (future, output) in futures.iter_mut().zip(outputs.iter_mut()) {
            if output.is_none() {
                match future.as_mut().poll(cx) {
                    Poll::Ready(value) => *output = Some(value),
                    Poll::Pending => done = false,
                }
            }
        }
        if done {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    })
    .await;
    outputs.into_iter().map(Option::unwrap).collect()
}

#[tokio::test]
async fn one_batch_holding_refused_and_good_deliveries_commits_the_good_ones() {
    one_mixed_batch(&[(5, "refused-check"), (15, "refused-disk")]).await;
}

/// The error a full disk raises is an outage's (class 53): it says nothing about the rows, yet
/// one row raised it here, and the batch's other deliveries are still stored.
#[tokio::test]
async fn one_batch_whose_statement_fails_with_an_outage_code_still_commits_the_good_ones() {
    one_mixed_batch(&[(15, "refused-disk")]).await;
}

/// One writer statement holding 20 deliveries, `refused` of them (at their positions) refused
/// by `refuse_two_users`' trigger: every other one is stored, no refused one is.
async fn one_mixed_batch(refused: &[(usize, &str)]) {
    let db = TestDb::new().await;
    refuse_two_users(&db.pool).await;
    let committed = Arc::new(tokio::sync::watch::channel(0u64).0);
    let (writer, _tasks) = InboxWriter::start(db.pool.clone(), 1, 128, committed);
    let delivery = |user: &str, i: i64| {
        NewDelivery::from_body(
            epoch_notification(user, i, i + 1, &[1])
                .as_object()
                .unwrap(),
        )
    };

    // The one writer is held inside its first INSERT by a table lock, so every delivery
    // queued meanwhile is written by its next statement, together.
    let mut locker = PgConnection::connect(&db.url()).await.unwrap();
    let mut lock = locker.begin().await.unwrap();
    sqlx::query("LOCK TABLE thryve.inbox IN EXCLUSIVE MODE")
        .execute(&mut *lock)
        .await
        .unwrap();
    let first = tokio::spawn({
        let (writer, d) = (writer.clone(), delivery("first", 0));
        async move { writer.store(d).await }
    });
    wait_until(
        Duration::from_secs(10),
        "the writer waits for the lock",
        || {
            let pool = db.pool.clone();
            async move {
                sqlx::query_scalar::<_, i64>(
                    "SELECT count(*) FROM pg_stat_activity
                  WHERE datname = current_database() AND wait_event_type = 'Lock'",
                )
                .fetch_one(&pool)
                .await
                .unwrap()
                    == 1
            }
        },
    )
    .await;
    let users: Vec<String> = (0..20)
        .map(|i| match refused.iter().find(|(at, _)| *at == i) {
            Some((_, user)) => (*user).to_owned(),
            None => format!("good-{i}"),
        })
        .collect();
    let good = 20 - refused.len();
    type Step<'a> = Pin<Box<dyn Future<Output = Option<Result<Receipt, Arc<WriteError>>>> + 'a>>;
    let results = join_all(
        users
            .iter()
            .map(|user| {
                let writer = writer.clone();
                let d = delivery(user, 1);
                Box::pin(async move { Some(writer.store(d).await) }) as Step
            })
            .chain(std::iter::once(Box::pin(async move {
                lock.rollback().await.unwrap();
                None
            }) as Step)),
    )
    .await;
    assert!(first.await.unwrap().is_ok());
    let mut stored = vec![];
    for (user, result) in users.iter().zip(results.into_iter().flatten()) {
        match result {
            Ok(receipt) => {
                assert!(user.starts_with("good-"), "{user} was committed");
                assert_eq!(receipt.outcome, Outcome::Stored, "{user}");
                stored.push(receipt.inbox_id);
            }
            Err(error) => assert!(user.starts_with("refused-"), "{user}: {error}"),
        }
    }
    assert_eq!(stored.len(), good);
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM thryve.inbox WHERE id = ANY($1)")
        .bind(&stored)
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(rows as usize, good);
    let total: i64 = sqlx::query_scalar("SELECT count(*) FROM thryve.inbox")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(
        total as usize,
        good + 1,
        "the good ones and the first, nothing of the refused"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_full_pool_gives_503_in_time_and_the_next_delivery_200() {
    let db = TestDb::new().await;
    // The poller off: its LISTEN would keep one of the three connections the test must hold.
    let config = receiver_only();
    let pool = db::pool(&db.url(), 3, config.receiver.ack_deadline()).unwrap();
    let app = spawn_on(db, pool.clone(), config).await;
    let (status, _) = answer(
        app.post_json(&epoch_notification("before", 1, 2, &[1]))
            .await,
    )
    .await;
    assert_eq!(status, 200);

    // Each acquire waits at most the pool's timeout; one may lose a race with the server.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut held = Vec::new();
    while held.len() < 3 {
        assert!(Instant::now() < deadline, "the test holds every connection");
        if let Ok(conn) = pool.acquire().await {
            held.push(conn);
        }
    }
    let started = Instant::now();
    let response = app
        .post_json(&epoch_notification("starved", 1, 2, &[1]))
        .await;
    let waited = started.elapsed();
    assert_eq!(response.headers()["retry-after"], "5");
    let (status, error) = answer(response).await;
    assert_eq!(status, 503, "{error}");
    assert!(waited < Duration::from_secs(5), "not hung: {waited:?}");

    drop(held);
    let (status, ack) = answer(
        app.post_json(&epoch_notification("after", 1, 2, &[1]))
            .await,
    )
    .await;
    assert_eq!(
        (status, ack["outcome"].as_str()),
        (200, Some("stored")),
        "{ack}"
    );
    let users: Vec<String> = sqlx::query_scalar("SELECT end_user_id FROM thryve.inbox ORDER BY id")
        .fetch_all(&app.db.pool)
        .await
        .unwrap();
    // The refused one may have been written after its 503 (its wait was abandoned, not its
    // write), or not; both 200s must be there.
    assert!(
        users == ["before", "after"] || users == ["before", "starved", "after"],
        "{users:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_delivery_given_up_on_while_its_writer_waited_for_a_connection_is_not_written() {
    let db = TestDb::new().await;
    // The poller off: its LISTEN would keep one of the connections the test must hold. One
    // writer: the given-up delivery is written or skipped before the next one is taken.
    let mut config = receiver_only();
    config.receiver.ingest_writers = 1;
    // A connection may be waited for far longer than the ack deadline, so the writer still
    // waits for one when the test gives them back, after the 503.
    let pool = db::pool(&db.url(), 2, Duration::from_secs(30)).unwrap();
    let app = spawn_on(db, pool.clone(), config).await;
    let mut held = Vec::new();
    while held.len() < 2 {
        held.push(pool.acquire().await.unwrap());
    }
    let (status, error) = answer(
        app.post_json(&epoch_notification("given-up", 1, 2, &[1]))
            .await,
    )
    .await;
    assert_eq!(status, 503, "{error}");
    drop(held);
    let (status, ack) = answer(
        app.post_json(&epoch_notification("after", 1, 2, &[1]))
            .await,
    )
    .await;
    assert_eq!((status, ack["outcome"].as_str()), (200, Some("stored")));
    let users: Vec<String> = sqlx::query_scalar("SELECT end_user_id FROM thryve.inbox ORDER BY id")
        .fetch_all(&app.db.pool)
        .await
        .unwrap();
    assert_eq!(
        users,
        ["after"],
        "the 503 was answered before any write began"
    );
}

#[tokio::test]
async fn a_full_disk_while_polling_quarantines_nothing_and_the_rows_are_processed_after() {
    let db = TestDb::new().await;
    let ids = store(
        &db,
        &[
            epoch_notification("disk", 1_000, 2_000, &[1]),
            epoch_notification("disk", 5_000, 6_000, &[2]),
            epoch_notification("other", 1_000, 2_000, &[1]),
        ],
    )
    .await;
    sqlx::raw_sql(
        "CREATE FUNCTION public.disk_full() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN RAISE EXCEPTION 'could not extend file' USING ERRCODE = 'disk_full'; END $$;
         CREATE TRIGGER disk_full BEFORE INSERT OR UPDATE ON thryve.dirty_ranges
             FOR EACH ROW EXECUTE FUNCTION public.disk_full();",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    let poller = poller(&db);
    // Nothing is wrong with the rows: the batch fails, and is tried again later.
    for _ in 0..2 {
        assert!(poller.poll_once().await.is_err());
    }
    let statuses: Vec<String> =
        sqlx::query_scalar("SELECT status FROM thryve.inbox WHERE id = ANY($1)")
            .bind(&ids)
            .fetch_all(&db.pool)
            .await
            .unwrap();
    assert_eq!(
        statuses, ["pending"; 3],
        "no row quarantined by a full disk"
    );

    sqlx::raw_sql("DROP TRIGGER disk_full ON thryve.dirty_ranges")
        .execute(&db.pool)
        .await
        .unwrap();
    assert_eq!(poller.drain().await.unwrap(), 3);
    let processed: i64 =
        sqlx::query_scalar("SELECT count(*) FROM thryve.inbox WHERE status = 'processed'")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(processed, 3);
    assert_guarantees(&db.pool).await;
}

/// The address a [`Bridge`] started with `LOG_FORMAT=json` and `BIND_ADDR=127.0.0.1:0` serves on.
async fn served_on(bridge: &Bridge) -> SocketAddr {
    let mut addr = None;
    wait_until(Duration::from_secs(30), "the bridge starts", || {
        addr = bridge.output().lines().find_map(|line| {
            let event: Value = serde_json::from_str(line).ok()?;
            (event["message"] == "thryve-bridge started")
                .then(|| event["bind_addr"].as_str()?.parse().ok())?
        });
        std::future::ready(addr.is_some())
    })
    .await;
    addr.unwrap()
}

/// How the restart tests take the database away for a moment.
enum Restart<'a> {
    /// A proxy the test controls cuts every connection and refuses new ones until
    /// deliveries have been spooled.
    Proxy(&'a PgProxy),
    /// A cluster of the test's own restarts (fast shutdown: every session ended).
    Cluster(&'a OwnCluster),
}

impl Restart<'_> {
    async fn once(&self, load: &Load) {
        match self {
            Restart::Proxy(proxy) => {
                proxy.down();
                load.answers(10, "deliveries while the database is down")
                    .await;
                proxy.up();
            }
            Restart::Cluster(cluster) => tokio::task::block_in_place(|| cluster.restart()),
        }
    }
}

/// The fault table's row "three fast restarts under load, with a spool", against the real
/// binary connecting to `url`, the database restarted three times under load: no connection
/// that ran LISTEN serves other statements afterwards (no `unexpected message:
/// NotificationResponse` in the log), every acknowledged delivery is in the inbox (read with
/// `inbox`), and none committed once is counted twice (a write cut off mid-commit and spooled
/// is checked, not loaded again as a second delivery).
async fn three_restarts_under_load(url: &str, inbox: &PgPool, restart: Restart<'_>) {
    let dir = TempDir::new();
    let spool_dir = dir.0.to_string_lossy().into_owned();
    let auth = format!("{USER}:{PASSWORD}");
    let bridge = Bridge::spawn(
        &["serve"],
        &[
            ("DATABASE_URL", url),
            ("BIND_ADDR", "127.0.0.1:0"),
            ("WEBHOOK_BASIC_AUTH", &auth),
            ("SPOOL_DIR", &spool_dir),
            ("HOUSEKEEPING_ENABLED", "false"),
            ("LOG_FORMAT", "json"),
            ("RUST_LOG", "info"),
        ],
    );
    let addr = served_on(&bridge).await;
    let load = Load::start(addr, "restarts", 4);
    load.answers(50, "deliveries before the first restart")
        .await;
    for _ in 0..3 {
        restart.once(&load).await;
        load.answers(50, "deliveries once it is back").await;
    }
    let ledger = load.stop().await;
    let spooled = ledger
        .iter()
        .filter(|a| a.answer["outcome"] == "spooled")
        .count();
    assert!(spooled > 0, "{spooled} spooled");
    wait_until(Duration::from_secs(60), "the spool loaded", || async {
        metric(addr, "thryve_bridge_spool_records").await == 0.0
    })
    .await;
    let bodies: Vec<&Value> = ledger.iter().map(|a| &a.body).collect();
    let counts = counts_in_inbox(inbox, &bodies).await;
    let missing = counts.iter().filter(|&&c| c == 0).count();
    let twice = counts.iter().filter(|&&c| c > 1).count();
    let log = bridge.finish();
    let notification_errors = log.matches("NotificationResponse").count();
    let set_aside = std::fs::read_dir(&dir.0)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with("rejected-")
        })
        .count();
    let fault = match restart {
        Restart::Proxy(_) => "connections cut and refused 3 times under load, spool (proxy)",
        Restart::Cluster(_) => "cluster restarted 3 times under load, spool (`restart -m fast`)",
    };
    fault_row(
        fault,
        &ledger,
        (missing, set_aside, twice),
        if notification_errors == 0 {
            "yes"
        } else {
            "no: NotificationResponse"
        },
    );
    assert_eq!(
        (missing, twice, notification_errors),
        (0, 0, 0),
        "of {} acknowledged ({spooled} spooled): missing, counted twice, log lines naming \
         NotificationResponse",
        ledger.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_fast_restarts_under_load_with_a_spool_lose_nothing_and_count_nothing_twice() {
    let (db, proxy, url) = behind_proxy().await;
    three_restarts_under_load(&url, &db.pool, Restart::Proxy(&proxy)).await;
}

/// The same on a cluster of the test's own, restarted for real three times.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_restarts_of_a_cluster_under_load_leave_no_listening_connection_in_the_pool() {
    let Some(cluster) = OwnCluster::create_as("thryve26", 54332, "trust") else {
        eprintln!("skipped: no pg_createcluster here, or no right to run it");
        return;
    };
    cluster.sql("postgres", "CREATE DATABASE bridge").await;
    let url = cluster.tcp_url("bridge");
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(2)
        .connect(&url)
        .await
        .unwrap();
    db::migrate(&pool).await.unwrap();
    three_restarts_under_load(&url, &pool, Restart::Cluster(&cluster)).await;
}
