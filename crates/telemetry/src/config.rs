//! The telemetry configuration, from the standard OpenTelemetry variables.
//!
//! The SDK and the OTLP exporters read most of them themselves; this module
//! reads what decides how telemetry is assembled, and refuses the values the
//! SDK would ignore without a word (a configuration error: exit code 2).

use std::env;
use std::time::Duration;

use opentelemetry_sdk::trace::Sampler;
use span_pacing::OnQueueFull;
use tracing_subscriber::EnvFilter;

/// Every environment variable a service's telemetry honours: the ones this
/// crate reads and the ones the OpenTelemetry SDK and the OTLP exporters read
/// themselves: the telemetry's whole surface of configuration.
pub const ENVIRONMENT_VARIABLES: &[&str] = &[
    "OTEL_SERVICE_NAME",
    "OTEL_RESOURCE_ATTRIBUTES",
    "OTEL_SDK_DISABLED",
    "OTEL_TRACES_EXPORTER",
    "OTEL_METRICS_EXPORTER",
    "OTEL_LOGS_EXPORTER",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT",
    "OTEL_EXPORTER_OTLP_LOGS_ENDPOINT",
    "OTEL_EXPORTER_OTLP_PROTOCOL",
    "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
    "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL",
    "OTEL_EXPORTER_OTLP_LOGS_PROTOCOL",
    "OTEL_EXPORTER_OTLP_HEADERS",
    "OTEL_EXPORTER_OTLP_COMPRESSION",
    "OTEL_EXPORTER_OTLP_TIMEOUT",
    "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT",
    "OTEL_EXPORTER_OTLP_METRICS_TIMEOUT",
    "OTEL_EXPORTER_OTLP_LOGS_TIMEOUT",
    "OTEL_TRACES_SAMPLER",
    "OTEL_TRACES_SAMPLER_ARG",
    "OTEL_BSP_SCHEDULE_DELAY",
    "OTEL_BSP_MAX_QUEUE_SIZE",
    "OTEL_BSP_MAX_EXPORT_BATCH_SIZE",
    "OTEL_BSP_ON_QUEUE_FULL",
    "OTEL_BSP_BLOCK_ON_QUEUE_FULL_TIMEOUT",
    "OTEL_SPAN_LINK_COUNT_LIMIT",
    "OTEL_METRIC_EXPORT_INTERVAL",
    "TELEMETRY_SHUTDOWN_TIMEOUT_MS",
    "RUST_LOG",
];

/// A telemetry variable holds a value this build cannot honour.
#[derive(Debug, thiserror::Error)]
#[error("{variable}={value:?} is not supported: expected {expected}")]
pub struct ConfigError {
    variable: String,
    value: String,
    expected: String,
}

/// `info`, without PostgreSQL's notices ("relation already exists, skipping")
/// that every start-up's migration check produces.
const DEFAULT_LOG_FILTER: &str = "info,sqlx::postgres::notice=warn";
/// Spans sent in one export, and spans waiting for it: four times the SDK's
/// 512 and 2048. The SDK exports one batch at a time, so a receiver that
/// answers each export after a delay `d` takes at most `batch / d` spans a
/// second. With the SDK's values, orders-api at its peak drops spans against
/// a receiver answering after 50 ms; with these, none up to 100 ms
/// (`scripts/benchmark.py`, measured in docs/benchmark.md). An export of 2048 spans is
/// about 0.7 MB, a fifth of the 4 MiB a collector accepts.
const DEFAULT_EXPORT_BATCH_SIZE: usize = 2048;
const DEFAULT_QUEUE_SIZE: usize = 4 * DEFAULT_EXPORT_BATCH_SIZE;
const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);
/// The OTLP exporter's timeout for one attempt to export, its own quick
/// retries included, when `OTEL_EXPORTER_OTLP_TIMEOUT` does not say: the
/// specification's 10 s.
const DEFAULT_EXPORT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a failing trace exporter is held out for, when
/// `OTEL_BSP_BLOCK_ON_QUEUE_FULL_TIMEOUT` does not say: a failed export is
/// tried again this long, and a batch waits for room this long. A minute
/// outlasts a collector's restart (seconds) and a rolling update whose new
/// pod starts and turns ready within its probes' minute; an hourly batch can
/// afford it, and cannot afford to lose its links.
const DEFAULT_BLOCK_TIMEOUT: Duration = Duration::from_mins(1);

/// What a service's spans need of the SDK's limits, which otherwise lose data
/// without a word.
#[derive(Debug, Clone, Copy)]
pub struct SpanLimits {
    /// The most links one span carries: the link limit (the SDK keeps 128).
    pub links_per_span: u32,
    /// The smallest export queue the service's spans need: what ends
    /// while the collector is away, or before the exporter can catch up.
    pub queue_size: usize,
    /// The service's work can wait for room in the export queue (a batch
    /// job): `OTEL_BSP_ON_QUEUE_FULL` is `BLOCK` unless set to `DROP`. A
    /// service answering requests never waits: only `DROP` is accepted.
    pub can_wait: bool,
}

impl Default for SpanLimits {
    fn default() -> Self {
        Self {
            links_per_span: span_links::SDK_LINK_LIMIT,
            queue_size: DEFAULT_QUEUE_SIZE,
            can_wait: false,
        }
    }
}

/// One signal's exporter, as `OTEL_{TRACES,METRICS,LOGS}_EXPORTER` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exporter {
    /// OTLP to `OTEL_EXPORTER_OTLP_*`: the default.
    Otlp,
    /// Human-readable, on stdout.
    Console,
    /// Nothing is exported.
    None,
}

/// A signal: traces, metrics or logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    Traces,
    Metrics,
    Logs,
}

impl Signal {
    pub const ALL: [Self; 3] = [Self::Traces, Self::Metrics, Self::Logs];

    /// `TRACES`, as in `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`.
    fn upper(self) -> &'static str {
        match self {
            Self::Traces => "TRACES",
            Self::Metrics => "METRICS",
            Self::Logs => "LOGS",
        }
    }

    /// `traces`, as in `/v1/traces` and in messages.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::Traces => "traces",
            Self::Metrics => "metrics",
            Self::Logs => "logs",
        }
    }
}

/// The trace sampler.
#[derive(Debug, Clone)]
pub enum TracesSampler {
    /// One of the specification's samplers.
    Sdk(Sampler),
    /// `links`: a span is kept by its links ([`span_links::LinkSampler`]),
    /// roots without a link to a sampled span at `ratio`.
    Links { ratio: f64 },
}

/// How telemetry is assembled.
#[derive(Debug, Clone)]
pub struct TelemetryConfig {
    /// `OTEL_SERVICE_NAME`, else a `service.name` in `OTEL_RESOURCE_ATTRIBUTES`,
    /// else the service's own name.
    pub service_name: String,
    pub service_version: String,
    /// Each signal's exporter, in [`Signal::ALL`] order: none at all with
    /// `OTEL_SDK_DISABLED=true` (spans still get ids, so trace contexts are
    /// still stored and logged).
    pub exporters: [Exporter; 3],
    /// `RUST_LOG`: which logs are written, on stdout and over OTLP.
    pub log_filter: String,
    /// `OTEL_SPAN_LINK_COUNT_LIMIT`, raised to what the service's spans carry.
    pub links_per_span: u32,
    /// `OTEL_TRACES_SAMPLER` with `OTEL_TRACES_SAMPLER_ARG`.
    pub sampler: TracesSampler,
    /// `OTEL_BSP_MAX_QUEUE_SIZE`, raised to what the service needs and to
    /// four exports: the SDK starts an export only when it holds a full one
    /// (or on its delay), and a producer waiting for room must see one start.
    pub span_queue_size: usize,
    /// `OTEL_BSP_MAX_EXPORT_BATCH_SIZE`: the most spans in one export.
    pub span_export_batch_size: usize,
    /// `OTEL_BSP_ON_QUEUE_FULL`.
    pub on_queue_full: OnQueueFull,
    /// `OTEL_BSP_BLOCK_ON_QUEUE_FULL_TIMEOUT`: how long a failed trace export
    /// is tried again, and (blocking) a producer waits for room; a minute by
    /// default, `None` (0) for no bound.
    pub block_timeout: Option<Duration>,
    /// The trace exporter's `otel.component.type`, for its metrics.
    pub span_exporter_type: &'static str,
    /// `TELEMETRY_SHUTDOWN_TIMEOUT_MS`: how long the flush at exit may take,
    /// all signals together (half for traces, then half for the others).
    pub shutdown_timeout: Duration,
    /// How each signal goes over OTLP, in [`Signal::ALL`] order (the default
    /// where it does not).
    pub otlp: [OtlpTarget; 3],
}

/// Where and how one signal is exported over OTLP, resolved as the exporter
/// would resolve it, and given to it.
#[derive(Debug, Clone, Default)]
pub struct OtlpTarget {
    pub endpoint: String,
    /// OTLP/gRPC rather than HTTP/protobuf.
    pub grpc: bool,
    /// `OTEL_EXPORTER_OTLP_{SIGNAL}_TIMEOUT`, else `OTEL_EXPORTER_OTLP_TIMEOUT`:
    /// one attempt to export.
    pub timeout: Duration,
}

/// The environment: a variable's value, trimmed, when it is set and not empty.
type Variables<'a> = &'a dyn Fn(&str) -> Option<String>;

/// The `OTEL_TRACES_SAMPLER` value for [`span_links::LinkSampler`]: this
/// project's name, not one the SDK knows.
const LINKS_SAMPLER: &str = "links";

/// The samplers `OTEL_TRACES_SAMPLER` may name (the specification's, as this
/// SDK implements them, and `links`), and those that take
/// `OTEL_TRACES_SAMPLER_ARG`.
const SAMPLERS: &[&str] = &[
    "always_on",
    "always_off",
    "traceidratio",
    "parentbased_always_on",
    "parentbased_always_off",
    "parentbased_traceidratio",
    LINKS_SAMPLER,
];
const RATIO_SAMPLERS: &[&str] = &["traceidratio", "parentbased_traceidratio", LINKS_SAMPLER];

/// Numbers the SDK reads itself, and would replace by its default without a
/// word if malformed.
const SDK_NUMBERS: &[&str] = &["OTEL_BSP_SCHEDULE_DELAY", "OTEL_METRIC_EXPORT_INTERVAL"];

impl TelemetryConfig {
    /// Reads the configuration from the environment.
    pub fn from_env(service: &str, version: &str, limits: SpanLimits) -> Result<Self, ConfigError> {
        let variables = |name: &str| env::var(name).ok().map(|value| value.trim().to_owned());
        Self::from_variables(
            &|name| variables(name).filter(|value| !value.is_empty()),
            service,
            version,
            limits,
        )
    }

    pub(crate) fn from_variables(
        get: Variables<'_>,
        service: &str,
        version: &str,
        limits: SpanLimits,
    ) -> Result<Self, ConfigError> {
        check_sdk_variables(get)?;
        let log_filter = get("RUST_LOG").unwrap_or_else(|| DEFAULT_LOG_FILTER.to_owned());
        EnvFilter::builder().parse(&log_filter).map_err(|_| {
            refused(
                "RUST_LOG",
                &log_filter,
                "directives like info,orders_api=debug",
            )
        })?;
        let sdk_disabled = one_of(get, "OTEL_SDK_DISABLED", &["true", "false"])? == Some("true");
        let exporter = |signal: Signal| {
            let variable = format!("OTEL_{}_EXPORTER", signal.upper());
            Ok(
                match one_of(get, &variable, &["otlp", "console", "none"])? {
                    _ if sdk_disabled => Exporter::None,
                    Some("console") => Exporter::Console,
                    Some("none") => Exporter::None,
                    _ => Exporter::Otlp,
                },
            )
        };
        let exporters = [
            exporter(Signal::Traces)?,
            exporter(Signal::Metrics)?,
            exporter(Signal::Logs)?,
        ];
        let mut otlp: [OtlpTarget; 3] = Default::default();
        for (signal, exporter) in Signal::ALL.into_iter().zip(exporters) {
            if exporter == Exporter::Otlp {
                otlp[signal as usize] = OtlpTarget {
                    endpoint: endpoint(get, signal)?,
                    grpc: is_grpc(get, signal)?,
                    timeout: export_timeout(get, signal)?,
                };
            }
        }
        let links = number(get, "OTEL_SPAN_LINK_COUNT_LIMIT")?
            .map_or(0, |limit| u32::try_from(limit).unwrap_or(u32::MAX));
        let size = |variable, default| {
            number(get, variable).map(|size| {
                size.map_or(default, |size| usize::try_from(size).unwrap_or(usize::MAX))
            })
        };
        let queue = size("OTEL_BSP_MAX_QUEUE_SIZE", DEFAULT_QUEUE_SIZE)?;
        let export_batch = size("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", DEFAULT_EXPORT_BATCH_SIZE)?;
        let span_exporter_type = match exporters[Signal::Traces as usize] {
            Exporter::Otlp if otlp[Signal::Traces as usize].grpc => "otlp_grpc_span_exporter",
            Exporter::Otlp => "otlp_http_span_exporter",
            Exporter::Console => "opentelemetry_stdout::SpanExporter",
            Exporter::None => "",
        };
        Ok(Self {
            service_name: get("OTEL_SERVICE_NAME")
                .or_else(|| {
                    get("OTEL_RESOURCE_ATTRIBUTES")
                        .and_then(|attributes| service_name_attribute(&attributes))
                })
                .unwrap_or_else(|| service.to_owned()),
            service_version: version.to_owned(),
            exporters,
            log_filter,
            links_per_span: links.max(limits.links_per_span),
            sampler: sampler(get)?,
            span_queue_size: queue
                .max(limits.queue_size)
                .max(export_batch.saturating_mul(4)),
            span_export_batch_size: export_batch,
            on_queue_full: on_queue_full(get, limits.can_wait)?,
            block_timeout: match number(get, "OTEL_BSP_BLOCK_ON_QUEUE_FULL_TIMEOUT")? {
                None => Some(DEFAULT_BLOCK_TIMEOUT),
                Some(0) => None,
                Some(millis) => Some(Duration::from_millis(millis)),
            },
            span_exporter_type,
            shutdown_timeout: number(get, "TELEMETRY_SHUTDOWN_TIMEOUT_MS")?
                .map_or(DEFAULT_SHUTDOWN_TIMEOUT, Duration::from_millis),
            otlp,
        })
    }

    /// One attempt to export `signal`: the exporter's timeout.
    #[must_use]
    pub fn export_timeout(&self, signal: Signal) -> Duration {
        self.otlp[signal as usize].timeout
    }

    /// Whether `signal` goes over OTLP/gRPC rather than HTTP/protobuf.
    #[must_use]
    pub fn is_grpc(&self, signal: Signal) -> bool {
        self.otlp[signal as usize].grpc
    }

    /// The exporter of `signal`: none at all when the SDK is disabled.
    #[must_use]
    pub fn exporter(&self, signal: Signal) -> Exporter {
        self.exporters[signal as usize]
    }

    /// Where `signal`'s OTLP export goes (empty when it is not exported over OTLP).
    #[must_use]
    pub fn endpoint(&self, signal: Signal) -> &str {
        &self.otlp[signal as usize].endpoint
    }
}

/// Refuses what the SDK would read and ignore: a malformed number, an
/// unknown compression.
fn check_sdk_variables(get: Variables<'_>) -> Result<(), ConfigError> {
    for name in SDK_NUMBERS {
        number(get, name)?;
    }
    // The SDK ignores a value it does not know and sends uncompressed.
    one_of(get, "OTEL_EXPORTER_OTLP_COMPRESSION", &["gzip", "none"])?;
    Ok(())
}

/// The sampler `OTEL_TRACES_SAMPLER` names, with the ratio
/// `OTEL_TRACES_SAMPLER_ARG` gives: 1 by default, as the specification says,
/// but 0 for `links`. Built here and always installed: the SDK reads the same
/// variables, but only exact names and numbers, and falls back to its default
/// sampler (with a warning sent before any subscriber listens) on
/// `ParentBased_TraceIdRatio` or `"0.1 "`, which are accepted here.
fn sampler(get: Variables<'_>) -> Result<TracesSampler, ConfigError> {
    let name = one_of(get, "OTEL_TRACES_SAMPLER", SAMPLERS)?.unwrap_or("parentbased_always_on");
    let default_ratio = if name == LINKS_SAMPLER { 0.0 } else { 1.0 };
    let ratio = match get("OTEL_TRACES_SAMPLER_ARG") {
        Some(ratio) if RATIO_SAMPLERS.contains(&name) => ratio
            .parse::<f64>()
            .ok()
            .filter(|ratio| (0.0..=1.0).contains(ratio))
            .ok_or_else(|| refused("OTEL_TRACES_SAMPLER_ARG", &ratio, "a ratio from 0 to 1"))?,
        _ => default_ratio,
    };
    let parent_based = |root: Sampler| TracesSampler::Sdk(Sampler::ParentBased(Box::new(root)));
    Ok(match name {
        "always_on" => TracesSampler::Sdk(Sampler::AlwaysOn),
        "always_off" => TracesSampler::Sdk(Sampler::AlwaysOff),
        "traceidratio" => TracesSampler::Sdk(Sampler::TraceIdRatioBased(ratio)),
        "parentbased_always_off" => parent_based(Sampler::AlwaysOff),
        "parentbased_traceidratio" => parent_based(Sampler::TraceIdRatioBased(ratio)),
        LINKS_SAMPLER => TracesSampler::Links { ratio },
        // parentbased_always_on, the default.
        _ => parent_based(Sampler::AlwaysOn),
    })
}

/// The value of `variable`, lower-cased, if it is one of `allowed`.
fn one_of(
    get: Variables<'_>,
    variable: &str,
    allowed: &[&'static str],
) -> Result<Option<&'static str>, ConfigError> {
    let Some(value) = get(variable) else {
        return Ok(None);
    };
    let lower = value.to_ascii_lowercase();
    let found = allowed.iter().find(|allowed| **allowed == lower);
    found
        .map(|found| Some(*found))
        .ok_or_else(|| refused(variable, &value, &allowed.join(", ")))
}

fn number(get: Variables<'_>, variable: &str) -> Result<Option<u64>, ConfigError> {
    get(variable)
        .map(|value| {
            value
                .parse()
                .map_err(|_| refused(variable, &value, "a whole number"))
        })
        .transpose()
}

/// Whether a producer waits for room in the export queue:
/// `OTEL_BSP_ON_QUEUE_FULL`, the name the specification's proposal gives it
/// (pull request 5181), so that the day the SDK blocks by itself it keeps its
/// meaning; `BLOCK` by default for a service that can wait.
fn on_queue_full(get: Variables<'_>, can_wait: bool) -> Result<OnQueueFull, ConfigError> {
    let allowed: &[&str] = if can_wait {
        &["block", "drop"]
    } else {
        &["drop"]
    };
    let block = match one_of(get, "OTEL_BSP_ON_QUEUE_FULL", allowed)? {
        Some(value) => value == "block",
        None => can_wait,
    };
    Ok(if block {
        OnQueueFull::Block
    } else {
        OnQueueFull::Drop
    })
}

/// One attempt to export `signal`: its own variable, else the common one,
/// else 10 s; resolved here once and given to the exporter, which would read
/// `"3000 "` as unset.
fn export_timeout(get: Variables<'_>, signal: Signal) -> Result<Duration, ConfigError> {
    let own = format!("OTEL_EXPORTER_OTLP_{}_TIMEOUT", signal.upper());
    let millis = match number(get, &own)? {
        Some(millis) => Some(millis),
        None => number(get, "OTEL_EXPORTER_OTLP_TIMEOUT")?,
    };
    Ok(millis.map_or(DEFAULT_EXPORT_TIMEOUT, Duration::from_millis))
}

/// Whether `signal` goes over OTLP/gRPC (`OTEL_EXPORTER_OTLP_{SIGNAL}_PROTOCOL`,
/// else `OTEL_EXPORTER_OTLP_PROTOCOL`), rather than HTTP/protobuf.
fn is_grpc(get: Variables<'_>, signal: Signal) -> Result<bool, ConfigError> {
    let own = format!("OTEL_EXPORTER_OTLP_{}_PROTOCOL", signal.upper());
    let variable = if get(&own).is_some() {
        own
    } else {
        "OTEL_EXPORTER_OTLP_PROTOCOL".to_owned()
    };
    Ok(one_of(get, &variable, &["grpc", "http/protobuf"])? == Some("grpc"))
}

/// Where the OTLP exporter sends `signal`, resolved as it resolves it: the
/// signal's own endpoint verbatim, else the common one (plus `/v1/<signal>`
/// over HTTP), else the protocol's default port on localhost.
fn endpoint(get: Variables<'_>, signal: Signal) -> Result<String, ConfigError> {
    let grpc = is_grpc(get, signal)?;
    if let Some(own) = get(&format!("OTEL_EXPORTER_OTLP_{}_ENDPOINT", signal.upper())) {
        return Ok(own);
    }
    Ok(match (get("OTEL_EXPORTER_OTLP_ENDPOINT"), grpc) {
        (Some(common), true) => common,
        (Some(common), false) => format!("{}/v1/{}", common.trim_end_matches('/'), signal.name()),
        (None, true) => "http://localhost:4317".to_owned(),
        (None, false) => format!("http://localhost:4318/v1/{}", signal.name()),
    })
}

fn refused(variable: &str, value: &str, expected: &str) -> ConfigError {
    ConfigError {
        variable: variable.to_owned(),
        value: value.to_owned(),
        expected: expected.to_owned(),
    }
}

/// The `service.name` entry of an `OTEL_RESOURCE_ATTRIBUTES` value (`k=v,k=v`).
fn service_name_attribute(attributes: &str) -> Option<String> {
    attributes.split(',').find_map(|pair| {
        let (key, value) = pair.split_once('=')?;
        (key.trim() == "service.name" && !value.trim().is_empty()).then(|| value.trim().to_owned())
    })
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::time::Duration;

    use span_pacing::OnQueueFull;

    use super::{
        ConfigError, ENVIRONMENT_VARIABLES, Exporter, Signal, SpanLimits, TelemetryConfig,
    };

    fn config(variables: &[(&str, &str)]) -> Result<TelemetryConfig, ConfigError> {
        let variables: HashMap<&str, &str> = variables.iter().copied().collect();
        let limits = SpanLimits {
            links_per_span: 1500,
            queue_size: 10_032,
            can_wait: true,
        };
        TelemetryConfig::from_variables(
            &|name| variables.get(name).map(|value| (*value).to_owned()),
            "svc",
            "1.0",
            limits,
        )
    }

    #[test]
    fn each_signal_has_the_exporter_its_variable_names() {
        let defaults = config(&[]).unwrap();
        assert_eq!(
            Signal::ALL.map(|signal| defaults.exporter(signal)),
            [Exporter::Otlp; 3]
        );
        let chosen = config(&[
            ("OTEL_TRACES_EXPORTER", "console"),
            ("OTEL_METRICS_EXPORTER", "none"),
        ])
        .unwrap();
        assert_eq!(
            Signal::ALL.map(|signal| chosen.exporter(signal)),
            [Exporter::Console, Exporter::None, Exporter::Otlp]
        );
        let disabled = config(&[
            ("OTEL_TRACES_EXPORTER", "console"),
            ("OTEL_SDK_DISABLED", "TRUE"),
        ])
        .unwrap();
        assert_eq!(
            Signal::ALL.map(|signal| disabled.exporter(signal)),
            [Exporter::None; 3]
        );
        let error = config(&[("OTEL_LOGS_EXPORTER", "stdout")])
            .unwrap_err()
            .to_string();
        assert_eq!(
            error,
            "OTEL_LOGS_EXPORTER=\"stdout\" is not supported: expected otlp, console, none"
        );
    }

    #[test]
    fn endpoints_are_named_as_the_exporter_resolves_them() {
        let defaults = config(&[]).unwrap();
        assert_eq!(
            defaults.endpoint(Signal::Traces),
            "http://localhost:4318/v1/traces"
        );
        let grpc = config(&[("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")]).unwrap();
        assert_eq!(grpc.endpoint(Signal::Logs), "http://localhost:4317");
        let common = config(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318/"),
            ("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", "http://m:1/x"),
        ])
        .unwrap();
        assert_eq!(
            (
                common.endpoint(Signal::Logs),
                common.endpoint(Signal::Metrics)
            ),
            ("http://collector:4318/v1/logs", "http://m:1/x")
        );
        let error = config(&[("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "http/json")])
            .unwrap_err()
            .to_string();
        assert!(
            error.starts_with("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL=\"http/json\"")
                && error.ends_with("grpc, http/protobuf"),
            "{error}"
        );
    }

    #[test]
    fn limits_are_raised_to_what_the_service_needs_and_never_lowered() {
        let needed = config(&[]).unwrap();
        assert_eq!(
            (
                needed.links_per_span,
                needed.span_queue_size,
                needed.span_export_batch_size,
                needed.shutdown_timeout
            ),
            (1500, 10_032, 2048, Duration::from_secs(5))
        );
        let larger = config(&[
            ("OTEL_SPAN_LINK_COUNT_LIMIT", "5000"),
            ("OTEL_BSP_MAX_QUEUE_SIZE", "100000"),
            ("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "512"),
            ("TELEMETRY_SHUTDOWN_TIMEOUT_MS", "250"),
        ])
        .unwrap();
        assert_eq!(
            (
                larger.links_per_span,
                larger.span_queue_size,
                larger.span_export_batch_size,
                larger.shutdown_timeout
            ),
            (5000, 100_000, 512, Duration::from_millis(250))
        );
        let smaller = config(&[
            ("OTEL_SPAN_LINK_COUNT_LIMIT", "10"),
            ("OTEL_BSP_MAX_QUEUE_SIZE", "10"),
        ])
        .unwrap();
        assert_eq!(
            (smaller.links_per_span, smaller.span_queue_size),
            (1500, 10_032)
        );
        // Four exports of 4096 fit, so one starts before a waiting producer
        // has room.
        let exports = config(&[("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "4096")]).unwrap();
        assert_eq!(exports.span_queue_size, 16_384);
        assert!(
            config(&[("OTEL_SPAN_LINK_COUNT_LIMIT", "lots")])
                .unwrap_err()
                .to_string()
                .ends_with("a whole number")
        );
        assert!(config(&[("OTEL_SDK_DISABLED", "yes")]).is_err());
    }

    #[test]
    fn a_service_that_can_wait_blocks_and_a_failing_exporter_is_held_out_for_a_minute() {
        let resolved = |variables: &[(&str, &str)]| {
            let config = config(variables).unwrap();
            (config.on_queue_full, config.block_timeout)
        };
        let minute = Some(Duration::from_mins(1));
        assert_eq!(resolved(&[]), (OnQueueFull::Block, minute));
        // Not tied to the exporter's timeout: that bounds one attempt.
        let exporter = ("OTEL_EXPORTER_OTLP_TIMEOUT", "3000");
        assert_eq!(resolved(&[exporter]), (OnQueueFull::Block, minute));
        let own = ("OTEL_BSP_BLOCK_ON_QUEUE_FULL_TIMEOUT", "90000");
        let ninety = Some(Duration::from_secs(90));
        assert_eq!(resolved(&[own]).1, ninety);
        let unbounded = ("OTEL_BSP_BLOCK_ON_QUEUE_FULL_TIMEOUT", "0");
        assert_eq!(resolved(&[unbounded]).1, None, "0 is no bound");
        let on_full = |value| [("OTEL_BSP_ON_QUEUE_FULL", value)];
        assert_eq!(resolved(&on_full("DROP")).0, OnQueueFull::Drop);
        assert_eq!(resolved(&on_full("Block")).0, OnQueueFull::Block);
        let answering_requests = |value: Option<&str>| {
            let get = |name: &str| {
                value
                    .filter(|_| name == "OTEL_BSP_ON_QUEUE_FULL")
                    .map(str::to_owned)
            };
            TelemetryConfig::from_variables(&get, "api", "1.0", SpanLimits::default())
                .map(|config| (config.on_queue_full, config.block_timeout))
        };
        assert_eq!(
            answering_requests(None).unwrap(),
            (OnQueueFull::Drop, minute)
        );
        assert_eq!(
            answering_requests(Some("DROP")).unwrap().0,
            OnQueueFull::Drop
        );
        assert_eq!(
            answering_requests(Some("BLOCK")).unwrap_err().to_string(),
            "OTEL_BSP_ON_QUEUE_FULL=\"BLOCK\" is not supported: expected drop"
        );
    }

    #[test]
    fn each_exporters_timeout_is_its_own_else_the_common_one_resolved_here() {
        let timeouts = |variables: &[(&str, &str)]| {
            let config = config(variables).unwrap();
            Signal::ALL.map(|signal| config.export_timeout(signal))
        };
        let seconds = |seconds| Duration::from_secs(seconds);
        assert_eq!(timeouts(&[]), [seconds(10); 3]);
        let common = ("OTEL_EXPORTER_OTLP_TIMEOUT", "3000");
        let traces = ("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "7000");
        assert_eq!(
            timeouts(&[common, traces]),
            [seconds(7), seconds(3), seconds(3)]
        );
        let error = config(&[("OTEL_EXPORTER_OTLP_LOGS_TIMEOUT", "3 s")])
            .unwrap_err()
            .to_string();
        assert_eq!(
            error,
            "OTEL_EXPORTER_OTLP_LOGS_TIMEOUT=\"3 s\" is not supported: expected a whole number"
        );
    }

    #[test]
    fn values_the_sdk_would_ignore_are_refused() {
        for (variable, value) in [
            ("OTEL_BSP_SCHEDULE_DELAY", "soon"),
            ("OTEL_TRACES_SAMPLER", "jaeger_remote"),
            ("OTEL_EXPORTER_OTLP_COMPRESSION", "brotli"),
            ("RUST_LOG", "info,[unclosed"),
        ] {
            let error = config(&[(variable, value)]).unwrap_err().to_string();
            assert!(error.starts_with(&format!("{variable}=")), "{error}");
        }
        let ratio = [
            ("OTEL_TRACES_SAMPLER", "TraceIdRatio"),
            ("OTEL_TRACES_SAMPLER_ARG", "2"),
        ];
        assert!(
            config(&ratio)
                .unwrap_err()
                .to_string()
                .ends_with("a ratio from 0 to 1")
        );
        assert!(config(&[ratio[0], ("OTEL_TRACES_SAMPLER_ARG", "0.1")]).is_ok());
        // A protocol matters only to a signal exported over OTLP.
        let console = [
            ("OTEL_TRACES_EXPORTER", "CONSOLE"),
            ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "x"),
        ];
        assert_eq!(
            config(&console).unwrap().exporter(Signal::Traces),
            Exporter::Console
        );
    }

    #[test]
    fn the_sampler_is_built_here_from_names_the_sdk_would_miss() {
        let sampler =
            |variables: &[(&str, &str)]| format!("{:?}", config(variables).unwrap().sampler);
        assert_eq!(sampler(&[]), "Sdk(ParentBased(AlwaysOn))");
        let ratio = [
            ("OTEL_TRACES_SAMPLER", "ParentBased_TraceIdRatio"),
            ("OTEL_TRACES_SAMPLER_ARG", "0.1"),
        ];
        assert_eq!(sampler(&ratio), "Sdk(ParentBased(TraceIdRatioBased(0.1)))");
        assert_eq!(
            sampler(&ratio[..1]),
            "Sdk(ParentBased(TraceIdRatioBased(1.0)))"
        );
        let links = [("OTEL_TRACES_SAMPLER", "links"), ratio[1]];
        assert_eq!(sampler(&links), "Links { ratio: 0.1 }");
        assert_eq!(sampler(&links[..1]), "Links { ratio: 0.0 }");
        let outside = [links[0], ("OTEL_TRACES_SAMPLER_ARG", "-1")];
        assert!(config(&outside).is_err());
    }

    #[test]
    fn the_service_is_named_by_the_standard_variables() {
        let defaults = config(&[]).unwrap();
        assert_eq!(
            (defaults.service_name.as_str(), defaults.log_filter.as_str()),
            ("svc", "info,sqlx::postgres::notice=warn")
        );
        let from_resource = config(&[(
            "OTEL_RESOURCE_ATTRIBUTES",
            "deployment.environment=dev, service.name=shop ,x=y",
        )])
        .unwrap();
        assert_eq!(from_resource.service_name, "shop");
        let both = config(&[
            ("OTEL_SERVICE_NAME", "orders"),
            ("OTEL_RESOURCE_ATTRIBUTES", "service.name=shop"),
            ("RUST_LOG", "debug"),
        ])
        .unwrap();
        assert_eq!(
            (both.service_name.as_str(), both.log_filter.as_str()),
            ("orders", "debug")
        );
    }

    #[test]
    fn the_configuration_page_documents_every_variable() {
        let page = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../docs/configuration.md"
        ))
        .unwrap();
        let undocumented: Vec<&&str> = ENVIRONMENT_VARIABLES
            .iter()
            .filter(|name| !page.contains(&format!("`{name}`")))
            .collect();
        assert!(
            undocumented.is_empty(),
            "docs/configuration.md lacks {undocumented:?}"
        );
    }
}
