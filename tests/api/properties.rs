//! Guarantees 2-4 under random streams (property test) and under concurrent pollers and
//! consumers on one database (10,000+ notifications).

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::Duration,
};

use proptest::{
    collection::vec,
    prelude::*,
    test_runner::{Config, TestRunner},
};
use serde_json::{json, Value};
use sqlx::postgres::PgPoolOptions;
use thryve_bridge::{
    inbox::{self, NewDelivery},
    poller::Poller,
    ranges::{ClaimMode, Consumer, DirtyRange},
};

use crate::{
    invariants::assert_guarantees,
    support::{test_config, TestDb},
};

const BASE_MS: i64 = 1_735_689_600_000; // 2025-01-01T00:00:00Z

/// A notification drawn from a small domain, so spans collide, touch and bridge often.
fn notification(user: u8, source: u8, daily: bool, start: u8, len: u8, types: Vec<u8>) -> Value {
    let types: Vec<i32> = types.into_iter().map(|t| 1000 + i32::from(t)).collect();
    let user = format!("user-{user}");
    if daily {
        let day = |d: i64| {
            (chrono::DateTime::from_timestamp_millis(BASE_MS).unwrap() + chrono::Duration::days(d))
                .date_naive()
                .to_string()
        };
        json!({"endUserId": user, "timestampType": "iso", "type": "notification.data.daily.createupdate",
               "data": {"startDay": day(i64::from(start)), "endDay": day(i64::from(start) + i64::from(len)),
                        "dataSourceId": source, "dataTypeIds": types}})
    } else {
        let minute = |m: i64| BASE_MS + m * 60_000;
        json!({"endUserId": user, "timestampType": "unix", "type": "notification.data.epoch.createupdate",
               "data": {"startTimestamp": minute(i64::from(start)), "endTimestamp": minute(i64::from(start) + i64::from(len)),
                        "dataSourceId": source, "dataTypeIds": types}})
    }
}

/// A data push of a few values drawn from the same small domain (minutes or days from the
/// base), as `create` or `update`: its values, and the times they cover, collide with
/// notifications' spans and with each other.
fn push(user: u8, source: u8, daily: bool, update: bool, points: Vec<(u8, u8, u8)>) -> Value {
    let kind = if update { "update" } else { "create" };
    let user = format!("user-{user}");
    if daily {
        let data: Vec<Value> = points
            .iter()
            .map(|(start, _, t)| json!({"day": BASE_MS + i64::from(*start) * 86_400_000,
                                        "dataTypeId": 1000 + i32::from(*t), "value": format!("{start}{t}")}))
            .collect();
        json!({"endUserId": user, "timestampType": "unix", "type": format!("event.data.daily.{kind}"),
               "data": [{"dataSourceId": source, "dailyData": data}]})
    } else {
        let minute = |m: u8| BASE_MS + i64::from(m) * 60_000;
        let data: Vec<Value> = points
            .iter()
            .map(|(start, len, t)| {
                let mut v = json!({"startTimestamp": minute(*start), "dataTypeId": 1000 + i32::from(*t),
                                   "value": format!("{start}{len}{t}")});
                // Length 0: an instant without endTimestamp.
                if *len > 0 {
                    v["endTimestamp"] = json!(minute(start.saturating_add(*len)));
                }
                v
            })
            .collect();
        json!({"endUserId": user, "timestampType": "unix", "type": format!("event.data.epoch.{kind}"),
               "data": [{"dataSourceId": source, "dataSourceName": "Source", "epochData": data}]})
    }
}

#[derive(Debug, Clone)]
enum Op {
    Notify(Value),
    Retry(usize),
    Poll,
    Claim { worker: u8, max: i32 },
    Complete(usize),
    Fail(usize),
    ExpireLease(usize),
}

fn op() -> impl Strategy<Value = Op> {
    let body = (
        0u8..2,
        1u8..3,
        any::<bool>(),
        0u8..20,
        0u8..4,
        vec(0u8..4, 1..3),
    )
        .prop_map(|(u, s, d, start, len, types)| notification(u, s, d, start, len, types));
    let pushed = (
        0u8..2,
        1u8..3,
        any::<bool>(),
        any::<bool>(),
        vec((0u8..20, 0u8..4, 0u8..4), 1..5),
    )
        .prop_map(|(u, s, d, update, points)| push(u, s, d, update, points));
    prop_oneof![
        4 => body.prop_map(Op::Notify),
        3 => pushed.prop_map(Op::Notify),
        1 => any::<usize>().prop_map(Op::Retry),
        3 => Just(Op::Poll),
        2 => (0u8..2, 1i32..3).prop_map(|(worker, max)| Op::Claim { worker, max }),
        2 => any::<usize>().prop_map(Op::Complete),
        1 => any::<usize>().prop_map(Op::Fail),
        1 => any::<usize>().prop_map(Op::ExpireLease),
    ]
}

async fn store_one(db: &TestDb, body: &Value) {
    let d = NewDelivery::from_body(body.as_object().unwrap());
    inbox::insert_batch(&db.pool, &[(&d, 1)]).await.unwrap();
}

async fn run_case(db: &TestDb, ops: Vec<Op>) {
    sqlx::query(
        "TRUNCATE thryve.inbox, thryve.dirty_ranges, thryve.source_connections, thryve.epoch_values,
                  thryve.daily_values RESTART IDENTITY",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    // Batches of 3, not the default 100: a stream of up to 40 steps must split into several
    // batches for batching to play any part.
    let mut config = test_config().poller;
    config.poll_batch_size = 3;
    let poller = Poller::new(db.pool.clone(), &config);
    // w0 re-fetches, w1 recomputes (claims every range).
    let workers = [
        Consumer::new(db.pool.clone(), "w0"),
        Consumer::new(db.pool.clone(), "w1"),
    ];
    let modes = [ClaimMode::Fetch, ClaimMode::All];
    let mut sent: Vec<Value> = Vec::new();
    // (worker index, claimed range) of claims believed held.
    let mut held: Vec<(usize, DirtyRange)> = Vec::new();
    for op in ops {
        match op {
            Op::Notify(body) => {
                store_one(db, &body).await;
                sent.push(body);
            }
            Op::Retry(i) if !sent.is_empty() => store_one(db, &sent[i % sent.len()].clone()).await,
            Op::Retry(_) => {}
            Op::Poll => {
                poller.poll_once().await.unwrap();
            }
            Op::Claim { worker, max } => {
                let w = usize::from(worker);
                for range in workers[w]
                    .claim_for(modes[w], max, Duration::from_secs(600))
                    .await
                    .unwrap()
                {
                    assert!(
                        range.needs_fetch || modes[w] == ClaimMode::All,
                        "a fetching worker never gets a push-only range: {range:?}"
                    );
                    held.retain(|(_, held)| held.id != range.id);
                    held.push((w, range));
                }
            }
            Op::Complete(i) | Op::Fail(i) if !held.is_empty() => {
                let (w, range) = held.remove(i % held.len());
                let ok = if matches!(op, Op::Complete(_)) {
                    workers[w].complete(&range).await.unwrap()
                } else {
                    workers[w]
                        .fail(&range, "refetch failed", Duration::ZERO)
                        .await
                        .unwrap()
                };
                assert!(ok, "a held claim is honoured");
            }
            Op::ExpireLease(i) if !held.is_empty() => {
                let (_, range) = held.remove(i % held.len());
                sqlx::query("UPDATE thryve.dirty_ranges SET lease_expires_at = now() - interval '1 second' WHERE id = $1")
                    .bind(range.id)
                    .execute(&db.pool)
                    .await
                    .unwrap();
            }
            Op::Complete(_) | Op::Fail(_) | Op::ExpireLease(_) => {}
        }
        assert_guarantees(&db.pool).await;
    }
    poller.drain().await.unwrap();
    assert_guarantees(&db.pool).await;
}

#[test]
fn guarantees_hold_after_every_step_of_random_streams() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let db = rt.block_on(TestDb::new());
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(24);
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    });
    let result = runner.run(&vec(op(), 1..40), |ops| {
        rt.block_on(run_case(&db, ops));
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pollers_and_consumers_in_parallel_keep_every_guarantee() {
    const NOTIFICATIONS: usize = 10_000;
    let db = TestDb::new().await;
    let pool = PgPoolOptions::new()
        .max_connections(16)
        .connect(&db.url())
        .await
        .unwrap();

    // 10,000 distinct notifications over 100 users, plus 5% exact retries.
    let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
    let mut bodies: Vec<Value> = (0..NOTIFICATIONS)
        .map(|i| {
            let mut r = |n: u32| next_random(&mut seed) % n;
            let user = format!("user-{}", r(100));
            let source = 1 + r(3) as i32;
            let types = vec![1000 + r(5) as i32, 1000 + r(5) as i32];
            if i % 5 == 1 {
                // A data push of a few values (instants and intervals) near each other.
                let start = BASE_MS + r(100_000) as i64 * 60_000;
                let data: Vec<Value> = (0..1 + r(4))
                    .map(|k| {
                        let at = start + r(180) as i64 * 60_000;
                        let mut v = json!({"startTimestamp": at, "dataTypeId": types[k as usize % 2],
                                           "value": format!("{i}.{k}")});
                        if k % 2 == 1 {
                            v["endTimestamp"] = json!(at + r(30) as i64 * 60_000);
                        }
                        v
                    })
                    .collect();
                return json!({"endUserId": user, "timestampType": "unix",
                              "type": if i % 2 == 0 { "event.data.epoch.update" } else { "event.data.epoch.create" },
                              "data": [{"dataSourceId": source, "epochData": data}]});
            }
            if i % 3 == 0 {
                let start = r(400) as i64;
                let day = |d: i64| (chrono::DateTime::from_timestamp_millis(BASE_MS).unwrap() + chrono::Duration::days(d)).date_naive().to_string();
                json!({"endUserId": user, "timestampType": "iso", "type": "notification.data.daily.createupdate",
                       "data": {"startDay": day(start), "endDay": day(start + r(3) as i64), "dataSourceId": source,
                                "dataTypeIds": types, "seq": i}})
            } else {
                let start = BASE_MS + r(100_000) as i64 * 60_000;
                json!({"endUserId": user, "timestampType": "unix", "type": "notification.data.epoch.createupdate",
                       "data": {"startTimestamp": start, "endTimestamp": start + r(120) as i64 * 60_000,
                                "dataSourceId": source, "dataTypeIds": types, "seq": i}})
            }
        })
        .collect();
    let retries: Vec<Value> = bodies.iter().step_by(20).cloned().collect();
    bodies.extend(retries);

    let ingest_done = Arc::new(AtomicBool::new(false));
    let ingest = {
        let (pool, done) = (pool.clone(), ingest_done.clone());
        tokio::spawn(async move {
            let writers: Vec<_> = bodies
                .chunks(bodies.len() / 4 + 1)
                .map(|part| {
                    let (pool, part) = (pool.clone(), part.to_vec());
                    tokio::spawn(async move {
                        for chunk in part.chunks(50) {
                            let mut counts: HashMap<[u8; 32], (NewDelivery, i32)> = HashMap::new();
                            for body in chunk {
                                let d = NewDelivery::from_body(body.as_object().unwrap());
                                counts.entry(d.fingerprint).or_insert((d, 0)).1 += 1;
                            }
                            let batch: Vec<(&NewDelivery, i32)> =
                                counts.values().map(|(d, n)| (d, *n)).collect();
                            inbox::insert_batch(&pool, &batch).await.unwrap();
                        }
                    })
                })
                .collect();
            for w in writers {
                w.await.unwrap();
            }
            done.store(true, Ordering::SeqCst);
        })
    };

    let pollers: Vec<_> = (0..3)
        .map(|_| {
            let poller = Poller::new(pool.clone(), &test_config().poller);
            let done = ingest_done.clone();
            tokio::spawn(async move {
                loop {
                    let ingest_finished = done.load(Ordering::SeqCst);
                    let report = poller.poll_once().await.expect("no poller error escapes");
                    if report.rows == 0 && ingest_finished {
                        return;
                    }
                    if report.rows == 0 {
                        tokio::task::yield_now().await;
                    }
                }
            })
        })
        .collect();

    let pollers_done = Arc::new(AtomicBool::new(false));
    let consumers: Vec<_> = (0..3)
        .map(|i| {
            let consumer = Consumer::new(pool.clone(), format!("worker-{i}"));
            // One recomputing worker takes push-only ranges too; the others only re-fetch.
            let mode = if i == 0 {
                ClaimMode::All
            } else {
                ClaimMode::Fetch
            };
            let done = pollers_done.clone();
            tokio::spawn(async move {
                let mut handled = 0usize;
                loop {
                    let finished = done.load(Ordering::SeqCst);
                    let claimed = consumer
                        .claim_for(mode, 20, Duration::from_secs(600))
                        .await
                        .expect("no claim error escapes");
                    if claimed.is_empty() {
                        if finished {
                            return handled;
                        }
                        tokio::task::yield_now().await;
                        continue;
                    }
                    for range in claimed {
                        handled += 1;
                        assert!(range.needs_fetch || mode == ClaimMode::All);
                        let ok = if range.id % 10 == 0 {
                            consumer
                                .fail(&range, "simulated", Duration::ZERO)
                                .await
                                .expect("no fail error escapes")
                        } else {
                            consumer
                                .complete(&range)
                                .await
                                .expect("no complete error escapes")
                        };
                        assert!(ok, "claim honoured");
                    }
                }
            })
        })
        .collect();

    ingest.await.unwrap();
    for p in pollers {
        p.await.unwrap();
    }
    // Consumers go on while pollers run; the guarantees are checked with both still working.
    assert_guarantees(&pool).await;
    pollers_done.store(true, Ordering::SeqCst);
    let mut handled = 0;
    for c in consumers {
        handled += c.await.unwrap();
    }
    assert!(handled > 0);
    let (pending_rows, inbox_rows): (i64, i64) = sqlx::query_as(
        "SELECT count(*) FILTER (WHERE status <> 'processed'), count(*) FROM thryve.inbox",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!((pending_rows, inbox_rows), (0, NOTIFICATIONS as i64));
    let open: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM thryve.dirty_ranges WHERE status IN ('pending', 'claimed')",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(open, 0, "every range ended done or failed");
    assert_guarantees(&pool).await;
    pool.close().await;
}

/// xorshift64: a fixed, reproducible stream without another dependency.
fn next_random(state: &mut u64) -> u32 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    (*state >> 32) as u32
}
