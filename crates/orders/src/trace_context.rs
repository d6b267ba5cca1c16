//! The W3C trace context stored with each order.
//!
//! orders-api records the context of the order's `receive-order` span when it
//! stores the order; orders-batch reads it back to link its `process-batch`
//! span to that span. Both directions go through the W3C `TraceContextPropagator`
//! so the stored strings are exactly what a `traceparent`/`tracestate` header
//! would carry, and any other tool can read them.

use std::collections::HashMap;

use opentelemetry::Context;
use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{SpanContext, TraceContextExt};
use opentelemetry_sdk::propagation::TraceContextPropagator;

const TRACEPARENT: &str = "traceparent";
const TRACESTATE: &str = "tracestate";

/// A W3C `traceparent` and `tracestate` pair, as stored in the `orders` table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceContext {
    pub traceparent: String,
    /// `None` when the span carried no trace state.
    pub tracestate: Option<String>,
}

impl TraceContext {
    /// The carrier for a span context, or `None` if the context is invalid
    /// (there is nothing a link could point at).
    #[must_use]
    pub fn from_span_context(span_context: &SpanContext) -> Option<Self> {
        if !span_context.is_valid() {
            return None;
        }
        let context = Context::new().with_remote_span_context(span_context.clone());
        let mut carrier = HashMap::new();
        TraceContextPropagator::new().inject_context(&context, &mut carrier);
        let traceparent = carrier.remove(TRACEPARENT)?;
        let tracestate = carrier.remove(TRACESTATE).filter(|state| !state.is_empty());
        Some(Self {
            traceparent,
            tracestate,
        })
    }

    /// The carrier for the OpenTelemetry span behind the current `tracing` span.
    ///
    /// `None` when no OpenTelemetry layer is installed or the span is disabled.
    #[must_use]
    pub fn of_current_span() -> Option<Self> {
        use tracing_opentelemetry::OpenTelemetrySpanExt;
        let context = tracing::Span::current().context();
        Self::from_span_context(context.span().span_context())
    }

    /// The span context this carrier describes, marked remote, or `None` when the
    /// stored `traceparent` is malformed (a link to it would be silently dropped).
    #[must_use]
    pub fn span_context(&self) -> Option<SpanContext> {
        if !is_valid_traceparent(&self.traceparent) {
            return None;
        }
        let mut carrier = HashMap::from([(TRACEPARENT.to_owned(), self.traceparent.clone())]);
        if let Some(tracestate) = &self.tracestate {
            carrier.insert(TRACESTATE.to_owned(), tracestate.clone());
        }
        let context = TraceContextPropagator::new().extract(&carrier);
        let span_context = context.span().span_context().clone();
        span_context.is_valid().then_some(span_context)
    }
}

/// Checks a `traceparent` value strictly against W3C Trace Context level 1.
///
/// The SDK's propagator is lenient (it accepts, for example, a 31-digit trace
/// id and pads it), which would turn a corrupt value into a link to a span that
/// does not exist; callers check with this first.
#[must_use]
pub fn is_valid_traceparent(value: &str) -> bool {
    fn lower_hex(field: &str, len: usize) -> bool {
        field.len() == len
            && field
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    }
    let (head, rest) = value.split_at_checked(55).unwrap_or((value, ""));
    let mut fields = head.split('-');
    let (Some(version), Some(trace_id), Some(span_id), Some(flags), None) = (
        fields.next(),
        fields.next(),
        fields.next(),
        fields.next(),
        fields.next(),
    ) else {
        return false;
    };
    let version_ok = lower_hex(version, 2)
        && version != "ff"
        // Version 00 has exactly four fields; later versions may append more.
        && (rest.is_empty() || (version != "00" && rest.starts_with('-')));
    version_ok
        && lower_hex(trace_id, 32)
        && trace_id.bytes().any(|b| b != b'0')
        && lower_hex(span_id, 16)
        && span_id.bytes().any(|b| b != b'0')
        && lower_hex(flags, 2)
}

#[cfg(test)]
mod tests {
    use opentelemetry::trace::{SpanId, TraceFlags, TraceId, TraceState};

    use super::*;

    fn span_context(state: TraceState) -> SpanContext {
        SpanContext::new(
            TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").unwrap(),
            SpanId::from_hex("00f067aa0ba902b7").unwrap(),
            TraceFlags::SAMPLED,
            false,
            state,
        )
    }

    #[test]
    fn writes_the_w3c_header_values() {
        let state = TraceState::from_key_value([("vendor", "value")]).unwrap();
        let carrier = TraceContext::from_span_context(&span_context(state)).unwrap();
        assert_eq!(
            carrier.traceparent,
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        );
        assert_eq!(carrier.tracestate.as_deref(), Some("vendor=value"));
    }

    #[test]
    fn empty_trace_state_is_not_stored() {
        let carrier = TraceContext::from_span_context(&span_context(TraceState::NONE)).unwrap();
        assert_eq!(carrier.tracestate, None);
    }

    #[test]
    fn round_trips_ids_flags_and_state() {
        let state = TraceState::from_key_value([("a", "1"), ("b", "2")]).unwrap();
        let original = span_context(state);
        let restored = TraceContext::from_span_context(&original)
            .unwrap()
            .span_context()
            .unwrap();
        assert_eq!(restored.trace_id(), original.trace_id());
        assert_eq!(restored.span_id(), original.span_id());
        assert_eq!(restored.trace_flags(), original.trace_flags());
        assert_eq!(restored.trace_state().header(), "a=1,b=2");
        assert!(restored.is_remote());
    }

    #[test]
    fn accepts_valid_and_future_version_traceparents() {
        assert!(is_valid_traceparent(
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        ));
        assert!(is_valid_traceparent(
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00-future"
        ));
    }

    #[test]
    fn invalid_contexts_have_no_carrier() {
        assert_eq!(
            TraceContext::from_span_context(&SpanContext::empty_context()),
            None
        );
    }

    #[test]
    fn malformed_traceparents_have_no_span_context() {
        for traceparent in [
            "",
            "garbage",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1",
        ] {
            assert!(!is_valid_traceparent(traceparent), "{traceparent:?}");
            let carrier = TraceContext {
                traceparent: traceparent.to_owned(),
                tracestate: None,
            };
            assert_eq!(carrier.span_context(), None, "{traceparent:?}");
        }
    }
}
