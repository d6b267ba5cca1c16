//! The spans and logs a run produces, read from in-memory exporters: one
//! `process-batch` span per batch, created with one link per order to the
//! stored receive-order context, and a `reconcile` child per order.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test set-up fails loudly"
)]

mod common;

use std::collections::{BTreeSet, HashMap};
use std::io;
use std::sync::{Arc, Mutex};

use common::{SeededOrder, rows, seed_orders, settings, worker};
use opentelemetry::trace::{
    Link, SpanContext, SpanId, SpanKind, Status, TraceId, TracerProvider as _,
};
use opentelemetry::{Context, KeyValue, Value};
use opentelemetry_appender_tracing::layer::OpenTelemetryTracingBridge;
use opentelemetry_sdk::logs::{InMemoryLogExporter, SdkLoggerProvider};
use opentelemetry_sdk::trace::{
    InMemorySpanExporter, Sampler, SamplingResult, SdkTracerProvider, ShouldSample, SpanData,
};
use span_links::StoredContext;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use tracing::subscriber::DefaultGuard;
use tracing_subscriber::Layer as _;
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::layer::SubscriberExt;
use uuid::Uuid;

/// Remembers how many links each span had when the sampler was asked.
#[derive(Debug, Clone, Default)]
struct LinkRecordingSampler {
    seen: Arc<Mutex<Vec<(String, usize)>>>,
}

impl ShouldSample for LinkRecordingSampler {
    fn should_sample(
        &self,
        parent_context: Option<&Context>,
        trace_id: TraceId,
        name: &str,
        span_kind: &SpanKind,
        attributes: &[KeyValue],
        links: &[Link],
    ) -> SamplingResult {
        self.seen
            .lock()
            .unwrap()
            .push((name.to_owned(), links.len()));
        Sampler::AlwaysOn.should_sample(
            parent_context,
            trace_id,
            name,
            span_kind,
            attributes,
            links,
        )
    }
}

/// Log lines as the stdout layer prints them.
#[derive(Debug, Clone, Default)]
struct Lines(Arc<Mutex<Vec<u8>>>);

impl io::Write for Lines {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Spans, logs and sampler calls of this test's thread (`#[sqlx::test]` runs
/// on a current-thread runtime). The link limit is what orders-batch sets from
/// `BATCH_MAX_SIZE`.
struct Captured {
    spans: InMemorySpanExporter,
    logs: InMemoryLogExporter,
    tracer_provider: SdkTracerProvider,
    logger_provider: SdkLoggerProvider,
    sampler: LinkRecordingSampler,
    lines: Lines,
    _guard: DefaultGuard,
}

fn capture(max_links_per_span: u32) -> Captured {
    let spans = InMemorySpanExporter::default();
    let logs = InMemoryLogExporter::default();
    let sampler = LinkRecordingSampler::default();
    let tracer_provider = SdkTracerProvider::builder()
        .with_sampler(sampler.clone())
        .with_max_links_per_span(max_links_per_span)
        .with_simple_exporter(spans.clone())
        .build();
    let logger_provider = SdkLoggerProvider::builder()
        .with_simple_exporter(logs.clone())
        .build();
    let lines = Lines::default();
    let writer = lines.clone();
    let subscriber = tracing_subscriber::registry()
        .with(
            tracing_opentelemetry::layer().with_tracer(tracer_provider.tracer("orders-batch-test")),
        )
        .with(OpenTelemetryTracingBridge::new(&logger_provider))
        .with(
            tracing_subscriber::fmt::layer()
                .with_ansi(false)
                .with_writer(move || writer.clone())
                // What a user sees with the default RUST_LOG.
                .with_filter(LevelFilter::INFO),
        );
    Captured {
        spans,
        logs,
        tracer_provider,
        logger_provider,
        sampler,
        lines,
        _guard: tracing::subscriber::set_default(subscriber),
    }
}

impl Captured {
    fn spans(&self) -> Vec<SpanData> {
        self.tracer_provider.force_flush().unwrap();
        self.spans.get_finished_spans().unwrap()
    }

    fn lines(&self) -> Vec<String> {
        String::from_utf8(self.lines.0.lock().unwrap().clone())
            .unwrap()
            .lines()
            .map(str::to_owned)
            .collect()
    }
}

fn named<'a>(spans: &'a [SpanData], name: &str) -> Vec<&'a SpanData> {
    spans.iter().filter(|span| span.name == name).collect()
}

fn attribute(span: &SpanData, key: &str) -> Option<Value> {
    span.attributes
        .iter()
        .find(|kv| kv.key.as_str() == key)
        .map(|kv| kv.value.clone())
}

fn int(span: &SpanData, key: &str) -> i64 {
    match attribute(span, key) {
        Some(Value::I64(value)) => value,
        other => panic!("{key} on {} is {other:?}, not an integer", span.name),
    }
}

fn string(span: &SpanData, key: &str) -> String {
    attribute(span, key)
        .map(|value| value.to_string())
        .unwrap_or_default()
}

/// What a link or a stored context identifies: trace id, span id, trace state.
fn identity(context: &SpanContext) -> (String, String, String) {
    (
        context.trace_id().to_string(),
        context.span_id().to_string(),
        context.trace_state().header(),
    )
}

fn stored_identity(source: &StoredContext) -> (String, String, String) {
    identity(&source.span_context().unwrap())
}

fn link_message_id(link: &Link) -> String {
    link.attributes
        .iter()
        .find(|kv| kv.key.as_str() == "messaging.message.id")
        .map(|kv| kv.value.to_string())
        .unwrap_or_default()
}

#[sqlx::test(migrator = "orders::db::MIGRATOR")]
async fn process_batch_links_every_stored_receive_order_context(pool: PgPool) {
    let captured = capture(10);
    let seeded = seed_orders(&pool, 7).await;

    let summary = worker(&pool, settings(10))
        .run(&CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(
        (summary.processed, summary.batches, summary.unlinked),
        (7, 1, 0)
    );

    let spans = captured.spans();
    let batches = named(&spans, "process-batch");
    assert_eq!(batches.len(), 1);
    let batch = batches[0];
    assert_eq!(batch.parent_span_id, SpanId::INVALID, "a root span");
    assert!(!batch.parent_span_is_remote);
    assert_eq!(batch.span_kind, SpanKind::Consumer);
    assert_eq!(int(batch, "batch.size"), 7);
    assert_eq!(int(batch, "messaging.batch.message_count"), 7);
    assert_eq!(int(batch, "batch.unlinked_count"), 0);
    assert_eq!(int(batch, "batch.processed_count"), 7);
    assert_eq!(string(batch, "messaging.operation.type"), "process");
    assert_eq!(string(batch, "messaging.operation.name"), "process-batch");
    assert_eq!(string(batch, "messaging.system"), "postgresql");
    assert_eq!(batch.status, Status::Unset);

    // One link per order, to exactly the stored contexts (trace state included),
    // each naming its order; none dropped.
    assert_eq!(batch.links.dropped_count, 0);
    assert_eq!(batch.links.len(), 7);
    let linked: BTreeSet<_> = batch
        .links
        .iter()
        .map(|link| (identity(&link.span_context), link_message_id(link)))
        .collect();
    let stored: BTreeSet<_> = seeded
        .iter()
        .map(|order| (stored_identity(&order.source), order.id.to_string()))
        .collect();
    assert_eq!(linked, stored);
    assert!(
        seeded.iter().any(|order| order.source.tracestate.is_some()),
        "some contexts carry a trace state"
    );

    // The sampler saw the links: they were given at creation.
    let seen = captured.sampler.seen.lock().unwrap().clone();
    assert!(seen.contains(&("process-batch".to_owned(), 7)), "{seen:?}");

    // One reconcile child per order, with its own link to that order's request.
    let reconciles = named(&spans, "reconcile");
    assert_eq!(reconciles.len(), 7);
    let by_order: HashMap<String, &SeededOrder> = seeded
        .iter()
        .map(|order| (order.id.to_string(), order))
        .collect();
    for reconcile in &reconciles {
        assert_eq!(reconcile.parent_span_id, batch.span_context.span_id());
        assert_eq!(
            reconcile.span_context.trace_id(),
            batch.span_context.trace_id()
        );
        let order = by_order[&string(reconcile, "order.id")];
        assert_eq!(reconcile.links.len(), 1);
        assert_eq!(
            identity(&reconcile.links[0].span_context),
            stored_identity(&order.source)
        );
        assert_eq!(reconcile.status, Status::Unset);
    }
    let marks = named(&spans, "mark-orders");
    assert_eq!(marks.len(), 1);
    assert_eq!(marks[0].parent_span_id, batch.span_context.span_id());
    assert_eq!(marks[0].span_kind, SpanKind::Client);

    // Each order records the batch span that processed it.
    for row in rows(&pool).await {
        assert_eq!(row.status, "processed");
        assert!(row.processed_at.is_some());
        assert_eq!(row.claimed_by, None);
        assert_eq!(
            row.batch_trace_id.as_deref(),
            Some(batch.span_context.trace_id().to_string().as_str())
        );
        assert_eq!(
            row.batch_span_id.as_deref(),
            Some(batch.span_context.span_id().to_string().as_str())
        );
    }
}

#[sqlx::test(migrator = "orders::db::MIGRATOR")]
async fn batches_are_cut_oldest_first_each_in_a_trace_of_its_own(pool: PgPool) {
    let captured = capture(2);
    let seeded = seed_orders(&pool, 5).await;

    let summary = worker(&pool, settings(2))
        .run(&CancellationToken::new())
        .await
        .unwrap();
    assert_eq!((summary.processed, summary.batches), (5, 3));

    let spans = captured.spans();
    let mut batches = named(&spans, "process-batch");
    batches.sort_by_key(|span| span.start_time);
    let sizes: Vec<i64> = batches.iter().map(|span| int(span, "batch.size")).collect();
    assert_eq!(sizes, [2, 2, 1]);
    let linked: Vec<BTreeSet<String>> = batches
        .iter()
        .map(|span| span.links.iter().map(link_message_id).collect())
        .collect();
    let expected: Vec<BTreeSet<String>> = seeded
        .chunks(2)
        .map(|chunk| chunk.iter().map(|order| order.id.to_string()).collect())
        .collect();
    assert_eq!(linked, expected, "oldest orders in the first batch");
    let traces: BTreeSet<String> = batches
        .iter()
        .map(|span| span.span_context.trace_id().to_string())
        .collect();
    assert_eq!(traces.len(), 3);
}

#[sqlx::test(migrator = "orders::db::MIGRATOR")]
async fn orders_with_a_corrupt_or_missing_context_are_processed_and_counted_unlinked(pool: PgPool) {
    let captured = capture(10);
    let seeded = seed_orders(&pool, 4).await;
    // A 31-digit trace id, which the SDK's propagator would pad and accept.
    let corrupt = seeded[1].id;
    sqlx::query("UPDATE orders SET traceparent = $2 WHERE id = $1")
        .bind(corrupt)
        .bind("00-0af7651916cd43dd8448eb211c8031-b7ad6b7169203331-01")
        .execute(&pool)
        .await
        .unwrap();
    let missing = seeded[2].id;
    sqlx::query("UPDATE orders SET traceparent = NULL, tracestate = NULL WHERE id = $1")
        .bind(missing)
        .execute(&pool)
        .await
        .unwrap();

    let summary = worker(&pool, settings(10))
        .run(&CancellationToken::new())
        .await
        .unwrap();
    assert_eq!((summary.processed, summary.unlinked), (4, 2));

    let spans = captured.spans();
    let batch = named(&spans, "process-batch")[0];
    assert_eq!(int(batch, "batch.size"), 4);
    assert_eq!(int(batch, "batch.unlinked_count"), 2);
    let linked: BTreeSet<String> = batch.links.iter().map(link_message_id).collect();
    let expected: BTreeSet<String> = [seeded[0].id, seeded[3].id]
        .iter()
        .map(Uuid::to_string)
        .collect();
    assert_eq!(linked, expected);
    for reconcile in named(&spans, "reconcile") {
        let order = string(reconcile, "order.id");
        let expected_links =
            usize::from(order != corrupt.to_string() && order != missing.to_string());
        assert_eq!(reconcile.links.len(), expected_links, "{order}");
    }
    assert!(
        rows(&pool)
            .await
            .iter()
            .all(|row| row.status == "processed")
    );

    let warning = captured
        .lines()
        .into_iter()
        .find(|line| line.contains("WARN") && line.contains("without a valid stored trace context"))
        .expect("a warning about unlinked orders");
    assert!(warning.contains(&corrupt.to_string()), "{warning}");
    assert!(warning.contains(&missing.to_string()), "{warning}");
}

#[sqlx::test(migrator = "orders::db::MIGRATOR")]
async fn a_failing_order_fails_its_reconcile_step_and_is_retried_by_later_runs(pool: PgPool) {
    let captured = capture(10);
    let seeded = seed_orders(&pool, 3).await;
    let bad = seeded[1].id;
    sqlx::query("UPDATE orders SET total_cents = total_cents + 1 WHERE id = $1")
        .bind(bad)
        .execute(&pool)
        .await
        .unwrap();
    let worker = worker(&pool, settings(10));

    // First run: the order fails alone and is not retried within the run.
    let first = worker.run(&CancellationToken::new()).await.unwrap();
    assert_eq!(
        (first.processed, first.retrying, first.failed, first.batches),
        (2, 1, 0, 1)
    );
    let spans = captured.spans();
    let batch = named(&spans, "process-batch")[0];
    assert_eq!(batch.status, Status::Unset, "the batch itself did not fail");
    assert_eq!(int(batch, "batch.retrying_count"), 1);
    let failed: Vec<_> = named(&spans, "reconcile")
        .into_iter()
        .filter(|span| string(span, "order.id") == bad.to_string())
        .collect();
    assert_eq!(failed.len(), 1);
    let Status::Error { description } = &failed[0].status else {
        panic!("reconcile of the bad order is {:?}", failed[0].status);
    };
    assert!(
        description.contains("differs from the line items' total"),
        "{description}"
    );
    assert_eq!(string(failed[0], "error.type"), "total_mismatch");
    let row = rows(&pool)
        .await
        .into_iter()
        .find(|row| row.id == bad)
        .unwrap();
    assert_eq!((row.status.as_str(), row.attempts), ("pending", 1));
    assert!(row.last_error.unwrap().contains("differs"));
    assert_eq!(
        row.batch_trace_id.as_deref(),
        Some(batch.span_context.trace_id().to_string().as_str())
    );

    // Later runs retry it; the third attempt (max_attempts = 3) marks it failed.
    let second = worker.run(&CancellationToken::new()).await.unwrap();
    assert_eq!(
        (second.processed, second.retrying, second.failed),
        (0, 1, 0)
    );
    let third = worker.run(&CancellationToken::new()).await.unwrap();
    assert_eq!((third.processed, third.retrying, third.failed), (0, 0, 1));
    let row = rows(&pool)
        .await
        .into_iter()
        .find(|row| row.id == bad)
        .unwrap();
    assert_eq!((row.status.as_str(), row.attempts), ("failed", 3));
    assert!(row.processed_at.is_none());
    let fourth = worker.run(&CancellationToken::new()).await.unwrap();
    assert_eq!(fourth.batches, 0, "a failed order is not claimed again");
}

#[sqlx::test(migrator = "orders::db::MIGRATOR")]
async fn nothing_pending_means_no_process_batch_span_and_one_log_line(pool: PgPool) {
    let captured = capture(10);

    let summary = worker(&pool, settings(10))
        .run(&CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(summary, orders_batch::RunSummary::default());

    assert!(named(&captured.spans(), "process-batch").is_empty());
    let lines = captured.lines();
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(lines[0].contains("no pending orders"), "{lines:?}");
}

#[sqlx::test(migrator = "orders::db::MIGRATOR")]
async fn logs_of_a_batch_carry_its_trace_id(pool: PgPool) {
    let captured = capture(10);
    seed_orders(&pool, 3).await;

    worker(&pool, settings(10))
        .run(&CancellationToken::new())
        .await
        .unwrap();

    let spans = captured.spans();
    let batch = named(&spans, "process-batch")[0];
    captured.logger_provider.force_flush().unwrap();
    let logs = captured.logs.get_emitted_logs().unwrap();
    let batch_logs: Vec<_> = logs
        .iter()
        .filter(|log| {
            log.record
                .body()
                .is_some_and(|body| matches!(body, opentelemetry::logs::AnyValue::String(text) if ["processing a batch", "batch done"].contains(&text.as_str())))
        })
        .collect();
    assert_eq!(batch_logs.len(), 2, "{logs:?}");
    for log in batch_logs {
        let context = log.record.trace_context().expect("a trace context");
        assert_eq!(context.trace_id, batch.span_context.trace_id());
    }
}
