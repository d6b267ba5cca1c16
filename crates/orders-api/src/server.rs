//! Start-up, serving and graceful shutdown.

use std::future::{Future, IntoFuture};
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use crate::app::{AppState, router};
use crate::config::Config;

/// Connects to the database, applies migrations, then serves until `shutdown`
/// is cancelled and in-flight requests finish (or the grace period runs out).
/// Cancelled during start-up, it stops there.
pub async fn run(config: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    let start_up = orders::db::connect_and_migrate(&config.database_url, config.pool_settings());
    let pool = tokio::select! {
        pool = start_up => pool.context("connecting to the database (DATABASE_URL) and preparing its schema")?,
        () = shutdown.cancelled() => {
            tracing::info!("orders-api stopped during start-up");
            return Ok(());
        }
    };
    let listener = TcpListener::bind(config.listen_addr)
        .await
        .with_context(|| format!("listening on {} (LISTEN_ADDR)", config.listen_addr))?;
    tracing::info!(address = %listener.local_addr()?, "orders-api listening");
    serve(
        listener,
        AppState::new(pool),
        shutdown.cancelled_owned(),
        config.shutdown_grace(),
    )
    .await?;
    tracing::info!("orders-api stopped");
    Ok(())
}

/// Serves the API on `listener`. After `shutdown` completes, stops accepting
/// connections and waits up to `grace` for in-flight requests.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
    grace: Duration,
) -> std::io::Result<()> {
    let (signalled, signal_received) = oneshot::channel();
    let server = axum::serve(
        listener,
        router(state).into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(async move {
        shutdown.await;
        tracing::info!("shutting down: finishing in-flight requests");
        // The receiver only goes away once serving has ended.
        let _ = signalled.send(());
    })
    .into_future();
    let grace_expired = async {
        match signal_received.await {
            Ok(()) => tokio::time::sleep(grace).await,
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        result = server => result,
        () = grace_expired => {
            tracing::warn!(?grace, "in-flight requests did not finish in time; dropping them");
            Ok(())
        }
    }
}
