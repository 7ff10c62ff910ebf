//! Backends: which to try, in what order, and connecting with retries.
//!
//! Load balancing is **round-robin** over an app's backends that are not ejected: each request
//! starts one position further along the list. A backend whose connect is refused or times out,
//! or that drops the connection before the request head is written, is **ejected** for
//! `backend_eject_secs` and the request moves on to the next live backend; nothing of the body
//! has been read from the client at that point, so the retry is always safe. Every live backend
//! is tried at most once per request. An app with no live backend answers 503. Ejections survive
//! reloads (they are kept per address).
//!
//! With keep-alive pooling on (see [`super::pool`]), [`send`] first tries an idle connection
//! to the backend round-robin chose; a pooled connection whose write fails is closed and the
//! next one (or a fresh connect) is used, without ejecting the backend: an idle connection the
//! backend closed says nothing about its health.

use std::{
    collections::HashMap,
    io,
    net::SocketAddr,
    sync::{Mutex, PoisonError, atomic::Ordering},
    time::{Duration, Instant},
};

use tokio::{io::AsyncWriteExt, net::TcpStream};

use super::{
    pool::{Pool, PoolLimits},
    state::App,
};

/// Ejected backends and until when.
#[derive(Debug, Default)]
pub struct Health {
    ejected: Mutex<HashMap<SocketAddr, Instant>>,
}

impl Health {
    pub fn is_live(&self, backend: SocketAddr, now: Instant) -> bool {
        let mut ejected = self.ejected.lock().unwrap_or_else(PoisonError::into_inner);
        match ejected.get(&backend) {
            Some(&until) if until > now => false,
            Some(_) => {
                ejected.remove(&backend);
                true
            }
            None => true,
        }
    }

    pub fn eject(&self, backend: SocketAddr, until: Instant) {
        self.ejected
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(backend, until);
    }
}

/// The live backends of `app`, in the order this request tries them.
pub fn candidates(app: &App, health: &Health, now: Instant) -> Vec<SocketAddr> {
    let n = app.backends.len();
    if n == 0 {
        return Vec::new();
    }
    let start = app.next.fetch_add(1, Ordering::Relaxed) % n;
    (0..n)
        .map(|i| app.backends[(start + i) % n])
        .filter(|&b| health.is_live(b, now))
        .collect()
}

/// Why no backend took the request.
#[derive(Debug)]
pub enum ConnectError {
    /// Refused, reset, unreachable: 502.
    Failed(io::Error),
    /// The connect timed out: 504.
    TimedOut,
}

/// A backend connection that has taken the request head.
#[derive(Debug)]
pub struct Sent {
    pub stream: TcpStream,
    pub addr: SocketAddr,
    /// Taken from the pool: the backend may have closed it while it was idle.
    pub reused: bool,
}

/// Sends `head` over an idle pooled connection to the first candidate when `pool` is given and
/// has one, else as [`connect_and_send`] does.
pub async fn send(
    candidates: &[SocketAddr],
    head: &[u8],
    connect_timeout: Duration,
    eject_for: Duration,
    health: &Health,
    pool: Option<(&Pool, &PoolLimits)>,
) -> Result<Sent, (ConnectError, Option<SocketAddr>)> {
    if let (Some((pool, limits)), Some(&first)) = (pool, candidates.first()) {
        while let Some(mut stream) = pool.take(first, Instant::now(), limits) {
            if let Ok(Ok(())) = tokio::time::timeout(connect_timeout, stream.write_all(head)).await
            {
                return Ok(Sent {
                    stream,
                    addr: first,
                    reused: true,
                });
            }
            tracing::debug!(backend = %first, "pooled backend connection failed on write");
        }
    }
    let (stream, addr) =
        connect_and_send(candidates, head, connect_timeout, eject_for, health).await?;
    Ok(Sent {
        stream,
        addr,
        reused: false,
    })
}

/// Connects to the first candidate that accepts and takes `head`; ejects the ones that fail.
/// On failure returns the last error and the last backend tried.
pub async fn connect_and_send(
    candidates: &[SocketAddr],
    head: &[u8],
    connect_timeout: Duration,
    eject_for: Duration,
    health: &Health,
) -> Result<(TcpStream, SocketAddr), (ConnectError, Option<SocketAddr>)> {
    let mut last = (ConnectError::Failed(io::ErrorKind::NotFound.into()), None);
    for &backend in candidates {
        let attempt = async {
            let mut stream = TcpStream::connect(backend).await?;
            let _ = stream.set_nodelay(true);
            stream.write_all(head).await?;
            Ok::<_, io::Error>(stream)
        };
        match tokio::time::timeout(connect_timeout, attempt).await {
            Ok(Ok(stream)) => return Ok((stream, backend)),
            Ok(Err(e)) => {
                tracing::warn!(%backend, error = %e, "backend connect failed; ejected");
                last = (ConnectError::Failed(e), Some(backend));
            }
            Err(_) => {
                tracing::warn!(%backend, "backend connect timed out; ejected");
                last = (ConnectError::TimedOut, Some(backend));
            }
        }
        health.eject(backend, Instant::now() + eject_for);
    }
    Err(last)
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use super::*;

    fn app(backends: &[&str]) -> App {
        App {
            name: "a".into(),
            backends: backends.iter().map(|b| b.parse().unwrap()).collect(),
            next: AtomicUsize::new(0),
            force_https: false,
            tls: None,
        }
    }

    #[test]
    fn round_robin_skips_ejected_backends_until_they_expire() {
        let app = app(&["192.0.2.1:80", "192.0.2.2:80", "192.0.2.3:80"]);
        let health = Health::default();
        let now = Instant::now();
        let firsts: Vec<SocketAddr> = (0..3).map(|_| candidates(&app, &health, now)[0]).collect();
        assert_eq!(firsts, app.backends);
        assert_eq!(candidates(&app, &health, now).len(), 3);
        health.eject(app.backends[1], now + Duration::from_secs(10));
        let c = candidates(&app, &health, now);
        assert_eq!(c.len(), 2);
        assert!(!c.contains(&app.backends[1]));
        let later = now + Duration::from_secs(11);
        assert_eq!(candidates(&app, &health, later).len(), 3);
        assert!(candidates(&self::app(&[]), &health, now).is_empty());
    }
}
