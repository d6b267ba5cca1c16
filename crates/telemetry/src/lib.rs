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
//! - `rejections`: the spans a receiver rejects, counted.
//!
//! Spans wait for their exporter in a [`SpanQueue`] (`span_pacing`):
//! counted, so that none is lost unseen; tried again while the collector is
//! away, so that a restart costs none; and paced, so that a batch can wait
//! for room.

mod config;
mod export_failures;
mod layers;
mod providers;
mod rejections;

use std::io::IsTerminal as _;
use std::time::Duration;

use opentelemetry::metrics::MeterProvider as _;
use opentelemetry::propagation::TextMapCompositePropagator;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::ExporterBuildError;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::logs::SdkLoggerProvider;
use opentelemetry_sdk::metrics::SdkMeterProvider;
use opentelemetry_sdk::propagation::{BaggagePropagator, TraceContextPropagator};
use opentelemetry_sdk::trace::SdkTracerProvider;
use span_links::LinkSelection;
use span_pacing::{Producer, SpanQueue};
use tokio::sync::{OnceCell, oneshot};
use tracing::Dispatch;
use tracing_subscriber::Layer as _;
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
    spans: SpanQueue,
    /// Every span of the process, for the count said at exit.
    all_spans: Producer,
    /// Set once the trace provider is shut down.
    traces_shut_down: OnceCell<()>,
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
    let (tracer, spans) = providers::tracer(&config, resource.clone())?;
    let telemetry = Telemetry {
        tracer,
        all_spans: spans.producer(),
        spans,
        traces_shut_down: OnceCell::new(),
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
        if config.exporter(config::Signal::Traces) != config::Exporter::None {
            telemetry
                .spans
                .observe(&meter.meter(env!("CARGO_PKG_NAME")));
        }
    }
    let slot = layers::DispatchSlot::default();
    let mut layers = layers::layers(
        &config.log_filter,
        telemetry.tracer.tracer(config.service_name.clone()),
        telemetry.logger.as_ref(),
        std::io::stdout,
        std::io::stdout().is_terminal(),
        slot.clone(),
    );
    layers.push(rejections::rejections_layer(telemetry.span_queue()).boxed());
    let dispatch = Dispatch::new(Registry::default().with(layers));
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

    /// The queue of spans before the trace exporter: to wait for room, and
    /// to count what was lost.
    #[must_use]
    pub fn span_queue(&self) -> SpanQueue {
        self.spans.clone()
    }

    /// Flushes the spans and shuts the trace exporter down, within half of
    /// `TELEMETRY_SHUTDOWN_TIMEOUT_MS` (5 s by default): from then
    /// on what a producer of the queue counts lost (`Producer::lost`) is final. Once;
    /// [`Telemetry::shutdown`] does it if it was not done.
    pub async fn shutdown_traces(&self) {
        self.traces_shut_down
            .get_or_init(|| async {
                let tracer = self.tracer.clone();
                let timeout = self.shutdown_timeout / 2;
                let shutting_down = in_background(move || tracer.shutdown_with_timeout(timeout));
                let deadline = tokio::time::Instant::now() + timeout;
                warn_unless_flushed_by(deadline, [("traces", Some(shutting_down))]).await;
            })
            .await;
    }

    /// Shuts down traces first, whose count of spans not exported, said here,
    /// is then final, then metrics and logs, whose last export carries that
    /// count: within `TELEMETRY_SHUTDOWN_TIMEOUT_MS` in all however long an
    /// endpoint takes to answer, half of it for traces, half for metrics and
    /// logs together. What could not be flushed is lost, and a warning says
    /// so.
    ///
    /// Each on a thread of its own, waited for here at most the timeout: the
    /// SDK's shutdowns block (blocking a runtime thread can deadlock the gRPC
    /// exporter that needs it), the metric reader's for 5 s whatever timeout
    /// it is given, and a runtime waits for its blocking tasks at exit where
    /// a process does not wait for its threads.
    pub async fn shutdown(self) {
        self.shutdown_traces().await;
        let lost = self.all_spans.lost();
        if lost.total() > 0 {
            tracing::warn!(
                "{} spans not exported in all: {} dropped with the export queue full, {} failed or rejected in exports, {} still queued at exit",
                lost.total(),
                lost.dropped,
                lost.failed,
                lost.queued
            );
        }
        let timeout = self.shutdown_timeout / 2;
        let deadline = tokio::time::Instant::now() + timeout;
        let shutting_down = [
            (
                "metrics",
                self.meter
                    .map(|meter| in_background(move || meter.shutdown_with_timeout(timeout))),
            ),
            (
                "logs",
                self.logger
                    .map(|logger| in_background(move || logger.shutdown_with_timeout(timeout))),
            ),
        ];
        warn_unless_flushed_by(deadline, shutting_down).await;
    }
}

/// Waits for the signals shutting down until `deadline`, and names those
/// whose shutdown failed or was not done by then, each with why.
async fn warn_unless_flushed_by<const N: usize>(
    deadline: tokio::time::Instant,
    shutting_down: [(&str, Option<oneshot::Receiver<OTelSdkResult>>); N],
) {
    let mut lost = Vec::new();
    for (signal, finished) in shutting_down {
        let Some(finished) = finished else { continue };
        let flushed = match tokio::time::timeout_at(deadline, finished).await {
            Ok(Ok(flushed)) => flushed.map_err(|error| error.to_string()),
            Ok(Err(_)) => Err("its shutdown panicked".to_owned()),
            Err(_) => Err("not done in time".to_owned()),
        };
        if let Err(error) = flushed {
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

/// Runs `shut_down` on a thread of its own; its result comes on the receiver.
fn in_background(
    shut_down: impl FnOnce() -> OTelSdkResult + Send + 'static,
) -> oneshot::Receiver<OTelSdkResult> {
    let (done, finished) = oneshot::channel();
    std::thread::spawn(move || done.send(shut_down()));
    finished
}
