//! Link-aware sampling: keep a batch's side of an order exactly when the
//! order's own request was kept.
//!
//! A head sampler decides when a span is created, from what the span has then:
//! its parent and its links. Each stored `traceparent` carries the sampled flag
//! of the request's span, and [`crate::start_with_links`] gives a batch span its
//! links before it starts, so [`LinkSampler`] sees which requests were kept.
//! Links given after creation would come too late for this decision.
//!
//! Which links a span is given is the other half: a link to a span that was
//! never recorded leads nowhere, so with this sampler a batch span is given
//! only the links to sampled spans ([`LinkSelection::Sampled`]).

use opentelemetry::trace::{Link, SpanKind, TraceContextExt, TraceId};
use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::trace::{Sampler, SamplingDecision, SamplingResult, ShouldSample};

/// Decides by a span's links, at its creation:
///
/// | the span has | it is |
/// |---|---|
/// | a link to a sampled span | recorded |
/// | links, none to a sampled span, and a parent | dropped: what it handled was not recorded |
/// | no link to a sampled span, and no parent | recorded with the probability `ratio` |
/// | no links, and a parent | recorded if its parent is |
///
/// Spans without links are sampled as by `parentbased_traceidratio`. Give a
/// batch span only its links to sampled spans ([`LinkSelection::Sampled`]):
/// kept for one of them, or by the ratio, it would otherwise also link to
/// spans that were never recorded.
///
/// ```
/// use opentelemetry::trace::{Link, SpanContext, SpanId, SpanKind, TraceFlags, TraceId, TraceState};
/// use opentelemetry_sdk::trace::{SamplingDecision, ShouldSample};
/// use span_links::LinkSampler;
///
/// let request = |flags| {
///     Link::with_context(SpanContext::new(
///         TraceId::from(1), SpanId::from(1), flags, true, TraceState::NONE,
///     ))
/// };
/// let decide = |links: &[Link]| {
///     let sampler = LinkSampler::new(0.0); // keep no root by chance
///     let batch = TraceId::from(2);
///     sampler.should_sample(None, batch, "process-batch", &SpanKind::Consumer, &[], links).decision
/// };
/// assert_eq!(decide(&[request(TraceFlags::SAMPLED)]), SamplingDecision::RecordAndSample);
/// assert_eq!(decide(&[request(TraceFlags::default())]), SamplingDecision::Drop);
/// ```
#[derive(Debug, Clone)]
pub struct LinkSampler {
    parent_based_ratio: Sampler,
}

impl LinkSampler {
    /// Roots without a link to a sampled span are recorded with the
    /// probability `ratio`, from 0 to 1.
    #[must_use]
    pub fn new(ratio: f64) -> Self {
        Self {
            parent_based_ratio: Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(ratio))),
        }
    }
}

impl ShouldSample for LinkSampler {
    fn should_sample(
        &self,
        parent_context: Option<&Context>,
        trace_id: TraceId,
        name: &str,
        span_kind: &SpanKind,
        attributes: &[KeyValue],
        links: &[Link],
    ) -> SamplingResult {
        let mut result = self.parent_based_ratio.should_sample(
            parent_context,
            trace_id,
            name,
            span_kind,
            attributes,
            links,
        );
        let has_parent = parent_context.is_some_and(TraceContextExt::has_active_span);
        if links.iter().any(|link| link.span_context.is_sampled()) {
            result.decision = SamplingDecision::RecordAndSample;
        } else if !links.is_empty() && has_parent {
            result.decision = SamplingDecision::Drop;
        }
        result
    }
}

/// Which of a batch's links the span for the whole batch is given.
#[derive(Debug, Clone, Copy)]
pub enum LinkSelection {
    /// Every link, whatever its span's sampled flag: for the standard samplers.
    All,
    /// Only the links to sampled spans: for [`LinkSampler`], which records a
    /// batch span when it has one.
    Sampled,
}

#[cfg(test)]
mod tests {
    use opentelemetry::trace::{SpanContext, SpanId, TraceFlags, TraceState};

    use super::*;

    fn link(sampled: bool) -> Link {
        let flags = if sampled {
            TraceFlags::SAMPLED
        } else {
            TraceFlags::default()
        };
        let context = SpanContext::new(
            TraceId::from(7),
            SpanId::from(7),
            flags,
            true,
            TraceState::NONE,
        );
        Link::with_context(context)
    }

    fn parent(sampled: bool) -> Context {
        Context::new().with_remote_span_context(link(sampled).span_context)
    }

    /// Whether `ratio`'s sampler records a span with `parent` and `links`.
    fn records(ratio: f64, parent: Option<&Context>, links: &[Link]) -> bool {
        let result = LinkSampler::new(ratio).should_sample(
            parent,
            TraceId::from(u128::MAX / 3),
            "span",
            &SpanKind::Internal,
            &[],
            links,
        );
        result.decision == SamplingDecision::RecordAndSample
    }

    #[test]
    fn a_link_to_a_sampled_span_records_whatever_the_parent_and_ratio() {
        let links = [link(false), link(true)];
        assert!(records(0.0, None, &links));
        assert!(records(0.0, Some(&parent(false)), &links));
        assert!(records(0.0, Some(&parent(true)), &links[1..]));
    }

    #[test]
    fn links_to_unsampled_spans_drop_a_child_even_of_a_sampled_parent() {
        assert!(!records(
            1.0,
            Some(&parent(true)),
            &[link(false), link(false)]
        ));
    }

    #[test]
    fn a_root_without_a_link_to_a_sampled_span_follows_the_ratio() {
        for links in [vec![], vec![link(false)]] {
            assert!(!records(0.0, None, &links));
            assert!(records(1.0, None, &links));
        }
    }

    #[test]
    fn a_child_without_links_follows_its_parent() {
        assert!(records(0.0, Some(&parent(true)), &[]));
        assert!(!records(1.0, Some(&parent(false)), &[]));
    }
}
