//! The `receive-order` step: the span a batch will link to. It validates the
//! order, then stores it with this span's W3C context: the producer side of
//! the span-links pattern (`span_links`, steps 1 and 2).

use orders::store::{self, Inserted};
use orders::{NewOrder, Order, OrderRequest};
use span_links::StoredContext;
use tracing::Instrument;
use tracing::field::Empty;
use uuid::Uuid;

use crate::app::AppState;
use crate::error::ApiError;

/// The `receive-order` step: validate, then persist with this span's context;
/// a retry with the `idempotency_key` of a stored order gets that order.
pub async fn receive_order(
    state: &AppState,
    request: OrderRequest,
    idempotency_key: Option<String>,
) -> Result<Order, ApiError> {
    let span = tracing::info_span!(
        "receive-order",
        order.id = Empty,
        customer.id = Empty,
        order.item_count = Empty,
        order.total_cents = Empty,
        otel.status_code = Empty,
        otel.status_description = Empty,
    );
    let result = validate_and_persist(state, request, idempotency_key)
        .instrument(span.clone())
        .await;
    if let Err(error) = &result {
        span.record("otel.status_code", "ERROR");
        span.record("otel.status_description", error.to_string());
    }
    result
}

/// The body of `receive-order`, run inside that span.
async fn validate_and_persist(
    state: &AppState,
    request: OrderRequest,
    idempotency_key: Option<String>,
) -> Result<Order, ApiError> {
    let order = validate(request)?.with_idempotency_key(idempotency_key);
    let id = Uuid::now_v7();
    let span = tracing::Span::current();
    span.record("order.id", tracing::field::display(id));
    span.record("customer.id", order.customer_id());
    // As i64: tracing-opentelemetry records unsigned integers as strings.
    span.record(
        "order.item_count",
        i64::try_from(order.items().len()).unwrap_or(i64::MAX),
    );
    span.record("order.total_cents", order.total_cents());
    // The batch links to this span: store its context, not the request's.
    let source_trace = StoredContext::of_current_span();
    let stored = store::insert_order(&state.pool, id, &order, source_trace.as_ref()).await?;
    match stored {
        Inserted::New(stored) => {
            // DEBUG: `receive-order` says the same, and a line per order costs
            // CPU (docs/benchmark.md); RUST_LOG=info,orders_api=debug shows it.
            tracing::debug!(order.id = %id, total_cents = stored.total_cents, "order received");
            Ok(stored)
        }
        // The order first stored keeps its context: the batch links to that one.
        Inserted::Replayed(first) => {
            span.record("order.id", tracing::field::display(first.id));
            tracing::info!(order.id = %first.id, "order retried with its idempotency key");
            Ok(first)
        }
        Inserted::KeyReused => Err(ApiError::IdempotencyKeyReused),
        Inserted::KeyInFlight => Err(ApiError::IdempotencyKeyInFlight),
    }
}

/// The `validate` step, in a span of its own.
fn validate(request: OrderRequest) -> Result<NewOrder, ApiError> {
    let span = tracing::info_span!(
        "validate",
        otel.status_code = Empty,
        otel.status_description = Empty,
    );
    let _entered = span.enter();
    request.validate().map_err(|errors| {
        span.record("otel.status_code", "ERROR");
        span.record("otel.status_description", errors.to_string());
        ApiError::Validation(errors)
    })
}
