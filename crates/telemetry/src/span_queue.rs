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
//!   the exporter finishes exports; it does not wait on an exporter whose
//!   last export failed, or that finished none for twice the longest export
//!   it has made, and a second at least (a stalled collector);
//! - drops are seen: a WARN line with the running count at most once a
//!   minute, the specification's `otel.sdk.processor.span.processed` and
//!   `otel.sdk.exporter.span.exported` counters, and [`SpanQueue::lost`].

use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

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

/// How long a producer waits for room while no export finishes, at least:
/// then the exporter is taken to be stalled (a collector that accepts
/// connections and never answers) and nobody waits on it until an export
/// succeeds. A collector answers an export in milliseconds; an exporter
/// that has taken longer is waited for twice its longest successful export.
/// The OTLP exporter itself gives up on an export only after
/// `OTEL_EXPORTER_OTLP_TIMEOUT`, 10 s by default, far longer than a run
/// should stand still on a collector that never answers.
const STALLED_AFTER: Duration = Duration::from_secs(1);

/// The most often drops, and stalls, are said.
const LINE_PERIOD: Duration = Duration::from_mins(1);

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
    /// The longest a successful export took, in microseconds.
    slowest_export: AtomicU64,
    /// Woken whenever an export finishes.
    export_finished: Notify,
    /// A flush asked for and not yet done.
    flushing: AtomicBool,
    /// Let one line about drops, and one about a stall, through per period.
    drop_lines: DefaultDirectRateLimiter,
    stall_lines: DefaultDirectRateLimiter,
}

impl Counts {
    fn new(capacity: usize, line_period: Duration) -> Self {
        let lines = || {
            let quota = Quota::with_period(line_period)
                .unwrap_or_else(|| Quota::per_minute(NonZeroU32::MIN));
            RateLimiter::direct(quota)
        };
        Self {
            capacity,
            queued: AtomicUsize::new(0),
            dropped: AtomicU64::new(0),
            exported: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            failing: AtomicBool::new(false),
            slowest_export: AtomicU64::new(0),
            export_finished: Notify::new(),
            flushing: AtomicBool::new(false),
            drop_lines: lines(),
            stall_lines: lines(),
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

    /// An export of `spans` spans ended after `took`, well or not.
    fn export_finished(&self, spans: usize, succeeded: bool, took: Duration) {
        let through = if succeeded {
            let micros = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
            self.slowest_export.fetch_max(micros, Ordering::Relaxed);
            &self.exported
        } else {
            &self.failed
        };
        through.fetch_add(spans as u64, Ordering::Relaxed);
        self.queued.fetch_sub(spans, Ordering::AcqRel);
        self.failing.store(!succeeded, Ordering::Release);
        self.export_finished.notify_waiters();
    }

    /// How long to wait for an export to finish before taking the exporter
    /// to be stalled.
    fn patience(&self) -> Duration {
        let slowest = Duration::from_micros(self.slowest_export.load(Ordering::Relaxed));
        STALLED_AFTER.max(slowest * 2)
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
            counts: Arc::new(Counts::new(usize::MAX, LINE_PERIOD)),
            provider: None,
        }
    }
}

impl SpanQueue {
    /// A batch span processor exporting through `exporter`, whose queue
    /// holds `capacity` spans, in exports of at most `export_batch`, and the
    /// queue's counts (`OTEL_BSP_SCHEDULE_DELAY` from the environment).
    pub(crate) fn processor(
        exporter: impl SpanExporter + 'static,
        capacity: usize,
        export_batch: usize,
    ) -> (Admitting, Self) {
        let counts = Arc::new(Counts::new(capacity, LINE_PERIOD));
        let exporter = Counted {
            inner: exporter,
            counts: Arc::clone(&counts),
        };
        let batch = BatchConfigBuilder::default()
            .with_max_queue_size(capacity)
            .with_max_export_batch_size(export_batch)
            .build();
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

    /// Asks for the queue to be exported now, not after the SDK's delay, and
    /// waits until it is empty, unless the exporter is failing or stalls
    /// while waiting: the spans of a piece of work sent before it reports.
    /// Returns the spans still queued then, behind a failing exporter.
    pub async fn drain(&self) -> u64 {
        if self.queued() > 0 && !self.counts.failing.load(Ordering::Acquire) {
            self.flush();
            self.wait_until(|queued| queued == 0).await;
        }
        self.queued()
    }

    /// Spans lost so far: dropped because the queue was full, or in an
    /// export that failed.
    #[must_use]
    pub fn lost(&self) -> u64 {
        self.counts.dropped.load(Ordering::Relaxed) + self.counts.failed.load(Ordering::Relaxed)
    }

    /// Spans in the queue, or being exported.
    #[must_use]
    pub fn queued(&self) -> u64 {
        self.counts.queued.load(Ordering::Acquire) as u64
    }

    /// Has the processor export what it holds, one flush at a time, on a
    /// thread of its own: the SDK's flush blocks, up to 5 s on a stalled
    /// exporter, and no runtime should wait on it.
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
            let patience = counts.patience();
            if tokio::time::timeout(patience, finished).await.is_err() {
                let newly = !counts.failing.swap(true, Ordering::AcqRel);
                if newly && counts.stall_lines.check().is_ok() {
                    tracing::warn!(
                        "the trace exporter finished no export in {patience:?}: not waiting for it \
                         until an export succeeds; spans that do not fit its queue are dropped and counted; \
                         said at most once a minute"
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
            .with_description("Spans through the exporter, counted when their export ends, or dropped because the export queue was full (error.type=queue_full).")
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
        let (spans, started) = (batch.len(), Instant::now());
        let result = self.inner.export(batch).await;
        self.counts
            .export_finished(spans, result.is_ok(), started.elapsed());
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
    use std::sync::Arc;
    use std::sync::atomic::Ordering;
    use std::time::Duration;

    use tokio::time::Instant;

    use super::{Counts, LINE_PERIOD, SpanQueue};

    #[test]
    fn a_full_queue_drops_and_says_so_once_a_period_with_the_running_count() {
        let counts = Counts::new(2, Duration::from_millis(300));
        assert!(counts.admit() && counts.admit());
        assert!(!counts.admit(), "full");
        let lines: Vec<Option<u64>> = (0..3).map(|_| counts.drop_one()).collect();
        assert_eq!(lines, [Some(1), None, None]);
        std::thread::sleep(Duration::from_millis(350));
        assert_eq!((counts.drop_one(), counts.drop_one()), (Some(4), None));
        counts.export_finished(2, false, Duration::ZERO);
        assert!(
            counts.admit(),
            "room again once an export ended, even a failed one"
        );
    }

    /// On tokio's paused clock: waits take no real time.
    #[tokio::test(start_paused = true)]
    async fn a_producer_waits_while_exports_finish_and_not_on_a_stalled_exporter() {
        let queue = SpanQueue {
            counts: Arc::new(Counts::new(4, LINE_PERIOD)),
            provider: None,
        };
        let counts = Arc::clone(&queue.counts);
        let export = |after: u64| {
            let counts = Arc::clone(&counts);
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(after)).await;
                counts.export_finished(2, true, Duration::from_millis(after));
            })
        };
        let since = |started: Instant| started.elapsed().as_millis();
        let started = Instant::now();
        assert!((0..4).all(|_| counts.admit()));
        export(1500);
        // The first export takes over a second: taken for a stall until it ends.
        queue.room_for(2).await;
        assert_eq!(since(started), 1000);
        assert!(counts.failing.load(Ordering::Relaxed));
        queue.room_for(2).await;
        assert_eq!(since(started), 1000, "no wait on a failing exporter");
        tokio::time::sleep(Duration::from_millis(600)).await;
        // It ended: now waited for up to twice its 1.5 s.
        export(2000);
        queue.room_for(4).await;
        assert_eq!(since(started), 3600, "until the next export ended");
        assert!(counts.admit() && counts.admit());
        queue.room_for(4).await;
        assert_eq!(since(started), 7600, "twice the slowest export, 2 s");
        assert!(counts.failing.load(Ordering::Relaxed));
        assert_eq!(queue.drain().await, 2, "not waited for, and counted");
        assert_eq!(since(started), 7600);
    }
}
