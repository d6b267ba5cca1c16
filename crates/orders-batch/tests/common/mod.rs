//! What the integration tests share: orders seeded through the real store,
//! with receive-order trace contexts, the rows as the batch left them, and
//! what runs of the binary report and export. Running the binaries is
//! `orders_test_support`'s.

#![allow(dead_code, reason = "each test crate uses a different part")]
#![allow(clippy::unwrap_used, reason = "test set-up fails loudly")]

use std::collections::HashMap;
use std::time::Duration;

use opentelemetry::trace::{SpanContext, SpanId, TraceFlags, TraceId, TraceState};
use orders::order::OrderRequest;
use orders::{JsonObject, store};
use orders_batch::{BatchMetrics, BatchSettings, Worker};
use orders_test_support::{Exited, Process, WAIT};
use otlp_receiver::opentelemetry_proto::tonic::common::v1::any_value::Value as ProtoValue;
use otlp_receiver::opentelemetry_proto::tonic::trace::v1::span::Link;
use otlp_receiver::{ReceivedSpan, hex};
use serde_json::json;
use span_links::StoredContext;
use sqlx::PgPool;
use uuid::Uuid;

/// An order as stored, with the receive-order context it was stored with.
#[derive(Debug, Clone)]
pub struct SeededOrder {
    pub id: Uuid,
    pub source: StoredContext,
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
        let source = StoredContext::of(&receive_order_context(index)).unwrap();
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

// Running the binary (the processes themselves are `orders_test_support`'s):
// the `--once` summary, and what the processes exported.

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

/// The `--once` summary of a finished `orders-batch` process.
pub trait OnceSummary {
    /// The one summary line on stdout, parsed; fails unless there is exactly one.
    fn summary(&self) -> Summary;
}

impl OnceSummary for Exited {
    fn summary(&self) -> Summary {
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
