//! Configuration, from flags or the environment (the environment is what
//! containers use; flags are handy when running by hand).
//!
//! The `OTEL_*` and `RUST_LOG` variables are read by `orders-telemetry`.

use std::time::Duration;

use orders::db::DatabaseArgs;
use orders_telemetry::SpanLimits;
use span_links::LinkSelection;

use crate::schedule::Schedule;

/// The default number of orders per `process-batch` span. Larger batches gain
/// little throughput (docs/benchmark.md measures 500, 1000 and 5000); a span
/// with 1000 links is about 100 KB of OTLP, far below the 4 MiB a collector accepts per gRPC
/// message, and its list of links stays readable in a trace viewer.
const DEFAULT_BATCH_MAX_SIZE: u32 = 1000;
/// The largest `BATCH_MAX_SIZE`: 10 000 links make a span of about 1 MB.
const LARGEST_BATCH_MAX_SIZE: u32 = 10_000;
/// Spans a batch ends besides one `reconcile` per order: `process-batch`,
/// `mark-orders`, the claim of the next batch, and a few to spare.
const SPANS_BESIDE_ORDERS: usize = 8;

#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "orders-batch",
    version,
    about = "Processes pending orders in batches traced with span links to each order's request"
)]
pub struct Config {
    /// Process everything pending now, print a summary and exit (non-zero if a batch failed).
    #[arg(long)]
    pub once: bool,

    #[command(flatten)]
    pub database: DatabaseArgs,

    /// When to run: a 6-field cron expression (second minute hour day month weekday), in UTC.
    #[arg(long, env = "BATCH_SCHEDULE", default_value = "0 0 * * * *")]
    pub schedule: Schedule,

    /// Most orders per batch, that is per `process-batch` span and its links.
    #[arg(long, env = "BATCH_MAX_SIZE", default_value_t = DEFAULT_BATCH_MAX_SIZE, value_parser = clap::value_parser!(u32).range(1..=i64::from(LARGEST_BATCH_MAX_SIZE)))]
    pub batch_max_size: u32,

    /// Claims of one order before a failing order is marked failed.
    #[arg(long, env = "BATCH_MAX_ATTEMPTS", default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub batch_max_attempts: u32,

    /// Seconds a claim holds: orders claimed by a worker that died go back to
    /// the queue after this long.
    #[arg(long, env = "BATCH_CLAIM_TIMEOUT_SECS", default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub batch_claim_timeout_secs: u64,

    /// Most connections in the database pool.
    #[arg(long, env = "DATABASE_POOL_SIZE", default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub database_pool_size: u32,

    /// Seconds the batch in hand gets to finish after SIGTERM or Ctrl-C before
    /// its orders are given back to the queue.
    #[arg(long, env = "SHUTDOWN_GRACE_SECS", default_value_t = 20)]
    pub shutdown_grace_secs: u64,
}

impl Config {
    /// The batch settings, its spans given `link_selection` (which the sampler
    /// decides).
    #[must_use]
    pub fn batch_settings(&self, link_selection: LinkSelection) -> BatchSettings {
        BatchSettings {
            max_size: self.batch_max_size,
            max_attempts: self.batch_max_attempts,
            claim_timeout: Duration::from_secs(self.batch_claim_timeout_secs),
            shutdown_grace: Duration::from_secs(self.shutdown_grace_secs),
            link_selection,
        }
    }

    /// Span limits that keep every link: a `process-batch` span carries one
    /// link per order, and a batch ends one `reconcile` span per order plus a
    /// few database spans at once; a batch can wait for room for them, in a
    /// queue that holds four batches (the next is claimed while one is
    /// processed).
    #[must_use]
    pub fn span_limits(&self) -> SpanLimits {
        SpanLimits {
            links_per_span: self.batch_max_size,
            queue_size: spans_per_batch(self.batch_max_size).saturating_mul(4),
            can_wait: true,
        }
    }
}

/// The most spans a batch of `max_size` orders ends.
fn spans_per_batch(max_size: u32) -> usize {
    usize::try_from(max_size).map_or(usize::MAX, |size| size.saturating_add(SPANS_BESIDE_ORDERS))
}

/// How batches are cut and how failures are handled.
#[derive(Debug, Clone, Copy)]
pub struct BatchSettings {
    /// Most orders per batch.
    pub max_size: u32,
    /// Claims of one order before it is marked failed.
    pub max_attempts: u32,
    /// How long a claim holds if its worker never finishes it.
    pub claim_timeout: Duration,
    /// How long the batch in hand may take to finish once shutdown is asked.
    pub shutdown_grace: Duration,
    /// Which links a `process-batch` span is given: only those to sampled
    /// requests when `OTEL_TRACES_SAMPLER=links` decides by them.
    pub link_selection: LinkSelection,
}

impl BatchSettings {
    /// The most spans one batch ends.
    #[must_use]
    pub fn spans_per_batch(&self) -> usize {
        spans_per_batch(self.max_size)
    }
}
