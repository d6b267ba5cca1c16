//! The baseline for `scripts/benchmark.py`: the batch's own claim and mark
//! statements (`orders::claims`), through the same driver and pool, in a plain
//! loop with nothing between them: no spans, no links, no reconciling. What
//! `orders-batch --once` would do if tracing and its work cost nothing.
//!
//!     DATABASE_URL=… BATCH_MAX_SIZE=1000 cargo run --release -p orders-batch --example raw_loop

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    clippy::cast_precision_loss,
    reason = "a benchmark baseline that fails loudly and prints its figure"
)]

use std::time::Instant;

use clap::Parser;
use orders::claims::{self, ClaimRequest, Outcome};
use orders_batch::Config;
use span_links::LinkSelection;

#[tokio::main]
async fn main() {
    // orders-batch's own configuration: the same database, batch size, pool
    // and claim settings, from the same variables.
    let config = Config::parse();
    let settings = config.batch_settings(LinkSelection::All);
    let pool = orders::db::connect_lazy(
        &config.database.database_url,
        config.database.pool_settings(config.database_pool_size),
    )
    .unwrap();
    let cutoff = claims::database_now(&pool).await.unwrap();
    let started = Instant::now();
    let mut processed = 0;
    loop {
        let request = ClaimRequest {
            worker: "raw-loop",
            limit: i64::from(settings.max_size),
            cutoff,
            lease: settings.claim_timeout,
        };
        let claim = claims::claim(&pool, request).await.unwrap();
        if claim.orders.is_empty() {
            break;
        }
        let outcomes: Vec<_> = claim
            .orders
            .iter()
            .map(|order| (order.id, Outcome::Processed))
            .collect();
        processed += claims::finish(&pool, &claim.token, None, &outcomes)
            .await
            .unwrap()
            .len();
    }
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "raw loop: {processed} orders in {seconds:.3} s, {:.0}/s",
        processed as f64 / seconds
    );
}
