//! The whole chain, as `docker compose up` runs it but for the backend:
//! orders-api and orders-batch (release builds in CI) export over OTLP to the
//! project's collector, built from `collector/builder-config.yaml` and
//! running the repository's `otel-collector.yaml` unchanged, its exporter
//! pointed at Jaeger v2 by the environment compose sets. Orders are posted
//! with `scripts/post-orders.sh` (curl, as the README does), the batch runs
//! `--once`, and what a user would click through is asked of Jaeger's own
//! query API only.
//!
//! The collector listens on otel-collector.yaml's fixed ports: the tests here
//! take turns.

#![allow(clippy::unwrap_used, reason = "test set-up fails loudly")]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use common::{Target, binary, bulk_seed, count_status, start_api, stored_targets, summary, target};
use orders_test_support::{
    BlinkingProxy, COLLECTOR_METRICS, Jaeger, Process, SecondCollector, StoredSpan, WAIT,
    accepted_spans, asked_until, database_url, free_port, start_collector, wait_until,
};
use serde_json::Value;
use sqlx::PgPool;
use tokio::sync::Mutex;

/// One collector at a time: it binds otel-collector.yaml's ports.
static CHAIN: Mutex<()> = Mutex::const_new(());

/// The environment compose gives the collector, sending to `backend`, its
/// queue in a directory of its own.
fn collector_env(backend: SocketAddr) -> Vec<(&'static str, String)> {
    let queue = std::env::temp_dir().join(format!("otelcol-queue-{}", free_port()));
    std::fs::create_dir_all(&queue).unwrap();
    vec![
        ("SIGNOZ_OTLP_ENDPOINT", backend.to_string()),
        ("SIGNOZ_OTLP_INSECURE", "true".to_owned()),
        ("SIGNOZ_INGESTION_KEY", String::new()),
        ("OTELCOL_QUEUE_DIRECTORY", queue.display().to_string()),
    ]
}

/// A service's environment: its database, OTLP/gRPC to the collector.
fn service_env(pool: &PgPool) -> Vec<(&'static str, String)> {
    vec![
        ("DATABASE_URL", database_url(pool)),
        (
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            "http://127.0.0.1:4317".to_owned(),
        ),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc".to_owned()),
    ]
}

/// Posts `count` orders with scripts/post-orders.sh; each order's id and its
/// stored `receive-order` span (trace id, span id).
async fn post_orders(api: &str, count: usize) -> BTreeMap<String, Target> {
    let orders = orders_test_support::post_orders(api, count).await;
    let text = |order: &Value, field: &str| order[field].as_str().unwrap().to_owned();
    orders
        .iter()
        .map(|order| (text(order, "id"), target(&text(order, "traceparent"))))
        .collect()
}

/// `orders-batch --once`, exporting to the collector; its summary.
async fn run_batch(pool: &PgPool) -> String {
    let run = Process::spawn(binary(), &["--once"], &service_env(pool))
        .wait(WAIT)
        .await;
    run.assert_code(0);
    summary(&run)
}

/// Every order linked from a `process-batch` span Jaeger holds, by order id:
/// (trace id, span id) of the link, and of its batch span.
type Linked = BTreeMap<String, ((String, String), (String, String))>;

fn linked(batches: &[StoredSpan]) -> Linked {
    let mut linked = BTreeMap::new();
    for batch in batches.iter().filter(|span| span.name == "process-batch") {
        for (trace_id, span_id, order) in &batch.links {
            let target = (trace_id.clone(), span_id.clone());
            let at = (batch.trace_id.clone(), batch.span_id.clone());
            let order = order.clone().unwrap();
            assert!(linked.insert(order, (target, at)).is_none(), "linked twice");
        }
    }
    linked
}

/// Where each order's link points: (trace id, span id).
fn targets(linked: &Linked) -> BTreeMap<String, (String, String)> {
    linked
        .iter()
        .map(|(order, (target, _))| (order.clone(), target.clone()))
        .collect()
}

/// Asks Jaeger until every order of `orders` is linked from a batch span;
/// checks each link leads, in a trace of its own, to the order's
/// `receive-order` span of orders-api.
async fn assert_jaeger_follows_every_link(
    jaeger: &Jaeger,
    orders: &BTreeMap<String, (String, String)>,
    wait: Duration,
) -> Linked {
    let all_linked = |spans: &[StoredSpan]| linked(spans).len() == orders.len();
    let batches = asked_until(
        wait,
        || jaeger.find("orders-batch", "process-batch"),
        all_linked,
    )
    .await;
    let linked = linked(&batches);
    assert_eq!(
        &targets(&linked),
        orders,
        "the batch links each order's request"
    );
    for (order, (trace_id, span_id)) in orders {
        let has_it = |spans: &[StoredSpan]| spans.iter().any(|span| &span.span_id == span_id);
        let trace = asked_until(wait, || jaeger.trace(trace_id), has_it).await;
        let request = trace.iter().find(|span| &span.span_id == span_id);
        let request = request.unwrap_or_else(|| panic!("order {order}: its request's trace"));
        assert_eq!(
            (request.service.as_str(), request.name.as_str()),
            ("orders-api", "receive-order")
        );
    }
    linked
}

#[sqlx::test(migrator = "orders::db::MIGRATOR")]
async fn jaeger_follows_each_link_of_the_batch_to_its_orders_request(pool: PgPool) {
    let _chain = CHAIN.lock().await;
    let jaeger = Jaeger::start().await;
    let collector = start_collector("otel-collector.yaml", &[], &collector_env(jaeger.otlp)).await;
    let (api, url) = start_api(service_env(&pool)).await;
    let orders = post_orders(&url, 20).await;
    assert!(run_batch(&pool).await.starts_with("processed=20 failed=0"));
    let linked = assert_jaeger_follows_every_link(&jaeger, &orders, WAIT).await;
    // The way back: each order names its batch span, which Jaeger holds.
    let batches: BTreeSet<&(String, String)> = linked.values().map(|(_, batch)| batch).collect();
    assert_eq!(batches.len(), 1, "20 orders, one batch");
    for (order, (request, batch)) in &linked {
        // As the README reads an order back.
        let read = Command::new("curl")
            .args(["-s", &format!("{url}/orders/{order}")])
            .output();
        let stored: Value = serde_json::from_slice(&read.unwrap().stdout).unwrap();
        assert_eq!(stored["trace_id"], request.0.as_str(), "{stored}");
        let batch_span = &stored["process_batch"];
        assert_eq!(
            (
                batch_span["trace_id"].as_str(),
                batch_span["span_id"].as_str()
            ),
            (Some(batch.0.as_str()), Some(batch.1.as_str()))
        );
    }
    api.sigterm();
    api.wait(WAIT).await.assert_code(0);
    collector.sigterm();
    let collector = collector.wait(WAIT).await;
    collector.assert_code(0);
    // The collector logs on stderr.
    assert!(
        collector.stderr.contains("Everything is ready"),
        "{collector}"
    );
    let said = collector.stderr.to_lowercase();
    assert!(
        !said.contains("deprecat"),
        "a deprecation warning\n{collector}"
    );
}

#[sqlx::test(migrator = "orders::db::MIGRATOR")]
async fn with_the_backend_down_for_30_s_and_the_collector_restarted_every_link_arrives(
    pool: PgPool,
) {
    let _chain = CHAIN.lock().await;
    // The collector takes everything and keeps retrying (its sending queue
    // and retry_on_failure, as otel-collector.yaml configures them).
    let backend = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let down = tokio::time::Instant::now();
    let env = collector_env(backend);
    let collector = start_collector("otel-collector.yaml", &[], &env).await;
    let (api, url) = start_api(service_env(&pool)).await;
    let orders = post_orders(&url, 100).await;
    let batch = run_batch(&pool).await;
    assert_eq!(
        batch,
        "processed=100 failed=0 retrying=0 batches=1 failed_batches=0 unlinked=0 requeued=0 released=0"
    );
    api.sigterm();
    api.wait(WAIT).await.assert_code(0);
    // Restarted holding it all: with its queue in memory, it would drop it at
    // SIGTERM ("Exporting failed. Dropping data."); on disk, it keeps it.
    collector.sigterm();
    collector.wait(WAIT).await.assert_code(0);
    let collector = start_collector("otel-collector.yaml", &[], &env).await;
    tokio::time::sleep_until(down + Duration::from_secs(30)).await;
    let jaeger = Jaeger::start_at(backend).await;
    // The collector retries at growing intervals, up to 30 s apart.
    assert_jaeger_follows_every_link(&jaeger, &orders, Duration::from_secs(90)).await;
    drop(collector);
}

/// Jaeger holds the batch's side of every one of `orders` stored orders:
/// a `process-batch` link to its stored request, and its `reconcile`.
async fn assert_jaeger_holds_the_batch_side(jaeger: &Jaeger, pool: &PgPool, orders: usize) {
    let whole = |spans: &[StoredSpan]| linked(spans).len() == orders;
    let spans = asked_until(WAIT, || jaeger.find("orders-batch", "process-batch"), whole).await;
    let reconciled = spans.iter().filter(|span| span.name == "reconcile").count();
    let stored = stored_targets(pool).await.into_iter().collect();
    assert_eq!(
        targets(&linked(&spans)),
        stored,
        "every order linked to its request"
    );
    assert_eq!(reconciled, orders);
}

#[sqlx::test(migrator = "orders::db::MIGRATOR")]
async fn a_collector_whose_memory_limiter_refuses_loses_nothing_of_the_batch(pool: PgPool) {
    let _chain = CHAIN.lock().await;
    bulk_seed(&pool, 20_000).await;
    // The test's override: a limit the batch's exports pass now and then
    // (a soft limit of 12 MiB of heap, checked every 100 ms).
    let limit = std::env::temp_dir().join(format!("memory-limit-{}.yaml", free_port()));
    let override_limit = "processors:\n  memory_limiter: {check_interval: 100ms, limit_mib: 16, spike_limit_mib: 4}\n";
    std::fs::write(&limit, override_limit).unwrap();
    let jaeger = Jaeger::start().await;
    let also = format!("--config={}", limit.display());
    let collector =
        start_collector("otel-collector.yaml", &[&also], &collector_env(jaeger.otlp)).await;
    let batch = run_batch(&pool).await;
    assert_eq!(
        batch,
        "processed=20000 failed=0 retrying=0 batches=20 failed_batches=0 unlinked=0 requeued=0 released=0"
    );
    assert_jaeger_holds_the_batch_side(&jaeger, &pool, 20_000).await;
    collector.sigterm();
    let collector = collector.wait(WAIT).await;
    assert!(
        collector.stderr.contains("Refusing data"),
        "the limiter never refused\n{collector}"
    );
}

/// `run`, a `--once` over 10 000 orders, exits 0 having dropped nothing, and
/// Jaeger holds the batch side of every order.
async fn assert_lost_nothing_of_10_000(run: Process, jaeger: &Jaeger, pool: &PgPool) {
    let run = run.wait(WAIT * 2).await;
    run.assert_code(0);
    assert_eq!(
        summary(&run),
        "processed=10000 failed=0 retrying=0 batches=10 failed_batches=0 unlinked=0 requeued=0 released=0"
    );
    assert_jaeger_holds_the_batch_side(jaeger, pool, 10_000).await;
}

#[sqlx::test(migrator = "orders::db::MIGRATOR")]
async fn a_collector_restarted_mid_batch_loses_no_link(pool: PgPool) {
    let _chain = CHAIN.lock().await;
    bulk_seed(&pool, 10_000).await;
    // SIGTERM to the collector once a thousand orders are processed, started
    // again 10 s later on the same queue: the batch's failed exports are
    // tried again until it is back.
    let jaeger = Jaeger::start().await;
    let env = collector_env(jaeger.otlp);
    let collector = start_collector("otel-collector.yaml", &[], &env).await;
    let run = Process::spawn(binary(), &["--once"], &service_env(&pool));
    let mid_batch = || async { count_status(&pool, "processed").await >= 1000 };
    wait_until(WAIT, "a thousand orders processed", mid_batch).await;
    collector.sigterm();
    collector.wait(WAIT).await.assert_code(0);
    tokio::time::sleep(Duration::from_secs(10)).await;
    let collector = start_collector("otel-collector.yaml", &[], &env).await;
    assert_lost_nothing_of_10_000(run, &jaeger, &pool).await;
    drop(collector);
}

#[sqlx::test(migrator = "orders::db::MIGRATOR")]
async fn a_collector_replica_lost_mid_batch_the_other_takes_every_link(pool: PgPool) {
    let _chain = CHAIN.lock().await;
    bulk_seed(&pool, 10_000).await;
    // Two replicas of the collector, each with a queue of its own, Jaeger
    // behind both; the services export to one address, a forwarder standing
    // for the Service. Once the first replica has taken an export, it stops
    // for good, and the forwarder sends new connections to the second: the
    // exports failing meanwhile are tried again there.
    let jaeger = Jaeger::start().await;
    let first = start_collector("otel-collector.yaml", &[], &collector_env(jaeger.otlp)).await;
    let second = SecondCollector::start("otel-collector.yaml", &collector_env(jaeger.otlp)).await;
    let service = BlinkingProxy::start(SocketAddr::from(([127, 0, 0, 1], 4317))).await;
    let mut env = service_env(&pool);
    env.push(("OTEL_EXPORTER_OTLP_ENDPOINT", service.endpoint()));
    let run = Process::spawn(binary(), &["--once"], &env);
    let mid_batch = || async { accepted_spans(COLLECTOR_METRICS).await > 0 };
    wait_until(WAIT, "an export taken by the first replica", mid_batch).await;
    // Read before the move: exports already on its connections still reach
    // it, so the two counts need not add up to every span.
    let through_first = accepted_spans(COLLECTOR_METRICS).await;
    service.move_to(second.otlp);
    first.sigterm();
    first.wait(WAIT).await.assert_code(0);
    assert_lost_nothing_of_10_000(run, &jaeger, &pool).await;
    let through_second = second.accepted_spans().await;
    println!(
        "{through_first} spans through the first replica, {through_second} through the second"
    );
    assert!(through_second > 0, "the second replica took the rest");
    drop(second);
}
