//! The load generator's own check, small: every 200 stored, and covered once the poller idles.

use std::time::Duration;

use thryve_loadgen::{self as loadgen, LoadConfig};

use crate::support::{spawn_app_with, test_config, PASSWORD, USER};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledged_delivery_of_the_mix_is_stored_and_covered() {
    let config = test_config();
    let app = spawn_app_with(config).await;
    let run = loadgen::run(&LoadConfig {
        url: app.url("/webhooks/thryve"),
        basic_auth: Some((USER.to_owned(), PASSWORD.to_owned())),
        concurrency: 8,
        requests: 400,
        duration: Duration::from_secs(60),
        rate: None,
        users: 50,
        retry_share: 0.05,
        twin_share: 0.25,
        seed: 3,
        lag_pool: Some(app.db.pool.clone()),
        notifications_only: false,
    })
    .await;
    assert_eq!(run.report.requests, 400);
    assert_eq!(
        run.report.statuses.get(&200),
        Some(&400),
        "{:?}",
        run.report.statuses
    );
    assert!(run.report.lag_p99_ms.is_some());
    let verification = loadgen::verify(&app.db.pool, &run.sent, Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(
        (
            verification.acknowledged,
            verification.missing,
            verification.not_processed,
            verification.uncovered
        ),
        (400, 0, 0, 0)
    );
}
