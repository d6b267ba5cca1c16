//! Waiting for something a process does.

use std::time::{Duration, Instant};

/// How long a process may take to do what a test waits for.
pub const WAIT: Duration = Duration::from_secs(30);

/// Polls `check` every 20 ms until it holds; fails naming `what` after `timeout`.
pub async fn wait_until<F, Fut>(timeout: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
