//! End-to-end compatibility with the exporters the services actually use:
//! `opentelemetry-otlp` over gRPC (tonic) and HTTP/protobuf.

// Helpers outside `#[test]` functions panic on setup failures too.
#![allow(clippy::expect_used)]

use std::time::Duration;

use opentelemetry::logs::{AnyValue, LogRecord as _, Logger as _, LoggerProvider as _, Severity};
use opentelemetry::metrics::MeterProvider as _;
use opentelemetry::trace::{
    Link, Span as _, SpanContext, SpanKind, TraceContextExt as _, Tracer as _, TracerProvider as _,
};
use opentelemetry::{Context, KeyValue};
use opentelemetry_otlp::{
    LogExporter, MetricExporter, Protocol, SpanExporter, WithExportConfig as _,
};
use opentelemetry_proto::tonic::trace::v1::span::SpanKind as ProtoSpanKind;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::logs::SdkLoggerProvider;
use opentelemetry_sdk::metrics::SdkMeterProvider;
use opentelemetry_sdk::trace::SdkTracerProvider;
use otlp_receiver::{OtlpReceiver, Signal, Transport, hex};

const WAIT: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Copy)]
enum Wire {
    Grpc,
    HttpProtobuf,
}

fn exporters(receiver: &OtlpReceiver, wire: Wire) -> (SpanExporter, LogExporter, MetricExporter) {
    match wire {
        Wire::Grpc => (
            SpanExporter::builder()
                .with_tonic()
                .with_endpoint(receiver.grpc_endpoint())
                .build()
                .expect("span exporter"),
            LogExporter::builder()
                .with_tonic()
                .with_endpoint(receiver.grpc_endpoint())
                .build()
                .expect("log exporter"),
            MetricExporter::builder()
                .with_tonic()
                .with_endpoint(receiver.grpc_endpoint())
                .build()
                .expect("metric exporter"),
        ),
        Wire::HttpProtobuf => (
            SpanExporter::builder()
                .with_http()
                .with_protocol(Protocol::HttpBinary)
                .with_endpoint(receiver.http_url(Signal::Traces))
                .build()
                .expect("span exporter"),
            LogExporter::builder()
                .with_http()
                .with_protocol(Protocol::HttpBinary)
                .with_endpoint(receiver.http_url(Signal::Logs))
                .build()
                .expect("log exporter"),
            MetricExporter::builder()
                .with_http()
                .with_protocol(Protocol::HttpBinary)
                .with_endpoint(receiver.http_url(Signal::Metrics))
                .build()
                .expect("metric exporter"),
        ),
    }
}

/// The three SDK pipelines of one simulated service.
#[derive(Debug)]
struct Pipelines {
    tracer: SdkTracerProvider,
    logger: SdkLoggerProvider,
    meter: SdkMeterProvider,
}

impl Pipelines {
    fn new(receiver: &OtlpReceiver, wire: Wire, service: &str) -> Self {
        let resource = Resource::builder()
            .with_service_name(service.to_owned())
            .build();
        let (span_exporter, log_exporter, metric_exporter) = exporters(receiver, wire);
        Self {
            tracer: SdkTracerProvider::builder()
                .with_resource(resource.clone())
                .with_batch_exporter(span_exporter)
                .build(),
            logger: SdkLoggerProvider::builder()
                .with_resource(resource.clone())
                .with_batch_exporter(log_exporter)
                .build(),
            meter: SdkMeterProvider::builder()
                .with_resource(resource)
                .with_periodic_exporter(metric_exporter)
                .build(),
        }
    }

    /// Records a parent span, a linked child span, a log record correlated
    /// with the child and a counter; returns the (parent, child) contexts.
    fn emit(&self) -> (SpanContext, SpanContext) {
        let tracer = self.tracer.tracer("exporter-test");
        let parent = tracer.start("parent");
        let parent_context = parent.span_context().clone();
        let cx = Context::current_with_span(parent);
        let mut child = tracer
            .span_builder("child")
            .with_kind(SpanKind::Client)
            .with_attributes([
                KeyValue::new("peer.service", "inventory"),
                KeyValue::new("retry.count", 2_i64),
            ])
            .with_links(vec![Link::with_context(parent_context.clone())])
            .start_with_context(&tracer, &cx);
        let child_context = child.span_context().clone();

        let logger = self.logger.logger("exporter-test");
        let mut record = logger.create_log_record();
        record.set_body(AnyValue::from("order placed"));
        record.set_severity_number(Severity::Info);
        record.set_severity_text("INFO");
        record.add_attribute("order.id", "42");
        record.set_trace_context(
            child_context.trace_id(),
            child_context.span_id(),
            Some(child_context.trace_flags()),
        );
        logger.emit(record);

        child.end();
        cx.span().end();

        self.meter
            .meter("exporter-test")
            .u64_counter("orders.placed")
            .build()
            .add(1, &[KeyValue::new("channel", "web")]);

        (parent_context, child_context)
    }

    /// Flushes (or shuts down) all pipelines.  This blocks on the SDK's
    /// background threads, so it runs off the runtime's worker threads.
    async fn finish(self, shutdown: bool) -> Self {
        tokio::task::spawn_blocking(move || {
            if shutdown {
                self.tracer.shutdown().expect("shutdown tracer provider");
                self.logger.shutdown().expect("shutdown logger provider");
                self.meter.shutdown().expect("shutdown meter provider");
            } else {
                self.tracer.force_flush().expect("flush spans");
                self.logger.force_flush().expect("flush logs");
                self.meter.force_flush().expect("flush metrics");
            }
            self
        })
        .await
        .expect("flush task")
    }
}

/// Exports through real SDK pipelines, then checks what arrived on the wire
/// and over which transport.
async fn round_trip(wire: Wire, expected: Transport) {
    let receiver = OtlpReceiver::start().await.expect("start receiver");
    let service = format!("exporter-test-{wire:?}").to_lowercase();
    let pipelines = Pipelines::new(&receiver, wire, &service);
    let (parent_context, child_context) = pipelines.emit();
    let pipelines = pipelines.finish(false).await;

    let spans = receiver
        .wait_for_spans(WAIT, |spans| spans.len() >= 2)
        .await;
    assert_eq!(spans.len(), 2, "{spans:#?}");
    let child = spans
        .iter()
        .find(|s| s.name() == "child")
        .expect("child span");
    let parent = spans
        .iter()
        .find(|s| s.name() == "parent")
        .expect("parent span");
    assert_eq!(child.service_name, service);
    assert_eq!(child.scope.name, "exporter-test");
    assert_eq!(child.kind(), ProtoSpanKind::Client);
    assert_eq!(child.trace_id(), child_context.trace_id().to_string());
    assert_eq!(child.trace_id().len(), 32);
    assert_eq!(child.span_id(), child_context.span_id().to_string());
    assert_eq!(child.span_id().len(), 16);
    assert_eq!(parent.span_id(), parent_context.span_id().to_string());
    assert_eq!(child.parent_span_id(), Some(parent.span_id()));
    assert_eq!(parent.parent_span_id(), None);
    assert_eq!(child.str_attribute("peer.service"), Some("inventory"));
    assert_eq!(child.int_attribute("retry.count"), Some(2));
    assert_eq!(child.links().len(), 1);
    assert_eq!(hex(&child.links()[0].span_id), parent.span_id());
    assert_eq!(hex(&child.links()[0].trace_id), parent.trace_id());

    let logs = receiver.wait_for_logs(WAIT, |logs| !logs.is_empty()).await;
    assert_eq!(logs.len(), 1, "{logs:#?}");
    assert_eq!(logs[0].service_name, service);
    assert_eq!(logs[0].body_text().as_deref(), Some("order placed"));
    assert_eq!(logs[0].str_attribute("order.id"), Some("42"));
    assert_eq!(logs[0].trace_id(), Some(child.trace_id()));
    assert_eq!(logs[0].span_id(), Some(child.span_id()));

    let metrics = receiver
        .wait_for_metrics(WAIT, |metrics| {
            metrics.iter().any(|m| m.name() == "orders.placed")
        })
        .await;
    let counter = metrics
        .iter()
        .find(|m| m.name() == "orders.placed")
        .expect("orders.placed metric");
    assert_eq!(counter.service_name, service);

    for signal in [Signal::Traces, Signal::Logs, Signal::Metrics] {
        assert!(
            receiver.requests_for(signal, expected) >= 1,
            "no {signal:?} request over {expected:?}"
        );
    }
    let other = match expected {
        Transport::Grpc => Transport::Http,
        Transport::Http => Transport::Grpc,
    };
    assert_eq!(receiver.requests(other), 0);

    pipelines.finish(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opentelemetry_otlp_grpc_exporters() {
    round_trip(Wire::Grpc, Transport::Grpc).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opentelemetry_otlp_http_protobuf_exporters() {
    round_trip(Wire::HttpProtobuf, Transport::Http).await;
}
