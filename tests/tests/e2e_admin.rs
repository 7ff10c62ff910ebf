//! End to end: the admin endpoint and the commands that use it — `/metrics` scraped and parsed
//! while real traffic moves the counters (filter, proxy, limiter, private networks, reloads),
//! `/healthz` and `/readyz`, `netguard reload` (applied and rejected), `netguard routes`,
//! `netguard top`, and ten reloads under traffic without a failed request or a leaked probe.
//!
//! Each test runs the real daemon in its own sandbox (the admin endpoint on its default
//! 127.0.0.1:9100 inside the daemon's namespace); most use [`Sandbox`] with the proxy on
//! 203.0.113.10:80.
//!
//! Needs root and the daemon binary: `cargo build -p netguard && cargo test -p netguard-tests
//! --test e2e_admin -- --test-threads=1`.

use std::{
    io::{Read, Write},
    net::{IpAddr, SocketAddr, TcpStream},
    process::Output,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use netguard_tests::{
    Config, Daemon, NetNs, ProbeResult, Sandbox, TempDir, cmd,
    http::{curl_to_edge, parse_responses},
    probe::{BackgroundProbes, PROBE_TIMEOUT, tcp_connect},
    prom::Scrape,
    recording::{RecordingBackend, Reply},
    sandbox::{CLIENT_ADDR, DENIED_ADDR, EDGE_ADDR},
};

const SHOP: &str = "shop.example.com";
const EXTRA: &str = "extra.example.com";
const ADMIN: &str = "http://127.0.0.1:9100";

fn loopback0() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

/// `[proxy]` on the guarded address, `shop` → `backends`, and `extra` apps appended verbatim.
fn proxy_toml(backends: &[SocketAddr], more: &str) -> String {
    let list: Vec<String> = backends.iter().map(|b| format!("\"{b}\"")).collect();
    format!(
        "[proxy]\nhttp_listen = \"{EDGE_ADDR}:80\"\nrouter_log = \"off\"\nbackend_connect_timeout_secs = 1\nbackend_eject_secs = 30\n\n\
         [[app]]\nname = \"shop\"\ndomains = [\"{SHOP}\"]\nbackends = [{}]\n{more}",
        list.join(", ")
    )
}

/// GET `path` on the admin endpoint from inside `ns`: (HTTP status, body).
fn admin_get(ns: &NetNs, path: &str) -> (u16, String) {
    let out = ns.output_timeout(
        &[
            "curl",
            "-sS",
            "--max-time",
            "10",
            "-o",
            "-",
            "-w",
            "\n%{http_code}",
            &format!("{ADMIN}{path}"),
        ],
        Duration::from_secs(20),
    );
    let text = cmd::lossy(&out.stdout);
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

fn scrape(ns: &NetNs) -> Scrape {
    let (status, body) = admin_get(ns, "/metrics");
    assert_eq!(status, 200, "/metrics answered {status}: {body}");
    Scrape::parse(&body).unwrap_or_else(|e| panic!("/metrics does not parse: {e}\n{body}"))
}

fn show(out: &Output) -> String {
    format!(
        "exit {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        cmd::lossy(&out.stdout),
        cmd::lossy(&out.stderr)
    )
}

/// `netguard reload --config <the daemon's config>` in the daemon's namespace.
fn reload(daemon: &Daemon) -> Output {
    let config = daemon.config_path().to_string_lossy().into_owned();
    daemon.cli(&["reload", "--config", &config])
}

fn edge(port: u16) -> SocketAddr {
    Sandbox::edge_addr(port)
}

#[test]
fn metrics_move_with_packets_requests_and_reloads() {
    let sb = Sandbox::new();
    let backend =
        RecordingBackend::start_in(&sb.edge, loopback0(), Reply::Status(200, b"shop".to_vec()));
    let mut config = Config::for_sandbox(&sb);
    config.extra = proxy_toml(&[backend.addr()], "");
    let mut daemon = Daemon::start(&sb.edge, &config);

    assert_eq!(admin_get(&sb.edge, "/healthz").0, 200);
    assert_eq!(admin_get(&sb.edge, "/readyz"), (200, "ready\n".into()));
    let before = scrape(&sb.edge);
    assert_eq!(before.get("netguard_ready", &[]), Some(1.0));
    assert_eq!(before.get("netguard_pinned_maps_up", &[]), Some(1.0));
    assert_eq!(
        before.get(
            "netguard_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))]
        ),
        Some(1.0)
    );
    for (family, kind) in [
        ("netguard_xdp_packets_total", "counter"),
        ("netguard_xdp_bytes_total", "counter"),
        ("netguard_xdp_would_drop_packets_total", "counter"),
        ("netguard_limiter_packets_total", "counter"),
        ("netguard_limiter_bytes_total", "counter"),
        ("netguard_private_network_packets_total", "counter"),
        ("netguard_proxy_requests_total", "counter"),
        ("netguard_proxy_request_duration_seconds", "histogram"),
        ("netguard_proxy_client_connections", "gauge"),
        ("netguard_proxy_worker_client_connections", "gauge"),
        ("netguard_proxy_connections_refused_total", "counter"),
        ("netguard_proxy_backend_ejections_total", "counter"),
        ("netguard_config_reloads_total", "counter"),
        (
            "netguard_config_last_reload_success_timestamp_seconds",
            "gauge",
        ),
        ("netguard_config_last_reload_duration_seconds", "gauge"),
    ] {
        assert_eq!(
            before.types.get(family).map(String::as_str),
            Some(kind),
            "{family}"
        );
    }

    // Packets: 5 connects to a closed port, 5 from the denylisted source.
    for _ in 0..5 {
        assert_eq!(
            tcp_connect(&sb.client, None, edge(22), Duration::from_millis(300)),
            ProbeResult::TimedOut
        );
        assert_eq!(
            tcp_connect(
                &sb.client,
                Some(IpAddr::V4(DENIED_ADDR)),
                edge(80),
                Duration::from_millis(300)
            ),
            ProbeResult::TimedOut
        );
    }
    // Requests: three to shop, one to an unknown host.
    for _ in 0..3 {
        let r = curl_to_edge(&sb.client, SHOP, "/");
        assert_eq!(r.first().map(|r| r.status), Some(200), "{r:?}");
    }
    assert_eq!(
        curl_to_edge(&sb.client, "nowhere.example", "/")[0].status,
        404
    );
    // Two reloads: one asked for over the admin endpoint, one by SIGHUP (same path, same
    // counters).
    let out = reload(&daemon);
    assert!(out.status.success(), "{}", show(&out));
    daemon.signal(libc::SIGHUP);
    let deadline = Instant::now() + Duration::from_secs(10);
    while scrape(&sb.edge).value("netguard_config_reloads_total", &[("result", "success")]) < 2.0 {
        assert!(Instant::now() < deadline, "SIGHUP reload not counted");
        thread::sleep(Duration::from_millis(50));
    }

    let after = scrape(&sb.edge);
    let moved = |name: &str, labels: &[(&str, &str)]| {
        after.value(name, labels) - before.value(name, labels)
    };
    let port_closed = [("reason", "port_closed"), ("verdict", "drop")];
    let denylisted = [("reason", "denylisted"), ("verdict", "drop")];
    // SYN retransmits may add packets; never fewer than the connects.
    assert!(moved("netguard_xdp_packets_total", &port_closed) >= 5.0);
    assert!(moved("netguard_xdp_packets_total", &denylisted) >= 5.0);
    assert!(moved("netguard_xdp_bytes_total", &port_closed) >= 5.0 * 54.0);
    assert!(moved("netguard_xdp_packets_total", &[("reason", "passed")]) > 0.0);
    assert_eq!(
        moved(
            "netguard_proxy_requests_total",
            &[("app", "shop"), ("code", "2xx")]
        ),
        3.0
    );
    assert_eq!(
        moved(
            "netguard_proxy_requests_total",
            &[("app", "-"), ("code", "4xx")]
        ),
        1.0
    );
    assert_eq!(
        moved(
            "netguard_proxy_request_duration_seconds_count",
            &[("app", "shop")]
        ),
        3.0
    );
    assert_eq!(
        after.value(
            "netguard_proxy_request_duration_seconds_bucket",
            &[("app", "shop"), ("le", "+Inf")]
        ),
        after.value(
            "netguard_proxy_request_duration_seconds_count",
            &[("app", "shop")]
        )
    );
    assert!(
        after.value(
            "netguard_proxy_request_duration_seconds_sum",
            &[("app", "shop")]
        ) > 0.0
    );
    assert_eq!(
        moved("netguard_config_reloads_total", &[("result", "success")]),
        2.0
    );
    assert_eq!(
        moved("netguard_config_reloads_total", &[("result", "failure")]),
        0.0
    );
    assert!(after.value("netguard_config_last_reload_duration_seconds", &[]) > 0.0);
    assert!(
        moved("netguard_config_last_reload_success_timestamp_seconds", &[]) > 0.0,
        "last-success timestamp did not advance"
    );
    drop(daemon);
}

#[test]
fn readyz_is_503_while_filling_then_200_then_503_when_detached() {
    let sb = Sandbox::new();
    // Enough denylist entries that filling the maps takes a visible while.
    let dir = TempDir::new().expect("temp dir");
    let list = dir.join("big.txt");
    let mut text = String::with_capacity(100_000 * 12);
    for i in 0..100_000u32 {
        let [_, b, c, d] = i.to_be_bytes();
        text.push_str(&format!("10.{b}.{c}.{d}\n"));
    }
    std::fs::write(&list, text).expect("write the list");
    let mut config = Config::for_sandbox(&sb);
    config.deny_files = vec![list];

    // Polls until it sees 200 (or gives up), independently of when the start returns: the
    // ready line is logged a moment before the endpoint turns ready.
    let poller = {
        let ns = sb.edge.name().to_string();
        thread::spawn(move || {
            let mut seen: Vec<u16> = Vec::new();
            let deadline = Instant::now() + Duration::from_secs(60);
            while Instant::now() < deadline {
                let status = netguard_tests::in_netns(&ns, || {
                    let Ok(mut s) = TcpStream::connect("127.0.0.1:9100") else {
                        return 0;
                    };
                    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
                    let _ = s
                        .write_all(b"GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
                    let mut answer = String::new();
                    let _ = s.read_to_string(&mut answer);
                    answer
                        .split(' ')
                        .nth(1)
                        .and_then(|c| c.parse().ok())
                        .unwrap_or(1)
                })
                .unwrap_or(2);
                if seen.last() != Some(&status) {
                    seen.push(status);
                }
                if status == 200 {
                    break;
                }
                thread::sleep(Duration::from_millis(20));
            }
            seen
        })
    };
    let started = Instant::now();
    let daemon = Daemon::start(&sb.edge, &config);
    let seen = poller.join().expect("poller");
    eprintln!(
        "readyz: {seen:?} (0 = refused), ready after {:?}",
        started.elapsed()
    );
    let pos503 = seen.iter().position(|&s| s == 503);
    let pos200 = seen.iter().position(|&s| s == 200);
    assert!(
        matches!((pos503, pos200), (Some(a), Some(b)) if a < b),
        "/readyz should answer 503 while the maps fill, then 200; saw {seen:?}\n{}",
        daemon.log_tail(20)
    );
    assert_eq!(admin_get(&sb.edge, "/readyz").0, 200);

    // Detached behind the daemon's back: no longer ready, still alive.
    let pin = daemon.pin_path().to_string_lossy().into_owned();
    let out = daemon.cli(&["detach", "--pin-path", &pin]);
    assert!(out.status.success(), "{}", show(&out));
    let (status, body) = admin_get(&sb.edge, "/readyz");
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("detached"), "{body}");
    assert_eq!(admin_get(&sb.edge, "/healthz").0, 200);
    assert_eq!(
        scrape(&sb.edge).get("netguard_ready", &[]),
        Some(0.0),
        "netguard_ready after detach"
    );
    drop(daemon);
}

#[test]
fn reload_command_applies_a_good_config_and_rejects_a_bad_one() {
    let sb = Sandbox::new();
    let first =
        RecordingBackend::start_in(&sb.edge, loopback0(), Reply::Status(200, b"first".to_vec()));
    let second = RecordingBackend::start_in(
        &sb.edge,
        loopback0(),
        Reply::Status(200, b"second".to_vec()),
    );
    let mut config = Config::for_sandbox(&sb);
    config.extra = proxy_toml(&[first.addr()], "");
    let mut daemon = Daemon::start(&sb.edge, &config);
    assert_eq!(curl_to_edge(&sb.client, SHOP, "/")[0].body, b"first");

    config.extra = proxy_toml(&[second.addr()], "");
    std::fs::write(daemon.config_path(), config.to_toml()).expect("rewrite config");
    let out = reload(&daemon);
    assert!(out.status.success(), "{}", show(&out));
    assert!(
        cmd::lossy(&out.stdout).contains("config reloaded"),
        "{}",
        show(&out)
    );
    // Synchronous: the new routes are in force when the command returns.
    assert_eq!(curl_to_edge(&sb.client, SHOP, "/")[0].body, b"second");

    // Two problems at once: both are reported, with the file and the keys.
    let mut bad = config.clone();
    bad.allowed_tcp_ports = vec![80, 80];
    bad.extra = proxy_toml(
        &[second.addr()],
        "\n[[app]]\nname = \"shop\"\ndomains = [\"dup.example.com\"]\n",
    );
    std::fs::write(daemon.config_path(), bad.to_toml()).expect("write a bad config");
    let out = reload(&daemon);
    assert_eq!(out.status.code(), Some(64), "{}", show(&out));
    let err = cmd::lossy(&out.stderr);
    let file = daemon.config_path().to_string_lossy().into_owned();
    assert!(err.contains(&file), "the message names the file: {err}");
    assert!(err.contains("xdp.allowed_tcp_ports"), "{err}");
    assert!(err.contains("app[1].name"), "{err}");
    assert!(err.contains("running config stays in force"), "{err}");
    // A certificate that does not exist: rejected too.
    let mut bad_cert = config.clone();
    bad_cert.extra = proxy_toml(
        &[second.addr()],
        "\n[[app]]\nname = \"tls\"\ndomains = [\"tls.example.com\"]\ntls = \"terminate\"\ncert = \"/nonexistent/tls.pem\"\nkey = \"/nonexistent/tls.key\"\n",
    );
    std::fs::write(daemon.config_path(), bad_cert.to_toml()).expect("write a bad config");
    let out = reload(&daemon);
    assert_eq!(out.status.code(), Some(64), "{}", show(&out));
    assert!(
        cmd::lossy(&out.stderr).contains("/nonexistent/tls.pem"),
        "{}",
        show(&out)
    );

    // The running config stayed: the same backend answers, the filter still drops.
    assert_eq!(curl_to_edge(&sb.client, SHOP, "/")[0].body, b"second");
    assert_eq!(
        tcp_connect(&sb.client, None, edge(22), PROBE_TIMEOUT),
        ProbeResult::TimedOut
    );
    let m = scrape(&sb.edge);
    assert_eq!(
        m.value("netguard_config_reloads_total", &[("result", "success")]),
        1.0
    );
    assert_eq!(
        m.value("netguard_config_reloads_total", &[("result", "failure")]),
        2.0
    );
    assert!(daemon.is_running());

    // No daemon listening: 69, and the message says where it looked.
    let out = daemon.cli(&["reload", "--admin", "127.0.0.1:9"]);
    assert_eq!(out.status.code(), Some(69), "{}", show(&out));
    assert!(
        cmd::lossy(&out.stderr).contains("127.0.0.1:9"),
        "{}",
        show(&out)
    );
    drop(daemon);
}

#[test]
fn routes_show_apps_domains_and_ejected_backends() {
    let sb = Sandbox::new();
    let live =
        RecordingBackend::start_in(&sb.edge, loopback0(), Reply::Status(200, b"ok".to_vec()));
    // Nothing listens there: connects are refused and the backend is ejected.
    let dead = SocketAddr::from(([127, 0, 0, 1], 9));
    let mut config = Config::for_sandbox(&sb);
    config.extra = proxy_toml(
        &[dead, live.addr()],
        &format!(
            "\n[[app]]\nname = \"extra\"\ndomains = [\"{EXTRA}\", \"*.{EXTRA}\"]\nbackends = []\n"
        ),
    );
    let daemon = Daemon::start(&sb.edge, &config);
    for _ in 0..2 {
        assert_eq!(curl_to_edge(&sb.client, SHOP, "/")[0].status, 200);
    }
    let config_arg = daemon.config_path().to_string_lossy().into_owned();
    let out = daemon.cli(&["routes", "--json", "--config", &config_arg]);
    assert!(out.status.success(), "{}", show(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("routes --json: {e}\n{}", show(&out)));
    assert_eq!(v["proxy"], true);
    let apps = v["apps"].as_array().expect("apps");
    assert_eq!(apps.len(), 2);
    assert_eq!(apps[0]["name"], "shop");
    assert_eq!(apps[0]["domains"][0], SHOP);
    let backends = apps[0]["backends"].as_array().expect("backends");
    let state = |addr: SocketAddr| {
        backends
            .iter()
            .find(|b| b["address"] == addr.to_string())
            .map(|b| b["state"].as_str().unwrap_or_default().to_string())
    };
    assert_eq!(state(dead).as_deref(), Some("ejected"), "{v}");
    assert_eq!(state(live.addr()).as_deref(), Some("live"), "{v}");
    let left = backends
        .iter()
        .find(|b| b["state"] == "ejected")
        .and_then(|b| b["ejected_for_seconds"].as_f64())
        .expect("ejected_for_seconds");
    assert!(left > 0.0 && left <= 30.0, "{left}");
    assert_eq!(apps[1]["domains"][1], format!("*.{EXTRA}"));
    assert_eq!(apps[1]["backends"].as_array().map(Vec::len), Some(0));

    let out = daemon.cli(&["routes", "--config", &config_arg]);
    let table = cmd::lossy(&out.stdout);
    assert!(out.status.success(), "{}", show(&out));
    assert!(table.contains("ejected ("), "{table}");
    assert!(table.contains("no backends (503)"), "{table}");
    let m = scrape(&sb.edge);
    assert!(m.value("netguard_proxy_backend_ejections_total", &[]) >= 1.0);
    drop(daemon);
}

#[test]
fn stats_json_parses_and_top_shows_drop_rates() {
    let sb = Sandbox::new();
    let config = Config::for_sandbox(&sb);
    let daemon = Daemon::start(&sb.edge, &config);
    let probes = BackgroundProbes::start(
        &sb.client,
        &[(Some(IpAddr::V4(CLIENT_ADDR)), edge(22))],
        Duration::from_millis(20),
        Duration::from_millis(200),
    );
    let stats = daemon.stats();
    assert!(
        stats.raw["reasons"]["port_closed"].is_object(),
        "{}",
        stats.raw
    );
    let pin = daemon.pin_path().to_string_lossy().into_owned();
    let out = daemon.cli(&[
        "top",
        "--pin-path",
        &pin,
        "--interval",
        "0.5",
        "--count",
        "3",
        "--json",
    ]);
    let tallies = probes.stop();
    assert!(out.status.success(), "{}", show(&out));
    assert_eq!(tallies[0].connected.len(), 0, "{}", tallies[0]);
    let lines: Vec<serde_json::Value> = cmd::lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert_eq!(lines.len(), 3, "{}", show(&out));
    for refresh in &lines {
        let row = refresh["rows"]
            .as_array()
            .and_then(|rows| rows.iter().find(|r| r["reason"] == "port_closed"))
            .expect("port_closed row");
        // One connect every 20 ms, each retransmitting: at least a dozen a second.
        assert!(
            row["packets_per_second"].as_f64().unwrap_or(0.0) > 10.0,
            "{refresh}"
        );
        assert!(refresh["drops_per_second"].as_f64().unwrap_or(0.0) > 10.0);
        assert_eq!(refresh["action"], "enforce");
    }
    // The text form without a terminal: one table per refresh.
    let out = daemon.cli(&[
        "top",
        "--pin-path",
        &pin,
        "--interval",
        "0.1",
        "--count",
        "2",
    ]);
    assert!(out.status.success(), "{}", show(&out));
    assert_eq!(cmd::lossy(&out.stdout).matches("port_closed").count(), 2);
    drop(daemon);
}

/// A client loop sending requests to `shop` over fresh connections from inside `ns`; counts
/// successes and failures (anything but a 200 with the backend's body).
struct RequestLoop {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicU64>,
    failures: Arc<std::sync::Mutex<Vec<String>>>,
    thread: Option<thread::JoinHandle<()>>,
}

impl RequestLoop {
    fn start(ns: &NetNs) -> RequestLoop {
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicU64::new(0));
        let failures = Arc::new(std::sync::Mutex::new(Vec::new()));
        let name = ns.name().to_string();
        let thread = {
            let (stop, ok, failures) = (stop.clone(), ok.clone(), failures.clone());
            thread::spawn(move || {
                let _ = netguard_tests::in_netns(&name, || {
                    while !stop.load(Ordering::Relaxed) {
                        match one_request() {
                            Ok(()) => {
                                ok.fetch_add(1, Ordering::Relaxed);
                            }
                            Err(e) => failures
                                .lock()
                                .unwrap_or_else(std::sync::PoisonError::into_inner)
                                .push(e),
                        }
                    }
                });
            })
        };
        RequestLoop {
            stop,
            ok,
            failures,
            thread: Some(thread),
        }
    }

    fn stop(mut self) -> (u64, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let failures = std::mem::take(
            &mut *self
                .failures
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
        (self.ok.load(Ordering::Relaxed), failures)
    }
}

impl Drop for RequestLoop {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn one_request() -> Result<(), String> {
    let started = Instant::now();
    let mut s = TcpStream::connect_timeout(&edge(80), Duration::from_secs(5))
        .map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    s.write_all(
        format!("GET /stable HTTP/1.1\r\nHost: {SHOP}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .map_err(|e| format!("write: {e}"))?;
    let mut answer = Vec::new();
    s.read_to_end(&mut answer)
        .map_err(|e| format!("read after {:?}: {e}", started.elapsed()))?;
    let (responses, _) = parse_responses(&answer, true);
    match responses.first() {
        Some(r) if r.status == 200 && r.body == b"stable" => Ok(()),
        Some(r) => Err(format!(
            "status {} body {:?}",
            r.status,
            String::from_utf8_lossy(&r.body)
        )),
        None => Err(format!(
            "no response: {:?}",
            String::from_utf8_lossy(&answer)
        )),
    }
}

#[test]
fn ten_reloads_under_traffic_fail_no_request_and_leak_no_probe() {
    let sb = Sandbox::new();
    let stable = RecordingBackend::start_in(
        &sb.edge,
        loopback0(),
        Reply::Status(200, b"stable".to_vec()),
    );
    let other =
        RecordingBackend::start_in(&sb.edge, loopback0(), Reply::Status(200, b"extra".to_vec()));
    // Two valid configs: B adds an app and a denylist entry that A does not have.
    let mut a = Config::for_sandbox(&sb);
    a.extra = proxy_toml(&[stable.addr()], "");
    let mut b = a.clone();
    b.deny_cidrs.push("192.0.2.77/32".into());
    b.extra = proxy_toml(
        &[stable.addr()],
        &format!(
            "\n[[app]]\nname = \"extra\"\ndomains = [\"{EXTRA}\"]\nbackends = [\"{}\"]\n",
            other.addr()
        ),
    );
    let mut daemon = Daemon::start(&sb.edge, &a);
    assert_eq!(curl_to_edge(&sb.client, SHOP, "/")[0].body, b"stable");

    let requests = RequestLoop::start(&sb.client);
    let probes = BackgroundProbes::start(
        &sb.client,
        &[
            (Some(IpAddr::V4(CLIENT_ADDR)), edge(22)),
            (Some(IpAddr::V4(DENIED_ADDR)), edge(80)),
        ],
        Duration::from_millis(5),
        Duration::from_millis(300),
    );
    let mut durations = Vec::new();
    for i in 0..10 {
        let next = if i % 2 == 0 { &b } else { &a };
        std::fs::write(daemon.config_path(), next.to_toml()).expect("write config");
        let started = Instant::now();
        let out = reload(&daemon);
        durations.push(started.elapsed());
        assert!(out.status.success(), "reload {i}: {}", show(&out));
        let extra = curl_to_edge(&sb.client, EXTRA, "/");
        let want = if i % 2 == 0 { 200 } else { 404 };
        assert_eq!(
            extra.first().map(|r| r.status),
            Some(want),
            "reload {i}: {extra:?}"
        );
        thread::sleep(Duration::from_millis(150));
    }
    let (ok, failures) = requests.stop();
    let tallies = probes.stop();
    eprintln!("reload under traffic: {ok} requests, reload round trips {durations:?}");
    assert!(
        failures.is_empty(),
        "{} failed requests: {:?}",
        failures.len(),
        failures
    );
    assert!(
        ok >= 50,
        "only {ok} requests went through during the reloads"
    );
    for t in &tallies {
        assert!(t.attempts > 100, "{t}");
        assert!(
            t.connected.is_empty() && t.other.is_empty(),
            "a probe got through the filter during reloads: {t}"
        );
    }
    let m = scrape(&sb.edge);
    assert_eq!(
        m.value("netguard_config_reloads_total", &[("result", "success")]),
        10.0
    );
    assert_eq!(
        m.value("netguard_config_reloads_total", &[("result", "failure")]),
        0.0
    );
    assert!(
        m.value(
            "netguard_proxy_requests_total",
            &[("app", "shop"), ("code", "2xx")]
        ) >= ok as f64
    );
    assert!(daemon.is_running());
    drop(daemon);
}

#[test]
fn limiter_metrics_move_and_match_stats_containers() {
    use netguard_tests::limiter_sandbox::{
        C1_ADDR, LimiterSandbox, REMOTE_ADDR, bucket, container_stats, ratelimit_toml,
    };
    let sb = LimiterSandbox::new();
    let config = sb.config(&ratelimit_toml(
        &sb.container_interfaces(),
        "100kB/s",
        "64KiB",
        &[],
    ));
    let daemon = Daemon::start(&sb.host, &config);
    let remote = SocketAddr::new(IpAddr::V4(REMOTE_ADDR), 9);
    sb.c1.run(|| {
        let socket = std::net::UdpSocket::bind("0.0.0.0:0").expect("UDP socket in c1");
        // One datagram first, so the gateway's address is resolved before the burst.
        let _ = socket.send_to(b"arp", remote);
        thread::sleep(Duration::from_millis(300));
        // 300 × 1400 bytes at once: far over the 64 KiB burst.
        for _ in 0..300 {
            let _ = socket.send_to(&[0u8; 1400], remote);
        }
    });
    thread::sleep(Duration::from_millis(200));
    let m = scrape(&sb.host);
    let c1 = C1_ADDR.to_string();
    let metric = |unit: &str, result: &str| {
        m.value(
            &format!("netguard_limiter_{unit}_total"),
            &[
                ("container", c1.as_str()),
                ("direction", "upload"),
                ("result", result),
            ],
        )
    };
    let passed = metric("packets", "passed");
    let dropped = metric("packets", "dropped");
    assert!(passed >= 40.0, "passed {passed}");
    assert!(dropped >= 100.0, "dropped {dropped}");
    // The endpoint and `stats --containers` read the same buckets.
    let rows = container_stats(&daemon);
    let row = bucket(&rows, C1_ADDR, "upload").expect("c1's upload bucket");
    assert_eq!(passed as u64, row.passed_packets);
    assert_eq!(dropped as u64, row.dropped_packets);
    assert_eq!(metric("bytes", "passed") as u64, row.passed_bytes);
    assert_eq!(metric("bytes", "dropped") as u64, row.dropped_bytes);
    drop(daemon);
}

#[test]
fn reload_is_refused_to_other_hosts_but_metrics_are_served() {
    use netguard_tests::sandbox::TRUSTED_ADDR;
    let sb = Sandbox::new();
    let mut config = Config::for_sandbox(&sb);
    // On the guarded address: the trusted source may reach any port, 9100 included.
    config.extra = format!("[admin]\nlisten = \"{EDGE_ADDR}:9100\"\n");
    let daemon = Daemon::start(&sb.edge, &config);
    let url = |path: &str| format!("http://{EDGE_ADDR}:9100{path}");
    let curl_status = |ns: &NetNs, args: &[&str]| {
        let mut full = vec![
            "curl",
            "-sS",
            "--max-time",
            "10",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
        ];
        full.extend(args);
        let out = ns.output_timeout(&full, Duration::from_secs(20));
        cmd::lossy(&out.stdout).trim().to_string()
    };
    let trusted = TRUSTED_ADDR.to_string();
    assert_eq!(
        curl_status(&sb.client, &["--interface", &trusted, &url("/metrics")]),
        "200"
    );
    assert_eq!(
        curl_status(
            &sb.client,
            &["--interface", &trusted, "-X", "POST", &url("/reload")]
        ),
        "403"
    );
    // From the host itself, to the same address: allowed, and `netguard reload` finds it
    // through the config file.
    assert_eq!(
        curl_status(&sb.edge, &["-X", "POST", &url("/reload")]),
        "200"
    );
    let out = reload(&daemon);
    assert!(out.status.success(), "{}", show(&out));
    let m = scrape_at(&sb.edge, &url("/metrics"));
    assert_eq!(
        m.value("netguard_config_reloads_total", &[("result", "success")]),
        2.0
    );
    drop(daemon);
}

fn scrape_at(ns: &NetNs, url: &str) -> Scrape {
    let out = ns.output_timeout(
        &["curl", "-sS", "--max-time", "10", url],
        Duration::from_secs(20),
    );
    Scrape::parse(&cmd::lossy(&out.stdout)).unwrap_or_else(|e| panic!("{url}: {e}"))
}

#[test]
fn private_network_metrics_count_isolation_decisions() {
    use netguard_tests::private_sandbox::{PrivateSandbox, STANDARD};
    let sb = PrivateSandbox::new();
    let daemon = Daemon::start(&sb.host, &sb.config(None, 7));
    let (web1, worker1, b_web1) = (
        sb.container(STANDARD[0].address),
        sb.container(STANDARD[1].address),
        sb.container(STANDARD[3].address),
    );
    let before = scrape(&sb.host);
    // Same network: reaches. Across networks: dropped.
    assert_eq!(
        tcp_connect(&web1.ns, None, worker1.tcp(), PROBE_TIMEOUT),
        ProbeResult::Connected
    );
    for _ in 0..3 {
        assert_eq!(
            tcp_connect(&b_web1.ns, None, web1.tcp(), Duration::from_millis(500)),
            ProbeResult::TimedOut
        );
    }
    let after = scrape(&sb.host);
    let moved = |reason: &str, verdict: &str| {
        let labels = [("reason", reason), ("verdict", verdict)];
        after.value("netguard_private_network_packets_total", &labels)
            - before.value("netguard_private_network_packets_total", &labels)
    };
    // At least the SYN and its SYN-ACK.
    assert!(
        moved("passed", "pass") >= 2.0,
        "{}",
        moved("passed", "pass")
    );
    // B cannot even resolve web 1's address: its ARP requests are what is dropped.
    assert!(
        moved("other_network", "drop") >= 1.0,
        "{}",
        moved("other_network", "drop")
    );
    drop(daemon);
}
