//! The admin endpoint (`[admin] listen`, 127.0.0.1:9100 by default): Prometheus metrics,
//! health and readiness probes, the proxy's routes, and reload on request.
//!
//! | path | method | answer |
//! |---|---|---|
//! | `/metrics` | GET | Prometheus text format 0.0.4 ([`crate::metrics`]) |
//! | `/healthz` | GET | 200 while the process serves requests |
//! | `/readyz` | GET | 200 when every program is attached and the proxy listens, else 503 |
//! | `/routes` | GET | apps, domains and backend health as JSON ([`crate::routes`]) |
//! | `/reload` | POST | re-reads the config like SIGHUP and answers with the outcome (clients on this host only) |
//!
//! The server runs on a thread and runtime of its own, so it answers while the daemon is still
//! filling its maps (`/readyz` is 503 then) and while a reload runs. A reload request is handed
//! to the daemon's loop, which runs the same code as for SIGHUP, one reload at a time.
//!
//! The listener sets `SO_REUSEPORT`, like the proxy's, so a new daemon can start while the old
//! one still drains; until the old one exits both answer on the port.

use std::{
    convert::Infallible,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    path::Path,
    sync::{
        Arc, OnceLock, PoisonError, RwLock,
        atomic::{AtomicBool, AtomicU64, Ordering::Relaxed},
    },
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper::{body::Incoming, server::conn::http1, service::service_fn};
use hyper_util::rt::TokioIo;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};

use crate::{
    config::Config,
    daemon::{DaemonError, Prepared},
    metrics::{self, KernelReadings, ProxyReadings, Readings, ReloadReadings},
    paths::{PinPaths, TcLink},
    proxy::state::Shared,
    routes::RoutesView,
};

/// `[admin]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdminConfig {
    /// `false`: no admin endpoint (then `netguard reload` cannot reach the daemon; SIGHUP still
    /// reloads).
    pub enabled: bool,
    /// Where `/metrics`, `/healthz`, `/readyz`, `/routes` and `/reload` are served. `/reload` only
    /// answers clients on this host whatever this is.
    pub listen: SocketAddr,
}

pub const DEFAULT_LISTEN: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 9100);

impl Default for AdminConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            listen: DEFAULT_LISTEN,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("binding the admin endpoint {addr} ([admin] listen): {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("starting the admin endpoint's thread or runtime: {0}")]
    Thread(std::io::Error),
}

/// The outcome of a reload as `POST /reload` answers it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReloadAnswer {
    pub ok: bool,
    /// What `netguard reload` exits with: 0, 64 (the config was rejected, nothing changed) or 1
    /// (applying it failed).
    pub exit_code: u8,
    /// "config reloaded", or every error.
    pub message: String,
    pub duration_seconds: f64,
}

impl ReloadAnswer {
    /// `next`, read from `path`, is in force.
    pub fn applied(path: &Path, next: &Prepared, took: Duration) -> ReloadAnswer {
        let mut message = format!(
            "config reloaded from {} in {} ms: {} apps, {} denylist prefixes",
            path.display(),
            took.as_millis(),
            next.config.app.len(),
            next.denylist_entries
        );
        for w in &next.warnings {
            message.push_str("\nwarning: ");
            message.push_str(w);
        }
        ReloadAnswer {
            ok: true,
            exit_code: 0,
            message,
            duration_seconds: took.as_secs_f64(),
        }
    }

    /// The reload failed with `error`; the config in force did not change.
    pub fn rejected(error: &DaemonError, took: Duration) -> ReloadAnswer {
        ReloadAnswer {
            ok: false,
            // A reload's proxy error comes from building the new routes (certificates) before
            // anything changed: a rejected config like any other.
            exit_code: match error {
                DaemonError::Proxy(_) => 64,
                e => e.exit_code(),
            },
            message: format!("reload rejected, the running config stays in force: {error}"),
            duration_seconds: took.as_secs_f64(),
        }
    }

    fn status(&self) -> StatusCode {
        match self.exit_code {
            0 => StatusCode::OK,
            64 => StatusCode::UNPROCESSABLE_ENTITY,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

/// A reload asked for over HTTP, answered by the daemon's loop.
#[derive(Debug)]
pub struct ReloadRequest {
    pub reply: oneshot::Sender<ReloadAnswer>,
}

/// What the daemon shares with the admin endpoint.
#[derive(Debug)]
pub struct AdminState {
    paths: PinPaths,
    ready: AtomicBool,
    proxy: OnceLock<Arc<Shared>>,
    /// The config in force: `/routes` shows its apps, `/readyz` checks its links.
    config: RwLock<Arc<Config>>,
    reload_tx: mpsc::Sender<ReloadRequest>,
    successes: AtomicU64,
    failures: AtomicU64,
    last_success_unix_micros: AtomicU64,
    last_duration_micros: AtomicU64,
}

fn unix_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

impl AdminState {
    /// The state of a daemon starting with `config`; the receiver gets the reload requests.
    pub fn new(config: &Config) -> (Arc<AdminState>, mpsc::Receiver<ReloadRequest>) {
        // One waiting request is enough: reloads run one at a time and each re-reads the file.
        let (reload_tx, rx) = mpsc::channel(4);
        let state = AdminState {
            paths: PinPaths::new(&config.daemon.pin_path),
            ready: AtomicBool::new(false),
            proxy: OnceLock::new(),
            config: RwLock::new(Arc::new(config.clone())),
            reload_tx,
            successes: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            last_success_unix_micros: AtomicU64::new(unix_micros()),
            last_duration_micros: AtomicU64::new(0),
        };
        (Arc::new(state), rx)
    }

    /// Set once everything is attached and listening; cleared when the daemon stops.
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Relaxed);
    }

    /// Ready, and every link the config in force calls for is still pinned (`netguard detach`
    /// behind the daemon's back makes it unready).
    pub fn readiness(&self) -> Result<(), String> {
        if !self.ready.load(Relaxed) {
            return Err("not ready: starting or stopping".into());
        }
        let config = self.current();
        match expected_links(&self.paths, &config)
            .into_iter()
            .find(|p| !p.exists())
        {
            Some(missing) => Err(format!(
                "not ready: {} is no longer pinned (detached?)",
                missing.display()
            )),
            None => Ok(()),
        }
    }

    fn current(&self) -> Arc<Config> {
        self.config
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    pub fn set_proxy(&self, shared: Arc<Shared>) {
        let _ = self.proxy.set(shared);
    }

    /// Counts a reload; a successful one also brings `/routes` and `/readyz` to `applied`.
    pub fn record_reload(&self, applied: Option<&Config>, took: Duration) {
        self.last_duration_micros.store(micros(took), Relaxed);
        match applied {
            Some(config) => {
                *self.config.write().unwrap_or_else(PoisonError::into_inner) =
                    Arc::new(config.clone());
                self.last_success_unix_micros.store(unix_micros(), Relaxed);
                self.successes.fetch_add(1, Relaxed);
            }
            None => {
                self.failures.fetch_add(1, Relaxed);
            }
        }
    }

    pub fn reloads(&self) -> ReloadReadings {
        ReloadReadings {
            successes: self.successes.load(Relaxed),
            failures: self.failures.load(Relaxed),
            last_success_unix: self.last_success_unix_micros.load(Relaxed) as f64 / 1e6,
            last_duration_seconds: self.last_duration_micros.load(Relaxed) as f64 / 1e6,
        }
    }

    /// Everything `/metrics` shows, read now.
    pub fn readings(&self) -> Readings {
        Readings {
            kernel: KernelReadings::read(&self.paths),
            proxy: self.proxy.get().map(|p| ProxyReadings {
                apps: p.metrics.read(),
                open_connections: p.open_connections(),
                open_per_worker: p.balancer.open_per_worker(),
                refused: p.metrics.refused(),
                ejections: p.health.ejections(),
            }),
            reloads: self.reloads(),
            ready: self.readiness().is_ok(),
        }
    }

    pub fn routes(&self) -> RoutesView {
        let health = self.proxy.get().map(|p| &p.health);
        RoutesView::new(&self.current().app, health, Instant::now())
    }
}

/// The pinned links a daemon running `config` holds: the XDP filter, the flow tracker, and both
/// directions of the limiter and of private-network isolation on each of their interfaces.
fn expected_links(paths: &PinPaths, config: &Config) -> Vec<std::path::PathBuf> {
    let mut out = vec![paths.xdp_link(), paths.flow_track_link()];
    for i in &config.ratelimit.interfaces {
        out.push(paths.tc_link(TcLink::LimitUp, i));
        out.push(paths.tc_link(TcLink::LimitDown, i));
    }
    for i in config.private_network.iter().flat_map(|n| &n.interfaces) {
        out.push(paths.tc_link(TcLink::PrivateIn, i));
        out.push(paths.tc_link(TcLink::PrivateOut, i));
    }
    out
}

/// The admin endpoint, serving until dropped.
#[derive(Debug)]
pub struct AdminServer {
    addr: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl AdminServer {
    /// Binds `listen` (a failure is returned, nothing keeps running) and serves from a thread.
    pub fn start(listen: SocketAddr, state: Arc<AdminState>) -> Result<AdminServer, AdminError> {
        let (bound_tx, bound_rx) = std::sync::mpsc::channel();
        let (shutdown, stop) = oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("netguard-admin".into())
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(r) => r,
                    Err(source) => {
                        let _ = bound_tx.send(Err(AdminError::Thread(source)));
                        return;
                    }
                };
                runtime.block_on(async move {
                    let listener = match bind(listen) {
                        Ok(l) => l,
                        Err(source) => {
                            let _ = bound_tx.send(Err(AdminError::Bind {
                                addr: listen,
                                source,
                            }));
                            return;
                        }
                    };
                    let _ = bound_tx.send(Ok(listener.local_addr().unwrap_or(listen)));
                    tokio::select! {
                        _ = stop => {}
                        () = accept_loop(listener, state) => {}
                    }
                });
            })
            .map_err(AdminError::Thread)?;
        match bound_rx.recv() {
            Ok(Ok(addr)) => {
                tracing::info!(%addr, "admin endpoint listening (/metrics /healthz /readyz /routes /reload)");
                Ok(AdminServer {
                    addr,
                    shutdown: Some(shutdown),
                    thread: Some(thread),
                })
            }
            Ok(Err(e)) => {
                let _ = thread.join();
                Err(e)
            }
            Err(_) => Err(AdminError::Thread(std::io::Error::other(
                "the admin thread ended before binding",
            ))),
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for AdminServer {
    fn drop(&mut self) {
        if let Some(s) = self.shutdown.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn bind(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let socket = match addr {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    socket.set_reuseaddr(true)?;
    socket.set_reuseport(true)?;
    socket.bind(addr)?;
    socket.listen(64)
}

async fn accept_loop(listener: tokio::net::TcpListener, state: Arc<AdminState>) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(error = %e, "admin accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let state = state.clone();
        // A connection whose source is the address it reached comes from this host (the
        // handshake cannot complete for a spoofed one: the answer would stay local).
        let local_client = peer.ip().to_canonical().is_loopback()
            || stream.local_addr().is_ok_and(|l| l.ip() == peer.ip());
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let state = state.clone();
                async move { Ok::<_, Infallible>(handle(req, local_client, &state).await) }
            });
            // Probes and scrapes are short; a stuck client must not hold a task forever.
            let served = http1::Builder::new()
                .header_read_timeout(Duration::from_secs(10))
                .timer(hyper_util::rt::TokioTimer::new())
                .serve_connection(TokioIo::new(stream), service);
            let _ = tokio::time::timeout(Duration::from_secs(600), served).await;
        });
    }
}

fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

fn json(status: StatusCode, value: &impl Serialize) -> Response<Full<Bytes>> {
    let body = serde_json::to_vec(value).unwrap_or_default();
    let mut r = text(status, body);
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    r
}

async fn handle(
    req: Request<Incoming>,
    local_client: bool,
    state: &AdminState,
) -> Response<Full<Bytes>> {
    let path = req.uri().path();
    let method = req.method();
    let expected = match path {
        "/reload" => Method::POST,
        "/metrics" | "/healthz" | "/readyz" | "/routes" => Method::GET,
        _ => return text(StatusCode::NOT_FOUND, "not found\n"),
    };
    if *method != expected && !(expected == Method::GET && *method == Method::HEAD) {
        let mut r = text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
        if let Ok(v) = header::HeaderValue::from_str(expected.as_str()) {
            r.headers_mut().insert(header::ALLOW, v);
        }
        return r;
    }
    match path {
        "/metrics" => {
            let body = metrics::render(&state.readings());
            let mut r = text(StatusCode::OK, body);
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                header::HeaderValue::from_static(metrics::CONTENT_TYPE),
            );
            r
        }
        "/healthz" => text(StatusCode::OK, "ok\n"),
        "/readyz" => match state.readiness() {
            Ok(()) => text(StatusCode::OK, "ready\n"),
            Err(why) => text(StatusCode::SERVICE_UNAVAILABLE, why + "\n"),
        },
        "/routes" => json(StatusCode::OK, &state.routes()),
        _ => reload(local_client, state).await,
    }
}

async fn reload(local_client: bool, state: &AdminState) -> Response<Full<Bytes>> {
    if !local_client {
        return text(
            StatusCode::FORBIDDEN,
            "reload is only accepted from this host\n",
        );
    }
    let (reply, answer) = oneshot::channel();
    if state.reload_tx.send(ReloadRequest { reply }).await.is_err() {
        return text(StatusCode::SERVICE_UNAVAILABLE, "the daemon is stopping\n");
    }
    match answer.await {
        Ok(a) => json(a.status(), &a),
        Err(_) => text(StatusCode::SERVICE_UNAVAILABLE, "the daemon is stopping\n"),
    }
}

/// The address a local client reaches a server listening on `listen` at: an unspecified
/// address (`0.0.0.0`, `::`) means loopback.
pub fn client_addr(listen: SocketAddr) -> SocketAddr {
    match listen.ip() {
        IpAddr::V4(v4) if v4.is_unspecified() => {
            SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), listen.port())
        }
        IpAddr::V6(v6) if v6.is_unspecified() => {
            SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), listen.port())
        }
        _ => listen,
    }
}

/// The admin address a config file names, read leniently: `netguard reload` must find the
/// daemon even when the file it is about to load is broken (the daemon then reports why).
/// `Ok(None)`: the endpoint is disabled there.
pub fn listen_from_config_text(text: &str) -> Result<Option<SocketAddr>, String> {
    let Ok(doc) = text.parse::<toml::Table>() else {
        return Ok(Some(DEFAULT_LISTEN));
    };
    let Some(admin) = doc.get("admin").and_then(|a| a.as_table()) else {
        return Ok(Some(DEFAULT_LISTEN));
    };
    if admin.get("enabled").and_then(|e| e.as_bool()) == Some(false) {
        return Ok(None);
    }
    match admin.get("listen") {
        None => Ok(Some(DEFAULT_LISTEN)),
        Some(v) => v
            .as_str()
            .and_then(|s| s.parse().ok())
            .map(Some)
            .ok_or_else(|| format!("admin.listen = {v} is not an address:port")),
    }
}

/// Errors of the admin client (`netguard reload`, `netguard routes`).
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(
        "cannot reach the daemon's admin endpoint at {addr}: {source} (is `netguard run` running with [admin] enabled?)"
    )]
    Connect {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("admin endpoint {addr}: {message}")]
    Http { addr: SocketAddr, message: String },
    #[error("admin endpoint {addr}: no answer within {timeout:?}")]
    Timeout { addr: SocketAddr, timeout: Duration },
}

/// One request to the admin endpoint at `addr`; returns the status and the body.
pub fn call(
    addr: SocketAddr,
    method: Method,
    path: &str,
    timeout: Duration,
) -> Result<(StatusCode, Bytes), ClientError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|source| ClientError::Connect { addr, source })?;
    let http = |e: &dyn std::fmt::Display| ClientError::Http {
        addr,
        message: e.to_string(),
    };
    runtime.block_on(async {
        let exchange = async {
            let stream = tokio::net::TcpStream::connect(addr)
                .await
                .map_err(|source| ClientError::Connect { addr, source })?;
            let (mut sender, conn) =
                hyper::client::conn::http1::handshake::<_, Full<Bytes>>(TokioIo::new(stream))
                    .await
                    .map_err(|e| http(&e))?;
            tokio::spawn(conn);
            let req = Request::builder()
                .method(method)
                .uri(path)
                .header(header::HOST, addr.to_string())
                .body(Full::new(Bytes::new()))
                .map_err(|e| http(&e))?;
            let resp = sender.send_request(req).await.map_err(|e| http(&e))?;
            let status = resp.status();
            let body = resp
                .into_body()
                .collect()
                .await
                .map_err(|e| http(&e))?
                .to_bytes();
            Ok((status, body))
        };
        tokio::time::timeout(timeout, exchange)
            .await
            .unwrap_or(Err(ClientError::Timeout { addr, timeout }))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admin_address_from_a_config_even_a_broken_one() {
        assert_eq!(listen_from_config_text(""), Ok(Some(DEFAULT_LISTEN)));
        assert_eq!(
            listen_from_config_text("[xdp\ninterface = "),
            Ok(Some(DEFAULT_LISTEN))
        );
        assert_eq!(
            listen_from_config_text("[admin]\nlisten = \"0.0.0.0:9200\"\n")
                .map(|a| a.map(client_addr)),
            Ok(Some("127.0.0.1:9200".parse().unwrap()))
        );
        assert_eq!(
            listen_from_config_text("[admin]\nenabled = false\n"),
            Ok(None)
        );
        assert!(listen_from_config_text("[admin]\nlisten = \"nope\"\n").is_err());
        assert_eq!(
            client_addr("[::]:9100".parse().unwrap()),
            "[::1]:9100".parse().unwrap()
        );
    }

    #[test]
    fn serves_probes_metrics_and_refuses_unknown_paths() {
        let config = Config {
            daemon: crate::config::DaemonConfig {
                pin_path: "/nonexistent/netguard".into(),
            },
            ..Config::default()
        };
        let (state, _rx) = AdminState::new(&config);
        let server =
            AdminServer::start("127.0.0.1:0".parse().unwrap(), state.clone()).expect("binds");
        let get =
            |path| call(server.addr(), Method::GET, path, Duration::from_secs(5)).expect("answers");
        assert_eq!(get("/healthz").0, StatusCode::OK);
        let (status, body) = get("/readyz");
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(String::from_utf8_lossy(&body).contains("starting"));
        // Ready but nothing pinned at that path: still not ready.
        state.set_ready(true);
        assert_eq!(get("/readyz").0, StatusCode::SERVICE_UNAVAILABLE);
        let (status, body) = get("/metrics");
        assert_eq!(status, StatusCode::OK);
        let body = String::from_utf8_lossy(&body);
        assert!(body.contains("netguard_pinned_maps_up 0"), "{body}");
        assert!(body.contains("netguard_config_reloads_total{result=\"success\"} 0"));
        assert_eq!(get("/nope").0, StatusCode::NOT_FOUND);
        let (status, _) = call(
            server.addr(),
            Method::GET,
            "/reload",
            Duration::from_secs(5),
        )
        .unwrap();
        assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
        let routes: RoutesView = serde_json::from_slice(&get("/routes").1).unwrap();
        assert!(!routes.proxy);
    }
}
