//! OTLP/HTTP: `POST /v1/traces`, `/v1/metrics`, `/v1/logs`.
//!
//! Bodies must be binary protobuf (`application/x-protobuf`, also assumed
//! when no content type is given).  Other content types and compressed
//! bodies are rejected with 415.

use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::header::{CONTENT_ENCODING, CONTENT_TYPE};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use bytes::Bytes;
use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use prost::Message;
use tokio::net::TcpListener;

use crate::store::Store;
use crate::{MAX_MESSAGE_SIZE, Signal, Transport};

const PROTOBUF: &str = "application/x-protobuf";

/// Serves the OTLP/HTTP routes on `listener` until the task is aborted.
pub(crate) async fn serve(listener: TcpListener, store: Arc<Store>) {
    let app = Router::new()
        .route(Signal::Traces.http_path(), post(traces))
        .route(Signal::Metrics.http_path(), post(metrics))
        .route(Signal::Logs.http_path(), post(logs))
        .layer(DefaultBodyLimit::max(MAX_MESSAGE_SIZE))
        .with_state(store);
    if let Err(error) = axum::serve(listener, app).await {
        eprintln!("otlp-receiver: HTTP server stopped: {error}");
    }
}

async fn traces(State(store): State<Arc<Store>>, headers: HeaderMap, body: Bytes) -> Response {
    match decode::<ExportTraceServiceRequest>(&headers, body) {
        Ok(request) => {
            store.record_traces(request, Transport::Http);
            respond(&ExportTraceServiceResponse::default())
        }
        Err(rejection) => rejection.into_response(),
    }
}

async fn metrics(State(store): State<Arc<Store>>, headers: HeaderMap, body: Bytes) -> Response {
    match decode::<ExportMetricsServiceRequest>(&headers, body) {
        Ok(request) => {
            store.record_metrics(request, Transport::Http);
            respond(&ExportMetricsServiceResponse::default())
        }
        Err(rejection) => rejection.into_response(),
    }
}

async fn logs(State(store): State<Arc<Store>>, headers: HeaderMap, body: Bytes) -> Response {
    match decode::<ExportLogsServiceRequest>(&headers, body) {
        Ok(request) => {
            store.record_logs(request, Transport::Http);
            respond(&ExportLogsServiceResponse::default())
        }
        Err(rejection) => rejection.into_response(),
    }
}

/// Checks the headers and decodes the protobuf body, or returns the error
/// response: 415 for unsupported encodings or content types, 400 for bad
/// bodies.
fn decode<Req: Message + Default>(
    headers: &HeaderMap,
    body: Bytes,
) -> Result<Req, (StatusCode, String)> {
    if let Some(encoding) = headers.get(CONTENT_ENCODING) {
        let identity = encoding
            .to_str()
            .is_ok_and(|e| e.trim().eq_ignore_ascii_case("identity"));
        if !identity {
            return Err((
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                format!("otlp-receiver does not support content-encoding {encoding:?}"),
            ));
        }
    }

    if let Some(content_type) = headers.get(CONTENT_TYPE) {
        let protobuf = content_type.to_str().is_ok_and(|value| {
            let essence = value.split(';').next().unwrap_or_default();
            essence.trim().eq_ignore_ascii_case(PROTOBUF)
        });
        if !protobuf {
            return Err((
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                format!("unsupported content-type {content_type:?}, expected {PROTOBUF}"),
            ));
        }
    }

    Req::decode(body).map_err(|error| {
        (
            StatusCode::BAD_REQUEST,
            format!("invalid OTLP protobuf body: {error}"),
        )
    })
}

/// 200 with an encoded (empty) export response.
fn respond<Resp: Message>(response: &Resp) -> Response {
    (
        [(CONTENT_TYPE, HeaderValue::from_static(PROTOBUF))],
        response.encode_to_vec(),
    )
        .into_response()
}
