//! The whole flow with both real binaries: orders posted over HTTP to
//! `orders-api`, processed by two `orders-batch --once` processes side by
//! side, and the traces both export, read back from a real OTLP receiver.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test set-up fails loudly"
)]

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::{
    OnceSummary as _, check_process_batch_span, check_reconcile_spans, named, stored_targets,
};
use orders_test_support::{Process, WAIT, free_port, orders_api_binary, otel_env};
use otlp_receiver::OtlpReceiver;
use serde_json::{Value, json};
use sqlx::PgPool;

const ORDERS: usize = 30;
/// Orders posted as part of a caller's trace, with its trace state.
const TRACED_BY_CALLER: usize = 5;
const CALLER_TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_SPAN_ID: &str = "00f067aa0ba902b7";
const CALLER_TRACE_STATE: &str = "caller=e2e";

/// orders-api, running, with a client for it.
struct Api {
    process: Process,
    address: String,
    client: reqwest::Client,
}

impl Api {
    async fn start(env: &[(&'static str, String)]) -> Self {
        let port = free_port();
        let mut env = env.to_vec();
        env.push(("LISTEN_ADDR", format!("127.0.0.1:{port}")));
        let mut api = Self {
            process: Process::spawn(orders_api_binary(), &[], &env),
            address: format!("http://127.0.0.1:{port}"),
            client: reqwest::Client::new(),
        };
        let deadline = Instant::now() + WAIT;
        loop {
            if let Ok(response) = api.client.get(api.url("/healthz")).send().await
                && response.status().is_success()
            {
                return api;
            }
            if !api.process.running() || Instant::now() >= deadline {
                let exited = api.process.wait(Duration::ZERO).await;
                panic!("orders-api did not come up\n{exited}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.address)
    }

    /// Posts an order, within the caller's trace if `traced`; returns the body.
    async fn post_order(&self, traced: bool) -> Value {
        let mut request = self.client.post(self.url("/orders")).json(&json!({
            "customer_id": "c-1",
            "items": [{"sku": "sku-1", "quantity": 2, "unit_price_cents": 1250}]
        }));
        if traced {
            request = request
                .header(
                    "traceparent",
                    format!("00-{CALLER_TRACE_ID}-{CALLER_SPAN_ID}-01"),
                )
                .header("tracestate", CALLER_TRACE_STATE);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status().as_u16(), 201);
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["status"], "pending", "{body}");
        body
    }

    async fn get_order(&self, id: &str) -> Value {
        let response = self
            .client
            .get(self.url(&format!("/orders/{id}")))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 200);
        response.json().await.unwrap()
    }
}

#[sqlx::test(migrator = "orders::db::MIGRATOR")]
async fn orders_posted_over_http_are_processed_once_and_linked_to_their_requests(pool: PgPool) {
    let receiver = OtlpReceiver::start().await.unwrap();
    let env = otel_env(&pool, &receiver, "grpc");
    let api = Api::start(&env).await;

    // Orders, some sent within a caller's trace.
    let mut posted: HashMap<String, Value> = HashMap::new();
    for index in 0..ORDERS {
        let body = api.post_order(index < TRACED_BY_CALLER).await;
        posted.insert(body["id"].as_str().unwrap().to_owned(), body);
    }
    assert_eq!(posted.len(), ORDERS);

    // Two batch processes at once, in batches of 8, then a third finding nothing.
    let mut batch_env = env.clone();
    batch_env.push(("BATCH_MAX_SIZE", "8".to_owned()));
    let first = Process::orders_batch(&["--once"], &batch_env);
    let second = Process::orders_batch(&["--once"], &batch_env);
    let (first, second) = (first.wait(WAIT).await, second.wait(WAIT).await);
    first.assert_success();
    second.assert_success();
    let (a, b) = (first.summary(), second.summary());
    assert_eq!(a.processed + b.processed, ORDERS, "{first}\n{second}");
    assert_eq!(a.failed + b.failed + a.retrying + b.retrying, 0);
    assert_eq!(a.unlinked + b.unlinked, 0);
    let batch_count = a.batches + b.batches;
    assert!(batch_count >= ORDERS.div_ceil(8), "{a:?} {b:?}");
    let third = Process::orders_batch(&["--once"], &batch_env)
        .wait(WAIT)
        .await;
    third.assert_success();
    let nothing = third.summary();
    assert_eq!((nothing.processed, nothing.batches), (0, 0), "{third}");

    // What the batches exported (the processes flushed before they exited)
    // and the receive-order spans orders-api exported.
    let spans = receiver
        .wait_for_spans(WAIT, |spans| {
            named(spans, "receive-order").len() >= ORDERS
                && named(spans, "process-batch").len() >= batch_count
                && named(spans, "reconcile").len() >= ORDERS
        })
        .await;
    let receive_orders: HashMap<String, (String, String)> = named(&spans, "receive-order")
        .into_iter()
        .map(|span| {
            assert_eq!(span.service_name, "orders-api");
            (
                span.str_attribute("order.id").unwrap().to_owned(),
                (span.trace_id(), span.span_id()),
            )
        })
        .collect();
    assert_eq!(receive_orders.len(), ORDERS);

    let stored = stored_targets(&pool).await;
    assert_eq!(stored.len(), ORDERS);
    let batches = named(&spans, "process-batch");
    assert_eq!(batches.len(), batch_count);
    let mut linked: HashMap<String, (String, String)> = HashMap::new();
    for batch in &batches {
        assert!(batch.links().len() <= 8);
        for (order, (trace_id, span_id, trace_state)) in check_process_batch_span(batch) {
            // The link points at the receive-order span orders-api exported
            // for this very order, with the stored context.
            assert_eq!(
                receive_orders.get(&order),
                Some(&(trace_id.clone(), span_id.clone())),
                "link for order {order}"
            );
            assert_eq!(
                stored.get(&order),
                Some(&(trace_id, span_id, trace_state)),
                "link for order {order}"
            );
            let previous = linked.insert(order.clone(), (batch.trace_id(), batch.span_id()));
            assert!(
                previous.is_none(),
                "order {order} is linked from two batches"
            );
        }
    }
    assert_eq!(linked.len(), ORDERS, "every order is linked exactly once");
    let reconciled = check_reconcile_spans(&spans, &batches, &stored);
    assert_eq!(reconciled.len(), ORDERS);

    // The API shows each order processed by the batch that links to it.
    for (id, at_creation) in &posted {
        let order = api.get_order(id).await;
        assert_eq!(order["status"], "processed", "{order}");
        assert_eq!(order["attempts"], 1, "{order}");
        assert_eq!(order["traceparent"], at_creation["traceparent"], "{order}");
        let (batch_trace_id, batch_span_id) = &linked[id];
        assert_eq!(
            order["process_batch"],
            json!({"trace_id": batch_trace_id, "span_id": batch_span_id}),
            "{order}"
        );
        assert_eq!(reconciled[id], *batch_span_id);
        let (receive_trace_id, receive_span_id) = &receive_orders[id];
        assert_eq!(
            order["traceparent"],
            format!("00-{receive_trace_id}-{receive_span_id}-01"),
            "{order}"
        );
    }

    // Orders sent within a caller's trace: the batch links to their
    // receive-order span in that trace, not to the caller's span, and carries
    // the caller's trace state.
    let traced: Vec<&Value> = posted
        .values()
        .filter(|order| order["trace_id"] == CALLER_TRACE_ID)
        .collect();
    assert_eq!(traced.len(), TRACED_BY_CALLER);
    for order in traced {
        let id = order["id"].as_str().unwrap();
        let (trace_id, span_id, trace_state) = &stored[id];
        assert_eq!(trace_id, CALLER_TRACE_ID);
        assert_ne!(span_id, CALLER_SPAN_ID);
        assert_eq!(trace_state, CALLER_TRACE_STATE, "{order}");
        assert_eq!(order["tracestate"], CALLER_TRACE_STATE, "{order}");
    }

    api.process.sigterm();
    let api = api.process.wait(WAIT).await;
    api.assert_success();
}
