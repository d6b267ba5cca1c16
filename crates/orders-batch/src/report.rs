//! What a batch and a run did: counted from the orders the batch marked, and
//! fed to the metrics; `process_batch` records it on the batch's span.

use std::fmt;

use orders::OrderStatus;
use orders::claims::{Claim, Finished};
use span_pacing::Producer;

use crate::metrics::BatchMetrics;

/// What became of the orders of one batch.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BatchReport {
    pub processed: usize,
    /// Marked failed after their last attempt.
    pub failed: usize,
    /// Failed this time; back in the queue for a later run.
    pub retrying: usize,
    /// Processed without a link: their stored trace context was missing or invalid.
    pub unlinked: usize,
}

/// What a run did.
#[derive(Debug)]
pub struct RunSummary {
    pub processed: usize,
    pub failed: usize,
    pub retrying: usize,
    pub unlinked: usize,
    pub batches: usize,
    /// Batches that could not be marked (their orders went back to the queue).
    pub failed_batches: usize,
    /// Orders whose expired claim this run put back in the queue.
    pub requeued: usize,
    /// Orders given back unprocessed at shutdown.
    pub released: usize,
    /// Shutdown stopped the run before it ran out of orders.
    pub interrupted: bool,
    /// Orders still pending when an interrupted run stopped; `None` when the
    /// run was not interrupted or they could not be counted.
    pub pending: Option<u64>,
    /// The run's spans, of which those not exported, as they stand when the
    /// summary is shown: dropped at a full queue, in a failed export, or
    /// still queued.
    pub spans: Producer,
}

impl fmt::Display for RunSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "processed={} failed={} retrying={} batches={} failed_batches={} unlinked={} requeued={} released={}",
            self.processed,
            self.failed,
            self.retrying,
            self.batches,
            self.failed_batches,
            self.unlinked,
            self.requeued,
            self.released,
        )?;
        let spans_dropped = self.spans.lost().total();
        if spans_dropped > 0 {
            write!(f, " spans_dropped={spans_dropped}")?;
        }
        if self.interrupted {
            match self.pending {
                Some(pending) => write!(f, " interrupted pending={pending}"),
                None => write!(f, " interrupted pending=unknown"),
            }?;
        }
        Ok(())
    }
}

impl BatchReport {
    /// The batch's line in the log, written in its span.
    pub(crate) fn log(&self) {
        tracing::info!(
            processed = self.processed,
            failed = self.failed,
            retrying = self.retrying,
            unlinked = self.unlinked,
            "batch done"
        );
    }
}

impl RunSummary {
    /// A run that has done nothing yet, its spans made by `spans`.
    pub(crate) fn new(spans: Producer) -> Self {
        Self {
            processed: 0,
            failed: 0,
            retrying: 0,
            unlinked: 0,
            batches: 0,
            failed_batches: 0,
            requeued: 0,
            released: 0,
            interrupted: false,
            pending: None,
            spans,
        }
    }

    /// Logs how the run ended; once its spans are through (the run drained
    /// them, or the trace provider was shut down), so that the count of
    /// spans not exported is final.
    pub fn log(&self) {
        if self.interrupted {
            tracing::info!(summary = %self, "run interrupted by shutdown: orders still pending");
        } else if self.batches == 0 && self.failed_batches == 0 {
            tracing::info!("no pending orders");
        } else {
            tracing::info!(summary = %self, "run finished");
        }
    }

    pub(crate) fn add(&mut self, report: BatchReport) {
        self.processed += report.processed;
        self.failed += report.failed;
        self.retrying += report.retrying;
        self.unlinked += report.unlinked;
        self.batches += 1;
    }
}

/// Counts what the batch marked, and feeds the metrics. `finished` are the
/// orders of `claim` that it still held when marking; `unlinked` of them all
/// were processed without a link.
pub(crate) fn count_marked(
    metrics: &BatchMetrics,
    claim: &Claim,
    finished: &[Finished],
    unlinked: usize,
) -> BatchReport {
    let mut report = BatchReport {
        unlinked,
        ..BatchReport::default()
    };
    for order in finished {
        match order.status {
            OrderStatus::Processed => {
                report.processed += 1;
                if let Some(processed_at) = order.processed_at {
                    metrics.processed(order.created_at, processed_at);
                }
            }
            OrderStatus::Failed => report.failed += 1,
            OrderStatus::Pending | OrderStatus::Processing => report.retrying += 1,
        }
    }
    metrics.failed(report.failed, false);
    metrics.failed(report.retrying, true);
    // An order missing from `finished` was no longer held by this claim (it
    // expired and the order went back to the queue): it was left alone.
    let lost = claim.orders.len().saturating_sub(finished.len());
    if lost > 0 {
        tracing::warn!(
            lost,
            claim = %claim.token,
            "orders were no longer held by this batch's claim (it expired) and were left to the worker that holds them now"
        );
    }
    report
}

/// A count as an OpenTelemetry integer attribute.
pub(crate) fn as_i64(count: usize) -> i64 {
    i64::try_from(count).unwrap_or(i64::MAX)
}
