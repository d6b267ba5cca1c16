//! `POST /orders` and `GET /orders/{id}`, and the order document both answer.
//!
//! Creating an order is the `receive-order` step (`crate::receive_order`).

use axum::Json;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::header::LOCATION;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use orders::order::BatchSpan;
use orders::{LineItem, Order, OrderRequest, OrderStatus, store};
use serde::Serialize;
use span_links::StoredContext;
use uuid::Uuid;

use crate::app::AppState;
use crate::error::ApiError;
use crate::json_body::JsonBody;
use crate::receive_order::receive_order;

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
    /// the one that last tried it), and whether it was sampled.
    pub process_batch: Option<BatchSpan>,
}

impl From<Order> for OrderResponse {
    fn from(order: Order) -> Self {
        let trace_id = order
            .source_trace
            .as_ref()
            .and_then(StoredContext::span_context)
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
/// With an `Idempotency-Key`, a retry of the same order gets the order first
/// created, whatever happened to the first answer.
pub async fn create_order(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<JsonBody<OrderRequest>, ApiError>,
) -> Result<Response, ApiError> {
    let outcome = match (idempotency_key(&headers), body) {
        (Ok(key), Ok(JsonBody(request))) => receive_order(&state, request, key).await,
        (Err(rejection), _) | (_, Err(rejection)) => Err(rejection),
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

/// The `Idempotency-Key` header: 1 to 255 visible ASCII characters, as a
/// structured-field string (`"…"`, as the IETF draft writes it) or bare, as
/// many clients send it.
fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(value) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    let value = value
        .to_str()
        .map_err(|_| ApiError::InvalidIdempotencyKey)?
        .trim();
    let key = value
        .strip_prefix('"')
        .and_then(|quoted| quoted.strip_suffix('"'))
        .unwrap_or(value);
    let valid = (1..=255).contains(&key.len()) && key.bytes().all(|byte| byte.is_ascii_graphic());
    if valid {
        Ok(Some(key.to_owned()))
    } else {
        Err(ApiError::InvalidIdempotencyKey)
    }
}

/// `GET /orders/{id}`: the order, its source trace context and, once processed,
/// the `process-batch` span that processed it.
pub async fn get_order(
    State(state): State<AppState>,
    id: Result<Path<String>, PathRejection>,
) -> Result<Json<OrderResponse>, ApiError> {
    let Path(id) = id.map_err(|rejection| ApiError::InvalidPath(rejection.body_text()))?;
    let id = Uuid::parse_str(&id).map_err(|_| ApiError::InvalidOrderId(id))?;
    let order = store::find_order(&state.pool, id)
        .await?
        .ok_or(ApiError::OrderNotFound(id))?;
    Ok(Json(order.into()))
}
