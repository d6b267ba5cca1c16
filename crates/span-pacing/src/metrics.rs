//! The semantic conventions' SDK metrics (1.42.0, development status) of
//! the queue and its exporter, read from the counts when the meter collects.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use opentelemetry::KeyValue;
use opentelemetry::metrics::Meter;

use crate::counts::Counts;

/// The processor's metrics: spans processed (submitted to the exporter, or
/// dropped), the queue's size and capacity.
pub(crate) fn observe_processor(meter: &Meter, counts: &Arc<Counts>) {
    let attributes = component("batching_span_processor");
    let (processed, ok) = (Arc::clone(counts), attributes.clone());
    let dropped = with_error_type(&attributes, "queue_full");
    meter
        .u64_observable_counter("otel.sdk.processor.span.processed")
        .with_unit("{span}")
        .with_description("The number of spans for which the processing has finished, either successful or failed.")
        .with_callback(move |observer| {
            observer.observe(processed.submitted.load(Ordering::Relaxed), &ok);
            observer.observe(processed.dropped.load(Ordering::Relaxed), &dropped);
        })
        .build();
    let (queued, size) = (Arc::clone(counts), attributes.clone());
    meter
        .i64_observable_up_down_counter("otel.sdk.processor.span.queue.size")
        .with_unit("{span}")
        .with_description(
            "The number of spans in the queue of a given instance of an SDK span processor.",
        )
        .with_callback(move |observer| {
            let waiting = queued.queued.load(Ordering::Relaxed);
            let exporting = queued.inflight.load(Ordering::Relaxed);
            observer.observe(as_i64(waiting.saturating_sub(exporting)), &size);
        })
        .build();
    let capacity = as_i64(counts.capacity);
    meter
        .i64_observable_up_down_counter("otel.sdk.processor.span.queue.capacity")
        .with_unit("{span}")
        .with_description("The maximum number of spans the queue of a given instance of an SDK span processor can hold.")
        .with_callback(move |observer| observer.observe(capacity, &attributes))
        .build();
}

/// The exporter's metrics: spans through an export, by outcome, and in one.
pub(crate) fn observe_exporter(meter: &Meter, counts: &Arc<Counts>, component_type: &'static str) {
    let attributes = component(component_type);
    let (exported, ok) = (Arc::clone(counts), attributes.clone());
    let rejected = with_error_type(&attributes, "rejected");
    let failed = with_error_type(&attributes, "_OTHER");
    meter
        .u64_observable_counter("otel.sdk.exporter.span.exported")
        .with_unit("{span}")
        .with_description(
            "The number of spans for which the export has finished, either successful or failed.",
        )
        .with_callback(move |observer| {
            let counts = &exported;
            observer.observe(counts.exported.load(Ordering::Relaxed), &ok);
            observer.observe(counts.rejected.load(Ordering::Relaxed), &rejected);
            observer.observe(counts.failed_exports.load(Ordering::Relaxed), &failed);
        })
        .build();
    let inflight = Arc::clone(counts);
    meter
        .i64_observable_up_down_counter("otel.sdk.exporter.span.inflight")
        .with_unit("{span}")
        .with_description("The number of spans which were passed to the exporter, but that have not been exported yet (neither successful, nor failed).")
        .with_callback(move |observer| {
            observer.observe(as_i64(inflight.inflight.load(Ordering::Relaxed)), &attributes);
        })
        .build();
}

/// `attributes` and `error.type`.
fn with_error_type(attributes: &[KeyValue], error_type: &'static str) -> Vec<KeyValue> {
    let error = KeyValue::new("error.type", error_type);
    attributes.iter().cloned().chain([error]).collect()
}

/// `otel.component.type` and `otel.component.name` of a component, the name
/// by the conventions' pattern `type/instance`, one instance of each here.
fn component(component_type: &'static str) -> Vec<KeyValue> {
    vec![
        KeyValue::new("otel.component.type", component_type),
        KeyValue::new("otel.component.name", format!("{component_type}/0")),
    ]
}

fn as_i64(count: usize) -> i64 {
    i64::try_from(count).unwrap_or(i64::MAX)
}
