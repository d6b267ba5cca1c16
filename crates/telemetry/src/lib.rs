//! Telemetry for both services: traces, metrics and logs configured by the
//! standard `OTEL_*` variables, and human-readable logs on stdout.
//!
//! [`init`] installs everything at start-up; [`Telemetry::shutdown`] flushes
//! at exit, within a bounded time. Telemetry never decides a service's exit
//! code: an exporter that cannot reach its endpoint, or a flush that fails,
//! is a warning.
//!
//! - `config`: the variables read.
//! - `providers`: a provider per signal, with the exporter that
//!   `OTEL_{TRACES,METRICS,LOGS}_EXPORTER` names (`otlp`, `console`, `none`).
//! - `layers`: what `RUST_LOG` filters (logs) and what it does not (spans).
//! - `export_failures`: one clear warning when an endpoint cannot be reached.

mod config;
mod export_failures;
mod layers;
mod providers;

use std::io::IsTerminal as _;
use std::time::Duration;

use opentelemetry::propagation::TextMapCompositePropagator;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::ExporterBuildError;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::logs::SdkLoggerProvider;
use opentelemetry_sdk::metrics::SdkMeterProvider;
use opentelemetry_sdk::propagation::{BaggagePropagator, TraceContextPropagator};
use opentelemetry_sdk::trace::SdkTracerProvider;
use span_links::LinkSelection;
use tokio::task::JoinHandle;
use tracing::Dispatch;
use tracing_subscriber::Registry;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

pub use config::{ConfigError, ENVIRONMENT_VARIABLES, SpanLimits};
use config::{TelemetryConfig, TracesSampler};

/// Why telemetry could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("cannot build the OTLP {signal} exporter: {source}")]
    Exporter {
        signal: &'static str,
        #[source]
        source: ExporterBuildError,
    },
    #[error("cannot install the tracing subscriber: {0}")]
    Subscriber(#[from] tracing_subscriber::util::TryInitError),
}

impl TelemetryError {
    /// Prints the error and exits: with 2 for a configuration error (a
    /// variable, or an exporter its `OTEL_EXPORTER_OTLP_*` variables cannot
    /// build), the code of every other configuration error (clap's); else 1.
    pub fn exit(&self) -> ! {
        eprintln!("error: {self}");
        let configuration = matches!(
            self,
            Self::Config(_)
                | Self::Exporter {
                    source: ExporterBuildError::InvalidConfiguration(_),
                    ..
                }
        );
        std::process::exit(if configuration { 2 } else { 1 })
    }
}

/// The installed providers; call [`Telemetry::shutdown`] before exit.
#[derive(Debug)]
pub struct Telemetry {
    tracer: SdkTracerProvider,
    meter: Option<SdkMeterProvider>,
    logger: Option<SdkLoggerProvider>,
    shutdown_timeout: Duration,
    link_selection: LinkSelection,
}

/// Installs the global tracing subscriber, the providers and the W3C
/// propagator for `service`, whose spans need `limits`, from the environment.
///
/// Must run inside a tokio runtime: the gRPC exporter spawns its connection there.
pub fn init(service: &str, version: &str, limits: SpanLimits) -> Result<Telemetry, TelemetryError> {
    let config = TelemetryConfig::from_env(service, version, limits)?;
    install_propagator();
    let resource = providers::resource(&config);
    let telemetry = Telemetry {
        tracer: providers::tracer(&config, resource.clone())?,
        meter: providers::meter(&config, resource.clone())?,
        logger: providers::logger(&config, resource)?,
        shutdown_timeout: config.shutdown_timeout,
        link_selection: match config.sampler {
            TracesSampler::Links { .. } => LinkSelection::Sampled,
            TracesSampler::Sdk(_) => LinkSelection::All,
        },
    };
    opentelemetry::global::set_tracer_provider(telemetry.tracer.clone());
    if let Some(meter) = &telemetry.meter {
        opentelemetry::global::set_meter_provider(meter.clone());
    }
    let slot = layers::DispatchSlot::default();
    let dispatch = Dispatch::new(Registry::default().with(layers::layers(
        &config.log_filter,
        telemetry.tracer.tracer(config.service_name.clone()),
        telemetry.logger.as_ref(),
        std::io::stdout,
        std::io::stdout().is_terminal(),
        slot.clone(),
    )));
    slot.get_or_init(|| dispatch.downgrade());
    dispatch.try_init()?;
    Ok(telemetry)
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
    /// Which links a span for a batch of work is given: with
    /// `OTEL_TRACES_SAMPLER=links`, only those to sampled spans.
    #[must_use]
    pub fn link_selection(&self) -> LinkSelection {
        self.link_selection
    }

    /// Flushes and shuts down every provider, all at once, within
    /// `TELEMETRY_SHUTDOWN_TIMEOUT_MS` (5 s by default) however long an
    /// endpoint takes to answer. What could not be flushed is lost, and a
    /// warning says so.
    ///
    /// On blocking threads: the SDK's shutdown blocks, and blocking a runtime
    /// thread can deadlock the gRPC exporter that needs it.
    pub async fn shutdown(self) {
        let timeout = self.shutdown_timeout;
        let shutting_down: [(&str, Option<JoinHandle<OTelSdkResult>>); 3] = [
            (
                "traces",
                Some(tokio::task::spawn_blocking(move || {
                    self.tracer.shutdown_with_timeout(timeout)
                })),
            ),
            (
                "metrics",
                self.meter.map(|meter| {
                    tokio::task::spawn_blocking(move || meter.shutdown_with_timeout(timeout))
                }),
            ),
            (
                "logs",
                self.logger.map(|logger| {
                    tokio::task::spawn_blocking(move || logger.shutdown_with_timeout(timeout))
                }),
            ),
        ];
        let mut lost = Vec::new();
        for (signal, task) in shutting_down {
            let Some(task) = task else { continue };
            let flushed = task.await.map_err(|error| error.to_string());
            if let Err(error) = flushed.and_then(|done| done.map_err(|error| error.to_string())) {
                lost.push(format!("{signal} ({error})"));
            }
        }
        if !lost.is_empty() {
            tracing::warn!(
                "telemetry not flushed at exit, so lost: {}",
                lost.join(", ")
            );
        }
    }
}
