//! The accept loop of agentd's servers (the control socket, the metrics listener): each
//! connection served by a task of its own, either under a plain cap ([`Connections::accept_until`],
//! the metrics listener) or under the server's own admission ([`Connections::accept_each`], the
//! control socket's per-caller limits).
//!
//! A connection beyond the cap is not left waiting in the backlog: it is handed to a `refuse`
//! task that answers "busy" (503) and closes. Finished tasks are reaped as connections come, so
//! the set does not grow. An accept error (EMFILE and friends) backs off 100 ms instead of
//! spinning. [`Connections::drain`] gives open connections a bounded time to finish at shutdown,
//! then drops (aborts) the rest.

use std::future::Future;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;

/// How long to wait after a failed accept before the next one.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// A listening socket that hands out connected streams.
pub trait Listener {
    type Stream: Send + 'static;
    fn accept_stream(&self) -> impl Future<Output = io::Result<Self::Stream>> + Send;
}

impl Listener for tokio::net::TcpListener {
    type Stream = tokio::net::TcpStream;
    async fn accept_stream(&self) -> io::Result<Self::Stream> {
        self.accept().await.map(|(stream, _)| stream)
    }
}

impl Listener for tokio::net::UnixListener {
    type Stream = tokio::net::UnixStream;
    async fn accept_stream(&self) -> io::Result<Self::Stream> {
        self.accept().await.map(|(stream, _)| stream)
    }
}

/// The connection tasks of one server and the slots that cap them.
pub struct Connections {
    slots: Arc<Semaphore>,
    max: usize,
    tasks: JoinSet<()>,
    /// Names the server in the log: "control", "metrics".
    what: &'static str,
}

impl Connections {
    pub fn new(max: usize, what: &'static str) -> Connections {
        Connections {
            slots: Arc::new(Semaphore::new(max)),
            max,
            tasks: JoinSet::new(),
            what,
        }
    }

    /// Accepts on `listener` until `stop` completes. A connection that gets a slot becomes the
    /// task `serve` returns (holding the permit frees the slot when it ends; `None`: close it);
    /// one that does not becomes the task `refuse` returns.
    pub async fn accept_until<L, S, R>(
        &mut self,
        listener: &L,
        stop: impl Future<Output = ()>,
        mut serve: impl FnMut(L::Stream, OwnedSemaphorePermit) -> Option<S>,
        mut refuse: impl FnMut(L::Stream) -> R,
    ) where
        L: Listener,
        S: Future<Output = ()> + Send + 'static,
        R: Future<Output = ()> + Send + 'static,
    {
        let slots = Arc::clone(&self.slots);
        let (max, what) = (self.max, self.what);
        let admit = |stream| match Arc::clone(&slots).try_acquire_owned() {
            Ok(permit) => serve(stream, permit).map(futures_util::future::Either::Left),
            Err(_) => {
                tracing::warn!(max, "{what} client refused: too many clients");
                Some(futures_util::future::Either::Right(refuse(stream)))
            }
        };
        self.accept_each(listener, stop, admit).await;
    }

    /// Accepts on `listener` until `stop` completes; `admit` decides what becomes of each
    /// connection: the task that serves or refuses it, or `None` to close it at once. For
    /// servers that keep their own limits (the control socket's per-caller admission).
    pub async fn accept_each<L, T>(
        &mut self,
        listener: &L,
        stop: impl Future<Output = ()>,
        mut admit: impl FnMut(L::Stream) -> Option<T>,
    ) where
        L: Listener,
        T: Future<Output = ()> + Send + 'static,
    {
        tokio::pin!(stop);
        loop {
            let accepted = tokio::select! {
                accepted = listener.accept_stream() => accepted,
                () = &mut stop => return,
            };
            while self.tasks.try_join_next().is_some() {}
            match accepted {
                Ok(stream) => {
                    if let Some(task) = admit(stream) {
                        self.tasks.spawn(task);
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "{} accept failed", self.what);
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                }
            }
        }
    }

    /// Waits up to `timeout` for the open connections to finish, then closes the rest.
    pub async fn drain(mut self, timeout: Duration) {
        let all = async { while self.tasks.join_next().await.is_some() {} };
        if tokio::time::timeout(timeout, all).await.is_err() {
            tracing::warn!(
                "{} connections still open at shutdown; closing them",
                self.what
            );
        }
    }
}
