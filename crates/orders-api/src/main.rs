use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use orders_api::{Config, server};

#[tokio::main]
async fn main() -> anyhow::Result<ExitCode> {
    let config = Config::parse();
    let shutdown = orders::shutdown::on_signal().context("listening for SIGTERM and Ctrl-C")?;
    let (name, version) = (env!("CARGO_PKG_NAME"), env!("CARGO_PKG_VERSION"));
    let telemetry = orders_telemetry::init(name, version, config.span_limits())
        .unwrap_or_else(|error| error.exit());
    let code = match server::run(config, shutdown).await {
        Ok(()) => ExitCode::SUCCESS,
        // Logged, not returned: returning would print it a second time.
        Err(error) => {
            tracing::error!("{error:#}");
            ExitCode::FAILURE
        }
    };
    telemetry.shutdown().await;
    Ok(code)
}
