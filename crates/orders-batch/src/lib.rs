//! `orders-batch`: processes the orders orders-api stored, in batches, each
//! traced as one `process-batch` span that links to the `receive-order` span
//! of every order in it, across the asynchronous boundary.
//!
//! - [`app`]: start-up, `--once` and the scheduled mode.
//! - [`config`]: the command line and environment.
//! - [`schedule`]: the cron schedule, one run at a time.
//! - [`worker`]: a run, batch after batch, with shutdown.
//! - [`process_batch`]: one batch, its span and its links, each order's
//!   `reconcile` step: the batch side of the pattern, in one file.
//! - [`report`]: what a batch and a run did.
//! - [`metrics`]: the batch's instruments.
//!
//! The queue queries live in `orders::claims`, shared with nothing else but
//! next to the schema they depend on.

pub mod app;
pub mod config;
pub mod metrics;
pub mod process_batch;
pub mod report;
pub mod schedule;
pub mod worker;

pub use config::{BatchSettings, Config};
pub use metrics::BatchMetrics;
pub use report::RunSummary;
pub use worker::Worker;
