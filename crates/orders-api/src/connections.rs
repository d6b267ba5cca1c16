//! The server's connections: bounded in number and in time, so that clients
//! who open connections and send nothing cannot lock out the others.
//!
//! A connection must send a request's headers within the header-read timeout
//! of opening or of its last answer (hyper counts the wait for the next request
//! of a kept-alive connection as header reading), and its body within the body
//! timeout. At the connection limit, a new connection makes room by closing
//! the oldest one that is not handling a request, as nginx reuses its idle
//! connections; the limit sits below the common 1,024 open-file limit.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio::task::AbortHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt as _;

/// How many connections, and for how long.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    pub max_connections: usize,
    pub header_read_timeout: Duration,
    pub body_read_timeout: Duration,
}

/// The deadline for reading a request's body, for the extractor that reads it.
#[derive(Debug, Clone, Copy)]
pub struct BodyReadTimeout(pub Duration);

/// One open connection: how many requests it is handling, and how to close it.
#[derive(Debug)]
struct Open {
    requests: Arc<AtomicUsize>,
    task: AbortHandle,
}

/// The open connections by age (ids grow), and a signal when one closes.
#[derive(Debug, Default)]
struct Connections {
    open: Mutex<BTreeMap<u64, Open>>,
    closed: Notify,
}

impl Connections {
    fn open(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, Open>> {
        self.open.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Closes the oldest connection that is between requests; false if every
    /// connection is handling one.
    fn close_oldest_idle(&self) -> bool {
        let mut open = self.open();
        let idle = open
            .iter()
            .find(|(_, connection)| connection.requests.load(Ordering::Acquire) == 0)
            .map(|(id, _)| *id);
        let closed = idle.and_then(|id| open.remove(&id));
        closed.map(|connection| connection.task.abort()).is_some()
    }

    /// Returns once there is room for one more connection under `max`.
    async fn make_room(&self, max: usize) {
        loop {
            let closed = self.closed.notified();
            if self.open().len() < max || self.close_oldest_idle() {
                return;
            }
            closed.await;
        }
    }

    fn remove(&self, id: u64) {
        self.open().remove(&id);
        self.closed.notify_waiters();
    }
}

/// Accepts connections on `listener` and serves `router` on each until `stop`
/// is cancelled; then asks each open connection to finish its request and
/// close. Returns the connections' tasks, to wait for.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ConnectionLimits,
    stop: CancellationToken,
) -> TaskTracker {
    let connections = Arc::new(Connections::default());
    let tasks = TaskTracker::new();
    for id in 0_u64.. {
        tokio::select! {
            () = stop.cancelled() => break,
            () = connections.make_room(limits.max_connections) => {}
        }
        let accepted = tokio::select! {
            () = stop.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                // Out of file descriptors, most likely: close one and retry soon.
                tracing::warn!(%error, "accepting a connection failed");
                connections.close_oldest_idle();
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let requests = Arc::new(AtomicUsize::new(0));
        let connection = serve_connection(stream, peer, &router, &limits, &requests, &stop);
        let mut open = connections.open();
        let finished = Arc::clone(&connections);
        let task = tasks.spawn(async move {
            connection.await;
            finished.remove(id);
        });
        open.insert(
            id,
            Open {
                requests,
                task: task.abort_handle(),
            },
        );
    }
    tasks.close();
    tasks
}

/// Serves one connection; on `stop`, finishes the request in hand and closes.
fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    router: &Router,
    limits: &ConnectionLimits,
    requests: &Arc<AtomicUsize>,
    stop: &CancellationToken,
) -> impl Future<Output = ()> + Send + 'static {
    if let Err(error) = stream.set_nodelay(true) {
        tracing::debug!(%error, "TCP_NODELAY not set");
    }
    let (router, requests, stop) = (router.clone(), Arc::clone(requests), stop.clone());
    let body_read_timeout = BodyReadTimeout(limits.body_read_timeout);
    let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
        let in_hand = InHand::new(&requests);
        request.extensions_mut().insert(ConnectInfo(peer));
        request.extensions_mut().insert(body_read_timeout);
        let answer = router.clone().oneshot(request.map(Body::new));
        async move {
            let _in_hand = in_hand;
            answer.await
        }
    });
    let connection = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .serve_connection(TokioIo::new(stream), service);
    async move {
        tokio::pin!(connection);
        let result = tokio::select! {
            result = connection.as_mut() => result,
            () = stop.cancelled() => {
                connection.as_mut().graceful_shutdown();
                connection.await
            }
        };
        if let Err(error) = result {
            tracing::debug!(%error, "connection closed");
        }
    }
}

/// Counts a request as in hand while it lives.
struct InHand(Arc<AtomicUsize>);

impl InHand {
    fn new(requests: &Arc<AtomicUsize>) -> Self {
        requests.fetch_add(1, Ordering::AcqRel);
        Self(Arc::clone(requests))
    }
}

impl Drop for InHand {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}
