//! A real OTLP receiver on loopback, over gRPC and HTTP/protobuf: the tests
//! point a binary's exporter at one of its two ports (so what arrives came
//! over that transport) and read back what arrived. It answers at once, and
//! each trace export over gRPC as an [`Answer`] says: later, as a collector
//! slower than the services does, refusing it with a status, or rejecting
//! some of its spans. Spans from an in-memory exporter convert to the same OTLP
//! form, so every span assertion is written once.

use std::io::Read as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::header::CONTENT_ENCODING;
use axum::http::{HeaderMap, StatusCode as HttpStatus};
use axum::routing::post;
use flate2::read::GzDecoder;
use opentelemetry_proto::tonic::collector::logs::v1::logs_service_server as logs;
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server as metrics;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTracePartialSuccess;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server as traces;
use opentelemetry_proto::tonic::collector::{
    logs::v1 as log, metrics::v1 as metric, trace::v1 as trace,
};
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::logs::v1::LogRecord;
use opentelemetry_proto::tonic::metrics::v1::Metric;
use opentelemetry_proto::tonic::metrics::v1::metric::Data;
use opentelemetry_proto::tonic::metrics::v1::number_data_point::Value as NumberValue;
use opentelemetry_proto::tonic::trace::v1::Span;
use opentelemetry_proto::tonic::trace::v1::span::Link;
use opentelemetry_proto::tonic::trace::v1::status::StatusCode;
use prost::Message;
use tokio::task::JoinHandle;
use tonic::codec::CompressionEncoding;
use tonic::{Code, Request, Response, Status};
use tonic_types::{ErrorDetails, StatusExt as _};

use crate::listen;

/// The largest message a collector's OTLP/gRPC receiver accepts by default;
/// held on both transports here, so that no export the services make could be
/// refused by a collector on its defaults.
const MAX_MESSAGE: usize = 4 * 1024 * 1024;

/// One span, as the OTLP exporter sent it, with its service and resource.
#[derive(Debug, Clone)]
pub struct ReceivedSpan {
    pub service: String,
    pub resource: Vec<KeyValue>,
    pub span: Span,
}

/// What arrived, signal by signal.
#[derive(Debug, Default)]
struct Received {
    spans: Vec<ReceivedSpan>,
    trace_exports: usize,
    logs: Vec<LogRecord>,
    metrics: Vec<Metric>,
}

/// How the receiver answers one trace export: after `delay`, and then
/// accepting it, refusing it with a status (keeping none of it), or
/// accepting it but for its first `rejected` spans, in a partial success.
#[derive(Debug, Clone, Default)]
pub struct Answer {
    pub delay: Duration,
    pub refusal: Option<Code>,
    /// With a refusal of `RESOURCE_EXHAUSTED`: the `RetryInfo` delay a
    /// throttling receiver sends, without which the status is final.
    pub retry_after: Option<Duration>,
    pub rejected: usize,
}

impl Answer {
    /// Accepted, `delay` after it arrived.
    #[must_use]
    pub fn after(delay: Duration) -> Self {
        Self {
            delay,
            ..Self::default()
        }
    }

    /// Refused at once with `code`.
    #[must_use]
    pub fn refused(code: Code) -> Self {
        Self {
            refusal: Some(code),
            ..Self::default()
        }
    }
}

/// How the `n`th trace export request (from 1, retries included) is answered.
struct Answers(Box<dyn Fn(usize) -> Answer + Send + Sync>);

impl std::fmt::Debug for Answers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Answers")
    }
}

/// What arrived, and how each trace export is answered.
#[derive(Debug)]
struct Inner {
    received: Mutex<Received>,
    answers: Answers,
    trace_requests: AtomicUsize,
}

type Shared = Arc<Inner>;

/// A receiver listening on two loopback ports until dropped.
#[derive(Debug)]
pub struct OtlpReceiver {
    received: Shared,
    grpc: SocketAddr,
    http: SocketAddr,
    tasks: [JoinHandle<()>; 2],
}

impl Drop for OtlpReceiver {
    fn drop(&mut self) {
        self.tasks.iter().for_each(JoinHandle::abort);
    }
}

impl OtlpReceiver {
    /// Serves both transports on the current tokio runtime, answering each
    /// export at once.
    pub async fn start() -> Self {
        Self::answering_after(Duration::ZERO).await
    }

    /// Serves both transports, answering each trace export `delay` after it
    /// arrived (and after decoding it), however many spans it holds: a slow
    /// collector, which takes `batch size / delay` spans a second from one
    /// exporter at a time.
    pub async fn answering_after(delay: Duration) -> Self {
        Self::answering(move |_| Answer::after(delay)).await
    }

    /// Serves both transports, answering the `n`th trace export request
    /// (from 1) as `answer(n)` says; metrics and logs at once.
    pub async fn answering(answer: impl Fn(usize) -> Answer + Send + Sync + 'static) -> Self {
        let received = Arc::new(Inner {
            received: Mutex::default(),
            answers: Answers(Box::new(answer)),
            trace_requests: AtomicUsize::new(0),
        });
        let ((grpc, grpc_address), (http, http_address)) = (listen().await, listen().await);
        let collector = Collector(received.clone());
        let grpc = tokio::spawn(async move {
            tonic::transport::Server::builder()
                .add_service(
                    traces::TraceServiceServer::new(collector.clone())
                        .accept_compressed(CompressionEncoding::Gzip)
                        .max_decoding_message_size(MAX_MESSAGE),
                )
                .add_service(
                    metrics::MetricsServiceServer::new(collector.clone())
                        .accept_compressed(CompressionEncoding::Gzip)
                        .max_decoding_message_size(MAX_MESSAGE),
                )
                .add_service(
                    logs::LogsServiceServer::new(collector)
                        .accept_compressed(CompressionEncoding::Gzip)
                        .max_decoding_message_size(MAX_MESSAGE),
                )
                .serve_with_incoming(tonic::transport::server::TcpIncoming::from(grpc))
                .await
                .unwrap_or_else(|error| panic!("OTLP/gRPC receiver: {error}"));
        });
        let app = axum::Router::new()
            .route(
                "/v1/traces",
                post(over_http::<trace::ExportTraceServiceRequest>),
            )
            .route(
                "/v1/metrics",
                post(over_http::<metric::ExportMetricsServiceRequest>),
            )
            .route("/v1/logs", post(over_http::<log::ExportLogsServiceRequest>))
            .layer(DefaultBodyLimit::max(MAX_MESSAGE))
            .with_state(received.clone());
        let http = tokio::spawn(async move {
            axum::serve(http, app)
                .await
                .unwrap_or_else(|error| panic!("OTLP/HTTP receiver: {error}"));
        });
        Self {
            received,
            grpc: grpc_address,
            http: http_address,
            tasks: [grpc, http],
        }
    }

    /// The endpoint for `OTEL_EXPORTER_OTLP_ENDPOINT` with `protocol` (`grpc` or `http/protobuf`).
    #[must_use]
    pub fn endpoint(&self, protocol: &str) -> String {
        let address = if protocol == "grpc" {
            self.grpc
        } else {
            self.http
        };
        format!("http://{address}")
    }

    /// Each span received once, however many times a retried export
    /// delivered it: OTLP delivers at least once, and an export whose answer
    /// was lost arrives again.
    #[must_use]
    pub fn distinct_spans(&self) -> Vec<ReceivedSpan> {
        let mut seen = std::collections::HashSet::new();
        let mut spans = self.spans();
        spans.retain(|span| seen.insert((span.span.trace_id.clone(), span.span.span_id.clone())));
        spans
    }

    /// Where it takes OTLP/gRPC.
    #[must_use]
    pub fn grpc_address(&self) -> SocketAddr {
        self.grpc
    }

    #[must_use]
    pub fn spans(&self) -> Vec<ReceivedSpan> {
        self.received.lock().spans.clone()
    }

    #[must_use]
    pub fn logs(&self) -> Vec<LogRecord> {
        self.received.lock().logs.clone()
    }

    /// Trace export requests accepted.
    #[must_use]
    pub fn trace_exports(&self) -> usize {
        self.received.lock().trace_exports
    }

    /// Trace export requests received, refused ones included.
    #[must_use]
    pub fn trace_requests(&self) -> usize {
        self.received.trace_requests.load(Ordering::Relaxed)
    }

    /// The names of the metrics received, a name once per export.
    #[must_use]
    pub fn metric_names(&self) -> Vec<String> {
        let metrics = &self.received.lock().metrics;
        metrics.iter().map(|metric| metric.name.clone()).collect()
    }

    /// The last value received of the counter `name`'s data point whose
    /// attribute `key` is `value`, or that has no `key` when `value` is `None`.
    #[must_use]
    pub fn counter(&self, name: &str, key: &str, value: Option<&str>) -> Option<i64> {
        let metrics = &self.received.lock().metrics;
        let sums = metrics.iter().filter(|metric| metric.name == name);
        let points = sums.filter_map(|metric| match &metric.data {
            Some(Data::Sum(sum)) => Some(&sum.data_points),
            _ => None,
        });
        let point = points
            .flatten()
            .rfind(|point| string(&point.attributes, key) == value)?;
        match point.value? {
            NumberValue::AsInt(int) => Some(int),
            NumberValue::AsDouble(_) => None,
        }
    }

    /// Polls until `done(&spans)` or `timeout`; returns the spans either way.
    pub async fn wait_for_spans(
        &self,
        timeout: Duration,
        done: impl Fn(&[ReceivedSpan]) -> bool,
    ) -> Vec<ReceivedSpan> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let spans = self.spans();
            if done(&spans) || tokio::time::Instant::now() >= deadline {
                return spans;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// An export request of one signal, kept flattened.
trait Export: Message + Default {
    /// Trace exports are answered as the receiver's answers say; the others at once.
    const TRACES: bool = false;
    fn keep(self, received: &mut Received);
}

impl Export for trace::ExportTraceServiceRequest {
    const TRACES: bool = true;
    fn keep(self, received: &mut Received) {
        received.trace_exports += 1;
        for resource_spans in self.resource_spans {
            let resource = resource_spans
                .resource
                .map(|resource| resource.attributes)
                .unwrap_or_default();
            let service = string(&resource, "service.name")
                .unwrap_or_default()
                .to_owned();
            for span in resource_spans
                .scope_spans
                .into_iter()
                .flat_map(|scope| scope.spans)
            {
                received.spans.push(ReceivedSpan {
                    service: service.clone(),
                    resource: resource.clone(),
                    span,
                });
            }
        }
    }
}

impl Export for log::ExportLogsServiceRequest {
    fn keep(self, received: &mut Received) {
        let scopes = self
            .resource_logs
            .into_iter()
            .flat_map(|resource| resource.scope_logs);
        received
            .logs
            .extend(scopes.flat_map(|scope| scope.log_records));
    }
}

impl Export for metric::ExportMetricsServiceRequest {
    fn keep(self, received: &mut Received) {
        let scopes = self
            .resource_metrics
            .into_iter()
            .flat_map(|resource| resource.scope_metrics);
        received
            .metrics
            .extend(scopes.flat_map(|scope| scope.metrics));
    }
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, Received> {
        self.received.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Answers `request` (a trace export as the answers say), keeping what
    /// it accepts of it; the answer, after its delay.
    async fn answer<R: Export>(&self, request: R) -> Answer {
        let answer = if R::TRACES {
            (self.answers.0)(self.trace_requests.fetch_add(1, Ordering::Relaxed) + 1)
        } else {
            Answer::default()
        };
        if answer.refusal.is_none() {
            let mut received = self.lock();
            let before = received.spans.len();
            request.keep(&mut received);
            let rejected = answer.rejected.min(received.spans.len() - before);
            received.spans.drain(before..before + rejected);
        }
        tokio::time::sleep(answer.delay).await;
        answer
    }
}

async fn over_http<R: Export>(
    State(received): State<Shared>,
    headers: HeaderMap,
    body: Bytes,
) -> HttpStatus {
    let body = if headers
        .get(CONTENT_ENCODING)
        .is_some_and(|encoding| encoding == "gzip")
    {
        // Held to the same limit as what arrives uncompressed.
        let mut inflated = Vec::new();
        let limit = u64::try_from(MAX_MESSAGE).unwrap_or(u64::MAX) + 1;
        let read = GzDecoder::new(&body[..])
            .take(limit)
            .read_to_end(&mut inflated);
        match read {
            Ok(length) if length <= MAX_MESSAGE => Bytes::from(inflated),
            _ => return HttpStatus::PAYLOAD_TOO_LARGE,
        }
    } else {
        body
    };
    match R::decode(body) {
        Ok(request) => {
            request.keep(&mut received.lock());
            HttpStatus::OK
        }
        Err(_) => HttpStatus::BAD_REQUEST,
    }
}

/// The partial success of an accepted trace export, when it rejected spans.
fn partial_success(answer: &Answer) -> Option<ExportTracePartialSuccess> {
    (answer.rejected > 0).then(|| ExportTracePartialSuccess {
        rejected_spans: i64::try_from(answer.rejected).unwrap_or(i64::MAX),
        error_message: "rejected by the test's receiver".to_owned(),
    })
}

#[derive(Clone)]
struct Collector(Shared);

impl Collector {
    /// The answer to `request`, when it is accepted.
    async fn over_grpc<R: Export>(&self, request: Request<R>) -> Result<Answer, Status> {
        let answer = self.0.answer(request.into_inner()).await;
        match (answer.refusal, answer.retry_after) {
            (None, _) => Ok(answer),
            (Some(code), None) => Err(Status::new(code, "refused by the test's receiver")),
            (Some(code), Some(delay)) => Err(Status::with_error_details(
                code,
                "refused by the test's receiver",
                ErrorDetails::with_retry_info(Some(delay)),
            )),
        }
    }
}

#[tonic::async_trait]
impl traces::TraceService for Collector {
    async fn export(
        &self,
        request: Request<trace::ExportTraceServiceRequest>,
    ) -> Result<Response<trace::ExportTraceServiceResponse>, Status> {
        let answer = self.over_grpc(request).await?;
        Ok(Response::new(trace::ExportTraceServiceResponse {
            partial_success: partial_success(&answer),
        }))
    }
}

#[tonic::async_trait]
impl metrics::MetricsService for Collector {
    async fn export(
        &self,
        request: Request<metric::ExportMetricsServiceRequest>,
    ) -> Result<Response<metric::ExportMetricsServiceResponse>, Status> {
        self.over_grpc(request).await?;
        Ok(Response::new(
            metric::ExportMetricsServiceResponse::default(),
        ))
    }
}

#[tonic::async_trait]
impl logs::LogsService for Collector {
    async fn export(
        &self,
        request: Request<log::ExportLogsServiceRequest>,
    ) -> Result<Response<log::ExportLogsServiceResponse>, Status> {
        self.over_grpc(request).await?;
        Ok(Response::new(log::ExportLogsServiceResponse::default()))
    }
}

/// The value of the attribute `key` of `attributes`.
fn attribute<'a>(attributes: &'a [KeyValue], key: &str) -> Option<&'a Value> {
    let found = attributes.iter().find(|kv| kv.key == key)?;
    found.value.as_ref()?.value.as_ref()
}

/// The string attribute `key` of `attributes`.
#[must_use]
pub fn string<'a>(attributes: &'a [KeyValue], key: &str) -> Option<&'a str> {
    match attribute(attributes, key)? {
        Value::StringValue(value) => Some(value),
        _ => None,
    }
}

/// Lowercase hex, as trace and span ids are written; `None` for an all-zero id.
#[must_use]
pub fn hex(bytes: &[u8]) -> Option<String> {
    let hex = bytes
        .iter()
        .fold(String::new(), |hex, byte| hex + &format!("{byte:02x}"));
    bytes.iter().any(|&byte| byte != 0).then_some(hex)
}

/// A log record's body, when it is a string.
#[must_use]
pub fn body(record: &LogRecord) -> Option<&str> {
    match record.body.as_ref()?.value.as_ref()? {
        Value::StringValue(body) => Some(body),
        _ => None,
    }
}

impl ReceivedSpan {
    /// Spans from the SDK's in-memory exporter, in the form OTLP sends them.
    #[must_use]
    pub fn from_sdk(spans: Vec<opentelemetry_sdk::trace::SpanData>) -> Vec<Self> {
        let from = |span: opentelemetry_sdk::trace::SpanData| Self {
            service: String::new(),
            resource: Vec::new(),
            span: Span::from(span),
        };
        spans.into_iter().map(from).collect()
    }

    #[must_use]
    pub fn name(&self) -> &str {
        &self.span.name
    }

    #[must_use]
    pub fn trace_id(&self) -> String {
        hex(&self.span.trace_id).unwrap_or_default()
    }

    #[must_use]
    pub fn span_id(&self) -> String {
        hex(&self.span.span_id).unwrap_or_default()
    }

    /// The parent's span id; `None` for a root.
    #[must_use]
    pub fn parent(&self) -> Option<String> {
        hex(&self.span.parent_span_id)
    }

    #[must_use]
    pub fn string(&self, key: &str) -> Option<&str> {
        string(&self.span.attributes, key)
    }

    #[must_use]
    pub fn int(&self, key: &str) -> Option<i64> {
        match attribute(&self.span.attributes, key)? {
            Value::IntValue(value) => Some(*value),
            _ => None,
        }
    }

    /// The status code and message; unset without a status.
    #[must_use]
    pub fn status(&self) -> (StatusCode, &str) {
        self.span
            .status
            .as_ref()
            .map_or((StatusCode::Unset, ""), |status| {
                (status.code(), status.message.as_str())
            })
    }

    #[must_use]
    pub fn links(&self) -> &[Link] {
        &self.span.links
    }
}

/// The spans named `name`.
#[must_use]
pub fn named<'a>(spans: &'a [ReceivedSpan], name: &str) -> Vec<&'a ReceivedSpan> {
    spans.iter().filter(|span| span.name() == name).collect()
}
