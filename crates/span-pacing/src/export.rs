//! The two wrappers around the SDK's parts: the processor admits only the
//! spans the queue has room for; the exporter counts each export through
//! when it ends, and tries a failed one again until it is accepted or the
//! timeout runs out.
//!
//! Why here and not in the exporter: opentelemetry-otlp retries on its own,
//! but within one export's timeout (`OTEL_EXPORTER_OTLP_TIMEOUT`, 10 s by
//! default, its retry deadline the same value), so a collector gone for
//! longer loses the export; giving that timeout a minute would also let one
//! hung attempt hold the queue a minute. Here each attempt keeps the
//! exporter's short timeout, and its own retries (which honour a receiver's
//! `RetryInfo`), and the whole export gets the queue's timeout. The
//! exporter's error is a message only, so any failure is tried again: a
//! receiver that refuses for good costs the timeout, once per export.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use opentelemetry::Context;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use opentelemetry_sdk::trace::{BatchSpanProcessor, Span, SpanData, SpanExporter, SpanProcessor};

use crate::counts::Counts;

/// Told the outcome of every attempt to export, retries included.
pub(crate) struct AttemptObserver(pub(crate) Box<dyn Fn(&OTelSdkResult) + Send + Sync>);

impl std::fmt::Debug for AttemptObserver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AttemptObserver")
    }
}

/// The batch span processor, given only the spans its queue has room for.
#[derive(Debug)]
pub(crate) struct Admitting {
    pub(crate) inner: BatchSpanProcessor,
    pub(crate) counts: Arc<Counts>,
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
        // The processor's thread reads its shutdown only once the export in
        // hand ends: end its retries first.
        self.counts.stop_retrying();
        self.inner.shutdown_with_timeout(timeout)
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

/// The exporter, each export tried until accepted or out of time, and
/// counted through when it ends.
#[derive(Debug)]
pub(crate) struct Delivering<E> {
    pub(crate) inner: E,
    pub(crate) counts: Arc<Counts>,
    pub(crate) observer: Option<AttemptObserver>,
}

impl<E: SpanExporter> SpanExporter for Delivering<E> {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let export = InFlight {
            counts: &self.counts,
            spans: batch.len(),
            ended: false,
        };
        export.counts.export_started(export.spans);
        // A bound past the clock's range is none.
        let give_up_at =
            (self.counts.timeout).and_then(|timeout| Instant::now().checked_add(timeout));
        let mut backoff = Backoff::default();
        loop {
            // The exporter takes its spans: a copy, kept for a retry.
            let result = self.inner.export(batch.clone()).await;
            if let Some(observer) = &self.observer {
                (observer.0)(&result);
            }
            if result.is_ok() {
                return export.end(result);
            }
            let delay = backoff.next_delay();
            let in_time = give_up_at.is_none_or(|at| Instant::now() + delay < at);
            if !in_time || !self.counts.pause_before_retry(delay) {
                return export.end(result);
            }
        }
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

/// Delays between attempts: doubling from 100 ms up to 2 s, each drawn from
/// its upper half, so that services restarted together do not retry in
/// step. Two seconds at most, so that a collector back from a blink is seen
/// within about two seconds.
#[derive(Debug)]
struct Backoff {
    next: Duration,
}

impl Backoff {
    const FIRST: Duration = Duration::from_millis(100);
    const MOST: Duration = Duration::from_secs(2);

    fn next_delay(&mut self) -> Duration {
        let delay = self.next;
        self.next = (delay * 2).min(Self::MOST);
        let half = delay / 2;
        let most = u64::try_from(half.as_millis()).unwrap_or(u64::MAX);
        let jitter = RandomState::new().hash_one(Instant::now()) % most.saturating_add(1);
        half + Duration::from_millis(jitter)
    }
}

impl Default for Backoff {
    fn default() -> Self {
        Self { next: Self::FIRST }
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::Backoff;

    #[test]
    fn delays_double_within_their_upper_half_up_to_two_seconds() {
        let mut backoff = Backoff::default();
        let delays: Vec<Duration> = (0..8).map(|_| backoff.next_delay()).collect();
        let most = [100, 200, 400, 800, 1600, 2000, 2000, 2000].map(Duration::from_millis);
        for (delay, most) in delays.iter().zip(most) {
            assert!(
                *delay >= most / 2 && *delay <= most,
                "{delay:?} of {most:?}"
            );
        }
    }
}
