//! What the batch's tests share: orders seeded through the store orders-api
//! uses, the rows as the batch left them, the `--once` summary, and the one
//! set of checks a batch's spans and links must pass, wherever they were
//! caught (in memory, or over OTLP from the binary).

#![allow(dead_code, reason = "each test crate uses a different part")]
#![allow(clippy::unwrap_used, reason = "test set-up fails loudly")]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use opentelemetry::trace::{SpanContext, SpanId, TraceFlags, TraceId, TraceState};
use opentelemetry_proto::tonic::trace::v1::span::{Link, SpanKind};
use orders::{JsonObject, OrderRequest, store};
use orders_batch::{BatchMetrics, BatchSettings, Worker};
use orders_test_support::{Exited, Process, ReceivedSpan, free_port, hex, named, string};
use span_links::{LinkSelection, StoredContext};
use sqlx::PgPool;
use uuid::Uuid;

/// The orders-batch binary under test.
pub fn binary() -> PathBuf {
    orders_test_support::binary("ORDERS_BATCH_BIN", env!("CARGO_BIN_EXE_orders-batch"))
}

/// The workspace binary `name` (`cargo test --workspace` builds it beside
/// this crate's own), or the build the environment variable `variable` names.
pub fn workspace_binary(variable: &str, name: &str) -> PathBuf {
    let built = Path::new(env!("CARGO_BIN_EXE_orders-batch")).with_file_name(name);
    orders_test_support::binary(variable, built.to_str().unwrap())
}

/// orders-api with `env`, on a port of its own, once ready; and its URL.
pub async fn start_api(mut env: Vec<(&'static str, String)>) -> (Process, String) {
    let address = format!("127.0.0.1:{}", free_port());
    env.push(("LISTEN_ADDR", address.clone()));
    let api = Process::spawn(workspace_binary("ORDERS_API_BIN", "orders-api"), &[], &env)
        .serving(&format!("http://{address}/readyz"))
        .await;
    (api, format!("http://{address}"))
}

/// `env` and `more`.
pub fn with(
    mut env: Vec<(&'static str, String)>,
    more: &[(&'static str, &str)],
) -> Vec<(&'static str, String)> {
    env.extend(
        more.iter()
            .map(|(name, value)| (*name, (*value).to_owned())),
    );
    env
}

/// Stores `count` orders through the store orders-api uses, oldest first, each
/// with a receive-order context of its own; every other one has a trace state.
pub async fn seed_orders(pool: &PgPool, count: usize) -> Vec<Uuid> {
    let JsonObject(request) = serde_json::from_str::<JsonObject<OrderRequest>>(
        r#"{"customer_id": "c-7", "items": [{"sku": "sku-1", "quantity": 2, "unit_price_cents": 1250}]}"#,
    )
    .unwrap();
    let mut ids = Vec::with_capacity(count);
    for index in 0..count {
        let state = if index % 2 == 0 {
            TraceState::from_key_value([("vendor", format!("v{index}"))]).unwrap()
        } else {
            TraceState::NONE
        };
        let context = StoredContext::of(&SpanContext::new(
            TraceId::from(Uuid::new_v4().as_u128()),
            SpanId::from(u64::try_from(index).unwrap() + 1),
            TraceFlags::SAMPLED,
            false,
            state,
        ));
        let order = request.clone().validate().unwrap();
        let stored = store::insert_order(pool, Uuid::now_v7(), &order, context.as_ref()).await;
        let Ok(store::Inserted::New(stored)) = stored else {
            panic!("{stored:?}")
        };
        ids.push(stored.id);
    }
    ids
}

/// Inserts `count` pending orders in one statement, a millisecond apart, each
/// with a traceparent of its own: for runs too long for [`seed_orders`].
pub async fn bulk_seed(pool: &PgPool, count: i32) {
    sqlx::query(
        "INSERT INTO orders (id, customer_id, items, total_cents, created_at, traceparent) \
         SELECT gen_random_uuid(), 'c-bulk', jsonb_build_array(jsonb_build_object('sku', 's', 'quantity', 1, 'unit_price_cents', 1250)), \
                1250, now() - make_interval(secs => ($1 - i) / 1000.0), \
                '00-' || md5('trace' || i) || '-' || substr(md5('span' || i), 1, 16) || '-01' \
         FROM generate_series(1, $1) AS i",
    )
    .bind(count)
    .execute(pool)
    .await
    .unwrap();
}

/// One row of `orders` as the batch leaves it.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Row {
    pub id: Uuid,
    pub status: String,
    pub attempts: i32,
    pub last_error: Option<String>,
    pub claimed_by: Option<String>,
    pub processed_at: Option<chrono::DateTime<chrono::Utc>>,
    pub batch_trace_id: Option<String>,
    pub batch_span_id: Option<String>,
    pub batch_span_sampled: Option<bool>,
}

/// Every order, oldest first.
pub async fn rows(pool: &PgPool) -> Vec<Row> {
    let query = "SELECT id, status, attempts, last_error, claimed_by, processed_at, batch_trace_id, batch_span_id, batch_span_sampled FROM orders ORDER BY created_at, id";
    sqlx::query_as(query).fetch_all(pool).await.unwrap()
}

pub async fn count_status(pool: &PgPool, status: &str) -> usize {
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM orders WHERE status = $1")
        .bind(status)
        .fetch_one(pool)
        .await
        .unwrap();
    usize::try_from(count).unwrap()
}

/// Batches of `max_size`, 3 attempts, a one-minute claim, 2 s of grace.
pub fn settings(max_size: u32) -> BatchSettings {
    BatchSettings {
        max_size,
        max_attempts: 3,
        claim_timeout: Duration::from_mins(1),
        shutdown_grace: Duration::from_secs(2),
        link_selection: LinkSelection::All,
    }
}

pub fn worker(pool: &PgPool, settings: BatchSettings) -> Worker {
    Worker::new(
        pool.clone(),
        settings,
        BatchMetrics::new(&opentelemetry::global::meter("test")),
    )
}

/// The counts of the one `--once` summary line of a finished run.
pub fn summary(run: &Exited) -> String {
    let lines: Vec<&str> = run
        .stdout
        .lines()
        .filter_map(|line| line.strip_prefix("orders-batch --once: "))
        .collect();
    assert_eq!(lines.len(), 1, "one summary line\n{run}");
    lines[0].to_owned()
}

/// Where a link points, or a stored context names: trace id, span id.
pub type Target = (String, String);

/// The stored receive-order context of every order that has one, by order id.
pub async fn stored_targets(pool: &PgPool) -> HashMap<String, Target> {
    targets_where(pool, "traceparent IS NOT NULL").await
}

/// [`stored_targets`] of the orders whose request was sampled (flags `01`).
pub async fn sampled_targets(pool: &PgPool) -> HashMap<String, Target> {
    targets_where(pool, "traceparent LIKE '%-01'").await
}

async fn targets_where(pool: &PgPool, condition: &str) -> HashMap<String, Target> {
    let query = format!("SELECT id, traceparent FROM orders WHERE {condition}");
    let rows: Vec<(Uuid, String)> = sqlx::query_as(&query).fetch_all(pool).await.unwrap();
    rows.into_iter()
        .map(|(id, traceparent)| (id.to_string(), target(&traceparent)))
        .collect()
}

/// Where `traceparent` points.
pub fn target(traceparent: &str) -> Target {
    let fields: Vec<&str> = traceparent.split('-').collect();
    (fields[1].to_owned(), fields[2].to_owned())
}

/// The order a link was made for, and where it points; a link carries no
/// trace state, whatever its order stored.
pub fn link(link: &Link) -> (String, Target) {
    let order = string(&link.attributes, "messaging.message.id")
        .unwrap_or_else(|| panic!("a link without messaging.message.id"));
    assert_eq!(link.trace_state, "", "the link for {order}");
    let target = (hex(&link.trace_id).unwrap(), hex(&link.span_id).unwrap());
    (order.to_owned(), target)
}

/// Checks what every `process-batch` span must be (a root CONSUMER span, its
/// size its links plus the unlinked orders plus, under the `links` sampler,
/// the unsampled ones; no link dropped, one link per order) and returns where
/// its links point, by order id.
pub fn check_process_batch(span: &ReceivedSpan) -> HashMap<String, Target> {
    let id = span.span_id();
    assert_eq!(
        (span.name(), span.parent(), span.span.kind()),
        ("process-batch", None, SpanKind::Consumer),
        "{id}"
    );
    assert_eq!(
        (
            span.span.dropped_links_count,
            span.span.dropped_attributes_count
        ),
        (0, 0),
        "{id}"
    );
    let linked = i64::try_from(span.links().len()).unwrap();
    let size = span.int("batch.size").unwrap();
    let unsampled = span.int("batch.unsampled_count").unwrap_or(0);
    assert_eq!(
        size,
        linked + span.int("batch.unlinked_count").unwrap() + unsampled,
        "{id}"
    );
    assert_eq!(
        span.int("messaging.batch.message_count"),
        Some(size),
        "{id}"
    );
    assert_eq!(
        (
            span.string("messaging.operation.type"),
            span.string("messaging.system")
        ),
        (Some("process"), Some("postgresql"))
    );
    let targets: HashMap<String, Target> = span.links().iter().map(link).collect();
    assert_eq!(
        targets.len(),
        span.links().len(),
        "{id} links to an order twice"
    );
    targets
}

/// Checks `batches` and that each links every order once, to its stored
/// context, from one batch only; returns each order's batch (trace id, span id).
pub fn batch_of_each_order(
    batches: &[&ReceivedSpan],
    stored: &HashMap<String, Target>,
) -> HashMap<String, (String, String)> {
    let mut batch_of = HashMap::new();
    for batch in batches {
        for (order, target) in check_process_batch(batch) {
            assert_eq!(stored.get(&order), Some(&target), "the link for {order}");
            let previous = batch_of.insert(order.clone(), (batch.trace_id(), batch.span_id()));
            assert!(previous.is_none(), "{order} is linked from two batches");
        }
    }
    batch_of
}

/// Checks every `reconcile` span: a child of one of `batches` in its trace,
/// with one link, to its order's stored context (none when it has no valid
/// one). Returns the span id of the batch that reconciled each order.
pub fn check_reconcile_spans(
    spans: &[ReceivedSpan],
    batches: &[&ReceivedSpan],
    stored: &HashMap<String, Target>,
) -> HashMap<String, String> {
    let traces: HashMap<String, String> = batches
        .iter()
        .map(|batch| (batch.span_id(), batch.trace_id()))
        .collect();
    let mut reconciled = HashMap::new();
    for span in named(spans, "reconcile") {
        let order = span.string("order.id").unwrap().to_owned();
        let parent = span.parent().unwrap();
        assert_eq!(
            traces.get(&parent),
            Some(&span.trace_id()),
            "reconcile of {order}: not under a process-batch"
        );
        let links: Vec<(String, Target)> = span.links().iter().map(link).collect();
        let expected: Vec<(String, Target)> = stored
            .get(&order)
            .map(|target| (order.clone(), target.clone()))
            .into_iter()
            .collect();
        assert_eq!(links, expected, "reconcile of {order}");
        assert!(
            reconciled.insert(order.clone(), parent).is_none(),
            "order {order} reconciled twice"
        );
    }
    reconciled
}

/// Every row processed once, by the batch span `batch_of` names for it.
pub fn assert_processed_once_by(rows: &[Row], batch_of: impl Fn(&Row) -> (String, String)) {
    for row in rows {
        let (trace_id, span_id) = batch_of(row);
        assert_eq!(
            (
                row.status.as_str(),
                row.attempts,
                row.claimed_by.as_ref(),
                row.last_error.as_ref()
            ),
            ("processed", 1, None, None),
            "{row:?}"
        );
        assert_eq!(
            (row.batch_trace_id.as_ref(), row.batch_span_id.as_ref()),
            (Some(&trace_id), Some(&span_id)),
            "{row:?}"
        );
        assert_eq!(row.batch_span_sampled, Some(true), "{row:?}");
        assert!(row.processed_at.is_some(), "{row:?}");
    }
}
