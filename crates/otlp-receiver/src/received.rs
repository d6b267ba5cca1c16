//! The flattened, per-item views of what the receiver accepted.

use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::common::v1::{InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::logs::v1::LogRecord;
use opentelemetry_proto::tonic::metrics::v1::Metric;
use opentelemetry_proto::tonic::trace::v1::Span;
use opentelemetry_proto::tonic::trace::v1::span::{Link, SpanKind};

use crate::hex;

/// Resource attribute key holding the service name.
const SERVICE_NAME: &str = "service.name";

/// Looks up `key` in an OTLP attribute list and returns its value, if set.
fn find<'a>(attributes: &'a [KeyValue], key: &str) -> Option<&'a Value> {
    attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
        .and_then(|value| value.value.as_ref())
}

fn as_str(value: Option<&Value>) -> Option<&str> {
    match value {
        Some(Value::StringValue(s)) => Some(s),
        _ => None,
    }
}

fn as_int(value: Option<&Value>) -> Option<i64> {
    match value {
        Some(Value::IntValue(i)) => Some(*i),
        _ => None,
    }
}

/// Hex of an optional id field: `None` when empty or all zero (the OTLP
/// encodings of "no id").
fn optional_id(bytes: &[u8]) -> Option<String> {
    if bytes.iter().all(|b| *b == 0) {
        None
    } else {
        Some(hex(bytes))
    }
}

/// The `service.name` resource attribute, or `""` if absent.
pub(crate) fn service_name(resource: &[KeyValue]) -> String {
    as_str(find(resource, SERVICE_NAME))
        .unwrap_or_default()
        .to_owned()
}

/// One span as received, together with its resource and scope.
///
/// The attribute helpers return [`Value`] (the `AnyValue.value` oneof enum,
/// `opentelemetry_proto::tonic::common::v1::any_value::Value`) because it can
/// be matched directly, e.g. `Some(Value::StringValue(s))`.
#[derive(Debug, Clone, PartialEq)]
pub struct ReceivedSpan {
    /// The `service.name` resource attribute, `""` if absent.
    pub service_name: String,
    /// All resource attributes of the exporting process.
    pub resource: Vec<KeyValue>,
    /// The instrumentation scope the span was recorded under (default if
    /// the exporter sent none).
    pub scope: InstrumentationScope,
    /// The span exactly as it arrived.
    pub span: Span,
}

impl ReceivedSpan {
    /// The span name.
    #[must_use]
    pub fn name(&self) -> &str {
        &self.span.name
    }

    /// The trace id as lowercase hex (32 chars for a valid id).
    #[must_use]
    pub fn trace_id(&self) -> String {
        hex(&self.span.trace_id)
    }

    /// The span id as lowercase hex (16 chars for a valid id).
    #[must_use]
    pub fn span_id(&self) -> String {
        hex(&self.span.span_id)
    }

    /// The parent span id as lowercase hex; `None` for a root span (empty or
    /// all-zero parent id).
    #[must_use]
    pub fn parent_span_id(&self) -> Option<String> {
        optional_id(&self.span.parent_span_id)
    }

    /// The span kind; unknown values map to `Unspecified`.
    #[must_use]
    pub fn kind(&self) -> SpanKind {
        self.span.kind()
    }

    /// The value of span attribute `key`, if present.
    #[must_use]
    pub fn attribute(&self, key: &str) -> Option<&Value> {
        find(&self.span.attributes, key)
    }

    /// The value of span attribute `key` if it is a string.
    #[must_use]
    pub fn str_attribute(&self, key: &str) -> Option<&str> {
        as_str(self.attribute(key))
    }

    /// The value of span attribute `key` if it is an integer.
    #[must_use]
    pub fn int_attribute(&self, key: &str) -> Option<i64> {
        as_int(self.attribute(key))
    }

    /// The value of resource attribute `key`, if present.
    #[must_use]
    pub fn resource_attribute(&self, key: &str) -> Option<&Value> {
        find(&self.resource, key)
    }

    /// The span's links; use [`hex`] on `link.trace_id` / `link.span_id`.
    #[must_use]
    pub fn links(&self) -> &[Link] {
        &self.span.links
    }
}

/// One log record as received, together with its resource and scope.
#[derive(Debug, Clone, PartialEq)]
pub struct ReceivedLog {
    /// The `service.name` resource attribute, `""` if absent.
    pub service_name: String,
    /// All resource attributes of the exporting process.
    pub resource: Vec<KeyValue>,
    /// The instrumentation scope the record was emitted under (default if
    /// the exporter sent none).
    pub scope: InstrumentationScope,
    /// The log record exactly as it arrived.
    pub record: LogRecord,
}

impl ReceivedLog {
    /// The correlated trace id as lowercase hex; `None` if the record carries
    /// no (or an all-zero) trace id.
    #[must_use]
    pub fn trace_id(&self) -> Option<String> {
        optional_id(&self.record.trace_id)
    }

    /// The correlated span id as lowercase hex; `None` if the record carries
    /// no (or an all-zero) span id.
    #[must_use]
    pub fn span_id(&self) -> Option<String> {
        optional_id(&self.record.span_id)
    }

    /// The body rendered as text: strings as-is, scalars via `Display`,
    /// bytes as hex, arrays and key/value lists via `Debug`; `None` if the
    /// record has no body.
    #[must_use]
    pub fn body_text(&self) -> Option<String> {
        let value = self.record.body.as_ref()?.value.as_ref()?;
        Some(match value {
            Value::StringValue(s) => s.clone(),
            Value::BoolValue(b) => b.to_string(),
            Value::IntValue(i) => i.to_string(),
            Value::DoubleValue(d) => d.to_string(),
            Value::BytesValue(bytes) => hex(bytes),
            other => format!("{other:?}"),
        })
    }

    /// The value of log attribute `key`, if present.
    #[must_use]
    pub fn attribute(&self, key: &str) -> Option<&Value> {
        find(&self.record.attributes, key)
    }

    /// The value of log attribute `key` if it is a string.
    #[must_use]
    pub fn str_attribute(&self, key: &str) -> Option<&str> {
        as_str(self.attribute(key))
    }

    /// The value of log attribute `key` if it is an integer.
    #[must_use]
    pub fn int_attribute(&self, key: &str) -> Option<i64> {
        as_int(self.attribute(key))
    }

    /// The severity text (e.g. `INFO`), `""` if not set.
    #[must_use]
    pub fn severity_text(&self) -> &str {
        &self.record.severity_text
    }
}

/// One metric (with all its data points) as received, together with its
/// resource and scope.
#[derive(Debug, Clone, PartialEq)]
pub struct ReceivedMetric {
    /// The `service.name` resource attribute, `""` if absent.
    pub service_name: String,
    /// All resource attributes of the exporting process.
    pub resource: Vec<KeyValue>,
    /// The instrumentation scope (meter) the metric belongs to (default if
    /// the exporter sent none).
    pub scope: InstrumentationScope,
    /// The metric exactly as it arrived.
    pub metric: Metric,
}

impl ReceivedMetric {
    /// The metric name.
    #[must_use]
    pub fn name(&self) -> &str {
        &self.metric.name
    }
}
