//! Which spans and events go where.
//!
//! `RUST_LOG` filters logs only: the lines on stdout and the OTLP log records.
//! Spans are filtered on their own: every span at INFO and above is traced
//! whatever `RUST_LOG` says, as a span a log filter dropped would take its
//! links, and the trace contexts stored from it, along. Events are not span
//! events: logs go to the log pipeline, correlated by trace and span id.
//!
//! The layers are boxed in a `Vec`, always present: an `Option` layer that is
//! `None` beside per-layer filters has disabled events for every layer in
//! tracing-subscriber (tokio-rs/tracing#2193, #2265).

use std::fmt;
use std::sync::{Arc, OnceLock};

use opentelemetry::trace::{TraceContextExt, TraceId};
use opentelemetry_appender_tracing::layer::OpenTelemetryTracingBridge;
use opentelemetry_sdk::logs::SdkLoggerProvider;
use opentelemetry_sdk::trace::SdkTracer;
use tracing::dispatcher::WeakDispatch;
use tracing::{Event, Level, Metadata, Subscriber};
use tracing_subscriber::filter::{EnvFilter, FilterExt, LevelFilter, filter_fn};
use tracing_subscriber::fmt::format::{Format, Writer};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, MakeWriter};
use tracing_subscriber::layer::Filter;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::{Layer, Registry};

use crate::export_failures;

pub(crate) type BoxedLayer = Box<dyn Layer<Registry> + Send + Sync>;

/// Where the subscriber will be, once built: the log format looks up the
/// OpenTelemetry span of a line through it.
pub(crate) type DispatchSlot = Arc<OnceLock<WeakDispatch>>;

/// The layers: lines on `stdout` and OTLP log records (through `logger`, when
/// logs are exported) filtered by `rust_log`; spans to `tracer`.
pub(crate) fn layers<W>(
    rust_log: &str,
    tracer: SdkTracer,
    logger: Option<&SdkLoggerProvider>,
    stdout: W,
    ansi: bool,
    dispatch: DispatchSlot,
) -> Vec<BoxedLayer>
where
    W: for<'writer> MakeWriter<'writer> + Send + Sync + 'static,
{
    let lines = tracing_subscriber::fmt::layer()
        .event_format(WithTraceId {
            format: Format::default().with_ansi(ansi),
            dispatch,
        })
        .with_writer(stdout)
        .with_ansi(ansi)
        .with_filter(EnvFilter::new(rust_log).and(all_but(export_failures::is_replaced)));
    // Without thread.* and busy_ns/idle_ns on every span: tasks move between
    // threads, and timing every enter and exit costs a clock read each time.
    // code.* stays: it leads from a span to its source.
    let spans = tracing_opentelemetry::layer()
        .with_threads(false)
        .with_tracked_inactivity(false)
        .with_tracer(tracer)
        .with_filter(
            filter_fn(|metadata| {
                metadata.is_span()
                    && *metadata.level() <= Level::INFO
                    && !is_telemetry_itself(metadata)
            })
            .with_max_level_hint(LevelFilter::INFO),
        );
    let mut layers: Vec<BoxedLayer> = vec![lines.boxed(), spans.boxed()];
    if let Some(logger) = logger {
        let records = OpenTelemetryTracingBridge::new(logger)
            .with_filter(EnvFilter::new(rust_log).and(all_but(is_telemetry_itself)));
        layers.push(records.boxed());
    }
    layers
}

/// Everything but what `excluded` picks out, at any level.
fn all_but(excluded: fn(&Metadata<'_>) -> bool) -> impl Filter<Registry> {
    filter_fn(move |metadata| !excluded(metadata)).with_max_level_hint(LevelFilter::TRACE)
}

/// Telemetry about the telemetry: the exporters' own HTTP and gRPC stacks,
/// the SDK, the export queue's and this crate's reports. Exported, it would produce more
/// exports, about the exports.
fn is_telemetry_itself(metadata: &Metadata<'_>) -> bool {
    const STACKS: &[&str] = &[
        "h2",
        "hyper",
        "hyper_util",
        "reqwest",
        "tonic",
        "tower",
        "span_pacing",
        env!("CARGO_CRATE_NAME"),
    ];
    let target = metadata.target();
    target.starts_with("opentelemetry")
        || STACKS.iter().any(|stack| {
            target
                .strip_prefix(stack)
                .is_some_and(|rest| rest.is_empty() || rest.starts_with("::"))
        })
}

/// The default line, with the trace id of the span it was written in
/// appended: the way from a log line to its trace.
struct WithTraceId {
    format: Format,
    dispatch: DispatchSlot,
}

impl WithTraceId {
    /// The trace of the nearest span the line was written in that has one.
    fn trace_id(&self, event: &Event<'_>) -> Option<TraceId> {
        let dispatch = self.dispatch.get()?.upgrade()?;
        let registry = dispatch.downcast_ref::<Registry>()?;
        let leaf = event
            .parent()
            .cloned()
            .or_else(|| dispatch.current_span().id().cloned())?;
        registry.span(&leaf)?.scope().find_map(|span| {
            let context = tracing_opentelemetry::get_otel_context(&span.id(), &dispatch)?;
            let span_context = context.span().span_context().clone();
            span_context.is_valid().then(|| span_context.trace_id())
        })
    }
}

impl<S, N> FormatEvent<S, N> for WithTraceId
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let mut line = String::new();
        self.format
            .format_event(ctx, Writer::new(&mut line), event)?;
        match self.trace_id(event) {
            Some(trace_id) => writeln!(
                writer,
                "{} trace_id={trace_id}",
                line.trim_end_matches('\n')
            ),
            None => writer.write_str(&line),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io;
    use std::sync::{Arc, Mutex};

    use opentelemetry::trace::TracerProvider as _;
    use opentelemetry_sdk::logs::{InMemoryLogExporter, SdkLoggerProvider};
    use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider};
    use tracing::Dispatch;
    use tracing_subscriber::Registry;
    use tracing_subscriber::layer::SubscriberExt as _;

    use super::{DispatchSlot, layers};

    /// What the stdout layer printed.
    #[derive(Clone, Default)]
    struct Printed(Arc<Mutex<Vec<u8>>>);

    impl io::Write for Printed {
        fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    /// A span with an INFO and an ERROR line in it, through the layers with
    /// `RUST_LOG=error`, with and without OTLP logs (without them, the stack
    /// has one layer fewer: the shape that once disabled every event).
    #[test]
    fn rust_log_filters_the_logs_and_not_the_spans() {
        for export_logs in [true, false] {
            let spans = InMemorySpanExporter::default();
            let tracer = SdkTracerProvider::builder()
                .with_simple_exporter(spans.clone())
                .build();
            let logs = InMemoryLogExporter::default();
            let logger = export_logs.then(|| {
                SdkLoggerProvider::builder()
                    .with_simple_exporter(logs.clone())
                    .build()
            });
            let printed = Printed::default();
            let writer = printed.clone();
            let slot = DispatchSlot::default();
            let stack = layers(
                "error",
                tracer.tracer("test"),
                logger.as_ref(),
                move || writer.clone(),
                false,
                slot.clone(),
            );
            let dispatch = Dispatch::new(Registry::default().with(stack));
            slot.get_or_init(|| dispatch.downgrade());
            tracing::dispatcher::with_default(&dispatch, || {
                // A target of its own: this crate's own events are not exported.
                tracing::info_span!(target: "app", "kept").in_scope(|| {
                    tracing::info!(target: "app", "quiet");
                    tracing::error!(target: "app", "loud");
                });
            });

            let spans = spans.get_finished_spans().unwrap();
            assert_eq!(
                spans
                    .iter()
                    .map(|span| span.name.as_ref())
                    .collect::<Vec<_>>(),
                ["kept"]
            );
            let printed = String::from_utf8(printed.0.lock().unwrap().clone()).unwrap();
            assert_eq!(printed.lines().count(), 1, "{printed}");
            let trace_id = spans[0].span_context.trace_id();
            assert!(
                printed.contains("ERROR")
                    && printed
                        .trim_end()
                        .ends_with(&format!("loud trace_id={trace_id}")),
                "{printed}"
            );
            let records = logs.get_emitted_logs().unwrap();
            assert_eq!(
                records.len(),
                usize::from(export_logs),
                "only the ERROR line is a record"
            );
        }
    }
}
