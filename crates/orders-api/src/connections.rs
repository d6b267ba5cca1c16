//! The server's connections: bounded in number and in time, so that clients
//! who open connections and send nothing cannot lock out the others.
//!
//! A new connection must send its first request's headers within the
//! header-read timeout; a kept-alive one, its next request's headers within
//! the idle timeout of its last answer; every body comes within the body-read
//! timeout. At the connection limit, a new connection makes room by closing
//! the oldest one that is not handling a request (one that sent nothing at
//! once; one that did, once its last answer is written), as nginx reuses its
//! idle connections.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
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
    pub idle_timeout: Duration,
    pub body_read_timeout: Duration,
}

/// The deadline for reading a request's body, for the extractor that reads it.
#[derive(Debug, Clone, Copy)]
pub struct BodyReadTimeout(pub Duration);

/// What one connection is doing: requests in hand, and whether it sent any.
#[derive(Debug, Default)]
struct Activity {
    in_hand: AtomicUsize,
    requested: AtomicBool,
}

/// One open connection, and how to close it: at once, or after its answer.
#[derive(Debug)]
struct Open {
    activity: Arc<Activity>,
    task: AbortHandle,
    evict: CancellationToken,
}

/// The open connections by age (ids grow), and a signal when one closes or
/// finishes a request.
#[derive(Debug, Default)]
struct Connections {
    open: Mutex<BTreeMap<u64, Open>>,
    changed: Arc<Notify>,
}

impl Connections {
    fn open(&self) -> MutexGuard<'_, BTreeMap<u64, Open>> {
        self.open.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Closes the oldest connection that is between requests; false if every
    /// connection is handling one.
    fn close_oldest_idle(&self) -> bool {
        let mut open = self.open();
        let idle = open
            .iter()
            .find(|(_, open)| open.activity.in_hand.load(Ordering::Acquire) == 0)
            .map(|(id, _)| *id);
        let Some(connection) = idle.and_then(|id| open.remove(&id)) else {
            return false;
        };
        // One that answered may still be writing its last answer: hyper closes
        // it once that is sent.
        if connection.activity.requested.load(Ordering::Acquire) {
            connection.evict.cancel();
        } else {
            connection.task.abort();
        }
        true
    }

    /// Returns once the open connections are fewer than `max`, closing the
    /// oldest idle one if need be, or waiting for one to become idle.
    async fn make_room(&self, max: usize) {
        loop {
            let changed = self.changed.notified();
            if self.open().len() < max || self.close_oldest_idle() {
                return;
            }
            changed.await;
        }
    }

    fn remove(&self, id: u64) {
        self.open().remove(&id);
        self.changed.notify_waiters();
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
        let accepted = tokio::select! {
            () = stop.cancelled() => break,
            accepted = async {
                let accepted = listener.accept().await;
                connections.make_room(limits.max_connections).await;
                accepted
            } => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(error) if out_of_descriptors(&error) => {
                tracing::warn!(%error, "accepting a connection failed: closing an idle one");
                connections.close_oldest_idle();
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
            Err(error) => {
                tracing::debug!(%error, "accepting a connection failed");
                continue;
            }
        };
        let activity = Arc::new(Activity::default());
        let evict = stop.child_token();
        let changed = Arc::clone(&connections.changed);
        let connection =
            serve_connection(stream, peer, &router, limits, &activity, &evict, changed);
        let mut open = connections.open();
        let finished = Arc::clone(&connections);
        let task = tasks.spawn(async move {
            connection.await;
            finished.remove(id);
        });
        let task = task.abort_handle();
        open.insert(
            id,
            Open {
                activity,
                task,
                evict,
            },
        );
    }
    tasks.close();
    tasks
}

/// EMFILE or ENFILE: the process or the system is out of file descriptors.
fn out_of_descriptors(error: &std::io::Error) -> bool {
    matches!(error.raw_os_error(), Some(23 | 24))
}

/// Serves one connection; once `goodbye` is cancelled (shutdown, or eviction),
/// finishes the request in hand and closes.
fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    router: &Router,
    limits: ConnectionLimits,
    activity: &Arc<Activity>,
    goodbye: &CancellationToken,
    changed: Arc<Notify>,
) -> impl Future<Output = ()> + Send + 'static {
    if let Err(error) = stream.set_nodelay(true) {
        tracing::debug!(%error, "TCP_NODELAY not set");
    }
    let (router, goodbye, activity) = (router.clone(), goodbye.clone(), Arc::clone(activity));
    let body_read_timeout = BodyReadTimeout(limits.body_read_timeout);
    let in_service = Arc::clone(&activity);
    let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
        let in_hand = InHand::new(&in_service, &changed);
        request.extensions_mut().insert(ConnectInfo(peer));
        request.extensions_mut().insert(body_read_timeout);
        let answer = router.clone().oneshot(request.map(Body::new));
        async move {
            let _in_hand = in_hand;
            answer.await
        }
    });
    // hyper times the wait for each request's headers from the connection's
    // last answer (or its opening): the idle timeout. The first request has
    // the shorter header-read timeout, below.
    let connection = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.idle_timeout)
        .serve_connection(TokioIo::new(stream), service);
    let first_request_late = async move {
        tokio::time::sleep(limits.header_read_timeout).await;
        if activity.requested.load(Ordering::Acquire) {
            std::future::pending::<()>().await;
        }
    };
    async move {
        tokio::pin!(connection);
        let served = async {
            tokio::select! {
                result = connection.as_mut() => result,
                () = goodbye.cancelled() => {
                    connection.as_mut().graceful_shutdown();
                    connection.as_mut().await
                }
            }
        };
        // Even while closing, a connection that never sent a request's headers
        // gets no longer than the header-read timeout.
        let result = tokio::select! {
            result = served => result,
            () = first_request_late => return,
        };
        if let Err(error) = result {
            tracing::debug!(%error, "connection closed");
        }
    }
}

/// Counts a request as in hand while it lives; says when none is left.
struct InHand(Arc<Activity>, Arc<Notify>);

impl InHand {
    fn new(activity: &Arc<Activity>, changed: &Arc<Notify>) -> Self {
        activity.requested.store(true, Ordering::Release);
        activity.in_hand.fetch_add(1, Ordering::AcqRel);
        Self(Arc::clone(activity), Arc::clone(changed))
    }
}

impl Drop for InHand {
    fn drop(&mut self) {
        if self.0.in_hand.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.1.notify_waiters();
        }
    }
}
