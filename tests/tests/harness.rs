//! Self-tests of the namespace harness, with no filter attached: they prove that what the e2e
//! tests assert about netguard (a timeout, no RST, a reply, a resolved neighbour, a counter)
//! would come out differently if the filter did nothing.
//!
//! Run: `AYA_BUILD_SKIP=1 cargo test -p netguard-tests --test harness -- --test-threads=1`

use std::{
    io::Write as _,
    net::{IpAddr, SocketAddr},
    os::unix::fs::PermissionsExt,
    path::Path,
    process::Command,
    time::{Duration, Instant},
};

use netguard_tests::{
    Capture, Config, Daemon, NetNs, ProbeResult, Sandbox, TempDir,
    listeners::{Services, udp_socket},
    netns,
    probe::{
        self, PROBE_TIMEOUT, ping, tcp_connect, tcp_connect_from, tcp_echo, udp_exchange,
        udp_probe, udp_probe_from, udp_receive, wait_neighbour,
    },
    sandbox::{
        CLIENT_ADDR, CLIENT_MAC, CLIENT_TCP_PORT, CLIENT_UDP_PORT, DENIED_ADDR, EDGE_ADDR,
        EDGE_MAC, TRUSTED_ADDR,
    },
};

fn edge(port: u16) -> SocketAddr {
    Sandbox::edge_addr(port)
}

fn ip_netns_list() -> String {
    let out = Command::new("ip")
        .args(["netns", "list"])
        .output()
        .expect("ip netns list");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn assert_gone(names: &[String]) {
    let listed = ip_netns_list();
    for name in names {
        assert!(!netns::exists(name), "namespace {name} still exists");
        assert!(
            !listed.split_whitespace().any(|w| w == name),
            "`ip netns list` still shows {name}:\n{listed}"
        );
    }
}

#[test]
fn names_fit_interface_limits() {
    let sb = Sandbox::new();
    for name in [&sb.client_if, &sb.edge_if] {
        assert!(name.len() <= 15, "{name}");
        assert!(name.starts_with("ngt-"), "{name}");
    }
    assert_ne!(sb.client.name(), sb.edge.name());
    let links = sb.edge.exec(&["ip", "-o", "link", "show"]);
    assert!(links.contains(&sb.edge_if), "{links}");
    assert!(
        !links.contains(&sb.client_if),
        "the client veth must not be in the edge namespace"
    );
    assert_eq!(
        netguard_tests::veth::mac_of(&sb.client, &sb.client_if),
        CLIENT_MAC
    );
    assert_eq!(
        netguard_tests::veth::mac_of(&sb.edge, &sb.edge_if),
        EDGE_MAC
    );
    let lo = sb.edge.exec(&["ip", "-o", "link", "show", "lo"]);
    assert!(lo.contains("UP"), "loopback down: {lo}");
}

#[test]
fn tcp_and_udp_reach_edge_from_every_client_address() {
    let sb = Sandbox::new();
    let services = Services::edge(&sb.edge);
    for port in [80, 443, 22, 8080] {
        assert_eq!(
            tcp_connect(&sb.client, None, edge(port), PROBE_TIMEOUT),
            ProbeResult::Connected,
            "port {port}"
        );
        assert_eq!(
            tcp_echo(&sb.client, None, edge(port), PROBE_TIMEOUT),
            ProbeResult::Connected,
            "echo {port}"
        );
    }
    for src in [CLIENT_ADDR, TRUSTED_ADDR, DENIED_ADDR] {
        let src = IpAddr::V4(src);
        let r = tcp_echo(
            &sb.client,
            Some(SocketAddr::new(src, 0)),
            edge(22),
            PROBE_TIMEOUT,
        );
        assert_eq!(r, ProbeResult::Connected, "TCP from {src}");
        assert!(
            udp_probe_from(&sb.client, src, edge(53), b"q", PROBE_TIMEOUT),
            "UDP from {src}"
        );
    }
    assert!(services.tcp(22).accepted() >= 4);
    assert!(udp_probe(&sb.client, edge(53), b"hello", PROBE_TIMEOUT));
    assert!(services.udp(53).received() >= 1);
    // A closed port answers with RST / ICMP, which is what the filter must suppress.
    assert_eq!(
        tcp_connect(&sb.client, None, edge(9999), PROBE_TIMEOUT),
        ProbeResult::Refused
    );
    assert!(!udp_probe(
        &sb.client,
        edge(54),
        b"x",
        Duration::from_millis(600)
    ));
    assert!(ping(
        &sb.client,
        IpAddr::V4(EDGE_ADDR),
        1,
        Duration::from_secs(3)
    ));
}

#[test]
fn bound_source_port_is_used() {
    let sb = Sandbox::new();
    let listener = netguard_tests::listeners::tcp_listener(&sb.edge, edge(7000)).unwrap();
    let src = SocketAddr::new(IpAddr::V4(TRUSTED_ADDR), 41234);
    let r = tcp_connect_from(&sb.client, Some(src), edge(7000), PROBE_TIMEOUT);
    assert_eq!(r, ProbeResult::Connected);
    let (_stream, peer) = listener.accept().unwrap();
    assert_eq!(peer, src);
}

#[test]
fn unanswered_connect_times_out_within_bound() {
    let sb = Sandbox::new();
    // Nobody owns 203.0.113.77: ARP gets no answer, so the SYN never leaves.
    let start = Instant::now();
    let r = tcp_connect(
        &sb.client,
        None,
        "203.0.113.77:80".parse().unwrap(),
        Duration::from_secs(1),
    );
    let took = start.elapsed();
    assert_eq!(r, ProbeResult::TimedOut);
    assert!(
        took >= Duration::from_millis(950) && took < Duration::from_secs(3),
        "{took:?}"
    );
}

#[test]
fn capture_sees_rst_and_icmp_from_edge() {
    let sb = Sandbox::new();
    let _services = Services::edge(&sb.edge);
    let cap = Capture::start(&sb.client, &sb.client_if);
    assert_eq!(
        tcp_connect(&sb.client, None, edge(9999), PROBE_TIMEOUT),
        ProbeResult::Refused
    );
    assert!(!udp_probe(
        &sb.client,
        edge(54),
        b"x",
        Duration::from_millis(600)
    ));
    assert_eq!(
        tcp_connect(&sb.client, None, edge(80), PROBE_TIMEOUT),
        ProbeResult::Connected
    );
    let got = cap.finish();
    let edge_ip = IpAddr::V4(EDGE_ADDR);
    let rsts = got.rsts_from(edge_ip);
    assert!(!rsts.is_empty(), "no RST seen from the edge");
    assert!(
        rsts.iter().all(|l| l.contains("203.0.113.10.9999 >")),
        "{rsts:?}"
    );
    let icmp = got.icmp_from(edge_ip);
    assert!(
        icmp.iter().any(|l| l.contains("port 54 unreachable")),
        "{icmp:?}"
    );
    assert!(got.count("tcp and dst port 80 and tcp[tcpflags] & tcp-syn != 0") >= 1);
    assert!(got.count(&format!("src host {edge_ip} and tcp src port 80")) >= 1);
}

#[test]
fn arp_resolves_both_ways() {
    let sb = Sandbox::new();
    let _services = Services::edge(&sb.edge);
    probe::flush_neighbours(&sb.client, &sb.client_if);
    assert_eq!(
        probe::neighbour(&sb.client, &sb.client_if, IpAddr::V4(EDGE_ADDR)),
        None
    );
    assert_eq!(
        tcp_echo(&sb.client, None, edge(80), PROBE_TIMEOUT),
        ProbeResult::Connected
    );
    let n = wait_neighbour(
        &sb.client,
        &sb.client_if,
        IpAddr::V4(EDGE_ADDR),
        Duration::from_secs(2),
    )
    .expect("client has a neighbour entry for the edge");
    assert!(n.is_resolved(), "{n:?}");
    assert_eq!(n.lladdr.as_deref(), Some(EDGE_MAC));
    let back = wait_neighbour(
        &sb.edge,
        &sb.edge_if,
        IpAddr::V4(CLIENT_ADDR),
        Duration::from_secs(2),
    )
    .expect("edge has a neighbour entry for the client");
    assert!(back.is_resolved(), "{back:?}");
    assert_eq!(back.lladdr.as_deref(), Some(CLIENT_MAC));
}

#[test]
fn host_outbound_flows_and_unsolicited_probes_without_filter() {
    let sb = Sandbox::new();
    let client_services = Services::client(&sb.client);
    let edge_src = SocketAddr::new(IpAddr::V4(EDGE_ADDR), 40001);
    let client_tcp = Sandbox::client_addr(CLIENT_TCP_PORT);
    assert_eq!(
        tcp_echo(&sb.edge, Some(edge_src), client_tcp, PROBE_TIMEOUT),
        ProbeResult::Connected
    );
    assert_eq!(client_services.tcp(CLIENT_TCP_PORT).accepted(), 1);

    let edge_udp = udp_socket(&sb.edge, SocketAddr::new(IpAddr::V4(EDGE_ADDR), 40000)).unwrap();
    let reply = udp_exchange(
        &edge_udp,
        Sandbox::client_addr(CLIENT_UDP_PORT),
        b"dns?",
        PROBE_TIMEOUT,
    );
    assert_eq!(reply.as_deref(), Some(&b"dns?"[..]));

    // Unsolicited, without a filter: the closed TCP port answers RST, the UDP socket receives.
    assert_eq!(
        tcp_connect(&sb.client, None, edge(40001), PROBE_TIMEOUT),
        ProbeResult::Refused
    );
    let client_udp = udp_socket(&sb.client, "0.0.0.0:5354".parse().unwrap()).unwrap();
    client_udp.send_to(b"unsolicited", edge(40000)).unwrap();
    let got = udp_receive(&edge_udp, Duration::from_secs(1));
    assert_eq!(
        got.map(|(d, from)| (d, from.port())),
        Some((b"unsolicited".to_vec(), 5354))
    );
}

#[test]
fn two_sandboxes_coexist_and_are_removed() {
    let a = Sandbox::new();
    let b = Sandbox::new();
    let names: Vec<String> = [&a, &b]
        .iter()
        .flat_map(|s| [s.client.name().to_string(), s.edge.name().to_string()])
        .collect();
    let mut unique = names.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), 4, "{names:?}");
    let _sa = Services::edge(&a.edge);
    let _sb = Services::edge(&b.edge);
    assert_eq!(
        tcp_connect(&a.client, None, edge(80), PROBE_TIMEOUT),
        ProbeResult::Connected
    );
    assert_eq!(
        tcp_connect(&b.client, None, edge(80), PROBE_TIMEOUT),
        ProbeResult::Connected
    );
    for n in &names {
        assert!(ip_netns_list().contains(n.as_str()));
    }
    drop(_sa);
    drop(_sb);
    drop(a);
    drop(b);
    assert_gone(&names);
}

#[test]
fn namespaces_are_removed_after_a_panic() {
    let names = std::sync::Mutex::new(Vec::new());
    let result = std::panic::catch_unwind(|| {
        let sb = Sandbox::new();
        let _services = Services::edge(&sb.edge);
        names
            .lock()
            .unwrap()
            .extend([sb.client.name().to_string(), sb.edge.name().to_string()]);
        panic!("deliberate");
    });
    assert!(result.is_err());
    let names = names.into_inner().unwrap();
    assert_eq!(names.len(), 2);
    assert_gone(&names);
}

#[test]
fn netns_exec_output_and_spawn() {
    let ns = NetNs::new();
    let out = ns.output(&["sh", "-c", "echo hi; exit 3"]);
    assert_eq!(out.status.code(), Some(3));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hi\n");
    assert!(ns.try_exec(&["false"]).is_err());
    let dir = TempDir::new().unwrap();
    let mut proc = ns.spawn(
        &["sh", "-c", "echo started; exec sleep 30"],
        &dir.join("log"),
    );
    proc.wait_for_log("started", Duration::from_secs(5))
        .unwrap();
    let pid = proc.pid();
    // The process lives in the namespace.
    let own = std::fs::read_link(format!("/proc/{pid}/ns/net")).unwrap();
    let target = std::fs::metadata(ns.path()).unwrap();
    let own_meta = std::fs::metadata(format!("/proc/{pid}/ns/net")).unwrap();
    use std::os::unix::fs::MetadataExt;
    assert_eq!(own_meta.ino(), target.ino(), "{own:?}");
    let start = Instant::now();
    drop(proc);
    assert!(start.elapsed() < Duration::from_secs(2));
    assert!(!Path::new(&format!("/proc/{pid}")).exists() || zombie_or_gone(pid));
}

fn zombie_or_gone(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| s.split_whitespace().nth(2) == Some("Z"))
        .unwrap_or(true)
}

/// A stand-in for the netguard binary: proves the guard's start/ready/cli/stop/detach/cleanup
/// sequence, that it runs inside the namespace and that the pins live in the host's bpffs.
fn fake_netguard(dir: &TempDir, ready: bool) -> std::path::PathBuf {
    let path = dir.join("netguard");
    let calls = dir.join("calls");
    let links = dir.join("links");
    let run = if ready {
        r#"pin=$(sed -n 's/^pin_path = "\(.*\)"/\1/p' "$3")
           mkdir -p "$pin" && ip -o link show > LINKS
           echo "2025-01-01T00:00:00Z  INFO netguard: netguard ready interface=x" >&2
           exec sleep 60"#
    } else {
        r#"echo "Error: boom: cannot attach XDP program" >&2; exit 1"#
    };
    let script = format!(
        r#"#!/bin/sh
echo "$*" >> CALLS
case "$1" in
  run) {run} ;;
  stats) echo '{{"action":"enforce","reasons":{{"passed":{{"packets":5,"bytes":300}},"port_closed":{{"packets":2,"bytes":120}}}},"would_drop":{{}}}}' ;;
  deny) echo ok ;;
  detach) echo detached ;;
  *) exit 2 ;;
esac
"#
    )
    .replace("CALLS", &calls.to_string_lossy())
    .replace("LINKS", &links.to_string_lossy());
    let mut f = std::fs::File::create(&path).unwrap();
    f.write_all(script.as_bytes()).unwrap();
    drop(f);
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

#[test]
fn daemon_guard_lifecycle_with_a_fake_binary() {
    let sb = Sandbox::new();
    let dir = TempDir::new().unwrap();
    let bin = fake_netguard(&dir, true);
    let config = Config::for_sandbox(&sb);
    let pin = config.pin_path.clone();
    assert!(
        pin.to_string_lossy().starts_with("/sys/fs/bpf/ngt-"),
        "{pin:?}"
    );
    let mut daemon = Daemon::start_with(&bin, &sb.edge, &config);
    assert!(daemon.is_running());
    assert!(pin.is_dir(), "the fake made its pin dir in the host bpffs");
    let links = std::fs::read_to_string(dir.join("links")).unwrap();
    assert!(
        links.contains(&sb.edge_if),
        "daemon not in the edge namespace: {links}"
    );
    let toml = std::fs::read_to_string(daemon.config_path()).unwrap();
    assert!(
        toml.contains(&format!("interface = \"{}\"", sb.edge_if)),
        "{toml}"
    );
    let stats = daemon.stats();
    assert_eq!(stats.action, "enforce");
    assert_eq!(stats.packets("passed"), 5);
    assert_eq!(stats.packets("port_closed"), 2);
    daemon.deny_add(&["192.0.2.99/32"]);
    daemon.deny_del(&["192.0.2.99/32"]);
    let pid = daemon.pid().unwrap();
    let start = Instant::now();
    drop(daemon);
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "{:?}",
        start.elapsed()
    );
    assert!(zombie_or_gone(pid), "daemon still running");
    assert!(!pin.exists(), "pin dir left behind");
    let calls = std::fs::read_to_string(dir.join("calls")).unwrap();
    let p = pin.to_string_lossy();
    let expected = [
        format!("run --config {}", dir.path().parent().unwrap().display()),
        format!("stats --json --pin-path {p}"),
        format!("deny add 192.0.2.99/32 --pin-path {p}"),
        format!("deny del 192.0.2.99/32 --pin-path {p}"),
        format!("detach --pin-path {p}"),
    ];
    let lines: Vec<&str> = calls.lines().collect();
    assert_eq!(lines.len(), expected.len(), "{calls}");
    for (line, want) in lines.iter().zip(&expected) {
        assert!(
            line.starts_with(want.as_str()),
            "{line:?} should start with {want:?}"
        );
    }
}

#[test]
fn daemon_that_exits_fails_fast_with_its_log() {
    let sb = Sandbox::new();
    let dir = TempDir::new().unwrap();
    let bin = fake_netguard(&dir, false);
    let config = Config::for_sandbox(&sb);
    let start = Instant::now();
    let err = std::panic::catch_unwind(|| Daemon::start_with(&bin, &sb.edge, &config)).unwrap_err();
    let msg = err.downcast_ref::<String>().cloned().unwrap_or_default();
    assert!(start.elapsed() < Duration::from_secs(10));
    assert!(msg.contains("boom: cannot attach"), "{msg}");
    assert!(msg.contains("exited"), "{msg}");
    assert!(!config.pin_path.exists());
    // The guard keeps its temp dir when panicking, for the post-mortem; this panic was planned.
    let log = msg
        .split_whitespace()
        .find(|w| w.ends_with("daemon.log:"))
        .expect("the message names the log file");
    let kept = Path::new(log.trim_end_matches(':')).parent().unwrap();
    assert!(kept.starts_with(std::env::temp_dir()), "{kept:?}");
    std::fs::remove_dir_all(kept).unwrap();
}
