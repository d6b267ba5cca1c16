//! The real chain the services export to: the project's collector, built
//! from `collector/builder-config.yaml` (scripts/test.sh builds it into
//! `target/otelcol`), running a configuration of the repository's, and
//! Jaeger v2 keeping traces in memory as its backend (built from
//! `.ci/tools/jaeger` into `target/jaeger`), read through Jaeger's own query
//! API (v3), which answers in OTLP's JSON.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use chrono::{SecondsFormat, Utc};
use serde_json::Value;

use crate::{Process, binary, free_port, repository_root};

/// Where the collector's health check listens, and its own metrics, as
/// otel-collector.yaml says.
const COLLECTOR_HEALTH: &str = "http://127.0.0.1:13133/";
pub const COLLECTOR_METRICS: &str = "http://127.0.0.1:8888/metrics";

/// A binary scripts/test.sh builds with Go, or the one `variable` names.
fn go_built(variable: &str, path: &str) -> PathBuf {
    let built = binary(
        variable,
        repository_root().join(path).to_str().unwrap_or(path),
    );
    assert!(
        built.exists(),
        "{} is missing: scripts/test.sh builds it (it needs Go 1.26), or set {variable}",
        built.display()
    );
    built
}

/// The collector built from `collector/builder-config.yaml`.
#[must_use]
pub fn collector_binary() -> PathBuf {
    go_built("OTELCOL_BIN", "target/otelcol/otelcol-orders")
}

/// The collector running `config` (a path in the repository) with `env`,
/// once its health check answers.
pub async fn start_collector(config: &str, args: &[&str], env: &[(&str, String)]) -> Process {
    start_collector_checked_at(config, args, env, COLLECTOR_HEALTH).await
}

async fn start_collector_checked_at(
    config: &str,
    args: &[&str],
    env: &[(&str, String)],
    health: &str,
) -> Process {
    let config = format!("--config={}", repository_root().join(config).display());
    let args: Vec<&str> = [config.as_str()]
        .into_iter()
        .chain(args.iter().copied())
        .collect();
    Process::spawn(collector_binary(), &args, env)
        .serving(health)
        .await
}

/// A collector running `config` beside one on its fixed ports: another
/// replica, on ports of its own (an override of its receivers', health
/// check's and own metrics' ports).
#[derive(Debug)]
pub struct SecondCollector {
    pub process: Process,
    /// Where it takes OTLP/gRPC.
    pub otlp: SocketAddr,
    metrics: String,
}

impl SecondCollector {
    pub async fn start(config: &str, env: &[(&str, String)]) -> Self {
        let [grpc, http, health, metrics] = [(); 4].map(|()| free_port());
        let override_ports = format!(
            "receivers: {{otlp: {{protocols: {{grpc: {{endpoint: '127.0.0.1:{grpc}'}}, http: {{endpoint: '127.0.0.1:{http}'}}}}}}}}\n\
             extensions: {{health_check: {{endpoint: '127.0.0.1:{health}'}}}}\n\
             service: {{telemetry: {{metrics: {{readers: [{{pull: {{exporter: {{prometheus: {{host: 127.0.0.1, port: {metrics}}}}}}}}}]}}}}}}\n"
        );
        let path = std::env::temp_dir().join(format!("otelcol-ports-{grpc}.yaml"));
        std::fs::write(&path, override_ports)
            .unwrap_or_else(|error| panic!("{}: {error}", path.display()));
        let also = format!("--config={}", path.display());
        let health = format!("http://127.0.0.1:{health}/");
        let process = start_collector_checked_at(config, &[&also], env, &health).await;
        Self {
            process,
            otlp: SocketAddr::from(([127, 0, 0, 1], grpc)),
            metrics: format!("http://127.0.0.1:{metrics}/metrics"),
        }
    }

    /// The spans its receiver accepted, as its own metrics say.
    pub async fn accepted_spans(&self) -> u64 {
        accepted_spans(&self.metrics).await
    }
}

/// The spans a collector's receiver accepted, as its own metrics at
/// `metrics` (a URL) say.
pub async fn accepted_spans(metrics: &str) -> u64 {
    let text = match reqwest::get(metrics).await {
        Ok(response) => response.text().await.unwrap_or_default(),
        Err(error) => panic!("{metrics}: {error}"),
    };
    let accepted = text
        .lines()
        .filter(|line| line.starts_with("otelcol_receiver_accepted_spans"))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>();
    // A count, written as a float.
    format!("{accepted:.0}").parse().unwrap_or(0)
}

/// A span as Jaeger returns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredSpan {
    pub service: String,
    pub name: String,
    pub trace_id: String,
    pub span_id: String,
    /// Each link: the trace and span it points to, and its `messaging.message.id`.
    pub links: Vec<(String, String, Option<String>)>,
}

/// Jaeger v2, in memory, until dropped.
#[derive(Debug)]
pub struct Jaeger {
    /// Where it takes OTLP over gRPC.
    pub otlp: SocketAddr,
    query: String,
    /// Killed when dropped.
    _process: Process,
}

impl Jaeger {
    /// Jaeger taking OTLP on a free port.
    pub async fn start() -> Self {
        Self::start_at(SocketAddr::from(([127, 0, 0, 1], free_port()))).await
    }

    /// Jaeger taking OTLP over gRPC at `otlp`, once its query API answers:
    /// `.ci/tools/jaeger/config.yaml`, on ports of this test's.
    pub async fn start_at(otlp: SocketAddr) -> Self {
        let query = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let query_grpc = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let config = repository_root().join(".ci/tools/jaeger/config.yaml");
        let args = [
            format!("--config={}", config.display()),
            format!("--set=receivers.otlp.protocols.grpc.endpoint={otlp}"),
            format!("--set=extensions.jaeger_query.http.endpoint={query}"),
            format!("--set=extensions.jaeger_query.grpc.endpoint={query_grpc}"),
        ];
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let process = Process::spawn(go_built("JAEGER_BIN", "target/jaeger/jaeger"), &args, &[]);
        let query = format!("http://{query}/api/v3");
        let process = process.serving(&format!("{query}/services")).await;
        Self {
            otlp,
            query,
            _process: process,
        }
    }

    /// The spans of the traces that hold a span of `service` named
    /// `operation`, started within the last hour.
    pub async fn find(&self, service: &str, operation: &str) -> Vec<StoredSpan> {
        let now = Utc::now();
        let time = |minutes| {
            (now + chrono::Duration::minutes(minutes)).to_rfc3339_opts(SecondsFormat::Secs, true)
        };
        let query = [
            ("query.service_name", service.to_owned()),
            ("query.operation_name", operation.to_owned()),
            ("query.start_time_min", time(-60)),
            ("query.start_time_max", time(1)),
            ("query.num_traces", "1000".to_owned()),
        ];
        self.get(&format!("{}/traces", self.query), &query).await
    }

    /// The spans of trace `trace_id`.
    pub async fn trace(&self, trace_id: &str) -> Vec<StoredSpan> {
        self.get(&format!("{}/traces/{trace_id}", self.query), &[])
            .await
    }

    async fn get(&self, url: &str, query: &[(&str, String)]) -> Vec<StoredSpan> {
        let url = reqwest::Url::parse_with_params(url, query)
            .unwrap_or_else(|error| panic!("{url}: {error}"));
        let answer = reqwest::get(url.clone())
            .await
            .unwrap_or_else(|error| panic!("Jaeger at {url}: {error}"));
        let status = answer.status();
        let body: Value = answer
            .json()
            .await
            .unwrap_or_else(|error| panic!("Jaeger at {url}: {error}"));
        // Nothing found is a 404 with an error body.
        if status == reqwest::StatusCode::NOT_FOUND {
            return Vec::new();
        }
        assert!(status.is_success(), "Jaeger at {url}: {status} {body}");
        spans_of(&body["result"])
    }
}

/// Asks Jaeger with `ask` until `done` holds of its answer, or `timeout`
/// passes (the collector sends what it holds every few seconds); the last
/// answer either way.
pub async fn asked_until<F: Future<Output = Vec<StoredSpan>>>(
    timeout: Duration,
    ask: impl Fn() -> F,
    done: impl Fn(&[StoredSpan]) -> bool,
) -> Vec<StoredSpan> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let spans = ask().await;
        if done(&spans) || tokio::time::Instant::now() >= deadline {
            return spans;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// The spans of OTLP JSON `resourceSpans`.
fn spans_of(result: &Value) -> Vec<StoredSpan> {
    let text = |value: &Value| value.as_str().unwrap_or_default().to_owned();
    let attribute = |attributes: &Value, key: &str| {
        attributes.as_array()?.iter().find(|kv| kv["key"] == key)?["value"]["stringValue"]
            .as_str()
            .map(str::to_owned)
    };
    let mut spans = Vec::new();
    for resource in result["resourceSpans"].as_array().into_iter().flatten() {
        let service = attribute(&resource["resource"]["attributes"], "service.name");
        for scope in resource["scopeSpans"].as_array().into_iter().flatten() {
            for span in scope["spans"].as_array().into_iter().flatten() {
                let links = span["links"].as_array().into_iter().flatten();
                spans.push(StoredSpan {
                    service: service.clone().unwrap_or_default(),
                    name: text(&span["name"]),
                    trace_id: text(&span["traceId"]),
                    span_id: text(&span["spanId"]),
                    links: links
                        .map(|link| {
                            let id = attribute(&link["attributes"], "messaging.message.id");
                            (text(&link["traceId"]), text(&link["spanId"]), id)
                        })
                        .collect(),
                });
            }
        }
    }
    spans
}
