//! What the proxy runs on: an immutable [`Snapshot`] of routes and settings, swapped whole on
//! reload, and the [`Shared`] state that outlives snapshots (backend health, connection counts,
//! the router log).
//!
//! A connection loads the current snapshot at the start of every request, so after a reload new
//! requests (also on kept-alive connections) use the new routes while requests in flight finish
//! on the snapshot they started with.

use std::{
    collections::HashMap,
    net::{IpAddr, SocketAddr},
    sync::{
        Arc, Mutex, PoisonError, RwLock,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::Duration,
};

use ipnet::IpNet;
use tokio::sync::watch;

use super::{
    ProxyError,
    balance::Balancer,
    framing::HeadLimits,
    log::{Record, RouterLog},
    metrics::ProxyMetrics,
    pool::{Pool, PoolLimits},
    route::{Pattern, RouteTable},
    tls::{self, Site},
    upstream::{Health, Load},
};
use crate::config::{AppConfig, Balance, ProxyConfig, TlsMode};

/// The proxy's settings in the form the data path uses.
#[derive(Debug, Clone)]
pub struct Settings {
    pub limits: HeadLimits,
    pub header_timeout: Duration,
    pub body_timeout: Duration,
    /// Bytes per second; 0: only `body_timeout` between reads.
    pub body_min_rate: u64,
    pub write_timeout: Duration,
    pub keepalive_timeout: Duration,
    pub connect_timeout: Duration,
    pub response_timeout: Duration,
    pub eject_for: Duration,
    /// WebSocket/`101` tunnels and TLS passthrough connections: longest time without a byte.
    pub tunnel_idle_timeout: Duration,
    pub max_connections: u32,
    pub max_connections_per_client: u32,
    pub trusted_proxies: Vec<IpNet>,
    /// The port in `https://` redirects.
    pub https_port: u16,
    /// Idle backend connections kept for reuse.
    pub pool: PoolLimits,
    pub balance: Balance,
}

impl Settings {
    pub fn from_config(c: &ProxyConfig) -> Settings {
        Settings {
            limits: HeadLimits {
                max_line: usize::try_from(c.max_header_line_bytes.0).unwrap_or(usize::MAX),
                max_section: usize::try_from(c.max_header_section_bytes.0).unwrap_or(usize::MAX),
                max_body: c.max_body_bytes.0,
            },
            header_timeout: c.header_read_timeout_secs.0,
            body_timeout: c.body_read_timeout_secs.0,
            body_min_rate: c.body_min_bytes_per_sec.0,
            write_timeout: c.client_write_timeout_secs.0,
            keepalive_timeout: c.keepalive_timeout_secs.0,
            connect_timeout: c.backend_connect_timeout_secs.0,
            response_timeout: c.backend_response_timeout_secs.0,
            eject_for: c.backend_eject_secs.0,
            tunnel_idle_timeout: c.tunnel_idle_timeout_secs.0,
            max_connections: c.max_connections,
            max_connections_per_client: c.max_connections_per_client,
            trusted_proxies: c.trusted_proxies.clone(),
            https_port: c.https_listen.port(),
            pool: PoolLimits {
                per_backend: c.backend_pool_max_idle_per_backend as usize,
                total: c.backend_pool_max_idle as usize,
                idle_timeout: c.backend_pool_idle_timeout_secs.0,
            },
            balance: c.balance,
        }
    }

    pub fn is_trusted(&self, addr: IpAddr) -> bool {
        self.trusted_proxies.iter().any(|n| n.contains(&addr))
    }
}

/// One app as the data path sees it.
#[derive(Debug)]
pub struct App {
    pub name: String,
    pub backends: Vec<SocketAddr>,
    /// Round-robin position.
    pub next: AtomicUsize,
    pub force_https: bool,
    pub tls: Option<TlsMode>,
}

/// Routes and settings, immutable once built.
#[derive(Debug)]
pub struct Snapshot {
    pub settings: Settings,
    pub apps: Vec<App>,
    pub routes: RouteTable<usize>,
    /// Certificates by SNI name (apps with `tls = "terminate"`).
    pub sites: RouteTable<Site>,
}

impl Snapshot {
    /// Builds from a validated config and loads the apps' certificates. Fails on certificate
    /// files, or on what validation also refuses (a second route for a name).
    pub fn build(config: &ProxyConfig, apps: &[AppConfig]) -> Result<Snapshot, ProxyError> {
        let mut entries = Vec::new();
        for (i, app) in apps.iter().enumerate() {
            for domain in &app.domains {
                let pattern = Pattern::parse(domain).map_err(ProxyError::Routes)?;
                entries.push((pattern, i));
            }
        }
        let routes = RouteTable::new(entries).map_err(ProxyError::Routes)?;
        let sites = tls::load_sites(apps).map_err(ProxyError::Tls)?;
        Ok(Snapshot {
            settings: Settings::from_config(config),
            apps: apps
                .iter()
                .map(|a| App {
                    name: a.name.clone(),
                    backends: a.backends.clone(),
                    next: AtomicUsize::new(0),
                    force_https: a.force_https,
                    tls: a.tls,
                })
                .collect(),
            routes,
            sites,
        })
    }
}

std::thread_local! {
    /// The index of the proxy worker running on this thread (see [`set_worker`]).
    static WORKER: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// Marks the calling thread as proxy worker `index`: its connections use that worker's pool
/// and metrics shard.
pub fn set_worker(index: usize) {
    WORKER.set(index);
}

/// The calling thread's worker index (0 off the worker threads).
pub fn worker() -> usize {
    WORKER.get()
}

/// The calling worker's entry of a per-worker table (the first one off the worker threads).
pub fn this_workers<T>(per_worker: &[T]) -> &T {
    &per_worker[worker().min(per_worker.len() - 1)]
}

/// State shared by every connection and every snapshot.
#[derive(Debug)]
pub struct Shared {
    /// Open client connections per worker, and where a worker hands a new one to another.
    pub balancer: Arc<Balancer>,
    snapshot: RwLock<Arc<Snapshot>>,
    /// The address of the snapshot in force: a connection checks that its own is still the
    /// one with a plain load, instead of taking the lock (shared by every worker) per request.
    current: AtomicUsize,
    pub health: Health,
    /// Requests in flight per backend address (for least-connections).
    pub load: Arc<Load>,
    /// Idle keep-alive connections to backends, one pool per worker (a connection belongs to
    /// its worker's event loop); kept across reloads (per address).
    pools: Box<[Pool]>,
    pub log: RouterLog,
    pub metrics: ProxyMetrics,
    connections: Mutex<Connections>,
    /// Set once when the proxy drains: kept-alive connections close after their current
    /// response, idle ones at once. One channel per worker: waiting on a shared one would put
    /// every request of every worker through the same waiter-list lock.
    draining: Box<[watch::Sender<bool>]>,
    /// `draining`'s value, read per request without the channel's lock.
    is_draining: AtomicBool,
}

#[derive(Debug, Default)]
struct Connections {
    total: u32,
    per_client: HashMap<IpAddr, u32>,
}

impl Shared {
    /// `workers`: how many worker threads will serve (each gets its own backend pool).
    pub fn new(snapshot: Snapshot, log: RouterLog, workers: usize) -> Shared {
        let snapshot = Arc::new(snapshot);
        Shared {
            balancer: Balancer::new(workers),
            current: AtomicUsize::new(Arc::as_ptr(&snapshot) as usize),
            snapshot: RwLock::new(snapshot),
            health: Health::default(),
            load: Arc::default(),
            pools: (0..workers.max(1)).map(|_| Pool::default()).collect(),
            log,
            metrics: ProxyMetrics::new(workers),
            connections: Mutex::new(Connections::default()),
            draining: (0..workers.max(1))
                .map(|_| watch::Sender::new(false))
                .collect(),
            is_draining: AtomicBool::new(false),
        }
    }

    /// The calling worker's backend pool (the first one off the worker threads).
    pub fn pool(&self) -> &Pool {
        this_workers(&self.pools)
    }

    /// Every worker's backend pool.
    pub fn pools(&self) -> &[Pool] {
        &self.pools
    }

    /// Starts draining (see [`Shared::draining`]).
    pub fn start_drain(&self) {
        self.is_draining.store(true, Ordering::Release);
        for worker in &self.draining {
            worker.send_replace(true);
        }
    }

    pub fn is_draining(&self) -> bool {
        self.is_draining.load(Ordering::Acquire)
    }

    /// A receiver whose value turns `true` when draining starts.
    pub fn draining(&self) -> watch::Receiver<bool> {
        this_workers(&self.draining).subscribe()
    }

    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// A request is over: its router log line and its metrics.
    pub fn finished(&self, record: &Record<'_>) {
        self.metrics
            .record(record.app, record.status, record.duration);
        self.log.write(record);
    }

    pub fn install(&self, snapshot: Snapshot) {
        let snapshot = Arc::new(snapshot);
        let mut slot = self
            .snapshot
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        self.current
            .store(Arc::as_ptr(&snapshot) as usize, Ordering::Release);
        *slot = snapshot;
    }

    /// The snapshot in force: `held` itself while no reload replaced it (no shared write).
    pub fn latest(&self, held: &Arc<Snapshot>) -> Option<Arc<Snapshot>> {
        if self.current.load(Ordering::Acquire) == Arc::as_ptr(held) as usize {
            None
        } else {
            Some(self.snapshot())
        }
    }

    /// Counts a new connection from `ip` against the caps; `None` when a cap is reached.
    pub fn admit(self: &Arc<Self>, ip: IpAddr, settings: &Settings) -> Option<Admitted> {
        let mut c = self
            .connections
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if c.total >= settings.max_connections {
            self.metrics.count_refused();
            return None;
        }
        let mine = c.per_client.entry(ip).or_insert(0);
        if *mine >= settings.max_connections_per_client {
            self.metrics.count_refused();
            return None;
        }
        *mine += 1;
        c.total += 1;
        Some(Admitted {
            shared: self.clone(),
            ip,
        })
    }

    /// Client connections open now.
    pub fn open_connections(&self) -> u32 {
        self.connections
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .total
    }
}

/// A counted connection; dropping it releases the count.
#[derive(Debug)]
pub struct Admitted {
    shared: Arc<Shared>,
    ip: IpAddr,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        let mut c = self
            .shared
            .connections
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        c.total = c.total.saturating_sub(1);
        if let Some(n) = c.per_client.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                c.per_client.remove(&self.ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_caps_total_and_per_client() {
        let config = ProxyConfig {
            max_connections: 3,
            max_connections_per_client: 2,
            ..ProxyConfig::default()
        };
        let snapshot = Snapshot::build(&config, &[]).unwrap();
        let settings = snapshot.settings.clone();
        let shared = Arc::new(Shared::new(snapshot, RouterLog::Off, 1));
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let a1 = shared.admit(a, &settings).expect("first");
        let _a2 = shared.admit(a, &settings).expect("second");
        assert!(shared.admit(a, &settings).is_none(), "per-client cap");
        let _b1 = shared.admit(b, &settings).expect("other client");
        assert!(shared.admit(b, &settings).is_none(), "total cap");
        drop(a1);
        assert_eq!(shared.open_connections(), 2);
        assert!(shared.admit(b, &settings).is_some());
    }
}
