//! The spans a request makes, caught in memory: the order's `receive-order`
//! span is the context stored with it, and incoming trace contexts are
//! continued only when valid.

#![allow(clippy::unwrap_used, reason = "test set-up fails loudly")]

mod common;

use common::{capture_spans, check_order_spans, only, sample_order, spawn_app, stored_contexts};
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use opentelemetry_proto::tonic::trace::v1::status::StatusCode;
use orders_test_support::named;
use serde_json::{Value, json};
use sqlx::PgPool;

#[sqlx::test(migrator = "orders::db::MIGRATOR")]
async fn the_stored_context_is_the_receive_order_span(pool: PgPool) {
    let capture = capture_spans();
    let app = spawn_app(pool.clone()).await;
    let body: Value = app.post(&sample_order()).await.json().await.unwrap();

    let spans = capture.spans();
    let (traceparent, tracestate) = stored_contexts(&pool).await.remove(0);
    assert_eq!(tracestate, None);
    let (receive, _) = check_order_spans(&spans, &traceparent);
    assert_eq!(
        (body["traceparent"].as_str(), body["trace_id"].as_str()),
        (
            Some(traceparent.as_str()),
            Some(receive.trace_id().as_str())
        )
    );
    // What a user looks for in a tracing UI.
    assert_eq!(receive.string("order.id"), body["id"].as_str());
    assert_eq!(receive.string("customer.id"), Some("c-42"));
    assert_eq!(
        (
            receive.int("order.item_count"),
            receive.int("order.total_cents")
        ),
        (Some(2), Some(2599))
    );
    let persist = only(&spans, "persist-order");
    assert_eq!(persist.span.kind(), SpanKind::Client);
    assert_eq!(
        (
            persist.string("db.system.name"),
            persist.string("db.operation.name")
        ),
        (Some("postgresql"), Some("INSERT"))
    );
    assert_eq!(
        (
            persist.string("db.collection.name"),
            persist.string("server.address")
        ),
        (Some("orders"), Some("127.0.0.1"))
    );
    assert!(
        persist
            .string("db.query.text")
            .unwrap()
            .starts_with("INSERT INTO orders")
    );
    let port = i64::from(pool.connect_options().get_port());
    assert_eq!(persist.int("server.port"), Some(port));
    let server = only(&spans, "POST /orders");
    assert_eq!(server.span.kind(), SpanKind::Server);
    assert_eq!(
        (
            server.string("http.request.method"),
            server.string("http.route")
        ),
        (Some("POST"), Some("/orders"))
    );
    assert_eq!(server.int("http.response.status_code"), Some(201));
    assert_eq!(server.status().0, StatusCode::Unset);
}

#[sqlx::test(migrator = "orders::db::MIGRATOR")]
async fn a_valid_incoming_trace_context_is_continued_and_an_invalid_one_is_not(pool: PgPool) {
    let capture = capture_spans();
    let app = spawn_app(pool.clone()).await;
    let (caller_trace, caller_span) = ("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7");
    let valid = format!("00-{caller_trace}-{caller_span}-01");
    let invalid = [
        "garbage",
        // 31 digits, which the SDK's propagator would pad and accept.
        "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
        "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
    ];
    // 8 KB: 32 members of 254 characters, which the SDK alone would keep.
    let members = (0..32).map(|i| format!("k{i:02}={}", "x".repeat(250)));
    let hostile: Vec<String> = std::iter::once("vendor=abc".to_owned())
        .chain(members)
        .collect();
    for traceparent in std::iter::once(valid.as_str()).chain(invalid) {
        let request = app.client.post(app.url("/orders")).json(&sample_order());
        let request = request.header("traceparent", traceparent);
        let response = request.header("tracestate", hostile.join(",")).send().await;
        assert_eq!(response.unwrap().status(), 201, "{traceparent}");
    }

    let spans = capture.spans();
    let stored = stored_contexts(&pool).await;
    let (continued, server) = check_order_spans(&spans, &stored[0].0);
    assert_eq!(continued.trace_id(), caller_trace);
    assert_eq!(server.parent().as_deref(), Some(caller_span));
    let bounded = hostile[..2].join(",");
    assert_eq!(
        stored[0].1.as_ref(),
        Some(&bounded),
        "512 characters at most"
    );
    assert_eq!(continued.span.trace_state, bounded);
    for (traceparent, _) in &stored[1..] {
        let (receive, server) = check_order_spans(&spans, traceparent);
        assert_eq!(
            server.parent(),
            None,
            "a new trace for an invalid traceparent"
        );
        assert!(
            !receive
                .trace_id()
                .ends_with("4bf92f3577b34da6a3ce929d0e0e473"),
            "not the padded one"
        );
    }
}

#[sqlx::test(migrator = "orders::db::MIGRATOR")]
async fn a_rejected_order_fails_its_steps_not_the_server_span(pool: PgPool) {
    let capture = capture_spans();
    let app = spawn_app(pool).await;
    let rejected =
        json!({"customer_id": "", "items": [{"sku": "s", "quantity": 1, "unit_price_cents": 1}]});
    assert_eq!(app.post(&rejected).await.status().as_u16(), 422);

    let spans = capture.spans();
    let (validate, receive) = (only(&spans, "validate"), only(&spans, "receive-order"));
    assert_eq!(
        (validate.status().0, receive.status().0),
        (StatusCode::Error, StatusCode::Error)
    );
    assert!(validate.status().1.contains("customer_id"));
    assert!(named(&spans, "persist-order").is_empty());
    let server = only(&spans, "POST /orders");
    assert_eq!(
        server.status().0,
        StatusCode::Unset,
        "a client's mistake is not a server error"
    );
    assert_eq!(server.int("http.response.status_code"), Some(422));
}

#[sqlx::test(migrator = "orders::db::MIGRATOR")]
async fn unmatched_routes_are_named_by_method_only(pool: PgPool) {
    let capture = capture_spans();
    let app = spawn_app(pool).await;
    app.get("/nowhere").await;
    app.get("/orders/019a8f5e-0c1d-7a53-9b6e-2f0c4b8e1d2a")
        .await;

    let spans = capture.spans();
    assert_eq!(only(&spans, "GET").string("http.route"), None);
    assert_eq!(
        only(&spans, "GET /orders/{id}").string("http.route"),
        Some("/orders/{id}")
    );
}
