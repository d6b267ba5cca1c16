//! The OpenTelemetry providers, each with an OTLP exporter.

use opentelemetry::KeyValue;
use opentelemetry_otlp::{LogExporter, MetricExporter, SpanExporter};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::logs::SdkLoggerProvider;
use opentelemetry_sdk::metrics::{PeriodicReader, SdkMeterProvider};
use opentelemetry_sdk::trace::{BatchConfigBuilder, BatchSpanProcessor, SdkTracerProvider};
use opentelemetry_semantic_conventions::resource::{SERVICE_NAME, SERVICE_VERSION};
use span_links::with_link_limit;

use crate::{Telemetry, TelemetryConfig, TelemetryError};

/// Builds the providers. The exporters pick the protocol, endpoint, headers and
/// timeouts from the `OTEL_EXPORTER_OTLP_*` variables.
pub(crate) fn build(config: &TelemetryConfig) -> Result<Telemetry, TelemetryError> {
    let resource = resource(config);
    if config.sdk_disabled {
        // No processor: spans get ids (so stored trace contexts stay meaningful)
        // and cost nothing more; there is no meter or logger provider at all.
        return Ok(Telemetry {
            tracer_provider: with_link_limit(
                SdkTracerProvider::builder(),
                config.max_links_per_span,
            )
            .with_resource(resource)
            .build(),
            meter_provider: None,
            logger_provider: None,
        });
    }

    let span_exporter =
        SpanExporter::builder()
            .build()
            .map_err(|source| TelemetryError::Exporter {
                signal: "trace",
                source,
            })?;
    let metric_exporter =
        MetricExporter::builder()
            .build()
            .map_err(|source| TelemetryError::Exporter {
                signal: "metric",
                source,
            })?;
    let log_exporter =
        LogExporter::builder()
            .build()
            .map_err(|source| TelemetryError::Exporter {
                signal: "log",
                source,
            })?;

    Ok(Telemetry {
        tracer_provider: with_link_limit(SdkTracerProvider::builder(), config.max_links_per_span)
            .with_resource(resource.clone())
            .with_span_processor(
                BatchSpanProcessor::builder(span_exporter)
                    .with_batch_config(
                        BatchConfigBuilder::default()
                            .with_max_queue_size(config.span_queue_size)
                            .build(),
                    )
                    .build(),
            )
            .build(),
        meter_provider: Some(
            SdkMeterProvider::builder()
                .with_resource(resource.clone())
                .with_reader(PeriodicReader::builder(metric_exporter).build())
                .build(),
        ),
        logger_provider: Some(
            SdkLoggerProvider::builder()
                .with_resource(resource)
                .with_batch_exporter(log_exporter)
                .build(),
        ),
    })
}

/// The SDK's resource (which reads `OTEL_RESOURCE_ATTRIBUTES`) with this
/// service's name and version.
fn resource(config: &TelemetryConfig) -> Resource {
    Resource::builder()
        .with_attributes([
            KeyValue::new(SERVICE_NAME, config.service_name.clone()),
            KeyValue::new(SERVICE_VERSION, config.service_version.clone()),
        ])
        .build()
}
