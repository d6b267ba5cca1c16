//! The `orders-api` binary as users run it: a real process configured by
//! environment variables, exporting over real OTLP (gRPC and HTTP) to a
//! receiver in this test, stopped with SIGTERM.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test set-up fails loudly"
)]

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::{TestApp, assert_error, sample_order};
use orders_test_support::{Exited, Process, WAIT, free_port, otel_env};
use otlp_receiver::{OtlpReceiver, ReceivedSpan, Signal, Transport};
use serde_json::{Value, json};
use sqlx::PgPool;
use tokio::sync::mpsc;
use uuid::Uuid;

/// The `orders-api` binary, running and answering `/healthz`, with a client
/// for it.
struct RunningApi {
    process: Process,
    app: TestApp,
}

impl RunningApi {
    /// Starts the binary (the one cargo built for this test run, or another
    /// build, say `target/release/orders-api`, named by `ORDERS_API_BIN`)
    /// with `env` and a port of its own.
    async fn start(env: &[(&str, String)]) -> Self {
        let port = free_port();
        let mut env = env.to_vec();
        env.push(("LISTEN_ADDR", format!("127.0.0.1:{port}")));
        let app = TestApp {
            address: format!("http://127.0.0.1:{port}"),
            client: reqwest::Client::new(),
        };
        let process = Process::orders_api(&[], &env)
            .serving(&app.url("/healthz"))
            .await;
        Self { process, app }
    }

    fn sigterm(&self) {
        self.process.sigterm();
    }

    async fn wait_for_exit(self) -> Exited {
        self.process.wait(WAIT).await
    }
}

/// Posts orders and answers every kind of request, then stops the process and
/// checks what the receiver holds against what the database holds.
async fn exports_every_order_over(protocol: &str, transport: Transport, pool: PgPool) {
    let receiver = OtlpReceiver::start().await.unwrap();
    let api = RunningApi::start(&otel_env(&pool, &receiver, protocol)).await;
    answer_every_kind_of_request(&api).await;
    api.sigterm();
    api.wait_for_exit().await.assert_success();
    check_exported_orders(&receiver, &pool).await;
    check_exported_logs_and_metrics(&receiver, transport);
}

/// Five orders, a read, and one request for each kind of error.
async fn answer_every_kind_of_request(api: &RunningApi) {
    let mut ids = Vec::new();
    for _ in 0..5 {
        let response = api.app.post_order(&sample_order()).await;
        assert_eq!(response.status().as_u16(), 201);
        let body: Value = response.json().await.unwrap();
        ids.push(body["id"].as_str().unwrap().to_owned());
    }
    let read = api.app.get(&format!("/orders/{}", ids[0])).await;
    assert_eq!(read.status().as_u16(), 200);
    assert_eq!(api.app.get("/readyz").await.status().as_u16(), 200);
    assert_error(
        api.app
            .post_order(&json!({"customer_id": "", "items": []}))
            .await,
        422,
        "validation_failed",
    )
    .await;
    assert_error(
        api.app
            .post_order(&json!({"customer_id": "c", "items": [], "x": 1}))
            .await,
        422,
        "invalid_body",
    )
    .await;
    let malformed = api.app.post_raw(Some("application/json"), "{").await;
    assert_error(malformed, 400, "malformed_json").await;
    let plain = api.app.post_raw(None, sample_order().to_string()).await;
    assert_error(plain, 415, "unsupported_media_type").await;
    let huge = api
        .app
        .post_raw(Some("application/json"), " ".repeat(70_000))
        .await;
    assert_error(huge, 413, "payload_too_large").await;
    let unknown = api.app.get(&format!("/orders/{}", Uuid::new_v4())).await;
    assert_error(unknown, 404, "order_not_found").await;
    let bad_id = api.app.get("/orders/42").await;
    assert_error(bad_id, 400, "invalid_order_id").await;
}

/// One exported receive-order span per stored order, with its two children,
/// whose ids are the stored traceparent; nothing from the exporter's own stack.
async fn check_exported_orders(receiver: &OtlpReceiver, pool: &PgPool) {
    // Everything was flushed at shutdown: no waiting needed, but allow for the
    // receiver's own processing of the last request.
    let spans = receiver
        .wait_for_spans(Duration::from_secs(5), |spans| {
            spans
                .iter()
                .filter(|span| span.name() == "receive-order")
                .count()
                >= 7
        })
        .await;
    let stored: Vec<(Uuid, String)> = sqlx::query_as("SELECT id, traceparent FROM orders")
        .fetch_all(pool)
        .await
        .unwrap();
    assert_eq!(stored.len(), 5);
    let accepted: Vec<&ReceivedSpan> = spans
        .iter()
        .filter(|span| span.name() == "receive-order" && span.str_attribute("order.id").is_some())
        .collect();
    assert_eq!(accepted.len(), stored.len());
    for (id, traceparent) in &stored {
        let receive = accepted
            .iter()
            .find(|span| span.str_attribute("order.id") == Some(id.to_string().as_str()))
            .unwrap_or_else(|| panic!("no receive-order span for order {id}"));
        assert_eq!(receive.service_name, "orders-api");
        assert_eq!(
            *traceparent,
            format!("00-{}-{}-01", receive.trace_id(), receive.span_id())
        );
        let children: HashSet<&str> = spans
            .iter()
            .filter(|span| span.parent_span_id().as_deref() == Some(receive.span_id().as_str()))
            .map(ReceivedSpan::name)
            .collect();
        assert_eq!(
            children,
            HashSet::from(["validate", "persist-order"]),
            "order {id}"
        );
    }

    // Only the service's own spans: the exporter's HTTP/gRPC stack is not traced.
    let allowed = HashSet::from([
        "POST /orders",
        "GET /orders/{id}",
        "GET /healthz",
        "GET /readyz",
        "receive-order",
        "validate",
        "persist-order",
        "SELECT orders",
    ]);
    for span in &spans {
        assert!(
            allowed.contains(span.name()),
            "unexpected span {:?}",
            span.name()
        );
    }
}

/// Logs carry the ids of their span; both instruments arrive; all three signals
/// used the configured transport only.
fn check_exported_logs_and_metrics(receiver: &OtlpReceiver, transport: Transport) {
    let spans = receiver.spans();
    // Logs carry the trace and span of the span they were written in.
    let logs = receiver.log_records();
    let received_log = logs
        .iter()
        .find(|log| log.body_text().as_deref() == Some("order received"))
        .expect("an 'order received' log record");
    let receive = spans
        .iter()
        .find(|span| {
            span.name() == "receive-order" && Some(span.span_id()) == received_log.span_id()
        })
        .expect("the log names a receive-order span");
    assert_eq!(received_log.trace_id(), Some(receive.trace_id()));

    let metrics: HashSet<String> = receiver
        .metrics()
        .iter()
        .map(|m| m.name().to_owned())
        .collect();
    assert!(metrics.contains("orders.received"), "{metrics:?}");
    assert!(
        metrics.contains("http.server.request.duration"),
        "{metrics:?}"
    );

    let other = match transport {
        Transport::Grpc => Transport::Http,
        Transport::Http => Transport::Grpc,
    };
    for signal in [Signal::Traces, Signal::Metrics, Signal::Logs] {
        assert!(
            receiver.requests_for(signal, transport) > 0,
            "{signal:?} over {transport:?}"
        );
        assert_eq!(receiver.requests_for(signal, other), 0);
    }
}

#[sqlx::test(migrator = "orders::db::MIGRATOR")]
async fn exports_over_grpc(pool: PgPool) {
    exports_every_order_over("grpc", Transport::Grpc, pool).await;
}

#[sqlx::test(migrator = "orders::db::MIGRATOR")]
async fn exports_over_http_protobuf(pool: PgPool) {
    exports_every_order_over("http/protobuf", Transport::Http, pool).await;
}

#[sqlx::test(migrator = "orders::db::MIGRATOR")]
async fn sigterm_lets_an_in_flight_request_finish(pool: PgPool) {
    let receiver = OtlpReceiver::start().await.unwrap();
    let api = RunningApi::start(&otel_env(&pool, &receiver, "grpc")).await;

    // A request whose body is only half sent when SIGTERM arrives.
    let body = sample_order().to_string().into_bytes();
    let (half, rest) = body.split_at(body.len() / 2);
    let (sender, chunks) = mpsc::channel::<Result<Vec<u8>, std::io::Error>>(2);
    sender.send(Ok(half.to_vec())).await.unwrap();
    let request = api
        .app
        .client
        .post(api.app.url("/orders"))
        .header("content-type", "application/json")
        .body(reqwest::Body::wrap_stream(
            tokio_stream::wrappers::ReceiverStream::new(chunks),
        ))
        .send();
    let in_flight = tokio::spawn(request);
    tokio::time::sleep(Duration::from_millis(300)).await;
    api.sigterm();
    tokio::time::sleep(Duration::from_millis(300)).await;
    // No new connections once shutdown began.
    let refused = reqwest::Client::new()
        .get(api.app.url("/healthz"))
        .send()
        .await;
    assert!(
        refused.is_err(),
        "a new connection was accepted during shutdown"
    );
    sender.send(Ok(rest.to_vec())).await.unwrap();
    drop(sender);

    let response = in_flight.await.unwrap().unwrap();
    assert_eq!(response.status().as_u16(), 201);
    let id = response.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    api.wait_for_exit().await.assert_success();
    let spans = receiver
        .wait_for_spans(Duration::from_secs(5), |spans| {
            spans
                .iter()
                .any(|span| span.str_attribute("order.id") == Some(id.as_str()))
        })
        .await;
    assert!(
        spans
            .iter()
            .any(|span| span.str_attribute("order.id") == Some(id.as_str()))
    );
}

#[sqlx::test(migrator = "orders::db::MIGRATOR")]
async fn sdk_disabled_exports_nothing_and_still_serves(pool: PgPool) {
    let receiver = OtlpReceiver::start().await.unwrap();
    let mut env = otel_env(&pool, &receiver, "grpc");
    env.push(("OTEL_SDK_DISABLED", "true".to_owned()));
    let api = RunningApi::start(&env).await;

    let response = api.app.post_order(&sample_order()).await;
    assert_eq!(response.status().as_u16(), 201);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["trace_id"].as_str().map(str::len), Some(32), "{body}");
    api.sigterm();
    api.wait_for_exit().await.assert_success();

    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        receiver.requests(Transport::Grpc) + receiver.requests(Transport::Http),
        0
    );
}

/// Runs the binary until it gives up at start-up: its exit code and stderr.
async fn failed_start_up(env: &[(&str, String)]) -> (Option<i32>, String) {
    let exited = Process::orders_api(&[], env).wait(WAIT).await;
    (exited.status.code(), exited.stderr)
}

fn unreachable_database() -> (&'static str, String) {
    (
        "DATABASE_URL",
        "postgres://postgres@127.0.0.1:1/orders".to_owned(),
    )
}

#[tokio::test]
async fn missing_database_url_is_a_clear_error() {
    let (code, stderr) = failed_start_up(&[]).await;
    assert_ne!(code, Some(0));
    assert!(stderr.contains("DATABASE_URL"), "{stderr}");
}

#[tokio::test]
async fn unreachable_database_is_a_clear_error() {
    let (code, stderr) = failed_start_up(&[
        unreachable_database(),
        ("DATABASE_ACQUIRE_TIMEOUT_SECS", "1".to_owned()),
        ("OTEL_SDK_DISABLED", "true".to_owned()),
    ])
    .await;
    assert_eq!(code, Some(1));
    assert!(
        stderr.contains("connecting to the database (DATABASE_URL)"),
        "{stderr}"
    );
    assert!(stderr.contains("127.0.0.1:1/orders"), "{stderr}");
}

#[tokio::test]
async fn unsupported_otlp_protocol_is_a_clear_error() {
    let (code, stderr) = failed_start_up(&[
        unreachable_database(),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json".to_owned()),
    ])
    .await;
    assert_eq!(code, Some(2), "a configuration error");
    assert!(stderr.contains("OTEL_EXPORTER_OTLP_PROTOCOL"), "{stderr}");
}
