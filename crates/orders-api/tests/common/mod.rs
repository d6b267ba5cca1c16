//! What the API's tests share: the real router on a port of its own, spans
//! caught in memory, and the checks an order's spans must pass wherever they
//! were caught (in memory here, over OTLP from the binary).

#![allow(dead_code, reason = "each test crate uses a different part")]
#![allow(clippy::unwrap_used, reason = "test set-up fails loudly")]

use std::time::Duration;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider};
use orders_api::AppState;
use orders_api::connections::ConnectionLimits;
use orders_test_support::{ReceivedSpan, named};
use serde_json::{Value, json};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use tracing::subscriber::DefaultGuard;
use tracing_subscriber::layer::SubscriberExt as _;

/// The API at `address`, with a client.
pub struct TestApp {
    pub address: String,
    pub client: reqwest::Client,
}

/// The server's limits, with timeouts short enough to test.
pub const LIMITS: ConnectionLimits = ConnectionLimits {
    max_connections: 512,
    header_read_timeout: Duration::from_secs(1),
    idle_timeout: Duration::from_secs(3),
    body_read_timeout: Duration::from_secs(1),
};

/// The real router, served over HTTP on 127.0.0.1 with a port of its own.
pub async fn spawn_app(pool: PgPool) -> TestApp {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = format!("http://{}", listener.local_addr().unwrap());
    let state = AppState::new(pool, Duration::from_secs(1));
    tokio::spawn(async move {
        orders_api::server::serve(
            listener,
            state,
            LIMITS,
            &CancellationToken::new(),
            Duration::from_secs(1),
        )
        .await;
    });
    TestApp {
        address,
        client: reqwest::Client::new(),
    }
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.address)
    }

    pub async fn post(&self, body: &Value) -> reqwest::Response {
        self.client
            .post(self.url("/orders"))
            .json(body)
            .send()
            .await
            .unwrap()
    }

    pub async fn post_raw(
        &self,
        content_type: Option<&str>,
        body: impl Into<reqwest::Body>,
    ) -> reqwest::Response {
        let mut request = self.client.post(self.url("/orders")).body(body);
        if let Some(content_type) = content_type {
            request = request.header("content-type", content_type);
        }
        request.send().await.unwrap()
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client.get(self.url(path)).send().await.unwrap()
    }
}

/// A valid order of two items, 2599 cents.
pub fn sample_order() -> Value {
    json!({"customer_id": "c-42", "items": [
        {"sku": "sku-1", "quantity": 2, "unit_price_cents": 1250},
        {"sku": "sku-2", "quantity": 1, "unit_price_cents": 99}
    ]})
}

/// Checks that `response` is the API's JSON error with `status` and `code`;
/// returns its `error` object.
pub async fn assert_error(response: reqwest::Response, status: u16, code: &str) -> Value {
    assert_eq!(response.status().as_u16(), status);
    assert_eq!(response.headers()["content-type"], "application/json");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], code, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|message| !message.is_empty()),
        "{body}"
    );
    body["error"].clone()
}

/// The stored `traceparent` and `tracestate` of every order, oldest first.
pub async fn stored_contexts(pool: &PgPool) -> Vec<(String, Option<String>)> {
    let query = "SELECT traceparent, tracestate FROM orders ORDER BY created_at";
    sqlx::query_as(query).fetch_all(pool).await.unwrap()
}

/// The `receive-order` span of every stored order, each checked by
/// [`check_order_spans`].
pub async fn order_spans<'a>(pool: &PgPool, spans: &'a [ReceivedSpan]) -> Vec<&'a ReceivedSpan> {
    let stored = stored_contexts(pool).await;
    stored
        .iter()
        .map(|(traceparent, _)| check_order_spans(spans, traceparent).0)
        .collect()
}

/// Spans of this test's thread, caught in memory (`#[sqlx::test]` runs on a
/// current-thread runtime, so the server's tasks share the thread).
pub struct CapturedSpans {
    exporter: InMemorySpanExporter,
    provider: SdkTracerProvider,
    _guard: DefaultGuard,
}

pub fn capture_spans() -> CapturedSpans {
    orders_telemetry::install_propagator();
    let exporter = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(exporter.clone())
        .build();
    let layer = tracing_opentelemetry::layer().with_tracer(provider.tracer("test"));
    let guard = tracing::subscriber::set_default(tracing_subscriber::registry().with(layer));
    CapturedSpans {
        exporter,
        provider,
        _guard: guard,
    }
}

impl CapturedSpans {
    pub fn spans(&self) -> Vec<ReceivedSpan> {
        self.provider.force_flush().unwrap();
        ReceivedSpan::from_sdk(self.exporter.get_finished_spans().unwrap())
    }
}

/// The one span named `name`.
pub fn only<'a>(spans: &'a [ReceivedSpan], name: &str) -> &'a ReceivedSpan {
    let found = named(spans, name);
    assert_eq!(
        found.len(),
        1,
        "one {name} in {:?}",
        spans.iter().map(ReceivedSpan::name).collect::<Vec<_>>()
    );
    found[0]
}

/// Checks the spans of the order whose stored traceparent is `traceparent`:
/// its `receive-order` span is that context, inside the request's SERVER
/// span, with `validate` and `persist-order` under it. Returns it and that
/// SERVER span.
pub fn check_order_spans<'a>(
    spans: &'a [ReceivedSpan],
    traceparent: &str,
) -> (&'a ReceivedSpan, &'a ReceivedSpan) {
    let receive = named(spans, "receive-order")
        .into_iter()
        .find(|span| traceparent == format!("00-{}-{}-01", span.trace_id(), span.span_id()))
        .unwrap_or_else(|| panic!("no receive-order span is {traceparent}"));
    let parent = spans
        .iter()
        .find(|span| Some(span.span_id()) == receive.parent())
        .unwrap();
    assert_eq!(parent.name(), "POST /orders");
    let mut children: Vec<&str> = spans
        .iter()
        .filter(|span| span.parent() == Some(receive.span_id()))
        .map(ReceivedSpan::name)
        .collect();
    children.sort_unstable();
    assert_eq!(
        children,
        ["persist-order", "validate"],
        "under {traceparent}"
    );
    (receive, parent)
}
