//! A client that asks and then stops reading must not hold its slot: hyper would wait forever
//! for room in the socket buffer (a status of a thousand probes is larger than it).
//! [`WriteStall`] wraps a connection's stream and fails a write, flush or shutdown that has
//! made no progress for `limit` with `TimedOut`; hyper then drops the connection. Only writes
//! are timed: hyper keeps a read pending while a handler runs (to notice a client that goes
//! away), and a slow reload is not the client's fault. Reads are bounded where they matter:
//! the head by `head_timeout`, the body by `request_timeout`.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

pub struct WriteStall<T> {
    inner: T,
    limit: Duration,
    /// Armed when a write first finds no room; disarmed by any progress.
    deadline: Pin<Box<Sleep>>,
    armed: bool,
}

impl<T> WriteStall<T> {
    pub fn new(inner: T, limit: Duration) -> WriteStall<T> {
        WriteStall {
            inner,
            limit,
            deadline: Box::pin(tokio::time::sleep(limit)),
            armed: false,
        }
    }

    /// What a write that returned `poll` amounts to, with the stall deadline applied.
    fn timed<R>(&mut self, cx: &mut Context<'_>, poll: Poll<io::Result<R>>) -> Poll<io::Result<R>> {
        if poll.is_ready() {
            self.armed = false;
            return poll;
        }
        if !self.armed {
            self.armed = true;
            let at = Instant::now() + self.limit;
            self.deadline.as_mut().reset(at);
        }
        match self.deadline.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!(
                    "the client read nothing of the response for {:?}",
                    self.limit
                ),
            ))),
            Poll::Pending => Poll::Pending,
        }
    }
}

/// Whether `err` (from hyper) is a write stall that [`WriteStall`] cut off.
pub fn is_stall(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut source = Some(err);
    while let Some(e) = source {
        if e.downcast_ref::<io::Error>()
            .is_some_and(|io| io.kind() == io::ErrorKind::TimedOut)
        {
            return true;
        }
        source = e.source();
    }
    false
}

impl<T: AsyncRead + Unpin> AsyncRead for WriteStall<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for WriteStall<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let poll = Pin::new(&mut this.inner).poll_write(cx, buf);
        this.timed(cx, poll)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let poll = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        this.timed(cx, poll)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let poll = Pin::new(&mut this.inner).poll_flush(cx);
        this.timed(cx, poll)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let poll = Pin::new(&mut this.inner).poll_shutdown(cx);
        this.timed(cx, poll)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    const LIMIT: Duration = Duration::from_secs(5);

    #[tokio::test(start_paused = true)]
    async fn a_response_nobody_reads_fails_after_the_limit() {
        let (server, _client) = tokio::io::duplex(64);
        let mut server = WriteStall::new(server, LIMIT);
        let start = Instant::now();
        let err = server.write_all(&[b'x'; 1024]).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert!(is_stall(&err));
        assert_eq!(start.elapsed(), LIMIT);
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_reader_that_keeps_reading_is_served_to_the_end() {
        let (server, mut client) = tokio::io::duplex(64);
        let mut server = WriteStall::new(server, LIMIT);
        let reader = tokio::spawn(async move {
            let mut got = Vec::new();
            let mut buf = [0u8; 64];
            loop {
                // Each read empties the buffer, 4 s apart: slower in total than the limit,
                // never stalled for as long as it.
                tokio::time::sleep(Duration::from_secs(4)).await;
                match client.read(&mut buf).await.unwrap() {
                    0 => return got,
                    n => got.extend_from_slice(&buf[..n]),
                }
            }
        });
        let start = Instant::now();
        server.write_all(&[b'x'; 512]).await.unwrap();
        server.shutdown().await.unwrap();
        assert!(start.elapsed() > LIMIT * 4);
        assert_eq!(reader.await.unwrap().len(), 512);
    }

    #[test]
    fn other_errors_are_not_stalls() {
        let err = io::Error::new(io::ErrorKind::BrokenPipe, "gone");
        assert!(!is_stall(&err));
    }
}
