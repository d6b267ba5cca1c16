//! The spans a request produces, read from an in-memory exporter: the SERVER
//! span, `receive-order` with `validate` and `persist-order`, and the proof that
//! the stored traceparent is the `receive-order` span's own context.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test set-up fails loudly"
)]

mod common;

use common::{sample_order, spawn_app};
use opentelemetry::Value as OtelValue;
use opentelemetry::trace::{SpanId, SpanKind, Status, TracerProvider as _};
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};
use serde_json::Value;
use sqlx::PgPool;
use tracing::subscriber::DefaultGuard;
use tracing_subscriber::layer::SubscriberExt;
use uuid::Uuid;

/// Spans of this test's thread go to an in-memory exporter. `#[sqlx::test]`
/// runs on a current-thread runtime, so the server's tasks share the thread.
struct CapturedSpans {
    exporter: InMemorySpanExporter,
    provider: SdkTracerProvider,
    _guard: DefaultGuard,
}

fn capture_spans() -> CapturedSpans {
    orders_telemetry::install_propagator();
    let exporter = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(exporter.clone())
        .build();
    let subscriber = tracing_subscriber::registry()
        .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("orders-api-test")));
    CapturedSpans {
        exporter,
        provider,
        _guard: tracing::subscriber::set_default(subscriber),
    }
}

impl CapturedSpans {
    fn spans(&self) -> Vec<SpanData> {
        self.provider.force_flush().unwrap();
        self.exporter.get_finished_spans().unwrap()
    }
}

fn named<'a>(spans: &'a [SpanData], name: &str) -> Vec<&'a SpanData> {
    spans.iter().filter(|span| span.name == name).collect()
}

fn only<'a>(spans: &'a [SpanData], name: &str) -> &'a SpanData {
    let found = named(spans, name);
    assert_eq!(found.len(), 1, "one {name} span in {:?}", names(spans));
    found[0]
}

fn names(spans: &[SpanData]) -> Vec<String> {
    spans.iter().map(|span| span.name.to_string()).collect()
}

fn attribute(span: &SpanData, key: &str) -> Option<OtelValue> {
    span.attributes
        .iter()
        .find(|kv| kv.key.as_str() == key)
        .map(|kv| kv.value.clone())
}

fn string(span: &SpanData, key: &str) -> String {
    attribute(span, key)
        .map(|value| value.to_string())
        .unwrap_or_default()
}

async fn stored_context(pool: &PgPool, id: &str) -> (String, Option<String>) {
    sqlx::query_as("SELECT traceparent, tracestate FROM orders WHERE id = $1")
        .bind(id.parse::<Uuid>().unwrap())
        .fetch_one(pool)
        .await
        .unwrap()
}

#[sqlx::test(migrator = "orders::db::MIGRATOR")]
async fn stored_traceparent_is_the_receive_order_span(pool: PgPool) {
    let capture = capture_spans();
    let app = spawn_app(pool.clone()).await;

    let response = app.post_order(&sample_order()).await;
    assert_eq!(response.status().as_u16(), 201);
    let body: Value = response.json().await.unwrap();
    let id = body["id"].as_str().unwrap();

    let spans = capture.spans();
    let server = only(&spans, "POST /orders");
    let receive = only(&spans, "receive-order");
    let validate = only(&spans, "validate");
    let persist = only(&spans, "persist-order");

    // The tree: SERVER span > receive-order > validate, persist-order.
    assert_eq!(server.span_kind, SpanKind::Server);
    assert_eq!(receive.parent_span_id, server.span_context.span_id());
    assert_eq!(validate.parent_span_id, receive.span_context.span_id());
    assert_eq!(persist.parent_span_id, receive.span_context.span_id());
    for span in [receive, validate, persist] {
        assert_eq!(span.span_context.trace_id(), server.span_context.trace_id());
    }

    // The stored context is receive-order's, not the request's.
    let (traceparent, tracestate) = stored_context(&pool, id).await;
    assert_eq!(
        traceparent,
        format!(
            "00-{}-{}-01",
            receive.span_context.trace_id(),
            receive.span_context.span_id()
        )
    );
    assert_eq!(tracestate, None);
    assert_eq!(body["traceparent"], traceparent);
    assert_eq!(
        body["trace_id"],
        receive.span_context.trace_id().to_string()
    );

    // What a user looks for in SigNoz.
    assert_eq!(string(receive, "order.id"), id);
    assert_eq!(string(receive, "customer.id"), "c-42");
    assert_eq!(
        attribute(receive, "order.item_count"),
        Some(OtelValue::I64(2))
    );
    assert_eq!(
        attribute(receive, "order.total_cents"),
        Some(OtelValue::I64(2599))
    );

    // persist-order is a database CLIENT span.
    assert_eq!(persist.span_kind, SpanKind::Client);
    assert_eq!(string(persist, "db.system.name"), "postgresql");
    assert_eq!(string(persist, "db.operation.name"), "INSERT");
    assert_eq!(string(persist, "db.collection.name"), "orders");
    assert!(string(persist, "db.query.text").starts_with("INSERT INTO orders"));
    assert_eq!(string(persist, "server.address"), "127.0.0.1");
    assert_eq!(
        attribute(persist, "server.port"),
        Some(OtelValue::I64(5432))
    );
    assert!(!string(persist, "db.namespace").is_empty());

    // The SERVER span follows the HTTP semantic conventions.
    assert_eq!(string(server, "http.request.method"), "POST");
    assert_eq!(string(server, "http.route"), "/orders");
    assert_eq!(string(server, "url.path"), "/orders");
    assert_eq!(
        attribute(server, "http.response.status_code"),
        Some(OtelValue::I64(201))
    );
    assert_eq!(server.status, Status::Unset);
}

#[sqlx::test(migrator = "orders::db::MIGRATOR")]
async fn incoming_traceparent_is_continued(pool: PgPool) {
    let capture = capture_spans();
    let app = spawn_app(pool.clone()).await;
    let caller_trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let caller_span = "00f067aa0ba902b7";

    let response = app
        .client
        .post(app.url("/orders"))
        .header("traceparent", format!("00-{caller_trace}-{caller_span}-01"))
        .header("tracestate", "vendor=abc")
        .json(&sample_order())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 201);
    let body: Value = response.json().await.unwrap();

    let spans = capture.spans();
    let server = only(&spans, "POST /orders");
    let receive = only(&spans, "receive-order");
    assert_eq!(server.span_context.trace_id().to_string(), caller_trace);
    assert_eq!(server.parent_span_id.to_string(), caller_span);
    assert!(server.parent_span_is_remote);
    let (traceparent, tracestate) = stored_context(&pool, body["id"].as_str().unwrap()).await;
    assert_eq!(
        traceparent,
        format!("00-{caller_trace}-{}-01", receive.span_context.span_id())
    );
    assert_eq!(tracestate.as_deref(), Some("vendor=abc"));
    assert_eq!(body["trace_id"], caller_trace);
}

#[sqlx::test(migrator = "orders::db::MIGRATOR")]
async fn invalid_traceparent_starts_a_new_trace(pool: PgPool) {
    let capture = capture_spans();
    let app = spawn_app(pool.clone()).await;
    let invalid = [
        "garbage",
        "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
        "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
    ];

    for traceparent in invalid {
        let response = app
            .client
            .post(app.url("/orders"))
            .header("traceparent", traceparent)
            .json(&sample_order())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 201, "{traceparent}");
    }

    let spans = capture.spans();
    let servers = named(&spans, "POST /orders");
    assert_eq!(servers.len(), invalid.len());
    for server in servers {
        assert_eq!(server.parent_span_id, SpanId::INVALID, "a root span");
        assert!(!server.parent_span_is_remote);
        // Not the lenient reading of the 31-digit id either (left-padded with 0).
        let trace_id = server.span_context.trace_id().to_string();
        assert!(!trace_id.starts_with("04bf92f3577b34da6"), "{trace_id}");
        assert_ne!(trace_id, "4bf92f3577b34da6a3ce929d0e0e4736");
    }
    let stored: Vec<String> = sqlx::query_scalar("SELECT traceparent FROM orders")
        .fetch_all(&pool)
        .await
        .unwrap();
    let receive_contexts: Vec<String> = named(&spans, "receive-order")
        .iter()
        .map(|span| {
            format!(
                "00-{}-{}-01",
                span.span_context.trace_id(),
                span.span_context.span_id()
            )
        })
        .collect();
    assert_eq!(stored.len(), invalid.len());
    for traceparent in stored {
        assert!(receive_contexts.contains(&traceparent), "{traceparent}");
    }
}

#[sqlx::test(migrator = "orders::db::MIGRATOR")]
async fn rejected_order_marks_its_steps_failed_and_persists_nothing(pool: PgPool) {
    let capture = capture_spans();
    let app = spawn_app(pool).await;

    let response = app
        .post_order(&serde_json::json!({"customer_id": "", "items": [{"sku": "s", "quantity": 1, "unit_price_cents": 1}]}))
        .await;
    assert_eq!(response.status().as_u16(), 422);

    let spans = capture.spans();
    let server = only(&spans, "POST /orders");
    let receive = only(&spans, "receive-order");
    let validate = only(&spans, "validate");
    assert!(named(&spans, "persist-order").is_empty());
    assert!(
        matches!(&validate.status, Status::Error { description } if description.contains("customer_id"))
    );
    assert!(matches!(receive.status, Status::Error { .. }));
    // A client error is not a server error.
    assert_eq!(server.status, Status::Unset);
    assert_eq!(
        attribute(server, "http.response.status_code"),
        Some(OtelValue::I64(422))
    );
}

#[sqlx::test(migrator = "orders::db::MIGRATOR")]
async fn unmatched_routes_are_named_by_method_only(pool: PgPool) {
    let capture = capture_spans();
    let app = spawn_app(pool).await;

    assert_eq!(app.get("/nowhere").await.status().as_u16(), 404);
    assert_eq!(
        app.get(&format!("/orders/{}", Uuid::new_v4()))
            .await
            .status()
            .as_u16(),
        404
    );

    let spans = capture.spans();
    let unmatched = only(&spans, "GET");
    assert_eq!(attribute(unmatched, "http.route"), None);
    let matched = only(&spans, "GET /orders/{id}");
    assert_eq!(string(matched, "http.route"), "/orders/{id}");
}
