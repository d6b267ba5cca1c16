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

/// A telemetry variable holds a value this build cannot honour.
#[derive(Debug, thiserror::Error)]
#[error("{variable}={value:?} is not supported: expected {expected}")]
pub struct ConfigError {
    variable: &'static str,
    value: String,
    expected: String,
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
    /// `RUST_LOG`, default `info`.
    pub log_filter: String,
}

impl TelemetryConfig {
    /// Reads the configuration from the environment.
    pub fn from_env(default_service_name: &str, version: &str) -> Result<Self, ConfigError> {
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
            log_filter: non_empty("RUST_LOG").unwrap_or_else(|| "info".to_owned()),
        })
    }
}

fn non_empty(variable: &str) -> Option<String> {
    env::var(variable)
        .ok()
        .filter(|value| !value.trim().is_empty())
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
    use super::service_name_attribute;

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
