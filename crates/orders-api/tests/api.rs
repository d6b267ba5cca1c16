//! Every rule and every error of the HTTP API, over real HTTP against the real
//! router and a real PostgreSQL database per test.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test set-up fails loudly"
)]

mod common;

use std::time::Duration;

use common::{assert_error, sample_order, spawn_app};
use orders::db::PoolSettings;
use serde_json::{Value, json};
use sqlx::PgPool;
use uuid::Uuid;

async fn stored_orders(pool: &PgPool) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM orders")
        .fetch_one(pool)
        .await
        .unwrap()
}

#[sqlx::test(migrator = "orders::db::MIGRATOR")]
async fn created_order_is_answered_with_its_location(pool: PgPool) {
    let app = spawn_app(pool.clone()).await;

    let response = app.post_order(&sample_order()).await;

    assert_eq!(response.status().as_u16(), 201);
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    let body: Value = response.json().await.unwrap();
    let id = body["id"].as_str().unwrap();
    assert_eq!(location, format!("/orders/{id}"));
    assert_eq!(body["status"], "pending");
    assert_eq!(body["customer_id"], "c-42");
    assert_eq!(body["items"], sample_order()["items"]);
    assert_eq!(body["total_cents"], 2 * 1250 + 99);
    assert!(
        chrono::DateTime::parse_from_rfc3339(body["created_at"].as_str().unwrap()).is_ok(),
        "{body}"
    );
    assert_eq!(body["processed_at"], Value::Null);
    assert_eq!(body["process_batch"], Value::Null);
    assert_eq!(stored_orders(&pool).await, 1);
}

#[sqlx::test(migrator = "orders::db::MIGRATOR")]
async fn stored_order_is_read_back(pool: PgPool) {
    let app = spawn_app(pool).await;
    let created: Value = app.post_order(&sample_order()).await.json().await.unwrap();

    let response = app
        .get(&format!("/orders/{}", created["id"].as_str().unwrap()))
        .await;

    assert_eq!(response.status().as_u16(), 200);
    let read: Value = response.json().await.unwrap();
    assert_eq!(read, created);
}

#[sqlx::test(migrator = "orders::db::MIGRATOR")]
async fn processed_order_shows_its_batch_span(pool: PgPool) {
    let app = spawn_app(pool.clone()).await;
    let created: Value = app.post_order(&sample_order()).await.json().await.unwrap();
    let id: Uuid = created["id"].as_str().unwrap().parse().unwrap();
    // What orders-batch writes when it processes the order.
    sqlx::query(
        "UPDATE orders SET status = 'processed', processed_at = now(), attempts = 1, \
         batch_trace_id = '0af7651916cd43dd8448eb211c80319c', batch_span_id = 'b7ad6b7169203331' \
         WHERE id = $1",
    )
    .bind(id)
    .execute(&pool)
    .await
    .unwrap();

    let read: Value = app
        .get(&format!("/orders/{id}"))
        .await
        .json()
        .await
        .unwrap();

    assert_eq!(read["status"], "processed");
    assert_eq!(read["attempts"], 1);
    assert!(read["processed_at"].is_string(), "{read}");
    assert_eq!(
        read["process_batch"],
        json!({"trace_id": "0af7651916cd43dd8448eb211c80319c", "span_id": "b7ad6b7169203331"})
    );
}

#[sqlx::test(migrator = "orders::db::MIGRATOR")]
async fn limits_are_inclusive(pool: PgPool) {
    let app = spawn_app(pool.clone()).await;
    let items: Vec<Value> = (0..100)
        .map(
            |_| json!({"sku": "s".repeat(64), "quantity": 10_000, "unit_price_cents": 100_000_000}),
        )
        .collect();
    let largest = json!({"customer_id": "c".repeat(64), "items": items});
    let smallest =
        json!({"customer_id": "c", "items": [{"sku": "s", "quantity": 1, "unit_price_cents": 0}]});

    let largest = app.post_order(&largest).await;
    let smallest = app.post_order(&smallest).await;

    assert_eq!(largest.status().as_u16(), 201);
    let body: Value = largest.json().await.unwrap();
    assert_eq!(body["total_cents"], 100_i64 * 10_000 * 100_000_000);
    assert_eq!(smallest.status().as_u16(), 201);
    assert_eq!(stored_orders(&pool).await, 2);
}

#[sqlx::test(migrator = "orders::db::MIGRATOR")]
async fn out_of_range_fields_are_422_naming_the_field(pool: PgPool) {
    let app = spawn_app(pool.clone()).await;
    let item = |sku: &str, quantity: i64, price: i64| json!({"sku": sku, "quantity": quantity, "unit_price_cents": price});
    let many_items: Vec<Value> = (0..101).map(|_| item("s", 1, 1)).collect();
    let cases = [
        (
            json!({"customer_id": "", "items": [item("s", 1, 1)]}),
            "customer_id",
        ),
        (
            json!({"customer_id": "c".repeat(65), "items": [item("s", 1, 1)]}),
            "customer_id",
        ),
        (json!({"customer_id": "c", "items": []}), "items"),
        (json!({"customer_id": "c", "items": many_items}), "items"),
        (
            json!({"customer_id": "c", "items": [item("", 1, 1)]}),
            "items[0].sku",
        ),
        (
            json!({"customer_id": "c", "items": [item(&"s".repeat(65), 1, 1)]}),
            "items[0].sku",
        ),
        (
            json!({"customer_id": "c", "items": [item("s", 0, 1)]}),
            "items[0].quantity",
        ),
        (
            json!({"customer_id": "c", "items": [item("s", 10_001, 1)]}),
            "items[0].quantity",
        ),
        (
            json!({"customer_id": "c", "items": [item("s", 1, 1), item("s", -5, 1)]}),
            "items[1].quantity",
        ),
        (
            json!({"customer_id": "c", "items": [item("s", 1, -1)]}),
            "items[0].unit_price_cents",
        ),
        (
            json!({"customer_id": "c", "items": [item("s", 1, 100_000_001)]}),
            "items[0].unit_price_cents",
        ),
    ];

    for (body, field) in cases {
        let error = assert_error(app.post_order(&body).await, 422, "validation_failed").await;
        assert_eq!(error["details"][0]["field"], field, "{body}");
        assert!(
            error["message"]
                .as_str()
                .unwrap()
                .starts_with(&format!("{field}: must be between")),
            "{error}"
        );
    }
    assert_eq!(stored_orders(&pool).await, 0);
}

#[sqlx::test(migrator = "orders::db::MIGRATOR")]
async fn every_broken_rule_is_listed(pool: PgPool) {
    let app = spawn_app(pool).await;
    let body =
        json!({"customer_id": "", "items": [{"sku": "", "quantity": 0, "unit_price_cents": -1}]});

    let error = assert_error(app.post_order(&body).await, 422, "validation_failed").await;

    let fields: Vec<&str> = error["details"]
        .as_array()
        .unwrap()
        .iter()
        .map(|detail| detail["field"].as_str().unwrap())
        .collect();
    assert_eq!(
        fields,
        [
            "customer_id",
            "items[0].sku",
            "items[0].quantity",
            "items[0].unit_price_cents"
        ]
    );
}

#[sqlx::test(migrator = "orders::db::MIGRATOR")]
async fn missing_wrong_typed_and_unknown_fields_are_422_naming_the_field(pool: PgPool) {
    let app = spawn_app(pool.clone()).await;
    let cases = [
        (
            json!({"items": [{"sku": "s", "quantity": 1, "unit_price_cents": 1}]}),
            "customer_id",
        ),
        (json!({"customer_id": "c"}), "items"),
        (
            json!({"customer_id": "c", "items": [{"quantity": 1, "unit_price_cents": 1}]}),
            "sku",
        ),
        (json!({"customer_id": 42, "items": []}), "customer_id"),
        (json!({"customer_id": "c", "items": {"sku": "s"}}), "items"),
        (
            json!({"customer_id": "c", "items": [{"sku": "s", "quantity": "2", "unit_price_cents": 1}]}),
            "items[0].quantity",
        ),
        (
            json!({"customer_id": "c", "items": [{"sku": "s", "quantity": 1.5, "unit_price_cents": 1}]}),
            "items[0].quantity",
        ),
        (
            json!({"customer_id": "c", "items": [{"sku": "s", "quantity": 1, "unit_price_cents": null}]}),
            "items[0].unit_price_cents",
        ),
        (
            json!({"customer_id": "c", "items": [{"sku": "s", "quantity": 1, "unit_price_cents": 1}], "coupon": "x"}),
            "coupon",
        ),
        (
            json!({"customer_id": "c", "items": [{"sku": "s", "quantity": 1, "unit_price_cents": 1, "color": "red"}]}),
            "color",
        ),
        (
            json!({"customer_id": "c", "items": [{"sku": "s", "quantity": 1e30, "unit_price_cents": 1}]}),
            "items[0].quantity",
        ),
        (
            json!(["c", [{"sku": "s", "quantity": 1, "unit_price_cents": 1}]]),
            "expected a JSON object",
        ),
        (
            json!({"customer_id": "c", "items": [["s", 1, 1]]}),
            "items[0]: invalid type: sequence",
        ),
    ];

    for (body, field) in cases {
        let error = assert_error(app.post_order(&body).await, 422, "invalid_body").await;
        assert!(
            error["message"].as_str().unwrap().contains(field),
            "{body} -> {error}"
        );
    }
    assert_eq!(stored_orders(&pool).await, 0);
}

#[sqlx::test(migrator = "orders::db::MIGRATOR")]
async fn malformed_json_is_400(pool: PgPool) {
    let app = spawn_app(pool).await;
    for body in [
        "",
        "not json",
        "{\"customer_id\": ",
        "{\"customer_id\": \"c\",}",
        "{\"customer_id\": \"c\"} trailing",
        "{} trailing",
    ] {
        assert_error(
            app.post_raw(Some("application/json"), body).await,
            400,
            "malformed_json",
        )
        .await;
    }
}

#[sqlx::test(migrator = "orders::db::MIGRATOR")]
async fn content_type_must_be_json(pool: PgPool) {
    let app = spawn_app(pool).await;
    let body = sample_order().to_string();

    assert_error(
        app.post_raw(None, body.clone()).await,
        415,
        "unsupported_media_type",
    )
    .await;
    assert_error(
        app.post_raw(Some("text/plain"), body.clone()).await,
        415,
        "unsupported_media_type",
    )
    .await;
    assert_error(
        app.post_raw(Some("application/x-www-form-urlencoded"), body.clone())
            .await,
        415,
        "unsupported_media_type",
    )
    .await;
    let with_charset = app
        .post_raw(Some("application/json; charset=utf-8"), body)
        .await;
    assert_eq!(with_charset.status().as_u16(), 201);
}

#[sqlx::test(migrator = "orders::db::MIGRATOR")]
async fn bodies_over_64_kib_are_413(pool: PgPool) {
    let app = spawn_app(pool.clone()).await;
    let order = sample_order().to_string();
    // Valid JSON padded with whitespace, once just under and once just over the limit.
    let fits = format!("{order}{}", " ".repeat(64 * 1024 - order.len()));
    let too_large = format!("{fits} ");

    let accepted = app.post_raw(Some("application/json"), fits).await;
    assert_eq!(accepted.status().as_u16(), 201);
    assert_error(
        app.post_raw(Some("application/json"), too_large.clone())
            .await,
        413,
        "payload_too_large",
    )
    .await;
    // Without a Content-Length (chunked), the limit still holds.
    let chunks = futures_chunks(too_large);
    assert_error(
        app.post_raw(Some("application/json"), chunks).await,
        413,
        "payload_too_large",
    )
    .await;
    assert_eq!(stored_orders(&pool).await, 1);
}

/// A streaming body, sent chunked with no Content-Length.
fn futures_chunks(body: String) -> reqwest::Body {
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> = body
        .into_bytes()
        .chunks(8 * 1024)
        .map(|chunk| Ok(chunk.to_vec()))
        .collect();
    reqwest::Body::wrap_stream(tokio_stream::iter(chunks))
}

#[sqlx::test(migrator = "orders::db::MIGRATOR")]
async fn unknown_order_is_404_and_bad_id_is_400(pool: PgPool) {
    let app = spawn_app(pool).await;
    let unknown = Uuid::new_v4();

    let error = assert_error(
        app.get(&format!("/orders/{unknown}")).await,
        404,
        "order_not_found",
    )
    .await;
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains(&unknown.to_string())
    );
    let error = assert_error(app.get("/orders/not-a-uuid").await, 400, "invalid_order_id").await;
    assert!(error["message"].as_str().unwrap().contains("not-a-uuid"));
}

#[sqlx::test(migrator = "orders::db::MIGRATOR")]
async fn unknown_routes_and_methods_get_json_errors(pool: PgPool) {
    let app = spawn_app(pool).await;

    assert_error(app.get("/nowhere").await, 404, "not_found").await;
    let delete = app.client.delete(app.url("/orders")).send().await.unwrap();
    assert_error(delete, 405, "method_not_allowed").await;
}

#[sqlx::test(migrator = "orders::db::MIGRATOR")]
async fn health_and_readiness_with_a_database(pool: PgPool) {
    let app = spawn_app(pool).await;

    let health = app.get("/healthz").await;
    assert_eq!(health.status().as_u16(), 200);
    assert_eq!(health.json::<Value>().await.unwrap()["status"], "ok");
    let ready = app.get("/readyz").await;
    assert_eq!(ready.status().as_u16(), 200);
    assert_eq!(ready.json::<Value>().await.unwrap()["status"], "ready");
}

#[tokio::test]
async fn database_down_is_503_and_not_ready() {
    // Nothing listens on port 1: every connection attempt is refused.
    let settings = PoolSettings {
        max_connections: 2,
        acquire_timeout: Duration::from_millis(500),
    };
    let pool =
        orders::db::connect_lazy("postgres://postgres@127.0.0.1:1/orders", settings).unwrap();
    let app = spawn_app(pool).await;

    assert_error(
        app.post_order(&sample_order()).await,
        503,
        "database_unavailable",
    )
    .await;
    assert_error(
        app.get(&format!("/orders/{}", Uuid::new_v4())).await,
        503,
        "database_unavailable",
    )
    .await;
    assert_error(app.get("/readyz").await, 503, "database_unavailable").await;
    assert_eq!(app.get("/healthz").await.status().as_u16(), 200);
    // Bad input is still told apart from the outage.
    assert_error(
        app.post_raw(Some("application/json"), "{").await,
        400,
        "malformed_json",
    )
    .await;
}
