//! End to end: the proxy's backend lifecycle — keep-alive pooling of backend connections
//! (counted at a real backend), the stale-connection retry, graceful drain and the
//! `SO_REUSEPORT` handover between two daemons.
//!
//! The pooling tests run the proxy in process on loopback; the drain and handover tests run
//! the real daemon binary in a sandbox namespace (root, `cargo build -p netguard` first).

use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use netguard::{
    config::{AppConfig, ProxyConfig},
    proxy::{Proxy, log::RouterLog},
};
use netguard_tests::{
    http::{Client, Response},
    keepalive::{IdlePolicy, KeepAliveBackend},
};

/// Time limit of any single wait in these tests.
const T: Duration = Duration::from_secs(5);

const SHOP: &str = "shop.example.com";

fn config() -> ProxyConfig {
    ProxyConfig {
        http_listen: "127.0.0.1:0".parse().expect("address"),
        router_log: "off".into(),
        ..ProxyConfig::default()
    }
}

fn app(backends: &[SocketAddr]) -> AppConfig {
    AppConfig {
        name: "shop".into(),
        domains: vec![SHOP.into()],
        backends: backends.to_vec(),
        tls: None,
        cert: None,
        key: None,
        force_https: false,
    }
}

fn start(config: ProxyConfig, backend: &KeepAliveBackend) -> Proxy {
    Proxy::start_with_log(&config, &[app(&[backend.addr()])], RouterLog::Off).expect("proxy")
}

fn get(path: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: {SHOP}\r\n\r\n")
}

fn one(client: &mut Client, request: &str) -> Response {
    assert!(client.write(request.as_bytes()), "request written");
    client.response(T)
}

fn bodies(rs: &[Response]) -> Vec<String> {
    rs.iter().map(Response::body_text).collect()
}

#[test]
fn sequential_requests_reuse_one_backend_connection() {
    let backend = KeepAliveBackend::start(IdlePolicy::Keep);
    let proxy = start(config(), &backend);

    // Two requests on one client connection, then one on each of two more connections.
    let mut c = Client::connect(proxy.http_addr());
    let mut got = vec![one(&mut c, &get("/1")), one(&mut c, &get("/2"))];
    drop(c);
    for path in ["/3", "/4"] {
        let mut c = Client::connect(proxy.http_addr());
        got.push(one(&mut c, &get(path)));
    }
    assert!(got.iter().all(|r| r.status == 200), "{got:?}");
    assert_eq!(bodies(&got), ["c0r0", "c0r1", "c0r2", "c0r3"]);
    assert_eq!(
        backend.connections(),
        1,
        "one backend connection served all four"
    );
    let requests = &backend.requests()[0];
    assert_eq!(requests.len(), 4);
    // Each is one canonical request, without Connection: close.
    for (r, path) in requests.iter().zip(["/1", "/2", "/3", "/4"]) {
        let text = String::from_utf8_lossy(r);
        assert!(
            text.starts_with(&format!("GET {path} HTTP/1.1\r\nHost: {SHOP}\r\n")),
            "{text}"
        );
        assert!(
            text.ends_with("\r\n\r\n") && !text.contains("Connection:"),
            "{text}"
        );
        assert_eq!(text.matches("HTTP/1.1").count(), 1, "{text}");
    }

    // A POST with a body goes over the same connection and leaves it reusable.
    let mut c = Client::connect(proxy.http_addr());
    let post = format!("POST /p HTTP/1.1\r\nHost: {SHOP}\r\nContent-Length: 5\r\n\r\nhello");
    let r = one(&mut c, &post);
    assert_eq!(r.body_text(), "c0r4");
    assert!(String::from_utf8_lossy(&backend.requests()[0][4]).ends_with("\r\n\r\nhello"));
    assert_eq!(backend.connections(), 1);
}

#[test]
fn pooling_off_opens_a_connection_per_request_and_says_close() {
    let backend = KeepAliveBackend::start(IdlePolicy::Keep);
    let proxy = start(
        ProxyConfig {
            backend_pool_max_idle_per_backend: 0,
            ..config()
        },
        &backend,
    );
    let mut c = Client::connect(proxy.http_addr());
    let got = [one(&mut c, &get("/1")), one(&mut c, &get("/2"))];
    assert_eq!(bodies(&got), ["c0r0", "c1r0"]);
    assert_eq!(backend.connections(), 2);
    for conn in backend.requests() {
        assert!(String::from_utf8_lossy(&conn[0]).ends_with("Connection: close\r\n\r\n"));
    }
}

#[test]
fn a_connection_the_backend_closed_while_idle_is_not_reused() {
    let backend = KeepAliveBackend::start(IdlePolicy::CloseAfter(Duration::from_millis(200)));
    let proxy = start(config(), &backend);
    let mut c = Client::connect(proxy.http_addr());
    let first = one(&mut c, &get("/1"));
    std::thread::sleep(Duration::from_millis(600));
    let second = one(&mut c, &get("/2"));
    assert_eq!(bodies(&[first, second]), ["c0r0", "c1r0"]);
    assert_eq!(backend.connections(), 2);
    // The closed connection never carried the second request.
    assert_eq!(backend.requests()[0].len(), 1);
}

#[test]
fn a_stale_pooled_connection_is_retried_once_only_when_nothing_was_consumed() {
    // The backend answers the first request of a connection and closes on the second without
    // answering: the proxy's pooled connection dies under the request.
    let backend = KeepAliveBackend::start(IdlePolicy::DropSecond);
    let proxy = start(config(), &backend);
    let mut c = Client::connect(proxy.http_addr());
    let first = one(&mut c, &get("/1"));
    let second = one(&mut c, &get("/2"));
    assert_eq!(
        bodies(&[first, second]),
        ["c0r0", "c1r0"],
        "resent on a fresh connection"
    );
    let requests = backend.requests();
    assert_eq!(requests.len(), 2);
    // The request reached the stale connection once and the fresh one once: exactly one
    // attempt per connection, and the answer came from the fresh one.
    assert!(requests[0][1].starts_with(b"GET /2 "));
    assert!(requests[1][0].starts_with(b"GET /2 "));

    // A POST whose body was already sent is not resent: 502, and the body reached only the
    // connection that died.
    let post = format!("POST /p HTTP/1.1\r\nHost: {SHOP}\r\nContent-Length: 5\r\n\r\nhello");
    let r = one(&mut c, &post);
    assert_eq!(r.status, 502, "{}", r.head);
    let requests = backend.requests();
    let posts: Vec<usize> = requests
        .iter()
        .enumerate()
        .filter(|(_, reqs)| reqs.iter().any(|q| q.starts_with(b"POST /p ")))
        .map(|(i, _)| i)
        .collect();
    assert_eq!(posts, [1], "sent once, on the pooled connection");
    assert_eq!(requests.len(), 2, "no fresh connection for the POST");
}

#[test]
fn parallel_clients_share_a_bounded_pool() {
    let backend = KeepAliveBackend::start(IdlePolicy::Keep);
    let proxy = start(
        ProxyConfig {
            backend_pool_max_idle_per_backend: 2,
            backend_pool_max_idle: 2,
            ..config()
        },
        &backend,
    );
    let addr = proxy.http_addr();
    let started = Instant::now();
    let threads: Vec<_> = (0..4)
        .map(|i| {
            std::thread::spawn(move || {
                let mut c = Client::connect(addr);
                (0..20)
                    .map(|j| one(&mut c, &get(&format!("/{i}/{j}"))).status)
                    .collect::<Vec<u16>>()
            })
        })
        .collect();
    for t in threads {
        assert!(t.join().expect("client").iter().all(|&s| s == 200));
    }
    assert!(started.elapsed() < Duration::from_secs(30));
    // Four clients at once need four backend connections; the pool keeps two of them idle, so
    // some requests open new ones, but far fewer than one per request.
    assert!(proxy.idle_backend_connections() <= 2);
    assert!(
        (4..60).contains(&backend.connections()),
        "{} backend connections",
        backend.connections()
    );
    let total: usize = backend.requests().iter().map(Vec::len).sum();
    assert_eq!(total, 80, "each request reached the backend exactly once");
}
