//! Span links across an asynchronous boundary, in one file.
//!
//! A request hands work over (here, an order stored in PostgreSQL) and a batch
//! does it later, in a trace of its own. The batch span cannot be the child of
//! every request, but it can *link* to each of them. Top to bottom:
//!
//! 1. **Capture**: where the work is handed over, [`StoredContext::of_current_span`]
//!    takes the W3C context of the span the batch will link to.
//! 2. **Store** its `traceparent` and `tracestate` with the work: two text columns.
//! 3. **Link**: in the batch, [`Links::to`] rebuilds each stored context, strictly
//!    checked ([`StoredContext::span_context`]), into a link named by its work
//!    item, and counts the items that cannot be linked. A link carries the
//!    span's ids and flags, not its trace state: see [`Links::to`].
//! 4. **Start**: [`start_with_links`] gives the links to the batch span before it
//!    starts, so the sampler sees them.
//! 5. **Size the link limit**: [`with_link_limit`], or the SDK keeps 128 links a
//!    span and drops the rest without a word.
//!
//! Because the links are there at creation, a sampler can decide by them:
//! [`sampling`] keeps a batch span when a request it links to was kept.

use std::collections::HashMap;
use std::fmt::Display;

use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{Link, SpanContext, TraceContextExt, TraceState};
use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::TracerProviderBuilder;
use tracing_opentelemetry::{OpenTelemetrySpanExt, SetParentError};

pub mod sampling;
pub use sampling::{LinkSampler, LinkSelection};

/// The link attribute naming the work item a link was made for (the
/// OpenTelemetry messaging conventions put per-message values on links).
pub const MESSAGE_ID: &str = "messaging.message.id";

/// Links one span keeps unless the tracer provider says otherwise.
pub const SDK_LINK_LIMIT: u32 = 128;

/// A span's W3C trace context as stored with the work it handed over: exactly
/// what `traceparent` and `tracestate` headers would carry, so any tool reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredContext {
    pub traceparent: String,
    /// `None` when the span carried no trace state.
    pub tracestate: Option<String>,
}

impl StoredContext {
    /// 1. Capture: the context of the current `tracing` span. `None` without an
    ///    OpenTelemetry layer, or when the span is disabled.
    #[must_use]
    pub fn of_current_span() -> Option<Self> {
        Self::of(tracing::Span::current().context().span().span_context())
    }

    /// The stored form of `span_context`; `None` if it is invalid, as there would
    /// be nothing to link to.
    #[must_use]
    pub fn of(span_context: &SpanContext) -> Option<Self> {
        if !span_context.is_valid() {
            return None;
        }
        let context = Context::new().with_remote_span_context(span_context.clone());
        let mut carrier = HashMap::new();
        TraceContextPropagator::new().inject_context(&context, &mut carrier);
        Some(Self {
            traceparent: carrier.remove("traceparent")?,
            tracestate: carrier
                .remove("tracestate")
                .filter(|state| !state.is_empty()),
        })
    }

    /// 3. The span context to link to, or `None` when the stored `traceparent`
    ///    is not valid W3C Trace Context. The SDK's propagator is lenient (it
    ///    pads a 31-digit trace id, for one): a corrupt value would become a
    ///    link to a span that does not exist.
    #[must_use]
    pub fn span_context(&self) -> Option<SpanContext> {
        if !is_valid_traceparent(&self.traceparent) {
            return None;
        }
        let mut carrier = HashMap::from([("traceparent".to_owned(), self.traceparent.clone())]);
        if let Some(tracestate) = &self.tracestate {
            carrier.insert("tracestate".to_owned(), tracestate.clone());
        }
        let context = TraceContextPropagator::new().extract(&carrier);
        let span_context = context.span().span_context().clone();
        span_context.is_valid().then_some(span_context)
    }
}

/// Most characters of a `tracestate` worth keeping: W3C Trace Context asks
/// vendors to propagate at least 512, and allows dropping members past that.
pub const TRACESTATE_MAX_CHARS: usize = 512;

/// A `tracestate` header as W3C Trace Context lets a receiver bound it: its
/// first 32 list-members; past [`TRACESTATE_MAX_CHARS`], members longer than
/// 128 characters dropped from the end first, then any from the end until it
/// fits. `None` when nothing is left. Read a client's header through this: the
/// SDK keeps up to 32 members of 512 characters each, 16 KB on every span.
#[must_use]
pub fn bounded_tracestate(header: &str) -> Option<String> {
    let mut members: Vec<&str> = header
        .split(',')
        .map(str::trim)
        .filter(|member| !member.is_empty())
        .take(32)
        .collect();
    let length = |members: &[&str]| members.iter().map(|member| member.len() + 1).sum::<usize>();
    while length(&members) > TRACESTATE_MAX_CHARS + 1 {
        let longest_last = members.iter().rposition(|member| member.len() > 128);
        members.remove(longest_last.unwrap_or(members.len() - 1));
    }
    (!members.is_empty()).then(|| members.join(","))
}

/// Checks a `traceparent` value strictly against W3C Trace Context level 1.
#[must_use]
pub fn is_valid_traceparent(value: &str) -> bool {
    fn lower_hex(field: &str, len: usize) -> bool {
        field.len() == len
            && field
                .bytes()
                .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    }
    let (head, rest) = value.split_at_checked(55).unwrap_or((value, ""));
    let fields: Vec<&str> = head.split('-').collect();
    let [version, trace_id, span_id, flags] = fields[..] else {
        return false;
    };
    // Version 00 has exactly four fields; later versions may append more.
    let version_ok = lower_hex(version, 2)
        && version != "ff"
        && (rest.is_empty() || (version != "00" && rest.starts_with('-')));
    version_ok
        && lower_hex(trace_id, 32)
        && trace_id.bytes().any(|b| b != b'0')
        && lower_hex(span_id, 16)
        && span_id.bytes().any(|b| b != b'0')
        && lower_hex(flags, 2)
}

/// 3. Link: a batch's links. For each work item, in order, a link to the span
///    that stored its context, named by the item's id in [`MESSAGE_ID`]; or
///    none, when the stored context is missing or invalid (the SDK would drop
///    such a link silently, so it is counted here instead).
#[derive(Debug, Clone, Default)]
pub struct Links(Vec<Option<Link>>);

impl Links {
    /// One entry per `(id, stored context)` item.
    ///
    /// A link names a span by its ids (and flags, for samplers); the stored
    /// trace state is for whoever continues that trace, not for a pointer to
    /// it. Left out, a link's size is fixed whatever a row holds: 10 000 links
    /// stay near 1 MB, inside the 4 MiB a collector accepts per gRPC message,
    /// where 10 000 trace states of up to 16 KB (what the SDK keeps) could not.
    pub fn to<'a, Id: Display>(
        items: impl IntoIterator<Item = (Id, Option<&'a StoredContext>)>,
    ) -> Self {
        let link = |(id, stored): (Id, Option<&StoredContext>)| {
            let stored = stored?.span_context()?;
            let span_context = SpanContext::new(
                stored.trace_id(),
                stored.span_id(),
                stored.trace_flags(),
                true,
                TraceState::NONE,
            );
            Some(Link::new(
                span_context,
                vec![KeyValue::new(MESSAGE_ID, id.to_string())],
                0,
            ))
        };
        Self(items.into_iter().map(link).collect())
    }

    /// Every link: for the span that handles the whole batch, under a
    /// standard sampler (see [`Links::selected`]).
    pub fn all(&self) -> impl Iterator<Item = &Link> {
        self.0.iter().flatten()
    }

    /// The links the span for the whole batch is given under `selection`, and
    /// with [`LinkSelection::Sampled`] the number of links left out because
    /// their span was not sampled.
    #[must_use]
    pub fn selected(&self, selection: LinkSelection) -> (Vec<&Link>, Option<usize>) {
        match selection {
            LinkSelection::All => (self.all().collect(), None),
            LinkSelection::Sampled => {
                let (sampled, unsampled): (Vec<&Link>, Vec<&Link>) =
                    self.all().partition(|link| link.span_context.is_sampled());
                (sampled, Some(unsampled.len()))
            }
        }
    }

    /// The link of the item at `index`: for a span that handles that item alone.
    #[must_use]
    pub fn of_item(&self, index: usize) -> Option<&Link> {
        self.0.get(index)?.as_ref()
    }

    /// The positions of the items that cannot be linked.
    pub fn unlinked(&self) -> impl Iterator<Item = usize> {
        self.0
            .iter()
            .enumerate()
            .filter(|(_, link)| link.is_none())
            .map(|(index, _)| index)
    }
}

/// 4. Start: gives `span` its parent and its links *at creation*, so that the
///    sampler sees them.
///
/// tracing-opentelemetry builds the OpenTelemetry span lazily, when the span is
/// first entered, or when its context is needed (a child, a log line written
/// in it). Until then it is a builder, and what is added to it is part of its
/// creation: the sampler's decision sees these links. Added after, links are
/// still exported, but the decision was made without them. Call this right
/// after creating the span.
///
/// # Panics
///
/// If `span` has already started: its links would come too late. Setting the
/// parent is refused from then on, which is how this tells late from in time.
pub fn start_with_links<'a>(
    span: &tracing::Span,
    parent: Context,
    links: impl IntoIterator<Item = &'a Link>,
) {
    // Without an OpenTelemetry layer, or for a disabled span, there is nothing
    // to link; only a span that already started is a mistake.
    if let Err(SetParentError::AlreadyStarted) = span.set_parent(parent) {
        panic!("span links must be given before the span starts (its first enter)");
    }
    for link in links {
        span.add_link_with_attributes(link.span_context.clone(), link.attributes.clone());
    }
}

/// 5. Size the link limit: `builder` with a link limit that keeps
///    `links_per_span` links on one span. Past the limit (128 by default) the
///    SDK drops links without a word; OTLP only carries `dropped_links_count`.
#[must_use]
pub fn with_link_limit(
    builder: TracerProviderBuilder,
    links_per_span: u32,
) -> TracerProviderBuilder {
    builder.with_max_links_per_span(links_per_span.max(SDK_LINK_LIMIT))
}
