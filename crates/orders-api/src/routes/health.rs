//! Liveness and readiness probes. Readiness asks the database over a
//! connection of its own, within a time limit: when requests hold every
//! connection of the main pool, a probe waiting behind them would fail and
//! take the busiest pods out of service, moving their load onto the rest.

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use orders::db::PoolSettings;
use serde::Serialize;
use sqlx::PgPool;
use utoipa::ToSchema;

use crate::app::AppState;
use crate::error::{ApiError, ErrorBody};

/// What `/readyz` asks the database with.
#[derive(Debug, Clone)]
pub struct Readiness {
    /// One connection, to the database `pool` reaches, that requests never take.
    pool: PgPool,
    timeout: Duration,
}

impl Readiness {
    /// Readiness of the database `pool` connects to, answered within `timeout`.
    #[must_use]
    pub fn beside(pool: &PgPool, timeout: Duration) -> Self {
        let settings = PoolSettings {
            max_connections: 1,
            acquire_timeout: timeout,
        };
        let options = pool.connect_options().as_ref().clone();
        Self {
            pool: orders::db::connect_lazy_with(options, settings),
            timeout,
        }
    }
}

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

/// The database answers within `READYZ_TIMEOUT_MS`; 503 otherwise, so a load
/// balancer stops sending orders that could not be stored.
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
    let readiness = &state.readiness;
    tokio::time::timeout(readiness.timeout, orders::store::ping(&readiness.pool))
        .await
        .map_err(|_| ApiError::DatabaseTimeout(readiness.timeout))??;
    Ok(Json(Probe {
        status: ProbeStatus::Ready,
    }))
}
