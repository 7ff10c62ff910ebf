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

/// One worker: the pool tests count one pool's connections exactly (every worker has its own,
/// see `each_worker_pools_its_own_backend_connections`).
fn config() -> ProxyConfig {
    ProxyConfig {
        http_listen: "127.0.0.1:0".parse().expect("address"),
        router_log: "off".into(),
        workers: 1,
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

#[test]
fn each_worker_pools_its_own_backend_connections() {
    let backend = KeepAliveBackend::start(IdlePolicy::Keep);
    let workers = 2;
    let proxy = start(
        ProxyConfig {
            workers,
            backend_pool_max_idle_per_backend: 1,
            backend_pool_max_idle: 1,
            ..config()
        },
        &backend,
    );
    // Sequential connections from many source ports: SO_REUSEPORT spreads them over the
    // workers' listeners, and each worker reuses its own one pooled backend connection.
    let n = 40;
    for i in 0..n {
        let mut c = Client::connect(proxy.http_addr());
        assert_eq!(one(&mut c, &get(&format!("/{i}"))).status, 200);
    }
    let used = backend.connections();
    assert_eq!(
        used, workers as usize,
        "{n} sequential requests over {workers} workers opened {used} backend connections"
    );
    // The last connection goes back to its pool just after its answer reached the client.
    let deadline = Instant::now() + T;
    while proxy.idle_backend_connections() < workers as usize && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(proxy.idle_backend_connections(), workers as usize);
    let total: usize = backend.requests().iter().map(Vec::len).sum();
    assert_eq!(total, n, "each request reached the backend exactly once");
}

#[test]
fn least_connections_sends_requests_past_a_busy_backend() {
    let a = KeepAliveBackend::start(IdlePolicy::Keep);
    let b = KeepAliveBackend::start(IdlePolicy::Keep);
    let config = ProxyConfig {
        balance: netguard::config::Balance::LeastConnections,
        ..config()
    };
    let proxy = Proxy::start_with_log(&config, &[app(&[a.addr(), b.addr()])], RouterLog::Off)
        .expect("proxy");
    let addr = proxy.http_addr();
    // All idle: the first request goes to the first backend and stays there a while.
    let slow = std::thread::spawn(move || {
        let mut c = Client::connect(addr);
        one(&mut c, &get("/slow")).status
    });
    let deadline = Instant::now() + T;
    while a.requests().iter().flatten().count() == 0 {
        assert!(Instant::now() < deadline, "the slow request never arrived");
        std::thread::sleep(Duration::from_millis(10));
    }
    let mut c = Client::connect(addr);
    for i in 0..4 {
        assert_eq!(one(&mut c, &get(&format!("/{i}"))).status, 200);
    }
    assert_eq!(slow.join().expect("slow client"), 200);
    let count = |k: &KeepAliveBackend| k.requests().iter().flatten().count();
    assert_eq!(
        (count(&a), count(&b)),
        (1, 4),
        "round-robin would have split them"
    );
}

// ---------------------------------------------------------------------------------------------
// The real daemon in a sandbox namespace: graceful drain on SIGTERM, and the SO_REUSEPORT
// handover from one daemon to the next.

mod daemon {
    use std::{
        io::{Read, Write},
        net::{IpAddr, SocketAddr, TcpStream},
        os::unix::process::ExitStatusExt,
        process::Stdio,
        sync::atomic::{AtomicBool, Ordering},
        thread,
        time::{Duration, Instant},
    };

    use netguard_tests::{
        Config, Daemon, Sandbox,
        keepalive::{IdlePolicy, KeepAliveBackend, SLOW},
        probe::BackgroundProbes,
        sandbox::{CLIENT_ADDR, DENIED_ADDR, EDGE_ADDR},
    };

    use super::{SHOP, T};

    fn require_root() {
        // SAFETY: geteuid has no preconditions.
        assert_eq!(
            unsafe { libc::geteuid() },
            0,
            "the daemon tests need root (namespaces, XDP)"
        );
    }

    fn proxy_toml(backend: SocketAddr, drain_secs: u32) -> String {
        format!(
            "[proxy]\nhttp_listen = \"{EDGE_ADDR}:80\"\nrouter_log = \"stderr\"\ndrain_timeout_secs = {drain_secs}\n\n[[app]]\nname = \"shop\"\ndomains = [\"{SHOP}\"]\nbackends = [\"{backend}\"]\n"
        )
    }

    fn loopback() -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], 0))
    }

    /// Waits until the daemon has exited; its status, or `None` after `timeout`.
    fn exited_within(d: &mut Daemon, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if !d.is_running() {
                return d.terminate();
            }
            thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// One request on a new connection from the current namespace: `Ok` with the body on 200.
    fn request(path: &str) -> Result<String, String> {
        let addr = SocketAddr::from((EDGE_ADDR, 80));
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(3))
            .map_err(|e| format!("connect: {e}"))?;
        let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
        s.write_all(
            format!("GET {path} HTTP/1.1\r\nHost: {SHOP}\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .map_err(|e| format!("write: {e}"))?;
        let mut answer = Vec::new();
        s.read_to_end(&mut answer)
            .map_err(|e| format!("read: {e} after {} bytes", answer.len()))?;
        let text = String::from_utf8_lossy(&answer).into_owned();
        match text.split_once("\r\n\r\n") {
            Some((head, body)) if head.starts_with("HTTP/1.1 200 ") => Ok(body.to_owned()),
            _ => Err(format!("answer: {text:?}")),
        }
    }

    #[test]
    fn sigterm_drains_requests_in_flight_refuses_new_ones_and_exits_0() {
        require_root();
        let sb = Sandbox::new();
        let backend = KeepAliveBackend::start_in(&sb.edge, loopback(), IdlePolicy::Keep);
        let mut config = Config::for_sandbox(&sb);
        config.extra = proxy_toml(backend.addr(), 10);
        let mut daemon = Daemon::start(&sb.edge, &config);
        assert_eq!(sb.client.run(|| request("/warm")), Ok("c0r0".into()));

        let url = format!("http://{EDGE_ADDR}/slow");
        let slow = sb
            .client
            .command(&[
                "curl",
                "-sS",
                "-i",
                "--max-time",
                "15",
                "-H",
                &format!("Host: {SHOP}"),
                &url,
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("curl");
        let deadline = Instant::now() + T;
        while !backend
            .requests()
            .iter()
            .flatten()
            .any(|r| r.starts_with(b"GET /slow "))
        {
            assert!(
                Instant::now() < deadline,
                "the slow request never reached the backend"
            );
            thread::sleep(Duration::from_millis(10));
        }

        let signalled = Instant::now();
        daemon.signal(libc::SIGTERM);
        daemon
            .wait_for_log("proxy draining", T)
            .expect("drain logged");
        // The listener is closed: a new connection is refused (the filter still passes port 80,
        // so the kernel answers the SYN with a reset).
        let refused = sb.client.run(|| request("/new"));
        assert!(
            refused.as_ref().is_err_and(|e| e.contains("refused")),
            "a connection after SIGTERM: {refused:?}"
        );
        assert!(
            daemon.is_running(),
            "the daemon waits for the request in flight"
        );

        let out = slow.wait_with_output().expect("curl output");
        let answer = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && answer.starts_with("HTTP/1.1 200 "),
            "the request in flight: {answer:?} {}",
            String::from_utf8_lossy(&out.stderr)
        );
        // The warm-up's pooled connection, or a fresh one when the other worker accepted.
        assert!(
            answer.ends_with("c0r1") || answer.ends_with("c1r0"),
            "{answer:?}"
        );
        let status = exited_within(&mut daemon, Duration::from_secs(10)).expect("exited");
        let took = signalled.elapsed();
        assert_eq!(
            status.code(),
            Some(0),
            "{status:?}\n{}",
            daemon.log_tail(20)
        );
        assert!(
            took >= SLOW / 2 && took < Duration::from_secs(10),
            "{took:?}"
        );
        let log = daemon.log();
        assert!(log.contains("proxy drained"), "{log}");
        assert!(log.contains("the filter stays attached"), "{log}");
    }

    #[test]
    fn the_drain_is_bounded_by_drain_timeout_secs() {
        require_root();
        let sb = Sandbox::new();
        let backend = KeepAliveBackend::start_in(&sb.edge, loopback(), IdlePolicy::Keep);
        let mut config = Config::for_sandbox(&sb);
        config.extra = proxy_toml(backend.addr(), 1);
        let mut daemon = Daemon::start(&sb.edge, &config);
        // A client that holds a connection open mid-head: the drain does not wait for it past
        // the bound.
        let held = sb.client.run(|| {
            let mut s = TcpStream::connect((EDGE_ADDR, 80)).expect("connect");
            s.write_all(b"GET / HTTP/1.1\r\n").expect("partial head");
            s
        });
        thread::sleep(Duration::from_millis(200));
        let signalled = Instant::now();
        daemon.signal(libc::SIGTERM);
        let status = exited_within(&mut daemon, Duration::from_secs(5)).expect("exited");
        assert_eq!(status.code(), Some(0), "{status:?}");
        let took = signalled.elapsed();
        assert!(
            took >= Duration::from_millis(900) && took < Duration::from_secs(4),
            "{took:?}"
        );
        assert!(
            daemon
                .log()
                .contains("proxy drain ended with connections still open")
        );
        drop(held);
    }

    #[test]
    fn reuseport_handover_between_daemons_loses_no_request_and_no_probe() {
        require_root();
        let sb = Sandbox::new();
        // Connections queued on the old listener move to the new one when it closes.
        sb.edge
            .exec(&["sysctl", "-q", "-w", "net.ipv4.tcp_migrate_req=1"]);
        let backend = KeepAliveBackend::start_in(&sb.edge, loopback(), IdlePolicy::Keep);
        let mut config = Config::for_sandbox(&sb);
        config.extra = proxy_toml(backend.addr(), 10);
        let mut old = Daemon::start(&sb.edge, &config);
        // The old daemon's guard leaves the pins to the new one's.
        old.keep_pins_on_drop();

        let probes = BackgroundProbes::start(
            &sb.client,
            &[
                (
                    Some(IpAddr::V4(DENIED_ADDR)),
                    SocketAddr::from((EDGE_ADDR, 80)),
                ),
                (
                    Some(IpAddr::V4(CLIENT_ADDR)),
                    SocketAddr::from((EDGE_ADDR, 22)),
                ),
            ],
            Duration::from_millis(5),
            Duration::from_millis(300),
        );
        let stop = AtomicBool::new(false);
        let (ok, failures, old_status, new) = thread::scope(|scope| {
            let client = scope.spawn(|| {
                sb.client.run(|| {
                    let mut ok = 0u32;
                    let mut failures = Vec::new();
                    let started = Instant::now();
                    while !stop.load(Ordering::SeqCst) {
                        match request("/") {
                            Ok(_) => ok += 1,
                            Err(e) => failures.push(format!("{:?}: {e}", started.elapsed())),
                        }
                    }
                    (ok, failures)
                })
            });
            thread::sleep(Duration::from_millis(500));
            let new = Daemon::start(&sb.edge, &config);
            thread::sleep(Duration::from_millis(500));
            old.signal(libc::SIGTERM);
            let old_status = exited_within(&mut old, Duration::from_secs(15));
            // The new daemon alone serves now.
            thread::sleep(Duration::from_millis(700));
            stop.store(true, Ordering::SeqCst);
            let (ok, failures) = client.join().expect("client loop");
            (ok, failures, old_status, new)
        });
        let tallies = probes.stop();

        let old_status = old_status.expect("the old daemon exited within the drain bound");
        assert_eq!(
            old_status.code(),
            Some(0),
            "{old_status:?}\n{}",
            old.log_tail(20)
        );
        assert_eq!(old_status.signal(), None);
        assert!(
            failures.is_empty(),
            "{} failed requests: {failures:#?}",
            failures.len()
        );
        assert!(ok >= 50, "only {ok} requests during the handover");
        eprintln!("handover: {ok} requests, none failed");
        // Both served: the old one until it drained, the new one after.
        assert!(old.log().contains("status=200"), "{}", old.log_tail(10));
        assert!(old.log().contains("proxy drained"), "{}", old.log_tail(10));
        let new_log = new.log();
        assert!(new_log.contains("status=200"), "{}", new.log_tail(10));
        assert!(
            new_log.contains("swapped into the pinned link"),
            "the new daemon adopted the pinned XDP link:\n{new_log}"
        );
        for t in &tallies {
            eprintln!("probe {t}");
            assert!(
                t.connected.is_empty() && t.other.is_empty(),
                "a probe got through during the handover: {t}"
            );
            assert!(t.attempts >= 100, "too few probes to mean anything: {t}");
        }
        // After the handover the new daemon keeps serving.
        assert!(sb.client.run(|| request("/after")).is_ok());
        drop(new);
    }
}
