#![allow(clippy::unwrap_used, reason = "tests fail loudly")]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use opentelemetry::trace::{Tracer as _, TracerProvider as _};
use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData, SpanExporter};
use tokio::time::Instant;

use super::{Counts, Lost, MoreThanCapacity, OnQueueFull, SpanQueue};

const TIMEOUT: Duration = Duration::from_secs(10);

/// A blocking queue of `capacity` with no processor: the tests play it.
fn queue(capacity: usize, timeout: Option<Duration>) -> SpanQueue {
    SpanQueue {
        counts: Arc::new(Counts::new(capacity, OnQueueFull::Block, timeout)),
        ..SpanQueue::default()
    }
}

fn refused() -> OTelSdkResult {
    Err(OTelSdkError::InternalFailure("refused".to_owned()))
}

/// An export of `spans` spans, started now, ending `after` ms later.
fn export(queue: &SpanQueue, spans: usize, after: u64, result: OTelSdkResult) {
    let counts = Arc::clone(&queue.counts);
    counts.export_started(spans);
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(after)).await;
        counts.export_ended(spans, &result);
    });
}

/// On tokio's paused clock: waits take no real time.
#[tokio::test(start_paused = true)]
async fn a_producer_waits_however_slow_the_exports_each_wait_up_to_the_timeout_then_no_more() {
    let queue = queue(4, Some(TIMEOUT));
    let run = queue.producer();
    let started = Instant::now();
    let since = || started.elapsed().as_millis();
    assert!((0..4).all(|_| queue.counts.admit()));
    // 1 s, then more than twice that, then nearly the timeout: each a wait
    // of its own.
    for (after, at) in [(1000, 1000), (5000, 6000), (9000, 15_000)] {
        export(&queue, 2, after, Ok(()));
        run.room_for(2).await.unwrap();
        assert_eq!(since(), at, "waited for an export of {after} ms");
        assert!(queue.counts.admit() && queue.counts.admit());
    }
    // Retried for 19 s: the wait runs out at its timeout.
    export(&queue, 2, 19_000, Ok(()));
    run.room_for(2).await.unwrap();
    assert_eq!(since(), 25_000, "the timeout");
    run.room_for(2).await.unwrap();
    run.drain().await;
    assert_eq!(since(), 25_000, "that producer waits no more");
    let next_run = queue.producer();
    next_run.room_for(2).await.unwrap();
    assert_eq!(since(), 34_000, "the next one starts fresh, and gets room");
    assert!(!next_run.own.gave_up.load(Ordering::Acquire));
}

#[tokio::test(start_paused = true)]
async fn without_a_bound_a_producer_waits_as_long_as_an_export_takes() {
    let queue = queue(2, None);
    assert!(queue.counts.admit() && queue.counts.admit());
    export(&queue, 2, 600_000, Ok(()));
    let started = Instant::now();
    queue.producer().room_for(1).await.unwrap();
    assert_eq!(started.elapsed(), Duration::from_mins(10));
}

#[tokio::test(start_paused = true)]
async fn a_drain_waits_for_the_spans_queued_before_it_not_for_another_sources() {
    let queue = queue(100, Some(TIMEOUT));
    let run = queue.producer();
    assert!((0..3).all(|_| queue.counts.admit()));
    // Another source keeps two spans queued, exports of two ending each
    // 100 ms: the queue is never empty.
    let other = {
        let queue = queue.clone();
        tokio::spawn(async move {
            loop {
                assert!(queue.counts.admit() && queue.counts.admit());
                export(&queue, 2, 100, Ok(()));
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    let started = Instant::now();
    run.drain().await;
    other.abort();
    assert_eq!(started.elapsed(), Duration::from_millis(200), "two exports");
    assert!(queue.counts.queued() > 0, "the other source's spans");
}

#[tokio::test]
async fn room_for_more_than_the_queue_holds_is_an_error_at_once() {
    let run = queue(10, None).producer();
    assert_eq!(run.room_for(10).await, Ok(()));
    let error = run.room_for(11).await.unwrap_err();
    assert_eq!(
        error,
        MoreThanCapacity {
            spans: 11,
            capacity: 10
        }
    );
    assert!(
        error.to_string().contains("OTEL_BSP_MAX_QUEUE_SIZE"),
        "{error}"
    );
}

/// Refuses its first `refusals` exports, like a collector restarting.
#[derive(Debug)]
struct Restarting {
    received: InMemorySpanExporter,
    attempts: AtomicUsize,
    refusals: usize,
}

impl SpanExporter for Restarting {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        if self.attempts.fetch_add(1, Ordering::Relaxed) < self.refusals {
            return refused();
        }
        self.received.export(batch).await
    }
}

/// 10 spans made through a queue exporting to a collector that refuses
/// `refusals` exports, with `timeout`: flushed, given 2 s to get through,
/// then shut down. What the collector got, what was lost, and how long the
/// shutdown took.
fn ten_spans_through(refusals: usize, timeout: Option<Duration>) -> (usize, Lost, Duration) {
    let received = InMemorySpanExporter::default();
    let restarting = Restarting {
        received: received.clone(),
        attempts: AtomicUsize::new(0),
        refusals,
    };
    let (provider, queue) = SpanQueue::builder(restarting)
        .with_timeout(timeout)
        .build(SdkTracerProvider::builder());
    let run = queue.producer();
    let tracer = provider.tracer("test");
    (0..10).for_each(|_| drop(tracer.start("span")));
    queue.flush();
    let through = std::time::Instant::now() + Duration::from_secs(2);
    while run.lost().queued > 0 && std::time::Instant::now() < through {
        std::thread::sleep(Duration::from_millis(10));
    }
    let started = std::time::Instant::now();
    let _shut_down = provider.shutdown_with_timeout(Duration::from_secs(1));
    let spans = received.get_finished_spans().unwrap().len();
    (spans, run.lost(), started.elapsed())
}

#[test]
fn a_failed_export_is_tried_again_until_accepted_and_given_up_at_its_timeout_or_shutdown() {
    let (received, lost, _) = ten_spans_through(3, Some(TIMEOUT));
    assert_eq!((received, lost.total()), (10, 0), "accepted at the 4th try");
    // 100 ms, 200 ms, 400 ms between tries (each at least half that): out of
    // time before the 4th.
    let (received, lost, _) = ten_spans_through(3, Some(Duration::from_millis(300)));
    assert_eq!((received, lost.failed), (0, 10));
    // Refused for good, without a bound on retries but the shutdown.
    let (received, lost, shutting_down) = ten_spans_through(usize::MAX, None);
    assert_eq!((received, lost.failed), (0, 10));
    assert!(
        shutting_down < Duration::from_millis(500),
        "{shutting_down:?}"
    );
}

#[tokio::test]
async fn a_waiting_producer_has_the_queue_exported_now_not_after_the_schedule_delay() {
    // 15 spans, fewer than an export holds: the processor would send them
    // after its 5 s delay, and the waiter give up at 1 s.
    let (provider, queue) = SpanQueue::builder(InMemorySpanExporter::default())
        .with_capacity(20)
        .with_export_batch_size(20)
        .on_queue_full(OnQueueFull::Block)
        .with_timeout(Some(Duration::from_secs(1)))
        .build(SdkTracerProvider::builder());
    let run = queue.producer();
    let tracer = provider.tracer("test");
    (0..15).for_each(|_| drop(tracer.start("span")));
    run.room_for(10).await.unwrap();
    assert!(
        !run.own.gave_up.load(Ordering::Acquire),
        "room came from an export, not the timeout"
    );
    assert_eq!(queue.counts.queued(), 0);
}

#[tokio::test(start_paused = true)]
async fn each_span_not_exported_is_counted_once_by_the_producers_it_ended_in() {
    let queue = queue(10, Some(TIMEOUT));
    let process = queue.producer();
    let first_run = queue.producer();
    assert!((0..4).all(|_| queue.counts.admit()));
    queue.counts.export_started(2);
    queue.counts.export_ended(2, &refused());
    let lost = |dropped, failed, queued| Lost {
        dropped,
        failed,
        queued,
    };
    assert_eq!(first_run.lost(), lost(0, 2, 2), "two failed, two queued");
    drop(first_run);
    let second_run = queue.producer();
    assert!(queue.counts.admit() && queue.counts.admit());
    // Two of the first run's spans and two of the second's, in one export.
    queue.counts.export_started(4);
    queue.counts.export_ended(4, &refused());
    queue.counts.drop_one();
    assert_eq!(second_run.lost(), lost(1, 2, 0), "its own spans only");
    assert!((0..4).all(|_| queue.counts.admit()));
    assert_eq!(second_run.lost(), lost(1, 2, 4));
    queue.counts.export_started(4);
    queue.count_rejected(1);
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
