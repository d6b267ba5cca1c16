//! The `reconcile` step of one order: a child of its batch's span, with its
//! own link to the order's request, failed with the reason when the order
//! does not reconcile.

use opentelemetry::Context;
use opentelemetry::trace::Link;
use orders::claims::{ClaimedOrder, Outcome};
use orders::reconcile::reconcile;
use span_links::start_with_links;
use tracing::field::Empty;

use crate::worker::Worker;

impl Worker {
    /// Reconciles `order` under `batch`, linked to the order's request by `link`.
    pub(crate) fn reconcile_order(
        &self,
        order: &ClaimedOrder,
        batch: &Context,
        link: Option<&Link>,
    ) -> Outcome {
        let span = tracing::info_span!(
            "reconcile",
            order.id = %order.id,
            messaging.message.id = %order.id,
            order.attempt = i64::from(order.attempts),
            otel.status_code = Empty,
            otel.status_description = Empty,
            error.type = Empty,
        );
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
