//! Liveness and readiness probes.

use axum::Json;
use axum::extract::State;
use serde::Serialize;
use utoipa::ToSchema;

use crate::app::AppState;
use crate::error::{ApiError, ErrorBody};

/// A probe's answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct Probe {
    status: ProbeStatus,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
enum ProbeStatus {
    Ok,
    Ready,
}

/// The process is up and serving.
#[utoipa::path(
    get,
    path = "/healthz",
    operation_id = "healthz",
    tag = "probes",
    responses((status = 200, description = "`{\"status\": \"ok\"}`: the process is up.", body = Probe))
)]
pub async fn healthz() -> Json<Probe> {
    Json(Probe {
        status: ProbeStatus::Ok,
    })
}

/// The database answers; 503 otherwise, so a load balancer stops sending orders
/// that could not be stored.
#[utoipa::path(
    get,
    path = "/readyz",
    operation_id = "readyz",
    tag = "probes",
    responses(
        (status = 200, description = "`{\"status\": \"ready\"}`: the database answers.", body = Probe),
        (status = 500, description = "`internal_error`.", body = ErrorBody),
        (status = 503, description = "`database_unavailable`.", body = ErrorBody),
    )
)]
pub async fn readyz(State(state): State<AppState>) -> Result<Json<Probe>, ApiError> {
    orders::store::ping(&state.pool).await?;
    Ok(Json(Probe {
        status: ProbeStatus::Ready,
    }))
}
