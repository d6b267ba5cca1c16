use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use orders_batch::Config;

#[tokio::main]
async fn main() -> anyhow::Result<ExitCode> {
    let config = Config::parse();
    let shutdown = orders::shutdown::on_signal().context("listening for SIGTERM and Ctrl-C")?;
    let (name, version) = (env!("CARGO_PKG_NAME"), env!("CARGO_PKG_VERSION"));
    let telemetry = orders_telemetry::init(name, version, config.span_limits())
        .unwrap_or_else(|error| error.exit());
    let outcome = orders_batch::app::run(config, shutdown).await;
    if let Err(error) = &outcome {
        tracing::error!(error = format!("{error:#}"), "orders-batch failed");
    }
    telemetry.shutdown().await;
    outcome
}
