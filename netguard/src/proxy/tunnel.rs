//! Bytes both ways between a client and a backend (a WebSocket or other `101` tunnel, a TLS
//! passthrough connection) until both have closed, one fails, or nothing has moved in either
//! direction for `proxy.tunnel_idle_timeout_secs`.
//!
//! When one side finishes sending, what it sent is delivered and the other side's write half is
//! shut down (tokio's `copy_bidirectional`). Then, with [`Close::Either`] (WebSocket and other
//! `101` tunnels, as nginx does), the tunnel ends; with [`Close::Both`] (TLS passthrough, a
//! plain TCP relay) the other direction goes on until it finishes too.

use std::{
    io,
    pin::Pin,
    sync::atomic::{AtomicU64, Ordering},
    task::{Context, Poll},
    time::{Duration, Instant},
};

use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    sync::Notify,
};

/// How a tunnel ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// Both sides closed.
    Closed,
    /// Nothing moved for the idle timeout.
    Idle,
    /// A read or write failed (a reset, most often).
    Failed,
}

/// What went through a tunnel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Copied {
    /// Bytes read from the client (and written to the backend).
    pub up: u64,
    /// Bytes read from the backend.
    pub down: u64,
    pub ended: Ended,
}

/// When a tunnel ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Close {
    /// As soon as one direction has finished.
    Either,
    /// When both directions have finished.
    Both,
}

/// Copies between `client` and `backend` until the tunnel ends.
pub async fn run<C, B>(client: &mut C, backend: &mut B, idle: Duration, close: Close) -> Copied
where
    C: AsyncRead + AsyncWrite + Unpin + ?Sized,
    B: AsyncRead + AsyncWrite + Unpin + ?Sized,
{
    let base = Instant::now();
    // Milliseconds since `base` of the last byte moved.
    let last = AtomicU64::new(0);
    // Signalled when a direction has finished (its write side shut down).
    let finished = Notify::new();
    let mut c = Tracked {
        io: client,
        last: &last,
        finished: &finished,
        base,
        read: 0,
    };
    let mut b = Tracked {
        io: backend,
        last: &last,
        finished: &finished,
        base,
        read: 0,
    };
    let ended = {
        let copy = tokio::io::copy_bidirectional(&mut c, &mut b);
        tokio::pin!(copy);
        loop {
            let deadline = base + Duration::from_millis(last.load(Ordering::Relaxed)) + idle;
            tokio::select! {
                done = &mut copy => break if done.is_ok() { Ended::Closed } else { Ended::Failed },
                _ = finished.notified(), if close == Close::Either => break Ended::Closed,
                _ = tokio::time::sleep_until(deadline.into()) => {
                    let quiet_since = base + Duration::from_millis(last.load(Ordering::Relaxed));
                    if quiet_since.elapsed() >= idle {
                        break Ended::Idle;
                    }
                }
            }
        }
    };
    Copied {
        up: c.read,
        down: b.read,
        ended,
    }
}

/// A stream that notes when bytes move and counts what is read from it.
struct Tracked<'a, S: ?Sized> {
    io: &'a mut S,
    last: &'a AtomicU64,
    finished: &'a Notify,
    base: Instant,
    read: u64,
}

impl<S: ?Sized> Tracked<'_, S> {
    fn touch(&self) {
        let ms = u64::try_from(self.base.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last.store(ms, Ordering::Relaxed);
    }
}

impl<S: AsyncRead + Unpin + ?Sized> AsyncRead for Tracked<'_, S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let poll = Pin::new(&mut *this.io).poll_read(cx, buf);
        let n = buf.filled().len() - before;
        if n > 0 {
            this.read += n as u64;
            this.touch();
        }
        poll
    }
}

impl<S: AsyncWrite + Unpin + ?Sized> AsyncWrite for Tracked<'_, S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let poll = Pin::new(&mut *this.io).poll_write(cx, data);
        if matches!(poll, Poll::Ready(Ok(n)) if n > 0) {
            this.touch();
        }
        poll
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let poll = Pin::new(&mut *this.io).poll_shutdown(cx);
        if poll.is_ready() {
            this.finished.notify_one();
        }
        poll
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt, duplex};

    use super::*;

    #[tokio::test]
    async fn copies_both_ways_and_ends_when_idle() {
        let idle = Duration::from_millis(400);
        let (mut client, mut client_far) = duplex(1024);
        let (mut backend, mut backend_far) = duplex(1024);
        let tunnel =
            tokio::spawn(
                async move { run(&mut client_far, &mut backend_far, idle, Close::Both).await },
            );
        client.write_all(b"ping").await.unwrap();
        let mut got = [0u8; 4];
        backend.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"ping");
        // Activity within the idle time keeps the tunnel open past it.
        for _ in 0..3 {
            tokio::time::sleep(idle / 4).await;
            backend.write_all(b"pong!").await.unwrap();
            let mut got = [0u8; 5];
            client.read_exact(&mut got).await.unwrap();
            assert_eq!(&got, b"pong!");
        }
        assert!(!tunnel.is_finished());
        let copied = tokio::time::timeout(Duration::from_secs(5), tunnel)
            .await
            .expect("ends once idle")
            .unwrap();
        assert_eq!(
            copied,
            Copied {
                up: 4,
                down: 15,
                ended: Ended::Idle
            }
        );
    }

    #[tokio::test]
    async fn either_ends_when_one_side_closes_after_delivering_its_bytes() {
        let (mut client, mut client_far) = duplex(1024);
        let (mut backend, mut backend_far) = duplex(1024);
        let tunnel = tokio::spawn(async move {
            let idle = Duration::from_secs(60);
            run(&mut client_far, &mut backend_far, idle, Close::Either).await
        });
        backend.write_all(b"last words").await.unwrap();
        backend.shutdown().await.unwrap();
        let copied = tokio::time::timeout(Duration::from_secs(5), tunnel)
            .await
            .expect("ends without the client closing")
            .unwrap();
        assert_eq!((copied.down, copied.ended), (10, Ended::Closed));
        let mut got = Vec::new();
        client.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"last words");
    }

    #[tokio::test]
    async fn both_ends_when_both_sides_close() {
        let (mut client, mut client_far) = duplex(1024);
        let (mut backend, mut backend_far) = duplex(1024);
        let tunnel = tokio::spawn(async move {
            let idle = Duration::from_secs(60);
            run(&mut client_far, &mut backend_far, idle, Close::Both).await
        });
        client.write_all(b"bye").await.unwrap();
        client.shutdown().await.unwrap();
        let mut got = Vec::new();
        backend.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"bye", "the client's half-close reaches the backend");
        backend.write_all(b"ok").await.unwrap();
        backend.shutdown().await.unwrap();
        let mut got = Vec::new();
        client.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"ok");
        let copied = tunnel.await.unwrap();
        assert_eq!(
            (copied.up, copied.down, copied.ended),
            (3, 2, Ended::Closed)
        );
    }
}
