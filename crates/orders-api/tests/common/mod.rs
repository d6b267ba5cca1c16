//! What the integration tests share: the API served on an ephemeral port.

#![allow(dead_code, reason = "each test crate uses a different part")]
#![allow(clippy::unwrap_used, reason = "test set-up fails loudly")]

use std::time::Duration;

use orders_api::AppState;
use orders_api::server::serve;
use serde_json::{Value, json};
use sqlx::PgPool;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// The real router, served over real HTTP on 127.0.0.1 with a port of its own.
pub struct TestApp {
    pub address: String,
    pub client: reqwest::Client,
}

pub async fn spawn_app(pool: PgPool) -> TestApp {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        serve(
            listener,
            AppState::new(pool),
            &CancellationToken::new(),
            Duration::from_secs(1),
        )
        .await
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

    pub async fn post_order(&self, body: &Value) -> reqwest::Response {
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

/// A valid order.
pub fn sample_order() -> Value {
    json!({
        "customer_id": "c-42",
        "items": [
            {"sku": "sku-1", "quantity": 2, "unit_price_cents": 1250},
            {"sku": "sku-2", "quantity": 1, "unit_price_cents": 99}
        ]
    })
}

/// Checks that a response is the API's JSON error with this status and code,
/// and returns its `error` object.
pub async fn assert_error(response: reqwest::Response, status: u16, code: &str) -> Value {
    assert_eq!(response.status().as_u16(), status, "status");
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert_eq!(content_type, "application/json", "content type");
    let body: Value = response.json().await.unwrap();
    let error = body["error"].clone();
    assert_eq!(error["code"], code, "{body}");
    assert!(
        error["message"]
            .as_str()
            .is_some_and(|message| !message.is_empty()),
        "{body}"
    );
    error
}
