//! End to end: the proxy's protocols beyond HTTP/1.1 — TLS passthrough by SNI, HTTP/2 by ALPN,
//! and WebSocket tunnels — on loopback, in process (`netguard::proxy::Proxy`), with real
//! clients (curl, `openssl s_client`, a tungstenite WebSocket client) against real servers
//! (`openssl s_server`, recording backends, a tungstenite echo server).
//!
//! Needs curl (with nghttp2, as Debian's) and openssl. All but the last test run without root;
//! the last runs the real daemon in a sandbox namespace and needs root and the daemon binary:
//! `cargo build -p netguard && cargo test -p netguard-tests --test e2e_proxy_protocols`.

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
    units::Bytes,
};
use netguard_tests::{
    Proc, TempDir,
    certs::certificate,
    cmd,
    http::{Response, curl},
    recording::{RecordingBackend, Reply},
};

mod proxy_edge;

use proxy_edge::{Edge, T, app, assert_error_page, padding_args, refusing_addr, statuses};

const SHOP: &str = "shop.example.com";
const PASS: &str = "pass.example.com";

impl Edge {
    /// `openssl s_client` to the TLS port, naming `servername` (plus `extra` arguments): it
    /// completes the handshake, then sends nothing, its stdin held open until dropped.
    fn silent_s_client(&self, servername: &str, extra: &[&str]) -> Killed {
        let connect = format!("127.0.0.1:{}", self.https_port());
        Killed(
            Command::new("openssl")
                .args(["s_client", "-connect", &connect, "-servername", servername])
                .args(extra)
                .stdin(Stdio::piped())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("s_client starts"),
        )
    }

    /// The one idle connection opens, is still open `open_for` later, then closes (`closed`
    /// says why it should).
    fn assert_closed_when_idle(&self, open_for: Duration, closed: &str) {
        assert!(self.wait_open_connections(1, T), "connected");
        thread::sleep(open_for);
        assert_eq!(
            self.proxy.open_connections(),
            1,
            "still open while under the idle time"
        );
        assert!(self.wait_open_connections(0, T), "{closed}");
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
    let (r, code, err) = t.edge.curl_tls(PASS, &t.backend.cert, "/", &[]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(statuses(&r), [200]);
    assert!(
        r[0].body_text().contains("s_server"),
        "{}",
        r[0].body_text()
    );
    // Twice more: the backend's certificate, on a new connection each time.
    for _ in 0..2 {
        let (_, code, err) = t.edge.curl_tls(PASS, &t.backend.cert, "/", &[]);
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
    let (r, code, err) = t.edge.curl_tls(SHOP, &t.shop_cert, "/", &[]);
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
        let (r, code, err) = t.edge.curl_tls(PASS, &t.backend.cert, "/", &[]);
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
    let client = t.edge.silent_s_client(PASS, &[]);
    t.edge
        .assert_closed_when_idle(Duration::from_millis(700), "closed after the idle timeout");
    drop(client);
}

// ---------------------------------------------------------------------------------------------
// HTTP/2 by ALPN on terminated TLS.

const BLOG: &str = "blog.example.com";

struct H2Edge {
    edge: Edge,
    shop: RecordingBackend,
    shop_cert: PathBuf,
    _dir: TempDir,
}

/// shop (TLS), blog (TLS, no backends), and the extra apps given, on one HTTPS listener.
fn h2_edge(config: ProxyConfig, shop_reply: Reply, extra: Vec<AppConfig>) -> H2Edge {
    let dir = TempDir::new().expect("temp dir");
    let (shop_cert, shop_key) = certificate(&dir, "shop", &[SHOP, "*.shop.example.com"]);
    let (blog_cert, blog_key) = certificate(&dir, "blog", &[BLOG]);
    let shop = RecordingBackend::start(shop_reply);
    let mut apps = vec![
        terminated(
            app("shop", &[SHOP, "*.shop.example.com"], &[shop.addr()]),
            &shop_cert,
            &shop_key,
        ),
        terminated(app("blog", &[BLOG], &[]), &blog_cert, &blog_key),
    ];
    apps.extend(extra);
    H2Edge {
        edge: Edge::start(config, apps),
        shop,
        shop_cert,
        _dir: dir,
    }
}

impl H2Edge {
    /// curl --http2 to `https://name:port/path` with the shop certificate trusted.
    fn h2(&self, name: &str, path: &str, extra: &[&str]) -> (Vec<Response>, Option<i32>, String) {
        let mut args = vec!["--http2"];
        args.extend_from_slice(extra);
        self.edge.curl_tls(name, &self.shop_cert, path, &args)
    }
}

fn is_h2(r: &Response) -> bool {
    r.head.starts_with("HTTP/2 ")
}

#[test]
fn h2_routes_forwards_and_logs_like_http1() {
    let t = h2_edge(config(), Reply::Status(200, b"shop".to_vec()), vec![]);
    let port = t.edge.https_port();
    let (r, code, err) = t.h2(SHOP, "/h2?x=1", &["-H", "X-Forwarded-For: 6.6.6.6"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(is_h2(&r[0]), "{}", r[0].head);
    assert_eq!((r[0].status, r[0].body.as_slice()), (200, &b"shop"[..]));
    let got = String::from_utf8_lossy(&t.shop.wait_requests(1, T)[0]).into_owned();
    assert!(got.starts_with("GET /h2?x=1 HTTP/1.1\r\n"), "{got}");
    assert!(
        got.contains(&format!("\r\nHost: {SHOP}:{port}\r\n")),
        "{got}"
    );
    for want in [
        "\r\nX-Forwarded-For: 127.0.0.1\r\n".to_owned(),
        "\r\nX-Forwarded-Proto: https\r\n".to_owned(),
        format!("\r\nX-Forwarded-Port: {port}\r\n"),
        "\r\nX-Request-ID: ".to_owned(),
    ] {
        assert!(got.contains(&want), "{want:?} in {got}");
    }
    assert!(
        !got.contains("6.6.6.6"),
        "untrusted X-Forwarded-For dropped: {got}"
    );
    assert!(
        got.ends_with("\r\nConnection: close\r\n\r\n") && !got.contains("Transfer-Encoding"),
        "a stream ended with its HEADERS has an empty body: {got}"
    );
    let lines = t.edge.log_lines(1);
    assert!(
        lines[0].contains(" app=shop method=GET path=\"/h2?x=1\" status=200 ")
            || lines[0].contains(" app=shop method=GET path=/h2?x=1 status=200 "),
        "{lines:#?}"
    );

    // A body with a length, and the client's request id kept.
    t.shop.clear();
    let (r, _, err) = t.h2(
        SHOP,
        "/up",
        &["--data-binary", "hello", "-H", "X-Request-ID: rid-42"],
    );
    assert_eq!(statuses(&r), [200], "{err}");
    let got = String::from_utf8_lossy(&t.shop.wait_requests(1, T)[0]).into_owned();
    assert!(got.starts_with("POST /up HTTP/1.1\r\n"), "{got}");
    assert!(got.contains("\r\nX-Request-ID: rid-42\r\n"), "{got}");
    assert!(
        got.ends_with("\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello"),
        "{got}"
    );

    // 421: a connection for shop asked for blog; 404: a name no app has.
    let (r, _, err) = t.h2(SHOP, "/", &["-H", &format!("Host: {BLOG}")]);
    assert!(is_h2(&r[0]), "{err}");
    assert_error_page(&r[0], 421);
    let (r, _, _) = t.h2(SHOP, "/", &["-H", "Host: nowhere.example"]);
    assert_error_page(&r[0], 404);
    // 503: blog has no backend.
    let blog_ca = t._dir.join("blog.pem");
    let (r, _, err) = t.edge.curl_tls(BLOG, &blog_ca, "/", &["--http2"]);
    assert!(is_h2(&r[0]), "{err}");
    assert_error_page(&r[0], 503);

    // An HTTP/1.1-only client on the same listener.
    let (r, code, err) = t.h2(SHOP, "/one", &["--http1.1"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(r[0].head.starts_with("HTTP/1.1 200"), "{}", r[0].head);
    assert_eq!(r[0].body, b"shop");
}

#[test]
fn h2_backend_failures_are_502_and_504() {
    let dead = refusing_addr();
    let slow = RecordingBackend::start(Reply::Hang);
    let dir = TempDir::new().expect("temp dir");
    let (cert, key) = certificate(&dir, "errors", &["dead.example", "slow.example"]);
    let edge = Edge::start(
        ProxyConfig {
            backend_response_timeout_secs: Seconds(Duration::from_millis(500)),
            ..config()
        },
        vec![
            terminated(app("dead", &["dead.example"], &[dead]), &cert, &key),
            terminated(app("slow", &["slow.example"], &[slow.addr()]), &cert, &key),
        ],
    );
    let (r, _, err) = edge.curl_tls("dead.example", &cert, "/", &["--http2"]);
    assert!(is_h2(&r[0]), "{err}");
    assert_error_page(&r[0], 502);
    let (r, _, _) = edge.curl_tls("slow.example", &cert, "/", &["--http2"]);
    assert_error_page(&r[0], 504);
}

#[test]
fn h2_body_limit_413_announced_and_streamed() {
    let t = h2_edge(config(), Reply::Status(200, b"ok".to_vec()), vec![]);
    let dir = TempDir::new().expect("temp dir");
    let at = |n: usize| {
        let path = dir.join(&format!("body-{n}"));
        std::fs::write(&path, vec![b'b'; n]).expect("write body");
        format!("@{}", path.display())
    };
    // Announced: content-length at the limit passes; one byte more is refused before any
    // byte reaches a backend.
    let (r, _, err) = t.h2(SHOP, "/up", &["--data-binary", &at(1000)]);
    assert_eq!(statuses(&r), [200], "{err}");
    t.shop.clear();
    let (r, _, err) = t.h2(SHOP, "/up", &["--data-binary", &at(1001)]);
    assert!(is_h2(&r[0]), "{err}");
    assert_error_page(&r[0], 413);
    assert_eq!(t.shop.connections(), 0);

    // Streamed (no content-length: curl reads the body from stdin-like upload without a size):
    // the backend request is cut once the body passes the limit.
    let upload = |n: usize| {
        let path = dir.join(&format!("up-{n}"));
        std::fs::write(&path, vec![b'u'; n]).expect("write body");
        path.display().to_string()
    };
    let small = upload(1000);
    let (r, _, err) = t.h2(
        SHOP,
        "/stream",
        &["-T", &small, "-H", "Transfer-Encoding: chunked"],
    );
    assert_eq!(statuses(&r), [200], "{err}");
    let got = t.shop.wait_requests(1, T);
    let text = String::from_utf8_lossy(&got[0]).into_owned();
    assert!(text.starts_with("PUT /stream HTTP/1.1\r\n"), "{text}");
    assert!(
        text.contains("\r\nTransfer-Encoding: chunked\r\n"),
        "{text}"
    );
    assert!(text.ends_with("\r\n0\r\n\r\n"), "{text}");
    t.shop.clear();
    let big = upload(200_000);
    let (r, _, err) = t.h2(
        SHOP,
        "/stream",
        &["-T", &big, "-H", "Transfer-Encoding: chunked"],
    );
    assert_eq!(r.len(), 1, "{err}");
    assert_error_page(&r[0], 413);
    thread::sleep(Duration::from_millis(100));
    for got in t.shop.received() {
        assert!(
            !netguard_tests::recording::request_complete(&got),
            "the backend never gets a complete request"
        );
    }
    let lines = t.edge.log_lines(3);
    assert!(
        lines
            .iter()
            .any(|l| l.contains(" path=/stream status=413 ")),
        "{lines:#?}"
    );
}

/// `-H` arguments that make the regular header fields of an HTTP/2 request exactly `section`
/// bytes in HTTP/1.1 accounting (each line plus 2), with curl's own user-agent and accept
/// removed.
fn h2_section_args(section: usize) -> Vec<String> {
    padding_args(section, "x-pad")
}

#[test]
fn h2_header_limits_431_at_exact_boundaries() {
    let t = h2_edge(config(), Reply::Status(200, b"ok".to_vec()), vec![]);
    let line = |len: usize| format!("x-long: {}", "l".repeat(len - "x-long: ".len()));
    let quiet = ["-H", "User-Agent:", "-H", "Accept:"];
    let mut args = quiet.to_vec();
    let at = line(8192);
    args.extend(["-H", &at]);
    let (r, _, err) = t.h2(SHOP, "/", &args);
    assert_eq!(statuses(&r), [200], "8,192-byte line passes: {err}");
    assert!(is_h2(&r[0]));
    let got = t.shop.wait_requests(1, T);
    assert!(String::from_utf8_lossy(&got[0]).contains(&format!("\r\n{at}\r\n")));
    t.shop.clear();
    let mut args = quiet.to_vec();
    let over = line(8193);
    args.extend(["-H", &over]);
    let (r, _, err) = t.h2(SHOP, "/", &args);
    assert!(!r.is_empty(), "{err}");
    assert_error_page(&r[0], 431);
    assert_eq!(t.shop.connections(), 0);

    for (section, want) in [(32768, 200), (32769, 431)] {
        let args = h2_section_args(section);
        let all: Vec<&str> = args.iter().map(String::as_str).collect();
        let (r, _, err) = t.h2(SHOP, "/", &all);
        assert_eq!(statuses(&r), [want], "section of {section} bytes: {err}");
        assert!(is_h2(&r[0]));
        if want == 431 {
            // The proxy's own page, not hyper's bare header-list refusal.
            assert_error_page(&r[0], 431);
        }
    }
    assert_eq!(t.shop.wait_requests(1, T).len(), 1);
}

/// A backend that answers nothing until `n` requests are open at once, then answers all: a
/// proxy that served the streams of a connection one after another would never get there.
fn barrier_backend(n: usize) -> (SocketAddr, thread::JoinHandle<usize>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    listener.set_nonblocking(true).expect("nonblocking");
    let handle = thread::spawn(move || {
        use std::io::{Read, Write};
        let deadline = Instant::now() + T;
        let mut held = Vec::new();
        while held.len() < n && Instant::now() < deadline {
            match listener.accept() {
                Ok((mut c, _)) => {
                    c.set_nonblocking(false).expect("blocking");
                    c.set_read_timeout(Some(T)).expect("timeout");
                    let mut head = Vec::new();
                    let mut buf = [0u8; 4096];
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                        match c.read(&mut buf) {
                            Ok(0) | Err(_) => break,
                            Ok(k) => head.extend_from_slice(&buf[..k]),
                        }
                    }
                    held.push(c);
                }
                Err(_) => thread::sleep(Duration::from_millis(5)),
            }
        }
        let at_once = held.len();
        for mut c in held {
            let _ = c.write_all(
                b"HTTP/1.1 200 OK\r\nContent-Length: 8\r\nConnection: close\r\n\r\ntogether",
            );
        }
        at_once
    });
    (addr, handle)
}

#[test]
fn h2_streams_of_one_connection_run_in_parallel() {
    const N: usize = 6;
    let (barrier, held) = barrier_backend(N);
    let dir = TempDir::new().expect("temp dir");
    let (cert, key) = certificate(&dir, "multi", &["multi.example"]);
    let edge = Edge::start(
        config(),
        vec![terminated(
            app("multi", &["multi.example"], &[barrier]),
            &cert,
            &key,
        )],
    );
    let port = edge.https_port();
    let mut c = Command::new("curl");
    c.args([
        "-sS",
        "--http2",
        "--max-time",
        "20",
        "-Z",
        "--parallel-max",
        "10",
    ])
    .arg("--cacert")
    .arg(&cert)
    .args(["--resolve", &format!("multi.example:{port}:127.0.0.1")])
    .args(["-o", "/dev/null", "-w", "%{http_version} %{http_code}\\n"]);
    for i in 0..N {
        c.arg(format!("https://multi.example:{port}/{i}"));
        c.args(["-o", "/dev/null"]);
    }
    let out = cmd::run(&mut c, Duration::from_secs(30)).expect("curl runs");
    let stdout = cmd::lossy(&out.stdout);
    assert_eq!(held.join().expect("backend thread"), N, "{stdout}");
    assert_eq!(
        stdout.lines().filter(|l| *l == "2 200").count(),
        N,
        "{stdout}{}",
        cmd::lossy(&out.stderr)
    );
    // One client connection carried them all: every log line names the same client port.
    let lines = edge.log_lines(N);
    let clients: std::collections::HashSet<&str> = lines
        .iter()
        .filter_map(|l| l.split(" client=").nth(1)?.split(' ').next())
        .collect();
    assert_eq!((lines.len(), clients.len()), (N, 1), "{lines:#?}");
}

#[test]
fn h2_large_responses_stream_through() {
    let len = 5_000_000;
    let t = h2_edge(
        config(),
        Reply::Stream {
            head: format!("HTTP/1.1 200 OK\r\nContent-Length: {len}\r\n"),
            len,
        },
        vec![],
    );
    let (r, code, err) = t.h2(SHOP, "/big", &[]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(r[0].status, 200);
    assert!(
        r[0].body == netguard_tests::recording::pattern(len),
        "body differs"
    );
    // Chunked from the backend: HTTP/2 has its own framing, the content is the same.
    t.shop.set_reply(Reply::Raw(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
            .to_vec(),
    ));
    let (r, _, err) = t.h2(SHOP, "/chunked", &[]);
    assert_eq!(r[0].body, b"hello world", "{err}");
}

#[test]
fn h2_connections_without_a_request_are_closed() {
    let t = h2_edge(
        ProxyConfig {
            header_read_timeout_secs: Seconds(Duration::from_millis(1000)),
            client_write_timeout_secs: Seconds(Duration::from_millis(500)),
            ..config()
        },
        Reply::Status(200, b"ok".to_vec()),
        vec![],
    );
    // A client that negotiates h2 and then sends nothing.
    let client = t.edge.silent_s_client(SHOP, &["-alpn", "h2"]);
    t.edge.assert_closed_when_idle(
        Duration::from_millis(500),
        "closed when no stream began within header_read_timeout_secs (+ client_write_timeout_secs)",
    );
    drop(client);
}

// ---------------------------------------------------------------------------------------------
// WebSocket: Upgrade → 101 → a tunnel, with a real client and a real echo server.

const WS: &str = "ws.example";

/// A tungstenite echo server: answers each message with `<tag>:<message>`; on the text
/// `close-me` it closes the WebSocket itself. Counts the closes clients started.
struct WsEcho {
    addr: SocketAddr,
    client_closes: Arc<Mutex<usize>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
}

impl WsEcho {
    fn start(tag: &'static str) -> WsEcho {
        Self::with_listener(TcpListener::bind("127.0.0.1:0").expect("bind"), tag)
    }

    /// On loopback inside `ns`.
    fn start_in(ns: &netguard_tests::NetNs, tag: &'static str) -> WsEcho {
        let listener = netguard_tests::listeners::tcp_listener(ns, "127.0.0.1:0".parse().unwrap())
            .expect("listener in the namespace");
        Self::with_listener(listener, tag)
    }

    fn with_listener(listener: TcpListener, tag: &'static str) -> WsEcho {
        use std::sync::atomic::{AtomicBool, Ordering};
        let addr = listener.local_addr().expect("addr");
        listener.set_nonblocking(true).expect("nonblocking");
        let client_closes = Arc::new(Mutex::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (closes, stopping) = (client_closes.clone(), stop.clone());
        thread::spawn(move || {
            while !stopping.load(Ordering::SeqCst) {
                let Ok((stream, _)) = listener.accept() else {
                    thread::sleep(Duration::from_millis(5));
                    continue;
                };
                let closes = closes.clone();
                thread::spawn(move || {
                    let _ = stream.set_nonblocking(false);
                    let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
                    let Ok(mut ws) = tungstenite::accept(stream) else {
                        return;
                    };
                    loop {
                        match ws.read() {
                            Ok(tungstenite::Message::Text(t)) if t.as_str() == "close-me" => {
                                let _ = ws.close(None);
                            }
                            Ok(tungstenite::Message::Text(t)) => {
                                let _ = ws.send(tungstenite::Message::text(format!("{tag}:{t}")));
                            }
                            Ok(tungstenite::Message::Binary(b)) => {
                                let mut out = format!("{tag}:").into_bytes();
                                out.extend_from_slice(&b);
                                let _ = ws.send(tungstenite::Message::binary(out));
                            }
                            Ok(tungstenite::Message::Close(_)) => {
                                *closes.lock().expect("count") += 1;
                            }
                            Ok(_) => {}
                            Err(_) => return,
                        }
                    }
                });
            }
        });
        WsEcho {
            addr,
            client_closes,
            stop,
        }
    }

    fn client_closes(&self) -> usize {
        *self.client_closes.lock().expect("count")
    }
}

impl Drop for WsEcho {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

type Ws = tungstenite::WebSocket<TcpStream>;

/// A WebSocket client through the proxy's HTTP listener to `ws://ws.example/chat`.
fn ws_connect(edge: &Edge) -> (Ws, u16) {
    ws_over(TcpStream::connect(edge.proxy.http_addr()).expect("connect"))
}

/// A WebSocket handshake for `ws://ws.example/chat` over `stream`.
fn ws_over(stream: TcpStream) -> (Ws, u16) {
    use tungstenite::client::IntoClientRequest;
    stream.set_read_timeout(Some(T)).expect("timeout");
    let request = format!("ws://{WS}/chat")
        .into_client_request()
        .expect("request");
    let (ws, response) = tungstenite::client::client(request, stream).expect("handshake");
    (ws, response.status().as_u16())
}

fn ws_text(ws: &mut Ws, text: &str) -> String {
    ws.send(tungstenite::Message::text(text)).expect("send");
    match ws.read().expect("reply") {
        tungstenite::Message::Text(t) => t.as_str().to_owned(),
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn websocket_messages_both_ways_and_closes_from_either_side() {
    let echo = WsEcho::start("A");
    let edge = Edge::start(config(), vec![app("ws", &[WS], &[echo.addr])]);

    let (mut ws, status) = ws_connect(&edge);
    assert_eq!(status, 101);
    assert_eq!(ws_text(&mut ws, "hello"), "A:hello");
    ws.send(tungstenite::Message::binary(vec![0u8, 1, 2, 255]))
        .expect("send");
    match ws.read().expect("reply") {
        tungstenite::Message::Binary(b) => assert_eq!(&b[..], b"A:\x00\x01\x02\xff"),
        other => panic!("unexpected {other:?}"),
    }
    // A message larger than any buffer on the way.
    let big = "x".repeat(300_000);
    assert_eq!(ws_text(&mut ws, &big).len(), big.len() + 2);

    // Close from the client: the server sees the close frame, the client the answer.
    ws.close(None).expect("close");
    loop {
        match ws.read() {
            Ok(_) => {}
            Err(tungstenite::Error::ConnectionClosed) => break,
            Err(e) => panic!("after close: {e}"),
        }
    }
    let deadline = Instant::now() + T;
    while echo.client_closes() < 1 {
        assert!(Instant::now() < deadline, "the server never saw the close");
        thread::sleep(Duration::from_millis(10));
    }
    assert!(edge.wait_open_connections(0, T), "tunnel ended");

    // Close from the server.
    let (mut ws, _) = ws_connect(&edge);
    assert_eq!(ws_text(&mut ws, "again"), "A:again");
    ws.send(tungstenite::Message::text("close-me"))
        .expect("send");
    match ws.read().expect("close frame") {
        tungstenite::Message::Close(_) => {}
        other => panic!("expected the server's close, got {other:?}"),
    }
    assert!(matches!(
        ws.read(),
        Err(tungstenite::Error::ConnectionClosed)
    ));
    assert!(edge.wait_open_connections(0, T), "tunnel ended");

    // One router log line per tunnel, written when it ended: status 101, bytes both ways.
    let lines = edge.log_lines(2);
    assert_eq!(lines.len(), 2, "{lines:#?}");
    assert!(
        lines[0].contains(" app=ws method=GET path=/chat status=101 "),
        "{lines:#?}"
    );
}

#[test]
fn websocket_request_answered_without_101_stays_http() {
    // The backend refuses the upgrade with a plain 200: the next bytes on the connection are a
    // new HTTP request, parsed and checked like any other — not tunnelled.
    let backend = RecordingBackend::start(Reply::Status(200, b"no upgrade".to_vec()));
    let edge = Edge::start(config(), vec![app("ws", &[WS], &[backend.addr()])]);
    let mut c = netguard_tests::http::Client::connect(edge.proxy.http_addr());
    c.write(
        format!(
            "GET /chat HTTP/1.1\r\nHost: {WS}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
             Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n\
             GET /next HTTP/1.1\r\nHost: {WS}\r\n\r\n\
             GET /bad HTTP/1.1\r\nHost: {WS}\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n"
        )
        .as_bytes(),
    );
    let r = c.responses(3, T);
    assert_eq!(statuses(&r), [200, 200, 400]);
    let got = backend.wait_requests(2, T);
    assert_eq!(
        got.len(),
        2,
        "the malformed third request never reaches the backend"
    );
    assert!(String::from_utf8_lossy(&got[1]).starts_with("GET /next HTTP/1.1\r\n"));

    // A real client gets the refusal as an error, not a WebSocket.
    use tungstenite::client::IntoClientRequest;
    let stream = TcpStream::connect(edge.proxy.http_addr()).expect("connect");
    stream.set_read_timeout(Some(T)).expect("timeout");
    let request = format!("ws://{WS}/chat")
        .into_client_request()
        .expect("request");
    match tungstenite::client::client(request, stream) {
        Err(tungstenite::HandshakeError::Failure(tungstenite::Error::Http(resp))) => {
            assert_eq!(resp.status().as_u16(), 200)
        }
        other => panic!("expected an HTTP refusal, got {:?}", other.map(|_| ())),
    }
}

#[test]
fn websocket_tunnels_end_when_idle_and_survive_a_reload() {
    let a = WsEcho::start("A");
    let b = WsEcho::start("B");
    let config = ProxyConfig {
        tunnel_idle_timeout_secs: Seconds(Duration::from_millis(1500)),
        ..config()
    };
    let mut edge = Edge::start(config.clone(), vec![app("ws", &[WS], &[a.addr])]);

    // Traffic more often than the idle timeout keeps a tunnel open past it.
    let (mut kept, _) = ws_connect(&edge);
    for i in 0..6 {
        assert_eq!(ws_text(&mut kept, &format!("m{i}")), format!("A:m{i}"));
        thread::sleep(Duration::from_millis(400));
    }

    // A reload that moves the app to another backend: the open tunnel stays on the old one
    // and keeps working; new tunnels use the new routes.
    edge.proxy
        .reload(&config, &[app("ws", &[WS], &[b.addr])])
        .expect("reload");
    assert_eq!(ws_text(&mut kept, "after reload"), "A:after reload");
    let (mut fresh, _) = ws_connect(&edge);
    assert_eq!(ws_text(&mut fresh, "new"), "B:new");

    // Silence: the proxy closes both tunnels after the idle timeout.
    let quiet = Instant::now();
    assert!(edge.wait_open_connections(0, T), "idle tunnels closed");
    assert!(
        quiet.elapsed() >= Duration::from_millis(1000),
        "not before the idle timeout: {:?}",
        quiet.elapsed()
    );
    for ws in [&mut kept, &mut fresh] {
        assert!(
            !matches!(ws.read(), Ok(tungstenite::Message::Text(_))),
            "closed by the proxy"
        );
    }
}

/// The real daemon (`netguard run` in a sandbox namespace, XDP filter attached, proxy on port
/// 80 of the guarded address): a WebSocket opened from the client namespace keeps working on
/// its old backend across a SIGHUP reload that moves the app, while new ones use the new
/// routes. Needs root and the daemon binary (`cargo build -p netguard`).
#[test]
fn websocket_tunnel_survives_a_daemon_reload_on_sighup() {
    use netguard_tests::sandbox::EDGE_ADDR;
    let sb = netguard_tests::Sandbox::new();
    let a = WsEcho::start_in(&sb.edge, "A");
    let b = WsEcho::start_in(&sb.edge, "B");
    let toml = |backend: SocketAddr| {
        format!(
            "[proxy]\nhttp_listen = \"{EDGE_ADDR}:80\"\nrouter_log = \"stderr\"\n\
             tunnel_idle_timeout_secs = 30\n\n[[app]]\nname = \"ws\"\ndomains = [\"{WS}\"]\n\
             backends = [\"{backend}\"]\n"
        )
    };
    let mut config = netguard_tests::Config::for_sandbox(&sb);
    config.extra = toml(a.addr);
    let mut daemon = netguard_tests::Daemon::start(&sb.edge, &config);
    let connect = || {
        let stream = netguard_tests::in_netns(sb.client.name(), || {
            TcpStream::connect_timeout(&SocketAddr::from((EDGE_ADDR, 80)), T)
        })
        .expect("enter the client namespace")
        .expect("connect to the proxy");
        ws_over(stream)
    };

    let (mut kept, status) = connect();
    assert_eq!(status, 101, "daemon log:\n{}", daemon.log_tail(30));
    assert_eq!(ws_text(&mut kept, "before"), "A:before");

    config.extra = toml(b.addr);
    std::fs::write(daemon.config_path(), config.to_toml()).expect("rewrite config");
    daemon.signal(libc::SIGHUP);
    daemon
        .wait_for_log("proxy routes reloaded", T)
        .expect("reload logged");

    assert_eq!(
        ws_text(&mut kept, "after"),
        "A:after",
        "the open tunnel kept its backend"
    );
    let (mut fresh, _) = connect();
    assert_eq!(
        ws_text(&mut fresh, "new"),
        "B:new",
        "new tunnels use the new routes"
    );
    kept.close(None).expect("close");
    while kept.read().is_ok() {}
    let deadline = Instant::now() + T;
    while a.client_closes() < 1 {
        assert!(
            Instant::now() < deadline,
            "the old backend never saw the close"
        );
        thread::sleep(Duration::from_millis(10));
    }
    daemon
        .wait_for_log("app=ws method=GET path=/chat status=101", T)
        .expect("the tunnel's router log line once it ended");
}
