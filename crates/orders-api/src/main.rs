use clap::Parser;
use orders_api::{Config, server};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    let telemetry = orders_telemetry::init(env!("CARGO_PKG_NAME"), env!("CARGO_PKG_VERSION"))?;
    let outcome = server::run(config, server::shutdown_signal()).await;
    if let Err(error) = &outcome {
        tracing::error!(error = format!("{error:#}"), "orders-api failed");
    }
    telemetry.shutdown().await?;
    outcome
}
