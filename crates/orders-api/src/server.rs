//! Start-up, serving and graceful shutdown.

use std::time::Duration;

use anyhow::Context;
use orders::db::Migrations;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::app::{AppState, router};
use crate::config::Config;
use crate::connections::{self, ConnectionLimits};

/// Connects to the database, applies migrations (or waits for them), then
/// serves until `shutdown` is cancelled and in-flight requests finish (or the
/// grace period runs out). Cancelled during start-up, it stops there. With
/// `--migrate-only`, it applies the migrations and returns.
pub async fn run(config: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    let migrations = if config.migrate_only {
        Migrations::Apply
    } else {
        config.database.database_migrations
    };
    let start_up = orders::db::connect_and_migrate(
        &config.database.database_url,
        config.database.pool_settings(config.database_pool_size),
        migrations,
    );
    let Some(pool) = shutdown.run_until_cancelled(start_up).await else {
        tracing::info!("orders-api stopped during start-up");
        return Ok(());
    };
    // The error names the server, the variable and the cause: a context would
    // only push the cause further along the line.
    let pool = pool?;
    if config.migrate_only {
        tracing::info!("migrations applied");
        return Ok(());
    }
    let listener = TcpListener::bind(config.listen_addr)
        .await
        .with_context(|| format!("listening on {} (LISTEN_ADDR)", config.listen_addr))?;
    tracing::info!(address = %listener.local_addr()?, "orders-api listening");
    serve(
        listener,
        AppState::new(pool, config.readyz_timeout()),
        config.connection_limits(),
        &shutdown,
        config.shutdown_grace(),
    )
    .await;
    tracing::info!("orders-api stopped");
    Ok(())
}

/// Serves the API on `listener` within `limits`. Once `shutdown` is cancelled,
/// stops accepting connections and waits up to `grace` for in-flight requests.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    limits: ConnectionLimits,
    shutdown: &CancellationToken,
    grace: Duration,
) {
    let connections = connections::serve(listener, router(state), limits, shutdown.clone()).await;
    tracing::info!("shutting down: finishing in-flight requests");
    tokio::select! {
        () = connections.wait() => {}
        () = orders::shutdown::grace_expired(shutdown, grace) => {
            tracing::warn!(?grace, "in-flight requests did not finish in time; they end with the process");
        }
    }
}
