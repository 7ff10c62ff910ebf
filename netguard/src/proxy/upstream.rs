//! Backends: which to try, in what order, and connecting with retries.
//!
//! Load balancing (`proxy.balance`) is **round-robin** by default over an app's backends that
//! are not ejected: each request starts one position further along the list. With
//! **least-connections** the live backends are tried in order of the requests this proxy has in
//! flight to them (a WebSocket tunnel counts for as long as it is open), fewest first; ties keep
//! the round-robin order, so equally loaded backends still take turns. A backend whose connect is refused or times out,
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
    sync::{
        Mutex, PoisonError,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use tokio::{io::AsyncWriteExt, net::TcpStream};

use super::{
    pool::{Pool, PoolLimits},
    state::App,
};
use crate::config::Balance;

/// Ejected backends and until when.
#[derive(Debug, Default)]
pub struct Health {
    ejected: Mutex<HashMap<SocketAddr, Instant>>,
    /// Entries in `ejected`: while none is, a request checks health without the lock.
    entries: AtomicUsize,
    /// Ejections since start (a metric).
    ejections: AtomicU64,
}

impl Health {
    pub fn is_live(&self, backend: SocketAddr, now: Instant) -> bool {
        if self.entries.load(Ordering::Acquire) == 0 {
            return true;
        }
        let mut ejected = self.ejected.lock().unwrap_or_else(PoisonError::into_inner);
        let live = match ejected.get(&backend) {
            Some(&until) if until > now => false,
            Some(_) => {
                ejected.remove(&backend);
                true
            }
            None => true,
        };
        self.entries.store(ejected.len(), Ordering::Release);
        live
    }

    /// Until when `backend` is skipped, if it is ejected now.
    pub fn ejected_until(&self, backend: SocketAddr, now: Instant) -> Option<Instant> {
        let ejected = self.ejected.lock().unwrap_or_else(PoisonError::into_inner);
        ejected.get(&backend).copied().filter(|&until| until > now)
    }

    pub fn ejections(&self) -> u64 {
        self.ejections.load(Ordering::Relaxed)
    }

    pub fn eject(&self, backend: SocketAddr, until: Instant) {
        self.ejections.fetch_add(1, Ordering::Relaxed);
        let mut ejected = self.ejected.lock().unwrap_or_else(PoisonError::into_inner);
        ejected.insert(backend, until);
        self.entries.store(ejected.len(), Ordering::Release);
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

/// The live backends of `app` in the order `balance` tries them.
pub fn ordered(
    app: &App,
    health: &Health,
    load: &Load,
    balance: Balance,
    now: Instant,
) -> Vec<SocketAddr> {
    let mut order = candidates(app, health, now);
    if balance == Balance::LeastConnections && order.len() > 1 {
        let active = load.active.lock().unwrap_or_else(PoisonError::into_inner);
        // Stable: equal counts keep the round-robin rotation.
        order.sort_by_key(|b| active.get(b).copied().unwrap_or(0));
    }
    order
}

/// Requests in flight per backend address, across snapshots.
#[derive(Debug, Default)]
pub struct Load {
    active: Mutex<HashMap<SocketAddr, usize>>,
}

impl Load {
    /// Counts a request to `backend` until the returned guard drops.
    pub fn track(self: &std::sync::Arc<Self>, backend: SocketAddr) -> InFlight {
        *self
            .active
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(backend)
            .or_insert(0) += 1;
        InFlight {
            load: self.clone(),
            backend,
        }
    }

    pub fn in_flight(&self, backend: SocketAddr) -> usize {
        self.active
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&backend)
            .copied()
            .unwrap_or(0)
    }
}

/// One request in flight to a backend; dropping it ends the count.
#[derive(Debug)]
pub struct InFlight {
    load: std::sync::Arc<Load>,
    backend: SocketAddr,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut active = self
            .load
            .active
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(n) = active.get_mut(&self.backend) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                active.remove(&self.backend);
            }
        }
    }
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

    #[test]
    fn least_connections_prefers_the_least_busy_and_rotates_ties() {
        let app = app(&["192.0.2.1:80", "192.0.2.2:80", "192.0.2.3:80"]);
        let [a, b, c] = [app.backends[0], app.backends[1], app.backends[2]];
        let health = Health::default();
        let load = std::sync::Arc::new(Load::default());
        let now = Instant::now();
        let lc = Balance::LeastConnections;
        // All idle: the rotation decides, as with round-robin.
        let firsts: Vec<SocketAddr> = (0..3)
            .map(|_| ordered(&app, &health, &load, lc, now)[0])
            .collect();
        assert_eq!(firsts, [a, b, c]);
        let busy_a = load.track(a);
        let busy_a2 = load.track(a);
        let busy_b = load.track(b);
        assert_eq!(load.in_flight(a), 2);
        for _ in 0..3 {
            assert_eq!(ordered(&app, &health, &load, lc, now), [c, b, a]);
        }
        // Round-robin ignores the load.
        let rr: Vec<SocketAddr> = (0..3)
            .map(|_| ordered(&app, &health, &load, Balance::RoundRobin, now)[0])
            .collect();
        assert_eq!(rr, [a, b, c]);
        drop((busy_a, busy_a2));
        assert_eq!(load.in_flight(a), 0);
        let order = ordered(&app, &health, &load, lc, now);
        assert_eq!(order[2], b, "b is the only busy one: last");
        // Ejected backends are left out whatever their load.
        health.eject(c, now + Duration::from_secs(10));
        assert_eq!(ordered(&app, &health, &load, lc, now).len(), 2);
        drop(busy_b);
    }
}
