//! Bounded resources, with the real binary as a child process: a lowered file limit caps the
//! connections served (no EMFILE storm, a delivery behind idle clients is answered), and
//! bursts of large bodies against a locked inbox are answered in time and their memory given
//! back (RSS read from /proc).

use std::{
    net::SocketAddr,
    os::unix::process::CommandExt,
    process::Command,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use tokio::{io::AsyncReadExt, net::TcpStream};
use tokio_util::sync::CancellationToken;

use serde_json::Value;
use sqlx::{Connection, PgConnection};

use super::{faults::Bridge, outages::metric};
use crate::support::{epoch_notification, wait_until, TestDb, PASSWORD, USER};

/// The binary serving `db`, with `extra` settings on top of a receiver-only configuration,
/// and the open-file limit (soft and hard) set to `nofile` when given.
async fn bridge(db: &TestDb, extra: &[(&str, &str)], nofile: Option<u64>) -> (Bridge, SocketAddr) {
    let url = db.url();
    let mut env = vec![
        ("DATABASE_URL", url.as_str()),
        ("DATABASE_MAX_CONNECTIONS", "4"),
        ("BIND_ADDR", "127.0.0.1:0"),
        ("WEBHOOK_BASIC_AUTH", "thryve:s3cret"),
        ("POLLER_ENABLED", "false"),
        ("HOUSEKEEPING_ENABLED", "false"),
        ("LOG_FORMAT", "json"),
        ("RUST_LOG", "info"),
    ];
    env.extend_from_slice(extra);
    let mut command = Command::new(env!("CARGO_BIN_EXE_thryve-bridge"));
    if let Some(limit) = nofile {
        // SAFETY: setrlimit is async-signal-safe; nothing else runs between fork and exec.
        unsafe {
            command.pre_exec(move || rlimit::setrlimit(rlimit::Resource::NOFILE, limit, limit));
        }
    }
    let bridge = Bridge::spawn_command(command, &["serve"], &env);
    let mut addr = None;
    wait_until(Duration::from_secs(30), "the bridge starts", || {
        addr = started(&bridge.output());
        std::future::ready(addr.is_some())
    })
    .await;
    (bridge, addr.unwrap().0)
}

/// The bound address and the connection cap from the start line, once it is written.
fn started(output: &str) -> Option<(SocketAddr, u64)> {
    output.lines().find_map(|line| {
        let fields: Value = serde_json::from_str(line).ok()?;
        (fields["message"] == "thryve-bridge started").then(|| {
            (
                fields["bind_addr"].as_str().unwrap().parse().unwrap(),
                fields["max_connections"].as_u64().unwrap(),
            )
        })
    })
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/<pid>/status")
}

#[tokio::test]
async fn a_low_file_limit_caps_connections_and_a_delivery_behind_idle_clients_is_answered() {
    let db = TestDb::new().await;
    // MAX_CONNECTIONS stays at its default of 1024, four times what the process may open.
    let (bridge, addr) = bridge(&db, &[("HEADER_READ_TIMEOUT_MS", "1000")], Some(256)).await;
    let (_, cap) = started(&bridge.output()).unwrap();
    assert!(
        cap < 256 - 4,
        "connections capped below the file limit: {cap}"
    );
    assert!(
        bridge.output().contains("serving fewer"),
        "{}",
        bridge.output()
    );

    // More idle clients than the process could hold files for.
    let mut idle = Vec::new();
    for _ in 0..300 {
        idle.push(tokio::net::TcpStream::connect(addr).await.unwrap());
    }
    let sent = Instant::now();
    let response = reqwest::Client::new()
        .post(format!("http://{addr}/webhooks/thryve"))
        .basic_auth(USER, Some(PASSWORD))
        .json(&epoch_notification("behind-idle", 1_000, 2_000, &[1]))
        .timeout(Duration::from_secs(30))
        .send()
        .await
        .expect("answered");
    let waited = sent.elapsed();
    assert_eq!(response.status(), 200);
    // Idle clients are dropped at the header timeout (1 s) and the delivery is next.
    assert!(waited < Duration::from_secs(5), "answered after {waited:?}");
    let output = bridge.finish();
    assert!(
        output.matches("accept failed").count() <= 1,
        "no accept storm: {output}"
    );
    drop(idle);
}

/// One burst: `n` concurrent bodies of `size` bytes; returns the statuses and the highest RSS
/// seen while it ran.
async fn burst(addr: SocketAddr, pid: u32, n: usize, body: bytes::Bytes) -> (Vec<u16>, u64) {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    let tasks: Vec<_> = (0..n)
        .map(|_| {
            let (client, body) = (client.clone(), body.clone());
            tokio::spawn(async move {
                client
                    .post(format!("http://{addr}/webhooks/thryve"))
                    .basic_auth(USER, Some(PASSWORD))
                    .header("content-type", "application/json")
                    .body(body)
                    .send()
                    .await
                    .map(|r| r.status().as_u16())
            })
        })
        .collect();
    let mut peak = rss_kib(pid);
    let mut statuses = Vec::new();
    for task in tasks {
        while !task.is_finished() {
            peak = peak.max(rss_kib(pid));
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        statuses.push(task.await.unwrap().expect("every request is answered"));
    }
    (statuses, peak)
}

#[tokio::test]
async fn bursts_of_large_bodies_against_a_locked_inbox_are_answered_in_time_and_memory_returns() {
    let _ = rlimit::increase_nofile_limit(u64::MAX);
    let db = TestDb::new().await;
    // A deadline 1 s short of Thryve's 2 s: the margin absorbs the scheduling delays of a
    // 2-core machine running the 900 clients too (and, in CI, other builds).
    // And the crowded header timeout at the uncrowded 10 s: 900 connections are more than
    // three quarters of MAX_CONNECTIONS, and this test's own clients, on the same 2 cores,
    // sometimes send a head more than 1 s after connecting, which is what that timeout closes
    // (as it should: the server cannot tell them from a flood). Floods are the subject of
    // `eleven_hundred_idle_connections_...`; this test is about bodies and memory.
    let (bridge, addr) = bridge(
        &db,
        &[
            ("ACK_DEADLINE_MS", "1000"),
            ("HEADER_READ_TIMEOUT_CROWDED_MS", "10000"),
        ],
        None,
    )
    .await;
    let pid = bridge.pid();
    let mut locker = PgConnection::connect(&db.url()).await.unwrap();
    sqlx::query("BEGIN").execute(&mut locker).await.unwrap();
    sqlx::query("LOCK TABLE thryve.inbox IN SHARE MODE")
        .execute(&mut locker)
        .await
        .unwrap();
    let body = bytes::Bytes::from(format!(
        r#"{{"type":"burst.test","endUserId":"u","pad":"{}"}}"#,
        "x".repeat(1024 * 1024 - 64)
    ));
    let baseline = rss_kib(pid);
    let mut figures = Vec::new();
    for round in 0..2 {
        let (statuses, peak) = burst(addr, pid, 900, body.clone()).await;
        // 503, or 408 for an admitted body whose upload, slowed by the other 899, did not
        // finish by the deadline: neither acknowledges, both are retried.
        let refused = statuses.iter().filter(|&&s| s == 503).count();
        assert!(
            statuses.iter().all(|&s| s == 503 || s == 408) && refused > 0,
            "round {round}: {statuses:?}"
        );
        // Memory given back: within a bound of where it started once idle (measured: about
        // 50 MiB above it with glibc, where the unbounded buffers held 330 MiB and grew with
        // each burst), and no growth from burst to burst.
        let mut idle = rss_kib(pid);
        wait_until(
            Duration::from_secs(30),
            "RSS falls back after the burst",
            || {
                idle = rss_kib(pid);
                std::future::ready(idle < baseline + 96 * 1024)
            },
        )
        .await;
        figures.push((peak, idle));
    }
    eprintln!("RSS KiB: baseline {baseline}, (peak, idle) per burst {figures:?}");
    // Every answer within the ack deadline plus the margin, as the server measured it (from
    // the request's start to its answer): within Thryve's 2 s.
    let bucket = |le: &str| format!("thryve_bridge_ack_latency_seconds_bucket{{le=\"{le}\"}}");
    let all = metric(addr, "thryve_bridge_ack_latency_seconds_count").await;
    let fast = metric(addr, &bucket("0.01")).await;
    let deadline = metric(addr, &bucket("1.0")).await;
    let thryve = metric(addr, &bucket("2.0")).await;
    eprintln!("answers: {all}, within 10 ms {fast}, within 1 s {deadline}, within 2 s {thryve}");
    assert_eq!(thryve, all, "answers slower than 2 s");
    assert!(metric(addr, "thryve_bridge_bodies_over_budget_total").await > 0.0);
    sqlx::query("ROLLBACK").execute(&mut locker).await.unwrap();
}

/// Idle TCP clients, as a connection flood: each opens a connection, sends nothing, and opens
/// a new one after `every` or as soon as the server closes it. Returns the count of
/// connections opened so far; the clients stop with `stop`.
fn idle_flood(
    addr: SocketAddr,
    clients: usize,
    every: Duration,
    stop: &CancellationToken,
) -> Arc<AtomicUsize> {
    let opened = Arc::new(AtomicUsize::new(0));
    for _ in 0..clients {
        let (stop, opened) = (stop.clone(), opened.clone());
        tokio::spawn(async move {
            while !stop.is_cancelled() {
                let Ok(mut stream) = TcpStream::connect(addr).await else {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                };
                opened.fetch_add(1, Ordering::Relaxed);
                let mut rest = Vec::new();
                tokio::select! {
                    _ = stop.cancelled() => {}
                    _ = tokio::time::sleep(every) => {}
                    _ = stream.read_to_end(&mut rest) => {}
                }
            }
        });
    }
    opened
}

/// Sends a real delivery on a new connection every `gap` for `during`, and returns how long
/// each took to be answered 200 (`Err` with what happened instead).
async fn deliveries_meanwhile(
    addr: SocketAddr,
    during: Duration,
    gap: Duration,
) -> Vec<Result<Duration, String>> {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(15))
        .build()
        .unwrap();
    let end = Instant::now() + during;
    let mut answers = Vec::new();
    let mut n = 0;
    while Instant::now() < end {
        n += 1;
        let started = Instant::now();
        let sent = client
            .post(format!("http://{addr}/webhooks/thryve"))
            .basic_auth(USER, Some(PASSWORD))
            .json(&epoch_notification(&format!("flood-{n}"), 1, 2, &[1]))
            .send()
            .await;
        let took = started.elapsed();
        answers.push(match sent {
            Ok(response) if response.status() == 200 => Ok(took),
            Ok(response) => Err(format!("{} after {took:?}", response.status())),
            Err(error) => Err(format!("{error} after {took:?}")),
        });
        tokio::time::sleep(gap.saturating_sub(took)).await;
    }
    answers
}

/// The answers' figures, printed, and the slowest.
fn report(what: &str, answers: &[Result<Duration, String>]) -> Duration {
    let mut took: Vec<Duration> = answers.iter().filter_map(|a| a.clone().ok()).collect();
    took.sort();
    let failed: Vec<&String> = answers.iter().filter_map(|a| a.as_ref().err()).collect();
    let slowest = took.last().copied().unwrap_or_default();
    eprintln!(
        "{what}: {} deliveries, {} answered 200, median {:?}, slowest {slowest:?}; failed: {failed:?}",
        answers.len(),
        took.len(),
        took.get(took.len() / 2).copied().unwrap_or_default(),
    );
    assert!(
        failed.is_empty(),
        "{what}: every delivery answered 200: {failed:?}"
    );
    slowest
}

/// Thryve wants an answer within 2 s. 1,100 idle connections (more than the default
/// `MAX_CONNECTIONS`), each re-opened every 10 s or when the server closes it, must not hold
/// a real delivery past that: connections without a complete request head are shed first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eleven_hundred_idle_connections_reopened_every_10_s_do_not_hold_a_delivery_past_2_s() {
    // Two of the flood's 10 s rounds.
    let slowest = slowest_delivery_in_a_flood(1_100, None, Duration::from_secs(21)).await;
    assert!(
        slowest < Duration::from_secs(2),
        "slowest answer {slowest:?}"
    );
}

/// With a 256-file limit the bridge serves at most 188 connections (64 files reserved, 4
/// for the pool): 300 idle clients must not hold a real delivery for 5 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_hundred_idle_clients_under_a_256_file_limit_do_not_hold_a_delivery() {
    let slowest = slowest_delivery_in_a_flood(300, Some(256), Duration::from_secs(12)).await;
    assert!(
        slowest < Duration::from_secs(5),
        "slowest answer {slowest:?}"
    );
}

/// The slowest answer to real deliveries sent every 500 ms for `window` while `clients` idle
/// connections, re-opened every 10 s, flood a bridge with the open-file limit `nofile`; the
/// bridge must still be running after.
async fn slowest_delivery_in_a_flood(
    clients: usize,
    nofile: Option<u64>,
    window: Duration,
) -> Duration {
    let db = TestDb::new().await;
    let (mut bridge, addr) = bridge(&db, &[], nofile).await;
    let stop = CancellationToken::new();
    let _stop = stop.clone().drop_guard();
    let opened = idle_flood(addr, clients, Duration::from_secs(10), &stop);
    wait_until(
        Duration::from_secs(30),
        "the flood's connections open",
        || std::future::ready(opened.load(Ordering::Relaxed) >= clients),
    )
    .await;
    let answers = deliveries_meanwhile(addr, window, Duration::from_millis(500)).await;
    let what = match nofile {
        Some(files) => format!("{clients} idle clients, {files} files"),
        None => format!("{clients} idle connections"),
    };
    let slowest = report(&what, &answers);
    assert!(bridge.try_wait().is_none(), "still running");
    slowest
}
