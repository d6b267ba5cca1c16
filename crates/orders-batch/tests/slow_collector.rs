//! `orders-batch --once` against a collector slower than the batch: a real
//! OTLP receiver that answers each export a fixed delay after it arrives. The
//! worker paces its batches to what its exporter has sent, so every span and
//! every link arrives, in the time the receiver's pace allows.

#![allow(clippy::unwrap_used, reason = "test set-up fails loudly")]

mod common;

use std::time::Duration;

use common::{assert_processed_once_by, batch_of_each_order, binary, bulk_seed};
use common::{check_reconcile_spans, rows, stored_targets, summary, with};
use orders_test_support::{OtlpReceiver, Process, ReceivedSpan, Silent, WAIT, named, otel_env};
use sqlx::PgPool;

/// Each export is answered this long after it arrives. With the SDK's own
/// export settings (exports of 512 spans; its queue of 2048, which the batch
/// raises to four batches' worth, as before it waited for its exporter), the
/// receiver takes 2,048 spans a second, a fifth of what the batch makes.
const DELAY: Duration = Duration::from_millis(250);
const SDK_EXPORT: [(&str, &str); 3] = [
    ("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "512"),
    ("OTEL_BSP_MAX_QUEUE_SIZE", "2048"),
    // The SDK's default delay: a run's last spans must go when it ends, not
    // when the delay has passed.
    ("OTEL_BSP_SCHEDULE_DELAY", "5000"),
];

/// `processes` runs of `orders-batch --once` at once, exporting to a receiver
/// answering after [`DELAY`], with `more`; their summaries and what arrived.
async fn run_against_slow_receiver(
    pool: &PgPool,
    processes: usize,
    more: &[(&'static str, &str)],
) -> (Vec<String>, Vec<ReceivedSpan>, Duration, usize) {
    let receiver = OtlpReceiver::answering_after(DELAY).await;
    let env = with(
        otel_env(pool, &receiver, "grpc"),
        &[&SDK_EXPORT[..], more].concat(),
    );
    let runs: Vec<Process> = (0..processes)
        .map(|_| Process::spawn(binary(), &["--once"], &env))
        .collect();
    let mut summaries = Vec::new();
    let mut longest = Duration::ZERO;
    for run in runs {
        let run = run.wait(WAIT * 2).await;
        run.assert_code(0);
        summaries.push(summary(&run));
        longest = longest.max(run.ran_for);
    }
    (
        summaries,
        receiver.spans(),
        longest,
        receiver.trace_exports(),
    )
}

/// Every order linked by exactly one `process-batch` and reconciled under it,
/// and every row processed once by the batch that links it.
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

#[sqlx::test(migrator = "orders::db::MIGRATOR")]
async fn a_slow_collector_gets_every_span_and_link_at_its_own_pace(pool: PgPool) {
    bulk_seed(&pool, 10_000).await;
    let (summaries, spans, ran_for, exports) = run_against_slow_receiver(&pool, 1, &[]).await;
    let done = "processed=10000 failed=0 retrying=0 batches=10 failed_batches=0 unlinked=0 requeued=0 released=0";
    assert_eq!(summaries, [done], "nothing dropped");
    assert_every_order_linked_once(&pool, &spans, 10_000).await;
    // The receiver answers one export at a time from a process: the run takes
    // as long as its answers, and less than the SDK's 5 s delay more.
    let answering = DELAY * u32::try_from(exports).unwrap();
    println!(
        "{} spans in {exports} exports, answered in {answering:?}; the run took {ran_for:?}",
        spans.len()
    );
    assert!(
        ran_for < answering + Duration::from_secs(3),
        "{ran_for:?} for {answering:?} of answers"
    );
}

#[sqlx::test(migrator = "orders::db::MIGRATOR")]
async fn four_workers_at_once_drop_nothing_and_link_every_order_once(pool: PgPool) {
    bulk_seed(&pool, 20_000).await;
    let (summaries, spans, _, _) =
        run_against_slow_receiver(&pool, 4, &[("BATCH_MAX_SIZE", "500")]).await;
    let processed: usize = summaries
        .iter()
        .map(|summary| {
            assert!(!summary.contains("spans_dropped"), "{summary}");
            let processed = summary.split(' ').next().unwrap();
            processed["processed=".len()..].parse::<usize>().unwrap()
        })
        .sum();
    assert_eq!(processed, 20_000);
    assert_every_order_linked_once(&pool, &spans, 20_000).await;
}

#[sqlx::test(migrator = "orders::db::MIGRATOR")]
async fn spans_a_hung_collector_cannot_take_are_counted_said_and_exported_as_a_metric(
    pool: PgPool,
) {
    bulk_seed(&pool, 500).await;
    // Traces to a collector that never answers, with the smallest queue the
    // batch accepts (4 batches of 18 spans, in exports of 18); metrics and
    // logs to a receiver that answers.
    let hung = Silent::start().await;
    let receiver = OtlpReceiver::start().await;
    let traces = format!("http://{}", hung.address);
    let more = [
        ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", traces.as_str()),
        ("BATCH_MAX_SIZE", "10"),
        ("OTEL_BSP_MAX_QUEUE_SIZE", "1"),
        ("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "18"),
        ("TELEMETRY_SHUTDOWN_TIMEOUT_MS", "1000"),
    ];
    let env = with(otel_env(&pool, &receiver, "grpc"), &more);
    let run = Process::spawn(binary(), &["--once"], &env).wait(WAIT).await;
    run.assert_code(0);
    let summary = summary(&run);
    let dropped: i64 = summary
        .strip_prefix("processed=500 failed=0 retrying=0 batches=50 failed_batches=0 unlinked=0 requeued=0 released=0 spans_dropped=")
        .unwrap_or_else(|| panic!("{run}"))
        .parse()
        .unwrap();
    let lines: Vec<&str> = run
        .stdout
        .lines()
        .filter(|line| line.contains("spans dropped"))
        .collect();
    assert_eq!(lines.len(), 1, "once a minute\n{run}");
    assert!(
        lines[0].contains("WARN") && lines[0].contains("1 dropped so far"),
        "{run}"
    );
    // Stalled, it was waited for a second, then the run went at the database's pace.
    assert!(run.ran_for < Duration::from_secs(5), "{run}");
    let queue_full = receiver.counter(
        "otel.sdk.processor.span.processed",
        "error.type",
        Some("queue_full"),
    );
    // None was exported: each was dropped, or is among the 72 queued.
    let queue_full = queue_full.unwrap();
    assert!(
        (dropped - 72..dropped).contains(&queue_full),
        "{queue_full} dropped of {dropped}"
    );
    let at_exit = format!("{dropped} spans not exported in all");
    assert!(run.stdout.contains(&at_exit), "{run}");
}
