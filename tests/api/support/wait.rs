//! Waiting on a condition, never on the clock.

use std::{
    future::Future,
    time::{Duration, Instant},
};

/// Polls `condition` until it holds, failing the test (saying `what`) after `within`: the
/// wait is on the condition, the short pause only spaces the polls.
pub async fn wait_until<F, Fut>(within: Duration, what: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    loop {
        if condition().await {
            return;
        }
        assert!(Instant::now() < deadline, "not within {within:?}: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
