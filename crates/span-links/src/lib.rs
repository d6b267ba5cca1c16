#![doc = include_str!("../README.md")]
#![warn(missing_docs)]

use std::collections::HashMap;
use std::fmt::Display;

use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{Link, SpanContext, TraceContextExt, TraceState};
use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::TracerProviderBuilder;
use tracing_opentelemetry::{OpenTelemetrySpanExt, SetParentError};

mod sampling;
pub use sampling::{LinkSampler, LinkSelection};

/// The link attribute naming the work item a link was made for (the
/// OpenTelemetry messaging conventions put per-message values on links).
pub const MESSAGE_ID: &str = "messaging.message.id";

/// Links one span keeps unless the tracer provider says otherwise.
pub const SDK_LINK_LIMIT: u32 = 128;

/// A span's W3C trace context as stored with the work it handed over: exactly
/// what `traceparent` and `tracestate` headers would carry, so any tool reads it.
///
/// ```
/// use opentelemetry::trace::{SpanContext, SpanId, TraceFlags, TraceId, TraceState};
/// use span_links::StoredContext;
///
/// let span = SpanContext::new(
///     TraceId::from(0x4bf9_2f35_77b3_4da6_a3ce_929d_0e0e_4736),
///     SpanId::from(0x00f0_67aa_0ba9_02b7),
///     TraceFlags::SAMPLED,
///     false,
///     TraceState::NONE,
/// );
/// let stored = StoredContext::of(&span).unwrap();
/// assert_eq!(stored.traceparent, "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
/// assert_eq!(stored.tracestate, None);
/// assert_eq!(stored.span_context().unwrap().span_id(), span.span_id());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredContext {
    /// `00-<trace id>-<span id>-<flags>`: the span to link to, and whether
    /// it was sampled.
    pub traceparent: String,
    /// `None` when the span carried no trace state.
    pub tracestate: Option<String>,
}

impl StoredContext {
    /// 1. Capture: the context of the current `tracing` span, to store with the
    ///    work it hands over. `None` without an OpenTelemetry layer, or when
    ///    the span is disabled.
    ///
    /// ```
    /// use opentelemetry::trace::TracerProvider as _;
    /// use opentelemetry_sdk::trace::SdkTracerProvider;
    /// use span_links::StoredContext;
    /// use tracing_subscriber::layer::SubscriberExt;
    ///
    /// let tracer = SdkTracerProvider::builder().build().tracer("producer");
    /// let subscriber = tracing_subscriber::registry()
    ///     .with(tracing_opentelemetry::layer().with_tracer(tracer));
    /// tracing::subscriber::with_default(subscriber, || {
    ///     assert_eq!(StoredContext::of_current_span(), None, "outside any span");
    ///     let _request = tracing::info_span!("receive-order").entered();
    ///     let stored = StoredContext::of_current_span().unwrap();
    ///     assert!(stored.traceparent.ends_with("-01"), "sampled");
    /// });
    /// ```
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

    /// The span context to link to, or `None` when the stored `traceparent` is
    /// not valid W3C Trace Context ([`is_valid_traceparent`]). The SDK's
    /// propagator is lenient (it pads a 31-digit trace id, for one): a corrupt
    /// value would become a link to a span that does not exist.
    ///
    /// ```
    /// use span_links::StoredContext;
    ///
    /// let stored = |traceparent: &str| StoredContext {
    ///     traceparent: traceparent.to_owned(),
    ///     tracestate: Some("vendor=value".to_owned()),
    /// };
    /// let valid = stored("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
    /// let context = valid.span_context().unwrap();
    /// assert!(context.is_remote() && context.is_sampled());
    /// assert_eq!(context.trace_state().header(), "vendor=value");
    ///
    /// let corrupt = stored("00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01");
    /// assert_eq!(corrupt.span_context(), None);
    /// ```
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

/// Checks a `traceparent` value strictly against W3C Trace Context level 1:
/// what [`StoredContext::span_context`] links to, and a check for a
/// `traceparent` header before the lenient propagator reads it.
///
/// ```
/// use span_links::is_valid_traceparent;
///
/// assert!(is_valid_traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"));
/// // Upper-case hex, a zero span id, a 31-digit trace id:
/// assert!(!is_valid_traceparent("00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01"));
/// assert!(!is_valid_traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01"));
/// assert!(!is_valid_traceparent("00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01"));
/// ```
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

/// 3. Link: a batch's links, one for each work item whose stored context is
///    valid, to the span that stored it, named by the item's id in
///    [`MESSAGE_ID`]. The items that cannot be linked (a missing or invalid
///    stored context) are reported by their ids: `tracing-opentelemetry` would
///    drop such a link without a word.
///
/// ```
/// use span_links::{Links, StoredContext};
///
/// let valid = StoredContext {
///     traceparent: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".to_owned(),
///     tracestate: None,
/// };
/// let corrupt = StoredContext { traceparent: "garbage".to_owned(), tracestate: None };
/// let links = Links::to([(17, Some(&valid)), (18, Some(&corrupt)), (19, None)]);
///
/// assert_eq!(links.all().count(), 1);
/// assert_eq!(links.all().next().unwrap().attributes[0].value.as_str(), "17");
/// assert_eq!(links.unlinked().collect::<Vec<_>>(), [&18, &19]);
/// ```
#[derive(Debug, Clone)]
pub struct Links<Id> {
    items: Vec<(Id, Option<Link>)>,
}

impl<Id: Display> Links<Id> {
    /// The links for `items`, pairs of a work item's id and its stored context.
    ///
    /// A link names a span by its ids (and flags, for samplers); the stored
    /// trace state is for whoever continues that trace, not for a pointer to
    /// it. Left out, a link's size is fixed whatever a row holds: 10 000 links
    /// stay near 1 MB, inside the 4 MiB a collector accepts per gRPC message,
    /// where 10 000 trace states of up to 16 KB (what the SDK keeps) could not.
    pub fn to<'a>(items: impl IntoIterator<Item = (Id, Option<&'a StoredContext>)>) -> Self {
        let link = |id: &Id, stored: Option<&StoredContext>| {
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
        let items = items.into_iter().map(|(id, stored)| {
            let link = link(&id, stored);
            (id, link)
        });
        Self {
            items: items.collect(),
        }
    }
}

impl<Id> Links<Id> {
    /// Every link: for a batch span under a standard sampler.
    pub fn all(&self) -> impl Iterator<Item = &Link> {
        self.items.iter().filter_map(|(_, link)| link.as_ref())
    }

    /// The links a batch span is given under `selection`: every link, or only
    /// those to sampled spans (for [`LinkSampler`]).
    #[must_use]
    pub fn selected(&self, selection: LinkSelection) -> Vec<&Link> {
        let sampled_only = matches!(selection, LinkSelection::Sampled);
        self.all()
            .filter(|link| !sampled_only || link.span_context.is_sampled())
            .collect()
    }

    /// Each item's id with its link, in the order given: for a span that
    /// handles one item.
    pub fn by_item(&self) -> impl Iterator<Item = (&Id, Option<&Link>)> {
        self.items.iter().map(|(id, link)| (id, link.as_ref()))
    }

    /// The ids of the items that cannot be linked, in the order given.
    pub fn unlinked(&self) -> impl Iterator<Item = &Id> {
        self.by_item()
            .filter(|(_, link)| link.is_none())
            .map(|(id, _)| id)
    }
}

/// 4. Start: gives `span` its parent and its links *at creation*, so that the
///    sampler sees them.
///
/// `tracing-opentelemetry` builds the OpenTelemetry span lazily, when the span
/// is first entered, or when its context is needed (a child, a log line written
/// in it). Until then it is a builder, and what is added to it is part of its
/// creation: the sampler's decision sees these links. Added after, links are
/// still exported, but the decision was made without them. Call this right
/// after creating the span.
///
/// ```
/// use opentelemetry::Context;
/// use opentelemetry::trace::TracerProvider as _;
/// use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider};
/// use span_links::{Links, StoredContext, start_with_links};
/// use tracing_subscriber::layer::SubscriberExt;
///
/// let exporter = InMemorySpanExporter::default();
/// let provider = SdkTracerProvider::builder().with_simple_exporter(exporter.clone()).build();
/// let subscriber = tracing_subscriber::registry()
///     .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("batch")));
/// let stored = StoredContext {
///     traceparent: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".to_owned(),
///     tracestate: None,
/// };
/// let links = Links::to([("job-1", Some(&stored))]);
///
/// tracing::subscriber::with_default(subscriber, || {
///     let batch = tracing::info_span!("process-batch");
///     start_with_links(&batch, Context::new(), links.all());
///     batch.in_scope(|| { /* the work */ });
/// });
/// let spans = exporter.get_finished_spans().unwrap();
/// assert_eq!(spans[0].links.links[0].span_context.span_id().to_string(), "00f067aa0ba902b7");
/// ```
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
///    `links_per_span` links on one span (and never fewer than the SDK's 128).
///    Past the limit the SDK drops links without a word; OTLP only carries
///    `dropped_links_count`.
///
/// ```
/// use opentelemetry::Context;
/// use opentelemetry::trace::TracerProvider as _;
/// use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider};
/// use span_links::{Links, StoredContext, start_with_links, with_link_limit};
/// use tracing_subscriber::layer::SubscriberExt;
///
/// const BATCH_MAX_SIZE: u32 = 1000;
/// let exporter = InMemorySpanExporter::default();
/// let provider = with_link_limit(SdkTracerProvider::builder(), BATCH_MAX_SIZE)
///     .with_simple_exporter(exporter.clone())
///     .build();
/// let stored: Vec<StoredContext> = (1..=BATCH_MAX_SIZE)
///     .map(|job| StoredContext {
///         traceparent: format!("00-{:032x}-{:016x}-01", job, job),
///         tracestate: None,
///     })
///     .collect();
/// let links = Links::to(stored.iter().enumerate().map(|(job, context)| (job, Some(context))));
/// let subscriber = tracing_subscriber::registry()
///     .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("batch")));
/// tracing::subscriber::with_default(subscriber, || {
///     let batch = tracing::info_span!("process-batch");
///     start_with_links(&batch, Context::new(), links.all());
///     batch.in_scope(|| {});
/// });
/// let spans = exporter.get_finished_spans().unwrap();
/// assert_eq!(spans[0].links.len(), 1000, "the SDK's default keeps 128");
/// ```
#[must_use]
pub fn with_link_limit(
    builder: TracerProviderBuilder,
    links_per_span: u32,
) -> TracerProviderBuilder {
    builder.with_max_links_per_span(links_per_span.max(SDK_LINK_LIMIT))
}
