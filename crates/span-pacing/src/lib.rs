#![doc = include_str!("../README.md")]
//!
//! ## How it works
//!
//! [`SpanQueue`] wraps the SDK's batch span processor and its exporter. It
//! admits a span only when the queue has room, the spans of an export
//! counting until the export ends, so the processor never drops one and
//! every drop is counted here. A failed export keeps its spans' places while
//! it is tried again, so under [`OnQueueFull::Block`] a [`Producer`] waiting
//! in [`Producer::room_for`] waits through a collector's restart; each wait
//! lasts at most the timeout, and once one has run out that producer waits
//! no more. The switch and the bound are those of the specification's
//! proposal (opentelemetry-specification issue 5178, pull request 5181);
//! `BatchConfigBuilder` has neither. [`Producer::lost`] tallies a producer's
//! spans, and [`SpanQueue::observe`] reports the same counts as the semantic
//! conventions' SDK metrics.
//!
//! ## An example that runs
//!
//! A job whose collector refuses its first three exports (restarting), then
//! takes 20 ms an export, makes 200 spans in batches of 10 through a queue of
//! 64: waiting for room before each batch, it loses none; the SDK's way, it
//! loses most.
//!
//! ```
//! use std::sync::atomic::{AtomicUsize, Ordering};
//! use std::time::Duration;
//!
//! use opentelemetry::trace::{Tracer as _, TracerProvider as _};
//! use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
//! use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData, SpanExporter};
//! use span_pacing::{OnQueueFull, SpanQueue};
//!
//! #[derive(Debug, Default)]
//! struct Restarting(InMemorySpanExporter, AtomicUsize); // then across an ocean
//!
//! impl SpanExporter for Restarting {
//!     async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
//!         if self.1.fetch_add(1, Ordering::Relaxed) < 3 {
//!             return Err(OTelSdkError::InternalFailure("connection refused".into()));
//!         }
//!         std::thread::sleep(Duration::from_millis(20)); // on the processor's thread
//!         self.0.export(batch).await
//!     }
//! }
//!
//! let run = |on_full| {
//!     let collector = Restarting::default();
//!     let received = collector.0.clone();
//!     let (provider, queue) = SpanQueue::builder(collector)
//!         .with_capacity(64)
//!         .with_export_batch_size(16)
//!         .on_queue_full(on_full)
//!         .with_timeout(Some(Duration::from_secs(10)))
//!         .build(SdkTracerProvider::builder());
//!     let tracer = provider.tracer("batch");
//!     let runtime = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
//!     let job = queue.producer();
//!     runtime.block_on(async {
//!         for _batch in 0..20 {
//!             job.room_for(10).await.unwrap(); // before the batch makes its spans
//!             for _item in 0..10 {
//!                 tracer.start("reconcile");
//!             }
//!         }
//!         job.drain().await; // its spans sent before it reports
//!     });
//!     provider.force_flush().unwrap(); // the SDK's way waits for nothing
//!     (job.lost().total(), received.get_finished_spans().unwrap().len())
//! };
//!
//! assert_eq!(run(OnQueueFull::Block), (0, 200), "none lost, all received");
//! let (lost, received) = run(OnQueueFull::Drop);
//! assert!(lost > 100 && received + lost as usize == 200, "{lost} lost");
//! ```

mod counts;
mod export;
mod metrics;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use opentelemetry::metrics::Meter;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, SdkTracerProvider, SpanExporter, TracerProviderBuilder,
};

use crate::counts::{Counts, TallyCounts};
use crate::export::{Admitting, AttemptObserver, Delivering};

/// What a producer does when its spans would not fit: the values of
/// `OTEL_BSP_ON_QUEUE_FULL` in the specification's proposal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnQueueFull {
    /// Never wait: the SDK's behaviour, for services that answer requests.
    Drop,
    /// Wait for room while the exporter works, however slowly, each wait up
    /// to the queue's timeout.
    Block,
}

/// Spans not exported, each counted once, for one reason.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Lost {
    /// Refused at a full queue.
    pub dropped: u64,
    /// In an export that failed for good, or rejected by the receiver in a
    /// partial success.
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

/// A producer asked for room for more spans than the queue holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "{spans} spans never fit in a trace export queue of {capacity}: give the queue more room \
     (OTEL_BSP_MAX_QUEUE_SIZE) or wait for fewer at a time"
)]
pub struct MoreThanCapacity {
    /// The room asked for.
    pub spans: usize,
    /// What the queue holds.
    pub capacity: usize,
}

/// The SDK's queue and export sizes, and how long a failing exporter is
/// held out for by default: a minute, longer than a collector's restart or
/// rolling update takes.
const SDK_QUEUE_SIZE: usize = 2048;
const SDK_EXPORT_BATCH_SIZE: usize = 512;
const DEFAULT_TIMEOUT: Duration = Duration::from_mins(1);

/// The queue of ended spans before the trace exporter: producers wait for
/// room in it and tally what they lost. Cheap to clone. The default is the
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
            counts: Arc::new(Counts::new(usize::MAX, OnQueueFull::Drop, None)),
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
    timeout: Option<Duration>,
    exporter_type: &'static str,
    observer: Option<AttemptObserver>,
}

impl SpanQueue {
    /// A queue exporting through `exporter`, with the SDK's sizes (a queue of
    /// 2048 spans, exports of 512), never waiting, and a failed export tried
    /// again for up to a minute.
    pub fn builder<E: SpanExporter + 'static>(exporter: E) -> SpanQueueBuilder<E> {
        SpanQueueBuilder {
            exporter,
            capacity: SDK_QUEUE_SIZE,
            export_batch_size: SDK_EXPORT_BATCH_SIZE,
            on_full: OnQueueFull::Drop,
            timeout: Some(DEFAULT_TIMEOUT),
            exporter_type: std::any::type_name::<E>(),
            observer: None,
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

    /// Whether [`Producer::room_for`] waits (`OTEL_BSP_ON_QUEUE_FULL`).
    #[must_use]
    pub fn on_queue_full(self, on_full: OnQueueFull) -> Self {
        Self { on_full, ..self }
    }

    /// How long a failing exporter is held out for
    /// (`OTEL_BSP_BLOCK_ON_QUEUE_FULL_TIMEOUT`; `None`, or 0 there, for no
    /// bound): a failed export is tried again up to this long after it
    /// started, and under [`OnQueueFull::Block`] a producer waits for room
    /// up to this long. A minute by default.
    #[must_use]
    pub fn with_timeout(self, timeout: Option<Duration>) -> Self {
        Self { timeout, ..self }
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

    /// Tells `observe` the outcome of every attempt to export, retries
    /// included: to say that the collector is down, or back.
    #[must_use]
    pub fn on_each_attempt(self, observe: impl Fn(&OTelSdkResult) + Send + Sync + 'static) -> Self {
        Self {
            observer: Some(AttemptObserver(Box::new(observe))),
            ..self
        }
    }

    /// `provider` with the batch span processor, built, and its queue. The
    /// processor's schedule delay is the SDK's (`OTEL_BSP_SCHEDULE_DELAY`).
    pub fn build(self, provider: TracerProviderBuilder) -> (SdkTracerProvider, SpanQueue) {
        let counts = Arc::new(Counts::new(self.capacity, self.on_full, self.timeout));
        let exporter = Delivering {
            inner: self.exporter,
            counts: Arc::clone(&counts),
            observer: self.observer,
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
    /// A producer of spans from now on: one piece of work, such as a run of
    /// a batch job, that waits for room and tallies what it lost.
    #[must_use]
    pub fn producer(&self) -> Producer {
        // Under the ledger's lock: no export ends between the two.
        let mut ledger = self.counts.ledger();
        let own = Arc::new(TallyCounts::new(
            self.counts.admitted.load(Ordering::Acquire),
        ));
        ledger.tallies.push(Arc::downgrade(&own));
        drop(ledger);
        Producer {
            queue: self.clone(),
            own,
        }
    }

    /// Counts `spans` spans of the export under way as rejected by the
    /// receiver, which accepted the others: an OTLP partial success, which
    /// the exporter reports only in its own way. They are not tried again.
    pub fn count_rejected(&self, spans: u64) {
        self.counts
            .rejected_in_flight
            .fetch_add(spans, Ordering::AcqRel);
    }

    /// Registers on `meter` the SDK metrics of the semantic conventions
    /// (1.42.0, development status): `otel.sdk.processor.span.processed`
    /// (`error.type=queue_full` for drops), `.queue.size`, `.queue.capacity`,
    /// `otel.sdk.exporter.span.exported` (`error.type` for failed and
    /// rejected spans) and `.inflight`, each with `otel.component.type` and
    /// `otel.component.name`.
    pub fn observe(&self, meter: &Meter) {
        metrics::observe_processor(meter, &self.counts);
        metrics::observe_exporter(meter, &self.counts, self.exporter_type);
    }

    /// Has the processor export what it holds, one flush at a time, on a
    /// thread of its own: the SDK's flush blocks, up to 5 s on a hung
    /// exporter, and no async runtime should wait on it. Asked while one
    /// runs, another follows it: the spans ended meanwhile are not left to
    /// the processor's schedule delay.
    fn flush(&self) {
        let Some(provider) = self.provider.clone() else {
            return;
        };
        let counts = &self.counts;
        if counts.flushing.swap(true, Ordering::AcqRel) {
            counts.flush_again.store(true, Ordering::Release);
            return;
        }
        let counts = Arc::clone(counts);
        let flushing = std::thread::Builder::new()
            .name("span-queue-flush".to_owned())
            .spawn(move || {
                loop {
                    // Each export's outcome is counted by the exporter.
                    let _flushed = provider.force_flush();
                    if counts.flush_again.swap(false, Ordering::AcqRel) {
                        continue;
                    }
                    counts.flushing.store(false, Ordering::Release);
                    // Asked between the two: flush again, unless another
                    // thread took it.
                    if !counts.flush_again.swap(false, Ordering::AcqRel)
                        || counts.flushing.swap(true, Ordering::AcqRel)
                    {
                        break;
                    }
                }
            });
        if flushing.is_err() {
            self.counts.flushing.store(false, Ordering::Release);
        }
    }
}

/// One piece of work's side of a [`SpanQueue`]: it waits for room before
/// making spans, drains what it made, and tallies what became of its spans.
/// Clones share the tally.
#[derive(Debug, Clone)]
pub struct Producer {
    queue: SpanQueue,
    own: Arc<TallyCounts>,
}

impl Producer {
    /// Waits until `spans` more spans fit in the queue, under
    /// [`OnQueueFull::Block`], at most the queue's timeout, and not at all
    /// once a wait of this producer has run out. Call it before making the
    /// spans: ending them never waits. More spans than the queue holds never
    /// fit: an error, at once.
    pub async fn room_for(&self, spans: usize) -> Result<(), MoreThanCapacity> {
        let capacity = self.queue.counts.capacity;
        let room = capacity
            .checked_sub(spans)
            .ok_or(MoreThanCapacity { spans, capacity })?;
        self.wait_until("for room in", |counts| counts.queued() <= room as u64)
            .await;
        Ok(())
    }

    /// Has the processor export what it holds now, rather than after its
    /// schedule delay, and waits as [`Producer::room_for`] does until the
    /// spans queued before the call are through their exports, whatever
    /// other producers queue meanwhile: the spans of a piece of work sent
    /// before it reports.
    pub async fn drain(&self) {
        let queued_before = self.queue.counts.admitted.load(Ordering::Acquire);
        if self.queue.counts.through() >= queued_before {
            return;
        }
        self.queue.flush();
        self.wait_until("to drain", |counts| counts.through() >= queued_before)
            .await;
    }

    /// The spans not exported since the producer was made: read it once its
    /// spans are through (after [`Producer::drain`], or the provider's
    /// shutdown), or the spans still queued count as lost.
    #[must_use]
    pub fn lost(&self) -> Lost {
        let counts = &self.queue.counts;
        let ledger = counts.ledger();
        let admitted = counts.admitted.load(Ordering::Acquire);
        Lost {
            dropped: self.own.dropped.load(Ordering::Relaxed),
            failed: self.own.failed.load(Ordering::Relaxed),
            queued: admitted.saturating_sub(ledger.through.max(self.own.first)),
        }
    }

    /// Waits until `done`, `what` naming the wait in the line said if it
    /// runs out.
    async fn wait_until(&self, what: &str, done: impl Fn(&Counts) -> bool) {
        let counts = &self.queue.counts;
        if counts.on_full != OnQueueFull::Block || self.own.gave_up.load(Ordering::Acquire) {
            return;
        }
        let deadline =
            (counts.timeout).and_then(|timeout| tokio::time::Instant::now().checked_add(timeout));
        loop {
            let ended = counts.export_ended.notified();
            tokio::pin!(ended);
            ended.as_mut().enable();
            if done(counts) {
                return;
            }
            // Rather than after the processor's schedule delay.
            self.queue.flush();
            let Some(deadline) = deadline else {
                ended.await;
                continue;
            };
            if tokio::time::timeout_at(deadline, ended).await.is_err() {
                self.give_up(what);
                return;
            }
        }
    }

    /// A wait ran out: this producer waits no more, and says so once.
    fn give_up(&self, what: &str) {
        self.own.gave_up.store(true, Ordering::Release);
        let timeout = self.queue.counts.timeout.unwrap_or_default();
        tracing::warn!(
            "waited {timeout:?} (OTEL_BSP_BLOCK_ON_QUEUE_FULL_TIMEOUT) {what} the trace export \
             queue, its exports failing or slower than that: this run waits no more; spans that \
             do not fit are dropped and counted"
        );
    }
}

#[cfg(test)]
mod tests;
