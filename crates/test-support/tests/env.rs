//! The environment helpers against a real database and receiver.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test set-up fails loudly"
)]

use std::collections::HashMap;

use orders_test_support::{database_url, free_port, otel_env};
use otlp_receiver::OtlpReceiver;
use sqlx::{Connection as _, PgConnection, PgPool};

#[sqlx::test(migrations = false)]
async fn database_url_names_the_test_database(pool: PgPool) {
    let expected: String = sqlx::query_scalar("SELECT current_database()")
        .fetch_one(&pool)
        .await
        .unwrap();
    let mut connection = PgConnection::connect(&database_url(&pool)).await.unwrap();
    let connected: String = sqlx::query_scalar("SELECT current_database()")
        .fetch_one(&mut connection)
        .await
        .unwrap();
    assert_eq!(connected, expected);
}

#[sqlx::test(migrations = false)]
async fn otel_env_points_at_the_receiver(pool: PgPool) {
    let receiver = OtlpReceiver::start().await.unwrap();
    for (protocol, endpoint) in [
        ("grpc", receiver.grpc_endpoint()),
        ("http/protobuf", receiver.http_endpoint()),
    ] {
        let env: HashMap<&str, String> = otel_env(&pool, &receiver, protocol).into_iter().collect();
        assert_eq!(env["DATABASE_URL"], database_url(&pool));
        assert_eq!(env["OTEL_EXPORTER_OTLP_ENDPOINT"], endpoint);
        assert_eq!(env["OTEL_EXPORTER_OTLP_PROTOCOL"], protocol);
    }
}

#[test]
fn free_port_can_be_listened_on() {
    let port = free_port();
    assert_ne!(port, 0);
    std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
}
