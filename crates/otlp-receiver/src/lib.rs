//! A real OpenTelemetry OTLP receiver on loopback, for integration tests.
//!
//! Unit tests with in-memory exporters prove that a service *creates* the
//! right spans, logs and metrics; they do not prove that the service's
//! exporter configuration actually ships them over the wire.  This crate
//! closes that gap: [`OtlpReceiver::start`] binds two loopback ports, one
//! speaking OTLP/gRPC (the generated `opentelemetry-proto` tonic servers) and
//! one speaking OTLP/HTTP (`POST /v1/traces`, `/v1/metrics`, `/v1/logs` with
//! protobuf bodies), and records everything it receives so a test can
//! point a service's exporter at it and assert on what arrived.
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use std::time::Duration;
//! use otlp_receiver::{OtlpReceiver, Transport};
//!
//! let receiver = OtlpReceiver::start().await?;
//! // Configure the service's exporter with `receiver.grpc_endpoint()` or
//! // `receiver.http_url(Signal::Traces)`, run it, then:
//! let spans = receiver
//!     .wait_for_spans(Duration::from_secs(10), |spans| {
//!         spans.iter().any(|s| s.name() == "GET /orders")
//!     })
//!     .await;
//! assert!(spans.iter().any(|s| s.service_name == "orders-api"));
//! assert!(receiver.requests(Transport::Grpc) > 0);
//! # Ok(())
//! # }
//! ```
//!
//! Both servers run as tokio tasks on the runtime that called
//! [`OtlpReceiver::start`]; they are aborted when the last clone of the
//! receiver handle is dropped.

mod grpc;
mod http;
mod received;
mod store;

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio::time::Instant;

pub use received::{ReceivedLog, ReceivedMetric, ReceivedSpan};
use store::Store;

/// Re-export of the `opentelemetry-proto` crate, so tests can name the
/// generated types (`Span`, `LogRecord`, `Metric`, `AnyValue`, ...) without
/// depending on it themselves.
pub use opentelemetry_proto;

/// Largest export request accepted on either transport (64 MiB).
///
/// Spans carrying thousands of links easily exceed tonic's 4 MiB and axum's
/// 2 MiB defaults.
pub const MAX_MESSAGE_SIZE: usize = 64 * 1024 * 1024;

/// How often the `wait_for_*` methods re-check what has arrived.
const POLL_INTERVAL: Duration = Duration::from_millis(50);

/// The wire protocol an export request arrived over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    /// OTLP/gRPC (HTTP/2, `opentelemetry.proto.collector.*.v1.*Service/Export`).
    Grpc,
    /// OTLP/HTTP (`POST /v1/{traces,metrics,logs}`, protobuf body).
    Http,
}

impl Transport {
    const fn index(self) -> usize {
        match self {
            Self::Grpc => 0,
            Self::Http => 1,
        }
    }
}

/// An OTLP signal type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Signal {
    /// Spans (`/v1/traces`, `TraceService`).
    Traces,
    /// Metrics (`/v1/metrics`, `MetricsService`).
    Metrics,
    /// Log records (`/v1/logs`, `LogsService`).
    Logs,
}

impl Signal {
    const fn index(self) -> usize {
        match self {
            Self::Traces => 0,
            Self::Metrics => 1,
            Self::Logs => 2,
        }
    }

    /// The OTLP/HTTP path for this signal, e.g. `/v1/traces`.
    #[must_use]
    pub const fn http_path(self) -> &'static str {
        match self {
            Self::Traces => "/v1/traces",
            Self::Metrics => "/v1/metrics",
            Self::Logs => "/v1/logs",
        }
    }
}

/// Aborts the server tasks when the last receiver handle goes away.
#[derive(Debug)]
struct Tasks(Vec<JoinHandle<()>>);

impl Drop for Tasks {
    fn drop(&mut self) {
        for task in &self.0 {
            task.abort();
        }
    }
}

/// A running OTLP receiver listening on two loopback ports (gRPC and HTTP).
///
/// Cheap to clone: all clones share the same servers and received data.
/// The servers stop when the last clone is dropped.
#[derive(Debug, Clone)]
pub struct OtlpReceiver {
    store: Arc<Store>,
    grpc_addr: SocketAddr,
    http_addr: SocketAddr,
    _tasks: Arc<Tasks>,
}

impl OtlpReceiver {
    /// Binds `127.0.0.1:0` for gRPC and `127.0.0.1:0` for HTTP and serves
    /// both in tokio tasks on the current runtime.
    ///
    /// Must be called from within a tokio runtime.
    pub async fn start() -> std::io::Result<Self> {
        let store = Arc::new(Store::default());

        let grpc_listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
        let grpc_addr = grpc_listener.local_addr()?;
        let http_listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
        let http_addr = http_listener.local_addr()?;

        let grpc_task = tokio::spawn(grpc::serve(grpc_listener, Arc::clone(&store)));
        let http_task = tokio::spawn(http::serve(http_listener, Arc::clone(&store)));

        Ok(Self {
            store,
            grpc_addr,
            http_addr,
            _tasks: Arc::new(Tasks(vec![grpc_task, http_task])),
        })
    }

    /// The OTLP/gRPC endpoint, e.g. `http://127.0.0.1:41234`.
    ///
    /// Pass it to a tonic exporter's `with_endpoint` or set it as
    /// `OTEL_EXPORTER_OTLP_ENDPOINT` with `OTEL_EXPORTER_OTLP_PROTOCOL=grpc`.
    #[must_use]
    pub fn grpc_endpoint(&self) -> String {
        format!("http://{}", self.grpc_addr)
    }

    /// The OTLP/HTTP base URL, e.g. `http://127.0.0.1:41235`.
    ///
    /// Suitable for `OTEL_EXPORTER_OTLP_ENDPOINT`, from which exporters derive
    /// `/v1/traces` etc.  Note that `opentelemetry-otlp`'s HTTP exporters use a
    /// *programmatic* `with_endpoint(..)` verbatim; use [`Self::http_url`]
    /// for that.
    #[must_use]
    pub fn http_endpoint(&self) -> String {
        format!("http://{}", self.http_addr)
    }

    /// The full OTLP/HTTP URL for one signal, e.g.
    /// `http://127.0.0.1:41235/v1/traces`.
    #[must_use]
    pub fn http_url(&self, signal: Signal) -> String {
        format!("http://{}{}", self.http_addr, signal.http_path())
    }

    /// The socket address of the gRPC listener.
    #[must_use]
    pub fn grpc_addr(&self) -> SocketAddr {
        self.grpc_addr
    }

    /// The socket address of the HTTP listener.
    #[must_use]
    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    /// Every span received so far (over either transport), flattened out of
    /// their resource/scope envelopes, in arrival order.
    #[must_use]
    pub fn spans(&self) -> Vec<ReceivedSpan> {
        self.store.spans()
    }

    /// Every log record received so far, in arrival order.
    #[must_use]
    pub fn log_records(&self) -> Vec<ReceivedLog> {
        self.store.logs()
    }

    /// Every metric received so far, in arrival order.
    ///
    /// Periodic readers export the same metric repeatedly, so a metric name
    /// can occur many times.
    #[must_use]
    pub fn metrics(&self) -> Vec<ReceivedMetric> {
        self.store.metrics()
    }

    /// Number of successfully decoded export requests, for all signals
    /// together, that arrived over `transport`.
    #[must_use]
    pub fn requests(&self, transport: Transport) -> usize {
        [Signal::Traces, Signal::Metrics, Signal::Logs]
            .into_iter()
            .map(|signal| self.store.requests(signal, transport))
            .sum()
    }

    /// Number of successfully decoded export requests for `signal` that
    /// arrived over `transport`.
    #[must_use]
    pub fn requests_for(&self, signal: Signal, transport: Transport) -> usize {
        self.store.requests(signal, transport)
    }

    /// Forgets everything received so far, including the request counters.
    pub fn clear(&self) {
        self.store.clear();
    }

    /// Polls (every 50 ms) until `done(&self.spans())` is true or `timeout`
    /// passes; returns the spans either way.
    pub async fn wait_for_spans(
        &self,
        timeout: Duration,
        done: impl Fn(&[ReceivedSpan]) -> bool,
    ) -> Vec<ReceivedSpan> {
        wait_for(timeout, || self.spans(), done).await
    }

    /// Polls (every 50 ms) until `done(&self.log_records())` is true or
    /// `timeout` passes; returns the log records either way.
    pub async fn wait_for_logs(
        &self,
        timeout: Duration,
        done: impl Fn(&[ReceivedLog]) -> bool,
    ) -> Vec<ReceivedLog> {
        wait_for(timeout, || self.log_records(), done).await
    }

    /// Polls (every 50 ms) until `done(&self.metrics())` is true or `timeout`
    /// passes; returns the metrics either way.
    pub async fn wait_for_metrics(
        &self,
        timeout: Duration,
        done: impl Fn(&[ReceivedMetric]) -> bool,
    ) -> Vec<ReceivedMetric> {
        wait_for(timeout, || self.metrics(), done).await
    }
}

async fn wait_for<T>(
    timeout: Duration,
    snapshot: impl Fn() -> Vec<T>,
    done: impl Fn(&[T]) -> bool,
) -> Vec<T> {
    let deadline = Instant::now() + timeout;
    loop {
        let items = snapshot();
        let now = Instant::now();
        if done(&items) || now >= deadline {
            return items;
        }
        tokio::time::sleep(POLL_INTERVAL.min(deadline - now)).await;
    }
}

/// Lowercase hex encoding of `bytes` (trace ids, span ids, link ids, ...).
#[must_use]
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        out.push(char::from(DIGITS[usize::from(byte >> 4)]));
        out.push(char::from(DIGITS[usize::from(byte & 0x0f)]));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::hex;

    #[test]
    fn hex_is_lowercase_and_zero_padded() {
        assert_eq!(hex(&[]), "");
        assert_eq!(hex(&[0x00, 0x0a, 0xff, 0x10]), "000aff10");
    }
}
