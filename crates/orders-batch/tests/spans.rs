//! A run's spans and logs, caught in memory: one `process-batch` span per
//! batch, created with one link per order to its stored context, and a
//! `reconcile` child per order.

#![allow(clippy::unwrap_used, reason = "test set-up fails loudly")]

mod common;

use std::collections::BTreeSet;

use common::{
    check_process_batch, check_reconcile_spans, rows, seed_orders, settings, stored_targets, worker,
};
use opentelemetry::logs::AnyValue;
use opentelemetry::metrics::MeterProvider as _;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_appender_tracing::layer::OpenTelemetryTracingBridge;
use opentelemetry_proto::tonic::trace::v1::status::StatusCode;
use opentelemetry_sdk::logs::{InMemoryLogExporter, SdkLoggerProvider};
use opentelemetry_sdk::metrics::data::{
    AggregatedMetrics, MetricData, ResourceMetrics, ScopeMetrics, SumDataPoint,
};
use opentelemetry_sdk::metrics::{InMemoryMetricExporter, PeriodicReader, SdkMeterProvider};
use opentelemetry_sdk::trace::{InMemorySpanExporter, Sampler, SdkTracerProvider, ShouldSample};
use orders_batch::{BatchMetrics, BatchSettings, Worker};
use orders_test_support::{ReceivedSpan, named};
use span_links::{LinkSampler, LinkSelection};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use tracing::subscriber::DefaultGuard;
use tracing_subscriber::layer::SubscriberExt as _;
use uuid::Uuid;

/// Spans and log records of this test's thread (`#[sqlx::test]` runs on a
/// current-thread runtime), with the link limit a batch of 10 needs.
struct Captured {
    spans: InMemorySpanExporter,
    logs: InMemoryLogExporter,
    tracer: SdkTracerProvider,
    logger: SdkLoggerProvider,
    _guard: DefaultGuard,
}

fn capture() -> Captured {
    capture_sampled_by(Sampler::ParentBased(Box::new(Sampler::AlwaysOn)))
}

fn capture_sampled_by(sampler: impl ShouldSample + 'static) -> Captured {
    let (spans, logs) = (
        InMemorySpanExporter::default(),
        InMemoryLogExporter::default(),
    );
    let tracer = span_links::with_link_limit(SdkTracerProvider::builder(), 10)
        .with_sampler(sampler)
        .with_simple_exporter(spans.clone())
        .build();
    let logger = SdkLoggerProvider::builder()
        .with_simple_exporter(logs.clone())
        .build();
    let subscriber = tracing_subscriber::registry()
        .with(tracing_opentelemetry::layer().with_tracer(tracer.tracer("test")))
        .with(OpenTelemetryTracingBridge::new(&logger));
    let guard = tracing::subscriber::set_default(subscriber);
    Captured {
        spans,
        logs,
        tracer,
        logger,
        _guard: guard,
    }
}

impl Captured {
    fn spans(&self) -> Vec<ReceivedSpan> {
        self.tracer.force_flush().unwrap();
        ReceivedSpan::from_sdk(self.spans.get_finished_spans().unwrap())
    }

    /// The product's first log record whose body is `body`: its `orders`
    /// attribute (empty without one), and its trace id.
    fn log(&self, body: &str) -> (String, Option<String>) {
        self.logger.force_flush().unwrap();
        let text = |value: Option<&AnyValue>| match value {
            Some(AnyValue::String(text)) => text.to_string(),
            _ => String::new(),
        };
        let records = self.logs.get_emitted_logs().unwrap();
        let found = records.iter().map(|log| &log.record).find(|record| {
            record
                .target()
                .is_some_and(|target| target.starts_with("orders"))
                && text(record.body()) == body
        });
        let record = found.unwrap_or_else(|| panic!("no log record says {body}"));
        let orders = record
            .attributes_iter()
            .find(|(key, _)| key.as_str() == "orders");
        let trace = record
            .trace_context()
            .map(|context| context.trace_id.to_string());
        (text(orders.map(|(_, value)| value)), trace)
    }
}

/// The counter `name` (cumulative, over its attributes) in the last export
/// `metrics` received.
fn counted(metrics: &InMemoryMetricExporter, name: &str) -> u64 {
    let exported = metrics.get_finished_metrics().unwrap();
    let counters = exported
        .last()
        .into_iter()
        .flat_map(ResourceMetrics::scope_metrics)
        .flat_map(ScopeMetrics::metrics)
        .filter(|metric| metric.name() == name);
    counters
        .map(|metric| match metric.data() {
            AggregatedMetrics::U64(MetricData::Sum(sum)) => {
                sum.data_points().map(SumDataPoint::value).sum()
            }
            _ => 0,
        })
        .sum()
}

/// `UPDATE orders SET <set>` of the one order `order`.
async fn update(pool: &PgPool, set: &str, order: Uuid) {
    let sql = format!("UPDATE orders SET {set} WHERE id = $1");
    sqlx::query(&sql).bind(order).execute(pool).await.unwrap();
}

#[sqlx::test(migrator = "orders::db::MIGRATOR")]
async fn orders_without_a_valid_context_are_processed_unlinked_and_named(pool: PgPool) {
    let captured = capture();
    let seeded = seed_orders(&pool, 4).await;
    // A 31-digit trace id, which the SDK's propagator would pad and accept.
    let corrupt = "traceparent = '00-0af7651916cd43dd8448eb211c8031-b7ad6b7169203331-01'";
    update(&pool, corrupt, seeded[1]).await;
    update(&pool, "traceparent = NULL", seeded[2]).await;
    let worker = worker(&pool, settings(10));
    let summary = worker.run(&CancellationToken::new()).await.unwrap();
    assert_eq!((summary.processed, summary.unlinked), (4, 2));

    let spans = captured.spans();
    let batch = named(&spans, "process-batch")[0];
    let linked: BTreeSet<String> = check_process_batch(batch).into_keys().collect();
    assert_eq!(
        linked,
        BTreeSet::from([seeded[0].to_string(), seeded[3].to_string()])
    );
    assert_eq!(batch.int("batch.unlinked_count"), Some(2));
    let mut stored = stored_targets(&pool).await;
    stored.retain(|order, _| linked.contains(order));
    let reconciled = check_reconcile_spans(&spans, &[batch], &stored);
    assert_eq!(reconciled.len(), 4, "unlinked orders are reconciled too");
    let (named_orders, _) = captured.log(
        "orders without a valid stored trace context: processed, but the batch cannot link to their requests",
    );
    assert_eq!(named_orders, format!("{},{}", seeded[1], seeded[2]));
}

#[sqlx::test(migrator = "orders::db::MIGRATOR")]
async fn an_order_that_does_not_reconcile_fails_its_step_and_is_retried_until_failed(pool: PgPool) {
    let captured = capture();
    let bad = seed_orders(&pool, 3).await[1];
    update(&pool, "total_cents = total_cents + 1", bad).await;
    let worker = worker(&pool, settings(10));
    let first = worker.run(&CancellationToken::new()).await.unwrap();
    assert_eq!((first.processed, first.retrying, first.failed), (2, 1, 0));

    let spans = captured.spans();
    let batch = named(&spans, "process-batch")[0];
    assert_eq!(
        batch.status().0,
        StatusCode::Unset,
        "the batch did not fail"
    );
    assert_eq!(batch.int("batch.retrying_count"), Some(1));
    let failed = named(&spans, "reconcile")
        .into_iter()
        .find(|span| span.string("order.id") == Some(bad.to_string().as_str()))
        .unwrap();
    let (code, message) = failed.status();
    assert_eq!(code, StatusCode::Error);
    assert!(
        message.contains("differs from the line items' total"),
        "{message}"
    );
    assert_eq!(failed.string("error.type"), Some("total_mismatch"));
    let row = |rows: Vec<common::Row>| rows.into_iter().find(|row| row.id == bad).unwrap();
    let after_first = row(rows(&pool).await);
    assert_eq!(
        (after_first.status.as_str(), after_first.attempts),
        ("pending", 1)
    );
    assert!(after_first.last_error.unwrap().contains("differs"));
    assert_eq!(after_first.batch_trace_id, Some(batch.trace_id()));

    // Later runs retry it; the third attempt (of 3) marks it failed, for good.
    let (second, third) = (
        worker.run(&CancellationToken::new()).await.unwrap(),
        worker.run(&CancellationToken::new()).await.unwrap(),
    );
    assert_eq!((second.retrying, third.failed), (1, 1));
    let after_third = row(rows(&pool).await);
    assert_eq!(
        (
            after_third.status.as_str(),
            after_third.attempts,
            after_third.processed_at
        ),
        ("failed", 3, None)
    );
    assert_eq!(
        worker.run(&CancellationToken::new()).await.unwrap().batches,
        0
    );
}

#[sqlx::test(migrator = "orders::db::MIGRATOR")]
async fn an_order_failing_in_an_unrecorded_batch_is_logged_with_the_batch_trace(pool: PgPool) {
    let captured = capture_sampled_by(LinkSampler::new(0.0));
    let bad = seed_orders(&pool, 3).await[1];
    // Requests that were not sampled (trace flags 00), and one order that fails.
    let unsampled = "UPDATE orders SET traceparent = left(traceparent, 53) || '00'";
    sqlx::query(unsampled).execute(&pool).await.unwrap();
    update(&pool, "total_cents = total_cents + 1", bad).await;
    let linking_sampled = BatchSettings {
        link_selection: LinkSelection::Sampled,
        ..settings(10)
    };
    let metrics = InMemoryMetricExporter::default();
    let meter = SdkMeterProvider::builder()
        .with_reader(PeriodicReader::builder(metrics.clone()).build())
        .build();
    let worker = Worker::new(
        pool.clone(),
        linking_sampled,
        BatchMetrics::new(&meter.meter("test")),
    );
    let summary = worker.run(&CancellationToken::new()).await.unwrap();
    assert_eq!((summary.processed, summary.retrying), (2, 1));
    meter.force_flush().unwrap();
    assert_eq!(counted(&metrics, "orders.failed"), 1);

    assert_eq!(
        captured.spans().len(),
        0,
        "no span of a run of unsampled orders"
    );
    let row = rows(&pool)
        .await
        .into_iter()
        .find(|row| row.id == bad)
        .unwrap();
    assert_eq!(row.batch_span_sampled, Some(false));
    let batch_trace = row.batch_trace_id.unwrap();
    assert_eq!(captured.log("order did not reconcile").1, Some(batch_trace));
}
