//! Span links with nothing but Rust: three requests, each in a trace of its
//! own, hand jobs over through an in-memory table of stored contexts; one
//! batch span, in a new trace, links to each. The console exporter prints the
//! spans: every link's `TraceId` and `SpanId` are a `receive-order` span's.
//!
//! ```sh
//! cargo run -p span-links --example batch_links                 # every request kept
//! cargo run -p span-links --example batch_links -- --ratio 0.5  # the `links` sampler at 50 %
//! ```
//!
//! At a ratio, the batch span is given only the links to requests that were
//! kept, and is kept when it has one: no link leads to a span never exported.

use std::error::Error;

use opentelemetry::Context;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SdkTracerProvider;
use span_links::{LinkSampler, LinkSelection, Links, StoredContext};
use span_links::{start_with_links, with_link_limit};
use tracing_subscriber::layer::SubscriberExt;

const REQUESTS: u32 = 3;
/// The most jobs one batch takes: one link each.
const BATCH_MAX_SIZE: u32 = 1000;

/// A row of the jobs table: the work, and the context of the span that
/// handed it over (`traceparent`, `tracestate` columns in a database).
struct Job {
    id: u32,
    context: Option<StoredContext>,
}

fn main() -> Result<(), Box<dyn Error>> {
    let ratio = ratio_from_args()?;
    let provider = with_link_limit(SdkTracerProvider::builder(), BATCH_MAX_SIZE)
        .with_sampler(LinkSampler::new(ratio))
        .with_batch_exporter(opentelemetry_stdout::SpanExporter::default())
        .with_resource(Resource::builder().with_service_name("batch-links").build())
        .build();
    let layer = tracing_opentelemetry::layer()
        .with_tracer(provider.tracer("batch_links"))
        .with_location(false)
        .with_threads(false)
        .with_target(false)
        .with_tracked_inactivity(false);
    tracing::subscriber::with_default(tracing_subscriber::registry().with(layer), || {
        let jobs: Vec<Job> = (1..=REQUESTS).map(receive_order).collect();
        process_batch(&jobs);
    });
    provider.shutdown()?;
    Ok(())
}

/// A request, in a trace of its own: it stores its span's context with the
/// job it hands over.
fn receive_order(id: u32) -> Job {
    let _request = tracing::info_span!(parent: None, "receive-order", job.id = id).entered();
    let context = StoredContext::of_current_span();
    if let Some(stored) = &context {
        println!("job {id}: stored traceparent {}", stored.traceparent);
    }
    Job { id, context }
}

/// The batch, in a new trace: one span with a link to each job's request,
/// given at its creation so that the sampler sees them.
fn process_batch(jobs: &[Job]) {
    let links = Links::to(jobs.iter().map(|job| (job.id, job.context.as_ref())));
    let batch = tracing::info_span!(parent: None, "process-batch");
    start_with_links(
        &batch,
        Context::new(),
        links.selected(LinkSelection::Sampled),
    );
    let _entered = batch.enter();
    // The work: its spans are children of `process-batch`.
}

/// `--ratio R` (0 to 1, default 1): the share of requests the sampler keeps.
fn ratio_from_args() -> Result<f64, Box<dyn Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.as_slice() {
        [] => Ok(1.0),
        [flag, ratio] if flag == "--ratio" => match ratio.parse::<f64>() {
            Ok(ratio) if (0.0..=1.0).contains(&ratio) => Ok(ratio),
            _ => Err(format!("--ratio takes a number from 0 to 1, not {ratio:?}").into()),
        },
        _ => Err("usage: batch_links [--ratio R]".into()),
    }
}
