//! The pattern, step by step, against the real SDK: what is stored, what is
//! linked, what the sampler sees, and what the link limit keeps.

#![allow(clippy::unwrap_used, reason = "test set-up fails loudly")]

use std::sync::{Arc, Mutex};

use opentelemetry::trace::{
    Link, SpanContext, SpanId, SpanKind, TraceFlags, TraceId, TraceState, TracerProvider as _,
};
use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::trace::{
    InMemorySpanExporter, Sampler, SamplingResult, SdkTracerProvider, ShouldSample, SpanData,
};
use span_links::{LinkSelection, Links, StoredContext, is_valid_traceparent};
use span_links::{start_with_links, with_link_limit};
use tracing_subscriber::layer::SubscriberExt;

fn span_context(index: u64, state: TraceState) -> SpanContext {
    SpanContext::new(
        TraceId::from(0x4bf9_2f35_77b3_4da6_a3ce_929d_0e0e_4736_u128 + u128::from(index)),
        SpanId::from(0x00f0_67aa_0ba9_02b7 + index),
        TraceFlags::SAMPLED,
        false,
        state,
    )
}

/// What a row holding `traceparent` and no trace state stores.
fn stored(traceparent: &str) -> StoredContext {
    StoredContext {
        traceparent: traceparent.to_owned(),
        tracestate: None,
    }
}

#[test]
fn the_stored_context_is_the_w3c_header_pair_and_round_trips() {
    let state = TraceState::from_key_value([("a", "1"), ("b", "2")]).unwrap();
    let original = span_context(0, state);
    let stored = StoredContext::of(&original).unwrap();
    assert_eq!(
        stored.traceparent,
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    );
    assert_eq!(stored.tracestate.as_deref(), Some("a=1,b=2"));
    // Ids, flags and trace state, coming back remote.
    let remote = SpanContext::new(
        original.trace_id(),
        original.span_id(),
        original.trace_flags(),
        true,
        original.trace_state().clone(),
    );
    assert_eq!(stored.span_context(), Some(remote));

    let without_state = StoredContext::of(&span_context(0, TraceState::NONE)).unwrap();
    assert_eq!(without_state.tracestate, None);
    assert_eq!(StoredContext::of(&SpanContext::empty_context()), None);
}

#[test]
fn only_strictly_valid_traceparents_are_linked() {
    assert!(is_valid_traceparent(
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    ));
    assert!(is_valid_traceparent(
        "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00-future"
    ));
    for traceparent in [
        "",
        "garbage",
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
        // 31 digits: the SDK's propagator would pad it and link to nothing.
        "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
        "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
        "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1",
    ] {
        assert!(!is_valid_traceparent(traceparent), "{traceparent:?}");
        assert_eq!(stored(traceparent).span_context(), None, "{traceparent:?}");
    }
}

#[test]
fn links_name_their_item_and_report_by_id_what_cannot_be_linked() {
    let state = TraceState::from_key_value([("vendor", "x".repeat(256))]).unwrap();
    let valid = StoredContext::of(&span_context(1, state)).unwrap();
    let corrupt = stored("00-abc-def-01");
    let links = Links::to([
        ("a", Some(&valid)),
        ("b", Some(&corrupt)),
        ("c", None),
        ("d", Some(&valid)),
    ]);

    let named: Vec<String> = links
        .all()
        .map(|link| link.attributes[0].value.to_string())
        .collect();
    assert_eq!(named, ["a", "d"]);
    assert_eq!(
        links.all().next().unwrap().attributes[0].key.as_str(),
        "messaging.message.id"
    );
    assert_eq!(links.unlinked().collect::<Vec<_>>(), [&"b", &"c"]);
    let (id, link) = links.by_item().nth(3).unwrap();
    assert_eq!(id, &"d");
    let linked = &link.unwrap().span_context;
    let stored = valid.span_context().unwrap();
    assert_eq!(
        (linked.trace_id(), linked.span_id(), linked.trace_flags()),
        (stored.trace_id(), stored.span_id(), stored.trace_flags())
    );
    assert!(linked.is_remote());
    assert_eq!(
        linked.trace_state().header(),
        "",
        "a link has no trace state"
    );
}

#[test]
fn under_link_aware_sampling_a_batch_span_is_given_only_links_to_sampled_spans() {
    let sampled = StoredContext::of(&span_context(1, TraceState::NONE)).unwrap();
    let unsampled = stored(&sampled.traceparent.replace("-01", "-00"));
    let links = Links::to([("a", Some(&sampled)), ("b", Some(&unsampled)), ("c", None)]);
    let named = |given: Vec<&Link>| -> Vec<String> {
        given
            .iter()
            .map(|link| link.attributes[0].value.to_string())
            .collect()
    };
    assert_eq!(named(links.selected(LinkSelection::All)), ["a", "b"]);
    assert_eq!(named(links.selected(LinkSelection::Sampled)), ["a"]);
}

/// Records how many links each span had when the sampler decided.
#[derive(Debug, Clone, Default)]
struct LinkCountingSampler(Arc<Mutex<Vec<(String, usize)>>>);

impl ShouldSample for LinkCountingSampler {
    fn should_sample(
        &self,
        parent: Option<&Context>,
        trace_id: TraceId,
        name: &str,
        kind: &SpanKind,
        attributes: &[KeyValue],
        links: &[Link],
    ) -> SamplingResult {
        self.0.lock().unwrap().push((name.to_owned(), links.len()));
        Sampler::AlwaysOn.should_sample(parent, trace_id, name, kind, attributes, links)
    }
}

/// Runs `body` with `provider` behind `tracing`; returns what it exported.
fn traced(
    provider: &SdkTracerProvider,
    exporter: &InMemorySpanExporter,
    body: impl FnOnce(),
) -> Vec<SpanData> {
    let layer = tracing_opentelemetry::layer().with_tracer(provider.tracer("test"));
    tracing::subscriber::with_default(tracing_subscriber::registry().with(layer), body);
    provider.force_flush().unwrap();
    exporter.get_finished_spans().unwrap()
}

fn links(count: u64) -> Links<usize> {
    let stored: Vec<StoredContext> = (0..count)
        .map(|i| StoredContext::of(&span_context(i, TraceState::NONE)).unwrap())
        .collect();
    Links::to(
        stored
            .iter()
            .enumerate()
            .map(|(i, context)| (i, Some(context))),
    )
}

#[test]
fn the_sampler_sees_links_given_before_the_span_starts_and_not_after() {
    let sampler = LinkCountingSampler::default();
    let exporter = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder()
        .with_sampler(sampler.clone())
        .with_simple_exporter(exporter.clone())
        .build();
    let links = links(3);

    let spans = traced(&provider, &exporter, || {
        let at_creation = tracing::info_span!("at-creation");
        start_with_links(&at_creation, Context::new(), links.all());
        at_creation.in_scope(|| {});

        // What the lazy span allows but the pattern avoids: links after the first enter.
        let too_late = tracing::info_span!("too-late");
        too_late.in_scope(|| {});
        for link in links.all() {
            tracing_opentelemetry::OpenTelemetrySpanExt::add_link(
                &too_late,
                link.span_context.clone(),
            );
        }
    });

    let seen = sampler.0.lock().unwrap().clone();
    assert_eq!(
        seen,
        [("at-creation".to_owned(), 3), ("too-late".to_owned(), 0)]
    );
    // Both are exported with their links: only the sampler missed the late ones.
    assert!(spans.iter().all(|span| span.links.len() == 3), "{spans:?}");
}

#[test]
#[should_panic(expected = "before the span starts")]
fn links_for_a_span_that_started_are_refused() {
    let provider = SdkTracerProvider::builder().build();
    traced(&provider, &InMemorySpanExporter::default(), || {
        let started = tracing::info_span!("started");
        started.in_scope(|| {});
        start_with_links(&started, Context::new(), links(1).all());
    });
}

#[test]
fn the_link_limit_keeps_every_link_where_the_default_drops_them() {
    let links = links(300);
    for (limit, kept) in [(None, 128), (Some(300), 300)] {
        let exporter = InMemorySpanExporter::default();
        let builder = SdkTracerProvider::builder().with_simple_exporter(exporter.clone());
        let provider = match limit {
            Some(limit) => with_link_limit(builder, limit),
            None => builder,
        }
        .build();
        let spans = traced(&provider, &exporter, || {
            let batch = tracing::info_span!("process-batch");
            start_with_links(&batch, Context::new(), links.all());
            batch.in_scope(|| {});
        });
        assert_eq!(spans[0].links.len(), kept);
        assert_eq!(
            spans[0].links.dropped_count,
            300 - u32::try_from(kept).unwrap()
        );
    }
}
