//! One batch: the `process-batch` span, created with a link to the
//! `receive-order` span of every order in it. The pattern itself is the
//! `span_links` crate; this is the batch side of it: turn the stored contexts
//! into links, start the span with them, reconcile and mark the orders in it.

use std::time::Instant;

use opentelemetry::Context;
use opentelemetry::trace::TraceContextExt;
use orders::StoreError;
use orders::claims::{self, Claim, Outcome};
use orders::order::BatchSpan;
use span_links::{LinkSelection, Links, start_with_links};
use tracing::field::Empty;
use tracing::{Instrument, Span};
use tracing_opentelemetry::OpenTelemetrySpanExt;
use uuid::Uuid;

use crate::report::{BatchReport, as_i64};
use crate::worker::Worker;

impl Worker {
    /// Reconciles the claimed orders under one `process-batch` span and marks
    /// them. `claimed` is when the claim was made, for the duration metric.
    pub(crate) async fn process_batch(
        &self,
        claim: &Claim,
        claimed: Instant,
    ) -> Result<BatchReport, StoreError> {
        // One link per order, to the receive-order span that stored its context.
        let orders = claim.orders.iter();
        let links = Links::to(orders.map(|order| (order.id, order.source_trace.as_ref())));
        let unlinked: Vec<Uuid> = links.unlinked().copied().collect();
        let given = links.selected(self.settings.link_selection);
        let unsampled = matches!(self.settings.link_selection, LinkSelection::Sampled)
            .then(|| links.all().count() - given.len());
        let span = process_batch_span(claim.orders.len(), unlinked.len(), unsampled);
        // The root of a new trace, with its links from its creation on.
        start_with_links(&span, Context::new(), given);

        let batch = span.context();
        let result = self
            .reconcile_and_mark(claim, &links, &unlinked, &batch)
            .instrument(span.clone())
            .await;
        self.record(&span, claim.orders.len(), claimed, &result);
        result
    }

    /// Inside `process-batch`: reconcile each order, then mark them all with
    /// the batch span, the way back from an order to its batch.
    async fn reconcile_and_mark(
        &self,
        claim: &Claim,
        links: &Links<Uuid>,
        unlinked: &[Uuid],
        batch: &Context,
    ) -> Result<BatchReport, StoreError> {
        tracing::info!(batch.size = claim.orders.len(), claim = %claim.token, "processing a batch");
        if !unlinked.is_empty() {
            let orders: Vec<String> = unlinked.iter().map(Uuid::to_string).collect();
            tracing::warn!(
                count = unlinked.len(),
                orders = orders.join(","),
                "orders without a valid stored trace context: processed, but the batch cannot link to their requests"
            );
        }
        let outcomes: Vec<(Uuid, Outcome)> = claim
            .orders
            .iter()
            .zip(links.by_item())
            .map(|(order, (_, link))| (order.id, self.reconcile_order(order, batch, link)))
            .collect();
        let span_context = batch.span().span_context().clone();
        let batch_span = span_context.is_valid().then(|| BatchSpan {
            trace_id: span_context.trace_id().to_string(),
            span_id: span_context.span_id().to_string(),
            sampled: Some(span_context.is_sampled()),
        });
        let finished =
            claims::finish(&self.pool, &claim.token, batch_span.as_ref(), &outcomes).await?;
        Ok(self.report(claim, &outcomes, &finished, unlinked.len()))
    }
}

/// The `process-batch` span of `size` orders, `unlinked` of them without a
/// link and, when only links to sampled requests are given, `unsampled` of
/// them linked to none.
fn process_batch_span(size: usize, unlinked: usize, unsampled: Option<usize>) -> Span {
    let size = as_i64(size);
    tracing::info_span!(
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
        batch.unlinked_count = as_i64(unlinked),
        batch.unsampled_count = unsampled.map(as_i64),
        batch.processed_count = Empty,
        batch.failed_count = Empty,
        batch.retrying_count = Empty,
        error.type = Empty,
    )
}
