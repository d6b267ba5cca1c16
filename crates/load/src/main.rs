use std::process::ExitCode;

use clap::Parser;
use orders_load::{Config, load};

#[tokio::main]
async fn main() -> ExitCode {
    let config = Config::parse();
    let stop = tokio_util::sync::CancellationToken::new();
    let on_ctrl_c = stop.clone();
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            on_ctrl_c.cancel();
        }
    });
    let report = load::run(&config, &stop).await;
    println!("{report}");
    if report.all_created() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
