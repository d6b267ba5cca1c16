//! Drives the receiver over the real wire with hand-built OTLP requests:
//! the generated tonic clients for gRPC and plain HTTP POSTs for OTLP/HTTP.

// Helpers outside `#[test]` functions panic on setup failures too.
#![allow(clippy::expect_used)]

use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::logs::v1::logs_service_client::LogsServiceClient;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_client::MetricsServiceClient;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::metrics::v1::{
    Gauge, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics, metric, number_data_point,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::span::{Link, SpanKind};
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use otlp_receiver::{OtlpReceiver, Signal, Transport, hex};
use prost::Message;

const TRACE_ID: [u8; 16] = [
    0x0a, 0xf7, 0x65, 0x19, 0x16, 0xcd, 0x43, 0xdd, 0x84, 0x48, 0xeb, 0x21, 0x1c, 0x80, 0x31, 0x9c,
];
const SPAN_ID: [u8; 8] = [0xb7, 0xad, 0x6b, 0x71, 0x69, 0x20, 0x33, 0x31];
const PARENT_ID: [u8; 8] = [0x00, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7];

fn string(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue {
            value: Some(Value::StringValue(value.to_owned())),
        }),
        ..KeyValue::default()
    }
}

fn int(key: &str, value: i64) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue {
            value: Some(Value::IntValue(value)),
        }),
        ..KeyValue::default()
    }
}

fn resource(service: &str) -> Resource {
    Resource {
        attributes: vec![string("service.name", service), string("host.name", "ci")],
        ..Resource::default()
    }
}

fn scope() -> InstrumentationScope {
    InstrumentationScope {
        name: "wire-test".to_owned(),
        version: "1.0".to_owned(),
        ..InstrumentationScope::default()
    }
}

fn span(name: &str, span_id: [u8; 8], parent: Option<[u8; 8]>) -> Span {
    Span {
        trace_id: TRACE_ID.to_vec(),
        span_id: span_id.to_vec(),
        parent_span_id: parent.map(|p| p.to_vec()).unwrap_or_default(),
        name: name.to_owned(),
        kind: SpanKind::Server.into(),
        start_time_unix_nano: 1_700_000_000_000_000_000,
        end_time_unix_nano: 1_700_000_000_500_000_000,
        attributes: vec![
            string("http.request.method", "GET"),
            int("http.response.status_code", 200),
        ],
        ..Span::default()
    }
}

fn trace_request(service: Option<&str>, spans: Vec<Span>) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: service.map(resource),
            scope_spans: vec![ScopeSpans {
                scope: Some(scope()),
                spans,
                ..ScopeSpans::default()
            }],
            ..ResourceSpans::default()
        }],
    }
}

fn log_request(service: &str, body: &str) -> ExportLogsServiceRequest {
    ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            resource: Some(resource(service)),
            scope_logs: vec![ScopeLogs {
                scope: Some(scope()),
                log_records: vec![LogRecord {
                    severity_text: "INFO".to_owned(),
                    severity_number: 9,
                    body: Some(AnyValue {
                        value: Some(Value::StringValue(body.to_owned())),
                    }),
                    attributes: vec![string("order.id", "42"), int("attempt", 3)],
                    trace_id: TRACE_ID.to_vec(),
                    span_id: SPAN_ID.to_vec(),
                    ..LogRecord::default()
                }],
                ..ScopeLogs::default()
            }],
            ..ResourceLogs::default()
        }],
    }
}

fn metric_request(service: &str, name: &str) -> ExportMetricsServiceRequest {
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: Some(resource(service)),
            scope_metrics: vec![ScopeMetrics {
                scope: Some(scope()),
                metrics: vec![Metric {
                    name: name.to_owned(),
                    unit: "1".to_owned(),
                    data: Some(metric::Data::Gauge(Gauge {
                        data_points: vec![NumberDataPoint {
                            value: Some(number_data_point::Value::AsInt(7)),
                            ..NumberDataPoint::default()
                        }],
                    })),
                    ..Metric::default()
                }],
                ..ScopeMetrics::default()
            }],
            ..ResourceMetrics::default()
        }],
    }
}

/// POSTs `body` to the receiver's HTTP port and returns status, content
/// type and response body.
async fn post(
    receiver: &OtlpReceiver,
    signal: Signal,
    content_type: Option<&str>,
    body: Vec<u8>,
) -> (reqwest::StatusCode, String, Vec<u8>) {
    let mut request = reqwest::Client::new()
        .post(receiver.http_url(signal))
        .body(body);
    if let Some(content_type) = content_type {
        request = request.header(reqwest::header::CONTENT_TYPE, content_type);
    }
    let response = request.send().await.expect("HTTP request failed");
    let status = response.status();
    let content_type = response
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .map(|v| v.to_str().expect("ascii content type").to_owned())
        .unwrap_or_default();
    let body = response.bytes().await.expect("response body").to_vec();
    (status, content_type, body)
}

#[tokio::test]
async fn endpoints_are_distinct_loopback_urls() {
    let receiver = OtlpReceiver::start().await.expect("start receiver");
    let grpc = receiver.grpc_endpoint();
    let http = receiver.http_endpoint();
    assert!(grpc.starts_with("http://127.0.0.1:"), "{grpc}");
    assert!(http.starts_with("http://127.0.0.1:"), "{http}");
    assert_ne!(grpc, http);
    assert_eq!(
        receiver.http_url(Signal::Traces),
        format!("{http}/v1/traces")
    );
    assert_eq!(receiver.http_url(Signal::Logs), format!("{http}/v1/logs"));
    assert!(receiver.spans().is_empty());
    assert_eq!(receiver.requests(Transport::Grpc), 0);
    assert_eq!(receiver.requests(Transport::Http), 0);
}

#[tokio::test]
async fn receives_spans_over_grpc_and_http() {
    let receiver = OtlpReceiver::start().await.expect("start receiver");

    // gRPC, through the generated tonic client.
    let mut client = TraceServiceClient::connect(receiver.grpc_endpoint())
        .await
        .expect("connect gRPC");
    let response = client
        .export(trace_request(
            Some("grpc-service"),
            vec![span("grpc span", SPAN_ID, None)],
        ))
        .await
        .expect("gRPC export");
    assert_eq!(response.into_inner(), ExportTraceServiceResponse::default());

    // HTTP, a plain POST of the prost-encoded bytes.
    let body = trace_request(
        Some("http-service"),
        vec![span("http span", PARENT_ID, Some(SPAN_ID))],
    )
    .encode_to_vec();
    let (status, content_type, body) = post(
        &receiver,
        Signal::Traces,
        Some("application/x-protobuf"),
        body,
    )
    .await;
    assert_eq!(status, reqwest::StatusCode::OK);
    assert_eq!(content_type, "application/x-protobuf");
    assert_eq!(
        ExportTraceServiceResponse::decode(body.as_slice()).expect("decode response"),
        ExportTraceServiceResponse::default()
    );

    let spans = receiver.spans();
    assert_eq!(spans.len(), 2, "{spans:#?}");

    let grpc = &spans[0];
    assert_eq!(grpc.name(), "grpc span");
    assert_eq!(grpc.service_name, "grpc-service");
    assert_eq!(grpc.trace_id(), "0af7651916cd43dd8448eb211c80319c");
    assert_eq!(grpc.span_id(), "b7ad6b7169203331");
    assert_eq!(grpc.parent_span_id(), None);
    assert_eq!(grpc.kind(), SpanKind::Server);
    assert_eq!(grpc.str_attribute("http.request.method"), Some("GET"));
    assert_eq!(grpc.int_attribute("http.response.status_code"), Some(200));
    assert_eq!(grpc.str_attribute("http.response.status_code"), None);
    assert_eq!(
        grpc.attribute("http.request.method"),
        Some(&Value::StringValue("GET".to_owned()))
    );
    assert_eq!(grpc.attribute("missing"), None);
    assert_eq!(
        grpc.resource_attribute("host.name"),
        Some(&Value::StringValue("ci".to_owned()))
    );
    assert_eq!(grpc.scope.name, "wire-test");
    assert!(grpc.links().is_empty());

    let http = &spans[1];
    assert_eq!(http.name(), "http span");
    assert_eq!(http.service_name, "http-service");
    assert_eq!(http.trace_id(), grpc.trace_id());
    assert_eq!(http.span_id(), "00f067aa0ba902b7");
    assert_eq!(http.parent_span_id().as_deref(), Some("b7ad6b7169203331"));

    assert_eq!(receiver.requests(Transport::Grpc), 1);
    assert_eq!(receiver.requests(Transport::Http), 1);
    assert_eq!(receiver.requests_for(Signal::Traces, Transport::Grpc), 1);
    assert_eq!(receiver.requests_for(Signal::Traces, Transport::Http), 1);
    assert_eq!(receiver.requests_for(Signal::Logs, Transport::Grpc), 0);
    assert_eq!(receiver.requests_for(Signal::Metrics, Transport::Http), 0);

    receiver.clear();
    assert!(receiver.spans().is_empty());
    assert_eq!(receiver.requests(Transport::Grpc), 0);
}

#[tokio::test]
async fn missing_service_name_is_empty_and_http_defaults_to_protobuf() {
    let receiver = OtlpReceiver::start().await.expect("start receiver");
    let body = trace_request(None, vec![span("anonymous", SPAN_ID, None)]).encode_to_vec();
    let (status, _, _) = post(&receiver, Signal::Traces, None, body).await;
    assert_eq!(status, reqwest::StatusCode::OK);
    let spans = receiver.spans();
    assert_eq!(spans.len(), 1);
    assert_eq!(spans[0].service_name, "");
    assert!(spans[0].resource.is_empty());
}

#[tokio::test]
async fn receives_logs_and_metrics_over_both_transports() {
    let receiver = OtlpReceiver::start().await.expect("start receiver");
    let endpoint = receiver.grpc_endpoint();

    LogsServiceClient::connect(endpoint.clone())
        .await
        .expect("connect logs")
        .export(log_request("grpc-service", "grpc log"))
        .await
        .expect("gRPC logs export");
    MetricsServiceClient::connect(endpoint)
        .await
        .expect("connect metrics")
        .export(metric_request("grpc-service", "grpc.gauge"))
        .await
        .expect("gRPC metrics export");

    let (status, content_type, _) = post(
        &receiver,
        Signal::Logs,
        Some("application/x-protobuf"),
        log_request("http-service", "http log").encode_to_vec(),
    )
    .await;
    assert_eq!(status, reqwest::StatusCode::OK);
    assert_eq!(content_type, "application/x-protobuf");
    let (status, _, _) = post(
        &receiver,
        Signal::Metrics,
        Some("application/x-protobuf"),
        metric_request("http-service", "http.gauge").encode_to_vec(),
    )
    .await;
    assert_eq!(status, reqwest::StatusCode::OK);

    let logs = receiver.log_records();
    assert_eq!(logs.len(), 2, "{logs:#?}");
    assert_eq!(logs[0].service_name, "grpc-service");
    assert_eq!(logs[0].body_text().as_deref(), Some("grpc log"));
    assert_eq!(logs[1].service_name, "http-service");
    assert_eq!(logs[1].body_text().as_deref(), Some("http log"));
    for log in &logs {
        assert_eq!(
            log.trace_id().as_deref(),
            Some("0af7651916cd43dd8448eb211c80319c")
        );
        assert_eq!(log.span_id().as_deref(), Some("b7ad6b7169203331"));
        assert_eq!(log.str_attribute("order.id"), Some("42"));
        assert_eq!(log.int_attribute("attempt"), Some(3));
        assert_eq!(log.severity_text(), "INFO");
    }

    let metrics = receiver.metrics();
    let names: Vec<_> = metrics
        .iter()
        .map(|m| (m.service_name.as_str(), m.name()))
        .collect();
    assert_eq!(
        names,
        [
            ("grpc-service", "grpc.gauge"),
            ("http-service", "http.gauge")
        ]
    );

    for signal in [Signal::Logs, Signal::Metrics] {
        assert_eq!(receiver.requests_for(signal, Transport::Grpc), 1);
        assert_eq!(receiver.requests_for(signal, Transport::Http), 1);
    }
    assert_eq!(receiver.requests_for(Signal::Traces, Transport::Grpc), 0);
    assert_eq!(receiver.requests(Transport::Grpc), 2);
    assert_eq!(receiver.requests(Transport::Http), 2);
}

#[tokio::test]
async fn log_without_trace_context_has_no_ids() {
    let receiver = OtlpReceiver::start().await.expect("start receiver");
    let mut request = log_request("svc", "plain");
    let record = &mut request.resource_logs[0].scope_logs[0].log_records[0];
    record.trace_id.clear();
    record.span_id = vec![0; 8];
    record.body = None;
    let (status, _, _) = post(
        &receiver,
        Signal::Logs,
        Some("application/x-protobuf"),
        request.encode_to_vec(),
    )
    .await;
    assert_eq!(status, reqwest::StatusCode::OK);
    let logs = receiver.log_records();
    assert_eq!(logs.len(), 1);
    assert_eq!(logs[0].trace_id(), None);
    assert_eq!(logs[0].span_id(), None);
    assert_eq!(logs[0].body_text(), None);
}

#[tokio::test]
async fn rejects_otlp_json_over_http() {
    let receiver = OtlpReceiver::start().await.expect("start receiver");
    let body = br#"{"resourceSpans":[]}"#.to_vec();
    let (status, _, _) = post(&receiver, Signal::Traces, Some("application/json"), body).await;
    assert_eq!(status, reqwest::StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert!(receiver.spans().is_empty());
    assert_eq!(receiver.requests(Transport::Http), 0);
}

#[tokio::test]
async fn rejects_bad_http_requests() {
    let receiver = OtlpReceiver::start().await.expect("start receiver");

    // Not protobuf: field 1 with wire type 7 (invalid).
    let (status, _, _) = post(
        &receiver,
        Signal::Traces,
        Some("application/x-protobuf"),
        vec![0x0f, 0xff, 0xff, 0xff],
    )
    .await;
    assert_eq!(status, reqwest::StatusCode::BAD_REQUEST);

    let (status, _, _) = post(&receiver, Signal::Metrics, Some("text/plain"), Vec::new()).await;
    assert_eq!(status, reqwest::StatusCode::UNSUPPORTED_MEDIA_TYPE);

    let response = reqwest::Client::new()
        .post(receiver.http_url(Signal::Traces))
        .header(reqwest::header::CONTENT_TYPE, "application/x-protobuf")
        .header(reqwest::header::CONTENT_ENCODING, "gzip")
        .body(vec![0x1f, 0x8b])
        .send()
        .await
        .expect("send");
    assert_eq!(
        response.status(),
        reqwest::StatusCode::UNSUPPORTED_MEDIA_TYPE
    );

    let response = reqwest::Client::new()
        .post(format!("{}/v1/profiles", receiver.http_endpoint()))
        .body(Vec::new())
        .send()
        .await
        .expect("send");
    assert_eq!(response.status(), reqwest::StatusCode::NOT_FOUND);

    let response = reqwest::Client::new()
        .get(receiver.http_url(Signal::Traces))
        .send()
        .await
        .expect("send");
    assert_eq!(response.status(), reqwest::StatusCode::METHOD_NOT_ALLOWED);

    assert!(receiver.spans().is_empty());
    assert!(receiver.log_records().is_empty());
    assert_eq!(receiver.requests(Transport::Http), 0);
}

/// A span with enough links to exceed tonic's 4 MiB and axum's 2 MiB
/// default limits.
fn huge_span() -> Span {
    let mut span = span("fan-in", SPAN_ID, None);
    span.links = (0..200_000_u32)
        .map(|i| {
            let mut trace_id = [0_u8; 16];
            trace_id[12..].copy_from_slice(&i.to_be_bytes());
            let mut span_id = [0_u8; 8];
            span_id[4..].copy_from_slice(&i.to_be_bytes());
            Link {
                trace_id: trace_id.to_vec(),
                span_id: span_id.to_vec(),
                ..Link::default()
            }
        })
        .collect();
    span
}

#[tokio::test]
async fn accepts_large_requests_on_both_transports() {
    let receiver = OtlpReceiver::start().await.expect("start receiver");
    let request = trace_request(Some("big"), vec![huge_span()]);
    let size = request.encoded_len();
    assert!(size > 4 * 1024 * 1024, "request only {size} bytes");

    TraceServiceClient::connect(receiver.grpc_endpoint())
        .await
        .expect("connect gRPC")
        .export(request.clone())
        .await
        .expect("large gRPC export");
    let (status, _, _) = post(
        &receiver,
        Signal::Traces,
        Some("application/x-protobuf"),
        request.encode_to_vec(),
    )
    .await;
    assert_eq!(status, reqwest::StatusCode::OK);

    let spans = receiver.spans();
    assert_eq!(spans.len(), 2);
    for span in &spans {
        let links = span.links();
        assert_eq!(links.len(), 200_000);
        assert_eq!(hex(&links[1].trace_id), "00000000000000000000000000000001");
        assert_eq!(hex(&links[199_999].span_id), "0000000000030d3f");
    }
}

#[tokio::test]
async fn wait_for_spans_returns_when_done_or_on_timeout() {
    let receiver = OtlpReceiver::start().await.expect("start receiver");

    // Times out: nothing arrives, the (empty) snapshot is returned.
    let started = Instant::now();
    let spans = receiver
        .wait_for_spans(Duration::from_millis(200), |spans| !spans.is_empty())
        .await;
    assert!(spans.is_empty());
    assert!(started.elapsed() >= Duration::from_millis(200));

    // Completes once a span sent in the background arrives.
    let endpoint = receiver.grpc_endpoint();
    let sender = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(100)).await;
        TraceServiceClient::connect(endpoint)
            .await
            .expect("connect gRPC")
            .export(trace_request(
                Some("late"),
                vec![span("late", SPAN_ID, None)],
            ))
            .await
            .expect("export");
    });
    let started = Instant::now();
    let spans = receiver
        .wait_for_spans(Duration::from_secs(10), |spans| {
            spans.iter().any(|s| s.name() == "late")
        })
        .await;
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(spans.len(), 1);
    sender.await.expect("sender task");

    let logs = receiver
        .wait_for_logs(Duration::from_millis(60), |logs| !logs.is_empty())
        .await;
    assert!(logs.is_empty());
    let metrics = receiver
        .wait_for_metrics(Duration::from_millis(60), |metrics| !metrics.is_empty())
        .await;
    assert!(metrics.is_empty());
}

#[tokio::test]
async fn clones_share_state_and_servers_stop_on_drop() {
    let receiver = OtlpReceiver::start().await.expect("start receiver");
    let clone = receiver.clone();
    let addr = receiver.grpc_addr();
    let (status, _, _) = post(
        &clone,
        Signal::Traces,
        Some("application/x-protobuf"),
        trace_request(Some("svc"), vec![span("shared", SPAN_ID, None)]).encode_to_vec(),
    )
    .await;
    assert_eq!(status, reqwest::StatusCode::OK);
    assert_eq!(receiver.spans().len(), 1);

    drop(receiver);
    // One clone is still alive, so the server keeps serving.
    assert!(tokio::net::TcpStream::connect(addr).await.is_ok());
    drop(clone);
    // Give the aborted tasks a moment to release the listener.
    let mut refused = false;
    for _ in 0..50 {
        if tokio::net::TcpStream::connect(addr).await.is_err() {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(refused, "gRPC listener still accepting after drop");
}
