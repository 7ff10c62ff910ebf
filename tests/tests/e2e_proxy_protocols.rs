//! End to end: the proxy's protocols beyond HTTP/1.1 — TLS passthrough by SNI, HTTP/2 by ALPN,
//! and WebSocket tunnels — on loopback, in process (`netguard::proxy::Proxy`), with real
//! clients (curl, `openssl s_client`, a tungstenite WebSocket client) against real servers
//! (`openssl s_server`, recording backends, a tungstenite echo server).
//!
//! Needs curl (with nghttp2, as Debian's) and openssl. No root:
//! `AYA_BUILD_SKIP=1 cargo test -p netguard-tests --test e2e_proxy_protocols`.

use std::{
    net::{SocketAddr, TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    thread,
    time::{Duration, Instant},
};

use netguard::{
    config::{AppConfig, ProxyConfig, Seconds, TlsMode},
    proxy::{Proxy, log::RouterLog},
    units::Bytes,
};
use netguard_tests::{
    Proc, TempDir,
    certs::certificate,
    cmd,
    http::{Response, curl},
    recording::{RecordingBackend, Reply},
};

/// Time limit of any single wait in these tests.
const T: Duration = Duration::from_secs(5);

const SHOP: &str = "shop.example.com";
const PASS: &str = "pass.example.com";

struct Edge {
    proxy: Proxy,
    log: Arc<Mutex<Vec<String>>>,
}

impl Edge {
    fn start(config: ProxyConfig, apps: Vec<AppConfig>) -> Edge {
        let (log, lines) = RouterLog::memory();
        let proxy = Proxy::start_with_log(&config, &apps, log).expect("proxy starts");
        Edge { proxy, log: lines }
    }

    fn https_port(&self) -> u16 {
        self.proxy.https_addr().expect("https bound").port()
    }

    /// Router log lines so far (waiting briefly for `n` of them).
    fn log_lines(&self, n: usize) -> Vec<String> {
        let deadline = Instant::now() + T;
        loop {
            let lines = self.log.lock().expect("log").clone();
            if lines.len() >= n || Instant::now() > deadline {
                return lines;
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// curl to `https://name:port/path` (name resolved to loopback), trusting `ca`.
    fn curl(
        &self,
        name: &str,
        ca: &Path,
        path: &str,
        extra: &[&str],
    ) -> (Vec<Response>, Option<i32>, String) {
        let port = self.https_port();
        let resolve = format!("{name}:{port}:127.0.0.1");
        let url = format!("https://{name}:{port}{path}");
        let ca = ca.to_string_lossy().into_owned();
        let mut args = vec!["--cacert", &ca, "--resolve", &resolve];
        args.extend_from_slice(extra);
        args.push(&url);
        curl(&args)
    }

    fn wait_open_connections(&self, n: u32, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        while self.proxy.open_connections() != n {
            if Instant::now() > deadline {
                return false;
            }
            thread::sleep(Duration::from_millis(10));
        }
        true
    }
}

fn config() -> ProxyConfig {
    ProxyConfig {
        http_listen: "127.0.0.1:0".parse().expect("address"),
        https_listen: "127.0.0.1:0".parse().expect("address"),
        max_body_bytes: Bytes(1000),
        ..ProxyConfig::default()
    }
}

fn app(name: &str, domains: &[&str], backends: &[SocketAddr]) -> AppConfig {
    AppConfig {
        name: name.into(),
        domains: domains.iter().map(|d| d.to_string()).collect(),
        backends: backends.to_vec(),
        tls: None,
        cert: None,
        key: None,
        force_https: false,
    }
}

fn terminated(mut a: AppConfig, cert: &Path, key: &Path) -> AppConfig {
    a.tls = Some(TlsMode::Terminate);
    a.cert = Some(cert.to_path_buf());
    a.key = Some(key.to_path_buf());
    a
}

fn passthrough(mut a: AppConfig) -> AppConfig {
    a.tls = Some(TlsMode::Passthrough);
    a
}

/// An address nothing listens on: connects are refused.
fn refusing_addr() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = l.local_addr().expect("addr");
    drop(l);
    addr
}

fn statuses(rs: &[Response]) -> Vec<u16> {
    rs.iter().map(|r| r.status).collect()
}

// ---------------------------------------------------------------------------------------------
// TLS passthrough: the TLS stream goes untouched to a backend that holds its own certificate.

/// `openssl s_server -www` on loopback with its own certificate for `name`.
struct TlsBackend {
    addr: SocketAddr,
    cert: PathBuf,
    _proc: Proc,
}

impl TlsBackend {
    fn start(dir: &TempDir, name: &str) -> TlsBackend {
        let (cert, key) = certificate(dir, &format!("backend-{name}"), &[name]);
        let addr = refusing_addr();
        let proc = Proc::spawn(
            Command::new("openssl")
                .args(["s_server", "-www", "-accept", &addr.to_string()])
                .arg("-cert")
                .arg(&cert)
                .arg("-key")
                .arg(&key),
            &dir.join(&format!("s_server-{name}.log")),
        )
        .expect("openssl s_server starts");
        let deadline = Instant::now() + T;
        while TcpStream::connect(addr).is_err() {
            assert!(Instant::now() < deadline, "s_server: {}", proc.log());
            thread::sleep(Duration::from_millis(20));
        }
        TlsBackend {
            addr,
            cert,
            _proc: proc,
        }
    }
}

/// `openssl s_client` to the proxy's TLS port with `servername` (none if `None`); its output.
fn s_client(port: u16, servername: Option<&str>) -> (bool, String) {
    let mut c = Command::new("openssl");
    c.args(["s_client", "-connect", &format!("127.0.0.1:{port}")]);
    match servername {
        Some(name) => c.args(["-servername", name]),
        None => c.arg("-noservername"),
    };
    let out = cmd::run(&mut c, Duration::from_secs(20)).expect("s_client runs");
    (
        out.status.success(),
        cmd::lossy(&out.stdout) + &cmd::lossy(&out.stderr),
    )
}

struct PassEdge {
    edge: Edge,
    backend: TlsBackend,
    shop: RecordingBackend,
    shop_cert: PathBuf,
    _dir: TempDir,
}

fn pass_edge(config: ProxyConfig, extra_backends: &[SocketAddr]) -> PassEdge {
    let dir = TempDir::new().expect("temp dir");
    let backend = TlsBackend::start(&dir, PASS);
    let (shop_cert, shop_key) = certificate(&dir, "shop", &[SHOP]);
    let shop = RecordingBackend::start(Reply::Status(200, b"shop".to_vec()));
    let mut backends = extra_backends.to_vec();
    backends.push(backend.addr);
    let edge = Edge::start(
        config,
        vec![
            passthrough(app("pass", &[PASS, "*.pass.example.com"], &backends)),
            terminated(app("shop", &[SHOP], &[shop.addr()]), &shop_cert, &shop_key),
        ],
    );
    PassEdge {
        edge,
        backend,
        shop,
        shop_cert,
        _dir: dir,
    }
}

#[test]
fn passthrough_forwards_tls_untouched_to_the_backend_sni_names() {
    let t = pass_edge(config(), &[]);
    let port = t.edge.https_port();

    // curl trusts only the backend's certificate and gets the backend's own page.
    let (r, code, err) = t.edge.curl(PASS, &t.backend.cert, "/", &[]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(statuses(&r), [200]);
    assert!(
        r[0].body_text().contains("s_server"),
        "{}",
        r[0].body_text()
    );
    // Twice more: the backend's certificate, on a new connection each time.
    for _ in 0..2 {
        let (_, code, err) = t.edge.curl(PASS, &t.backend.cert, "/", &[]);
        assert_eq!(code, Some(0), "{err}");
    }

    // openssl s_client sees the backend's certificate for the passthrough name, netguard's for
    // the terminated one, on the same listener.
    let (ok, out) = s_client(port, Some(PASS));
    assert!(ok, "{out}");
    assert!(out.contains(&format!("subject=CN = {PASS}")), "{out}");
    let (ok, out) = s_client(port, Some(SHOP));
    assert!(ok, "{out}");
    assert!(out.contains(&format!("subject=CN = {SHOP}")), "{out}");
    // A wildcard route works for passthrough as for Host routing; the backend's certificate
    // does not cover the name, which is the client's business.
    let (_, out) = s_client(port, Some("a.pass.example.com"));
    assert!(out.contains(&format!("subject=CN = {PASS}")), "{out}");

    // Terminated TLS still works beside it.
    let (r, code, err) = t.edge.curl(SHOP, &t.shop_cert, "/", &[]);
    assert_eq!((code, statuses(&r)), (Some(0), vec![200]), "{err}");
    assert_eq!(r[0].body, b"shop");

    // No SNI: nothing to route by and no certificate to answer with — the handshake fails.
    let (ok, out) = s_client(port, None);
    assert!(!ok || !out.contains(&format!("CN = {PASS}")), "{out}");
    // An unknown name: the same.
    let (ok, out) = s_client(port, Some("other.example.com"));
    assert!(!ok || !out.contains("subject="), "{out}");

    // No router log line and no HTTP fields: netguard never saw the plaintext.
    let lines = t.edge.log_lines(1);
    assert!(lines.iter().all(|l| !l.contains("app=pass")), "{lines:#?}");
    assert_eq!(t.shop.connections(), 1);
}

#[test]
fn passthrough_skips_a_dead_backend_and_redirects_plain_http() {
    let dead = refusing_addr();
    let t = pass_edge(config(), &[dead]);
    for _ in 0..3 {
        let (r, code, err) = t.edge.curl(PASS, &t.backend.cert, "/", &[]);
        assert_eq!((code, statuses(&r)), (Some(0), vec![200]), "{err}");
    }
    // Plain HTTP for a passthrough app: its backends speak TLS only, so 301 to https.
    let url = format!("http://{}/x?y=1", t.edge.proxy.http_addr());
    let (r, _, _) = curl(&["-H", &format!("Host: {PASS}"), &url]);
    assert_eq!(r[0].status, 301);
    assert_eq!(
        r[0].header("location"),
        Some(format!("https://{PASS}:{}/x?y=1", t.edge.https_port()).as_str())
    );

    // A passthrough app whose only backend is dead: the connection is closed.
    let edge = Edge::start(config(), vec![passthrough(app("p", &[PASS], &[dead]))]);
    let (ok, out) = s_client(edge.https_port(), Some(PASS));
    assert!(!ok || !out.contains("subject="), "{out}");
    assert!(edge.wait_open_connections(0, T));
}

/// A child process killed on drop.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn passthrough_connections_end_after_the_tunnel_idle_timeout() {
    let t = pass_edge(
        ProxyConfig {
            tunnel_idle_timeout_secs: Seconds(Duration::from_millis(1500)),
            ..config()
        },
        &[],
    );
    // s_client completes the handshake, then sends nothing: its stdin stays open.
    let client = Killed(
        Command::new("openssl")
            .args([
                "s_client",
                "-connect",
                &format!("127.0.0.1:{}", t.edge.https_port()),
                "-servername",
                PASS,
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("s_client starts"),
    );
    assert!(t.edge.wait_open_connections(1, T), "connected");
    thread::sleep(Duration::from_millis(700));
    assert_eq!(
        t.edge.proxy.open_connections(),
        1,
        "still open while under the idle time"
    );
    assert!(
        t.edge.wait_open_connections(0, T),
        "closed after the idle timeout"
    );
    drop(client);
}
