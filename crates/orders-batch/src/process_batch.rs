//! One batch: the `process-batch` span, linked to every order's request, and
//! the `reconcile` step for each order under it.
//!
//! The links are given to the span before it starts, so the sampler sees them
//! (tracing-opentelemetry builds the OpenTelemetry span lazily, on first
//! enter: links added before that are part of its creation). A link to an
//! invalid context would be dropped silently by the SDK, so orders without a
//! valid stored context are counted and named instead.

use std::time::Instant;

use opentelemetry::KeyValue;
use opentelemetry::trace::{SpanContext, TraceContextExt};
use orders::claims::{self, Claim, ClaimedOrder, Finished, Outcome};
use orders::order::BatchSpan;
use orders::reconcile::reconcile;
use orders::{OrderStatus, StoreError, TraceContext};
use tracing::Instrument;
use tracing::field::Empty;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use uuid::Uuid;

use crate::worker::Worker;

/// The attribute naming the order a link points for.
const MESSAGE_ID: &str = "messaging.message.id";

/// What became of the orders of one batch.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BatchReport {
    pub processed: usize,
    /// Marked failed after their last attempt.
    pub failed: usize,
    /// Failed this time; back in the queue for a later run.
    pub retrying: usize,
    /// Processed without a link: their stored trace context was missing or invalid.
    pub unlinked: usize,
}

impl Worker {
    /// Reconciles the claimed orders under one `process-batch` span and marks
    /// them. `claimed` is when the claim was made, for the duration metric.
    pub(crate) async fn process_batch(
        &self,
        claim: &Claim,
        claimed: Instant,
    ) -> Result<BatchReport, StoreError> {
        let links: Vec<Option<SpanContext>> = claim
            .orders
            .iter()
            .map(|order| {
                order
                    .source_trace
                    .as_ref()
                    .and_then(TraceContext::span_context)
            })
            .collect();
        let unlinked: Vec<Uuid> = claim
            .orders
            .iter()
            .zip(&links)
            .filter(|(_, link)| link.is_none())
            .map(|(order, _)| order.id)
            .collect();
        let size = as_i64(claim.orders.len());
        let span = tracing::info_span!(
            parent: None,
            "process-batch",
            otel.kind = "consumer",
            otel.status_code = Empty,
            otel.status_description = Empty,
            messaging.system = "postgresql",
            messaging.operation.type = "process",
            messaging.operation.name = "process-batch",
            messaging.destination.name = "orders",
            messaging.consumer.group.name = "orders-batch",
            messaging.batch.message_count = size,
            batch.size = size,
            batch.unlinked_count = as_i64(unlinked.len()),
            batch.processed_count = Empty,
            batch.failed_count = Empty,
            batch.retrying_count = Empty,
            error.type = Empty,
        );
        for (order, link) in claim.orders.iter().zip(&links) {
            if let Some(context) = link {
                span.add_link_with_attributes(context.clone(), message_id(order.id));
            }
        }

        let result: Result<BatchReport, StoreError> = async {
            tracing::info!(
                batch.size = size,
                claim = %claim.token,
                "processing a batch"
            );
            if !unlinked.is_empty() {
                tracing::warn!(
                    count = unlinked.len(),
                    orders = %list(&unlinked),
                    "orders without a valid stored trace context: processed, but the batch cannot link to their requests"
                );
            }
            let outcomes: Vec<(Uuid, Outcome)> = claim
                .orders
                .iter()
                .zip(&links)
                .map(|(order, link)| (order.id, self.reconcile_order(order, link.as_ref())))
                .collect();
            let finished =
                claims::finish(&self.pool, &claim.token, current_batch_span().as_ref(), &outcomes)
                    .await?;
            Ok(self.report(claim, &outcomes, &finished, unlinked.len()))
        }
        .instrument(span.clone())
        .await;

        match &result {
            Ok(report) => {
                span.record("batch.processed_count", as_i64(report.processed));
                span.record("batch.failed_count", as_i64(report.failed));
                span.record("batch.retrying_count", as_i64(report.retrying));
                self.metrics.batch(claim.orders.len(), claimed.elapsed());
                span.in_scope(|| {
                    tracing::info!(
                        processed = report.processed,
                        failed = report.failed,
                        retrying = report.retrying,
                        unlinked = report.unlinked,
                        "batch done"
                    );
                });
            }
            Err(error) => {
                span.record("otel.status_code", "ERROR");
                span.record("otel.status_description", error.to_string());
                span.record("error.type", "store");
            }
        }
        result
    }

    /// The `reconcile` step for one order: its own span, linked to the order's
    /// request, and failed with the reason when the order does not reconcile.
    fn reconcile_order(&self, order: &ClaimedOrder, link: Option<&SpanContext>) -> Outcome {
        let span = tracing::info_span!(
            "reconcile",
            order.id = %order.id,
            messaging.message.id = %order.id,
            order.attempt = i64::from(order.attempts),
            otel.status_code = Empty,
            otel.status_description = Empty,
            error.type = Empty,
        );
        if let Some(context) = link {
            span.add_link_with_attributes(context.clone(), message_id(order.id));
        }
        let _entered = span.enter();
        match reconcile(&order.items, order.total_cents) {
            Ok(_) => Outcome::Processed,
            Err(error) => {
                let reason = error.to_string();
                span.record("otel.status_code", "ERROR");
                span.record("otel.status_description", reason.as_str());
                span.record("error.type", error.kind());
                let last_attempt =
                    u32::try_from(order.attempts).unwrap_or(u32::MAX) >= self.settings.max_attempts;
                tracing::warn!(
                    order.id = %order.id,
                    attempt = order.attempts,
                    error = %reason,
                    will_retry = !last_attempt,
                    "order did not reconcile"
                );
                if last_attempt {
                    Outcome::Failed { error: reason }
                } else {
                    Outcome::Retry { error: reason }
                }
            }
        }
    }

    /// Counts what was marked, and feeds the metrics.
    fn report(
        &self,
        claim: &Claim,
        outcomes: &[(Uuid, Outcome)],
        finished: &[Finished],
        unlinked: usize,
    ) -> BatchReport {
        let mut report = BatchReport {
            unlinked,
            ..BatchReport::default()
        };
        for order in finished {
            match order.status {
                OrderStatus::Processed => {
                    report.processed += 1;
                    if let Some(processed_at) = order.processed_at {
                        self.metrics.processed(order.created_at, processed_at);
                    }
                }
                OrderStatus::Failed => report.failed += 1,
                OrderStatus::Pending | OrderStatus::Processing => report.retrying += 1,
            }
        }
        self.metrics.failed(report.failed, false);
        self.metrics.failed(report.retrying, true);
        // Orders no longer held by this batch's claim when it was marked (the
        // claim expired and the order went back to the queue) were left alone.
        let lost = outcomes.len().saturating_sub(finished.len());
        if lost > 0 {
            tracing::warn!(
                lost,
                claim = %claim.token,
                "orders were no longer held by this batch's claim (it expired) and were left to the worker that holds them now"
            );
        }
        report
    }
}

/// The ids of the current `process-batch` span, stored with each order.
fn current_batch_span() -> Option<BatchSpan> {
    let context = tracing::Span::current().context();
    let span_context = context.span().span_context().clone();
    span_context.is_valid().then(|| BatchSpan {
        trace_id: span_context.trace_id().to_string(),
        span_id: span_context.span_id().to_string(),
    })
}

fn message_id(id: Uuid) -> Vec<KeyValue> {
    vec![KeyValue::new(MESSAGE_ID, id.to_string())]
}

fn list(ids: &[Uuid]) -> String {
    ids.iter()
        .map(Uuid::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

fn as_i64(count: usize) -> i64 {
    i64::try_from(count).unwrap_or(i64::MAX)
}
