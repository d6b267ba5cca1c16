//! Start-up and the two ways to run: once, or on the schedule.

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use orders_telemetry::Telemetry;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::metrics::BatchMetrics;
use crate::schedule::run_on_schedule;
use crate::worker::Worker;

/// Connects to the database, applies migrations, then runs once (`--once`) or
/// on the schedule until `shutdown` is cancelled. Cancelled during start-up,
/// it stops there.
///
/// `--once` prints a one-line summary and fails when a batch failed, after
/// the trace exporter's final flush: its count of spans not exported is the
/// one said at exit. `telemetry` decides which links its `process-batch`
/// spans are given (see `BatchSettings::link_selection`) and paces its
/// batches to the trace exporter.
pub async fn run(
    config: Config,
    telemetry: &Telemetry,
    shutdown: CancellationToken,
) -> anyhow::Result<ExitCode> {
    let start_up = orders::db::connect_and_migrate(
        &config.database.database_url,
        config.database.pool_settings(config.database_pool_size),
        config.database.database_migrations,
    );
    let Some(pool) = shutdown.run_until_cancelled(start_up).await else {
        tracing::info!("orders-batch stopped during start-up");
        return Ok(ExitCode::SUCCESS);
    };
    // The error names the server, the variable and the cause: a context would
    // only push the cause further along the line.
    let pool = pool?;
    let metrics = BatchMetrics::new(&opentelemetry::global::meter("orders-batch"));
    let settings = config.batch_settings(telemetry.link_selection());
    let worker = Worker::new(pool, settings, metrics).paced_by(telemetry.span_queue());

    if !config.once {
        run_on_schedule(Arc::new(worker), &config.schedule, shutdown).await?;
        return Ok(ExitCode::SUCCESS);
    }

    let announce_shutdown = tokio::spawn({
        let shutdown = shutdown.clone();
        async move {
            shutdown.cancelled().await;
            tracing::info!("shutting down: finishing the batch in hand");
        }
    });
    let summary = worker.run(&shutdown).await;
    announce_shutdown.abort();
    let summary = summary.context("processing pending orders")?;
    telemetry.shutdown_traces().await;
    summary.log();
    println!("orders-batch --once: {summary}");
    Ok(if summary.failed_batches == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
