//! Thryve's `traceparent`: kept on the inbox row when well-formed, so an operator can quote it.

use crate::support::{answer, epoch_notification, spawn_app, PASSWORD, USER};

const FIRST: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
const RETRY: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";

async fn traceparent_of(app: &crate::support::TestApp, inbox_id: i64) -> Option<String> {
    sqlx::query_scalar("SELECT traceparent FROM thryve.inbox WHERE id = $1")
        .bind(inbox_id)
        .fetch_one(&app.db.pool)
        .await
        .unwrap()
}

async fn post_traced(
    app: &crate::support::TestApp,
    body: &serde_json::Value,
    traceparent: &str,
) -> serde_json::Value {
    let response = app
        .webhook()
        .basic_auth(USER, Some(PASSWORD))
        .header("content-type", "application/json")
        .header("traceparent", traceparent)
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    let (status, body) = answer(response).await;
    assert_eq!(status, 200, "{body}");
    body
}

#[tokio::test]
async fn the_row_keeps_the_latest_well_formed_traceparent_and_never_a_malformed_one() {
    let app = spawn_app().await;
    let body = epoch_notification("trace-user", 1763973390000, 1763973390000, &[3000]);
    let stored = post_traced(&app, &body, FIRST).await;
    let id = stored["inbox_id"].as_i64().unwrap();
    assert_eq!(traceparent_of(&app, id).await.as_deref(), Some(FIRST));

    let retried = post_traced(&app, &body, RETRY).await;
    assert_eq!(retried["outcome"], "duplicate");
    assert_eq!(traceparent_of(&app, id).await.as_deref(), Some(RETRY));

    // A malformed header neither refuses the delivery nor replaces the id kept.
    let malformed = post_traced(&app, &body, "00-not-a-trace-id-01").await;
    assert_eq!(malformed["outcome"], "duplicate");
    assert_eq!(traceparent_of(&app, id).await.as_deref(), Some(RETRY));

    let other = epoch_notification("trace-user-2", 1763973390000, 1763973390000, &[3000]);
    let untraced = post_traced(&app, &other, &format!("{}x", &FIRST[..54])).await;
    let untraced_id = untraced["inbox_id"].as_i64().unwrap();
    assert_eq!(traceparent_of(&app, untraced_id).await, None);
}
