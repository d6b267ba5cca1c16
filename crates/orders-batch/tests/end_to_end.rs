//! The whole flow with both release binaries, started as docker-compose.yml
//! starts them: the environment compose gives each service, with the compose
//! network's addresses swapped for where the same things listen here (the
//! test's own database, an OTLP receiver in place of the collector). Orders
//! are posted over HTTP to `orders-api`, processed by `orders-batch`, and the
//! traces both export are read back from the receiver.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test set-up fails loudly"
)]

mod common;

use std::collections::HashMap;
use std::path::PathBuf;

use common::{
    OnceSummary as _, check_process_batch_span, check_reconcile_spans, count_status, named,
    stored_targets,
};
use orders_deployment::compose::Project;
use orders_deployment::repository_root;
use orders_test_support::{Process, WAIT, database_url, free_port, release_binaries, wait_until};
use otlp_receiver::OtlpReceiver;
use otlp_receiver::ReceivedSpan;
use otlp_receiver::opentelemetry_proto::tonic::common::v1::any_value::Value as ProtoValue;
use serde_json::{Value, json};
use sqlx::PgPool;

const ORDERS: usize = 30;
/// Orders posted as part of a caller's trace, with its trace state.
const TRACED_BY_CALLER: usize = 5;
const CALLER_TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_SPAN_ID: &str = "00f067aa0ba902b7";
const CALLER_TRACE_STATE: &str = "caller=e2e";

/// What the test runs in place of the compose network.
struct Natively<'a> {
    pool: &'a PgPool,
    receiver: &'a OtlpReceiver,
    api_port: u16,
}

impl<'a> Natively<'a> {
    fn new(pool: &'a PgPool, receiver: &'a OtlpReceiver) -> Self {
        Self {
            pool,
            receiver,
            api_port: free_port(),
        }
    }

    /// The environment docker-compose.yml gives `service` when `shell`
    /// variables are set (on top of the project's `.env`), as it runs here:
    /// `postgres`'s database is the test's own, `otel-collector:4317` the
    /// receiver, and orders-api listens on a port of its own.
    fn environment(&self, service: &str, shell: &[(&str, &str)]) -> Environment {
        let project = Project::as_compose_loads_it(shell).unwrap();
        let receiver = self.receiver.grpc_addr().to_string();
        let api = format!("127.0.0.1:{}", self.api_port);
        let mut environment = project
            .service(service)
            .unwrap()
            .environment_with_addresses(&[
                ("otel-collector:4317", &receiver),
                ("0.0.0.0:3000", &api),
            ]);
        for (name, value) in &mut environment {
            if name == "DATABASE_URL" {
                assert!(value.contains("@postgres:5432/"), "{name}={value}");
                *value = database_url(self.pool);
            }
            // Nothing may still point into the compose network.
            for host in project.services.keys() {
                assert!(
                    !names_address_of(value, host),
                    "{service}: {name}={value} names compose service {host}"
                );
            }
        }
        Environment(environment)
    }

    /// The release orders-api, started as `docker compose up` starts it.
    async fn start_api(&self) -> Api {
        let (api_binary, _) = release_binaries();
        Api::start(
            &api_binary,
            &self.environment("orders-api", &[]),
            self.api_port,
        )
        .await
    }

    /// The release orders-batch with `args` and `environment` (from
    /// [`Self::environment`]).
    fn start_batch(args: &[&str], environment: &Environment) -> Process {
        let (_, batch_binary) = release_binaries();
        Process::spawn(batch_binary, args, &environment.pairs())
    }
}

/// Whether `value` holds `host:<port>` as an address: at the start, or after
/// `//` or `@`.
fn names_address_of(value: &str, host: &str) -> bool {
    value.match_indices(&format!("{host}:")).any(|(at, found)| {
        let before = value[..at].chars().next_back();
        let after = value[at + found.len()..].chars().next();
        matches!(before, None | Some('/' | '@')) && after.is_some_and(|c| c.is_ascii_digit())
    })
}

/// A service's environment, as compose would give it.
struct Environment(Vec<(String, String)>);

impl Environment {
    /// The pairs, the way [`Process::spawn`] takes them.
    fn pairs(&self) -> Vec<(&str, String)> {
        self.0
            .iter()
            .map(|(name, value)| (name.as_str(), value.clone()))
            .collect()
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }
}

fn resource_string(span: &ReceivedSpan, key: &str) -> Option<String> {
    match span.resource_attribute(key) {
        Some(ProtoValue::StringValue(value)) => Some(value.clone()),
        _ => None,
    }
}

/// orders-api, running, with a client for it.
struct Api {
    process: Process,
    address: String,
    client: reqwest::Client,
}

impl Api {
    async fn start(binary: &PathBuf, env: &Environment, port: u16) -> Self {
        let address = format!("http://127.0.0.1:{port}");
        let process = Process::spawn(binary, &[], &env.pairs())
            .serving(&format!("{address}/readyz"))
            .await;
        Self {
            process,
            address,
            client: reqwest::Client::new(),
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
    let natively = Natively::new(&pool, &receiver);
    let api = natively.start_api().await;

    // Orders, some sent within a caller's trace.
    let mut posted: HashMap<String, Value> = HashMap::new();
    for index in 0..ORDERS {
        let body = api.post_order(index < TRACED_BY_CALLER).await;
        posted.insert(body["id"].as_str().unwrap().to_owned(), body);
    }
    assert_eq!(posted.len(), ORDERS);

    // Two `docker compose run --rm orders-batch --once` at once, with
    // BATCH_MAX_SIZE=8 set in the shell, then a third finding nothing.
    let batch_env = natively.environment("orders-batch", &[("BATCH_MAX_SIZE", "8")]);
    assert_eq!(batch_env.get("BATCH_MAX_SIZE"), Some("8"));
    let first = Natively::start_batch(&["--once"], &batch_env);
    let second = Natively::start_batch(&["--once"], &batch_env);
    let (first, second) = (first.wait(WAIT).await, second.wait(WAIT).await);
    first.assert_success();
    second.assert_success();
    let (a, b) = (first.summary(), second.summary());
    assert_eq!(a.processed + b.processed, ORDERS, "{first}\n{second}");
    assert_eq!(a.failed + b.failed + a.retrying + b.retrying, 0);
    assert_eq!(a.unlinked + b.unlinked, 0);
    let batch_count = a.batches + b.batches;
    assert!(batch_count >= ORDERS.div_ceil(8), "{a:?} {b:?}");
    let third = Natively::start_batch(&["--once"], &batch_env)
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
            // Named and placed by compose's OTEL_SERVICE_NAME and
            // OTEL_RESOURCE_ATTRIBUTES.
            assert_eq!(span.service_name, "orders-api");
            assert_eq!(
                resource_string(span, "deployment.environment.name").as_deref(),
                Some("compose")
            );
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

/// The demo of the README: orders-api and the scheduled orders-batch as
/// `docker compose up` starts them, the schedule shortened through
/// `BATCH_SCHEDULE` in the shell, and `scripts/post-orders.sh` posting orders.
#[sqlx::test(migrator = "orders::db::MIGRATOR")]
async fn the_demo_script_and_a_short_schedule_get_orders_processed(pool: PgPool) {
    const POSTED: usize = 12;
    let receiver = OtlpReceiver::start().await.unwrap();
    let natively = Natively::new(&pool, &receiver);
    let api = natively.start_api().await;

    let script = repository_root().join("scripts/post-orders.sh");
    let posted = Process::spawn(
        &script,
        &[&POSTED.to_string()],
        &[("ORDERS_API_URL", api.address.clone())],
    )
    .wait(WAIT)
    .await;
    posted.assert_success();
    let orders: Vec<Value> = posted
        .stdout
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(orders.len(), POSTED, "{posted}");
    assert!(orders.iter().all(|order| order["status"] == "pending"));
    assert_eq!(count_status(&pool, "pending").await, POSTED);

    // Hourly unless the shell says otherwise.
    let hourly = natively.environment("orders-batch", &[]);
    assert_eq!(hourly.get("BATCH_SCHEDULE"), Some("0 0 * * * *"));
    let every_second = natively.environment("orders-batch", &[("BATCH_SCHEDULE", "* * * * * *")]);
    let scheduled = Natively::start_batch(&[], &every_second);
    wait_until(WAIT, "the posted orders processed on a tick", || async {
        count_status(&pool, "processed").await == POSTED
    })
    .await;
    scheduled.sigterm();
    let scheduled = scheduled.wait(WAIT).await;
    scheduled.assert_success();

    let spans = receiver
        .wait_for_spans(WAIT, |spans| {
            named(spans, "receive-order").len() >= POSTED
                && named(spans, "process-batch")
                    .iter()
                    .map(|batch| batch.links().len())
                    .sum::<usize>()
                    >= POSTED
        })
        .await;
    let stored = stored_targets(&pool).await;
    let mut linked = 0;
    for batch in named(&spans, "process-batch") {
        assert_eq!(batch.service_name, "orders-batch");
        for (order, target) in check_process_batch_span(batch) {
            assert_eq!(stored.get(&order), Some(&target), "link for order {order}");
            linked += 1;
        }
    }
    assert_eq!(linked, POSTED, "each posted order linked once");

    api.process.sigterm();
    api.process.wait(WAIT).await.assert_success();
}
