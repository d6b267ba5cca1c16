//! The router and the state its handlers share.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::DefaultBodyLimit;
use axum::routing::get;
use axum::{Json, Router};
use sqlx::PgPool;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::error::ApiError;
use crate::http_telemetry::{self, HttpMetrics};
use crate::routes::health::Readiness;
use crate::routes::{health, orders};

/// Largest accepted request body; a full order of 100 items is well under 16 KiB.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// What every handler can reach.
#[derive(Debug, Clone)]
pub struct AppState {
    pub pool: PgPool,
    pub readiness: Readiness,
    pub metrics: Arc<HttpMetrics>,
}

impl AppState {
    /// State over a pool, `/readyz` answering within `readyz_timeout`, with
    /// instruments from the global meter provider.
    #[must_use]
    pub fn new(pool: PgPool, readyz_timeout: Duration) -> Self {
        Self {
            readiness: Readiness::beside(&pool, readyz_timeout),
            pool,
            metrics: Arc::new(HttpMetrics::new(&opentelemetry::global::meter(
                "orders-api",
            ))),
        }
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "orders-api",
        description = "Orders, each stored with the W3C trace context of the span that received it, which the batch that processes it links to. docs/http-api.md explains the rules and codes.",
        license(name = "Apache-2.0", identifier = "Apache-2.0"),
    ),
    tags(
        (name = "orders", description = "Create an order and read it back."),
        (name = "probes", description = "Liveness and readiness."),
    )
)]
struct ApiDoc;

/// Every operation with its OpenAPI description: the router and the document
/// come from this one list.
fn operations() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(orders::create_order))
        .routes(routes!(orders::get_order))
        .routes(routes!(health::healthz))
        .routes(routes!(health::readyz))
}

/// The API's OpenAPI 3.1 document, as `GET /openapi.json` serves it.
#[must_use]
pub fn openapi() -> utoipa::openapi::OpenApi {
    operations().into_openapi()
}

/// The whole HTTP API.
pub fn router(state: AppState) -> Router {
    let (operations, document) = operations().split_for_parts();
    operations
        .route("/openapi.json", get(|| async { Json(document) }))
        .fallback(|| async { ApiError::RouteNotFound })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            http_telemetry::trace_request,
        ))
        .with_state(state)
}
