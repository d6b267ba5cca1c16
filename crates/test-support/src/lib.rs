//! What the services' tests share: a real OTLP receiver, the real chain (the
//! project's collector and Jaeger as its backend), the binaries run as
//! processes, the environment `docker-compose.yml` and `kubernetes/` give
//! them as Compose and kustomize themselves read them, and the settings that
//! point a binary at a test's database and receiver. Test-only: a
//! dev-dependency, never a dependency of the services.

mod blink;
mod chain;
mod compose;
mod kubernetes;
mod otlp;
mod process;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use sqlx::{ConnectOptions as _, PgPool};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

pub use blink::BlinkingProxy;
pub use chain::{
    COLLECTOR_METRICS, Jaeger, SecondCollector, StoredSpan, accepted_spans, asked_until,
    collector_binary, start_collector,
};
pub use compose::compose_environment;
pub use kubernetes::{Container, HttpProbe, Pod, kubernetes_container};
pub use otlp::{Answer, OtlpReceiver, ReceivedSpan, body, hex, named, string};
pub use process::{Exited, Process, WAIT};
pub use tonic::Code;

/// The repository's top directory, where `docker-compose.yml` lives.
#[must_use]
pub fn repository_root() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
}

/// The Python of the tools CI pins (`.ci/tools/requirements.txt`).
fn pinned_python() -> PathBuf {
    pinned_tool("python")
}

/// The command `name` of the tools CI pins (`.ci/tools/requirements.txt`).
#[must_use]
pub fn pinned_tool(name: &str) -> PathBuf {
    repository_root().join(".ci/tools/.venv/bin").join(name)
}

/// How to install the tools CI pins.
const INSTALL_PINNED_TOOLS: &str = "python3 -m venv .ci/tools/.venv && .ci/tools/.venv/bin/pip install -r .ci/tools/requirements.txt";

/// `yaml` as JSON, read by the pinned `PyYAML`.
#[must_use]
pub fn yaml_as_json(yaml: &str) -> serde_json::Value {
    const TO_JSON: &str = "import json, sys, yaml; print(json.dumps(yaml.safe_load(sys.stdin)))";
    python_json("PyYAML", TO_JSON, yaml.as_bytes())
}

/// The JSON the pinned tools' Python prints running `script` on `input`;
/// `what` names it in a failure.
fn python_json(what: &str, script: &str, input: &[u8]) -> serde_json::Value {
    let mut python = std::process::Command::new(pinned_python())
        .args(["-c", script])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|error| {
            panic!("the pinned tools' Python: {error}; install it: {INSTALL_PINNED_TOOLS}")
        });
    if let Some(mut stdin) = python.stdin.take() {
        std::io::Write::write_all(&mut stdin, input)
            .unwrap_or_else(|error| panic!("{what}'s stdin: {error}"));
    }
    let json = stdout_of(what, python.wait_with_output());
    serde_json::from_slice(&json).unwrap_or_else(|error| panic!("{what}'s JSON: {error}"))
}

/// What a tool printed, once it ran and succeeded; else fails with what it
/// wrote on stderr, `what` naming it.
fn stdout_of(what: &str, run: std::io::Result<std::process::Output>) -> Vec<u8> {
    let output = run.unwrap_or_else(|error| panic!("{what}: {error}"));
    assert!(
        output.status.success(),
        "{what}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output.stdout
}

/// Checks that a service reads every variable in `environment`: its
/// `command`'s, or one of `also`. `given_to` names the service, and what
/// gives it the environment, for the message.
pub fn assert_reads_every_variable(
    given_to: &str,
    command: &clap::Command,
    also: &[&str],
    environment: &BTreeMap<String, String>,
) {
    let own = command
        .get_arguments()
        .filter_map(|arg| arg.get_env()?.to_str());
    let reads: Vec<&str> = own.chain(also.iter().copied()).collect();
    let unread: Vec<&String> = environment
        .keys()
        .filter(|name| !reads.contains(&name.as_str()))
        .collect();
    assert!(
        unread.is_empty(),
        "{given_to} is given {unread:?}, which it never reads"
    );
}

/// `environment[name]`, which must hold `there` (an address where a
/// deployment runs the service), becomes `here` (where the same thing
/// listens in this test).
pub fn relocate(environment: &mut BTreeMap<String, String>, name: &str, there: &str, here: String) {
    let value = environment
        .get_mut(name)
        .unwrap_or_else(|| panic!("no {name} is given"));
    assert!(value.contains(there), "{name}={value}, not {there}");
    *value = here;
}

/// A deployment's `environment` (compose's or Kubernetes'), pointed from its
/// PostgreSQL and collector (`postgres:5432`, `otel-collector:4317`, over
/// gRPC, in both) at this test's database and `receiver`.
pub fn point_at_test(
    environment: &mut BTreeMap<String, String>,
    pool: &PgPool,
    receiver: &OtlpReceiver,
) {
    let url = database_url(pool);
    relocate(environment, "DATABASE_URL", "@postgres:5432/", url);
    relocate(
        environment,
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "http://otel-collector:4317",
        receiver.endpoint("grpc"),
    );
    let protocol = environment.get("OTEL_EXPORTER_OTLP_PROTOCOL");
    assert_eq!(protocol.map(String::as_str), Some("grpc"));
}

/// `environment` as [`Process::spawn`] takes it.
#[must_use]
pub fn pairs(environment: &BTreeMap<String, String>) -> Vec<(&str, String)> {
    environment
        .iter()
        .map(|(name, value)| (name.as_str(), value.clone()))
        .collect()
}

/// The binary under test: the build the environment variable `variable`
/// names (CI: the release build, the one compose runs), else `cargo_built`,
/// the one cargo built for this test run (`env!("CARGO_BIN_EXE_<name>")`).
#[must_use]
pub fn binary(variable: &str, cargo_built: &str) -> PathBuf {
    std::env::var_os(variable).map_or_else(|| PathBuf::from(cargo_built), PathBuf::from)
}

/// The URL of the per-test database `#[sqlx::test]` created, with every
/// connect option of its pool (password and TLS mode included).
#[must_use]
pub fn database_url(pool: &PgPool) -> String {
    pool.connect_options().to_url_lossy().to_string()
}

/// A listener on a port of 127.0.0.1 of its own, and its address.
async fn listen() -> (TcpListener, SocketAddr) {
    let listener = TcpListener::bind("127.0.0.1:0").await;
    let listener = listener.unwrap_or_else(|error| panic!("{error}"));
    let address = listener
        .local_addr()
        .unwrap_or_else(|error| panic!("{error}"));
    (listener, address)
}

/// A port on 127.0.0.1 that was free a moment ago.
#[must_use]
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .unwrap_or_else(|error| panic!("no free port: {error}"))
        .port()
}

/// Start-ups whose database cannot be had: a refused port, and a database
/// that does not exist on `pool`'s server. Each is the environment (with an
/// acquire timeout far longer than a refused connection takes, and no
/// telemetry) and the one line a service must print for it.
#[must_use]
pub fn unreachable_databases(pool: &PgPool) -> [(Vec<(&'static str, String)>, String); 2] {
    let server = (*pool.connect_options()).clone();
    let (host, port, refused) = (server.get_host().to_owned(), server.get_port(), free_port());
    let env = |options: sqlx::postgres::PgConnectOptions| {
        vec![
            ("DATABASE_URL", options.to_url_lossy().to_string()),
            ("DATABASE_ACQUIRE_TIMEOUT_SECS", "20".to_owned()),
            ("OTEL_SDK_DISABLED", "true".to_owned()),
        ]
    };
    [
        (
            env(server.clone().port(refused)),
            format!(
                "cannot connect to PostgreSQL at {host}:{refused} (DATABASE_URL): connection refused"
            ),
        ),
        (
            env(server.database("orders_nope")),
            format!(
                "database \"orders_nope\" does not exist on {host}:{port} (DATABASE_URL): create it with CREATE DATABASE \"orders_nope\";"
            ),
        ),
    ]
}

/// The database, and export to `receiver` over `protocol` (`grpc` or
/// `http/protobuf`): spans sent 100 ms after they end, metrics every second.
#[must_use]
pub fn otel_env(
    pool: &PgPool,
    receiver: &OtlpReceiver,
    protocol: &str,
) -> Vec<(&'static str, String)> {
    vec![
        ("DATABASE_URL", database_url(pool)),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint(protocol)),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", protocol.to_owned()),
        ("OTEL_BSP_SCHEDULE_DELAY", "100".to_owned()),
        ("OTEL_METRIC_EXPORT_INTERVAL", "1000".to_owned()),
    ]
}

/// Posts `count` orders to the API at `url` as the README does, with
/// `scripts/post-orders.sh` (curl); the orders it printed, one a line.
pub async fn post_orders(url: &str, count: usize) -> Vec<serde_json::Value> {
    let script = repository_root().join("scripts/post-orders.sh");
    let env = [("ORDERS_API_URL", url.to_owned())];
    let posted = Process::spawn(script, &[&count.to_string()], &env);
    let posted = posted.wait(WAIT).await;
    posted.assert_code(0);
    let order = |line: &str| serde_json::from_str(line).unwrap_or_else(|_| panic!("{line}"));
    let orders: Vec<serde_json::Value> = posted.stdout.lines().map(order).collect();
    assert_eq!(orders.len(), count, "{posted}");
    orders
}

/// A port on 127.0.0.1 that accepts connections and never answers, until
/// dropped: a hung collector, or a hung database.
#[derive(Debug)]
pub struct Silent {
    pub address: SocketAddr,
    accepted: Arc<AtomicUsize>,
    holding: JoinHandle<()>,
}

impl Silent {
    pub async fn start() -> Self {
        let (listener, address) = listen().await;
        let accepted = Arc::new(AtomicUsize::new(0));
        let counted = Arc::clone(&accepted);
        let holding = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((connection, _)) = listener.accept().await {
                held.push(connection);
                counted.fetch_add(1, Ordering::Relaxed);
            }
        });
        Self {
            address,
            accepted,
            holding,
        }
    }

    /// Connections accepted so far.
    #[must_use]
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::Relaxed)
    }
}

impl Drop for Silent {
    fn drop(&mut self) {
        self.holding.abort();
    }
}

/// Polls `check` every 20 ms until it holds; fails naming `what` after `timeout`.
pub async fn wait_until<F: Future<Output = bool>>(
    timeout: Duration,
    what: &str,
    mut check: impl FnMut() -> F,
) {
    let deadline = Instant::now() + timeout;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
