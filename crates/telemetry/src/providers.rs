//! The OpenTelemetry providers, each with the exporter its
//! `OTEL_*_EXPORTER` variable names. The OTLP exporters are built with the
//! protocol, endpoint and timeout the configuration resolved, so that no
//! value means one thing here and another to them; they read the headers
//! and compression from the `OTEL_EXPORTER_OTLP_*` variables themselves.

use opentelemetry::KeyValue;
use opentelemetry_otlp::WithExportConfig as _;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::logs::SdkLoggerProvider;
use opentelemetry_sdk::metrics::{PeriodicReader, SdkMeterProvider};
use opentelemetry_sdk::resource::{
    EnvResourceDetector, SdkProvidedResourceDetector, TelemetryResourceDetector,
};
use opentelemetry_sdk::trace::{SdkTracerProvider, SpanExporter};
use opentelemetry_semantic_conventions::resource::{
    SERVICE_INSTANCE_ID, SERVICE_NAME, SERVICE_VERSION,
};
use span_links::{LinkSampler, with_link_limit};
use span_pacing::{SpanQueue, SpanQueueBuilder};

use crate::TelemetryError;
use crate::config::{Exporter, Signal, TelemetryConfig, TracesSampler};
use crate::export_failures::{FailureReport, Reported};

/// The OTLP exporter of `$signal`, of type `$exporter`, over the protocol,
/// to the endpoint and with the timeout `$config` resolved. A macro: the
/// three exporters' builders share no trait that builds.
macro_rules! otlp_exporter {
    ($exporter:ty, $config:expr, $signal:expr) => {{
        let (config, signal): (&TelemetryConfig, Signal) = ($config, $signal);
        let builder = <$exporter>::builder();
        let endpoint = config.endpoint(signal).to_owned();
        let timeout = config.export_timeout(signal);
        if config.is_grpc(signal) {
            builder
                .with_tonic()
                .with_endpoint(endpoint)
                .with_timeout(timeout)
                .build()
        } else {
            builder
                .with_http()
                .with_endpoint(endpoint)
                .with_timeout(timeout)
                .build()
        }
        .map_err(exporter_error(signal))
    }};
}

/// The resource every signal carries: this service's name and version, and
/// what `OTEL_RESOURCE_ATTRIBUTES` adds. Replicas of a service must differ in
/// `service.instance.id`, or a backend merges their metrics: where the
/// variable names none (Kubernetes gives the pod's UID), it is the host's name,
/// which is the container's id under Docker.
pub(crate) fn resource(config: &TelemetryConfig) -> Resource {
    let host = gethostname::gethostname().to_string_lossy().into_owned();
    Resource::builder_empty()
        .with_attribute(KeyValue::new(SERVICE_INSTANCE_ID, host))
        // Resource::builder()'s detectors, over the host's name.
        .with_detectors(&[
            Box::new(SdkProvidedResourceDetector),
            Box::new(TelemetryResourceDetector),
            Box::new(EnvResourceDetector::new()),
        ])
        .with_attributes([
            KeyValue::new(SERVICE_NAME, config.service_name.clone()),
            KeyValue::new(SERVICE_VERSION, config.service_version.clone()),
        ])
        .build()
}

/// The tracer provider, with the link limit the service's spans need, and the
/// queue of its spans before their exporter. Without an exporter it still
/// gives spans ids: stored trace contexts stay real.
pub(crate) fn tracer(
    config: &TelemetryConfig,
    resource: Resource,
) -> Result<(SdkTracerProvider, SpanQueue), TelemetryError> {
    let builder = with_link_limit(SdkTracerProvider::builder(), config.links_per_span)
        .with_resource(resource);
    let builder = match &config.sampler {
        TracesSampler::Sdk(sampler) => builder.with_sampler(sampler.clone()),
        TracesSampler::Links { ratio } => builder.with_sampler(LinkSampler::new(*ratio)),
    };
    Ok(match config.exporter(Signal::Traces) {
        Exporter::Otlp => {
            let exporter =
                otlp_exporter!(opentelemetry_otlp::SpanExporter, config, Signal::Traces)?;
            let report = FailureReport::new(Signal::Traces, config);
            with_queue(exporter, config)
                .on_each_attempt(move |result| report.report(result))
                .build(builder)
        }
        Exporter::Console => {
            with_queue(opentelemetry_stdout::SpanExporter::default(), config).build(builder)
        }
        Exporter::None => (builder.build(), SpanQueue::default()),
    })
}

/// A queue for `exporter`'s spans, sized and paced by the configuration.
fn with_queue<E: SpanExporter + 'static>(
    exporter: E,
    config: &TelemetryConfig,
) -> SpanQueueBuilder<E> {
    SpanQueue::builder(exporter)
        .with_capacity(config.span_queue_size)
        .with_export_batch_size(config.span_export_batch_size)
        .on_queue_full(config.on_queue_full)
        .with_timeout(config.block_timeout)
        .with_exporter_type(config.span_exporter_type)
}

/// The meter provider, or none when metrics are not exported.
pub(crate) fn meter(
    config: &TelemetryConfig,
    resource: Resource,
) -> Result<Option<SdkMeterProvider>, TelemetryError> {
    let builder = SdkMeterProvider::builder().with_resource(resource);
    Ok(match config.exporter(Signal::Metrics) {
        Exporter::Otlp => {
            let exporter =
                otlp_exporter!(opentelemetry_otlp::MetricExporter, config, Signal::Metrics)?;
            Some(builder.with_reader(
                PeriodicReader::builder(Reported::new(exporter, Signal::Metrics, config)).build(),
            ))
        }
        Exporter::Console => Some(builder.with_reader(
            PeriodicReader::builder(opentelemetry_stdout::MetricExporter::default()).build(),
        )),
        Exporter::None => None,
    }
    .map(opentelemetry_sdk::metrics::MeterProviderBuilder::build))
}

/// The logger provider, or none when logs are not exported.
pub(crate) fn logger(
    config: &TelemetryConfig,
    resource: Resource,
) -> Result<Option<SdkLoggerProvider>, TelemetryError> {
    let builder = SdkLoggerProvider::builder().with_resource(resource);
    Ok(match config.exporter(Signal::Logs) {
        Exporter::Otlp => {
            let exporter = otlp_exporter!(opentelemetry_otlp::LogExporter, config, Signal::Logs)?;
            Some(builder.with_batch_exporter(Reported::new(exporter, Signal::Logs, config)))
        }
        Exporter::Console => {
            Some(builder.with_batch_exporter(opentelemetry_stdout::LogExporter::default()))
        }
        Exporter::None => None,
    }
    .map(opentelemetry_sdk::logs::LoggerProviderBuilder::build))
}

fn exporter_error(
    signal: Signal,
) -> impl FnOnce(opentelemetry_otlp::ExporterBuildError) -> TelemetryError {
    move |source| TelemetryError::Exporter {
        signal: signal.name(),
        source,
    }
}
