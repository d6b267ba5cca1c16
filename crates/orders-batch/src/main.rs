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
    let code = orders_batch::app::run(config, &telemetry, shutdown)
        .await
        // Logged, not returned: returning would print it a second time.
        .unwrap_or_else(|error| {
            tracing::error!("{error:#}");
            ExitCode::FAILURE
        });
    telemetry.shutdown().await;
    Ok(code)
}
