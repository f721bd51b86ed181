//! `NOTIFY thryve_dirty_ranges`: workers that LISTEN hear of new pending ranges at once.

use std::time::Duration;

use sqlx::postgres::PgListener;

use crate::support::{
    answer, epoch_notification, spawn_app, spawn_on, test_config, wait_until, TestDb,
};

#[tokio::test]
async fn a_new_pending_range_wakes_a_listening_worker() {
    // The default poller makes the range from the delivery's commit.
    let app = spawn_app().await;
    // A connection of its own: one that LISTENs never goes back to a pool.
    let mut listener = PgListener::connect(&app.db.url()).await.unwrap();
    listener.listen("thryve_dirty_ranges").await.unwrap();

    let body = epoch_notification("listen-user", 1763973390000, 1763973390000, &[3000]);
    let (status, _) = answer(app.post_json(&body).await).await;
    assert_eq!(status, 200);
    let woken = tokio::time::timeout(Duration::from_secs(10), listener.recv())
        .await
        .expect("a notification once the poller made the range")
        .unwrap();
    assert_eq!(woken.channel(), "thryve_dirty_ranges");
    let pending: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM thryve.dirty_ranges WHERE end_user_id = 'listen-user' AND status = 'pending'",
    )
    .fetch_one(&app.db.pool)
    .await
    .unwrap();
    assert_eq!(
        pending, 1,
        "the range is committed when the worker hears of it"
    );
}

/// The poller's LISTEN runs on a connection of its own, never one of the process pool's: all
/// of the pool's connections can be had at once, and none of them listens. A pooled
/// connection that had run LISTEN went on receiving notifications after a reconnect left it
/// in the pool, and every statement on it failed (`unexpected message: NotificationResponse`).
#[tokio::test]
async fn listen_runs_on_a_connection_of_its_own_never_one_of_the_pool() {
    let db = TestDb::new().await;
    let pool = thryve_bridge::db::pool(&db.url(), 3, Duration::from_secs(2)).unwrap();
    let mut app = spawn_on(db, pool.clone(), test_config()).await;
    wait_until(Duration::from_secs(10), "the poller listens", || async {
        sqlx::query_scalar::<_, i64>(
            "SELECT count(*) FROM pg_stat_activity
             WHERE datname = current_database() AND query = 'LISTEN \"thryve_inbox\"'",
        )
        .fetch_one(&app.db.pool)
        .await
        .unwrap()
            == 1
    })
    .await;
    let mut held = Vec::new();
    for _ in 0..3 {
        let mut conn = pool
            .acquire()
            .await
            .expect("every connection of the pool can be had");
        let channels: Vec<String> = sqlx::query_scalar("SELECT pg_listening_channels()")
            .fetch_all(&mut *conn)
            .await
            .unwrap();
        assert_eq!(
            channels,
            Vec::<String>::new(),
            "a pooled connection listens"
        );
        held.push(conn);
    }
    drop(held);
    app.stop().await;
}
