use anyhow::Context;
use clap::Parser;
use orders_api::{Config, server};
use orders_telemetry::SpanLimits;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    let shutdown = orders::shutdown::on_signal().context("listening for SIGTERM and Ctrl-C")?;
    let (name, version) = (env!("CARGO_PKG_NAME"), env!("CARGO_PKG_VERSION"));
    let telemetry = orders_telemetry::init(name, version, SpanLimits::default())
        .unwrap_or_else(|error| error.exit());
    let outcome = server::run(config, shutdown).await;
    if let Err(error) = &outcome {
        tracing::error!(error = format!("{error:#}"), "orders-api failed");
    }
    telemetry.shutdown().await;
    outcome
}
