//! End to end: private networks — isolation by the tc program on the private side, and the DNS
//! responder for `private-network.internal.` — with real traffic between namespaces.
//!
//! Topology ([`PrivateSandbox`]): a host namespace with the bridge `pnbr` (10.240.0.1/22, the
//! gateway); network A has app A's `web` 1 (10.240.0.2) and `worker` 1–2 (10.240.0.3–4),
//! network B has app B's `web` 1 (10.240.0.10), each container in its own namespace joined to
//! the bridge by a veth whose host side netguard guards; an outside namespace (192.0.2.10) is
//! routed to the private range through the host. Every container serves TCP echo on 3000 and
//! UDP echo on 5432.
//!
//! Every drop is first shown to be a working probe: without the daemon, or between two
//! containers of one network.
//!
//! Needs root, dig (dnsutils), bpftool and the daemon binary: `cargo build -p netguard && cargo
//! test -p netguard-tests --test e2e_private -- --test-threads=1` (`NETGUARD_BIN` overrides the
//! binary).

use std::{
    collections::BTreeMap,
    net::{IpAddr, Ipv4Addr, SocketAddr},
    process::Command,
    thread,
    time::{Duration, Instant},
};

use hickory_proto::{
    op::{Message, MessageType, Query, ResponseCode},
    rr::{Name, RData, RecordType, rdata::A},
};
use netguard_common::maps::{MAPS_DIR, PN_COUNTERS};
use netguard_tests::{
    Daemon, NetNs, ProbeResult,
    cmd::{self, COMMAND_TIMEOUT},
    private_sandbox::{
        APP_A, APP_B, Container, Dig, GATEWAY, PN_A, PN_B, PrivateSandbox, STANDARD, Spec,
        UDP_PORT, ZONE, dig,
    },
    probe::{ping, tcp_connect, tcp_echo, udp_probe, udp_request},
};

/// Answer TTL in the tests' config (not the default 5, so the test sees the key applied).
const TTL: u32 = 7;
/// How long a probe that should be dropped waits (an answered one takes well under 10 ms).
const DROP_WAIT: Duration = Duration::from_millis(1500);
/// TCP ports tried across networks: the echo port, well-known ones, a high one.
const CROSS_PORTS: [u16; 5] = [22, 80, 3000, 5432, 40000];

const WEB1: Ipv4Addr = STANDARD[0].address;
const WORKER1: Ipv4Addr = STANDARD[1].address;
const WORKER2: Ipv4Addr = STANDARD[2].address;
const B_WEB1: Ipv4Addr = STANDARD[3].address;

const WORKER3: Spec = Spec {
    network: PN_A,
    app: APP_A,
    kind: "worker",
    index: 3,
    address: Ipv4Addr::new(10, 240, 0, 5),
};

fn app_a() -> String {
    format!("{APP_A}.{PN_A}.{ZONE}")
}

fn workers_a() -> String {
    format!("worker.{APP_A}.{PN_A}.{ZONE}")
}

#[derive(Clone, Copy, Debug)]
enum Kind {
    Tcp(u16),
    Udp,
    Ping,
}

/// How a probe ended: something came back from the destination (a SYN-ACK, a RST, an echo,
/// a ping reply), or nothing did.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Outcome {
    Reached,
    Dropped,
    /// A probe that could not tell (a failed socket call): always a test failure.
    Broken(String),
}

struct Probe<'a> {
    from: &'a NetNs,
    what: String,
    to: Ipv4Addr,
    kind: Kind,
}

fn run(p: &Probe<'_>) -> Outcome {
    match p.kind {
        Kind::Tcp(port) => {
            match tcp_connect(p.from, None, SocketAddr::new(p.to.into(), port), DROP_WAIT) {
                ProbeResult::Connected | ProbeResult::Refused => Outcome::Reached,
                ProbeResult::TimedOut => Outcome::Dropped,
                // ARP got no answer: the kernel reports the neighbour as unreachable.
                ProbeResult::Failed(e) if e.contains("unreachable") => Outcome::Dropped,
                ProbeResult::Failed(e) => Outcome::Broken(e),
            }
        }
        Kind::Udp => {
            let dst = SocketAddr::new(p.to.into(), UDP_PORT);
            if udp_probe(p.from, dst, b"netguard private probe", DROP_WAIT) {
                Outcome::Reached
            } else {
                Outcome::Dropped
            }
        }
        Kind::Ping => {
            if ping(p.from, p.to.into(), 2, Duration::from_secs(2)) {
                Outcome::Reached
            } else {
                Outcome::Dropped
            }
        }
    }
}

/// Runs every probe at once (each is bounded by [`DROP_WAIT`] or ping's 2 s) and returns the
/// outcomes in order.
fn run_all(probes: &[Probe<'_>]) -> Vec<Outcome> {
    thread::scope(|s| {
        let handles: Vec<_> = probes.iter().map(|p| s.spawn(move || run(p))).collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
            .collect()
    })
}

/// Asserts every probe ended as `want`, listing every one that did not.
fn expect_all(probes: &[Probe<'_>], want: &Outcome, when: &str) {
    let outcomes = run_all(probes);
    let wrong: Vec<String> = probes
        .iter()
        .zip(&outcomes)
        .filter(|(_, o)| *o != want)
        .map(|(p, o)| format!("  {} → {:?}", p.what, o))
        .collect();
    assert!(
        wrong.is_empty(),
        "{when}: {} of {} probes were not {want:?}:\n{}",
        wrong.len(),
        probes.len(),
        wrong.join("\n")
    );
}

/// Every kind of probe (TCP on [`CROSS_PORTS`], UDP echo, ping) from `from` to `to`.
fn all_kinds<'a>(from: &'a NetNs, from_label: &str, to: Ipv4Addr) -> Vec<Probe<'a>> {
    let mut kinds: Vec<Kind> = CROSS_PORTS.iter().map(|&p| Kind::Tcp(p)).collect();
    kinds.extend([Kind::Udp, Kind::Ping]);
    kinds
        .into_iter()
        .map(|kind| Probe {
            from,
            what: format!("{from_label} → {to} {kind:?}"),
            to,
            kind,
        })
        .collect()
}

/// The probes that isolation must drop: B ↔ each container of A, and outside → every container.
fn forbidden(sb: &PrivateSandbox) -> Vec<Probe<'_>> {
    let b = sb.container(B_WEB1);
    let mut probes = Vec::new();
    for a in sb.network(PN_A) {
        probes.extend(all_kinds(&b.ns, &b.label(), a.spec.address));
        probes.extend(all_kinds(&a.ns, &a.label(), b.spec.address));
    }
    for c in &sb.containers {
        probes.extend(all_kinds(&sb.outside, "outside", c.spec.address));
    }
    probes
}

/// TCP echo on 3000 and UDP echo on 5432 between every ordered pair of `containers`.
fn same_network_works(containers: &[&Container], when: &str) {
    let mut failures = Vec::new();
    thread::scope(|s| {
        let mut handles = Vec::new();
        for from in containers {
            for to in containers {
                if from.spec.address == to.spec.address {
                    continue;
                }
                handles.push(s.spawn(move || {
                    let tcp = tcp_echo(&from.ns, None, to.tcp(), Duration::from_secs(3));
                    let udp =
                        udp_probe(&from.ns, to.udp(), b"same network", Duration::from_secs(3));
                    (from.label(), to.label(), tcp, udp)
                }));
            }
        }
        for h in handles {
            let (from, to, tcp, udp) = h.join().unwrap_or_else(|e| std::panic::resume_unwind(e));
            if tcp != ProbeResult::Connected || !udp {
                failures.push(format!("  {from} → {to}: tcp {tcp}, udp echo {udp}"));
            }
        }
    });
    assert!(
        failures.is_empty(),
        "{when}: same-network traffic failed:\n{}",
        failures.join("\n")
    );
}

/// The isolation program's counters (`NG_PN_COUNTERS`, summed over CPUs) by index, read with
/// bpftool from the daemon's pinned map; `None` if the map is not pinned or not readable.
fn pn_counters(daemon: &Daemon) -> Option<BTreeMap<u64, u64>> {
    let pin = daemon.pin_path().join(MAPS_DIR).join(PN_COUNTERS);
    let out = cmd::run(
        Command::new("bpftool").args(["-j", "map", "dump", "pinned", &pin.to_string_lossy()]),
        COMMAND_TIMEOUT,
    )
    .ok()?;
    if !out.status.success() {
        eprintln!(
            "bpftool map dump pinned {}: {}",
            pin.display(),
            cmd::lossy(&out.stderr)
        );
        return None;
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    let mut packets = BTreeMap::new();
    for entry in v.as_array()? {
        // With BTF: {"key": 1, "values": [{"cpu": 0, "value": {"packets": N, "bytes": M}}, …]}.
        let entry = entry.get("formatted").unwrap_or(entry);
        let key = entry.get("key")?.as_u64()?;
        let total: u64 = entry
            .get("values")?
            .as_array()?
            .iter()
            .filter_map(|cpu| cpu.get("value")?.get("packets")?.as_u64())
            .sum();
        packets.insert(key, total);
    }
    Some(packets)
}

/// Writes `config` (same pin path) over the running daemon's config, sends SIGHUP and waits for
/// the reload to be applied.
fn reload(daemon: &mut Daemon, sb: &PrivateSandbox) {
    let mut config = sb.config(None, TTL);
    config.pin_path = daemon.pin_path().to_path_buf();
    std::fs::write(daemon.config_path(), config.to_toml()).expect("rewrite the config");
    let before = daemon.log().len();
    daemon.signal(libc::SIGHUP);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let log = daemon.log();
        let new = log.get(before..).unwrap_or_default();
        if new.contains("config reloaded") {
            return;
        }
        assert!(
            !new.contains("reload rejected") && Instant::now() < deadline && daemon.is_running(),
            "the reload was not applied; log:\n{}",
            daemon.log_tail(30)
        );
        thread::sleep(Duration::from_millis(50));
    }
}

/// (1) Same-network TCP and UDP on arbitrary ports work; B → A and A → B are dropped on every
/// port tried, UDP and ICMP included; the outside cannot reach any private address. Each
/// forbidden probe is first shown to reach its target without the daemon.
#[test]
fn networks_are_isolated_from_each_other_and_from_outside() {
    let sb = PrivateSandbox::new();
    let forbidden_probes = forbidden(&sb);
    expect_all(&forbidden_probes, &Outcome::Reached, "without netguard");
    same_network_works(&sb.network(PN_A), "without netguard");

    let daemon = Daemon::start(&sb.host, &sb.config(None, TTL));
    let counters_before = pn_counters(&daemon);

    same_network_works(&sb.network(PN_A), "with netguard");
    expect_all(&forbidden_probes, &Outcome::Dropped, "with netguard");
    // B still talks to its own gateway (the DNS responder's address).
    let b = sb.container(B_WEB1);
    assert!(
        ping(&b.ns, GATEWAY.into(), 2, Duration::from_secs(3)),
        "B → its gateway"
    );
    // Same-network traffic is unaffected by all those drops.
    same_network_works(&sb.network(PN_A), "after the forbidden probes");

    // The drops are the isolation program's: its counters moved by reason.
    match (counters_before, pn_counters(&daemon)) {
        (Some(before), Some(after)) => {
            let moved =
                |i: u64| after.get(&i).copied().unwrap_or(0) - before.get(&i).copied().unwrap_or(0);
            assert!(moved(0) > 0, "passed did not move: {after:?}");
            assert!(moved(1) > 0, "other_network did not move: {after:?}");
            assert!(
                moved(2) > 0,
                "unknown_source (the outside) did not move: {after:?}"
            );
        }
        _ => eprintln!("NG_PN_COUNTERS not readable with bpftool: counter check skipped"),
    }
}

/// Builds a query for `name`/`qtype` with a fixed id.
fn query(id: u16, name: &str, qtype: RecordType) -> Vec<u8> {
    let mut m = Message::query();
    m.metadata.id = id;
    m.metadata.recursion_desired = true;
    m.add_query(Query::query(
        Name::from_ascii(name).expect("a valid name"),
        qtype,
    ));
    m.to_vec().expect("encode the query")
}

/// A query over UDP from `ns` to the gateway, decoded; checks the id and that it is a response.
fn resolve(ns: &NetNs, name: &str, qtype: RecordType) -> Message {
    let id = 0x5a5a;
    let wire = query(id, name, qtype);
    let server = SocketAddr::new(IpAddr::V4(GATEWAY), 53);
    let answer = udp_request(ns, None, server, &wire, Duration::from_secs(3))
        .unwrap_or_else(|| panic!("no DNS answer from {server} for {name} in {}", ns.name()));
    let m = Message::from_vec(&answer).expect("a decodable answer");
    assert_eq!(m.metadata.id, id);
    assert_eq!(m.metadata.message_type, MessageType::Response);
    assert_eq!(m.queries.len(), 1, "question echoed: {m}");
    m
}

fn a_records(m: &Message) -> Vec<Ipv4Addr> {
    let mut out: Vec<Ipv4Addr> = m
        .answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(A(ip)) => Some(*ip),
            _ => None,
        })
        .collect();
    out.sort();
    out
}

fn expect_dig(d: &Dig, status: &str, aa: bool, addresses: &[Ipv4Addr], what: &str) {
    assert_eq!(d.status, status, "{what}:\n{}", d.raw);
    assert_eq!(d.authoritative(), aa, "{what}: AA flag:\n{}", d.raw);
    assert_eq!(d.addresses(), addresses, "{what}:\n{}", d.raw);
    for (name, ttl, _, _) in &d.answers {
        assert_eq!(*ttl, TTL, "{what}: TTL of {name}:\n{}", d.raw);
    }
}

/// (2) dig and a Rust client get the A records of all three name forms from inside network A,
/// NXDOMAIN for unknown names, NODATA for AAAA; B and the outside are refused A's names while B
/// resolves its own.
#[test]
fn dns_answers_members_and_refuses_others() {
    let sb = PrivateSandbox::new();
    let _daemon = Daemon::start(&sb.host, &sb.config(None, TTL));
    let web1 = &sb.container(WEB1).ns;
    let b = &sb.container(B_WEB1).ns;

    // dig, from A's web 1.
    let forms = [
        (app_a(), vec![WEB1]),
        (workers_a(), vec![WORKER1, WORKER2]),
        (STANDARD[2].hostname(), vec![WORKER2]),
    ];
    for (name, want) in &forms {
        expect_dig(
            &dig(web1, GATEWAY, name, "A", false),
            "NOERROR",
            true,
            want,
            name,
        );
        expect_dig(
            &dig(web1, GATEWAY, name, "A", true),
            "NOERROR",
            true,
            want,
            name,
        );
    }
    for unknown in [
        format!("3.worker.{APP_A}.{PN_A}.{ZONE}"),
        format!("clock.{APP_A}.{PN_A}.{ZONE}"),
        format!("ap-00000000-0000-4000-8000-000000000000.{PN_A}.{ZONE}"),
    ] {
        expect_dig(
            &dig(web1, GATEWAY, &unknown, "A", false),
            "NXDOMAIN",
            true,
            &[],
            &unknown,
        );
    }
    let aaaa = dig(web1, GATEWAY, &workers_a(), "AAAA", false);
    expect_dig(&aaaa, "NOERROR", true, &[], "AAAA of a known name");
    assert!(aaaa.answers.is_empty(), "{}", aaaa.raw);
    expect_dig(
        &dig(web1, GATEWAY, "example.com.", "A", false),
        "REFUSED",
        false,
        &[],
        "another zone",
    );

    // B: refused A's names, its own resolve (the same path works for B).
    for name in [app_a(), workers_a(), STANDARD[2].hostname()] {
        expect_dig(
            &dig(b, GATEWAY, &name, "A", false),
            "REFUSED",
            false,
            &[],
            &name,
        );
    }
    let own = format!("{APP_B}.{PN_B}.{ZONE}");
    expect_dig(
        &dig(b, GATEWAY, &own, "A", false),
        "NOERROR",
        true,
        &[B_WEB1],
        &own,
    );
    // The outside reaches the gateway address through the host, and is refused.
    expect_dig(
        &dig(&sb.outside, GATEWAY, &app_a(), "A", false),
        "REFUSED",
        false,
        &[],
        "from outside",
    );

    // The same with a Rust client (hickory-proto over a UDP socket), from A's worker 2.
    let w2 = &sb.container(WORKER2).ns;
    for (name, want) in &forms {
        let m = resolve(w2, name, RecordType::A);
        assert_eq!(
            m.metadata.response_code,
            ResponseCode::NoError,
            "{name}: {m}"
        );
        assert!(m.metadata.authoritative, "{name}: {m}");
        assert!(!m.metadata.recursion_available);
        assert_eq!(&a_records(&m), want, "{name}: {m}");
        assert!(m.answers.iter().all(|r| r.ttl == TTL), "{m}");
    }
    let m = resolve(
        w2,
        &format!("9.worker.{APP_A}.{PN_A}.{ZONE}"),
        RecordType::A,
    );
    assert_eq!(m.metadata.response_code, ResponseCode::NXDomain, "{m}");
    let m = resolve(w2, &workers_a(), RecordType::AAAA);
    assert_eq!(m.metadata.response_code, ResponseCode::NoError, "{m}");
    assert!(m.answers.is_empty(), "{m}");
    let m = resolve(b, &workers_a(), RecordType::A);
    assert_eq!(m.metadata.response_code, ResponseCode::Refused, "{m}");
    assert!(m.answers.is_empty(), "{m}");
    // Garbage gets no answer, and the responder keeps serving.
    let server = SocketAddr::new(IpAddr::V4(GATEWAY), 53);
    assert_eq!(
        udp_request(
            w2,
            None,
            server,
            b"\x12\x34garbage",
            Duration::from_millis(600)
        ),
        None
    );
    assert_eq!(a_records(&resolve(w2, &app_a(), RecordType::A)), [WEB1]);
}

/// (3) A reload that scales A's `worker` from 2 to 3: before it, the new container is neither
/// named nor reachable; after it, the new name resolves (alone and in `worker.…`), the new
/// container and A's others reach each other, and B still cannot reach it.
#[test]
fn reload_scales_a_worker() {
    let mut sb = PrivateSandbox::new();
    let mut daemon = Daemon::start(&sb.host, &sb.config(None, TTL));
    sb.add_container(WORKER3);
    let new_name = WORKER3.hostname();
    let web1 = sb.container(WEB1);
    let w3 = sb.container(WORKER3.address);

    // Not configured yet: unknown to DNS, and dropped both ways by A's configured veths.
    expect_dig(
        &dig(&web1.ns, GATEWAY, &new_name, "A", false),
        "NXDOMAIN",
        true,
        &[],
        "before the reload",
    );
    expect_all(
        &[
            Probe {
                from: &w3.ns,
                what: "worker 3 → web 1 tcp/3000 (before the reload)".into(),
                to: WEB1,
                kind: Kind::Tcp(3000),
            },
            Probe {
                from: &web1.ns,
                what: "web 1 → worker 3 tcp/3000 (before the reload)".into(),
                to: WORKER3.address,
                kind: Kind::Tcp(3000),
            },
        ],
        &Outcome::Dropped,
        "before the reload",
    );

    reload(&mut daemon, &sb);
    let web1 = sb.container(WEB1);
    let w3 = sb.container(WORKER3.address);

    expect_dig(
        &dig(&web1.ns, GATEWAY, &new_name, "A", false),
        "NOERROR",
        true,
        &[WORKER3.address],
        "the new name",
    );
    expect_dig(
        &dig(&web1.ns, GATEWAY, &workers_a(), "A", false),
        "NOERROR",
        true,
        &[WORKER1, WORKER2, WORKER3.address],
        "worker.… after scaling",
    );
    // The new container is a member: it resolves names itself.
    let m = resolve(&w3.ns, &app_a(), RecordType::A);
    assert_eq!(a_records(&m), [WEB1], "{m}");
    same_network_works(&sb.network(PN_A), "after the reload");
    // Still isolated from B, both ways (the same probes reach A's containers above).
    let b = sb.container(B_WEB1);
    let mut probes = all_kinds(&b.ns, "B web 1", WORKER3.address);
    probes.extend(all_kinds(&w3.ns, "worker 3", B_WEB1));
    probes.extend(all_kinds(&sb.outside, "outside", WORKER3.address));
    expect_all(&probes, &Outcome::Dropped, "after the reload");
}
