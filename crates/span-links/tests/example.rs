//! The `batch_links` example, run as a user runs it (no database, no
//! collector): `process-batch` prints one link per kept request, each with the
//! ids of a `receive-order` span it printed.

#![allow(clippy::unwrap_used, reason = "test set-up fails loudly")]

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// `(trace id, span id)` of a span or a link, as the console exporter prints them.
type Ids = (String, String);

/// The example's output, built first as `cargo run` would (a test target
/// alone does not build it).
fn run_example(args: &[&str]) -> String {
    let build = Command::new(env!("CARGO"))
        .args([
            "build",
            "-q",
            "-p",
            "span-links",
            "--example",
            "batch_links",
        ])
        .status()
        .unwrap();
    assert!(
        build.success(),
        "cargo build --example batch_links: {build}"
    );
    let deps = std::env::current_exe().unwrap();
    let example = PathBuf::from(deps.parent().unwrap().parent().unwrap())
        .join("examples")
        .join(format!("batch_links{}", std::env::consts::EXE_SUFFIX));
    let mut child = Command::new(&example)
        .args(args)
        .env_remove("DATABASE_URL")
        .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap_or_else(|error| panic!("{}: {error} (built by `cargo test`)", example.display()));
    let started = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > Duration::from_secs(5) {
            child.kill().unwrap();
            panic!("still running after 5 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success(), "{:?}", output.status);
    String::from_utf8(output.stdout).unwrap()
}

/// The ids of each printed `name` span, and of each link it carries.
fn spans(output: &str, name: &str) -> Vec<(Ids, Vec<Ids>)> {
    let field = |line: &str, key: &str| line.trim().strip_prefix(key).map(str::to_owned);
    let ids = |lines: &[&str], trace: &str, span: &str| -> Vec<Ids> {
        let pairs = lines.windows(2);
        pairs
            .filter_map(|pair| Some((field(pair[0], trace)?, field(pair[1], span)?)))
            .collect()
    };
    output
        .split("Span #")
        .filter(|block| block.contains(&format!("Name         : {name}\n")))
        .map(|block| {
            let (own, links) = block.split_once("Links:").unwrap_or((block, ""));
            let own: Vec<&str> = own.lines().collect();
            let links: Vec<&str> = links.lines().collect();
            let id = ids(&own, "TraceId      : ", "SpanId       : ").remove(0);
            (id, ids(&links, "TraceId: ", "SpanId : "))
        })
        .collect()
}

#[test]
fn the_batch_span_links_to_every_request_span_it_printed() {
    let output = run_example(&[]);
    let requests: Vec<Ids> = spans(&output, "receive-order")
        .into_iter()
        .map(|s| s.0)
        .collect();
    let batches = spans(&output, "process-batch");
    assert_eq!(requests.len(), 3, "{output}");
    assert_eq!(batches.len(), 1, "{output}");
    assert_eq!(batches[0].1, requests, "one link per request, its ids");
}

/// Random trace ids decide which requests are kept: runs go on until one
/// has kept some and dropped others (each does with odds of 3 in 4).
#[test]
fn at_a_ratio_the_batch_links_only_to_requests_that_were_kept() {
    let mixed = (0..20).any(|_| {
        let output = run_example(&["--ratio", "0.5"]);
        let stored = output.lines().filter(|line| line.starts_with("job "));
        let kept = stored.filter(|line| line.ends_with("-01")).count();
        let requests: Vec<Ids> = spans(&output, "receive-order")
            .into_iter()
            .map(|s| s.0)
            .collect();
        assert_eq!(requests.len(), kept, "{output}");
        let links: Vec<Ids> = spans(&output, "process-batch")
            .into_iter()
            .flat_map(|batch| batch.1)
            .collect();
        assert_eq!(
            links, requests,
            "a link to each kept request, none dangling"
        );
        (1..3).contains(&kept)
    });
    assert!(mixed, "no run both kept and dropped a request");
}
