//! The demo's second part: private networks on their own host namespace.
//!
//! Four containers in two private networks behind a bridge (`PrivateSandbox`: network A holds
//! app A's `web` 1 and `worker` 1–2, network B app B's `web` 1), and an outside namespace routed
//! to them through the host. netguard runs on the host with the private-network config: members
//! of one network reach each other on any port, nothing else reaches them, and the gateway's DNS
//! answers members for their own network's names.

use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr},
    path::Path,
    time::Duration,
};

use netguard_tests::{
    Daemon, ProbeResult,
    netns::NetNs,
    private_sandbox::{APP_A, GATEWAY, PN_A, PrivateSandbox, STANDARD, TCP_PORT, ZONE, dig},
    probe::{tcp_connect, udp_probe},
};

use super::{print_probes, probe_row};
use crate::exec::step;

const TIMEOUT: Duration = Duration::from_millis(1500);
/// A port nothing listens on: a reached container answers with a RST, a dropped probe times out.
const OTHER_PORT: u16 = 6379;

/// Builds the topology, runs netguard on it, probes and prints what each probe got; how many
/// got another outcome than expected.
pub fn run(bin: &Path) -> usize {
    step("private networks: a host with a bridge, four containers in two networks, an outside");
    let sb = PrivateSandbox::new();
    let [web1, worker1, _, b_web1] = STANDARD.map(|spec| sb.container(spec.address));
    for c in &sb.containers {
        println!("    {} {}", c.label(), c.spec.hostname());
    }
    let config = sb.config(None, 30);
    step("the private networks in netguard's config (on the host; XDP guards its uplink):");
    for line in config.extra.lines().filter(|l| !l.is_empty()) {
        println!("    {line}");
    }
    let _daemon = Daemon::start_with(bin, &sb.host, &config);
    step("probing between the containers and from outside");
    let reached = |from: &NetNs, to: Ipv4Addr, port: u16| {
        matches!(
            tcp_connect(from, None, SocketAddr::new(IpAddr::V4(to), port), TIMEOUT),
            ProbeResult::Connected | ProbeResult::Refused
        )
    };
    let a_name = format!("{APP_A}.{PN_A}.{ZONE}");
    let resolved = |from: &NetNs| {
        let d = dig(from, GATEWAY, &a_name, "A", false);
        d.status == "NOERROR" && d.addresses() == [web1.spec.address]
    };
    let probes = [
        probe_row(
            &format!("TCP A web 1 -> A worker 1 :{TCP_PORT} (same network)"),
            true,
            reached(&web1.ns, worker1.spec.address, TCP_PORT),
        ),
        probe_row(
            &format!("TCP A web 1 -> A worker 1 :{OTHER_PORT} (any port; RST: reached)"),
            true,
            reached(&web1.ns, worker1.spec.address, OTHER_PORT),
        ),
        probe_row(
            "UDP A worker 1 -> A web 1 :5432 (same network)",
            true,
            udp_probe(&worker1.ns, web1.udp(), b"demo", TIMEOUT),
        ),
        probe_row(
            &format!("TCP B web 1 -> A web 1 :{TCP_PORT} (other network)"),
            false,
            reached(&b_web1.ns, web1.spec.address, TCP_PORT),
        ),
        probe_row(
            &format!("TCP A web 1 -> B web 1 :{TCP_PORT} (other network)"),
            false,
            reached(&web1.ns, b_web1.spec.address, TCP_PORT),
        ),
        probe_row(
            &format!("TCP outside -> A web 1 :{TCP_PORT} (not a member)"),
            false,
            reached(&sb.outside, web1.spec.address, TCP_PORT),
        ),
        probe_row(
            "DNS A worker 1: web of app A resolves to 10.240.0.2",
            true,
            resolved(&worker1.ns),
        ),
        probe_row(
            "DNS B web 1: app A's name (another network's: refused)",
            false,
            resolved(&b_web1.ns),
        ),
    ];
    println!();
    let wrong = print_probes(&probes);
    step("tearing down: stopping the daemon, netguard detach, deleting the namespaces");
    wrong
}
