//! The HTTP SERVER span and the HTTP metrics around every request, following the
//! OpenTelemetry HTTP semantic conventions.
//!
//! A valid incoming `traceparent` is continued, with its `tracestate` bounded;
//! an invalid one is ignored and the request starts a new trace.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Instant;

use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::http::{HeaderMap, Version};
use axum::middleware::Next;
use axum::response::Response;
use opentelemetry::KeyValue;
use opentelemetry::metrics::{Counter, Histogram, Meter};
use span_links::is_valid_traceparent;
use tracing::Instrument;
use tracing::field::Empty;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::app::AppState;
use crate::error::ApiError;

/// Bucket boundaries (seconds) the HTTP semantic conventions recommend for
/// `http.server.request.duration`.
const DURATION_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
];

/// The API's instruments.
#[derive(Debug)]
pub struct HttpMetrics {
    request_duration: Histogram<f64>,
    orders_received: Counter<u64>,
}

impl HttpMetrics {
    #[must_use]
    pub fn new(meter: &Meter) -> Self {
        Self {
            request_duration: meter
                .f64_histogram("http.server.request.duration")
                .with_unit("s")
                .with_description("Duration of HTTP server requests.")
                .with_boundaries(DURATION_BUCKETS.to_vec())
                .build(),
            orders_received: meter
                .u64_counter("orders.received")
                .with_unit("{order}")
                .with_description(
                    "Orders submitted, by outcome: accepted, rejected (bad input) or failed.",
                )
                .build(),
        }
    }

    /// Counts one order submission by its outcome.
    pub fn order_received<T>(&self, outcome: &Result<T, ApiError>) {
        let outcome = match outcome {
            Ok(_) => "accepted",
            Err(error) if error.status().is_client_error() => "rejected",
            Err(_) => "failed",
        };
        self.orders_received
            .add(1, &[KeyValue::new("outcome", outcome)]);
    }
}

/// Middleware: runs the request inside a SERVER span and records its duration.
pub async fn trace_request(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let started = Instant::now();
    let method = request.method().as_str().to_owned();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|path| path.as_str().to_owned());
    let protocol_version = protocol_version(request.version());
    let span_name = match &route {
        Some(route) => format!("{method} {route}"),
        None => method.clone(),
    };
    let span = tracing::info_span!(
        "http-request",
        otel.name = span_name,
        otel.kind = "server",
        otel.status_code = Empty,
        http.request.method = method.as_str(),
        http.route = route.as_deref(),
        http.response.status_code = Empty,
        url.path = request.uri().path(),
        url.query = request.uri().query(),
        url.scheme = "http",
        network.protocol.version = protocol_version,
        client.address = request
            .extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .map(|info| info.0.ip().to_string()),
        user_agent.original = header(request.headers(), "user-agent"),
        error.type = Empty,
    );
    let parent = incoming_context(request.headers());
    // Only fails if the span already started, which it cannot have yet.
    if let Err(error) = span.set_parent(parent) {
        tracing::debug!(%error, "incoming trace context not applied");
    }

    let response = next.run(request).instrument(span.clone()).await;

    let status = response.status();
    // As i64: tracing-opentelemetry records unsigned integers as strings.
    span.record("http.response.status_code", i64::from(status.as_u16()));
    // Server spans are errors for 5xx only: 4xx are the client's mistakes.
    if status.is_server_error() {
        span.record("otel.status_code", "ERROR");
        span.record("error.type", status.as_str());
    }
    let mut attributes = vec![
        KeyValue::new("http.request.method", method),
        KeyValue::new("http.response.status_code", i64::from(status.as_u16())),
        KeyValue::new("url.scheme", "http"),
        KeyValue::new("network.protocol.version", protocol_version),
    ];
    if let Some(route) = route {
        attributes.push(KeyValue::new("http.route", route));
    }
    if status.is_server_error() {
        attributes.push(KeyValue::new("error.type", status.as_str().to_owned()));
    }
    state
        .metrics
        .request_duration
        .record(started.elapsed().as_secs_f64(), &attributes);
    response
}

fn protocol_version(version: Version) -> &'static str {
    match version {
        Version::HTTP_09 => "0.9",
        Version::HTTP_10 => "1.0",
        Version::HTTP_2 => "2",
        Version::HTTP_3 => "3",
        _ => "1.1",
    }
}

fn header(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned)
}

/// The caller's trace context. The SDK's propagator is lenient: only a strictly
/// valid `traceparent` is continued, and its `tracestate` is bounded first, or
/// a client's 16 KB would ride on every span and on the stored order.
fn incoming_context(headers: &HeaderMap) -> opentelemetry::Context {
    let Some(traceparent) = header(headers, "traceparent") else {
        return opentelemetry::Context::new();
    };
    if !is_valid_traceparent(&traceparent) {
        tracing::debug!("ignoring an invalid traceparent header");
        return opentelemetry::Context::new();
    }
    let mut carrier = HashMap::from([("traceparent".to_owned(), traceparent)]);
    if let Some(tracestate) =
        header(headers, "tracestate").and_then(|state| bounded_tracestate(&state))
    {
        carrier.insert("tracestate".to_owned(), tracestate);
    }
    opentelemetry::global::get_text_map_propagator(|propagator| propagator.extract(&carrier))
}

/// Most characters of a `tracestate` worth keeping: W3C Trace Context asks
/// vendors to propagate at least 512, and allows dropping members past that.
const TRACESTATE_MAX_CHARS: usize = 512;

/// A `tracestate` header as W3C Trace Context lets a receiver bound it: its
/// first 32 list-members; past [`TRACESTATE_MAX_CHARS`], members longer than
/// 128 characters dropped from the end first, then any from the end until it
/// fits. `None` when nothing is left. Unbounded, the SDK keeps up to 32
/// members of 512 characters each, 16 KB on every span and stored order.
fn bounded_tracestate(header: &str) -> Option<String> {
    let mut members: Vec<&str> = header
        .split(',')
        .map(str::trim)
        .filter(|member| !member.is_empty())
        .take(32)
        .collect();
    let length = |members: &[&str]| members.iter().map(|member| member.len() + 1).sum::<usize>();
    while length(&members) > TRACESTATE_MAX_CHARS + 1 {
        let longest_last = members.iter().rposition(|member| member.len() > 128);
        members.remove(longest_last.unwrap_or(members.len() - 1));
    }
    (!members.is_empty()).then(|| members.join(","))
}

#[cfg(test)]
mod tests {
    use super::bounded_tracestate;

    #[test]
    fn a_tracestate_header_is_bounded_as_w3c_trace_context_allows() {
        let member = |key: &str, length: usize| format!("{key}={}", "v".repeat(length));
        let fits = [member("a", 100), member("b", 200), member("c", 200)].join(",");
        assert_eq!(
            bounded_tracestate(&format!(" {fits} ,,")),
            Some(fits.clone())
        );
        let many: Vec<String> = (0..40).map(|i| format!("k{i}=v")).collect();
        assert_eq!(
            bounded_tracestate(&many.join(",")),
            Some(many[..32].join(","))
        );
        // Too long: members over 128 characters go first, from the end.
        let long = [
            member("a", 200),
            member("b", 100),
            member("c", 250),
            member("d", 150),
        ];
        assert_eq!(
            bounded_tracestate(&long.join(",")),
            Some([member("a", 200), member("b", 100)].join(","))
        );
        let short: Vec<String> = (0..32).map(|i| member(&format!("k{i:02}"), 20)).collect();
        assert_eq!(
            bounded_tracestate(&short.join(",")),
            Some(short[..20].join(","))
        );
        assert_eq!(bounded_tracestate(&member("a", 600)), None);
        assert_eq!(bounded_tracestate(" , "), None);
    }
}
