//! One batch, traced as one `process-batch` span that links to the
//! `receive-order` span of every order in it. The pattern itself is the
//! `span_links` crate; this is its batch side, whole, so that it reads top to
//! bottom here: turn the stored contexts into links, name the orders that have
//! none, create the span with its links, reconcile each order in a child span
//! with its own link, mark the orders with the batch span, and fill the span's
//! counts. What the batch did is counted in `report`.

use std::collections::HashMap;
use std::time::Instant;

use opentelemetry::Context;
use opentelemetry::trace::{Link, TraceContextExt};
use orders::StoreError;
use orders::claims::{self, Claim, ClaimedOrder, Outcome};
use orders::order::BatchSpan;
use orders::reconcile::reconcile;
use span_links::{LinkSelection, Links, start_with_links};
use sqlx::PgPool;
use tracing::field::Empty;
use tracing::{Instrument, Span};
use tracing_opentelemetry::OpenTelemetrySpanExt;
use uuid::Uuid;

use crate::config::BatchSettings;
use crate::metrics::BatchMetrics;
use crate::report::{self, BatchReport, as_i64};

/// Processes a claimed batch with what its worker holds: the database, the
/// settings and the metrics.
pub(crate) struct BatchProcessor<'a> {
    pub(crate) pool: &'a PgPool,
    pub(crate) settings: &'a BatchSettings,
    pub(crate) metrics: &'a BatchMetrics,
}

impl BatchProcessor<'_> {
    /// Reconciles the claimed orders under one `process-batch` span and marks
    /// them. `claimed` is when the claim was made, for the duration metric.
    pub(crate) async fn process(
        &self,
        claim: &Claim,
        claimed: Instant,
    ) -> Result<BatchReport, StoreError> {
        // One link per order, to the receive-order span that stored its context.
        let orders = claim.orders.iter();
        let links = Links::to(orders.map(|order| (order.id, order.source_trace.as_ref())));
        // Fewer links than orders: an order whose stored context is missing
        // or invalid has none (`unlinked`), and under the `links` sampler only
        // links to sampled requests are given, as a link to a request never
        // recorded would lead nowhere (`unsampled`).
        let given = links.selected(self.settings.link_selection);
        let unsampled = matches!(self.settings.link_selection, LinkSelection::Sampled)
            .then(|| links.all().count() - given.len());
        let span = process_batch_span(claim.orders.len(), links.unlinked().count(), unsampled);
        // The root of a new trace, with its links from its creation on.
        start_with_links(&span, Context::new(), given);

        let batch = span.context();
        let result = self
            .reconcile_and_mark(claim, &links, &batch)
            .instrument(span.clone())
            .await;
        record_outcome(&span, &result);
        if let Ok(report) = &result {
            self.metrics.batch(claim.orders.len(), claimed.elapsed());
            span.in_scope(|| report.log());
        }
        result
    }

    /// Inside `process-batch`: reconcile each order, then mark them all with
    /// the batch span, the way back from an order to its batch.
    async fn reconcile_and_mark(
        &self,
        claim: &Claim,
        links: &Links<Uuid>,
        batch: &Context,
    ) -> Result<BatchReport, StoreError> {
        tracing::info!(batch.size = claim.orders.len(), claim = %claim.token, "processing a batch");
        let unlinked: Vec<Uuid> = links.unlinked().copied().collect();
        warn_unlinked(&unlinked);
        let link_of: HashMap<&Uuid, &Link> = links
            .by_item()
            .filter_map(|(id, link)| Some((id, link?)))
            .collect();
        let outcomes: Vec<(Uuid, Outcome)> = claim
            .orders
            .iter()
            .map(|order| {
                let link = link_of.get(&order.id).copied();
                (order.id, self.reconcile_order(order, batch, link))
            })
            .collect();
        let batch_span = batch_span_of(batch);
        let finished =
            claims::finish(self.pool, &claim.token, batch_span.as_ref(), &outcomes).await?;
        Ok(report::count_marked(
            self.metrics,
            claim,
            &finished,
            unlinked.len(),
        ))
    }

    /// The `reconcile` step of `order`: a child of `batch` with its own link
    /// to the order's request, failed with the reason when the order does not
    /// reconcile.
    fn reconcile_order(
        &self,
        order: &ClaimedOrder,
        batch: &Context,
        link: Option<&Link>,
    ) -> Outcome {
        let span = reconcile_span(order);
        start_with_links(&span, batch.clone(), link);
        let _entered = span.enter();
        let Err(error) = reconcile(&order.items, order.total_cents) else {
            return Outcome::Processed;
        };
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

/// Fills what the batch did into its span's fields: the counts, or the
/// error that failed it.
fn record_outcome(span: &Span, result: &Result<BatchReport, StoreError>) {
    match result {
        Ok(report) => {
            span.record("batch.processed_count", as_i64(report.processed));
            span.record("batch.failed_count", as_i64(report.failed));
            span.record("batch.retrying_count", as_i64(report.retrying));
        }
        Err(error) => {
            span.record("otel.status_code", "ERROR");
            span.record("otel.status_description", error.to_string());
            span.record("error.type", "store");
        }
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

/// Names the orders the batch cannot link to their requests, so that their
/// rows can be looked at; they are processed all the same.
fn warn_unlinked(unlinked: &[Uuid]) {
    if unlinked.is_empty() {
        return;
    }
    let orders: Vec<String> = unlinked.iter().map(Uuid::to_string).collect();
    tracing::warn!(
        count = unlinked.len(),
        orders = orders.join(","),
        "orders without a valid stored trace context: processed, but the batch cannot link to their requests"
    );
}

/// The `reconcile` span of `order`, its status and error filled in when it
/// does not reconcile.
fn reconcile_span(order: &ClaimedOrder) -> Span {
    tracing::info_span!(
        "reconcile",
        order.id = %order.id,
        messaging.message.id = %order.id,
        order.attempt = i64::from(order.attempts),
        otel.status_code = Empty,
        otel.status_description = Empty,
        error.type = Empty,
    )
}

/// The batch span as each order stores it; none when the batch is not traced.
fn batch_span_of(batch: &Context) -> Option<BatchSpan> {
    let span_context = batch.span().span_context().clone();
    span_context.is_valid().then(|| BatchSpan {
        trace_id: span_context.trace_id().to_string(),
        span_id: span_context.span_id().to_string(),
        sampled: Some(span_context.is_sampled()),
    })
}
