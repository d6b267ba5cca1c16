//! A collector that blinks: a TCP proxy in front of a receiver which, when
//! told, goes away as a restarting collector does (its port refuses
//! connections, and those open are closed), then listens again on the same
//! port; or moves to another receiver, as a Service does when the replica
//! behind a connection is gone.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::task::AbortHandle;

use crate::listen;

/// A proxy on a loopback port of its own to `target`, until dropped.
#[derive(Debug)]
pub struct BlinkingProxy {
    address: SocketAddr,
    target: Arc<Mutex<SocketAddr>>,
    /// The accepting task and every connection's: aborted to go away.
    tasks: Arc<Mutex<Vec<AbortHandle>>>,
}

impl BlinkingProxy {
    /// Forwards connections to `target`.
    pub async fn start(target: SocketAddr) -> Self {
        let (listener, address) = listen().await;
        let proxy = Self {
            address,
            target: Arc::new(Mutex::new(target)),
            tasks: Arc::default(),
        };
        accept(listener, &proxy.target, &proxy.tasks);
        proxy
    }

    /// The endpoint for `OTEL_EXPORTER_OTLP_ENDPOINT`.
    #[must_use]
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.address)
    }

    /// Goes away now, back after `away`: meanwhile every connection is
    /// refused.
    pub fn away_for(&self, away: Duration) {
        self.close();
        let (address, target, tasks) = (
            self.address,
            Arc::clone(&self.target),
            Arc::clone(&self.tasks),
        );
        tokio::spawn(async move {
            tokio::time::sleep(away).await;
            let listener = TcpListener::bind(address).await;
            let listener = listener.unwrap_or_else(|error| panic!("{address} again: {error}"));
            accept(listener, &target, &tasks);
        });
    }

    /// Sends new connections to `target` from now on.
    pub fn move_to(&self, target: SocketAddr) {
        *self.target.lock().unwrap_or_else(PoisonError::into_inner) = target;
    }

    fn close(&self) {
        let mut tasks = self.tasks.lock().unwrap_or_else(PoisonError::into_inner);
        tasks.drain(..).for_each(|task| task.abort());
    }
}

impl Drop for BlinkingProxy {
    fn drop(&mut self) {
        self.close();
    }
}

/// Accepts on `listener`, each connection copied both ways to `target` as
/// it is then.
fn accept(
    listener: TcpListener,
    target: &Arc<Mutex<SocketAddr>>,
    tasks: &Arc<Mutex<Vec<AbortHandle>>>,
) {
    let (registry, target) = (Arc::clone(tasks), Arc::clone(target));
    let accepting = tokio::spawn(async move {
        while let Ok((mut client, _)) = listener.accept().await {
            let to = *target.lock().unwrap_or_else(PoisonError::into_inner);
            let Ok(mut server) = TcpStream::connect(to).await else {
                continue;
            };
            let forwarding = tokio::spawn(async move {
                let _closed = tokio::io::copy_bidirectional(&mut client, &mut server).await;
            });
            let mut tasks = registry.lock().unwrap_or_else(PoisonError::into_inner);
            tasks.push(forwarding.abort_handle());
        }
    });
    let mut tasks = tasks.lock().unwrap_or_else(PoisonError::into_inner);
    tasks.push(accepting.abort_handle());
}
