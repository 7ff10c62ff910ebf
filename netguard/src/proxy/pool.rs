//! Idle keep-alive connections to backends, kept per backend address for the next request.
//!
//! A connection goes back into the pool only after a response whose end was known from its
//! framing (Content-Length, chunked, or no body) was read completely, with no byte after it, and
//! whose backend did not say `Connection: close` (see `conn`). It is taken back out newest first
//! (the one least likely to have been closed by the backend's own idle timeout), after a
//! check of its read readiness (a peek when that is inconclusive, see `is_quiet`): a connection
//! with unread bytes or an end-of-stream waiting is discarded
//! instead of used, so a response nobody asked for can never be read as the answer to a new
//! request.
//!
//! Bounds: `per_backend` idle connections per address and `total` overall (the oldest idle one
//! of a backend makes room for a newer one; a full pool refuses), each idle at most
//! `idle_timeout` — shorter than backends' own keep-alive timeouts (nginx 75 s, Node 5 s, gunicorn
//! 2 s are common: set it below the shortest one you run) so that the proxy closes first. A
//! reaper drops expired connections every second. Connections to backends removed by a reload
//! simply expire.

use std::{
    collections::{HashMap, VecDeque},
    io,
    mem::MaybeUninit,
    net::SocketAddr,
    sync::{Mutex, PoisonError},
    task::{Context, Poll, Waker},
    time::{Duration, Instant},
};

use socket2::SockRef;
use tokio::net::TcpStream;

/// The pool's bounds, from `proxy.backend_pool_*`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolLimits {
    /// Idle connections kept per backend address; 0 turns pooling off.
    pub per_backend: usize,
    /// Idle connections kept over all backends.
    pub total: usize,
    pub idle_timeout: Duration,
}

impl PoolLimits {
    pub fn enabled(&self) -> bool {
        self.per_backend > 0 && self.total > 0
    }
}

struct Entry {
    stream: TcpStream,
    since: Instant,
}

#[derive(Default)]
struct Idle {
    /// Oldest first.
    by_backend: HashMap<SocketAddr, VecDeque<Entry>>,
    total: usize,
}

/// Idle backend connections (see the module docs).
#[derive(Default)]
pub struct Pool {
    idle: Mutex<Idle>,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("idle", &self.idle_count())
            .finish()
    }
}

impl Pool {
    /// The newest idle connection to `backend` that is still quiet (no bytes, no close pending).
    pub fn take(
        &self,
        backend: SocketAddr,
        now: Instant,
        limits: &PoolLimits,
    ) -> Option<TcpStream> {
        // Discarded connections are closed after the lock is released.
        let mut discarded = Vec::new();
        let found = {
            let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
            let mut found = None;
            let mut taken = 0;
            if let Some(queue) = idle.by_backend.get_mut(&backend) {
                let before = queue.len();
                while let Some(entry) = queue.pop_back() {
                    if now.saturating_duration_since(entry.since) >= limits.idle_timeout {
                        // Everything older is expired as well.
                        discarded.push(entry.stream);
                        discarded.extend(queue.drain(..).map(|e| e.stream));
                        break;
                    }
                    if is_quiet(&entry.stream) {
                        found = Some(entry.stream);
                        break;
                    }
                    discarded.push(entry.stream);
                }
                taken = before - queue.len();
                if queue.is_empty() {
                    idle.by_backend.remove(&backend);
                }
            }
            idle.total = idle.total.saturating_sub(taken);
            found
        };
        drop(discarded);
        found
    }

    /// Keeps `stream` for the next request to `backend`; `false` (and the stream is closed)
    /// when pooling is off or the pool is full.
    pub fn put(
        &self,
        backend: SocketAddr,
        stream: TcpStream,
        now: Instant,
        limits: &PoolLimits,
    ) -> bool {
        if !limits.enabled() {
            return false;
        }
        let mut evicted = None;
        let kept = {
            let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
            let queue_len = idle.by_backend.get(&backend).map_or(0, VecDeque::len);
            if queue_len >= limits.per_backend {
                // Room for the newer connection: the backend's oldest one goes.
                if let Some(queue) = idle.by_backend.get_mut(&backend) {
                    evicted = queue.pop_front().map(|e| e.stream);
                }
                idle.total = idle.total.saturating_sub(usize::from(evicted.is_some()));
            }
            if idle.total >= limits.total {
                false
            } else {
                idle.by_backend
                    .entry(backend)
                    .or_default()
                    .push_back(Entry { stream, since: now });
                idle.total += 1;
                true
            }
        };
        drop(evicted);
        kept
    }

    /// Closes connections idle for `idle_timeout` or longer; returns how many.
    pub fn reap(&self, now: Instant, idle_timeout: Duration) -> usize {
        let mut expired = Vec::new();
        {
            let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
            idle.by_backend.retain(|_, queue| {
                while queue
                    .front()
                    .is_some_and(|e| now.saturating_duration_since(e.since) >= idle_timeout)
                {
                    if let Some(e) = queue.pop_front() {
                        expired.push(e.stream);
                    }
                }
                !queue.is_empty()
            });
            idle.total = idle.total.saturating_sub(expired.len());
        }
        expired.len()
    }

    /// Closes every idle connection (on shutdown).
    pub fn clear(&self) {
        let all = std::mem::take(&mut *self.idle.lock().unwrap_or_else(PoisonError::into_inner));
        drop(all.by_backend);
    }

    /// Idle connections now.
    pub fn idle_count(&self) -> usize {
        self.idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .total
    }
}

/// Nothing to read and no end-of-stream pending. Bytes or a close waiting mean the backend is
/// done with this connection.
///
/// The event loop already knows, without a system call (as nginx's idle upstream connections
/// do): tokio clears a socket's read readiness when a read comes back short or would block, so
/// a connection with no readiness since its response was read has had nothing arrive, not even
/// a FIN, as of the worker's last poll of its events. Readiness left from a read that filled
/// its buffer exactly proves nothing either way: then a peek decides.
fn is_quiet(stream: &TcpStream) -> bool {
    let mut cx = Context::from_waker(Waker::noop());
    match stream.poll_read_ready(&mut cx) {
        Poll::Pending => true,
        Poll::Ready(Err(_)) => false,
        Poll::Ready(Ok(())) => peek_is_quiet(stream),
    }
}

/// A peek on the (non-blocking) socket would block.
fn peek_is_quiet(stream: &TcpStream) -> bool {
    let mut byte = [MaybeUninit::<u8>::uninit(); 1];
    matches!(SockRef::from(stream).peek(&mut byte), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
}

#[cfg(test)]
mod tests {
    use tokio::{
        io::AsyncWriteExt,
        net::{TcpListener, TcpStream},
    };

    use super::*;

    const LIMITS: PoolLimits = PoolLimits {
        per_backend: 2,
        total: 3,
        idle_timeout: Duration::from_secs(30),
    };

    /// A connected pair: (client side, server side).
    async fn pair(listener: &TcpListener) -> (TcpStream, TcpStream) {
        let client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (server, _) = listener.accept().await.unwrap();
        (client, server)
    }

    fn port_of(s: &TcpStream) -> u16 {
        s.local_addr().unwrap().port()
    }

    #[tokio::test]
    async fn newest_first_bounded_per_backend_and_in_total() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let pool = Pool::default();
        let now = Instant::now();
        let a: SocketAddr = "192.0.2.1:80".parse().unwrap();
        let b: SocketAddr = "192.0.2.2:80".parse().unwrap();
        let mut servers = Vec::new();
        let mut ports = Vec::new();
        for _ in 0..3 {
            let (c, s) = pair(&listener).await;
            ports.push(port_of(&c));
            servers.push(s);
            assert!(pool.put(a, c, now, &LIMITS));
        }
        // Per-backend bound: the oldest of a's three went.
        assert_eq!(pool.idle_count(), 2);
        let (c, s) = pair(&listener).await;
        servers.push(s);
        assert!(pool.put(b, c, now, &LIMITS), "third overall fits");
        let (c, s) = pair(&listener).await;
        servers.push(s);
        assert!(!pool.put(b, c, now, &LIMITS), "total bound refuses");
        assert_eq!(pool.idle_count(), 3);
        let newest = pool.take(a, now, &LIMITS).expect("pooled");
        assert_eq!(port_of(&newest), ports[2], "newest first");
        let next = pool.take(a, now, &LIMITS).expect("pooled");
        assert_eq!(port_of(&next), ports[1]);
        assert!(pool.take(a, now, &LIMITS).is_none());
        assert_eq!(pool.idle_count(), 1);
        let off = PoolLimits {
            per_backend: 0,
            ..LIMITS
        };
        assert!(
            !pool.put(a, newest, now, &off),
            "per_backend 0: pooling off"
        );
    }

    #[tokio::test]
    async fn expired_closed_and_chatty_connections_are_not_handed_out() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let pool = Pool::default();
        let now = Instant::now();
        let a: SocketAddr = "192.0.2.1:80".parse().unwrap();

        let (c, _s) = pair(&listener).await;
        assert!(pool.put(a, c, now, &LIMITS));
        let later = now + LIMITS.idle_timeout;
        assert!(pool.take(a, later, &LIMITS).is_none(), "expired");
        assert_eq!(pool.idle_count(), 0);

        let (c, s) = pair(&listener).await;
        assert!(pool.put(a, c, now, &LIMITS));
        drop(s);
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(
            pool.take(a, now, &LIMITS).is_none(),
            "closed by the backend"
        );

        let (c, mut s) = pair(&listener).await;
        assert!(pool.put(a, c, now, &LIMITS));
        s.write_all(b"HTTP/1.1 200 OK\r\n\r\n").await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(pool.take(a, now, &LIMITS).is_none(), "unsolicited bytes");
        assert_eq!(pool.idle_count(), 0);

        // Readiness left set by a read that filled its buffer exactly: the peek finds the
        // connection quiet, and it is handed out.
        let (mut c, mut s) = pair(&listener).await;
        s.write_all(b"HTTP").await.unwrap();
        let mut four = [0u8; 4];
        tokio::io::AsyncReadExt::read_exact(&mut c, &mut four)
            .await
            .unwrap();
        let mut cx = Context::from_waker(Waker::noop());
        assert!(c.poll_read_ready(&mut cx).is_ready(), "readiness still set");
        assert!(pool.put(a, c, now, &LIMITS));
        assert!(pool.take(a, now, &LIMITS).is_some(), "quiet after the peek");
        // And with nothing ever read, nothing is ready: quiet without a peek.
        let (c, _s) = pair(&listener).await;
        let mut cx = Context::from_waker(Waker::noop());
        assert!(c.poll_read_ready(&mut cx).is_pending());
        assert!(pool.put(a, c, now, &LIMITS));
        assert!(pool.take(a, now, &LIMITS).is_some(), "quiet");

        let (c, _s) = pair(&listener).await;
        assert!(pool.put(a, c, now, &LIMITS));
        let (c, _s2) = pair(&listener).await;
        assert!(pool.put(a, c, now + Duration::from_secs(20), &LIMITS));
        assert_eq!(
            pool.reap(now + Duration::from_secs(31), LIMITS.idle_timeout),
            1
        );
        assert_eq!(pool.idle_count(), 1);
        pool.clear();
        assert_eq!(pool.idle_count(), 0);
    }
}
