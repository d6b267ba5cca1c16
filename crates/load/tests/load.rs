//! The `orders-load` binary against the real API and a database of the
//! test's own, and the environment its compose service gives it.

#![allow(clippy::unwrap_used, reason = "test set-up fails loudly")]

use std::time::Duration;

use clap::CommandFactory as _;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::SdkTracerProvider;
use orders_api::AppState;
use orders_api::connections::ConnectionLimits;
use orders_load::Config;
use orders_test_support::{Process, WAIT, assert_reads_every_variable, compose_environment};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use tracing_subscriber::layer::SubscriberExt as _;

const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

#[sqlx::test(migrator = "orders::db::MIGRATOR")]
async fn posts_a_count_of_valid_varied_orders_in_the_callers_trace(pool: PgPool) {
    // Traced, so that the API stores each order's context (in the caller's trace).
    orders_telemetry::install_propagator();
    let tracer = SdkTracerProvider::builder().build().tracer("test");
    let traced =
        tracing_subscriber::registry().with(tracing_opentelemetry::layer().with_tracer(tracer));
    let _traced = tracing::subscriber::set_default(traced);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let limits = ConnectionLimits {
        max_connections: 64,
        header_read_timeout: Duration::from_secs(10),
        idle_timeout: Duration::from_secs(10),
        body_read_timeout: Duration::from_secs(10),
    };
    let state = AppState::new(pool.clone(), Duration::from_secs(1));
    let stop = CancellationToken::new();
    tokio::spawn(async move {
        orders_api::server::serve(listener, state, limits, &stop, Duration::from_secs(1)).await;
    });
    let args = [
        "--count",
        "40",
        "--concurrency",
        "4",
        "--traceparent",
        TRACEPARENT,
    ];
    let run = Process::spawn(
        env!("CARGO_BIN_EXE_orders-load"),
        &args,
        &[("ORDERS_API_URL", url)],
    );
    let run = run.wait(WAIT).await;
    run.assert_code(0);
    assert!(
        run.stdout.contains("40 orders in") && run.stdout.contains("40 created"),
        "{run}"
    );
    assert!(run.stdout.contains("latency: p50"), "{run}");
    let (orders, customers, traces): (i64, i64, i64) = sqlx::query_as(
        "SELECT count(*), count(DISTINCT customer_id), count(DISTINCT split_part(traceparent, '-', 2)) FROM orders",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(
        (orders, customers, traces),
        (40, 40, 1),
        "one trace, the caller's"
    );
}

#[test]
fn reads_every_variable_its_compose_service_gives_it() {
    let environment = compose_environment("orders-load", &[("COMPOSE_PROFILES", "load")]);
    assert!(
        environment.contains_key("ORDERS_API_URL"),
        "{environment:?}"
    );
    assert_reads_every_variable("orders-load", &Config::command(), &[], &environment);
}
