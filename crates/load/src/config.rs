//! Configuration, from flags or the environment (the environment is what the
//! compose service uses).

use std::num::NonZeroU32;
use std::time::Duration;

#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "orders-load",
    version,
    about = "Posts valid, varied orders to orders-api and reports throughput and latency"
)]
pub struct Config {
    /// Where orders-api listens.
    #[arg(long, env = "ORDERS_API_URL", default_value = "http://127.0.0.1:3000")]
    pub url: String,

    /// Orders per second in all; 0 posts flat out.
    #[arg(long, env = "LOAD_RATE", default_value_t = 0)]
    pub rate: u32,

    /// Seconds to run; 0 runs until `--count` orders are posted, or Ctrl-C.
    #[arg(long, env = "LOAD_DURATION_SECS", default_value_t = 30)]
    pub duration_secs: u64,

    /// Orders to post, at most.
    #[arg(long, env = "LOAD_COUNT")]
    pub count: Option<u64>,

    /// Requests in flight at once.
    #[arg(long, env = "LOAD_CONCURRENCY", default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub concurrency: u32,

    /// A W3C traceparent every order continues: its trace holds them all.
    #[arg(long, env = "LOAD_TRACEPARENT", value_parser = traceparent)]
    pub traceparent: Option<String>,
}

impl Config {
    /// The rate to hold, or `None` for flat out.
    #[must_use]
    pub fn rate(&self) -> Option<NonZeroU32> {
        NonZeroU32::new(self.rate)
    }

    /// How long to run, or `None` for no time limit.
    #[must_use]
    pub fn duration(&self) -> Option<Duration> {
        (self.duration_secs > 0).then(|| Duration::from_secs(self.duration_secs))
    }
}

fn traceparent(value: &str) -> Result<String, String> {
    if span_links::is_valid_traceparent(value) {
        Ok(value.to_owned())
    } else {
        Err("not a W3C traceparent: 00-<32 hex>-<16 hex>-<2 hex>".to_owned())
    }
}
