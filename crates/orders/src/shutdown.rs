//! The signal both services stop on.
//!
//! `docker stop` and Kubernetes send SIGTERM, a terminal sends SIGINT (Ctrl-C);
//! both services treat the two alike: stop taking work, finish or release what
//! is in hand within a bounded time, flush telemetry and exit 0.

use std::time::Duration;

use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;

/// A token cancelled on the first SIGTERM or SIGINT.
///
/// The handlers are installed by this call, not when the token is first
/// awaited: a signal during start-up (connecting to the database, say) must
/// stop the service cleanly rather than kill it. Call it first thing, inside
/// the tokio runtime.
pub fn on_signal() -> std::io::Result<CancellationToken> {
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    let token = CancellationToken::new();
    let cancel = token.clone();
    tokio::spawn(async move {
        tokio::select! {
            _ = terminate.recv() => {}
            _ = interrupt.recv() => {}
        }
        cancel.cancel();
    });
    Ok(token)
}

/// Completes `grace` after `token` is cancelled: how long the work in hand
/// (in-flight requests, a batch) may still take once shutdown has begun.
pub async fn grace_expired(token: &CancellationToken, grace: Duration) {
    token.cancelled().await;
    tokio::time::sleep(grace).await;
}
