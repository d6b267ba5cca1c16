//! The queue of ended spans waiting for the trace exporter, counted.
//!
//! The SDK's batch span processor drops a span when its queue is full, and
//! says so once, at the first drop, then with the total at shutdown. It tells
//! its caller neither how full the queue is nor whether the exporter keeps
//! up, so a producer that could slow down cannot, and a drop goes unseen in
//! the output of a run. [`SpanQueue`] counts in front of it instead:
//!
//! - it admits a span only when the queue has room (those being exported
//!   count until their export ends), so the processor never drops one itself
//!   and every drop is counted here;
//! - a producer that can wait, waits for room ([`SpanQueue::room_for`]) while
//!   the exporter finishes exports, however slowly; it does not wait on an
//!   exporter whose last export failed, or that finished none in
//!   [`STALLED_AFTER`];
//! - drops are seen: a WARN line with the running count at most once a
//!   minute, the specification's `otel.sdk.processor.span.processed` and
//!   `otel.sdk.exporter.span.exported` counters, and [`SpanQueue::lost`].

use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use opentelemetry::metrics::Meter;
use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, SdkTracerProvider, Span, SpanData, SpanExporter,
    SpanProcessor,
};
use opentelemetry_semantic_conventions::attribute::ERROR_TYPE;
use opentelemetry_semantic_conventions::metric::{
    OTEL_SDK_EXPORTER_SPAN_EXPORTED, OTEL_SDK_PROCESSOR_SPAN_PROCESSED,
};
use tokio::sync::Notify;

/// How long a producer waits for room while no export finishes: then the
/// exporter is taken to be stalled (a collector that accepts connections and
/// never answers) and nobody waits on it until an export succeeds. A
/// collector answers an export in milliseconds, and the slowest receiver the
/// tests pace to in a quarter of a second; the OTLP exporter
/// itself gives up on an export only after `OTEL_EXPORTER_OTLP_TIMEOUT`, 10 s
/// by default, far longer than a run should stand still.
pub const STALLED_AFTER: Duration = Duration::from_secs(1);

/// The most often drops are said.
const DROP_LINE_PERIOD: Duration = Duration::from_mins(1);

/// The counts shared by the processor, its exporter and every [`SpanQueue`].
#[derive(Debug)]
struct Counts {
    /// The processor's queue size.
    capacity: usize,
    /// Spans admitted and not yet through an export: queued, or being exported.
    queued: AtomicUsize,
    /// Refused because the queue was full.
    dropped: AtomicU64,
    /// Through an export that succeeded, or one that failed.
    exported: AtomicU64,
    failed: AtomicU64,
    /// The last export failed, or none finished while a producer waited.
    failing: AtomicBool,
    /// Woken whenever an export finishes.
    export_finished: Notify,
    /// Lets one line about drops through per period.
    drop_lines: DefaultDirectRateLimiter,
}

impl Counts {
    fn new(capacity: usize, drop_line_period: Duration) -> Self {
        let lines = Quota::with_period(drop_line_period)
            .unwrap_or_else(|| Quota::per_minute(NonZeroU32::MIN));
        Self {
            capacity,
            queued: AtomicUsize::new(0),
            dropped: AtomicU64::new(0),
            exported: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            failing: AtomicBool::new(false),
            export_finished: Notify::new(),
            drop_lines: RateLimiter::direct(lines),
        }
    }

    /// Takes a place in the queue, if one is free.
    fn admit(&self) -> bool {
        self.queued
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |queued| {
                (queued < self.capacity).then_some(queued + 1)
            })
            .is_ok()
    }

    /// Counts a span refused; the running count when a line is due.
    fn drop_one(&self) -> Option<u64> {
        let dropped = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
        self.drop_lines.check().is_ok().then_some(dropped)
    }

    /// An export of `spans` spans ended, well or not.
    fn export_finished(&self, spans: usize, succeeded: bool) {
        let through = if succeeded {
            &self.exported
        } else {
            &self.failed
        };
        through.fetch_add(spans as u64, Ordering::Relaxed);
        self.queued.fetch_sub(spans, Ordering::AcqRel);
        self.failing.store(!succeeded, Ordering::Release);
        self.export_finished.notify_waiters();
    }
}

/// The queue of ended spans before the trace exporter: how many it holds,
/// how many were lost, and a way to wait for room. Cheap to clone. The
/// default is the queue of a service that exports no spans: always room,
/// nothing lost.
#[derive(Debug, Clone)]
pub struct SpanQueue {
    counts: Arc<Counts>,
    /// The provider, to flush: set once it is built.
    provider: Option<SdkTracerProvider>,
}

impl Default for SpanQueue {
    fn default() -> Self {
        Self {
            counts: Arc::new(Counts::new(usize::MAX, DROP_LINE_PERIOD)),
            provider: None,
        }
    }
}

impl SpanQueue {
    /// A batch span processor exporting through `exporter` whose queue holds
    /// `capacity` spans, and the queue's counts.
    pub(crate) fn processor(
        exporter: impl SpanExporter + 'static,
        capacity: usize,
        batch: BatchConfigBuilder,
    ) -> (Admitting, Self) {
        let counts = Arc::new(Counts::new(capacity, DROP_LINE_PERIOD));
        let exporter = Counted {
            inner: exporter,
            counts: Arc::clone(&counts),
        };
        let batch = batch.with_max_queue_size(capacity).build();
        let processor = Admitting {
            inner: BatchSpanProcessor::builder(exporter)
                .with_batch_config(batch)
                .build(),
            counts: Arc::clone(&counts),
        };
        (
            processor,
            Self {
                counts,
                provider: None,
            },
        )
    }

    /// The same queue, flushed through `provider` when drained.
    pub(crate) fn flushed_by(self, provider: SdkTracerProvider) -> Self {
        Self {
            provider: Some(provider),
            ..self
        }
    }

    /// Waits until `spans` more spans fit in the queue (or it is empty),
    /// unless the exporter is failing or stalls while waiting.
    pub async fn room_for(&self, spans: usize) {
        let room = self.counts.capacity.saturating_sub(spans);
        self.wait_until(|queued| queued <= room).await;
    }

    /// Exports what the queue holds now and waits until it is through,
    /// unless the exporter is failing or stalls while waiting: the spans of
    /// a piece of work sent before it reports.
    pub async fn drain(&self) {
        if self.counts.queued.load(Ordering::Acquire) == 0 {
            return;
        }
        if let Some(provider) = self.provider.clone() {
            // Asks the processor to export now rather than after its delay.
            // Its own thread, not a runtime's: the SDK's flush blocks up to
            // 5 s on a stalled exporter, and no runtime should wait on it.
            std::thread::spawn(move || provider.force_flush());
        }
        self.wait_until(|queued| queued == 0).await;
    }

    /// Spans lost so far: dropped because the queue was full, or in an
    /// export that failed.
    #[must_use]
    pub fn lost(&self) -> u64 {
        self.counts.dropped.load(Ordering::Relaxed) + self.counts.failed.load(Ordering::Relaxed)
    }

    async fn wait_until(&self, done: impl Fn(usize) -> bool) {
        let counts = &self.counts;
        loop {
            let finished = counts.export_finished.notified();
            tokio::pin!(finished);
            finished.as_mut().enable();
            if done(counts.queued.load(Ordering::Acquire)) || counts.failing.load(Ordering::Acquire)
            {
                return;
            }
            if tokio::time::timeout(STALLED_AFTER, finished).await.is_err() {
                if !counts.failing.swap(true, Ordering::AcqRel) {
                    tracing::warn!(
                        "the trace exporter finished no export in {STALLED_AFTER:?}: not waiting for it \
                         until an export succeeds; spans that do not fit its queue are dropped and counted"
                    );
                }
                return;
            }
        }
    }

    /// Registers the specification's counters of what the processor and the
    /// exporter did with each span, on `meter`.
    pub(crate) fn observe(&self, meter: &Meter) {
        let counts = Arc::clone(&self.counts);
        meter
            .u64_observable_counter(OTEL_SDK_PROCESSOR_SPAN_PROCESSED)
            .with_unit("{span}")
            .with_description("Spans handed to the exporter, or dropped because the export queue was full (error.type=queue_full).")
            .with_callback(move |observer| {
                let through = counts.exported.load(Ordering::Relaxed)
                    + counts.failed.load(Ordering::Relaxed);
                observer.observe(through, &[]);
                let dropped = counts.dropped.load(Ordering::Relaxed);
                observer.observe(dropped, &[KeyValue::new(ERROR_TYPE, "queue_full")]);
            })
            .build();
        let counts = Arc::clone(&self.counts);
        meter
            .u64_observable_counter(OTEL_SDK_EXPORTER_SPAN_EXPORTED)
            .with_unit("{span}")
            .with_description("Spans exported, or in an export that failed (error.type=_OTHER).")
            .with_callback(move |observer| {
                observer.observe(counts.exported.load(Ordering::Relaxed), &[]);
                let failed = counts.failed.load(Ordering::Relaxed);
                observer.observe(failed, &[KeyValue::new(ERROR_TYPE, "_OTHER")]);
            })
            .build();
    }
}

/// The batch span processor, given only the spans its queue has room for.
#[derive(Debug)]
pub(crate) struct Admitting {
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
        } else if let Some(dropped) = self.counts.drop_one() {
            tracing::warn!(
                dropped,
                "spans dropped: the trace export queue ({} spans, OTEL_BSP_MAX_QUEUE_SIZE) is full; \
                 {dropped} dropped so far; said at most once a minute",
                self.counts.capacity
            );
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
        let spans = batch.len();
        let result = self.inner.export(batch).await;
        self.counts.export_finished(spans, result.is_ok());
        result
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::Counts;

    #[test]
    fn a_full_queue_drops_and_says_so_once_a_period_with_the_running_count() {
        let counts = Counts::new(2, Duration::from_millis(300));
        assert!(counts.admit() && counts.admit());
        assert!(!counts.admit(), "full");
        let lines: Vec<Option<u64>> = (0..3).map(|_| counts.drop_one()).collect();
        assert_eq!(lines, [Some(1), None, None]);
        std::thread::sleep(Duration::from_millis(350));
        assert_eq!((counts.drop_one(), counts.drop_one()), (Some(4), None));
        counts.export_finished(2, false);
        assert!(
            counts.admit(),
            "room again once an export ended, even a failed one"
        );
        assert!(counts.failing.load(std::sync::atomic::Ordering::Relaxed));
    }
}
