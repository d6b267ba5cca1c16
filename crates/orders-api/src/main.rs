use anyhow::Context;
use clap::Parser;
use orders_api::{Config, server};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    let shutdown = orders::shutdown::on_signal().context("listening for SIGTERM and Ctrl-C")?;
    let telemetry = orders_telemetry::init(
        env!("CARGO_PKG_NAME"),
        env!("CARGO_PKG_VERSION"),
        orders_telemetry::SpanVolume::SMALL,
    )?;
    let outcome = server::run(config, shutdown).await;
    if let Err(error) = &outcome {
        tracing::error!(error = format!("{error:#}"), "orders-api failed");
    }
    telemetry.shutdown().await?;
    outcome
}
