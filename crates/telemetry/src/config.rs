//! The telemetry configuration read from the standard OpenTelemetry variables.
//!
//! The OTLP exporters read the endpoint, headers, timeout and compression
//! variables themselves; this module reads only what decides how telemetry is
//! assembled, and rejects values the exporters would silently ignore.

use std::env;

/// Protocol values this build can export with.
const SUPPORTED_PROTOCOLS: &[&str] = &["grpc", "http/protobuf"];
const PROTOCOL_VARIABLES: &[&str] = &[
    "OTEL_EXPORTER_OTLP_PROTOCOL",
    "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
    "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL",
    "OTEL_EXPORTER_OTLP_LOGS_PROTOCOL",
];

/// Every environment variable a service's telemetry honours: the ones this
/// crate reads and the ones the OpenTelemetry SDK and the OTLP exporters read
/// themselves. This is the documented surface (README, "Configuration"); the
/// deployment tests hold docker-compose.yml to it.
pub const ENVIRONMENT_VARIABLES: &[&str] = &[
    "OTEL_SERVICE_NAME",
    "OTEL_RESOURCE_ATTRIBUTES",
    "OTEL_SDK_DISABLED",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT",
    "OTEL_EXPORTER_OTLP_LOGS_ENDPOINT",
    "OTEL_EXPORTER_OTLP_PROTOCOL",
    "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
    "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL",
    "OTEL_EXPORTER_OTLP_LOGS_PROTOCOL",
    "OTEL_EXPORTER_OTLP_HEADERS",
    "OTEL_EXPORTER_OTLP_TIMEOUT",
    "OTEL_TRACES_SAMPLER",
    "OTEL_TRACES_SAMPLER_ARG",
    "OTEL_BSP_SCHEDULE_DELAY",
    "OTEL_BSP_MAX_QUEUE_SIZE",
    "OTEL_BSP_MAX_EXPORT_BATCH_SIZE",
    "OTEL_SPAN_LINK_COUNT_LIMIT",
    "OTEL_METRIC_EXPORT_INTERVAL",
    "RUST_LOG",
];

/// A telemetry variable holds a value this build cannot honour.
#[derive(Debug, thiserror::Error)]
#[error("{variable}={value:?} is not supported: expected {expected}")]
pub struct ConfigError {
    variable: &'static str,
    value: String,
    expected: String,
}

/// `info`, without PostgreSQL's notices ("relation already exists, skipping")
/// that every start-up's migration check produces.
const DEFAULT_LOG_FILTER: &str = "info,sqlx::postgres::notice=warn";

/// The SDK's defaults: 128 links per span, 2048 spans in the export queue.
const DEFAULT_LINKS_PER_SPAN: u32 = 128;
const DEFAULT_QUEUE_SIZE: usize = 2048;

/// How much a service puts into one span and one burst of spans; sizes the
/// SDK limits that otherwise lose data silently.
#[derive(Debug, Clone, Copy)]
pub struct SpanVolume {
    /// The most links one span carries. The SDK keeps 128 by default and drops
    /// the rest without a word; only `dropped_links_count` would tell.
    pub max_links_per_span: u32,
    /// The most spans ended in one burst, before the exporter can catch up. The
    /// batch processor drops spans when its queue is full, so the queue holds
    /// several bursts.
    pub max_burst: usize,
}

impl SpanVolume {
    /// A service that links little and ends spans a few at a time.
    pub const SMALL: Self = Self {
        max_links_per_span: DEFAULT_LINKS_PER_SPAN,
        max_burst: DEFAULT_QUEUE_SIZE / 4,
    };
}

/// How telemetry is assembled.
#[derive(Debug, Clone)]
pub struct TelemetryConfig {
    /// `service.name`: `OTEL_SERVICE_NAME`, else a `service.name` in
    /// `OTEL_RESOURCE_ATTRIBUTES`, else the service's own default.
    pub service_name: String,
    pub service_version: String,
    /// `OTEL_SDK_DISABLED=true`: export nothing. Spans still get ids, so trace
    /// contexts are still stored and logged.
    pub sdk_disabled: bool,
    /// `RUST_LOG`, default `info` (PostgreSQL notices only from `warn`).
    pub log_filter: String,
    /// The span link limit: `OTEL_SPAN_LINK_COUNT_LIMIT` or the SDK default,
    /// raised to what the service needs.
    pub max_links_per_span: u32,
    /// The export queue: `OTEL_BSP_MAX_QUEUE_SIZE` or the SDK default, raised
    /// to four bursts.
    pub span_queue_size: usize,
}

impl TelemetryConfig {
    /// Reads the configuration from the environment.
    pub fn from_env(
        default_service_name: &str,
        version: &str,
        volume: SpanVolume,
    ) -> Result<Self, ConfigError> {
        Self::from_variables(
            |variable| env::var(variable).ok(),
            default_service_name,
            version,
            volume,
        )
    }

    /// Reads the configuration from `variables` (the environment, or a test's map).
    fn from_variables(
        variables: impl Fn(&str) -> Option<String>,
        default_service_name: &str,
        version: &str,
        volume: SpanVolume,
    ) -> Result<Self, ConfigError> {
        let non_empty =
            |variable: &str| variables(variable).filter(|value| !value.trim().is_empty());
        let number = |variable: &'static str| -> Result<Option<u64>, ConfigError> {
            non_empty(variable)
                .map(|value| {
                    value.trim().parse().map_err(|_| ConfigError {
                        variable,
                        value,
                        expected: "a whole number".to_owned(),
                    })
                })
                .transpose()
        };
        for &variable in PROTOCOL_VARIABLES {
            if let Some(value) = non_empty(variable)
                && !SUPPORTED_PROTOCOLS.contains(&value.trim().to_ascii_lowercase().as_str())
            {
                return Err(ConfigError {
                    variable,
                    value,
                    expected: SUPPORTED_PROTOCOLS.join(" or "),
                });
            }
        }
        let sdk_disabled = match non_empty("OTEL_SDK_DISABLED") {
            None => false,
            Some(value) => match value.trim().to_ascii_lowercase().as_str() {
                "true" => true,
                "false" => false,
                _ => {
                    return Err(ConfigError {
                        variable: "OTEL_SDK_DISABLED",
                        value,
                        expected: "true or false".to_owned(),
                    });
                }
            },
        };
        let service_name = non_empty("OTEL_SERVICE_NAME")
            .or_else(|| {
                non_empty("OTEL_RESOURCE_ATTRIBUTES")
                    .and_then(|attributes| service_name_attribute(&attributes))
            })
            .unwrap_or_else(|| default_service_name.to_owned());
        Ok(Self {
            service_name,
            service_version: version.to_owned(),
            sdk_disabled,
            log_filter: non_empty("RUST_LOG").unwrap_or_else(|| DEFAULT_LOG_FILTER.to_owned()),
            max_links_per_span: number("OTEL_SPAN_LINK_COUNT_LIMIT")?
                .map_or(DEFAULT_LINKS_PER_SPAN, |limit| {
                    u32::try_from(limit).unwrap_or(u32::MAX)
                })
                .max(volume.max_links_per_span),
            span_queue_size: number("OTEL_BSP_MAX_QUEUE_SIZE")?
                .map_or(DEFAULT_QUEUE_SIZE, |size| {
                    usize::try_from(size).unwrap_or(usize::MAX)
                })
                .max(volume.max_burst.saturating_mul(4)),
        })
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

    use super::{ConfigError, SpanVolume, TelemetryConfig, service_name_attribute};

    fn config(
        variables: &[(&str, &str)],
        volume: SpanVolume,
    ) -> Result<TelemetryConfig, ConfigError> {
        let variables: HashMap<String, String> = variables
            .iter()
            .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
            .collect();
        TelemetryConfig::from_variables(|name| variables.get(name).cloned(), "svc", "1.0", volume)
    }

    const BATCH: SpanVolume = SpanVolume {
        max_links_per_span: 1500,
        max_burst: 1508,
    };

    #[test]
    fn span_limits_are_raised_to_what_the_service_needs() {
        let small = config(&[], SpanVolume::SMALL).unwrap();
        assert_eq!(
            (small.max_links_per_span, small.span_queue_size),
            (128, 2048)
        );
        let batch = config(&[], BATCH).unwrap();
        assert_eq!(
            (batch.max_links_per_span, batch.span_queue_size),
            (1500, 6032)
        );
        // A larger setting from the environment wins; a smaller one cannot drop links.
        let larger = config(
            &[
                ("OTEL_SPAN_LINK_COUNT_LIMIT", "5000"),
                ("OTEL_BSP_MAX_QUEUE_SIZE", "100000"),
            ],
            BATCH,
        )
        .unwrap();
        assert_eq!(
            (larger.max_links_per_span, larger.span_queue_size),
            (5000, 100_000)
        );
        let smaller = config(
            &[
                ("OTEL_SPAN_LINK_COUNT_LIMIT", "10"),
                ("OTEL_BSP_MAX_QUEUE_SIZE", "10"),
            ],
            BATCH,
        )
        .unwrap();
        assert_eq!(
            (smaller.max_links_per_span, smaller.span_queue_size),
            (1500, 6032)
        );
    }

    #[test]
    fn malformed_values_are_refused() {
        let error = config(&[("OTEL_SPAN_LINK_COUNT_LIMIT", "lots")], BATCH).unwrap_err();
        assert_eq!(
            error.to_string(),
            "OTEL_SPAN_LINK_COUNT_LIMIT=\"lots\" is not supported: expected a whole number"
        );
        let error = config(&[("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json")], BATCH).unwrap_err();
        assert!(
            error.to_string().contains("grpc or http/protobuf"),
            "{error}"
        );
        assert!(config(&[("OTEL_SDK_DISABLED", "yes")], BATCH).is_err());
    }

    #[test]
    fn service_name_and_log_filter_have_defaults() {
        let defaults = config(&[], BATCH).unwrap();
        assert_eq!(defaults.service_name, "svc");
        assert_eq!(defaults.log_filter, "info,sqlx::postgres::notice=warn");
        let named = config(
            &[
                ("OTEL_RESOURCE_ATTRIBUTES", "service.name=shop"),
                ("RUST_LOG", "debug"),
            ],
            BATCH,
        )
        .unwrap();
        assert_eq!(
            (named.service_name.as_str(), named.log_filter.as_str()),
            ("shop", "debug")
        );
        let both = config(
            &[
                ("OTEL_SERVICE_NAME", "orders"),
                ("OTEL_RESOURCE_ATTRIBUTES", "service.name=shop"),
            ],
            BATCH,
        )
        .unwrap();
        assert_eq!(both.service_name, "orders");
    }

    #[test]
    fn finds_service_name_among_resource_attributes() {
        assert_eq!(
            service_name_attribute("deployment.environment=dev, service.name=shop ,x=y").as_deref(),
            Some("shop")
        );
        assert_eq!(service_name_attribute("service.namespace=a"), None);
        assert_eq!(service_name_attribute("service.name="), None);
    }
}
