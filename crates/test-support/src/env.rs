//! The environment the binaries run with: the per-test database, ports, OTLP
//! export.

use otlp_receiver::OtlpReceiver;
use sqlx::{ConnectOptions as _, PgPool};

/// The URL of the per-test database `#[sqlx::test]` created, with every
/// connect option of the pool (password and TLS mode included).
#[must_use]
pub fn database_url(pool: &PgPool) -> String {
    pool.connect_options().to_url_lossy().to_string()
}

/// A TCP port on 127.0.0.1 that was free a moment ago, for a process to
/// listen on.
#[must_use]
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .unwrap_or_else(|error| panic!("no free port on 127.0.0.1: {error}"))
        .port()
}

/// The database and OTLP export to `receiver` over `protocol` (`grpc` or
/// `http/protobuf`), spans sent 100 ms after they end and metrics every
/// second, logs at `info`.
#[must_use]
pub fn otel_env(
    pool: &PgPool,
    receiver: &OtlpReceiver,
    protocol: &str,
) -> Vec<(&'static str, String)> {
    let endpoint = match protocol {
        "grpc" => receiver.grpc_endpoint(),
        "http/protobuf" => receiver.http_endpoint(),
        other => panic!("the receiver takes OTLP over grpc or http/protobuf, not {other:?}"),
    };
    vec![
        ("DATABASE_URL", database_url(pool)),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", protocol.to_owned()),
        ("OTEL_BSP_SCHEDULE_DELAY", "100".to_owned()),
        ("OTEL_METRIC_EXPORT_INTERVAL", "1000".to_owned()),
        ("RUST_LOG", "info".to_owned()),
    ]
}
