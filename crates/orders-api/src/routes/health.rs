//! Liveness and readiness probes.

use axum::Json;
use axum::extract::State;
use serde_json::{Value, json};

use crate::app::AppState;
use crate::error::ApiError;

/// The process is up and serving.
pub async fn healthz() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

/// The database answers; 503 otherwise, so a load balancer stops sending orders
/// that could not be stored.
pub async fn readyz(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    orders::store::ping(&state.pool).await?;
    Ok(Json(json!({ "status": "ready" })))
}
