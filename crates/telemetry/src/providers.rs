//! The OpenTelemetry providers, each with the exporter its
//! `OTEL_*_EXPORTER` variable names. The OTLP exporters read the protocol,
//! endpoint, headers and timeout from the `OTEL_EXPORTER_OTLP_*` variables.

use opentelemetry::KeyValue;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::logs::SdkLoggerProvider;
use opentelemetry_sdk::metrics::{PeriodicReader, SdkMeterProvider};
use opentelemetry_sdk::resource::{
    EnvResourceDetector, SdkProvidedResourceDetector, TelemetryResourceDetector,
};
use opentelemetry_sdk::trace::{SdkTracerProvider, SpanExporter, TracerProviderBuilder};
use opentelemetry_semantic_conventions::resource::{
    SERVICE_INSTANCE_ID, SERVICE_NAME, SERVICE_VERSION,
};
use span_links::pacing::SpanQueue;
use span_links::{LinkSampler, with_link_limit};

use crate::TelemetryError;
use crate::config::{Exporter, Signal, TelemetryConfig, TracesSampler};
use crate::export_failures::Reported;

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
            let exporter = opentelemetry_otlp::SpanExporter::builder()
                .build()
                .map_err(exporter_error(Signal::Traces))?;
            with_queue(
                builder,
                Reported::new(exporter, Signal::Traces, config),
                config,
            )
        }
        Exporter::Console => with_queue(
            builder,
            opentelemetry_stdout::SpanExporter::default(),
            config,
        ),
        Exporter::None => (builder.build(), SpanQueue::default()),
    })
}

/// The provider of `builder`, its spans exported through `exporter` from a
/// queue sized and paced by the configuration.
fn with_queue(
    builder: TracerProviderBuilder,
    exporter: impl SpanExporter + 'static,
    config: &TelemetryConfig,
) -> (SdkTracerProvider, SpanQueue) {
    SpanQueue::builder(exporter)
        .with_capacity(config.span_queue_size)
        .with_export_batch_size(config.span_export_batch_size)
        .on_queue_full(config.on_queue_full)
        .with_exporter_type(config.span_exporter_type)
        .build(builder)
}

/// The meter provider, or none when metrics are not exported.
pub(crate) fn meter(
    config: &TelemetryConfig,
    resource: Resource,
) -> Result<Option<SdkMeterProvider>, TelemetryError> {
    let builder = SdkMeterProvider::builder().with_resource(resource);
    Ok(match config.exporter(Signal::Metrics) {
        Exporter::Otlp => {
            let exporter = opentelemetry_otlp::MetricExporter::builder()
                .build()
                .map_err(exporter_error(Signal::Metrics))?;
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
            let exporter = opentelemetry_otlp::LogExporter::builder()
                .build()
                .map_err(exporter_error(Signal::Logs))?;
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
