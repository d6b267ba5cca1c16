//! The one place that reads opentelemetry-otlp's report of a partial
//! success: a receiver that accepts an export but for some of its spans. The
//! exporter returns success and says how many it rejected only in a WARN
//! event of its own (`TonicTracesClient.PartialSuccess`,
//! `HttpTraceClient.PartialSuccess`, field `rejected_spans`); these names
//! are not an API, so a test holds them to the exporter's version.

use span_pacing::SpanQueue;
use tracing::field::{Field, Visit};
use tracing_subscriber::Layer;
use tracing_subscriber::filter::filter_fn;
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::LookupSpan;

/// A layer that counts into `queue` the spans a receiver rejects. It sees no
/// other event.
pub(crate) fn rejections_layer<S>(queue: SpanQueue) -> impl Layer<S> + Send + Sync + 'static
where
    S: tracing::Subscriber + for<'span> LookupSpan<'span>,
{
    Rejections(queue).with_filter(filter_fn(|metadata| {
        metadata.target() == "opentelemetry-otlp"
            && (metadata.name() == "TonicTracesClient.PartialSuccess"
                || metadata.name() == "HttpTraceClient.PartialSuccess")
    }))
}

struct Rejections(SpanQueue);

impl<S: tracing::Subscriber> Layer<S> for Rejections {
    fn on_event(&self, event: &tracing::Event<'_>, _: Context<'_, S>) {
        struct RejectedSpans(u64);
        impl Visit for RejectedSpans {
            fn record_i64(&mut self, field: &Field, value: i64) {
                self.record_u64(field, u64::try_from(value).unwrap_or(0));
            }
            fn record_u64(&mut self, field: &Field, value: u64) {
                if field.name() == "rejected_spans" {
                    self.0 = value;
                }
            }
            fn record_debug(&mut self, _: &Field, _: &dyn std::fmt::Debug) {}
        }
        let mut rejected = RejectedSpans(0);
        event.record(&mut rejected);
        self.0.count_rejected(rejected.0);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests fail loudly")]

    /// The opentelemetry-otlp release whose event names are read here.
    const READ_FROM: &str = "0.33.1";

    /// orders-batch's `spans_a_collector_rejects_are_counted_once_everywhere`
    /// checks the count over the wire; this one fails on the upgrade itself.
    #[test]
    fn the_event_names_read_are_those_of_the_opentelemetry_otlp_in_use() {
        let lock =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../Cargo.lock"))
                .unwrap();
        let in_use = lock
            .split("\n[[package]]\n")
            .find(|package| package.starts_with("name = \"opentelemetry-otlp\"\n"))
            .and_then(|package| package.lines().nth(1))
            .unwrap();
        assert_eq!(
            in_use,
            format!("version = \"{READ_FROM}\""),
            "opentelemetry-otlp changed: check that it still reports a partial success as \
             crates/telemetry/src/rejections.rs reads it, then update READ_FROM"
        );
    }
}
