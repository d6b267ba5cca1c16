//! Configuration, from flags or the environment (the environment is what
//! containers use; flags are handy when running by hand).
//!
//! The `OTEL_*` and `RUST_LOG` variables are read by `orders-telemetry`.

use std::net::SocketAddr;
use std::time::Duration;

use orders::db::DatabaseArgs;
use orders_telemetry::SpanLimits;

use crate::connections::ConnectionLimits;

/// The spans the trace export queue holds, so that a collector gone for a
/// while (a restart, a rollout) costs no span: requests never wait for it,
/// and the exporter tries its failed export again meanwhile; beyond the
/// queue, new spans are dropped and counted. The rule: spans per order ×
/// orders per second × seconds away + one export in flight. Each order ends
/// 4 spans (`POST /orders`, `receive-order`, `validate`, `persist-order`);
/// 300 orders a second, steady; 5 s away, plus 3 s before the exporter sees
/// the collector back (its next try, at most 2 s after the last, and that
/// try's own quick retries); one export of 2048 spans
/// (`OTEL_BSP_MAX_EXPORT_BATCH_SIZE`): 4 × 300 × 8 + 2048 = 11,648 spans,
/// about 12 MB.
const SPAN_QUEUE_SIZE: usize = 4 * 300 * (5 + 3) + 2048;

#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "orders-api",
    version,
    about = "Takes orders and stores them with their trace context"
)]
pub struct Config {
    #[command(flatten)]
    pub database: DatabaseArgs,

    /// Apply the database migrations and exit: what a migration Job runs.
    #[arg(long)]
    pub migrate_only: bool,

    /// Address and port to listen on.
    #[arg(long, env = "LISTEN_ADDR", default_value = "0.0.0.0:3000")]
    pub listen_addr: SocketAddr,

    /// Most connections in the database pool.
    #[arg(long, env = "DATABASE_POOL_SIZE", default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub database_pool_size: u32,

    /// Milliseconds `/readyz` waits for the database, over a connection of its
    /// own; keep it under the readiness probe's timeout.
    #[arg(long, env = "READYZ_TIMEOUT_MS", default_value_t = 1000, value_parser = clap::value_parser!(u64).range(10..=60_000))]
    pub readyz_timeout_ms: u64,

    /// Most open HTTP connections; past it, a new one closes the oldest that is
    /// between requests. Below the common 1,024 open-file limit, as nginx's default.
    #[arg(long, env = "HTTP_MAX_CONNECTIONS", default_value_t = 512, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub http_max_connections: u32,

    /// Seconds a new connection has to send its first request's headers.
    #[arg(long, env = "HTTP_HEADER_READ_TIMEOUT_SECS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub http_header_read_timeout_secs: u64,

    /// Seconds a kept-alive connection may wait, from its last answer, for its
    /// next request's headers; above a load balancer's own idle timeout (often
    /// 60 s), as nginx's 75 s, or the balancer meets closed connections.
    #[arg(long, env = "HTTP_IDLE_TIMEOUT_SECS", default_value_t = 75, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub http_idle_timeout_secs: u64,

    /// Seconds a client has to send a request's body, once its headers are in.
    #[arg(long, env = "HTTP_BODY_READ_TIMEOUT_SECS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub http_body_read_timeout_secs: u64,

    /// Seconds in-flight requests get to finish after SIGTERM or Ctrl-C.
    #[arg(long, env = "SHUTDOWN_GRACE_SECS", default_value_t = 20)]
    pub shutdown_grace_secs: u64,
}

impl Config {
    #[must_use]
    pub fn connection_limits(&self) -> ConnectionLimits {
        ConnectionLimits {
            max_connections: self.http_max_connections as usize,
            header_read_timeout: Duration::from_secs(self.http_header_read_timeout_secs),
            idle_timeout: Duration::from_secs(self.http_idle_timeout_secs),
            body_read_timeout: Duration::from_secs(self.http_body_read_timeout_secs),
        }
    }

    #[must_use]
    pub fn readyz_timeout(&self) -> Duration {
        Duration::from_millis(self.readyz_timeout_ms)
    }

    #[must_use]
    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_secs(self.shutdown_grace_secs)
    }

    /// The SDK's link limit (a request's spans link nothing), and an export
    /// queue that rides out a collector's restart; requests never wait.
    #[must_use]
    pub fn span_limits(&self) -> SpanLimits {
        SpanLimits {
            queue_size: SPAN_QUEUE_SIZE,
            ..SpanLimits::default()
        }
    }
}
