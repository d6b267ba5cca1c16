//! `POST /orders` and `GET /orders/{id}`.
//!
//! Creating an order is traced as the product's `receive-order` span with two
//! children, `validate` and `persist-order`; the W3C context of `receive-order`
//! is stored with the order so that the batch can link back to it.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::http::header::LOCATION;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use orders::order::BatchSpan;
use orders::{LineItem, NewOrder, Order, OrderRequest, OrderStatus, TraceContext, store};
use serde::Serialize;
use tracing::Instrument;
use tracing::field::Empty;
use uuid::Uuid;

use crate::app::AppState;
use crate::error::ApiError;
use crate::json_body::JsonBody;

/// An order as the API shows it.
#[derive(Debug, Serialize)]
pub struct OrderResponse {
    pub id: Uuid,
    pub status: OrderStatus,
    pub customer_id: String,
    pub items: Vec<LineItem>,
    pub total_cents: i64,
    pub created_at: DateTime<Utc>,
    /// Trace id of the request that created the order: paste it into SigNoz.
    pub trace_id: Option<String>,
    /// W3C context of the order's `receive-order` span, which batches link to.
    pub traceparent: Option<String>,
    pub tracestate: Option<String>,
    pub attempts: i32,
    pub last_error: Option<String>,
    pub processed_at: Option<DateTime<Utc>>,
    /// The `process-batch` span that processed the order (for a failed order,
    /// the one that last tried it).
    pub process_batch: Option<BatchSpan>,
}

impl From<Order> for OrderResponse {
    fn from(order: Order) -> Self {
        let trace_id = order
            .source_trace
            .as_ref()
            .and_then(TraceContext::span_context)
            .map(|context| context.trace_id().to_string());
        let (traceparent, tracestate) = order.source_trace.map_or((None, None), |trace| {
            (Some(trace.traceparent), trace.tracestate)
        });
        Self {
            id: order.id,
            status: order.status,
            customer_id: order.customer_id,
            items: order.items,
            total_cents: order.total_cents,
            created_at: order.created_at,
            trace_id,
            traceparent,
            tracestate,
            attempts: order.attempts,
            last_error: order.last_error,
            processed_at: order.processed_at,
            process_batch: order.batch_span,
        }
    }
}

/// `POST /orders`: `201 Created` with the stored order and its `Location`.
pub async fn create_order(
    State(state): State<AppState>,
    body: Result<JsonBody<OrderRequest>, ApiError>,
) -> Result<Response, ApiError> {
    let outcome = match body {
        Ok(JsonBody(request)) => receive_order(&state, request).await,
        Err(rejection) => Err(rejection),
    };
    state.metrics.order_received(&outcome);
    let order = outcome?;
    let location = format!("/orders/{}", order.id);
    Ok((
        StatusCode::CREATED,
        [(LOCATION, location)],
        Json(OrderResponse::from(order)),
    )
        .into_response())
}

/// The `receive-order` step: validate, then persist with this span's context.
async fn receive_order(state: &AppState, request: OrderRequest) -> Result<Order, ApiError> {
    let span = tracing::info_span!(
        "receive-order",
        order.id = Empty,
        customer.id = Empty,
        order.item_count = Empty,
        order.total_cents = Empty,
        otel.status_code = Empty,
        otel.status_description = Empty,
    );
    let result = validate_and_persist(state, request)
        .instrument(span.clone())
        .await;
    if let Err(error) = &result {
        span.record("otel.status_code", "ERROR");
        span.record("otel.status_description", error.to_string());
    }
    result
}

/// The body of `receive-order`, run inside that span.
async fn validate_and_persist(state: &AppState, request: OrderRequest) -> Result<Order, ApiError> {
    let order = validate(request)?;
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
    let source_trace = TraceContext::of_current_span();
    let stored = store::insert_order(&state.pool, id, &order, source_trace.as_ref()).await?;
    tracing::info!(order.id = %id, total_cents = stored.total_cents, "order received");
    Ok(stored)
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

/// `GET /orders/{id}`: the order, its source trace context and, once processed,
/// the `process-batch` span that processed it.
pub async fn get_order(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<OrderResponse>, ApiError> {
    let id = Uuid::parse_str(&id).map_err(|_| ApiError::InvalidOrderId(id))?;
    let order = store::find_order(&state.pool, id)
        .await?
        .ok_or(ApiError::OrderNotFound(id))?;
    Ok(Json(order.into()))
}
