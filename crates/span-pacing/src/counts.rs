//! The state the processor, its exporter, the queue and its producers share:
//! what is queued, what became of every span, and the signals between them.

use std::num::NonZeroU32;
use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError, Weak};
use std::time::Duration;

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use opentelemetry_sdk::error::OTelSdkResult;
use tokio::sync::Notify;

use crate::OnQueueFull;

#[derive(Debug)]
pub(crate) struct Counts {
    pub(crate) capacity: usize,
    pub(crate) on_full: OnQueueFull,
    /// How long a producer waits for room, and a failed export is tried
    /// again; `None`: no bound.
    pub(crate) timeout: Option<Duration>,
    /// Spans admitted ever: the next one's number.
    pub(crate) admitted: AtomicU64,
    /// Admitted and not yet through an export; admission is decided on it.
    pub(crate) queued: AtomicUsize,
    /// Spans ever handed to the exporter; those in the export under way, and
    /// those of them a receiver rejected.
    pub(crate) submitted: AtomicU64,
    pub(crate) inflight: AtomicUsize,
    pub(crate) rejected_in_flight: AtomicU64,
    /// Spans dropped at a full queue, exported, in failed exports, and
    /// rejected by a receiver in exports that succeeded.
    pub(crate) dropped: AtomicU64,
    pub(crate) exported: AtomicU64,
    pub(crate) failed_exports: AtomicU64,
    pub(crate) rejected: AtomicU64,
    pub(crate) export_ended: Notify,
    /// A flush under way, and one asked for while it runs.
    pub(crate) flushing: AtomicBool,
    pub(crate) flush_again: AtomicBool,
    /// Set when the processor shuts down: failed exports are no longer
    /// tried again, and a pause before a retry ends.
    shutting_down: Mutex<bool>,
    shut_down: Condvar,
    ledger: Mutex<Ledger>,
    drop_lines: DefaultDirectRateLimiter,
}

/// What a tally reads together, under one lock, so that a span is never
/// both still queued and failed, or neither. Spans are numbered in the order
/// they are admitted, and the processor exports them in the order it gets
/// them: the same order, but for spans ended at the same moment on two
/// threads, which may swap places at a tally's boundary.
#[derive(Debug, Default)]
pub(crate) struct Ledger {
    /// Spans through an export, exported or failed: the number of the first
    /// span not yet through.
    pub(crate) through: u64,
    pub(crate) tallies: Vec<Weak<TallyCounts>>,
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
    pub(crate) fn new(capacity: usize, on_full: OnQueueFull, timeout: Option<Duration>) -> Self {
        Self {
            capacity,
            on_full,
            timeout,
            admitted: AtomicU64::new(0),
            queued: AtomicUsize::new(0),
            submitted: AtomicU64::new(0),
            inflight: AtomicUsize::new(0),
            rejected_in_flight: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            exported: AtomicU64::new(0),
            failed_exports: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
            export_ended: Notify::new(),
            flushing: AtomicBool::new(false),
            flush_again: AtomicBool::new(false),
            shutting_down: Mutex::new(false),
            shut_down: Condvar::new(),
            ledger: Mutex::default(),
            // The drop line at most once a minute.
            drop_lines: RateLimiter::direct(Quota::per_minute(NonZeroU32::MIN)),
        }
    }

    pub(crate) fn ledger(&self) -> MutexGuard<'_, Ledger> {
        self.ledger.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Takes a place in the queue, if one is free.
    pub(crate) fn admit(&self) -> bool {
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
    pub(crate) fn drop_one(&self) {
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

    pub(crate) fn export_started(&self, spans: usize) {
        self.submitted.fetch_add(spans as u64, Ordering::Relaxed);
        self.inflight.store(spans, Ordering::Release);
        self.rejected_in_flight.store(0, Ordering::Release);
    }

    /// An export of `spans` spans ended: all failed, or all exported but
    /// those the receiver rejected (taken to be its first spans: the receiver
    /// does not say which).
    pub(crate) fn export_ended(&self, spans: usize, result: &OTelSdkResult) {
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
        self.export_ended.notify_waiters();
    }

    pub(crate) fn queued(&self) -> u64 {
        self.queued.load(Ordering::Acquire) as u64
    }

    /// The number of the first span not yet through an export.
    pub(crate) fn through(&self) -> u64 {
        self.ledger().through
    }

    /// Waits `delay` before a failed export is tried again: `false` when the
    /// processor is shutting down, at once or as soon as it starts to.
    pub(crate) fn pause_before_retry(&self, delay: Duration) -> bool {
        let shutting_down = self
            .shutting_down
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let (shutting_down, _) = self
            .shut_down
            .wait_timeout_while(shutting_down, delay, |shutting_down| !*shutting_down)
            .unwrap_or_else(PoisonError::into_inner);
        !*shutting_down
    }

    /// No failed export is tried again from now on: the flush at exit has
    /// its own bound.
    pub(crate) fn stop_retrying(&self) {
        *self
            .shutting_down
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = true;
        self.shut_down.notify_all();
    }
}

/// The counts of one producer: what became of the spans numbered from
/// `first` on, and of those dropped, while it lives; and whether one of its
/// waits ran out.
#[derive(Debug)]
pub(crate) struct TallyCounts {
    pub(crate) first: u64,
    pub(crate) dropped: AtomicU64,
    pub(crate) failed: AtomicU64,
    pub(crate) gave_up: AtomicBool,
}

impl TallyCounts {
    pub(crate) fn new(first: u64) -> Self {
        Self {
            first,
            dropped: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            gave_up: AtomicBool::new(false),
        }
    }

    fn count_failed(&self, spans: Range<u64>) {
        let overlap = spans.end.saturating_sub(spans.start.max(self.first));
        if overlap > 0 {
            self.failed.fetch_add(overlap, Ordering::Relaxed);
        }
    }
}
