//! Every rule and every error of the HTTP API, over real HTTP against the
//! real router and a PostgreSQL database of each test's own.

#![allow(clippy::unwrap_used, reason = "test set-up fails loudly")]

mod common;

use std::fmt::Write as _;
use std::time::Duration;

use common::{assert_error, sample_order, spawn_app};
use orders::db::PoolSettings;
use orders_api::error::MAX_MESSAGE_CHARS;
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::test_runner::{TestCaseError, TestRunner};
use serde_json::{Value, json};
use sqlx::PgPool;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio_stream::StreamExt as _;

async fn stored_orders(pool: &PgPool) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM orders")
        .fetch_one(pool)
        .await
        .unwrap()
}

fn item(sku: &str, quantity: i64, unit_price_cents: i64) -> Value {
    json!({"sku": sku, "quantity": quantity, "unit_price_cents": unit_price_cents})
}

#[sqlx::test(migrator = "orders::db::MIGRATOR")]
async fn an_order_is_created_read_back_and_shows_the_batch_that_processed_it(pool: PgPool) {
    let app = spawn_app(pool.clone()).await;
    let response = app.post(&sample_order()).await;
    assert_eq!(response.status().as_u16(), 201);
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    let created: Value = response.json().await.unwrap();
    let id = created["id"].as_str().unwrap();
    assert_eq!(location, format!("/orders/{id}"));
    assert_eq!(
        (
            &created["status"],
            &created["customer_id"],
            &created["total_cents"]
        ),
        (&json!("pending"), &json!("c-42"), &json!(2599))
    );
    assert_eq!(created["items"], sample_order()["items"]);
    assert!(chrono::DateTime::parse_from_rfc3339(created["created_at"].as_str().unwrap()).is_ok());
    assert_eq!(
        (&created["processed_at"], &created["process_batch"]),
        (&Value::Null, &Value::Null)
    );
    assert_eq!(
        app.get(&location).await.json::<Value>().await.unwrap(),
        created
    );

    // What orders-batch writes when it processes the order in a batch whose
    // span was not recorded (link-aware sampling, no sampled order in it).
    sqlx::query("UPDATE orders SET status = 'processed', processed_at = now(), attempts = 1, batch_trace_id = $2, batch_span_id = $3, batch_span_sampled = false WHERE id = $1::uuid")
        .bind(id).bind("0af7651916cd43dd8448eb211c80319c").bind("b7ad6b7169203331")
        .execute(&pool).await.unwrap();
    let read: Value = app.get(&location).await.json().await.unwrap();
    assert_eq!(
        (&read["status"], &read["attempts"]),
        (&json!("processed"), &json!(1))
    );
    assert!(read["processed_at"].is_string());
    assert_eq!(
        read["process_batch"],
        json!({"trace_id": "0af7651916cd43dd8448eb211c80319c", "span_id": "b7ad6b7169203331", "sampled": false})
    );
}

#[sqlx::test(migrator = "orders::db::MIGRATOR")]
async fn every_limit_is_inclusive(pool: PgPool) {
    let app = spawn_app(pool.clone()).await;
    let largest = json!({"customer_id": "c".repeat(64), "items": vec![item(&"s".repeat(64), 10_000, 100_000_000); 100]});
    let smallest = json!({"customer_id": "c", "items": [item("s", 1, 0)]});
    let largest = app.post(&largest).await;
    assert_eq!(largest.status().as_u16(), 201);
    assert_eq!(
        largest.json::<Value>().await.unwrap()["total_cents"],
        100_i64 * 10_000 * 100_000_000
    );
    assert_eq!(app.post(&smallest).await.status().as_u16(), 201);
    assert_eq!(stored_orders(&pool).await, 2);
}

/// Every rule is a unit test of `orders::order`; here, how a broken one is answered.
#[sqlx::test(migrator = "orders::db::MIGRATOR")]
async fn values_out_of_range_are_422_naming_every_broken_rule(pool: PgPool) {
    let app = spawn_app(pool.clone()).await;
    let body = json!({"customer_id": "", "items": [item("", 0, -1), item("s", 1, 100_000_001)]});
    let error = assert_error(app.post(&body).await, 422, "validation_failed").await;
    let message = "customer_id: must be between 1 and 64 characters long, got 0";
    assert!(
        error["message"].as_str().unwrap().starts_with(message),
        "{error}"
    );
    let details = error["details"].as_array().unwrap();
    let fields: Vec<&str> = details
        .iter()
        .map(|detail| detail["field"].as_str().unwrap())
        .collect();
    let broken = [
        "customer_id",
        "items[0].sku",
        "items[0].quantity",
        "items[0].unit_price_cents",
    ];
    assert_eq!(
        fields,
        [&broken[..], &["items[1].unit_price_cents"]].concat()
    );
    assert_eq!(stored_orders(&pool).await, 0);
}

#[sqlx::test(migrator = "orders::db::MIGRATOR")]
async fn documents_of_the_wrong_shape_are_422_naming_the_field(pool: PgPool) {
    let app = spawn_app(pool.clone()).await;
    let with = |field: &str, value: Value| json!({"customer_id": "c", "items": [{"sku": "s", "quantity": 1, "unit_price_cents": 1, field: value}]});
    let cases = [
        (json!({"items": [item("s", 1, 1)]}), "customer_id"),
        (json!({"customer_id": "c"}), "items"),
        (
            json!({"customer_id": "c", "items": [{"quantity": 1, "unit_price_cents": 1}]}),
            "sku",
        ),
        (json!({"customer_id": 42, "items": []}), "customer_id"),
        (json!({"customer_id": "c", "items": {"sku": "s"}}), "items"),
        (with("quantity", json!("2")), "items[0].quantity"),
        (with("quantity", json!(1e30)), "items[0].quantity"),
        (
            with("unit_price_cents", Value::Null),
            "items[0].unit_price_cents",
        ),
        (with("color", json!("red")), "color"),
        (
            json!({"customer_id": "c", "items": [item("s", 1, 1)], "coupon": "x"}),
            "coupon",
        ),
        (json!(["c", [item("s", 1, 1)]]), "expected a JSON object"),
        (
            json!({"customer_id": "c", "items": [["s", 1, 1]]}),
            "items[0]: invalid type: sequence",
        ),
    ];
    for (body, field) in cases {
        let error = assert_error(app.post(&body).await, 422, "invalid_body").await;
        assert!(
            error["message"].as_str().unwrap().contains(field),
            "{body} -> {error}"
        );
    }
    assert_eq!(stored_orders(&pool).await, 0);
}

#[sqlx::test(migrator = "orders::db::MIGRATOR")]
async fn bodies_that_are_not_json_of_a_json_type_or_too_large_are_refused(pool: PgPool) {
    let app = spawn_app(pool.clone()).await;
    let json = |body: reqwest::Body| app.post_raw(Some("application/json"), body);
    for body in [
        "",
        "not json",
        "{\"customer_id\": ",
        "{\"customer_id\": \"c\",}",
        "{\"customer_id\": \"c\"} trailing",
        "{} trailing",
    ] {
        assert_error(json(body.into()).await, 400, "malformed_json").await;
    }
    let order = sample_order().to_string();
    for content_type in [
        None,
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
    ] {
        assert_error(
            app.post_raw(content_type, order.clone()).await,
            415,
            "unsupported_media_type",
        )
        .await;
    }
    assert_eq!(
        app.post_raw(Some("application/json; charset=utf-8"), order.clone())
            .await
            .status()
            .as_u16(),
        201
    );
    // Valid JSON padded with whitespace to just under, then just over, 64 KiB.
    let fits = format!("{order}{}", " ".repeat(64 * 1024 - order.len()));
    assert_eq!(json(fits.clone().into()).await.status().as_u16(), 201);
    let too_large = format!("{fits} ");
    assert_error(
        json(too_large.clone().into()).await,
        413,
        "payload_too_large",
    )
    .await;
    // Streamed without a Content-Length, the limit holds as well.
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> = too_large
        .into_bytes()
        .chunks(8 * 1024)
        .map(|chunk| Ok(chunk.to_vec()))
        .collect();
    let streamed = reqwest::Body::wrap_stream(tokio_stream::iter(chunks));
    assert_error(json(streamed).await, 413, "payload_too_large").await;
    // A body that stops coming gets a 408 once the body timeout (1 s here) passes.
    let stalled = tokio_stream::iter([Ok::<_, std::io::Error>("{")]).chain(tokio_stream::pending());
    let stalled = reqwest::Body::wrap_stream(stalled);
    assert_error(json(stalled).await, 408, "request_timeout").await;
    assert_eq!(stored_orders(&pool).await, 2);
}

#[sqlx::test(migrator = "orders::db::MIGRATOR")]
async fn unknown_orders_ids_routes_and_methods_get_json_errors(pool: PgPool) {
    let app = spawn_app(pool).await;
    let unknown = "019a8f5e-0c1d-7a53-9b6e-2f0c4b8e1d2a";
    let error = assert_error(
        app.get(&format!("/orders/{unknown}")).await,
        404,
        "order_not_found",
    )
    .await;
    assert!(error["message"].as_str().unwrap().contains(unknown));
    let error = assert_error(app.get("/orders/not-a-uuid").await, 400, "invalid_order_id").await;
    assert!(error["message"].as_str().unwrap().contains("not-a-uuid"));
    assert_error(app.get("/nowhere").await, 404, "not_found").await;
    assert_error(
        app.client.delete(app.url("/orders")).send().await.unwrap(),
        405,
        "method_not_allowed",
    )
    .await;
}

#[sqlx::test(migrator = "orders::db::MIGRATOR")]
async fn a_retry_with_the_same_idempotency_key_gets_the_order_first_created(pool: PgPool) {
    let app = spawn_app(pool.clone()).await;
    let post = |key: &str, body: &Value| {
        let request = app
            .client
            .post(app.url("/orders"))
            .header("idempotency-key", key);
        request.json(body).send()
    };
    let first: Value = post("k-1", &sample_order())
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    // Retried, bare or as the draft's quoted string: the first order, its trace.
    for key in ["k-1", "\"k-1\""] {
        let retry = post(key, &sample_order()).await.unwrap();
        assert_eq!(retry.status().as_u16(), 201);
        assert_eq!(retry.json::<Value>().await.unwrap(), first);
    }
    let other = json!({"customer_id": "c-43", "items": [item("s", 1, 1)]});
    assert_error(
        post("k-1", &other).await.unwrap(),
        422,
        "idempotency_key_reused",
    )
    .await;
    // Ten at once with a new key: one order, each answer it or a 409.
    let racing = (0..10).map(|_| tokio::spawn(post("k-2", &sample_order())));
    let mut created = std::collections::HashSet::new();
    for answer in racing.collect::<Vec<_>>() {
        let answer = answer.await.unwrap().unwrap();
        if answer.status().as_u16() == 201 {
            created.insert(answer.json::<Value>().await.unwrap()["id"].clone());
        } else {
            assert_error(answer, 409, "idempotency_key_in_flight").await;
        }
    }
    assert_eq!(created.len(), 1);
    // While another request with the key is being stored: 409.
    let mut storing = pool.acquire().await.unwrap();
    let lock = "SELECT pg_advisory_lock(hashtextextended('k-3', 0))";
    sqlx::query(lock).execute(&mut *storing).await.unwrap();
    assert_error(
        post("k-3", &sample_order()).await.unwrap(),
        409,
        "idempotency_key_in_flight",
    )
    .await;
    for key in ["", &"k".repeat(256), "a b"] {
        assert_error(
            post(key, &sample_order()).await.unwrap(),
            400,
            "invalid_idempotency_key",
        )
        .await;
    }
    assert_eq!(stored_orders(&pool).await, 2, "one order a key");
}

/// Reads until the server closes `connection`; what it sent.
async fn until_closed(connection: &mut tokio::net::TcpStream) -> String {
    let mut answer = Vec::new();
    let read = connection.read_to_end(&mut answer);
    tokio::time::timeout(Duration::from_secs(5), read)
        .await
        .unwrap()
        .unwrap();
    String::from_utf8_lossy(&answer).into_owned()
}

#[sqlx::test(migrator = "orders::db::MIGRATOR")]
async fn silent_connections_close_new_ones_after_the_header_read_timeout_kept_alive_after_idle(
    pool: PgPool,
) {
    let app = spawn_app(pool).await;
    let address = app.address.trim_start_matches("http://");
    let mut silent = tokio::net::TcpStream::connect(address).await.unwrap();
    let opened = std::time::Instant::now();
    assert_eq!(until_closed(&mut silent).await, "");
    let closed = opened.elapsed();
    assert!(
        closed < Duration::from_millis(2500),
        "at 1 s, not 3: {closed:?}"
    );
    // A kept-alive connection outlives the header-read timeout (1 s), not the
    // idle timeout (3 s).
    let mut kept = tokio::net::TcpStream::connect(address).await.unwrap();
    let request = b"GET /healthz HTTP/1.1\r\nhost: orders\r\n\r\n";
    kept.write_all(request).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    kept.write_all(request).await.unwrap();
    let answers = until_closed(&mut kept).await;
    assert_eq!(answers.matches("HTTP/1.1 200 OK").count(), 2, "{answers}");
}

/// Alive and ready, even while requests hold every connection of the pool:
/// `/readyz` asks over a connection of its own.
#[sqlx::test(migrator = "orders::db::MIGRATOR")]
async fn alive_and_ready_while_requests_hold_every_connection(pool: PgPool) {
    let settings = PoolSettings {
        max_connections: 1,
        acquire_timeout: Duration::from_secs(5),
    };
    let busy = orders::db::connect_lazy_with(pool.connect_options().as_ref().clone(), settings);
    let _held = busy.acquire().await.unwrap();
    let app = spawn_app(busy.clone()).await;
    for (probe, status) in [("/healthz", "ok"), ("/readyz", "ready")] {
        let answer = app.get(probe).await.json::<Value>().await.unwrap();
        assert_eq!(answer, json!({ "status": status }));
    }
}

#[tokio::test]
async fn with_the_database_down_orders_are_503_and_bad_input_still_400() {
    // Nothing listens on port 1: every connection is refused.
    let settings = PoolSettings {
        max_connections: 2,
        acquire_timeout: Duration::from_millis(500),
    };
    let app = spawn_app(
        orders::db::connect_lazy("postgres://postgres@127.0.0.1:1/orders", settings).unwrap(),
    )
    .await;
    assert_error(app.post(&sample_order()).await, 503, "database_unavailable").await;
    assert_error(
        app.get("/orders/019a8f5e-0c1d-7a53-9b6e-2f0c4b8e1d2a")
            .await,
        503,
        "database_unavailable",
    )
    .await;
    assert_error(app.get("/readyz").await, 503, "database_unavailable").await;
    assert_eq!(app.get("/healthz").await.status().as_u16(), 200);
    assert_error(
        app.post_raw(Some("application/json"), "{").await,
        400,
        "malformed_json",
    )
    .await;
}

/// Any text, NUL and every plane included, most of it of a valid length.
fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        "\\PC{1,64}",
        "[\\x00-\\x1f a-z]{1,64}",
        "[a-z0-9-]{1,64}",
        ".{0,300}"
    ]
}

/// Any JSON document.
fn document() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        (-20_000_i64..20_000).prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        text().prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 24, 5, |inner| {
        let field = prop_oneof![
            Just("customer_id".to_owned()),
            Just("items".to_owned()),
            Just("sku".to_owned()),
            Just("quantity".to_owned()),
            Just("unit_price_cents".to_owned()),
            text(),
        ];
        prop_oneof![
            vec(inner.clone(), 0..5).prop_map(Value::from),
            vec((field, inner), 0..5)
                .prop_map(|fields| Value::Object(fields.into_iter().collect())),
        ]
    })
}

/// An order whose fields are any document: mostly valid in shape, often not in value.
fn order() -> impl Strategy<Value = Value> {
    let number = |valid| prop_oneof![4 => valid, 1 => any::<i64>(), 1 => -2_i64..200_000_000];
    let item = (
        prop_oneof![4 => text().prop_map(Value::from), 1 => document()],
        number(1..=10_000_i64),
        number(0..=100_000_000_i64),
    )
        .prop_map(|(sku, quantity, price)| json!({"sku": sku, "quantity": quantity, "unit_price_cents": price}));
    (
        prop_oneof![4 => text().prop_map(Value::from), 1 => document()],
        vec(item, 0..4),
    )
        .prop_map(|(customer_id, items)| json!({"customer_id": customer_id, "items": items}))
}

/// What a client could send: a body, its `Content-Type`, other headers the API
/// reads, and an order id to GET (percent-encoded bytes).
type ClientInput = (Vec<u8>, String, Vec<(&'static str, String)>, String);

fn request() -> impl Strategy<Value = ClientInput> {
    let body = prop_oneof![
        4 => order().prop_map(|order| order.to_string().into_bytes()),
        1 => document().prop_map(|document| document.to_string().into_bytes()),
        1 => vec(any::<u8>(), 0..200),
    ];
    let content_type = prop_oneof![Just("application/json".to_owned()), "[ -~]{0,40}"];
    let header = prop_oneof![
        (Just("traceparent"), "00-[0-9a-f]{32}-[0-9a-f]{16}-0[0-3]"),
        (Just("traceparent"), "[ -~]{0,80}"),
        (
            Just("tracestate"),
            "([a-z0-9@*/_-]{1,20}=[!-+--<>-~]{1,300},){0,40}"
        ),
        (Just("tracestate"), "[ -~]{0,4000}"),
        (Just("idempotency-key"), "[ -~]{0,300}"),
    ];
    (
        body,
        content_type,
        vec(header, 0..4),
        vec(any::<u8>(), 0..100).prop_map(|bytes| percent_encoded(&bytes)),
    )
}

fn percent_encoded(bytes: &[u8]) -> String {
    bytes.iter().fold(String::new(), |mut path, byte| {
        write!(path, "%{byte:02X}").unwrap();
        path
    })
}

/// Never a 5xx, and every non-2xx answer is the API's JSON error.
async fn check_answer(response: reqwest::Response) -> Result<(), TestCaseError> {
    let status = response.status();
    prop_assert!(!status.is_server_error(), "{status}");
    if !status.is_success() {
        prop_assert_eq!(&response.headers()["content-type"], "application/json");
        let body: Value = response.json().await.unwrap();
        prop_assert!(body["error"]["code"].is_string(), "{}", body);
        let message = body["error"]["message"].as_str().unwrap_or_default();
        prop_assert!(
            (1..=MAX_MESSAGE_CHARS + 1).contains(&message.chars().count()),
            "{}",
            body
        );
    }
    Ok(())
}

#[sqlx::test(migrator = "orders::db::MIGRATOR")]
async fn no_request_a_client_can_send_gets_a_5xx_or_an_answer_that_is_not_the_json_error(
    pool: PgPool,
) {
    let app = spawn_app(pool).await;
    // Random input may never be cut: an id of 300 characters is, and says so.
    let long = app.get(&format!("/orders/{}", "x".repeat(300))).await;
    let error = assert_error(long, 400, "invalid_order_id").await;
    let cut = format!("order id \"{}…", "x".repeat(MAX_MESSAGE_CHARS - 10));
    assert_eq!(error["message"], cut);
    let runtime = tokio::runtime::Handle::current();
    let config = proptest::test_runner::Config {
        cases: 400,
        failure_persistence: None,
        ..Default::default()
    };
    tokio::task::spawn_blocking(move || {
        TestRunner::new(config).run(&request(), |(body, content_type, headers, path)| {
            runtime.block_on(async {
                let mut post = app
                    .client
                    .post(app.url("/orders"))
                    .header("content-type", content_type)
                    .body(body);
                for (name, value) in headers {
                    post = post.header(name, value);
                }
                check_answer(post.send().await.unwrap()).await?;
                check_answer(app.get(&format!("/orders/{path}")).await).await
            })
        })
    })
    .await
    .unwrap()
    .unwrap();
}
