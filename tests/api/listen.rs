//! `NOTIFY thryve_dirty_ranges`: workers that LISTEN hear of new pending ranges at once.

use std::time::Duration;

use sqlx::postgres::PgListener;

use crate::support::{answer, epoch_notification, spawn_app};

#[tokio::test]
async fn a_new_pending_range_wakes_a_listening_worker() {
    // The default poller makes the range from the delivery's commit.
    let app = spawn_app().await;
    let mut listener = PgListener::connect_with(&app.db.pool).await.unwrap();
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
