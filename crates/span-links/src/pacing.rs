//! A batch that never outruns its exporter (the `pacing` feature).
//!
//! What the SDK lacks: its batch span processor drops a span when its queue is
//! full and tells no one how full the queue is, so a job that makes spans
//! faster than the collector takes them loses them, and with a batch span
//! every link it carries. The specification has only a proposal to block
//! instead (opentelemetry-specification issue 5178; pull request 5181 names
//! the switch `OTEL_BSP_ON_QUEUE_FULL`, `DROP` or `BLOCK`, and its bound
//! `OTEL_BSP_BLOCK_ON_QUEUE_FULL_TIMEOUT`); `BatchConfigBuilder` has no such
//! option. [`SpanQueue`] puts it in front of the SDK's processor:
//!
//! - it admits a span only when the queue has room, the spans of an export
//!   counting until the export ends, so the processor never drops one and
//!   every drop is counted here;
//! - under [`OnQueueFull::Block`] a producer waits for room *before* it makes
//!   its spans ([`SpanQueue::room_for`]), however slowly and unevenly the
//!   exporter goes, until it shows that it is failing: an export ended in an
//!   error (after the exporter's own retries), or none ended within the block
//!   timeout, which an exporter keeping its own timeout never lets pass. Then
//!   nobody waits until an export succeeds. Ending a span never blocks: one the
//!   queue cannot take is dropped, and counted;
//! - every span not exported is counted once, for one reason: dropped at a
//!   full queue, in a failed export (spans a receiver rejects included), or
//!   still queued ([`SpanTally`]); the same counts are the semantic
//!   conventions' SDK metrics ([`SpanQueue::observe`]).
//!
//! A job whose collector takes 20 ms an export makes 200 spans in batches of
//! 10 through a queue of 64: waiting for room before each batch, it loses
//! none; the SDK's way, it loses most.
//!
//! ```
//! use std::time::Duration;
//!
//! use opentelemetry::trace::{Span as _, Tracer as _, TracerProvider as _};
//! use opentelemetry_sdk::error::OTelSdkResult;
//! use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData, SpanExporter};
//! use span_links::pacing::{OnQueueFull, SpanQueue};
//!
//! #[derive(Debug)]
//! struct FarAway(InMemorySpanExporter); // a collector across an ocean
//!
//! impl SpanExporter for FarAway {
//!     async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
//!         std::thread::sleep(Duration::from_millis(20)); // on the processor's thread
//!         self.0.export(batch).await
//!     }
//! }
//!
//! let run = |on_full| {
//!     let received = InMemorySpanExporter::default();
//!     let (provider, queue) = SpanQueue::builder(FarAway(received.clone()))
//!         .with_capacity(64)
//!         .with_export_batch_size(16)
//!         .on_queue_full(on_full)
//!         .build(SdkTracerProvider::builder());
//!     let tracer = provider.tracer("batch");
//!     let runtime = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
//!     let tally = queue.tally();
//!     runtime.block_on(async {
//!         for _batch in 0..20 {
//!             queue.room_for(10).await; // before the batch makes its spans
//!             for _item in 0..10 {
//!                 tracer.start("reconcile").end();
//!             }
//!         }
//!         queue.drain().await; // its spans sent before it reports
//!     });
//!     provider.force_flush().unwrap(); // the SDK's way waits for nothing
//!     (tally.lost().total(), received.get_finished_spans().unwrap().len())
//! };
//!
//! let block = OnQueueFull::Block { timeout: Duration::from_secs(10) };
//! assert_eq!(run(block), (0, 200), "none lost, all received");
//! let (lost, received) = run(OnQueueFull::Drop);
//! assert!(lost > 100 && received + lost as usize == 200, "{lost} lost");
//! ```

use std::num::NonZeroU32;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use opentelemetry::metrics::Meter;
use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, SdkTracerProvider, Span, SpanData, SpanExporter,
    SpanProcessor, TracerProviderBuilder,
};
use tokio::sync::Notify;
use tracing::field::{Field, Visit};
use tracing_subscriber::Layer;
use tracing_subscriber::filter::filter_fn;
use tracing_subscriber::layer::Context as LayerContext;
use tracing_subscriber::registry::LookupSpan;

/// What a producer does when its spans would not fit: the values of
/// `OTEL_BSP_ON_QUEUE_FULL` in the specification's proposal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnQueueFull {
    /// Never wait: the SDK's behaviour, for services that answer requests.
    Drop,
    /// Wait for room while the exporter works, however slowly.
    Block {
        /// How long a producer waits without any export ending before it
        /// takes the exporter for failing (`OTEL_BSP_BLOCK_ON_QUEUE_FULL_TIMEOUT`):
        /// give it twice the exporter's own timeout (`OTEL_EXPORTER_OTLP_TIMEOUT`,
        /// 10 s by default): opentelemetry-otlp gives an export up at its
        /// timeout, but a retry it began just before may run one timeout more.
        timeout: Duration,
    },
}

/// Spans not exported, each counted once, for one reason.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Lost {
    /// Refused at a full queue.
    pub dropped: u64,
    /// In an export that failed, or rejected by the receiver in a partial
    /// success.
    pub failed: u64,
    /// Still queued, or in an export not yet ended.
    pub queued: u64,
}

impl Lost {
    /// All of them.
    #[must_use]
    pub fn total(&self) -> u64 {
        self.dropped + self.failed + self.queued
    }
}

/// The SDK's queue and export sizes.
const SDK_QUEUE_SIZE: usize = 2048;
const SDK_EXPORT_BATCH_SIZE: usize = 512;

/// The state shared by the processor, its exporter, the queue's handles and
/// their tallies.
#[derive(Debug)]
struct Counts {
    capacity: usize,
    on_full: OnQueueFull,
    /// Spans admitted ever: the next one's number.
    admitted: AtomicU64,
    /// Admitted and not yet through an export; admission is decided on it.
    queued: AtomicUsize,
    /// Spans ever handed to the exporter; those in the export under way, and
    /// those of them a receiver rejected.
    submitted: AtomicU64,
    inflight: AtomicUsize,
    rejected_in_flight: AtomicU64,
    /// Spans dropped at a full queue, exported, in failed exports, and
    /// rejected by a receiver in exports that succeeded.
    dropped: AtomicU64,
    exported: AtomicU64,
    failed_exports: AtomicU64,
    rejected: AtomicU64,
    /// An export failed, or none ended while a producer waited its timeout.
    failing: AtomicBool,
    export_ended: Notify,
    flushing: AtomicBool,
    ledger: Mutex<Ledger>,
    drop_lines: DefaultDirectRateLimiter,
    failing_lines: DefaultDirectRateLimiter,
}

/// What a tally reads together, under one lock, so that a span is never
/// both still queued and failed, or neither. Spans are numbered in the order
/// they are admitted, and the processor exports them in the order it gets
/// them: the same order, but for spans ended at the same moment on two
/// threads, which may swap places at a tally's boundary.
#[derive(Debug, Default)]
struct Ledger {
    /// Spans through an export, exported or failed: the number of the first
    /// span not yet through.
    through: u64,
    tallies: Vec<Weak<TallyCounts>>,
}

impl Ledger {
    /// Counts into every tally still alive, and forgets the others.
    fn each_tally(&mut self, count: impl Fn(&TallyCounts)) {
        self.tallies.retain(|tally| match tally.upgrade() {
            Some(tally) => {
                count(&tally);
                true
            }
            None => false,
        });
    }
}

impl Counts {
    fn new(capacity: usize, on_full: OnQueueFull) -> Self {
        // The drop line, and the failing line, each at most once a minute.
        let lines = || RateLimiter::direct(Quota::per_minute(NonZeroU32::MIN));
        Self {
            capacity,
            on_full,
            admitted: AtomicU64::new(0),
            queued: AtomicUsize::new(0),
            submitted: AtomicU64::new(0),
            inflight: AtomicUsize::new(0),
            rejected_in_flight: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            exported: AtomicU64::new(0),
            failed_exports: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
            failing: AtomicBool::new(false),
            export_ended: Notify::new(),
            flushing: AtomicBool::new(false),
            ledger: Mutex::default(),
            drop_lines: lines(),
            failing_lines: lines(),
        }
    }

    fn ledger(&self) -> std::sync::MutexGuard<'_, Ledger> {
        self.ledger.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Takes a place in the queue, if one is free.
    fn admit(&self) -> bool {
        let admitted = self
            .queued
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |queued| {
                (queued < self.capacity).then_some(queued + 1)
            })
            .is_ok();
        if admitted {
            self.admitted.fetch_add(1, Ordering::AcqRel);
        }
        admitted
    }

    /// Counts a span refused at a full queue, in every tally too: a lock
    /// taken only when spans are being lost.
    fn drop_one(&self) {
        let dropped = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
        self.ledger().each_tally(|tally| {
            tally.dropped.fetch_add(1, Ordering::Relaxed);
        });
        if self.drop_lines.check().is_ok() {
            tracing::warn!(
                dropped,
                "spans dropped: the trace export queue ({} spans, OTEL_BSP_MAX_QUEUE_SIZE) is full; \
                 {dropped} dropped so far; said at most once a minute",
                self.capacity
            );
        }
    }

    fn export_started(&self, spans: usize) {
        self.submitted.fetch_add(spans as u64, Ordering::Relaxed);
        self.inflight.store(spans, Ordering::Release);
        self.rejected_in_flight.store(0, Ordering::Release);
    }

    /// An export of `spans` spans ended: all failed, or all exported but
    /// those the receiver rejected (taken to be its first spans: the receiver
    /// does not say which).
    fn export_ended(&self, spans: usize, result: &OTelSdkResult) {
        let count = spans as u64;
        let failed = if result.is_ok() {
            let rejected = self.rejected_in_flight.swap(0, Ordering::AcqRel).min(count);
            self.rejected.fetch_add(rejected, Ordering::Relaxed);
            rejected
        } else {
            self.failed_exports.fetch_add(count, Ordering::Relaxed);
            count
        };
        self.exported.fetch_add(count - failed, Ordering::Relaxed);
        {
            let mut ledger = self.ledger();
            let first = ledger.through;
            ledger.through += count;
            ledger.each_tally(|tally| tally.count_failed(first..first + failed));
        }
        self.inflight.store(0, Ordering::Release);
        self.queued.fetch_sub(spans, Ordering::AcqRel);
        match result {
            Ok(()) => self.failing.store(false, Ordering::Release),
            Err(error) => self.fail(&format!("an export failed: {error}")),
        }
        self.export_ended.notify_waiters();
    }

    /// Takes the exporter for failing, saying so once it starts, at most
    /// once a minute. Waiting producers hear of it when the export ends.
    fn fail(&self, why: &str) {
        let newly = !self.failing.swap(true, Ordering::AcqRel);
        if newly && self.failing_lines.check().is_ok() {
            tracing::warn!(
                "the trace exporter is failing ({why}): producers no longer wait for it until an \
                 export succeeds, and spans that do not fit its queue are dropped and counted; \
                 said at most once a minute"
            );
        }
    }

    fn queued(&self) -> u64 {
        self.queued.load(Ordering::Acquire) as u64
    }
}

/// The counts of one tally: what became of the spans numbered from `first`
/// on, and of those dropped, while it lives.
#[derive(Debug)]
struct TallyCounts {
    first: u64,
    dropped: AtomicU64,
    failed: AtomicU64,
}

impl TallyCounts {
    fn count_failed(&self, spans: std::ops::Range<u64>) {
        let overlap = spans.end.saturating_sub(spans.start.max(self.first));
        if overlap > 0 {
            self.failed.fetch_add(overlap, Ordering::Relaxed);
        }
    }
}

/// The queue of ended spans before the trace exporter: room to wait for,
/// tallies of what was lost, a drain. Cheap to clone. The default is the
/// queue of a provider that exports no spans: always room, nothing lost.
#[derive(Debug, Clone)]
pub struct SpanQueue {
    counts: Arc<Counts>,
    /// To flush the processor: the provider it was built into.
    provider: Option<SdkTracerProvider>,
    /// `otel.component.type` of the processor's exporter, for the metrics.
    exporter_type: &'static str,
}

impl Default for SpanQueue {
    fn default() -> Self {
        Self {
            counts: Arc::new(Counts::new(usize::MAX, OnQueueFull::Drop)),
            provider: None,
            exporter_type: "",
        }
    }
}

/// Builds a tracer provider whose spans go through a [`SpanQueue`].
#[derive(Debug)]
pub struct SpanQueueBuilder<E> {
    exporter: E,
    capacity: usize,
    export_batch_size: usize,
    on_full: OnQueueFull,
    exporter_type: &'static str,
}

impl SpanQueue {
    /// A queue exporting through `exporter`, with the SDK's sizes (a queue of
    /// 2048 spans, exports of 512), never waiting.
    pub fn builder<E: SpanExporter + 'static>(exporter: E) -> SpanQueueBuilder<E> {
        SpanQueueBuilder {
            exporter,
            capacity: SDK_QUEUE_SIZE,
            export_batch_size: SDK_EXPORT_BATCH_SIZE,
            on_full: OnQueueFull::Drop,
            exporter_type: std::any::type_name::<E>(),
        }
    }
}

impl<E: SpanExporter + 'static> SpanQueueBuilder<E> {
    /// Spans the queue holds (`OTEL_BSP_MAX_QUEUE_SIZE`), those being
    /// exported included.
    #[must_use]
    pub fn with_capacity(self, spans: usize) -> Self {
        Self {
            capacity: spans,
            ..self
        }
    }

    /// The most spans in one export (`OTEL_BSP_MAX_EXPORT_BATCH_SIZE`).
    #[must_use]
    pub fn with_export_batch_size(self, spans: usize) -> Self {
        Self {
            export_batch_size: spans,
            ..self
        }
    }

    /// Whether [`SpanQueue::room_for`] waits (`OTEL_BSP_ON_QUEUE_FULL`).
    #[must_use]
    pub fn on_queue_full(self, on_full: OnQueueFull) -> Self {
        Self { on_full, ..self }
    }

    /// The exporter's `otel.component.type` in the metrics, such as
    /// `otlp_grpc_span_exporter`; by default its Rust type's name, as the
    /// conventions say when no standard value applies.
    #[must_use]
    pub fn with_exporter_type(self, component_type: &'static str) -> Self {
        Self {
            exporter_type: component_type,
            ..self
        }
    }

    /// `provider` with the batch span processor, built, and its queue. The
    /// processor's schedule delay is the SDK's (`OTEL_BSP_SCHEDULE_DELAY`).
    pub fn build(self, provider: TracerProviderBuilder) -> (SdkTracerProvider, SpanQueue) {
        let counts = Arc::new(Counts::new(self.capacity, self.on_full));
        let exporter = Counted {
            inner: self.exporter,
            counts: Arc::clone(&counts),
        };
        let batch = BatchConfigBuilder::default()
            .with_max_queue_size(self.capacity)
            .with_max_export_batch_size(self.export_batch_size)
            .build();
        let processor = Admitting {
            inner: BatchSpanProcessor::builder(exporter)
                .with_batch_config(batch)
                .build(),
            counts: Arc::clone(&counts),
        };
        let provider = provider.with_span_processor(processor).build();
        let queue = SpanQueue {
            counts,
            provider: Some(provider.clone()),
            exporter_type: self.exporter_type,
        };
        (provider, queue)
    }
}

impl SpanQueue {
    /// Waits until `spans` more spans fit in the queue (or it is empty), under
    /// [`OnQueueFull::Block`] and while the exporter is not failing. Call it
    /// before making the spans: ending them never waits.
    pub async fn room_for(&self, spans: usize) {
        let room = self.counts.capacity.saturating_sub(spans) as u64;
        self.wait_until(|queued| queued <= room).await;
    }

    /// Has the processor export what it holds now, rather than after its
    /// schedule delay, and waits as [`SpanQueue::room_for`] does until the
    /// queue is empty: the spans of a piece of work sent before it reports.
    pub async fn drain(&self) {
        if self.counts.queued() > 0 && !self.counts.failing.load(Ordering::Acquire) {
            self.flush();
            self.wait_until(|queued| queued == 0).await;
        }
    }

    /// A tally of the spans admitted or dropped from now on, for as long as
    /// it lives: what one piece of work lost, not another's.
    #[must_use]
    pub fn tally(&self) -> SpanTally {
        let own = Arc::new(TallyCounts {
            first: self.counts.admitted.load(Ordering::Acquire),
            dropped: AtomicU64::new(0),
            failed: AtomicU64::new(0),
        });
        self.counts.ledger().tallies.push(Arc::downgrade(&own));
        SpanTally {
            counts: Arc::clone(&self.counts),
            own,
        }
    }

    /// Has the processor export what it holds, one flush at a time, on a
    /// thread of its own: the SDK's flush blocks, up to 5 s on a hung
    /// exporter, and no async runtime should wait on it.
    fn flush(&self) {
        let Some(provider) = self.provider.clone() else {
            return;
        };
        if self.counts.flushing.swap(true, Ordering::AcqRel) {
            return;
        }
        let counts = Arc::clone(&self.counts);
        let flushing = std::thread::Builder::new()
            .name("span-queue-flush".to_owned())
            .spawn(move || {
                // Each export's outcome is counted by the exporter.
                let _flushed = provider.force_flush();
                counts.flushing.store(false, Ordering::Release);
            });
        if flushing.is_err() {
            self.counts.flushing.store(false, Ordering::Release);
        }
    }

    async fn wait_until(&self, done: impl Fn(u64) -> bool) {
        let OnQueueFull::Block { timeout } = self.counts.on_full else {
            return;
        };
        let counts = &self.counts;
        loop {
            let ended = counts.export_ended.notified();
            tokio::pin!(ended);
            ended.as_mut().enable();
            if done(counts.queued()) || counts.failing.load(Ordering::Acquire) {
                return;
            }
            // Rather than after the processor's schedule delay.
            self.flush();
            if tokio::time::timeout(timeout, ended).await.is_err() {
                counts.fail(&format!("no export ended in {timeout:?}"));
                counts.export_ended.notify_waiters();
                return;
            }
        }
    }

    /// A `tracing` layer that counts the spans a receiver rejects in an OTLP
    /// partial success, which opentelemetry-otlp reports only as a WARN event
    /// of its own, among the failed. Add it to the subscriber beside the
    /// others: it sees no other event.
    #[must_use]
    pub fn rejections_layer<S>(&self) -> impl Layer<S> + Send + Sync + 'static
    where
        S: tracing::Subscriber + for<'span> LookupSpan<'span>,
    {
        Rejections(Arc::clone(&self.counts)).with_filter(filter_fn(|metadata| {
            metadata.target() == "opentelemetry-otlp"
                && (metadata.name() == "TonicTracesClient.PartialSuccess"
                    || metadata.name() == "HttpTraceClient.PartialSuccess")
        }))
    }

    /// Registers on `meter` the SDK metrics of the semantic conventions
    /// (1.42.0, development status): `otel.sdk.processor.span.processed`
    /// (`error.type=queue_full` for drops), `.queue.size`, `.queue.capacity`,
    /// `otel.sdk.exporter.span.exported` (`error.type` for failed and
    /// rejected spans) and `.inflight`, each with `otel.component.type` and
    /// `otel.component.name`.
    pub fn observe(&self, meter: &Meter) {
        observe_processor(meter, &self.counts);
        observe_exporter(meter, &self.counts, self.exporter_type);
    }
}

/// The processor's metrics: spans processed (submitted to the exporter, or
/// dropped), the queue's size and capacity.
fn observe_processor(meter: &Meter, counts: &Arc<Counts>) {
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
fn observe_exporter(meter: &Meter, counts: &Arc<Counts>, component_type: &'static str) {
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

/// What became of the spans admitted or dropped since [`SpanQueue::tally`].
#[derive(Debug)]
pub struct SpanTally {
    counts: Arc<Counts>,
    own: Arc<TallyCounts>,
}

impl SpanTally {
    /// The spans not exported so far: read it once the work's spans are
    /// through (after [`SpanQueue::drain`], or the provider's shutdown), or
    /// the spans still queued count as lost.
    #[must_use]
    pub fn lost(&self) -> Lost {
        let ledger = self.counts.ledger();
        let admitted = self.counts.admitted.load(Ordering::Acquire);
        Lost {
            dropped: self.own.dropped.load(Ordering::Relaxed),
            failed: self.own.failed.load(Ordering::Relaxed),
            queued: admitted.saturating_sub(ledger.through.max(self.own.first)),
        }
    }
}

/// The batch span processor, given only the spans its queue has room for.
#[derive(Debug)]
struct Admitting {
    inner: BatchSpanProcessor,
    counts: Arc<Counts>,
}

impl SpanProcessor for Admitting {
    fn on_start(&self, span: &mut Span, cx: &Context) {
        self.inner.on_start(span, cx);
    }

    fn on_end(&self, span: SpanData) {
        if self.counts.admit() {
            self.inner.on_end(span);
        } else {
            self.counts.drop_one();
        }
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

/// The exporter, counting each export's spans through when it ends.
#[derive(Debug)]
struct Counted<E> {
    inner: E,
    counts: Arc<Counts>,
}

impl<E: SpanExporter> SpanExporter for Counted<E> {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let export = InFlight {
            counts: &self.counts,
            spans: batch.len(),
            ended: false,
        };
        export.counts.export_started(export.spans);
        let result = self.inner.export(batch).await;
        export.end(result)
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

/// An export under way: counted as failed if it is dropped before it ends
/// (an export abandoned by its caller), so the queue never keeps its place.
struct InFlight<'a> {
    counts: &'a Counts,
    spans: usize,
    ended: bool,
}

impl InFlight<'_> {
    fn end(mut self, result: OTelSdkResult) -> OTelSdkResult {
        self.ended = true;
        self.counts.export_ended(self.spans, &result);
        result
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        if !self.ended {
            let abandoned = Err(OTelSdkError::InternalFailure("export abandoned".to_owned()));
            self.counts.export_ended(self.spans, &abandoned);
        }
    }
}

/// Counts the spans rejected in the export under way, from the exporter's
/// report of a partial success.
struct Rejections(Arc<Counts>);

impl<S: tracing::Subscriber> Layer<S> for Rejections {
    fn on_event(&self, event: &tracing::Event<'_>, _: LayerContext<'_, S>) {
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
        self.0
            .rejected_in_flight
            .fetch_add(rejected.0, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests fail loudly")]

    use std::sync::Arc;
    use std::time::Duration;

    use opentelemetry_sdk::error::OTelSdkError;
    use tokio::time::Instant;

    use super::{Counts, Lost, OnQueueFull, SpanQueue};

    const TIMEOUT: Duration = Duration::from_secs(10);

    fn queue(capacity: usize) -> SpanQueue {
        let on_full = OnQueueFull::Block { timeout: TIMEOUT };
        SpanQueue {
            counts: Arc::new(Counts::new(capacity, on_full)),
            ..SpanQueue::default()
        }
    }

    /// An export of `spans` spans, started now, ending `after` ms later.
    fn export(queue: &SpanQueue, spans: usize, after: u64, succeeds: bool) {
        let counts = Arc::clone(&queue.counts);
        counts.export_started(spans);
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(after)).await;
            let result = if succeeds {
                Ok(())
            } else {
                Err(OTelSdkError::InternalFailure("refused".to_owned()))
            };
            counts.export_ended(spans, &result);
        });
    }

    fn failing(queue: &SpanQueue) -> bool {
        queue
            .counts
            .failing
            .load(std::sync::atomic::Ordering::Acquire)
    }

    /// On tokio's paused clock: waits take no real time.
    #[tokio::test(start_paused = true)]
    async fn a_producer_waits_however_slow_the_exports_and_stops_only_when_they_fail() {
        let queue = queue(4);
        let started = Instant::now();
        let since = || started.elapsed().as_millis();
        assert!((0..4).all(|_| queue.counts.admit()));
        // 1 s, then more than twice that, then nearly the timeout.
        for (after, at) in [(1000, 1000), (5000, 6000), (9000, 15_000)] {
            export(&queue, 2, after, true);
            queue.room_for(2).await;
            assert_eq!(since(), at, "waited for an export of {after} ms");
            assert!(queue.counts.admit() && queue.counts.admit());
        }
        export(&queue, 2, 100, false);
        queue.room_for(2).await;
        assert!(failing(&queue), "an export ended in an error");
        assert!(queue.counts.admit() && queue.counts.admit());
        queue.room_for(2).await;
        assert_eq!(since(), 15_100, "no wait while failing");
        export(&queue, 2, 50, true);
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(!failing(&queue), "a success clears it");
        assert!(queue.counts.admit() && queue.counts.admit());
        // Hung: no export ends within the timeout.
        export(&queue, 2, 60_000, true);
        queue.room_for(2).await;
        assert_eq!(since(), 15_200 + 10_000, "the timeout, once");
        assert!(failing(&queue));
        queue.drain().await;
        assert_eq!(since(), 25_200, "nor a drain");
    }

    #[tokio::test]
    async fn a_waiting_producer_has_the_queue_exported_now_not_after_the_schedule_delay() {
        use opentelemetry::trace::{Tracer as _, TracerProvider as _};
        use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider};

        // 15 spans, fewer than an export holds: the processor would send
        // them after its 5 s delay, and the waiter take it for failing at 1 s.
        let (provider, queue) = SpanQueue::builder(InMemorySpanExporter::default())
            .with_capacity(20)
            .with_export_batch_size(20)
            .on_queue_full(OnQueueFull::Block {
                timeout: Duration::from_secs(1),
            })
            .build(SdkTracerProvider::builder());
        let tracer = provider.tracer("test");
        (0..15).for_each(|_| drop(tracer.start("span")));
        queue.room_for(10).await;
        assert!(
            !failing(&queue),
            "room came from an export, not the timeout"
        );
        assert_eq!(queue.counts.queued(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn each_span_not_exported_is_counted_once_by_the_tallies_it_ended_in() {
        let queue = queue(10);
        let process = queue.tally();
        let first_run = queue.tally();
        assert!((0..4).all(|_| queue.counts.admit()));
        queue.counts.export_started(2);
        queue
            .counts
            .export_ended(2, &Err(OTelSdkError::InternalFailure("down".to_owned())));
        let lost = |dropped, failed, queued| Lost {
            dropped,
            failed,
            queued,
        };
        assert_eq!(first_run.lost(), lost(0, 2, 2), "two failed, two queued");
        drop(first_run);
        let second_run = queue.tally();
        assert!(queue.counts.admit() && queue.counts.admit());
        // Two of the first run's spans and two of the second's, in one export.
        queue.counts.export_started(4);
        queue
            .counts
            .export_ended(4, &Err(OTelSdkError::InternalFailure("down".to_owned())));
        queue.counts.drop_one();
        assert_eq!(second_run.lost(), lost(1, 2, 0), "its own spans only");
        assert!((0..4).all(|_| queue.counts.admit()));
        assert_eq!(second_run.lost(), lost(1, 2, 4));
        queue.counts.export_started(4);
        queue
            .counts
            .rejected_in_flight
            .store(1, std::sync::atomic::Ordering::Release);
        queue.counts.export_ended(4, &Ok(()));
        assert_eq!(
            second_run.lost(),
            lost(1, 3, 0),
            "one rejected, three delivered"
        );
        assert_eq!(
            process.lost(),
            lost(1, 7, 0),
            "every span of the process once"
        );
        assert_eq!(process.lost().total(), 8);
    }
}
