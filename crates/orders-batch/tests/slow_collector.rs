//! `orders-batch --once` against collectors that are slow, uneven, refusing,
//! gone for a while, or gone: a real OTLP receiver answering each trace
//! export as the test says, behind a proxy that can close its port. The
//! worker claims a batch only when its spans fit in the export queue, waits
//! for room while the exporter works, and a failed export is tried again
//! until the collector is back: every span and every link arrives, in the
//! time the receiver's pace allows. What a collector gone for good or a
//! rejecting one loses is counted once, the same in the summary, the warning
//! at exit and the metrics.

#![allow(clippy::unwrap_used, reason = "test set-up fails loudly")]

mod common;

use std::time::Duration;

use std::sync::OnceLock;
use std::time::Instant;

use common::{assert_processed_once_by, batch_of_each_order, binary, bulk_seed};
use common::{check_reconcile_spans, count_status, rows, stored_targets, summary, with};
use orders_test_support::{
    Answer, BlinkingProxy, Code, OtlpReceiver, Process, ReceivedSpan, WAIT, free_port, named,
    otel_env, wait_until,
};
use sqlx::PgPool;

/// A run of 10 000 orders in batches of 1000 (the default) that lost nothing.
const ALL_DONE: &str = "processed=10000 failed=0 retrying=0 batches=10 failed_batches=0 unlinked=0 requeued=0 released=0";

/// `orders-batch --once` processes started `apart` from each other, exporting
/// to `receiver`, with `more`; their summaries, once all have exited 0.
async fn run_against(
    pool: &PgPool,
    receiver: &OtlpReceiver,
    processes: usize,
    apart: Duration,
    more: &[(&'static str, &str)],
) -> Vec<String> {
    let env = with(otel_env(pool, receiver, "grpc"), more);
    let mut runs = Vec::new();
    for _ in 0..processes {
        runs.push(Process::spawn(binary(), &["--once"], &env));
        tokio::time::sleep(apart).await;
    }
    let mut summaries = Vec::new();
    for run in runs {
        let run = run.wait(WAIT * 3).await;
        run.assert_code(0);
        assert!(!run.stdout.contains("waits no more"), "{run}");
        summaries.push(summary(&run));
    }
    summaries
}

/// Every order linked by exactly one `process-batch` and reconciled once,
/// under it, and every row processed once by the batch that links it: from
/// the spans the receiver decoded, each once however often it arrived.
async fn assert_every_order_linked_once(pool: &PgPool, spans: &[ReceivedSpan], orders: usize) {
    let batches = named(spans, "process-batch");
    let stored = stored_targets(pool).await;
    let batch_of = batch_of_each_order(&batches, &stored);
    assert_eq!(
        batch_of.len(),
        orders,
        "orders linked by a batch that arrived"
    );
    let reconciled = check_reconcile_spans(spans, &batches, &stored);
    assert_eq!(reconciled.len(), orders, "reconcile spans that arrived");
    assert_processed_once_by(&rows(pool).await, |row| {
        batch_of[&row.id.to_string()].clone()
    });
}

/// One `--once` over 10 000 orders against `receiver`: nothing dropped, every
/// order linked once. Prints how long it took, for how many exports.
async fn assert_one_run_links_every_order(
    pool: &PgPool,
    receiver: &OtlpReceiver,
    more: &[(&'static str, &str)],
) {
    bulk_seed(pool, 10_000).await;
    let started = Instant::now();
    let summaries = run_against(pool, receiver, 1, Duration::ZERO, more).await;
    println!(
        "{} trace export requests, {} accepted, in {:?}",
        receiver.trace_requests(),
        receiver.trace_exports(),
        started.elapsed()
    );
    assert_eq!(summaries, [ALL_DONE], "nothing dropped");
    assert_every_order_linked_once(pool, &receiver.distinct_spans(), 10_000).await;
}

#[sqlx::test(migrator = "orders::db::MIGRATOR")]
async fn a_collector_answering_each_export_after_2_s_gets_every_span_and_link(pool: PgPool) {
    let receiver = OtlpReceiver::answering_after(Duration::from_secs(2)).await;
    assert_one_run_links_every_order(&pool, &receiver, &[]).await;
}

#[sqlx::test(migrator = "orders::db::MIGRATOR")]
async fn a_collector_slow_now_and_then_gets_every_span_and_link(pool: PgPool) {
    // Exports of 512 spans answered after 100 ms, but the 6th after 1.5 s and
    // every 6th after it after 3.5 s: the first two slow ones each more than
    // twice as slow as any export before them.
    let receiver = OtlpReceiver::answering(|export| {
        Answer::after(Duration::from_millis(match export {
            6 => 1500,
            export if export % 6 == 0 => 3500,
            _ => 100,
        }))
    })
    .await;
    let smaller_exports = [("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "512")];
    assert_one_run_links_every_order(&pool, &receiver, &smaller_exports).await;
}

#[sqlx::test(migrator = "orders::db::MIGRATOR")]
async fn a_collector_refusing_exports_it_wants_retried_gets_every_span_and_link(pool: PgPool) {
    // Every 5th request refused UNAVAILABLE; every 7th RESOURCE_EXHAUSTED with
    // the RetryInfo of a receiver throttling for a second: the exporter
    // retries both, after its backoff or the delay asked.
    let receiver = OtlpReceiver::answering(|request| match request {
        request if request % 5 == 0 => Answer::refused(Code::Unavailable),
        request if request % 7 == 0 => Answer {
            retry_after: Some(Duration::from_secs(1)),
            ..Answer::refused(Code::ResourceExhausted)
        },
        _ => Answer::after(Duration::from_millis(50)),
    })
    .await;
    let smaller_exports = [("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "512")];
    assert_one_run_links_every_order(&pool, &receiver, &smaller_exports).await;
    assert!(receiver.trace_requests() > receiver.trace_exports());
}

#[sqlx::test(migrator = "orders::db::MIGRATOR")]
async fn four_workers_with_claims_shorter_than_an_export_link_every_order_once(pool: PgPool) {
    bulk_seed(&pool, 10_000).await;
    // Four workers against a slow collector: leases of 2 s, exports answered
    // after 3 s; a worker starts every 2.5 s, and each one's run first
    // requeues the claims that expired. None is reconciled twice.
    let receiver = OtlpReceiver::answering_after(Duration::from_secs(3)).await;
    let lease = [("BATCH_CLAIM_TIMEOUT_SECS", "2")];
    let summaries = run_against(&pool, &receiver, 4, Duration::from_millis(2500), &lease).await;
    for summary in &summaries {
        assert!(summary.contains(" requeued=0 "), "{summary}");
    }
    assert_every_order_linked_once(&pool, &receiver.distinct_spans(), 10_000).await;
}

/// One `--once` over 10 000 orders exporting through a proxy to a receiver
/// answering each export after 300 ms, with `more`; the proxy goes away for
/// `away` once two exports are in, mid-run (a collector restarting, or
/// rolled out). Nothing lost, every order linked once.
async fn assert_a_blink_costs_nothing(
    pool: &PgPool,
    away: Duration,
    more: &[(&'static str, &str)],
) {
    let receiver = OtlpReceiver::answering_after(Duration::from_millis(300)).await;
    let proxy = BlinkingProxy::start(receiver.grpc_address()).await;
    bulk_seed(pool, 10_000).await;
    let through_proxy = [("OTEL_EXPORTER_OTLP_ENDPOINT", proxy.endpoint())];
    let env = with(otel_env(pool, &receiver, "grpc"), more);
    let env = [env, through_proxy.to_vec()].concat();
    let started = Instant::now();
    let run = Process::spawn(binary(), &["--once"], &env);
    let two_exports = || async { receiver.trace_exports() >= 2 };
    wait_until(WAIT, "two trace exports", two_exports).await;
    proxy.away_for(away);
    let run = run.wait(WAIT + away * 2).await;
    run.assert_code(0);
    let spans = receiver.distinct_spans();
    let linked: usize = named(&spans, "process-batch")
        .iter()
        .map(|batch| batch.links().len())
        .sum();
    println!(
        "away {away:?}: {linked} orders linked, {} trace export requests, {} accepted, {} spans received, {} distinct, in {:?}",
        receiver.trace_requests(),
        receiver.trace_exports(),
        receiver.spans().len(),
        spans.len(),
        started.elapsed()
    );
    assert_eq!(summary(&run), ALL_DONE, "nothing dropped\n{run}");
    run.assert_traces_failed_then_got_through(&proxy.endpoint());
    assert_every_order_linked_once(pool, &spans, 10_000).await;
}

#[sqlx::test(migrator = "orders::db::MIGRATOR")]
async fn a_collector_restarting_for_3_s_mid_run_gets_every_span_and_link(pool: PgPool) {
    assert_a_blink_costs_nothing(&pool, Duration::from_secs(3), &[]).await;
}

#[sqlx::test(migrator = "orders::db::MIGRATOR")]
async fn a_collector_gone_30_s_mid_run_gets_every_span_and_link(pool: PgPool) {
    assert_a_blink_costs_nothing(&pool, Duration::from_secs(30), &[]).await;
}

#[sqlx::test(migrator = "orders::db::MIGRATOR")]
async fn without_a_bound_a_collector_gone_20_s_mid_run_gets_every_span_and_link(pool: PgPool) {
    let unbounded = [("OTEL_BSP_BLOCK_ON_QUEUE_FULL_TIMEOUT", "0")];
    assert_a_blink_costs_nothing(&pool, Duration::from_secs(20), &unbounded).await;
}

#[sqlx::test(migrator = "orders::db::MIGRATOR")]
async fn a_collector_refusing_every_export_unavailable_for_4_s_gets_every_span_and_link(
    pool: PgPool,
) {
    // Exports answered after 1.5 s; from the 3rd request on, every one
    // refused UNAVAILABLE for 4 s, as a collector's memory limiter does.
    let refusing_since = OnceLock::new();
    let receiver = OtlpReceiver::answering(move |request| {
        let since = (request >= 3).then(|| refusing_since.get_or_init(Instant::now));
        match since {
            Some(since) if since.elapsed() < Duration::from_secs(4) => {
                Answer::refused(Code::Unavailable)
            }
            _ => Answer::after(Duration::from_millis(1500)),
        }
    })
    .await;
    assert_one_run_links_every_order(&pool, &receiver, &[]).await;
}

#[sqlx::test(migrator = "orders::db::MIGRATOR")]
async fn sigterm_with_the_queue_full_drains_it_and_exits_0_every_processed_order_linked(
    pool: PgPool,
) {
    bulk_seed(&pool, 10_000).await;
    // Each export takes 2 s: once the first is in, the worker waits for
    // room, the queue full. On SIGTERM it stops claiming, gives back the
    // batch claimed ahead, drains what it made, and flushes.
    let receiver = OtlpReceiver::answering_after(Duration::from_secs(2)).await;
    let env = with(otel_env(&pool, &receiver, "grpc"), &[]);
    let run = Process::spawn(binary(), &["--once"], &env);
    let exporting = || async { receiver.trace_requests() > 0 };
    wait_until(WAIT, "the first trace export", exporting).await;
    let signalled = Instant::now();
    run.sigterm();
    let run = run.wait(WAIT * 2).await;
    run.assert_code(0);
    // SHUTDOWN_GRACE_SECS, two releases and the count of what is pending,
    // the drain's bound, the flush: docs/telemetry.md's sum.
    assert!(
        signalled.elapsed() < Duration::from_secs(20 + 3 * 5 + 60 + 5),
        "{run}"
    );
    let processed = count_status(&pool, "processed").await;
    let pending = count_status(&pool, "pending").await;
    assert_eq!(
        (processed + pending, count_status(&pool, "processing").await),
        (10_000, 0),
        "every claim finished or given back"
    );
    assert!(
        pending >= 1000,
        "{pending} orders left: it was stopped\n{run}"
    );
    assert!(
        summary(&run).contains(&format!(" interrupted pending={pending}")),
        "{run}"
    );
    assert!(!summary(&run).contains("spans_dropped"), "{run}");
    let spans = receiver.distinct_spans();
    let stored = stored_targets(&pool).await;
    let batch_of = batch_of_each_order(&named(&spans, "process-batch"), &stored);
    assert_eq!(batch_of.len(), processed, "every processed order linked");
    let processed_rows = rows(&pool).await;
    let processed_rows = processed_rows
        .iter()
        .filter(|row| row.status == "processed");
    assert!(
        processed_rows
            .into_iter()
            .all(|row| batch_of.contains_key(&row.id.to_string()))
    );
}

#[sqlx::test(migrator = "orders::db::MIGRATOR")]
async fn without_a_collector_a_run_waits_its_5_s_bound_once_and_every_count_agrees(pool: PgPool) {
    bulk_seed(&pool, 10_000).await;
    // Traces to a port nobody listens on, held out for 5 s; metrics and logs
    // to a receiver that answers. A second wait would take the run past the
    // bound, the flush and the work.
    let receiver = OtlpReceiver::start().await;
    let traces = format!("http://127.0.0.1:{}", free_port());
    let more = [
        ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", traces.as_str()),
        ("OTEL_BSP_BLOCK_ON_QUEUE_FULL_TIMEOUT", "5000"),
        ("TELEMETRY_SHUTDOWN_TIMEOUT_MS", "2000"),
    ];
    let env = with(otel_env(&pool, &receiver, "grpc"), &more);
    let run = Process::spawn(binary(), &["--once"], &env).wait(WAIT).await;
    run.assert_code(0);
    assert!(run.ran_for < Duration::from_secs(5 + 2 + 5), "{run}");
    let said = |text: &str| {
        run.stdout
            .lines()
            .filter(|line| line.contains(text))
            .count()
    };
    assert_eq!(said("for room in the trace export queue"), 1, "{run}");
    assert_eq!(said("spans dropped: "), 1, "once a minute\n{run}");
    let lost: i64 = summary(&run)
        .strip_prefix("processed=10000 failed=0 retrying=0 batches=10 failed_batches=0 unlinked=0 requeued=0 released=0 spans_dropped=")
        .unwrap_or_else(|| panic!("{run}"))
        .parse()
        .unwrap();
    assert!(lost > 10_000, "{run}");
    assert_eq!(
        said(&format!("{lost} spans not exported in all")),
        1,
        "{run}"
    );
    assert_eq!(lost_by_the_metrics(&receiver), lost, "{run}");
}

#[sqlx::test(migrator = "orders::db::MIGRATOR")]
async fn spans_a_collector_rejects_are_counted_once_everywhere(pool: PgPool) {
    bulk_seed(&pool, 50).await;
    // The first export is accepted but for 5 of its spans, in a partial success.
    let receiver = OtlpReceiver::answering(|export| Answer {
        rejected: if export == 1 { 5 } else { 0 },
        ..Answer::default()
    })
    .await;
    let env = with(otel_env(&pool, &receiver, "grpc"), &[]);
    let run = Process::spawn(binary(), &["--once"], &env).wait(WAIT).await;
    run.assert_code(0);
    assert!(summary(&run).ends_with(" spans_dropped=5"), "{run}");
    let at_exit = "5 spans not exported in all: 0 dropped with the export queue full, 5 failed or rejected in exports, 0 still queued at exit";
    assert!(run.stdout.contains(at_exit), "{run}");
    let rejected = receiver.counter(
        "otel.sdk.exporter.span.exported",
        "error.type",
        Some("rejected"),
    );
    assert_eq!(rejected, Some(5));
    assert_eq!(lost_by_the_metrics(&receiver), 5);
}

/// Spans not exported, as the last metrics say: dropped at a full queue, in
/// failed exports (rejected or not), still in the queue or in an export.
fn lost_by_the_metrics(receiver: &OtlpReceiver) -> i64 {
    let value = |name, key, value| {
        receiver
            .counter(name, key, value)
            .unwrap_or_else(|| panic!("no {name} with {key}={value:?}"))
    };
    let exported = "otel.sdk.exporter.span.exported";
    value(
        "otel.sdk.processor.span.processed",
        "error.type",
        Some("queue_full"),
    ) + value(exported, "error.type", Some("rejected"))
        + value(exported, "error.type", Some("_OTHER"))
        + value("otel.sdk.processor.span.queue.size", "error.type", None)
        + value("otel.sdk.exporter.span.inflight", "error.type", None)
}
