//! End to end: the real netguard daemon attached to the edge veth of a fresh [`Sandbox`], probed
//! from the client namespace. One test per behaviour; each builds its own sandbox and daemon.
//!
//! Where a test asserts that something is dropped, it first shows — in the same sandbox, before
//! the daemon starts — that the same probe succeeds without the filter, so the test fails if the
//! filter does nothing.
//!
//! Needs root and the daemon binary: `cargo build -p netguard && cargo test -p netguard-tests
//! --test e2e_filter -- --test-threads=1` (`NETGUARD_BIN` overrides the binary path).

use std::{
    net::{IpAddr, SocketAddr},
    time::Duration,
};

use netguard_tests::{
    Capture, Config, Daemon, ProbeResult, Sandbox,
    listeners::{Services, udp_socket},
    probe::{
        PROBE_TIMEOUT, flush_neighbours, ping, tcp_connect, tcp_echo, udp_exchange, udp_probe,
        udp_receive, wait_neighbour,
    },
    sandbox::{
        CLIENT_ADDR, CLIENT_MAC, CLIENT_TCP_PORT, CLIENT_UDP_PORT, DENIED_ADDR, EDGE_ADDR,
        EDGE_MAC, TRUSTED_ADDR,
    },
};

use ProbeResult::{Connected, Refused, TimedOut};

/// A sandbox with the edge's standard services. Field order is drop order: the daemon goes
/// first (it detaches inside the edge namespace), the namespaces last.
struct Edge {
    daemon: Option<Daemon>,
    services: Services,
    sb: Sandbox,
}

impl Edge {
    fn new() -> Edge {
        let sb = Sandbox::new();
        let services = Services::edge(&sb.edge);
        Edge {
            daemon: None,
            services,
            sb,
        }
    }

    /// Starts netguard with the standard policy (TCP 80/443 open, 192.0.2.50 trusted,
    /// 198.51.100.0/24 denied) on the edge veth.
    fn start(&mut self) -> &Daemon {
        assert!(self.daemon.is_none(), "daemon already started");
        let config = Config::for_sandbox(&self.sb);
        self.daemon.insert(Daemon::start(&self.sb.edge, &config))
    }

    fn daemon(&self) -> &Daemon {
        self.daemon.as_ref().expect("daemon started")
    }

    /// TCP connect from the client, from `src` (default: 192.0.2.99), to the edge.
    fn connect(&self, src: Option<std::net::Ipv4Addr>, port: u16) -> ProbeResult {
        tcp_connect(
            &self.sb.client,
            src.map(IpAddr::V4),
            edge(port),
            PROBE_TIMEOUT,
        )
    }

    /// Connect + echo round trip from the client.
    fn echo(&self, src: Option<std::net::Ipv4Addr>, port: u16) -> ProbeResult {
        let src = src.map(|a| SocketAddr::new(IpAddr::V4(a), 0));
        tcp_echo(&self.sb.client, src, edge(port), PROBE_TIMEOUT)
    }
}

fn edge(port: u16) -> SocketAddr {
    Sandbox::edge_addr(port)
}

#[test]
fn allowed_tcp_ports_pass() {
    let mut e = Edge::new();
    e.start();
    assert_eq!(e.echo(None, 80), Connected, "TCP 80 with the filter on");
    assert_eq!(e.echo(None, 443), Connected, "TCP 443 with the filter on");
    assert_eq!(e.services.tcp(80).accepted(), 1);
    assert_eq!(e.services.tcp(443).accepted(), 1);
    let stats = e.daemon().stats();
    assert_eq!(stats.action, "enforce");
    assert!(
        stats.packets("passed") >= 4,
        "SYN and data of both connections: {}",
        stats.raw
    );
}

#[test]
fn closed_tcp_ports_time_out_without_rst_or_icmp() {
    let mut e = Edge::new();
    assert_eq!(e.echo(None, 22), Connected, "TCP 22 without the filter");
    assert_eq!(e.echo(None, 8080), Connected, "TCP 8080 without the filter");
    assert_eq!(
        e.connect(None, 9999),
        Refused,
        "a closed port answers RST without the filter"
    );
    e.start();
    let before = (
        e.services.tcp(22).accepted(),
        e.services.tcp(8080).accepted(),
    );

    let capture = Capture::start(&e.sb.client, &e.sb.client_if);
    assert_eq!(e.connect(None, 22), TimedOut, "TCP 22 with the filter on");
    assert_eq!(
        e.connect(None, 8080),
        TimedOut,
        "TCP 8080 with the filter on"
    );
    assert_eq!(
        e.connect(None, 9999),
        TimedOut,
        "TCP 9999 (no listener) with the filter on"
    );
    let got = capture.finish();

    let edge_ip = IpAddr::V4(EDGE_ADDR);
    // The capture saw the client's SYNs, so an empty answer below means nothing came back.
    for port in [22, 8080, 9999] {
        let syns = got.count(&format!(
            "dst host {edge_ip} and tcp dst port {port} and tcp[tcpflags] & tcp-syn != 0"
        ));
        assert!(syns >= 1, "capture missed the SYNs to {port}");
    }
    assert_eq!(
        got.rsts_from(edge_ip),
        Vec::<String>::new(),
        "RST came back"
    );
    assert_eq!(
        got.icmp_from(edge_ip),
        Vec::<String>::new(),
        "ICMP came back"
    );
    assert_eq!(
        got.count(&format!("src host {edge_ip} and tcp")),
        0,
        "any TCP came back"
    );
    assert_eq!(
        (
            e.services.tcp(22).accepted(),
            e.services.tcp(8080).accepted()
        ),
        before,
        "a listener accepted a connection through the filter"
    );
    let stats = e.daemon().stats();
    assert!(stats.packets("port_closed") >= 3, "{}", stats.raw);
}

#[test]
fn udp_gets_no_reply() {
    let mut e = Edge::new();
    assert!(
        udp_probe(&e.sb.client, edge(53), b"query", PROBE_TIMEOUT),
        "UDP 53 echo without the filter"
    );
    e.start();
    let before = e.services.udp(53).received();
    let capture = Capture::start(&e.sb.client, &e.sb.client_if);
    assert!(
        !udp_probe(&e.sb.client, edge(53), b"query", PROBE_TIMEOUT),
        "UDP 53 answered with the filter on"
    );
    let got = capture.finish();
    assert_eq!(
        e.services.udp(53).received(),
        before,
        "the UDP server received a datagram"
    );
    assert_eq!(
        got.icmp_from(IpAddr::V4(EDGE_ADDR)),
        Vec::<String>::new(),
        "ICMP came back"
    );
    let stats = e.daemon().stats();
    assert!(stats.packets("port_closed") >= 1, "{}", stats.raw);
}

#[test]
fn denylisted_source_times_out_on_open_port() {
    let mut e = Edge::new();
    assert_eq!(
        e.echo(Some(DENIED_ADDR), 80),
        Connected,
        "198.51.100.7 → 80 without the filter"
    );
    e.start();
    assert_eq!(
        e.connect(Some(DENIED_ADDR), 80),
        TimedOut,
        "198.51.100.7 → 80 with the filter on"
    );
    assert_eq!(
        e.echo(Some(CLIENT_ADDR), 80),
        Connected,
        "192.0.2.99 → 80 with the filter on"
    );
    let stats = e.daemon().stats();
    assert!(stats.packets("denylisted") >= 1, "{}", stats.raw);
}

#[test]
fn trusted_source_reaches_closed_port() {
    let mut e = Edge::new();
    e.start();
    assert_eq!(
        e.echo(Some(TRUSTED_ADDR), 22),
        Connected,
        "192.0.2.50 → 22 with the filter on"
    );
    assert_eq!(
        e.connect(Some(CLIENT_ADDR), 22),
        TimedOut,
        "192.0.2.99 → 22 with the filter on"
    );
    let stats = e.daemon().stats();
    assert!(stats.packets("trusted") >= 1, "{}", stats.raw);
}

#[test]
fn arp_resolves_through_the_filter() {
    let mut e = Edge::new();
    e.start();
    let edge_ip = IpAddr::V4(EDGE_ADDR);
    // Client → edge: ARP must resolve even when the IP packet behind it is dropped.
    flush_neighbours(&e.sb.client, &e.sb.client_if);
    assert_eq!(e.connect(None, 22), TimedOut);
    let n = wait_neighbour(
        &e.sb.client,
        &e.sb.client_if,
        edge_ip,
        Duration::from_secs(2),
    );
    let n = n.expect("the client has no neighbour entry for 203.0.113.10");
    assert!(n.is_resolved(), "client's entry for the edge: {n:?}");
    assert_eq!(n.lladdr.as_deref(), Some(EDGE_MAC));
    // Edge → client: the edge's ARP request is answered by an ARP reply that crosses the filter.
    flush_neighbours(&e.sb.edge, &e.sb.edge_if);
    assert_eq!(e.echo(None, 80), Connected);
    let back = wait_neighbour(
        &e.sb.edge,
        &e.sb.edge_if,
        IpAddr::V4(CLIENT_ADDR),
        Duration::from_secs(2),
    );
    let back = back.expect("the edge has no neighbour entry for 192.0.2.99");
    assert!(back.is_resolved(), "edge's entry for the client: {back:?}");
    assert_eq!(back.lladdr.as_deref(), Some(CLIENT_MAC));
    let stats = e.daemon().stats();
    assert!(
        stats.packets("non_ip") >= 1,
        "ARP not counted as non_ip: {}",
        stats.raw
    );
}

#[test]
fn essential_icmp_echo_passes() {
    let mut e = Edge::new();
    e.start();
    assert!(
        ping(
            &e.sb.client,
            IpAddr::V4(EDGE_ADDR),
            2,
            Duration::from_secs(4)
        ),
        "ping with icmp = \"essential\""
    );
    let stats = e.daemon().stats();
    assert!(stats.packets("icmp") >= 1, "{}", stats.raw);
}

#[test]
fn stats_json_counts_every_probed_reason() {
    let mut e = Edge::new();
    e.start();
    assert_eq!(e.echo(None, 80), Connected);
    assert_eq!(e.connect(None, 22), TimedOut);
    assert_eq!(e.connect(Some(DENIED_ADDR), 443), TimedOut);
    assert_eq!(e.echo(Some(TRUSTED_ADDR), 8080), Connected);
    let stats = e.daemon().stats();
    assert_eq!(stats.action, "enforce");
    for reason in ["passed", "port_closed", "denylisted", "trusted"] {
        let c = stats.counter(reason);
        assert!(c.packets > 0, "{reason} is zero: {}", stats.raw);
        assert!(
            c.bytes >= c.packets * 42,
            "{reason} bytes below a minimal frame: {}",
            stats.raw
        );
    }
    for reason in netguard_tests::daemon::REASONS {
        assert!(
            stats.reasons.contains_key(reason),
            "reasons.{reason} missing: {}",
            stats.raw
        );
        let would = stats
            .would_drop
            .get(reason)
            .unwrap_or_else(|| panic!("would_drop.{reason} missing: {}", stats.raw));
        assert_eq!(
            would.packets, 0,
            "enforce mode counted would_drop.{reason}: {}",
            stats.raw
        );
    }
}

#[test]
fn deny_add_and_del_apply_to_the_next_connection() {
    let mut e = Edge::new();
    e.start();
    assert_eq!(e.echo(None, 443), Connected, "before deny add");
    e.daemon().deny_add(&["192.0.2.99/32"]);
    let list = e.daemon().deny_list();
    assert!(
        list.lines().any(|l| l.trim() == "192.0.2.99/32"),
        "deny list: {list}"
    );
    assert_eq!(
        e.connect(None, 443),
        TimedOut,
        "after deny add 192.0.2.99/32"
    );
    assert_eq!(
        e.echo(Some(TRUSTED_ADDR), 443),
        Connected,
        "192.0.2.50 is not in the /32"
    );
    let denied = e.daemon().stats().packets("denylisted");
    assert!(denied >= 1);
    e.daemon().deny_del(&["192.0.2.99/32"]);
    let list = e.daemon().deny_list();
    assert!(
        !list.lines().any(|l| l.trim() == "192.0.2.99/32"),
        "deny list: {list}"
    );
    assert_eq!(e.echo(None, 443), Connected, "after deny del 192.0.2.99/32");
}

#[test]
fn host_return_traffic_passes_and_unsolicited_is_dropped() {
    let mut e = Edge::new();
    let client_services = Services::client(&e.sb.client);
    let edge_tcp_src = SocketAddr::new(IpAddr::V4(EDGE_ADDR), 40001);
    let edge_udp = udp_socket(&e.sb.edge, SocketAddr::new(IpAddr::V4(EDGE_ADDR), 40000))
        .expect("edge UDP socket");
    let client_udp =
        udp_socket(&e.sb.client, "0.0.0.0:5354".parse().unwrap()).expect("client UDP socket");

    // Without the filter the edge's high ports are reachable: RST from the closed TCP port, and
    // the UDP socket receives.
    assert_eq!(e.connect(None, 40001), Refused);
    client_udp.send_to(b"unsolicited", edge(40000)).unwrap();
    let got = udp_receive(&edge_udp, Duration::from_secs(1));
    assert_eq!(
        got.map(|(d, _)| d),
        Some(b"unsolicited".to_vec()),
        "UDP to edge:40000 without the filter"
    );

    e.start();
    let to_client_tcp = Sandbox::client_addr(CLIENT_TCP_PORT);
    assert_eq!(
        tcp_echo(&e.sb.edge, Some(edge_tcp_src), to_client_tcp, PROBE_TIMEOUT),
        Connected,
        "edge → client:9000 with the filter on"
    );
    assert_eq!(client_services.tcp(CLIENT_TCP_PORT).accepted(), 1);
    let reply = udp_exchange(
        &edge_udp,
        Sandbox::client_addr(CLIENT_UDP_PORT),
        b"resolve",
        PROBE_TIMEOUT,
    );
    assert_eq!(
        reply.as_deref(),
        Some(&b"resolve"[..]),
        "edge → client:5353 reply with the filter on"
    );
    let stats = e.daemon().stats();
    assert!(stats.packets("return_flow") >= 2, "{}", stats.raw);

    // The same high ports, unsolicited from the client: dropped.
    assert_eq!(
        e.connect(None, 40001),
        TimedOut,
        "client → edge:40001 with the filter on"
    );
    client_udp.send_to(b"unsolicited", edge(40000)).unwrap();
    assert_eq!(
        udp_receive(&edge_udp, Duration::from_secs(1)),
        None,
        "UDP client:5354 → edge:40000 passed"
    );
    let after = e.daemon().stats();
    assert!(
        after.packets("port_closed") >= stats.packets("port_closed") + 2,
        "{} → {}",
        stats.raw,
        after.raw
    );
}

#[test]
fn filter_outlives_the_daemon_until_detach() {
    let mut e = Edge::new();
    e.start();
    assert_eq!(e.connect(None, 22), TimedOut);
    let pin = e.daemon().pin_path().to_path_buf();
    let status = e.daemon.as_mut().unwrap().terminate();
    assert!(
        status.is_some_and(|s| s.success()),
        "daemon exit after SIGTERM: {status:?}"
    );
    assert_eq!(
        e.connect(None, 22),
        TimedOut,
        "filter gone when the daemon exited"
    );
    assert_eq!(e.echo(None, 80), Connected);
    let daemon = e.daemon.take().unwrap();
    let out = daemon.cli(&["detach", "--pin-path", &pin.to_string_lossy()]);
    assert!(
        out.status.success(),
        "detach: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(e.echo(None, 22), Connected, "still filtered after detach");
    let left: Vec<_> = std::fs::read_dir(&pin)
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "pins left after detach: {left:?}");
    drop(daemon);
}
