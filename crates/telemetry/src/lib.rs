//! Telemetry set-up shared by `orders-api` and `orders-batch`: traces, metrics
//! and logs over OTLP, configured by the standard `OTEL_*` environment
//! variables, plus human-readable logs on stdout.
//!
//! One function, [`init`], installs everything at start-up; the returned
//! [`Telemetry`] must be shut down at exit, or the spans still queued in the
//! batch processor are lost.

mod config;
mod providers;

use std::time::Duration;

use opentelemetry::propagation::TextMapCompositePropagator;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_appender_tracing::layer::OpenTelemetryTracingBridge;
use opentelemetry_sdk::logs::SdkLoggerProvider;
use opentelemetry_sdk::metrics::SdkMeterProvider;
use opentelemetry_sdk::propagation::{BaggagePropagator, TraceContextPropagator};
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::Layer;
use tracing_subscriber::filter::{EnvFilter, filter_fn};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use config::TelemetryConfig;
pub use config::{ConfigError, ENVIRONMENT_VARIABLES, SpanVolume};

/// How long shutdown waits for each provider to flush.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(10);

/// Log targets of the exporters' own HTTP and gRPC stacks. Events from these must
/// not reach the OpenTelemetry layers: exporting them would produce more
/// exports, about the exports.
const EXPORTER_STACK_TARGETS: &[&str] = &[
    "h2",
    "hyper",
    "hyper_util",
    "opentelemetry",
    "reqwest",
    "tonic",
    "tower",
];

/// Why telemetry could not be set up or shut down.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("cannot build the OTLP {signal} exporter: {source}")]
    Exporter {
        signal: &'static str,
        #[source]
        source: opentelemetry_otlp::ExporterBuildError,
    },
    #[error("cannot install the tracing subscriber: {0}")]
    Subscriber(#[from] tracing_subscriber::util::TryInitError),
    #[error("flushing telemetry at shutdown failed: {0}")]
    Shutdown(String),
}

/// The installed telemetry providers; call [`Telemetry::shutdown`] before exit.
#[derive(Debug)]
#[allow(clippy::struct_field_names, reason = "one provider per signal")]
pub struct Telemetry {
    tracer_provider: SdkTracerProvider,
    meter_provider: Option<SdkMeterProvider>,
    logger_provider: Option<SdkLoggerProvider>,
}

/// Installs the global tracing subscriber, the OpenTelemetry providers and the
/// W3C propagator, from the environment (see `config::TelemetryConfig`), with
/// span limits and queue sized for `volume`.
///
/// Must run inside a tokio runtime: the gRPC exporter spawns its connection there.
pub fn init(
    service: &'static str,
    version: &'static str,
    volume: SpanVolume,
) -> Result<Telemetry, TelemetryError> {
    let config = TelemetryConfig::from_env(service, version, volume)?;
    install_propagator();

    let telemetry = providers::build(&config)?;
    opentelemetry::global::set_tracer_provider(telemetry.tracer_provider.clone());
    if let Some(meter_provider) = &telemetry.meter_provider {
        opentelemetry::global::set_meter_provider(meter_provider.clone());
    }

    let not_exporter_stack = || filter_fn(|metadata| !is_exporter_stack(metadata.target()));
    let trace_layer = tracing_opentelemetry::layer()
        .with_tracer(
            telemetry
                .tracer_provider
                .tracer(config.service_name.clone()),
        )
        .with_filter(not_exporter_stack());
    let otlp_log_layer = telemetry.logger_provider.as_ref().map(|provider| {
        OpenTelemetryTracingBridge::new(provider).with_filter(not_exporter_stack())
    });
    let stdout_layer = tracing_subscriber::fmt::layer()
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()));

    tracing_subscriber::registry()
        .with(log_filter(&config.log_filter))
        .with(stdout_layer)
        .with(trace_layer)
        .with(otlp_log_layer)
        .try_init()?;
    Ok(telemetry)
}

/// The product's own crates, whose spans are the point of the project.
const PRODUCT_TARGETS: &[&str] = &["orders", "orders_api", "orders_batch"];

/// `RUST_LOG` as one global filter, with the product's crates kept at `info`
/// unless `RUST_LOG` names them: the filter applies to spans as well as to
/// logs, and a quieter level would silently drop every span, every link and
/// the trace contexts stored from them. (Separate per-layer filters for logs
/// and spans would avoid this, but with tracing-subscriber 0.3 they stopped
/// events from reaching the stdout layer.)
fn log_filter(rust_log: &str) -> EnvFilter {
    let named: Vec<&str> = rust_log
        .split(',')
        .filter_map(|directive| directive.split(['=', '[']).next())
        .map(str::trim)
        .collect();
    PRODUCT_TARGETS
        .iter()
        .filter(|target| !named.contains(target))
        .filter_map(|target| format!("{target}=info").parse().ok())
        .fold(EnvFilter::new(rust_log), EnvFilter::add_directive)
}

fn is_exporter_stack(target: &str) -> bool {
    EXPORTER_STACK_TARGETS.iter().any(|stack| {
        target
            .strip_prefix(stack)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with("::"))
    })
}

/// Installs the W3C trace-context (and baggage) propagator globally; until
/// then the global propagator is a no-op and incoming `traceparent` headers are
/// ignored.
pub fn install_propagator() {
    opentelemetry::global::set_text_map_propagator(TextMapCompositePropagator::new(vec![
        Box::new(TraceContextPropagator::new()),
        Box::new(BaggagePropagator::new()),
    ]));
}

impl Telemetry {
    /// Flushes and shuts down every provider. Nothing is exported afterwards.
    ///
    /// Runs on a blocking thread: the SDK's shutdown blocks, and blocking a
    /// runtime thread can deadlock the gRPC exporter that needs it.
    pub async fn shutdown(self) -> Result<(), TelemetryError> {
        let outcome = tokio::task::spawn_blocking(move || {
            let mut failures = Vec::new();
            if let Err(error) = self.tracer_provider.shutdown_with_timeout(SHUTDOWN_TIMEOUT) {
                failures.push(format!("traces: {error}"));
            }
            if let Some(provider) = self.meter_provider
                && let Err(error) = provider.shutdown_with_timeout(SHUTDOWN_TIMEOUT)
            {
                failures.push(format!("metrics: {error}"));
            }
            if let Some(provider) = self.logger_provider
                && let Err(error) = provider.shutdown_with_timeout(SHUTDOWN_TIMEOUT)
            {
                failures.push(format!("logs: {error}"));
            }
            failures
        })
        .await
        .map_err(|join_error| TelemetryError::Shutdown(join_error.to_string()))?;
        if outcome.is_empty() {
            Ok(())
        } else {
            Err(TelemetryError::Shutdown(outcome.join("; ")))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::log_filter;

    #[test]
    fn product_crates_stay_at_info_unless_rust_log_names_them() {
        let quiet = log_filter("warn").to_string();
        for directive in ["orders=info", "orders_api=info", "orders_batch=info"] {
            assert!(quiet.contains(directive), "{quiet}");
        }
        // Naming one crate leaves only that one to RUST_LOG, matched by whole target.
        let named = log_filter("warn,orders_api=debug").to_string();
        assert!(named.contains("orders_api=debug"), "{named}");
        assert!(!named.contains("orders_api=info"), "{named}");
        assert!(named.contains("orders=info"), "{named}");
        assert!(named.contains("orders_batch=info"), "{named}");
    }
}
