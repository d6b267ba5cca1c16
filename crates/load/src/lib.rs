//! `orders-load`: posts valid, varied orders to `orders-api` continuously, at a
//! target rate or flat out, for a duration or a count, optionally continuing a
//! caller's trace; shows progress while it runs, and throughput and latency
//! percentiles at the end.
//!
//! - [`config`]: the command line and environment.
//! - [`order`]: the orders it posts.
//! - [`load`]: the workers, and the report they add up to.

pub mod config;
pub mod load;
pub mod order;

pub use config::Config;
