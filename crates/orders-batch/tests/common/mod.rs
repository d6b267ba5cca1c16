//! What the integration tests share: orders seeded through the real store,
//! with receive-order trace contexts, and the rows as the batch left them.

#![allow(dead_code, reason = "each test crate uses a different part")]
#![allow(clippy::unwrap_used, reason = "test set-up fails loudly")]

use std::time::Duration;

use opentelemetry::trace::{SpanContext, SpanId, TraceFlags, TraceId, TraceState};
use orders::order::OrderRequest;
use orders::{JsonObject, TraceContext, store};
use orders_batch::{BatchMetrics, BatchSettings, Worker};
use serde_json::json;
use sqlx::PgPool;
use uuid::Uuid;

/// An order as stored, with the receive-order context it was stored with.
#[derive(Debug, Clone)]
pub struct SeededOrder {
    pub id: Uuid,
    pub source: TraceContext,
}

/// A sampled receive-order span context; every other one carries a trace state.
pub fn receive_order_context(index: usize) -> SpanContext {
    let trace_state = if index.is_multiple_of(2) {
        TraceState::from_key_value([("vendor", format!("v{index}"))]).unwrap()
    } else {
        TraceState::default()
    };
    SpanContext::new(
        TraceId::from(Uuid::new_v4().as_u128()),
        SpanId::from((u64::try_from(index).unwrap() + 1) << 8 | 0x5a),
        TraceFlags::SAMPLED,
        false,
        trace_state,
    )
}

/// A valid order request whose first item has `quantity`.
pub fn order_request(quantity: i64) -> OrderRequest {
    let JsonObject(request) = serde_json::from_value::<JsonObject<OrderRequest>>(json!({
        "customer_id": "c-7",
        "items": [
            {"sku": "sku-1", "quantity": quantity, "unit_price_cents": 1250},
            {"sku": "sku-2", "quantity": 1, "unit_price_cents": 99}
        ]
    }))
    .unwrap();
    request
}

/// Stores `count` orders through the store function orders-api uses, oldest
/// first, each with a receive-order context of its own.
pub async fn seed_orders(pool: &PgPool, count: usize) -> Vec<SeededOrder> {
    let mut seeded = Vec::with_capacity(count);
    for index in 0..count {
        let source = TraceContext::from_span_context(&receive_order_context(index)).unwrap();
        let order = order_request(1 + i64::try_from(index % 5).unwrap())
            .validate()
            .unwrap();
        let stored = store::insert_order(pool, Uuid::now_v7(), &order, Some(&source))
            .await
            .unwrap();
        seeded.push(SeededOrder {
            id: stored.id,
            source,
        });
    }
    seeded
}

/// One row of `orders` as the batch leaves it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Row {
    pub id: Uuid,
    pub status: String,
    pub attempts: i32,
    pub last_error: Option<String>,
    pub claimed_by: Option<String>,
    pub processed_at: Option<chrono::DateTime<chrono::Utc>>,
    pub batch_trace_id: Option<String>,
    pub batch_span_id: Option<String>,
}

/// Every order, oldest first.
pub async fn rows(pool: &PgPool) -> Vec<Row> {
    sqlx::query_as(
        "SELECT id, status, attempts, last_error, claimed_by, processed_at, batch_trace_id, batch_span_id \
         FROM orders ORDER BY created_at, id",
    )
    .fetch_all(pool)
    .await
    .unwrap()
}

/// Batch settings for tests: `max_size` orders per batch, 3 attempts, a
/// one-minute claim, a short shutdown grace.
pub fn settings(max_size: u32) -> BatchSettings {
    BatchSettings {
        max_size,
        max_attempts: 3,
        claim_timeout: Duration::from_mins(1),
        shutdown_grace: Duration::from_secs(2),
    }
}

/// A worker on `pool`, reporting metrics to the global meter provider.
pub fn worker(pool: &PgPool, settings: BatchSettings) -> Worker {
    Worker::new(
        pool.clone(),
        settings,
        BatchMetrics::new(&opentelemetry::global::meter("orders-batch-test")),
    )
}

// Running the binaries: the processes, their output, and what they exported.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fmt;
use std::os::unix::process::ExitStatusExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::thread::JoinHandle;
use std::time::Instant;

use otlp_receiver::opentelemetry_proto::tonic::common::v1::any_value::Value as ProtoValue;
use otlp_receiver::opentelemetry_proto::tonic::trace::v1::span::Link;
use otlp_receiver::{OtlpReceiver, ReceivedSpan, hex};

/// How long a process may take to do what a test waits for.
pub const WAIT: Duration = Duration::from_secs(30);

/// The `orders-batch` binary under test: the one cargo built for this test
/// run, or another build (say, `target/release/orders-batch`) named by
/// `ORDERS_BATCH_BIN`.
pub fn orders_batch_binary() -> String {
    std::env::var("ORDERS_BATCH_BIN")
        .unwrap_or_else(|_| env!("CARGO_BIN_EXE_orders-batch").to_owned())
}

/// The `orders-api` binary: `ORDERS_API_BIN`, else the one in this test's
/// target profile directory (`target/<profile>/orders-api`), built first with
/// `cargo build -p orders-api` when it is missing or older than its sources
/// (`cargo test -p orders-batch` alone does not build it). An up-to-date
/// binary is used as it is: building it again under another feature set
/// would make cargo rebuild the shared dependencies on every alternation.
pub fn orders_api_binary() -> PathBuf {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY
        .get_or_init(|| {
            if let Ok(binary) = std::env::var("ORDERS_API_BIN") {
                return PathBuf::from(binary);
            }
            // target/<profile>/deps/<test executable>
            let exe = std::env::current_exe().unwrap();
            let profile_dir = exe.parent().and_then(Path::parent).unwrap().to_owned();
            let binary = profile_dir.join("orders-api");
            if !up_to_date(&binary) {
                build_orders_api(&profile_dir);
            }
            assert!(
                binary.exists(),
                "{} does not exist after building it; set ORDERS_API_BIN",
                binary.display()
            );
            binary
        })
        .clone()
}

/// Whether `binary` exists and is newer than every source it is built from.
fn up_to_date(binary: &Path) -> bool {
    let Ok(built) = std::fs::metadata(binary).and_then(|metadata| metadata.modified()) else {
        return false;
    };
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    // What cargo rebuilds the binary for when it changes: files elsewhere
    // (a README, another crate's dependencies) would make this build again
    // on every run, for nothing.
    let sources = [
        "migrations",
        "crates/orders-api/src",
        "crates/orders/src",
        "crates/orders/build.rs",
        "crates/telemetry/src",
        "crates/shutdown/src",
    ];
    sources
        .iter()
        .all(|source| newest_change(&workspace.join(source)).is_none_or(|changed| changed <= built))
}

/// The latest modification time of `path` or anything below it (hidden files
/// excepted).
fn newest_change(path: &Path) -> Option<std::time::SystemTime> {
    let metadata = std::fs::metadata(path).ok()?;
    if !metadata.is_dir() {
        return metadata.modified().ok();
    }
    std::fs::read_dir(path)
        .ok()?
        .filter_map(Result::ok)
        .filter(|entry| {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            !name.starts_with('.')
        })
        .filter_map(|entry| newest_change(&entry.path()))
        .max()
}

fn build_orders_api(profile_dir: &Path) {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut build = Command::new(cargo);
    build.args(["build", "-p", "orders-api", "--bin", "orders-api"]);
    match profile_dir.file_name().and_then(OsStr::to_str) {
        Some("debug") | None => {}
        Some("release") => {
            build.arg("--release");
        }
        Some(profile) => {
            build.args(["--profile", profile]);
        }
    }
    let output = build
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "cargo build -p orders-api failed ({}); set ORDERS_API_BIN to use a built binary\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
}

/// The URL of the per-test database `#[sqlx::test]` created.
pub fn database_url(pool: &PgPool) -> String {
    let options = pool.connect_options();
    format!(
        "postgres://{}@{}:{}/{}",
        options.get_username(),
        options.get_host(),
        options.get_port(),
        options.get_database().unwrap()
    )
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The database and OTLP export to `receiver` over `protocol` (`grpc` or
/// `http/protobuf`), spans sent 100 ms after they end.
pub fn otel_env(
    pool: &PgPool,
    receiver: &OtlpReceiver,
    protocol: &str,
) -> Vec<(&'static str, String)> {
    let endpoint = if protocol == "grpc" {
        receiver.grpc_endpoint()
    } else {
        receiver.http_endpoint()
    };
    vec![
        ("DATABASE_URL", database_url(pool)),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", protocol.to_owned()),
        ("OTEL_BSP_SCHEDULE_DELAY", "100".to_owned()),
        ("OTEL_METRIC_EXPORT_INTERVAL", "1000".to_owned()),
        ("RUST_LOG", "info".to_owned()),
    ]
}

/// `program` with a clean environment (nothing inherited, no `OTEL_*`) plus `env`.
pub fn command(program: impl AsRef<OsStr>, env: &[(&str, String)]) -> Command {
    let mut command = Command::new(program);
    command
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default());
    for (key, value) in env {
        command.env(key, value);
    }
    command
}

/// A running process whose stdout and stderr are read as they come (a full
/// pipe would stall it). Killed if dropped while still running.
#[derive(Debug)]
pub struct Process {
    name: String,
    child: Child,
    started: Instant,
    stdout: Option<JoinHandle<String>>,
    stderr: Option<JoinHandle<String>>,
}

/// A process that ended: how, after how long, and what it wrote.
#[derive(Debug)]
pub struct Exited {
    pub name: String,
    pub status: ExitStatus,
    /// From start to exit, as seen by polling every 20 ms.
    pub ran_for: Duration,
    pub stdout: String,
    pub stderr: String,
}

fn read_all(mut pipe: impl std::io::Read + Send + 'static) -> JoinHandle<String> {
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = pipe.read_to_end(&mut bytes);
        String::from_utf8_lossy(&bytes).into_owned()
    })
}

impl Process {
    pub fn spawn(program: impl AsRef<OsStr>, args: &[&str], env: &[(&str, String)]) -> Self {
        let name = format!(
            "{} {}",
            Path::new(program.as_ref())
                .file_name()
                .unwrap_or_default()
                .to_string_lossy(),
            args.join(" ")
        );
        let mut child = command(program, env)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|error| panic!("cannot start {name}: {error}"));
        let stdout = child.stdout.take().map(read_all);
        let stderr = child.stderr.take().map(read_all);
        Self {
            name,
            child,
            started: Instant::now(),
            stdout,
            stderr,
        }
    }

    /// `orders-batch` with `args`.
    pub fn orders_batch(args: &[&str], env: &[(&str, String)]) -> Self {
        Self::spawn(orders_batch_binary(), args, env)
    }

    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// Sends SIGTERM.
    pub fn sigterm(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success(), "kill -TERM {} failed", self.child.id());
    }

    /// Sends SIGKILL.
    pub fn sigkill(&mut self) {
        self.child.kill().unwrap();
    }

    /// Whether the process is still running.
    pub fn running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// Waits (without blocking the runtime) for the process to exit; kills it
    /// and fails if it takes longer than `timeout`.
    pub async fn wait(mut self, timeout: Duration) -> Exited {
        let deadline = Instant::now() + timeout;
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            if Instant::now() >= deadline {
                let _ = self.child.kill();
                let status = self.child.wait().unwrap();
                let exited = self.collect(status);
                panic!("{} did not exit within {timeout:?}\n{exited}", exited.name);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        self.collect(status)
    }

    fn collect(&mut self, status: ExitStatus) -> Exited {
        let ran_for = self.started.elapsed();
        let join = |handle: Option<JoinHandle<String>>| {
            handle.map(|h| h.join().unwrap()).unwrap_or_default()
        };
        Exited {
            name: self.name.clone(),
            status,
            ran_for,
            stdout: join(self.stdout.take()),
            stderr: join(self.stderr.take()),
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The last few lines of some output, for failure messages.
fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

impl fmt::Display for Exited {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{}: {} after {:?}", self.name, self.status, self.ran_for)?;
        writeln!(f, "--- stdout (tail) ---\n{}", tail(&self.stdout, 30))?;
        write!(f, "--- stderr (tail) ---\n{}", tail(&self.stderr, 30))
    }
}

/// The `--once` summary line, parsed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Summary {
    pub processed: usize,
    pub failed: usize,
    pub retrying: usize,
    pub batches: usize,
    pub failed_batches: usize,
    pub unlinked: usize,
    pub requeued: usize,
    pub released: usize,
}

const SUMMARY_PREFIX: &str = "orders-batch --once: ";

impl Exited {
    /// The exit code; fails (with the output) when the process died of a signal.
    pub fn code(&self) -> i32 {
        self.status
            .code()
            .unwrap_or_else(|| panic!("killed by signal {:?}\n{self}", self.status.signal()))
    }

    /// Asserts the process exited 0.
    pub fn assert_success(&self) {
        assert_eq!(self.status.code(), Some(0), "{self}");
    }

    /// The one summary line on stdout, parsed; fails unless there is exactly one.
    pub fn summary(&self) -> Summary {
        let lines: Vec<&str> = self
            .stdout
            .lines()
            .filter(|line| line.starts_with(SUMMARY_PREFIX))
            .collect();
        assert_eq!(lines.len(), 1, "expected one summary line\n{self}");
        let fields: HashMap<&str, usize> = lines[0][SUMMARY_PREFIX.len()..]
            .split_whitespace()
            .map(|field| {
                let (key, value) = field
                    .split_once('=')
                    .unwrap_or_else(|| panic!("bad summary field {field:?}\n{self}"));
                (key, value.parse().unwrap())
            })
            .collect();
        let field = |key: &str| {
            *fields
                .get(key)
                .unwrap_or_else(|| panic!("summary has no {key}\n{self}"))
        };
        assert_eq!(fields.len(), 8, "unexpected summary fields\n{self}");
        Summary {
            processed: field("processed"),
            failed: field("failed"),
            retrying: field("retrying"),
            batches: field("batches"),
            failed_batches: field("failed_batches"),
            unlinked: field("unlinked"),
            requeued: field("requeued"),
            released: field("released"),
        }
    }
}

/// Runs `orders-batch --once` to completion.
pub async fn run_once(env: &[(&str, String)]) -> Exited {
    Process::orders_batch(&["--once"], env).wait(WAIT).await
}

/// Polls `check` every 20 ms until it holds; fails naming `what` after `timeout`.
pub async fn wait_until<F, Fut>(timeout: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The number a `SELECT count(*) …` query returns.
pub async fn count(pool: &PgPool, query: &'static str) -> usize {
    let count: i64 = sqlx::query_scalar(query).fetch_one(pool).await.unwrap();
    usize::try_from(count).unwrap()
}

/// How many orders have `status`.
pub async fn count_status(pool: &PgPool, status: &str) -> usize {
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM orders WHERE status = $1")
        .bind(status)
        .fetch_one(pool)
        .await
        .unwrap();
    usize::try_from(count).unwrap()
}

/// Inserts `count` valid pending orders in one statement, a millisecond apart
/// (oldest first), each with a valid traceparent of its own and every other
/// one a tracestate; for runs too large for [`seed_orders`].
pub async fn bulk_seed(pool: &PgPool, count: i32) {
    sqlx::query(
        "INSERT INTO orders (id, customer_id, items, total_cents, created_at, traceparent, tracestate) \
         SELECT gen_random_uuid(), 'c-bulk', \
                jsonb_build_array(jsonb_build_object( \
                    'sku', 'sku-' || (i % 7), 'quantity', 1 + i % 5, 'unit_price_cents', 1250)), \
                (1 + i % 5) * 1250, \
                now() - make_interval(secs => ($1 - i) / 1000.0), \
                '00-' || md5('trace' || i) || '-' || substr(md5('span' || i), 1, 16) || '-01', \
                CASE WHEN i % 2 = 0 THEN 'vendor=v' || i END \
         FROM generate_series(1, $1) AS i",
    )
    .bind(count)
    .execute(pool)
    .await
    .unwrap();
}

/// An order's stored receive-order context, or a link's target, as
/// (trace id, span id, trace state) in lowercase hex; no trace state is "".
pub type LinkTarget = (String, String, String);

/// The target a stored `traceparent`/`tracestate` pair names.
pub fn stored_target(traceparent: &str, tracestate: Option<&str>) -> LinkTarget {
    let fields: Vec<&str> = traceparent.split('-').collect();
    assert_eq!(fields.len(), 4, "{traceparent}");
    (
        fields[1].to_owned(),
        fields[2].to_owned(),
        tracestate.unwrap_or_default().to_owned(),
    )
}

/// Where a link points.
pub fn link_target(link: &Link) -> LinkTarget {
    (
        hex(&link.trace_id),
        hex(&link.span_id),
        link.trace_state.clone(),
    )
}

/// A link's `messaging.message.id` attribute: the order it was made for.
pub fn link_message_id(link: &Link) -> Option<String> {
    link.attributes
        .iter()
        .find(|kv| kv.key == "messaging.message.id")
        .and_then(|kv| kv.value.as_ref())
        .and_then(|value| match &value.value {
            Some(ProtoValue::StringValue(id)) => Some(id.clone()),
            _ => None,
        })
}

/// The stored receive-order context of every order, by order id.
pub async fn stored_targets(pool: &PgPool) -> HashMap<String, LinkTarget> {
    let rows: Vec<(Uuid, String, Option<String>)> =
        sqlx::query_as("SELECT id, traceparent, tracestate FROM orders")
            .fetch_all(pool)
            .await
            .unwrap();
    rows.into_iter()
        .map(|(id, traceparent, tracestate)| {
            (
                id.to_string(),
                stored_target(&traceparent, tracestate.as_deref()),
            )
        })
        .collect()
}

/// The spans named `name`.
pub fn named<'a>(spans: &'a [ReceivedSpan], name: &str) -> Vec<&'a ReceivedSpan> {
    spans.iter().filter(|span| span.name() == name).collect()
}

/// Checks what every `process-batch` span must be (a root CONSUMER span of
/// orders-batch, one link per order, none dropped, sizes that agree) and
/// returns where its links point, by order id.
pub fn check_process_batch_span(span: &ReceivedSpan) -> HashMap<String, LinkTarget> {
    use otlp_receiver::opentelemetry_proto::tonic::trace::v1::Status;
    use otlp_receiver::opentelemetry_proto::tonic::trace::v1::span::SpanKind;
    use otlp_receiver::opentelemetry_proto::tonic::trace::v1::status::StatusCode;

    let id = span.span_id();
    assert_eq!(span.name(), "process-batch");
    assert_eq!(span.service_name, "orders-batch", "{id}");
    assert_eq!(span.parent_span_id(), None, "process-batch {id} is a root");
    assert_eq!(span.kind(), SpanKind::Consumer, "{id}");
    assert_eq!(span.span.dropped_links_count, 0, "{id} dropped links");
    assert_eq!(span.span.dropped_attributes_count, 0, "{id}");
    assert_ne!(
        span.span.status.as_ref().map(Status::code),
        Some(StatusCode::Error),
        "{id}"
    );
    let links = span.links();
    let size = i64::try_from(links.len()).unwrap();
    assert_eq!(span.int_attribute("batch.size"), Some(size), "{id}");
    assert_eq!(
        span.int_attribute("messaging.batch.message_count"),
        Some(size),
        "{id}"
    );
    assert_eq!(span.int_attribute("batch.unlinked_count"), Some(0), "{id}");
    assert_eq!(
        span.str_attribute("messaging.operation.type"),
        Some("process"),
        "{id}"
    );
    let mut targets = HashMap::new();
    for link in links {
        assert_eq!(link.dropped_attributes_count, 0, "{id}");
        let order = link_message_id(link)
            .unwrap_or_else(|| panic!("a link of {id} has no messaging.message.id"));
        let previous = targets.insert(order.clone(), link_target(link));
        assert!(previous.is_none(), "{id} links to order {order} twice");
    }
    targets
}

/// Checks every `reconcile` span: a child of one of `batches`, in its trace,
/// for an order in `stored`, with exactly one link, to that order's stored
/// context. Returns the span id of the batch that reconciled each order;
/// fails if an order was reconciled twice.
pub fn check_reconcile_spans(
    spans: &[ReceivedSpan],
    batches: &[&ReceivedSpan],
    stored: &HashMap<String, LinkTarget>,
) -> HashMap<String, String> {
    let batch_traces: HashMap<String, String> = batches
        .iter()
        .map(|batch| (batch.span_id(), batch.trace_id()))
        .collect();
    let mut reconciled = HashMap::new();
    for span in named(spans, "reconcile") {
        assert_eq!(span.service_name, "orders-batch");
        let order = span
            .str_attribute("order.id")
            .unwrap_or_else(|| panic!("reconcile {} has no order.id", span.span_id()))
            .to_owned();
        let parent = span
            .parent_span_id()
            .unwrap_or_else(|| panic!("reconcile of {order} has no parent"));
        assert_eq!(
            batch_traces.get(&parent),
            Some(&span.trace_id()),
            "reconcile of {order}: not a child of a process-batch span"
        );
        assert_eq!(span.span.dropped_links_count, 0, "reconcile of {order}");
        assert_eq!(span.links().len(), 1, "reconcile of {order}");
        let link = &span.links()[0];
        assert_eq!(
            Some(&link_target(link)),
            stored.get(&order),
            "reconcile of {order} links elsewhere"
        );
        assert_eq!(link_message_id(link).as_deref(), Some(order.as_str()));
        let previous = reconciled.insert(order.clone(), parent);
        assert!(previous.is_none(), "order {order} reconciled twice");
    }
    reconciled
}
