//! What the services' tests share: a real OTLP receiver, the binaries run as
//! processes, the environment `docker-compose.yml` gives them as Compose
//! itself reads it, and the settings that point a binary at a test's
//! database and receiver. Test-only: a dev-dependency, never a dependency of
//! the services.

mod compose;
mod otlp;
mod process;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use sqlx::{ConnectOptions as _, PgPool};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

pub use compose::{assert_reads_every_variable, compose_environment, repository_root};
pub use otlp::{OtlpReceiver, ReceivedSpan, body, hex, named, string};
pub use process::{Exited, Process, WAIT};

/// The binary under test: the build the environment variable `variable`
/// names (CI: the release build, the one compose runs), else `cargo_built`,
/// the one cargo built for this test run (`env!("CARGO_BIN_EXE_<name>")`).
#[must_use]
pub fn binary(variable: &str, cargo_built: &str) -> PathBuf {
    std::env::var_os(variable).map_or_else(|| PathBuf::from(cargo_built), PathBuf::from)
}

/// The URL of the per-test database `#[sqlx::test]` created, with every
/// connect option of its pool (password and TLS mode included).
#[must_use]
pub fn database_url(pool: &PgPool) -> String {
    pool.connect_options().to_url_lossy().to_string()
}

/// A port on 127.0.0.1 that was free a moment ago.
#[must_use]
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .unwrap_or_else(|error| panic!("no free port: {error}"))
        .port()
}

/// Start-ups whose database cannot be had: a refused port, and a database
/// that does not exist on `pool`'s server. Each is the environment (with an
/// acquire timeout far longer than a refused connection takes, and no
/// telemetry) and the one line a service must print for it.
#[must_use]
pub fn unreachable_databases(pool: &PgPool) -> [(Vec<(&'static str, String)>, String); 2] {
    let server = (*pool.connect_options()).clone();
    let (host, port, refused) = (server.get_host().to_owned(), server.get_port(), free_port());
    let env = |options: sqlx::postgres::PgConnectOptions| {
        vec![
            ("DATABASE_URL", options.to_url_lossy().to_string()),
            ("DATABASE_ACQUIRE_TIMEOUT_SECS", "20".to_owned()),
            ("OTEL_SDK_DISABLED", "true".to_owned()),
        ]
    };
    [
        (
            env(server.clone().port(refused)),
            format!(
                "cannot connect to PostgreSQL at {host}:{refused} (DATABASE_URL): connection refused"
            ),
        ),
        (
            env(server.database("orders_nope")),
            format!(
                "database \"orders_nope\" does not exist on {host}:{port} (DATABASE_URL): create it with CREATE DATABASE \"orders_nope\";"
            ),
        ),
    ]
}

/// The database, and export to `receiver` over `protocol` (`grpc` or
/// `http/protobuf`): spans sent 100 ms after they end, metrics every second.
#[must_use]
pub fn otel_env(
    pool: &PgPool,
    receiver: &OtlpReceiver,
    protocol: &str,
) -> Vec<(&'static str, String)> {
    vec![
        ("DATABASE_URL", database_url(pool)),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint(protocol)),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", protocol.to_owned()),
        ("OTEL_BSP_SCHEDULE_DELAY", "100".to_owned()),
        ("OTEL_METRIC_EXPORT_INTERVAL", "1000".to_owned()),
    ]
}

/// A port on 127.0.0.1 that accepts connections and never answers, until
/// dropped: a hung collector, or a hung database.
#[derive(Debug)]
pub struct Silent {
    pub address: SocketAddr,
    accepted: Arc<AtomicUsize>,
    holding: JoinHandle<()>,
}

impl Silent {
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|error| panic!("{error}"));
        let address = listener
            .local_addr()
            .unwrap_or_else(|error| panic!("{error}"));
        let accepted = Arc::new(AtomicUsize::new(0));
        let counted = Arc::clone(&accepted);
        let holding = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((connection, _)) = listener.accept().await {
                held.push(connection);
                counted.fetch_add(1, Ordering::Relaxed);
            }
        });
        Self {
            address,
            accepted,
            holding,
        }
    }

    /// Connections accepted so far.
    #[must_use]
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::Relaxed)
    }
}

impl Drop for Silent {
    fn drop(&mut self) {
        self.holding.abort();
    }
}

/// Polls `check` every 20 ms until it holds; fails naming `what` after `timeout`.
pub async fn wait_until<F: Future<Output = bool>>(
    timeout: Duration,
    what: &str,
    mut check: impl FnMut() -> F,
) {
    let deadline = Instant::now() + timeout;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
