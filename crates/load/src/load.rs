//! The workers: each posts orders one after another, waiting for the shared
//! rate limiter (governor) if there is a rate; each records its latencies in a
//! histogram (hdrhistogram), merged into one report at the end.

use std::collections::BTreeMap;
use std::fmt;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressStyle};
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::order::order;

/// What a run did.
#[derive(Debug)]
pub struct Report {
    elapsed: Duration,
    created: u64,
    /// Answers other than 201, by status.
    refused: BTreeMap<u16, u64>,
    /// Requests that got no answer (connection refused, reset, …).
    failed: u64,
    /// Latency of every answered request, in microseconds.
    latency: Histogram<u64>,
}

impl Report {
    fn new() -> Self {
        Self {
            elapsed: Duration::ZERO,
            created: 0,
            refused: BTreeMap::new(),
            failed: 0,
            latency: Histogram::new(3).unwrap_or_else(|_| unreachable!("3 significant figures")),
        }
    }

    fn add(&mut self, other: &Self) {
        self.created += other.created;
        for (status, count) in &other.refused {
            *self.refused.entry(*status).or_default() += count;
        }
        self.failed += other.failed;
        // Both auto-resize, so adding cannot overflow their ranges.
        let _ = self.latency.add(&other.latency);
    }

    /// Every order posted was created.
    #[must_use]
    pub fn all_created(&self) -> bool {
        self.refused.is_empty() && self.failed == 0 && self.created > 0
    }

    fn posted(&self) -> u64 {
        self.created + self.refused.values().sum::<u64>() + self.failed
    }

    fn milliseconds(&self, quantile: f64) -> f64 {
        Duration::from_micros(self.latency.value_at_quantile(quantile)).as_secs_f64() * 1e3
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let seconds = self.elapsed.as_secs_f64();
        #[allow(clippy::cast_precision_loss, reason = "a rate to print")]
        let rate = self.posted() as f64 / seconds.max(f64::EPSILON);
        let refused: Vec<String> = self
            .refused
            .iter()
            .map(|(status, count)| format!("{count} × {status}"))
            .collect();
        writeln!(
            f,
            "orders-load: {} orders in {seconds:.2} s, {rate:.1}/s: {} created, {} refused{}, {} failed",
            self.posted(),
            self.created,
            self.refused.values().sum::<u64>(),
            if refused.is_empty() {
                String::new()
            } else {
                format!(" ({})", refused.join(", "))
            },
            self.failed,
        )?;
        if self.latency.is_empty() {
            return write!(f, "latency: no answer");
        }
        write!(
            f,
            "latency: p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
            self.milliseconds(0.5),
            self.milliseconds(0.9),
            self.milliseconds(0.99),
            self.milliseconds(1.0),
        )
    }
}

/// What the workers share.
struct Shared {
    client: reqwest::Client,
    url: String,
    traceparent: Option<String>,
    limiter: Option<DefaultDirectRateLimiter>,
    next: AtomicU64,
    count: Option<u64>,
    stop: CancellationToken,
    progress: ProgressBar,
}

/// Posts orders as `config` says until its count or duration is reached, or
/// `stop` is cancelled; returns what happened.
pub async fn run(config: &Config, stop: &CancellationToken) -> Report {
    let stop = stop.child_token();
    if let Some(duration) = config.duration() {
        let stop = stop.clone();
        tokio::spawn(async move {
            tokio::time::sleep(duration).await;
            stop.cancel();
        });
    }
    let shared = Arc::new(Shared {
        client: reqwest::Client::new(),
        url: format!("{}/orders", config.url.trim_end_matches('/')),
        traceparent: config.traceparent.clone(),
        limiter: config.rate().map(|rate| RateLimiter::direct(quota(rate))),
        next: AtomicU64::new(0),
        count: config.count,
        stop,
        progress: progress(config.count),
    });
    let started = Instant::now();
    let workers: Vec<_> = (0..config.concurrency)
        .map(|_| tokio::spawn(work(Arc::clone(&shared))))
        .collect();
    let mut report = Report::new();
    for worker in workers {
        if let Ok(done) = worker.await {
            report.add(&done);
        }
    }
    report.elapsed = started.elapsed();
    shared.progress.finish_and_clear();
    report
}

/// `rate` a second, with a burst of a tenth of a second's worth: enough for
/// late wake-ups to catch up, too little to overshoot the rate.
fn quota(rate: NonZeroU32) -> Quota {
    let burst = NonZeroU32::new(rate.get() / 10).unwrap_or(NonZeroU32::MIN);
    Quota::per_second(rate).allow_burst(burst)
}

fn progress(count: Option<u64>) -> ProgressBar {
    let (bar, template) = match count {
        Some(count) => (
            ProgressBar::new(count),
            "{bar:40} {pos}/{len} orders, {per_sec}, {eta} left",
        ),
        None => (
            ProgressBar::no_length(),
            "{spinner} {pos} orders, {per_sec}, {elapsed}",
        ),
    };
    if let Ok(style) = ProgressStyle::with_template(template) {
        bar.set_style(style);
    }
    bar
}

/// One worker: posts until there is nothing left to post.
async fn work(shared: Arc<Shared>) -> Report {
    let mut report = Report::new();
    loop {
        if let Some(limiter) = &shared.limiter {
            tokio::select! {
                () = limiter.until_ready() => {}
                () = shared.stop.cancelled() => break,
            }
        }
        let n = shared.next.fetch_add(1, Ordering::Relaxed);
        if shared.stop.is_cancelled() || shared.count.is_some_and(|count| n >= count) {
            break;
        }
        post(&shared, n, &mut report).await;
        shared.progress.inc(1);
    }
    report
}

/// Posts order `n` with an idempotency key of its own, as a careful client does.
async fn post(shared: &Shared, n: u64, report: &mut Report) {
    let mut request = shared
        .client
        .post(&shared.url)
        .header("idempotency-key", uuid::Uuid::new_v4().to_string())
        .json(&order(n));
    if let Some(traceparent) = &shared.traceparent {
        request = request.header("traceparent", traceparent);
    }
    let sent = Instant::now();
    match request.send().await {
        Ok(answer) => {
            let micros = u64::try_from(sent.elapsed().as_micros()).unwrap_or(u64::MAX);
            let _ = report.latency.record(micros);
            match answer.status().as_u16() {
                201 => report.created += 1,
                status => *report.refused.entry(status).or_default() += 1,
            }
        }
        Err(_) => report.failed += 1,
    }
}
