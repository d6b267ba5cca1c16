//! Start-up, serving and graceful shutdown.

use std::future::{Future, IntoFuture};
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::sync::oneshot;

use crate::app::{AppState, router};
use crate::config::Config;

/// Connects to the database, applies migrations, then serves until `shutdown`
/// completes and in-flight requests finish (or the grace period runs out).
pub async fn run(
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let pool = orders::db::connect(&config.database_url, config.pool_settings())
        .await
        .context("connecting to the database (DATABASE_URL)")?;
    orders::db::migrate(&pool)
        .await
        .context("preparing the database schema")?;
    let listener = TcpListener::bind(config.listen_addr)
        .await
        .with_context(|| format!("listening on {} (LISTEN_ADDR)", config.listen_addr))?;
    tracing::info!(address = %listener.local_addr()?, "orders-api listening");
    serve(
        listener,
        AppState::new(pool),
        shutdown,
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

/// Completes on SIGTERM (what `docker stop` sends) or Ctrl-C.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::error!(%error, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::error!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
}
