//! Link-aware sampling, end to end: orders-api keeps one request in ten,
//! orders-load posts 10,000 orders, then `orders-batch --once` runs with
//! `OTEL_TRACES_SAMPLER=links`, and again with the default sampler over the
//! same orders. Each exports over OTLP to a real receiver.

#![allow(clippy::unwrap_used, reason = "test set-up fails loudly")]

mod common;

use std::collections::HashSet;

use std::time::Duration;

use common::{
    Target, batch_of_each_order, binary, check_reconcile_spans, link, sampled_targets, start_api,
    stored_targets, summary, with, workspace_binary,
};
use orders_test_support::{OtlpReceiver, Process, ReceivedSpan, WAIT, named, otel_env};
use sqlx::PgPool;

const ORDERS: usize = 10_000;

/// Posts [`ORDERS`] orders with orders-load to orders-api sampling one trace
/// in ten; returns where its exported `receive-order` spans are, and how many
/// spans it exported in all.
async fn post_orders_sampled_at_a_tenth(pool: &PgPool) -> (HashSet<Target>, usize) {
    let receiver = OtlpReceiver::start().await;
    let a_tenth = [
        ("OTEL_TRACES_SAMPLER", "parentbased_traceidratio"),
        ("OTEL_TRACES_SAMPLER_ARG", "0.1"),
    ];
    let (api, url) = start_api(with(otel_env(pool, &receiver, "grpc"), &a_tenth)).await;
    let load = Process::spawn(
        workspace_binary("ORDERS_LOAD_BIN", "orders-load"),
        &["--count", &ORDERS.to_string()],
        &[("ORDERS_API_URL", url)],
    );
    let load = load.wait(Duration::from_mins(10)).await;
    load.assert_code(0);
    assert!(load.stdout.contains(&format!("{ORDERS} created")), "{load}");
    api.sigterm();
    // Its spans are flushed before it exits.
    api.wait(WAIT).await.assert_code(0);
    let spans = receiver.spans();
    let requests = named(&spans, "receive-order");
    let requests = requests
        .iter()
        .map(|span| (span.trace_id(), span.span_id()));
    (requests.collect(), spans.len())
}

/// `orders-batch --once` over every order, with `more`; the spans it exported.
async fn run_batch(pool: &PgPool, more: &[(&'static str, &str)]) -> Vec<ReceivedSpan> {
    let receiver = OtlpReceiver::start().await;
    let env = with(otel_env(pool, &receiver, "grpc"), more);
    let run = Process::spawn(binary(), &["--once"], &env).wait(WAIT).await;
    run.assert_code(0);
    assert!(
        summary(&run).starts_with(&format!("processed={ORDERS} ")),
        "{run}"
    );
    receiver.spans()
}

/// Spans plus links: what a tracing backend stores and bills.
fn volume(spans: &[ReceivedSpan]) -> usize {
    spans.len() + spans.iter().map(|span| span.links().len()).sum::<usize>()
}

#[sqlx::test(migrator = "orders::db::MIGRATOR")]
async fn at_a_tenth_every_recorded_order_has_its_whole_path_and_no_link_dangles(pool: PgPool) {
    let (requests, api_spans) = post_orders_sampled_at_a_tenth(&pool).await;
    let (stored, sampled) = (stored_targets(&pool).await, sampled_targets(&pool).await);
    // The stored flags are the API's decisions: exactly the requests exported.
    assert_eq!(sampled.values().cloned().collect::<HashSet<_>>(), requests);
    assert!((800..1200).contains(&requests.len()), "{}", requests.len());

    let linked = run_batch(&pool, &[("OTEL_TRACES_SAMPLER", "links")]).await;
    let links: Vec<(String, Target)> = linked
        .iter()
        .flat_map(|span| span.links().iter().map(link))
        .collect();
    let dangling = links
        .iter()
        .filter(|(_, target)| !requests.contains(target));
    assert_eq!(dangling.count(), 0, "of {} links", links.len());
    // Each recorded order: linked from one batch, reconciled under it, linked back.
    let batches = named(&linked, "process-batch");
    assert_eq!(
        batch_of_each_order(&batches, &sampled).len(),
        requests.len()
    );
    assert_eq!(
        check_reconcile_spans(&linked, &batches, &sampled).len(),
        requests.len()
    );
    println!(
        "orders-api: {api_spans} spans, {} sampled requests; orders-batch with links: {} process-batch, {} reconcile, {} spans and {} links in all",
        requests.len(),
        batches.len(),
        named(&linked, "reconcile").len(),
        linked.len(),
        links.len()
    );

    // The default sampler over the same orders: today's output, every link.
    let again = "UPDATE orders SET status = 'pending', attempts = 0, processed_at = NULL, \
        batch_trace_id = NULL, batch_span_id = NULL, batch_span_sampled = NULL";
    sqlx::query(again).execute(&pool).await.unwrap();
    let all = run_batch(&pool, &[]).await;
    let batches = named(&all, "process-batch");
    assert!(
        batches
            .iter()
            .all(|batch| batch.int("batch.unsampled_count").is_none())
    );
    assert_eq!(batch_of_each_order(&batches, &stored).len(), ORDERS);
    assert_eq!(check_reconcile_spans(&all, &batches, &stored).len(), ORDERS);

    let (linked, all) = (volume(&linked), volume(&all));
    println!("orders-batch exported {linked} spans and links with `links`, {all} with the default");
    let tenth = all.div_ceil(10);
    assert!(
        linked.abs_diff(tenth) * 5 <= tenth,
        "{linked} against a tenth of {all}"
    );
}
