//! End to end: the L7 proxy on loopback, in process (`netguard::proxy::Proxy`), with recording
//! backends that store the exact bytes they receive, real curl, and raw sockets for what curl
//! will not send. Every framing test asserts what reached the backend: nothing for a refused
//! request, exactly one canonical request for an accepted one.
//!
//! Needs curl. No root, no eBPF object: `AYA_BUILD_SKIP=1 cargo test -p netguard-tests --test
//! e2e_proxy`, except the last test: it runs the real daemon binary in a namespace (root, and
//! `cargo build -p netguard` first) and fails without them.

use std::{
    net::SocketAddr,
    thread,
    time::{Duration, Instant},
};

use netguard::{
    config::{AppConfig, ProxyConfig, Seconds},
    units::Bytes,
};
use netguard_tests::{
    certs::certificate,
    http::{Client, Response, curl, curl_to_edge, exchange},
    recording::{RecordingBackend, Reply, pattern, request_complete},
};

mod proxy_edge;

use proxy_edge::{Edge, T, app, assert_error_page, padding_args, refusing_addr, statuses};

const SHOP: &str = "shop.example.com";

impl Edge {
    fn addr(&self) -> SocketAddr {
        self.proxy.http_addr()
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr())
    }

    fn client(&self) -> Client {
        Client::connect(self.addr())
    }
}

fn config() -> ProxyConfig {
    ProxyConfig {
        http_listen: "127.0.0.1:0".parse().expect("address"),
        max_body_bytes: Bytes(1000),
        ..ProxyConfig::default()
    }
}

/// One backend for shop.example.com answering 200 "ok".
fn shop() -> (RecordingBackend, Edge) {
    shop_with(config())
}

fn shop_with(config: ProxyConfig) -> (RecordingBackend, Edge) {
    let backend = RecordingBackend::start(Reply::Status(200, b"ok".to_vec()));
    let edge = Edge::start(config, vec![app("shop", &[SHOP], &[backend.addr()])]);
    (backend, edge)
}

fn host(h: &str) -> String {
    format!("Host: {h}")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

// ---------------------------------------------------------------------------------------------
// Smuggling and framing: raw bytes in, status out, bytes at the backend.

struct Case {
    name: &'static str,
    raw: Vec<u8>,
    /// Statuses of the responses, in order.
    want: &'static [u16],
    /// Complete requests the backend must have received.
    forwarded: usize,
}

fn case(name: &'static str, raw: &str, want: &'static [u16], forwarded: usize) -> Case {
    Case {
        name,
        raw: raw.as_bytes().to_vec(),
        want,
        forwarded,
    }
}

fn smuggling_cases() -> Vec<Case> {
    let s = "Host: shop.example.com";
    let post = |extra: &str, body: &str| format!("POST / HTTP/1.1\r\n{s}\r\n{extra}\r\n\r\n{body}");
    let hidden = "GET /admin HTTP/1.1\r\nHost: shop.example.com\r\n\r\n";
    vec![
        // Content-Length with Transfer-Encoding, both orders, a request hidden behind either.
        case(
            "cl_te",
            &post(
                "Content-Length: 4\r\nTransfer-Encoding: chunked",
                &format!("0\r\n\r\n{hidden}"),
            ),
            &[400],
            0,
        ),
        case(
            "te_cl",
            &post(
                "Transfer-Encoding: chunked\r\nContent-Length: 48",
                &format!("0\r\n\r\n{hidden}"),
            ),
            &[400],
            0,
        ),
        // Content-Length values.
        case("cl_plus", &post("Content-Length: +5", "hello"), &[400], 0),
        case(
            "cl_hex",
            &post("Content-Length: 0x10", "0123456789abcdef"),
            &[400],
            0,
        ),
        case(
            "cl_underscore",
            &post("Content-Length: 1_0", "0123456789"),
            &[400],
            0,
        ),
        case(
            "cl_inner_space",
            &post("Content-Length: 1 0", "0123456789"),
            &[400],
            0,
        ),
        case(
            "cl_overflow",
            &post("Content-Length: 18446744073709551617", "x"),
            &[400],
            0,
        ),
        case(
            "cl_differing",
            &post("Content-Length: 5\r\nContent-Length: 6", "hello!"),
            &[400],
            0,
        ),
        case("cl_list", &post("Content-Length: 5, 5", "hello"), &[400], 0),
        // Transfer-Encoding obfuscations.
        case(
            "te_xchunked",
            &post("Transfer-Encoding: xchunked", "0\r\n\r\n"),
            &[400],
            0,
        ),
        case(
            "te_chunked_chunked",
            &post("Transfer-Encoding: chunked, chunked", "0\r\n\r\n"),
            &[400],
            0,
        ),
        case(
            "te_tab",
            &post("Transfer-Encoding:\tchunked", "0\r\n\r\n"),
            &[400],
            0,
        ),
        case(
            "te_vertical_tab",
            &post("Transfer-Encoding: \x0bchunked", "0\r\n\r\n"),
            &[400],
            0,
        ),
        case(
            "te_nul",
            &post("Transfer-Encoding: chunked\0", "0\r\n\r\n"),
            &[400],
            0,
        ),
        case(
            "te_obs_folded",
            &post("Transfer-Encoding:\r\n chunked", "0\r\n\r\n"),
            &[400],
            0,
        ),
        case(
            "te_http10",
            &format!("POST / HTTP/1.0\r\n{s}\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
            &[400],
            0,
        ),
        // Chunk framing (the body arrives with the head, so it is checked before any byte
        // goes to a backend).
        case(
            "chunk_size_0x",
            &post("Transfer-Encoding: chunked", "0x5\r\nhello\r\n0\r\n\r\n"),
            &[400],
            0,
        ),
        case(
            "chunk_size_negative",
            &post("Transfer-Encoding: chunked", "-5\r\nhello\r\n0\r\n\r\n"),
            &[400],
            0,
        ),
        case(
            "chunk_size_space",
            &post("Transfer-Encoding: chunked", "5 \r\nhello\r\n0\r\n\r\n"),
            &[400],
            0,
        ),
        case(
            "chunk_size_overflow",
            &post(
                "Transfer-Encoding: chunked",
                "fffffffffffffffff\r\nx\r\n0\r\n\r\n",
            ),
            &[400],
            0,
        ),
        case(
            "chunk_line_bare_lf",
            &post("Transfer-Encoding: chunked", "5\nhello\r\n0\r\n\r\n"),
            &[400],
            0,
        ),
        case(
            "chunk_line_bare_cr",
            &post("Transfer-Encoding: chunked", "5\rhello\r\n0\r\n\r\n"),
            &[400],
            0,
        ),
        case(
            "chunk_data_bare_lf",
            &post("Transfer-Encoding: chunked", "5\r\nhello\n0\r\n\r\n"),
            &[400],
            0,
        ),
        case(
            "chunk_data_too_long",
            &post("Transfer-Encoding: chunked", "3\r\nhello\r\n0\r\n\r\n"),
            &[400],
            0,
        ),
        case(
            "chunk_last_bare_lf",
            &post("Transfer-Encoding: chunked", "0\n\n"),
            &[400],
            0,
        ),
        // Head syntax.
        case(
            "obs_fold",
            &format!("GET / HTTP/1.1\r\n{s}\r\nX-A: b\r\n c\r\n\r\n"),
            &[400],
            0,
        ),
        case(
            "space_before_colon",
            &format!("GET / HTTP/1.1\r\n{s}\r\nX-A : b\r\n\r\n"),
            &[400],
            0,
        ),
        case(
            "ctl_in_name",
            &format!("GET / HTTP/1.1\r\n{s}\r\nX\x01A: b\r\n\r\n"),
            &[400],
            0,
        ),
        case(
            "ctl_in_value",
            &format!("GET / HTTP/1.1\r\n{s}\r\nX-A: b\x7fc\r\n\r\n"),
            &[400],
            0,
        ),
        case(
            "bare_lf_head",
            &format!("GET / HTTP/1.1\n{s}\n\n"),
            &[400],
            0,
        ),
        case("missing_host", "GET / HTTP/1.1\r\n\r\n", &[400], 0),
        case(
            "duplicate_host",
            &format!("GET / HTTP/1.1\r\n{s}\r\n{s}\r\n\r\n"),
            &[400],
            0,
        ),
        case(
            "host_userinfo",
            "GET / HTTP/1.1\r\nHost: user@shop.example.com\r\n\r\n",
            &[400],
            0,
        ),
        // Early answers never execute a request hidden in the unread body.
        case(
            "cl_above_max_hides_request",
            &post("Content-Length: 1001", hidden),
            &[413],
            0,
        ),
        case(
            "chunk_above_max_hides_request",
            &post("Transfer-Encoding: chunked", &format!("3e9\r\n{hidden}")),
            &[413],
            0,
        ),
        case(
            "unknown_host_hides_request",
            &format!(
                "POST / HTTP/1.1\r\nHost: nowhere.example\r\nContent-Length: {}\r\n\r\n{hidden}",
                hidden.len()
            ),
            &[404],
            0,
        ),
        case(
            "expect_other",
            &post("Expect: teapot\r\nContent-Length: 48", hidden),
            &[417],
            0,
        ),
        // A body-less request: what follows is the next request and is checked again.
        case(
            "next_request_checked_again",
            &format!(
                "GET /1 HTTP/1.1\r\n{s}\r\n\r\nPOST /2 HTTP/1.1\r\n{s}\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n"
            ),
            &[200, 400],
            1,
        ),
        case(
            "no_framing_means_empty_body",
            &format!(
                "POST /1 HTTP/1.1\r\n{s}\r\n\r\nGET /2 HTTP/1.1\r\n{s}\r\nConnection: close\r\n\r\n"
            ),
            &[200, 200],
            2,
        ),
        // Upgrade without a 101: the next bytes are parsed as HTTP.
        case(
            "upgrade_without_101",
            &format!(
                "GET /ws HTTP/1.1\r\n{s}\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\nGET /after HTTP/1.1\r\n{s}\r\nConnection: close\r\n\r\n"
            ),
            &[200, 200],
            2,
        ),
    ]
}

#[test]
fn smuggling_suite_status_and_backend_bytes() {
    let (backend, edge) = shop();
    let cases = smuggling_cases();
    for c in &cases {
        backend.clear();
        let (responses, closed) = exchange(edge.addr(), &c.raw, T);
        assert_eq!(
            statuses(&responses),
            c.want,
            "{}: responses {responses:#?}",
            c.name
        );
        assert!(closed, "{}: the connection must close", c.name);
        let got = backend.wait_requests(c.forwarded, T);
        assert_eq!(
            got.len(),
            c.forwarded,
            "{}: backend received {:?}",
            c.name,
            got.iter().map(|r| text(r)).collect::<Vec<_>>()
        );
        assert!(
            got.iter().all(|r| request_complete(r)),
            "{}: incomplete request at the backend",
            c.name
        );
        for r in responses.iter().filter(|r| r.status >= 400) {
            assert_error_page(r, r.status);
        }
    }
    // Requests forwarded by the accepted cases are the canonical ones: `/1` first.
    backend.clear();
    let (_, _) = exchange(edge.addr(), &cases[cases.len() - 3].raw, T);
    let got = backend.wait_requests(1, T);
    assert!(text(&got[0]).starts_with("GET /1 HTTP/1.1\r\nHost: shop.example.com\r\n"));
    let log = edge.log_lines(1);
    assert!(log.iter().any(|l| l.contains(" status=400 ")), "{log:#?}");
}

#[test]
fn accepted_requests_reach_the_backend_in_canonical_form() {
    let (backend, edge) = shop();
    let port = edge.addr().port();
    let (r, _) = exchange(
        edge.addr(),
        b"POST /x?y=1 HTTP/1.1\r\nHost: shop.example.com\r\nX-Request-ID: test-1\r\nX-Forwarded-For: 6.6.6.6\r\nKeep-Alive: 5\r\nContent-Length:  5 \r\nConnection: close\r\n\r\nhello",
        T,
    );
    assert_eq!(statuses(&r), [200]);
    assert_eq!(r[0].body, b"ok");
    let got = backend.wait_requests(1, T);
    assert_eq!(
        text(&got[0]),
        format!(
            "POST /x?y=1 HTTP/1.1\r\nHost: shop.example.com\r\nX-Forwarded-For: 127.0.0.1\r\n\
             X-Forwarded-Proto: http\r\nX-Forwarded-Port: {port}\r\nX-Request-ID: test-1\r\n\
             Content-Length: 5\r\n\r\nhello"
        )
    );

    // HEAD: the response's Content-Length is passed on, no body follows (even though this
    // backend wrongly sends one).
    let mut c = edge.client();
    c.write(b"HEAD /h HTTP/1.1\r\nHost: shop.example.com\r\nConnection: close\r\n\r\n");
    assert!(c.closed_within(T));
    let raw = text(c.unread());
    assert!(raw.starts_with("HTTP/1.1 200 Recorded\r\n"), "{raw}");
    assert!(
        raw.contains("\r\nContent-Length: 2\r\n") && raw.ends_with("\r\n\r\n"),
        "{raw}"
    );
    backend.clear();

    // A chunked body is decoded strictly and re-encoded: extensions and trailers are dropped.
    backend.clear();
    let (r, _) = exchange(
        edge.addr(),
        b"PUT /c HTTP/1.1\r\nHost: shop.example.com\r\nX-Request-ID: test-2\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n",
        T,
    );
    assert_eq!(statuses(&r), [200]);
    let got = backend.wait_requests(1, T);
    assert_eq!(
        text(&got[0]),
        format!(
            "PUT /c HTTP/1.1\r\nHost: shop.example.com\r\nX-Forwarded-For: 127.0.0.1\r\n\
             X-Forwarded-Proto: http\r\nX-Forwarded-Port: {port}\r\nX-Request-ID: test-2\r\n\
             Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
        )
    );
}

#[test]
fn body_over_the_limit_discovered_while_streaming_aborts_the_backend_request() {
    let (backend, edge) = shop();
    let mut c = edge.client();
    let first = format!("{}\r\n", "x".repeat(600));
    c.write(
        format!(
            "POST /up HTTP/1.1\r\n{}\r\nTransfer-Encoding: chunked\r\n\r\n258\r\n{first}",
            host(SHOP)
        )
        .as_bytes(),
    );
    // The head and the first 600 bytes reach the backend...
    let deadline = Instant::now() + T;
    while !backend
        .received()
        .first()
        .is_some_and(|r| r.ends_with(first.as_bytes()))
    {
        assert!(
            Instant::now() < deadline,
            "first chunk never reached the backend"
        );
        thread::sleep(Duration::from_millis(10));
    }
    // ...and the chunk that passes 1,000 bytes is refused: 413, and the backend's request is
    // cut off (it never gets the last chunk, so it cannot act on it).
    c.write(format!("258\r\n{first}0\r\n\r\n").as_bytes());
    let r = c.response(T);
    assert_error_page(&r, 413);
    assert!(c.closed_within(T));
    thread::sleep(Duration::from_millis(100));
    let got = backend.received();
    assert_eq!(got.len(), 1);
    assert!(!request_complete(&got[0]), "{}", text(&got[0]));

    // The same with a malformed chunk line after the first chunk: 400.
    backend.clear();
    let mut c = edge.client();
    c.write(
        format!(
            "POST /up HTTP/1.1\r\n{}\r\nTransfer-Encoding: chunked\r\n\r\n258\r\n{first}",
            host(SHOP)
        )
        .as_bytes(),
    );
    let deadline = Instant::now() + T;
    while backend.received().is_empty() {
        assert!(Instant::now() < deadline);
        thread::sleep(Duration::from_millis(10));
    }
    c.write(b"5\nhello\r\n0\r\n\r\n");
    assert_error_page(&c.response(T), 400);
    assert!(c.closed_within(T));
    thread::sleep(Duration::from_millis(100));
    assert!(!request_complete(&backend.received()[0]));
}

// ---------------------------------------------------------------------------------------------
// curl: routing, errors, limits, keep-alive, forwarded headers, the router log.

#[test]
fn routes_by_host_with_curl() {
    let shop_backend = RecordingBackend::start(Reply::Status(200, b"shop".to_vec()));
    let blog_backend = RecordingBackend::start(Reply::Status(200, b"blog".to_vec()));
    let edge = Edge::start(
        config(),
        vec![
            app(
                "shop",
                &[SHOP, "*.shop.example.com"],
                &[shop_backend.addr()],
            ),
            app(
                "blog",
                &["blog.example.com", "api.shop.example.com"],
                &[blog_backend.addr()],
            ),
        ],
    );
    let url = edge.url("/p");
    for (h, want) in [
        ("shop.example.com", "shop"),
        ("SHOP.Example.com.", "shop"),
        ("shop.example.com:8080", "shop"),
        ("www.shop.example.com", "shop"),
        ("a.b.shop.example.com", "shop"),
        ("api.shop.example.com", "blog"),
        ("blog.example.com", "blog"),
    ] {
        let (r, code, err) = curl(&["-H", &host(h), &url]);
        assert_eq!(code, Some(0), "{h}: {err}");
        assert_eq!((r[0].status, r[0].body_text().as_str()), (200, want), "{h}");
    }
    let (r, _, _) = curl(&["-H", "Host: example.com", &url]);
    assert_error_page(&r[0], 404);
    let (r, _, _) = curl(&["-H", "Host: other.org", &url]);
    assert_error_page(&r[0], 404);
    // Exactly one request per routed curl reached each backend.
    assert_eq!(shop_backend.wait_requests(5, T).len(), 5);
    assert_eq!(blog_backend.wait_requests(2, T).len(), 2);
}

#[test]
fn backend_failures_are_502_503_504_with_curl() {
    let closing = RecordingBackend::start(Reply::Close);
    let hanging = RecordingBackend::start(Reply::Hang);
    let garbage = RecordingBackend::start(Reply::Raw(b"SSH-2.0-nope\r\n\r\n".to_vec()));
    let edge = Edge::start(
        ProxyConfig {
            backend_response_timeout_secs: Seconds(Duration::from_millis(500)),
            ..config()
        },
        vec![
            app("refused", &["refused.example"], &[refusing_addr()]),
            app("closing", &["closing.example"], &[closing.addr()]),
            app("hanging", &["hanging.example"], &[hanging.addr()]),
            app("garbage", &["garbage.example"], &[garbage.addr()]),
            app("empty", &["empty.example"], &[]),
        ],
    );
    let url = edge.url("/");
    for (h, status) in [
        ("refused.example", 502),
        ("closing.example", 502),
        ("garbage.example", 502),
        ("hanging.example", 504),
        ("empty.example", 503),
    ] {
        let started = Instant::now();
        let (r, code, err) = curl(&["-H", &host(h), &url]);
        assert_eq!(code, Some(0), "{h}: {err}");
        assert_error_page(&r[0], status);
        if status == 504 {
            let took = started.elapsed();
            assert!(
                took >= Duration::from_millis(450) && took < Duration::from_secs(3),
                "{took:?}"
            );
        }
    }
    // The refusing backend was ejected: with no live backend left, the app answers 503.
    let (r, _, _) = curl(&["-H", "Host: refused.example", &url]);
    assert_error_page(&r[0], 503);
}

#[test]
fn retries_on_another_backend_and_ejects_the_dead_one() {
    let live = RecordingBackend::start(Reply::Status(200, b"live".to_vec()));
    let dead = refusing_addr();
    let edge = Edge::start(
        ProxyConfig {
            backend_eject_secs: Seconds(Duration::from_secs(60)),
            ..config()
        },
        vec![app("shop", &[SHOP], &[dead, live.addr()])],
    );
    for i in 0..6 {
        let (r, _, err) = curl(&["-H", &host(SHOP), &edge.url(&format!("/{i}"))]);
        assert_eq!(statuses(&r), [200], "request {i}: {err}");
        assert_eq!(r[0].body, b"live");
    }
    assert_eq!(live.wait_requests(6, T).len(), 6);
    let lines = edge.log_lines(6);
    assert!(
        lines
            .iter()
            .all(|l| l.contains(&format!("backend={}", live.addr()))),
        "{lines:#?}"
    );

    // Round-robin over two live backends.
    let other = RecordingBackend::start(Reply::Status(200, b"other".to_vec()));
    let edge = Edge::start(
        config(),
        vec![app("shop", &[SHOP], &[live.addr(), other.addr()])],
    );
    live.clear();
    for _ in 0..4 {
        let (r, _, _) = curl(&["-H", &host(SHOP), &edge.url("/")]);
        assert_eq!(statuses(&r), [200]);
    }
    assert_eq!(live.wait_requests(2, T).len(), 2);
    assert_eq!(other.wait_requests(2, T).len(), 2);
}

#[test]
fn body_limit_413_with_curl() {
    let (backend, edge) = shop();
    let dir = netguard_tests::TempDir::new().expect("temp dir");
    let at = dir.join("at");
    let over = dir.join("over");
    std::fs::write(&at, vec![b'a'; 1000]).expect("write");
    std::fs::write(&over, vec![b'a'; 1001]).expect("write");
    let (at, over) = (format!("@{}", at.display()), format!("@{}", over.display()));
    let url = edge.url("/upload");
    let h = host(SHOP);

    // Content-Length: at the limit passes, one byte more is refused before the backend.
    let (r, _, err) = curl(&["-H", &h, "--data-binary", &at, &url]);
    assert_eq!(statuses(&r), [200], "{err}");
    assert_eq!(backend.wait_requests(1, T).len(), 1);
    backend.clear();
    let (r, _, _) = curl(&["-H", &h, "--data-binary", &over, &url]);
    assert_error_page(r.last().expect("a response"), 413);
    thread::sleep(Duration::from_millis(100));
    assert_eq!(backend.connections(), 0);

    // Chunked.
    let chunked = "Transfer-Encoding: chunked";
    let (r, _, err) = curl(&["-H", &h, "-H", chunked, "--data-binary", &at, &url]);
    assert_eq!(statuses(&r), [200], "{err}");
    let got = backend.wait_requests(1, T);
    assert!(text(&got[0]).contains("Transfer-Encoding: chunked\r\n"));
    backend.clear();
    let (r, _, _) = curl(&["-H", &h, "-H", chunked, "--data-binary", &over, &url]);
    assert_error_page(r.last().expect("a response"), 413);
    thread::sleep(Duration::from_millis(100));
    assert!(backend.received().iter().all(|r| !request_complete(r)));

    // A body announced far above the limit (curl asks with Expect: 100-continue first).
    let (r, _, _) = curl(&[
        "-H",
        &h,
        "-H",
        "Content-Length: 100000000",
        "-H",
        "Expect: 100-continue",
        "--data-binary",
        &at,
        &url,
    ]);
    assert_error_page(r.last().expect("a response"), 413);
}

/// `-H` arguments whose field lines (with CRLFs), plus `Host: shop.example.com\r\n`, make a
/// header section of exactly `section` bytes. curl's own User-Agent and Accept are removed.
fn section_args(section: usize) -> Vec<String> {
    padding_args(section - (host(SHOP).len() + 2), "X-Pad")
}

#[test]
fn header_limits_431_at_exact_boundaries_with_curl() {
    let (backend, edge) = shop();
    let url = edge.url("/");
    let h = host(SHOP);
    let line = |len: usize| format!("X-Long: {}", "l".repeat(len - "X-Long: ".len()));
    let (r, _, err) = curl(&["-H", &h, "-H", &line(8192), &url]);
    assert_eq!(statuses(&r), [200], "8,192-byte line passes: {err}");
    let got = backend.wait_requests(1, T);
    assert!(text(&got[0]).contains(&format!("{}\r\n", line(8192))));
    backend.clear();
    let (r, _, _) = curl(&["-H", &h, "-H", &line(8193), &url]);
    assert_error_page(&r[0], 431);
    assert_eq!(backend.connections(), 0);

    for (section, want) in [(32768, 200), (32769, 431)] {
        let args = section_args(section);
        let mut all: Vec<&str> = vec!["-H", &h];
        all.extend(args.iter().map(String::as_str));
        all.push(&url);
        let (r, _, err) = curl(&all);
        assert_eq!(statuses(&r), [want], "section of {section} bytes: {err}");
    }
    // Check the section size curl sent is what we meant: the backend got the 32,768 one.
    let got = backend.wait_requests(1, T);
    assert_eq!(got.len(), 1);
}

#[test]
fn keep_alive_and_pipelining() {
    let (backend, edge) = shop();
    // curl reuses one connection for both URLs.
    let (r, code, err) = curl(&["-H", &host(SHOP), &edge.url("/a"), &edge.url("/b")]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(statuses(&r), [200, 200]);
    let lines = edge.log_lines(2);
    let client_of = |l: &String| {
        l.split(' ')
            .find(|f| f.starts_with("client="))
            .map(str::to_owned)
    };
    assert_eq!(client_of(&lines[0]), client_of(&lines[1]), "{lines:#?}");
    assert!(
        r[0].header("connection").is_none(),
        "kept alive: {}",
        r[0].head
    );
    assert_eq!(backend.wait_requests(2, T).len(), 2);

    // Three pipelined requests in one write: three responses in order, each request forwarded
    // separately and canonically.
    backend.clear();
    let mut c = edge.client();
    let req = |p: &str, extra: &str| {
        format!(
            "GET /{p} HTTP/1.1\r\n{}\r\nX-Request-ID: {p}\r\n{extra}\r\n",
            host(SHOP)
        )
    };
    c.write(
        format!(
            "{}{}{}",
            req("p1", ""),
            req("p2", ""),
            req("p3", "Connection: close\r\n")
        )
        .as_bytes(),
    );
    let rs = c.responses(3, T);
    assert_eq!(statuses(&rs), [200, 200, 200]);
    assert!(c.closed_within(T));
    let got = backend.wait_requests(3, T);
    let mut firsts: Vec<String> = got
        .iter()
        .map(|r| text(r).lines().next().unwrap_or("").to_owned())
        .collect();
    firsts.sort();
    assert_eq!(
        firsts,
        ["GET /p1 HTTP/1.1", "GET /p2 HTTP/1.1", "GET /p3 HTTP/1.1"]
    );
    let lines = edge.log_lines(5);
    let order: Vec<&str> = lines[2..5]
        .iter()
        .map(|l| l.split(' ').find(|f| f.starts_with("path=")).unwrap_or(""))
        .collect();
    assert_eq!(order, ["path=/p1", "path=/p2", "path=/p3"]);

    // An idle kept-alive connection stays usable.
    let mut c = edge.client();
    c.write(req("k1", "").as_bytes());
    assert_eq!(c.response(T).status, 200);
    thread::sleep(Duration::from_millis(300));
    c.write(req("k2", "").as_bytes());
    assert_eq!(c.response(T).status, 200);
}

#[test]
fn forwarded_headers_and_request_id_with_curl() {
    let (backend, edge) = shop();
    let h = host(SHOP);
    let (r, _, _) = curl(&[
        "-H",
        &h,
        "-H",
        "X-Forwarded-For: 203.0.113.66",
        "-H",
        "X-Forwarded-Proto: https",
        "-H",
        "X-Real-IP: 203.0.113.66",
        "-H",
        "Forwarded: for=203.0.113.66",
        &edge.url("/"),
    ]);
    assert_eq!(statuses(&r), [200]);
    let got = text(&backend.wait_requests(1, T)[0]);
    assert!(got.contains("\r\nX-Forwarded-For: 127.0.0.1\r\n"), "{got}");
    assert!(got.contains("\r\nX-Forwarded-Proto: http\r\n"), "{got}");
    assert!(
        got.contains(&format!("\r\nX-Forwarded-Port: {}\r\n", edge.addr().port())),
        "{got}"
    );
    assert!(
        !got.contains("203.0.113.66"),
        "untrusted client's forwarding fields dropped: {got}"
    );
    assert!(got.contains("\r\nHost: shop.example.com\r\n"), "{got}");
    let id = got
        .lines()
        .find_map(|l| l.strip_prefix("X-Request-ID: "))
        .expect("a generated request id");
    assert!(
        id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()),
        "{id}"
    );
    let lines = edge.log_lines(1);
    assert!(
        lines[0].ends_with(&format!(" request_id={id}")),
        "{lines:#?}"
    );

    // From a trusted proxy the chain is appended to and its proto kept.
    let (backend, edge) = shop_with(ProxyConfig {
        trusted_proxies: vec!["127.0.0.0/8".parse().expect("net")],
        ..config()
    });
    let (r, _, _) = curl(&[
        "-H",
        &h,
        "-H",
        "X-Forwarded-For: 203.0.113.66",
        "-H",
        "X-Forwarded-Proto: https",
        "-H",
        "X-Request-ID: from-upstream-1",
        &edge.url("/"),
    ]);
    assert_eq!(statuses(&r), [200]);
    let got = text(&backend.wait_requests(1, T)[0]);
    assert!(
        got.contains("\r\nX-Forwarded-For: 203.0.113.66, 127.0.0.1\r\n"),
        "{got}"
    );
    assert!(got.contains("\r\nX-Forwarded-Proto: https\r\n"), "{got}");
    assert!(
        got.contains("\r\nX-Request-ID: from-upstream-1\r\n"),
        "{got}"
    );
}

#[test]
fn router_log_line_per_request() {
    let (backend, edge) = shop();
    let (r, _, _) = curl(&[
        "-H",
        &host(SHOP),
        "--data-binary",
        "hello",
        &edge.url("/log?q=1"),
    ]);
    assert_eq!(statuses(&r), [200]);
    let (r, _, _) = curl(&["-H", "Host: nowhere.example", &edge.url("/missing")]);
    assert_eq!(statuses(&r), [404]);
    let lines = edge.log_lines(2);
    assert_eq!(lines.len(), 2, "{lines:#?}");
    let fields = |l: &str| -> Vec<(String, String)> {
        l.split(' ')
            .filter_map(|f| f.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect()
    };
    let ok = fields(&lines[0]);
    let keys: Vec<&str> = ok.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(
        keys,
        [
            "time",
            "app",
            "method",
            "path",
            "status",
            "bytes_in",
            "bytes_out",
            "duration_ms",
            "client",
            "backend",
            "request_id"
        ]
    );
    let get = |f: &[(String, String)], k: &str| {
        f.iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    assert_eq!(get(&ok, "app"), "shop");
    assert_eq!(get(&ok, "method"), "POST");
    assert!(lines[0].contains(" path=\"/log?q=1\" "), "{}", lines[0]);
    assert_eq!(get(&ok, "status"), "200");
    assert!(get(&ok, "bytes_in").parse::<u64>().expect("number") > 5);
    assert!(get(&ok, "bytes_out").parse::<u64>().expect("number") > 2);
    assert!(get(&ok, "client").starts_with("127.0.0.1:"));
    assert_eq!(get(&ok, "backend"), backend.addr().to_string());
    assert!(get(&ok, "time").ends_with('Z'));
    let missing = fields(&lines[1]);
    assert_eq!(get(&missing, "app"), "-");
    assert_eq!(get(&missing, "status"), "404");
    assert_eq!(get(&missing, "backend"), "-");
}

#[test]
fn expect_100_continue_and_large_bodies_stream_both_ways() {
    const BIG: usize = 20 * 1024 * 1024;
    let backend = RecordingBackend::start(Reply::Stream {
        head: format!("HTTP/1.1 200 OK\r\nContent-Length: {BIG}\r\n"),
        len: BIG,
    });
    let chunked_backend = RecordingBackend::start(Reply::Raw(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nWiki\r\n5\r\npedia\r\n0\r\n\r\n".to_vec(),
    ));
    let close_backend = RecordingBackend::start(Reply::Stream {
        head: "HTTP/1.1 200 OK\r\n".into(),
        len: 3 * 1024 * 1024,
    });
    let edge = Edge::start(
        ProxyConfig {
            max_body_bytes: Bytes(8 * 1024 * 1024),
            ..config()
        },
        vec![
            app("big", &["big.example"], &[backend.addr()]),
            app("chunked", &["chunked.example"], &[chunked_backend.addr()]),
            app("close", &["close.example"], &[close_backend.addr()]),
        ],
    );

    // 20 MB response, Content-Length framed, passed through.
    let mut c = edge.client();
    c.write(b"GET / HTTP/1.1\r\nHost: big.example\r\n\r\n");
    let r = c.response(Duration::from_secs(20));
    assert_eq!(r.body.len(), BIG);
    assert!(r.body == pattern(BIG), "body bytes intact");

    // A chunked response is re-chunked for HTTP/1.1 and sent raw, then closed, for HTTP/1.0.
    let (r, _) = exchange(
        edge.addr(),
        b"GET / HTTP/1.1\r\nHost: chunked.example\r\nConnection: close\r\n\r\n",
        T,
    );
    assert_eq!(
        (r[0].body.as_slice(), r[0].chunked),
        (&b"Wikipedia"[..], true)
    );
    let (r, closed) = exchange(
        edge.addr(),
        b"GET / HTTP/1.0\r\nHost: chunked.example\r\n\r\n",
        T,
    );
    assert!(closed);
    assert_eq!(
        (r[0].body.as_slice(), r[0].chunked),
        (&b"Wikipedia"[..], false)
    );
    // A close-delimited response becomes chunked for HTTP/1.1 and the connection stays usable.
    let mut c = edge.client();
    c.write(b"GET / HTTP/1.1\r\nHost: close.example\r\n\r\n");
    let r = c.response(Duration::from_secs(20));
    assert!(r.chunked && r.body == pattern(3 * 1024 * 1024));
    c.write(b"GET /again HTTP/1.1\r\nHost: chunked.example\r\n\r\n");
    assert_eq!(c.response(T).body, b"Wikipedia");

    // curl with Expect: 100-continue and a 5 MB chunked upload: it gets 100, then 200, and the
    // backend receives every byte.
    let sink = RecordingBackend::start(Reply::Status(200, b"stored".to_vec()));
    let edge = Edge::start(
        ProxyConfig {
            max_body_bytes: Bytes(8 * 1024 * 1024),
            ..config()
        },
        vec![app("sink", &["sink.example"], &[sink.addr()])],
    );
    let dir = netguard_tests::TempDir::new().expect("temp dir");
    let file = dir.join("upload");
    std::fs::write(&file, pattern(5 * 1024 * 1024)).expect("write");
    let data = format!("@{}", file.display());
    let (r, code, err) = curl(&[
        "-H",
        "Host: sink.example",
        "-H",
        "Expect: 100-continue",
        "-H",
        "Transfer-Encoding: chunked",
        "--data-binary",
        &data,
        &edge.url("/upload"),
    ]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(statuses(&r), [100, 200]);
    let got = sink.wait_requests(1, Duration::from_secs(20));
    let body_at = got[0]
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("head")
        + 4;
    let body =
        netguard_tests::recording::dechunk(&got[0][body_at..]).expect("complete chunked body");
    assert!(body == pattern(5 * 1024 * 1024), "uploaded bytes intact");
    assert!(
        !text(&got[0][..body_at]).contains("Expect"),
        "Expect is answered by the proxy"
    );
}

#[test]
fn slow_heads_and_bodies_time_out() {
    let (backend, edge) = shop_with(ProxyConfig {
        header_read_timeout_secs: Seconds(Duration::from_millis(800)),
        body_read_timeout_secs: Seconds(Duration::from_millis(800)),
        body_min_bytes_per_sec: netguard::units::BytesPerSec(1000),
        keepalive_timeout_secs: Seconds(Duration::from_millis(800)),
        ..config()
    });
    // Slowloris: a byte at a time, but the head has an absolute deadline.
    let started = Instant::now();
    let mut c = edge.client();
    let head = format!("GET / HTTP/1.1\r\n{}\r\nX-Slow: ", host(SHOP));
    c.write(head.as_bytes());
    for _ in 0..20 {
        if !c.write(b"a") || c.closed_within(Duration::from_millis(100)) || !c.unread().is_empty() {
            break;
        }
    }
    let r = c.response(T);
    assert_error_page(&r, 408);
    let took = started.elapsed();
    assert!(took < Duration::from_millis(2000), "{took:?}");
    assert_eq!(backend.connections(), 0);

    // A connection that never sends anything is closed silently.
    let mut c = edge.client();
    assert!(c.closed_within(T));
    assert!(c.unread().is_empty());

    // A body that stalls: 408 after the slack.
    let mut c = edge.client();
    c.write(
        format!(
            "POST / HTTP/1.1\r\n{}\r\nContent-Length: 10\r\n\r\nabc",
            host(SHOP)
        )
        .as_bytes(),
    );
    let r = c.response(T);
    assert_error_page(&r, 408);
}

#[test]
fn upgrade_becomes_a_tunnel_only_after_101() {
    let backend = RecordingBackend::start(Reply::Upgrade);
    let edge = Edge::start(
        config(),
        vec![app("ws", &["ws.example"], &[backend.addr()])],
    );
    let mut c = edge.client();
    c.write(
        b"GET /ws HTTP/1.1\r\nHost: ws.example\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n",
    );
    let r = c.response(T);
    assert_eq!(r.status, 101);
    assert_eq!(r.header("upgrade"), Some("echo"));
    c.write(b"ping through the tunnel");
    let deadline = Instant::now() + T;
    while c.unread().len() < 23 && Instant::now() < deadline {
        c.closed_within(Duration::from_millis(50));
    }
    assert_eq!(c.unread(), b"ping through the tunnel");
    let got = text(&backend.wait_requests(1, T)[0]);
    assert!(
        got.contains("\r\nConnection: upgrade\r\nUpgrade: echo\r\n\r\n"),
        "{got}"
    );
}

#[test]
fn reload_swaps_routes_for_new_requests() {
    let old = RecordingBackend::start(Reply::Status(200, b"old".to_vec()));
    let new = RecordingBackend::start(Reply::Status(200, b"new".to_vec()));
    let config = config();
    let mut edge = Edge::start(config.clone(), vec![app("shop", &[SHOP], &[old.addr()])]);
    let mut kept = edge.client();
    kept.write(format!("GET / HTTP/1.1\r\n{}\r\n\r\n", host(SHOP)).as_bytes());
    assert_eq!(kept.response(T).body, b"old");

    edge.proxy
        .reload(
            &config,
            &[
                app("shop", &[SHOP], &[new.addr()]),
                app("blog", &["blog.example"], &[old.addr()]),
            ],
        )
        .expect("reload");
    let (r, _, _) = curl(&["-H", &host(SHOP), &edge.url("/")]);
    assert_eq!(r[0].body, b"new");
    let (r, _, _) = curl(&["-H", "Host: blog.example", &edge.url("/")]);
    assert_eq!(r[0].body, b"old");
    // The next request on a connection opened before the reload uses the new routes too.
    kept.write(format!("GET / HTTP/1.1\r\n{}\r\n\r\n", host(SHOP)).as_bytes());
    assert_eq!(kept.response(T).body, b"new");
}

#[test]
fn connection_caps() {
    let (_backend, edge) = shop_with(ProxyConfig {
        max_connections_per_client: 2,
        max_connections: 2,
        ..config()
    });
    let mut a = edge.client();
    let mut b = edge.client();
    a.write(format!("GET / HTTP/1.1\r\n{}\r\n\r\n", host(SHOP)).as_bytes());
    assert_eq!(a.response(T).status, 200);
    b.write(format!("GET / HTTP/1.1\r\n{}\r\n\r\n", host(SHOP)).as_bytes());
    assert_eq!(b.response(T).status, 200);
    let mut third = edge.client();
    let r = third.response(T);
    assert_error_page(&r, 503);
    assert!(third.closed_within(T));
    drop(a);
    // The slot is released when the first connection closes.
    let deadline = Instant::now() + T;
    while edge.proxy.open_connections() > 1 {
        assert!(Instant::now() < deadline, "connection count not released");
        thread::sleep(Duration::from_millis(10));
    }
    let mut fourth = edge.client();
    fourth.write(format!("GET / HTTP/1.1\r\n{}\r\n\r\n", host(SHOP)).as_bytes());
    assert_eq!(fourth.response(T).status, 200);
}

// ---------------------------------------------------------------------------------------------
// The real daemon: `netguard run` with the XDP filter attached in a sandbox namespace, the proxy
// on port 80 of the guarded address, curl from the client namespace, and a SIGHUP reload.

fn proxy_toml(backend: SocketAddr) -> String {
    format!(
        "[proxy]\nhttp_listen = \"{}:80\"\nrouter_log = \"stderr\"\n\n[[app]]\nname = \"shop\"\ndomains = [\"{SHOP}\"]\nbackends = [\"{backend}\"]\n",
        netguard_tests::sandbox::EDGE_ADDR
    )
}

#[test]
fn daemon_serves_the_proxy_and_reloads_routes_on_sighup() {
    // The harness finds the binary (`NETGUARD_BIN`, `CARGO_TARGET_DIR`) and fails without it.
    let _ = netguard_tests::daemon::netguard_bin();
    let sb = netguard_tests::Sandbox::new();
    let loopback = |port| SocketAddr::from(([127, 0, 0, 1], port));
    let first =
        RecordingBackend::start_in(&sb.edge, loopback(0), Reply::Status(200, b"first".to_vec()));
    let second = RecordingBackend::start_in(
        &sb.edge,
        loopback(0),
        Reply::Status(200, b"second".to_vec()),
    );
    let mut config = netguard_tests::Config::for_sandbox(&sb);
    config.extra = proxy_toml(first.addr());
    let mut daemon = netguard_tests::Daemon::start(&sb.edge, &config);

    let r = curl_to_edge(&sb.client, SHOP, "/hello");
    assert_eq!(statuses(&r), [200], "daemon log:\n{}", daemon.log_tail(30));
    assert_eq!(r[0].body, b"first");
    let got = text(&first.wait_requests(1, T)[0]);
    assert!(
        got.contains(&format!(
            "\r\nX-Forwarded-For: {}\r\n",
            netguard_tests::sandbox::CLIENT_ADDR
        )),
        "{got}"
    );
    daemon
        .wait_for_log("app=shop method=GET path=/hello status=200", T)
        .expect("router log line on the daemon's stderr");

    config.extra = proxy_toml(second.addr());
    std::fs::write(daemon.config_path(), config.to_toml()).expect("rewrite config");
    daemon.signal(libc::SIGHUP);
    daemon
        .wait_for_log("proxy routes reloaded", T)
        .expect("reload logged");
    let r = curl_to_edge(&sb.client, SHOP, "/again");
    assert_eq!(r[0].body, b"second");
    let r = curl_to_edge(&sb.client, "nowhere.example", "/");
    assert_error_page(&r[0], 404);
    drop(daemon);
}

// ---------------------------------------------------------------------------------------------
// TLS termination: certificates by SNI, 421 when Host and SNI disagree, force_https.

struct TlsEdge {
    edge: Edge,
    shop: RecordingBackend,
    blog: RecordingBackend,
    shop_cert: std::path::PathBuf,
    blog_cert: std::path::PathBuf,
    _dir: netguard_tests::TempDir,
}

fn tls_edge(force_https: bool) -> TlsEdge {
    let dir = netguard_tests::TempDir::new().expect("temp dir");
    let (shop_cert, shop_key) = certificate(&dir, "shop", &[SHOP, "*.shop.example.com"]);
    let (blog_cert, blog_key) = certificate(&dir, "blog", &["blog.example.com"]);
    let shop = RecordingBackend::start(Reply::Status(200, b"shop".to_vec()));
    let blog = RecordingBackend::start(Reply::Status(200, b"blog".to_vec()));
    let tls = |mut a: AppConfig, cert: &std::path::Path, key: &std::path::Path| {
        a.tls = Some(netguard::config::TlsMode::Terminate);
        a.cert = Some(cert.to_path_buf());
        a.key = Some(key.to_path_buf());
        a
    };
    let mut shop_app = tls(
        app("shop", &[SHOP, "*.shop.example.com"], &[shop.addr()]),
        &shop_cert,
        &shop_key,
    );
    shop_app.force_https = force_https;
    let edge = Edge::start(
        ProxyConfig {
            https_listen: "127.0.0.1:0".parse().expect("address"),
            ..config()
        },
        vec![
            shop_app,
            tls(
                app("blog", &["blog.example.com"], &[blog.addr()]),
                &blog_cert,
                &blog_key,
            ),
            app("plain", &["plain.example.com"], &[blog.addr()]),
        ],
    );
    TlsEdge {
        edge,
        shop,
        blog,
        shop_cert,
        blog_cert,
        _dir: dir,
    }
}

impl TlsEdge {
    fn port(&self) -> u16 {
        self.edge.https_port()
    }

    fn curl(
        &self,
        name: &str,
        ca: &std::path::Path,
        path: &str,
        extra: &[&str],
    ) -> (Vec<Response>, Option<i32>, String) {
        self.edge.curl_tls(name, ca, path, extra)
    }
}

#[test]
fn tls_is_terminated_with_the_certificate_sni_chooses() {
    let t = tls_edge(false);
    let (r, code, err) = t.curl(SHOP, &t.shop_cert, "/secure", &[]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!((r[0].status, r[0].body.as_slice()), (200, &b"shop"[..]));
    let got = text(&t.shop.wait_requests(1, T)[0]);
    assert!(got.contains("\r\nX-Forwarded-Proto: https\r\n"), "{got}");
    assert!(
        got.contains(&format!("\r\nX-Forwarded-Port: {}\r\n", t.port())),
        "{got}"
    );
    assert!(got.starts_with("GET /secure HTTP/1.1\r\n"), "{got}");

    let (r, code, err) = t.curl("www.shop.example.com", &t.shop_cert, "/", &[]);
    assert_eq!(
        (code, r[0].body.as_slice()),
        (Some(0), &b"shop"[..]),
        "{err}"
    );
    let (r, code, err) = t.curl("blog.example.com", &t.blog_cert, "/", &[]);
    assert_eq!(
        (code, r[0].body.as_slice()),
        (Some(0), &b"blog"[..]),
        "{err}"
    );

    // Bodies and limits work the same over TLS.
    let (r, _, err) = t.curl(SHOP, &t.shop_cert, "/up", &["--data-binary", "hello"]);
    assert_eq!(statuses(&r), [200], "{err}");
    let (r, _, _) = t.curl(
        SHOP,
        &t.shop_cert,
        "/up",
        // HTTP/1.1: over HTTP/2 a length the DATA frames contradict is a stream error.
        &[
            "--http1.1",
            "-H",
            "Content-Length: 5000",
            "--data-binary",
            "x",
        ],
    );
    assert_error_page(&r[0], 413);

    // Plain HTTP still serves the same app (force_https is off).
    let (r, _, _) = curl(&["-H", &host(SHOP), &t.edge.url("/")]);
    assert_eq!(r[0].body, b"shop");
    let lines = t.edge.log_lines(1);
    assert!(
        lines[0].contains(" app=shop method=GET path=/secure status=200 "),
        "{lines:#?}"
    );
}

#[test]
fn tls_host_must_match_sni_else_421() {
    let t = tls_edge(false);
    t.shop.clear();
    // SNI shop.example.com, Host blog.example.com: a connection for one app asked for another.
    let (r, _, err) = t.curl(SHOP, &t.shop_cert, "/", &["-H", "Host: blog.example.com"]);
    assert_eq!(r.len(), 1, "{err}");
    assert_error_page(&r[0], 421);
    // Host of an app without TLS on a TLS connection: 421 too.
    let (r, _, _) = t.curl(SHOP, &t.shop_cert, "/", &["-H", "Host: plain.example.com"]);
    assert_error_page(&r[0], 421);
    // Wildcard SNI and a Host under the same app are fine.
    let (r, _, _) = t.curl(
        "a.shop.example.com",
        &t.shop_cert,
        "/",
        &["-H", &host(SHOP)],
    );
    assert_eq!(statuses(&r), [200]);
    assert_eq!(t.blog.connections(), 0);

    // A name no certificate covers fails the handshake; nothing reaches a backend.
    let (r, code, _) = t.curl("other.example.com", &t.shop_cert, "/", &[]);
    assert!(r.is_empty() && code != Some(0), "{code:?}");
    // No SNI at all (an IP address in the URL): also refused.
    let url = format!("https://127.0.0.1:{}/", t.port());
    let (r, code, _) = curl(&["-k", "-H", &host(SHOP), &url]);
    assert!(r.is_empty() && code != Some(0), "{code:?}");
}

#[test]
fn force_https_redirects_plain_http() {
    let t = tls_edge(true);
    let (r, _, _) = curl(&[
        "-H",
        "Host: www.shop.example.com:8080",
        &t.edge.url("/a/b?c=d"),
    ]);
    assert_eq!(r[0].status, 301);
    assert_eq!(
        r[0].header("location"),
        Some(format!("https://www.shop.example.com:{}/a/b?c=d", t.port()).as_str())
    );
    assert_eq!(t.shop.connections(), 0);
    // Over TLS the request is served; an app without force_https still serves plain HTTP.
    let (r, _, err) = t.curl(SHOP, &t.shop_cert, "/", &[]);
    assert_eq!(statuses(&r), [200], "{err}");
    let (r, _, _) = curl(&["-H", "Host: blog.example.com", &t.edge.url("/")]);
    assert_eq!(r[0].body, b"blog");
}

#[test]
fn reload_with_a_bad_certificate_keeps_the_running_config() {
    let mut t = tls_edge(false);
    let dir = netguard_tests::TempDir::new().expect("temp dir");
    let missing = dir.join("missing.pem");
    let mut broken = app("shop", &[SHOP], &[t.blog.addr()]);
    broken.tls = Some(netguard::config::TlsMode::Terminate);
    broken.cert = Some(missing.clone());
    broken.key = Some(missing);
    let config = ProxyConfig {
        https_listen: "127.0.0.1:0".parse().expect("address"),
        ..config()
    };
    let err = t
        .edge
        .proxy
        .reload(&config, &[broken])
        .expect_err("missing certificate");
    assert!(err.to_string().contains("missing.pem"), "{err}");
    let (r, code, err) = t.curl(SHOP, &t.shop_cert, "/", &[]);
    assert_eq!(
        (code, r[0].body.as_slice()),
        (Some(0), &b"shop"[..]),
        "{err}"
    );

    // A good reload swaps the certificate: clients trusting only the old one now fail.
    let (new_cert, new_key) = certificate(&dir, "shop2", &[SHOP]);
    let mut renewed = app("shop", &[SHOP], &[t.shop.addr()]);
    renewed.tls = Some(netguard::config::TlsMode::Terminate);
    renewed.cert = Some(new_cert.clone());
    renewed.key = Some(new_key);
    t.edge.proxy.reload(&config, &[renewed]).expect("reload");
    let (r, code, err) = t.curl(SHOP, &new_cert, "/", &[]);
    assert_eq!(
        (code, r[0].body.as_slice()),
        (Some(0), &b"shop"[..]),
        "{err}"
    );
    let (_, code, _) = t.curl(SHOP, &t.shop_cert, "/", &[]);
    assert_ne!(code, Some(0), "the old certificate is no longer served");
}

#[test]
fn slow_readers_and_broken_backend_bodies_end_the_connection() {
    let big = RecordingBackend::start(Reply::Stream {
        head: "HTTP/1.1 200 OK\r\nContent-Length: 50000000\r\n".into(),
        len: 50_000_000,
    });
    let broken = RecordingBackend::start(Reply::Raw(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\nzz\r\n".to_vec(),
    ));
    let short = RecordingBackend::start(Reply::Raw(
        b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly this".to_vec(),
    ));
    let edge = Edge::start(
        ProxyConfig {
            client_write_timeout_secs: Seconds(Duration::from_millis(500)),
            ..config()
        },
        vec![
            app("big", &["big.example"], &[big.addr()]),
            app("broken", &["broken.example"], &[broken.addr()]),
            app("short", &["short.example"], &[short.addr()]),
        ],
    );

    // A client that stops reading a 50 MB response is dropped once a write to it has waited
    // for client_write_timeout: the proxy holds no more than its buffers meanwhile.
    let mut idle = edge.client();
    idle.write(b"GET / HTTP/1.1\r\nHost: big.example\r\n\r\n");
    let deadline = Instant::now() + T;
    thread::sleep(Duration::from_millis(200));
    while edge.proxy.open_connections() > 0 {
        assert!(
            Instant::now() < deadline,
            "a client that does not read is never dropped"
        );
        thread::sleep(Duration::from_millis(20));
    }
    drop(idle);

    // Malformed chunked framing from the backend after the head was sent: the client gets what
    // was valid and then the connection closes, without a last chunk it could mistake for a
    // complete response.
    for (name, want) in [
        ("broken.example", &b"5\r\nhello\r\n"[..]),
        ("short.example", &b"only this"[..]),
    ] {
        let mut c = edge.client();
        c.write(format!("GET / HTTP/1.1\r\nHost: {name}\r\n\r\n").as_bytes());
        assert!(c.closed_within(T), "{name}");
        let raw = c.unread().to_vec();
        assert!(
            raw.starts_with(b"HTTP/1.1 200 OK\r\n"),
            "{name}: {}",
            text(&raw)
        );
        assert!(raw.ends_with(want), "{name}: {}", text(&raw));
        assert!(
            c.responses(1, Duration::from_millis(10)).is_empty(),
            "{name}: no complete response"
        );
    }
}
