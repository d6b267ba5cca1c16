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
use utoipa::ToSchema;
use uuid::Uuid;

use crate::app::AppState;
use crate::error::{ApiError, ErrorBody};
use crate::json_body::JsonBody;
use crate::receive_order::receive_order;

/// An order as the API shows it.
#[derive(Debug, Serialize, ToSchema)]
pub struct OrderResponse {
    pub id: Uuid,
    pub status: OrderStatus,
    pub customer_id: String,
    pub items: Vec<LineItem>,
    pub total_cents: i64,
    pub created_at: DateTime<Utc>,
    /// Trace id of the request that created the order: paste it into SigNoz.
    #[schema(required = true)]
    pub trace_id: Option<String>,
    /// W3C context of the order's `receive-order` span, which batches link to.
    #[schema(required = true)]
    pub traceparent: Option<String>,
    #[schema(required = true)]
    pub tracestate: Option<String>,
    pub attempts: i32,
    #[schema(required = true)]
    pub last_error: Option<String>,
    #[schema(required = true)]
    pub processed_at: Option<DateTime<Utc>>,
    /// The `process-batch` span that processed the order (for a failed order,
    /// the one that last tried it), and whether it was sampled.
    #[schema(required = true)]
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
#[utoipa::path(
    post,
    path = "/orders",
    operation_id = "createOrder",
    tag = "orders",
    request_body = OrderRequest,
    params(
        ("Idempotency-Key" = Option<String>, Header, nullable = false,
            // What idempotency_key accepts: 1 to 255 visible ASCII characters,
            // bare or quoted; a bare key cannot be an empty quoted one (`""`).
            pattern = r#"^(?:"[!-~]{1,255}"|(?!"[!-~]*"$)[!-~]{1,255})$"#,
            description = "Retry safely: a retry with the same key and order gets the order first created. 1 to 255 visible ASCII characters, bare or quoted."),
        ("traceparent" = Option<String>, Header, nullable = false,
            description = "W3C Trace Context: the request continues this trace; an invalid one is ignored and a new trace starts."),
        ("tracestate" = Option<String>, Header, nullable = false,
            description = "W3C Trace Context, with `traceparent`; kept to its first 32 members and 512 characters."),
    ),
    responses(
        (status = 201, description = "The order, stored; retried with its `Idempotency-Key`, the order first created.",
            body = OrderResponse,
            headers(("Location" = String, description = "The order's URL, `/orders/{id}`.")),
            links(("GetOrderById" = (operation_id = "getOrder", parameters(("id" = "$response.body#/id")),
                description = "The order just created.")))),
        (status = 400, description = "`malformed_json`, `invalid_idempotency_key` or `unreadable_body`.", body = ErrorBody),
        (status = 408, description = "`request_timeout`: the body did not arrive in time.", body = ErrorBody),
        (status = 409, description = "`idempotency_key_in_flight`: retry.", body = ErrorBody),
        (status = 413, description = "`payload_too_large`: over 64 KiB.", body = ErrorBody),
        (status = 415, description = "`unsupported_media_type`: `Content-Type` missing or not JSON.", body = ErrorBody),
        (status = 422, description = "`invalid_body`, `validation_failed` or `idempotency_key_reused`.", body = ErrorBody),
        (status = 500, description = "`internal_error`: never for what a client sends.", body = ErrorBody),
        (status = 503, description = "`database_unavailable`: retry, with the same `Idempotency-Key`.", body = ErrorBody),
    )
)]
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
#[utoipa::path(
    get,
    path = "/orders/{id}",
    operation_id = "getOrder",
    tag = "orders",
    params(("id" = Uuid, Path, description = "The order's `id`, as `POST /orders` answered it.")),
    responses(
        (status = 200, description = "The order.", body = OrderResponse),
        (status = 400, description = "`invalid_order_id` or `invalid_path`.", body = ErrorBody),
        (status = 404, description = "`order_not_found`.", body = ErrorBody),
        (status = 500, description = "`internal_error`.", body = ErrorBody),
        (status = 503, description = "`database_unavailable`: retry.", body = ErrorBody),
    )
)]
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
