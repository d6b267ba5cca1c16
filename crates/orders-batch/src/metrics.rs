//! The batch's instruments.

use std::time::Duration;

use chrono::{DateTime, Utc};
use opentelemetry::KeyValue;
use opentelemetry::metrics::{Counter, Histogram, Meter};

/// Batch sizes, in orders, up to the largest `BATCH_MAX_SIZE`.
const SIZE_BUCKETS: &[f64] = &[
    1.0, 10.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10_000.0,
];
/// Batch durations, in seconds.
const DURATION_BUCKETS: &[f64] = &[
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];
/// Order lag, in seconds: from a second to a day, around the hourly schedule.
const LAG_BUCKETS: &[f64] = &[
    1.0, 10.0, 60.0, 300.0, 900.0, 1800.0, 3600.0, 5400.0, 7200.0, 14_400.0, 43_200.0, 86_400.0,
];

/// Counts and timings of batches and the orders in them.
#[derive(Debug, Clone)]
pub struct BatchMetrics {
    processed: Counter<u64>,
    failed: Counter<u64>,
    batch_size: Histogram<u64>,
    batch_duration: Histogram<f64>,
    lag: Histogram<f64>,
}

impl BatchMetrics {
    #[must_use]
    pub fn new(meter: &Meter) -> Self {
        Self {
            processed: meter
                .u64_counter("orders.processed")
                .with_unit("{order}")
                .with_description("Orders reconciled and marked processed.")
                .build(),
            failed: meter
                .u64_counter("orders.failed")
                .with_unit("{order}")
                .with_description(
                    "Orders that failed to reconcile; order.will_retry tells whether a later run tries again.",
                )
                .build(),
            batch_size: meter
                .u64_histogram("orders.batch.size")
                .with_unit("{order}")
                .with_description("Orders per batch (per process-batch span).")
                .with_boundaries(SIZE_BUCKETS.to_vec())
                .build(),
            batch_duration: meter
                .f64_histogram("orders.batch.duration")
                .with_unit("s")
                .with_description("Time from claiming a batch to marking its orders.")
                .with_boundaries(DURATION_BUCKETS.to_vec())
                .build(),
            lag: meter
                .f64_histogram("orders.lag")
                .with_unit("s")
                .with_description("Time from an order's creation to its processing.")
                .with_boundaries(LAG_BUCKETS.to_vec())
                .build(),
        }
    }

    pub(crate) fn batch(&self, size: usize, duration: Duration) {
        self.batch_size
            .record(u64::try_from(size).unwrap_or(u64::MAX), &[]);
        self.batch_duration.record(duration.as_secs_f64(), &[]);
    }

    pub(crate) fn processed(&self, created_at: DateTime<Utc>, processed_at: DateTime<Utc>) {
        self.processed.add(1, &[]);
        let lag = (processed_at - created_at).to_std().unwrap_or_default();
        self.lag.record(lag.as_secs_f64(), &[]);
    }

    pub(crate) fn failed(&self, count: usize, will_retry: bool) {
        if count > 0 {
            self.failed.add(
                u64::try_from(count).unwrap_or(u64::MAX),
                &[KeyValue::new("order.will_retry", will_retry)],
            );
        }
    }
}
