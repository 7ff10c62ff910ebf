//! `cargo xtask demo`: netguard's main job on a sandbox of network namespaces.
//!
//! An internet client (192.0.2.99, plus a trusted 192.0.2.50 and a denylisted 198.51.100.7)
//! and an edge (203.0.113.10, listening on TCP 80/443/22/8080 and UDP 53) joined by a veth;
//! netguard runs in the edge with the demo policy. Every probe has an expected outcome, and the
//! demo fails (exit 1) when one differs, so it doubles as a smoke test. Everything it creates is
//! removed on exit, also on failure.

use std::{
    net::{IpAddr, SocketAddr},
    path::Path,
    time::Duration,
};

use anyhow::{Result, bail};
use netguard_tests::{
    Config, Daemon, ProbeResult, Sandbox,
    daemon::ensure_bpffs,
    listeners::Services,
    probe::{self, tcp_connect, udp_probe},
    sandbox::{CLIENT_ADDR, DENIED_ADDR, EDGE_ADDR, TRUSTED_ADDR},
};

use crate::exec::step;

const TIMEOUT: Duration = Duration::from_millis(1500);

struct Probe {
    what: String,
    expect_pass: bool,
    passed: bool,
}

pub fn run(bin: &Path) -> Result<()> {
    ensure_bpffs();
    step("building the sandbox: namespaces `client` and `edge` joined by a veth");
    let sandbox = Sandbox::new();
    let _edge_services = Services::edge(&sandbox.edge);
    let _client_services = Services::client(&sandbox.client);
    let config = Config::for_sandbox(&sandbox);
    println!(
        "    client {} (+ trusted {}, denylisted {}) --veth-- edge {} on {} [TCP 80 443 22 8080, UDP 53 listening]",
        sandbox.client.name(),
        TRUSTED_ADDR,
        DENIED_ADDR,
        sandbox.edge.name(),
        sandbox.edge_if
    );
    step("netguard config (written to a temporary file):");
    for line in config.to_toml().lines() {
        println!("    {line}");
    }
    step(format!(
        "starting {} run in the edge namespace",
        bin.display()
    ));
    let daemon = Daemon::start_with(bin, &sandbox.edge, &config);
    step("probing from the client with real traffic");
    let edge = |port| SocketAddr::new(IpAddr::V4(EDGE_ADDR), port);
    let tcp = |src, port| {
        tcp_connect(&sandbox.client, Some(IpAddr::V4(src)), edge(port), TIMEOUT)
            == ProbeResult::Connected
    };
    let mut probes = vec![
        probe_row(
            "TCP 192.0.2.99 -> :80 (allowed port)",
            true,
            tcp(CLIENT_ADDR, 80),
        ),
        probe_row(
            "TCP 192.0.2.99 -> :443 (allowed port)",
            true,
            tcp(CLIENT_ADDR, 443),
        ),
        probe_row(
            "TCP 192.0.2.99 -> :22 (closed: silent drop, no RST)",
            false,
            tcp(CLIENT_ADDR, 22),
        ),
        probe_row(
            "TCP 192.0.2.99 -> :8080 (closed)",
            false,
            tcp(CLIENT_ADDR, 8080),
        ),
        probe_row(
            "UDP 192.0.2.99 -> :53 (UDP never allowed)",
            false,
            udp_probe(&sandbox.client, edge(53), b"demo", TIMEOUT),
        ),
        probe_row(
            "TCP 198.51.100.7 -> :80 (denylisted source)",
            false,
            tcp(DENIED_ADDR, 80),
        ),
        probe_row(
            "TCP 192.0.2.50 -> :22 (trusted source)",
            true,
            tcp(TRUSTED_ADDR, 22),
        ),
        probe_row(
            "ICMP echo 192.0.2.99 -> edge (essential ICMP)",
            true,
            probe::ping(&sandbox.client, IpAddr::V4(EDGE_ADDR), 1, TIMEOUT),
        ),
        probe_row(
            "TCP edge -> client :9000 (the host's own connection; answers come back)",
            true,
            tcp_connect(&sandbox.edge, None, Sandbox::client_addr(9000), TIMEOUT)
                == ProbeResult::Connected,
        ),
        probe_row(
            "UDP edge -> client :5353 (the host's own query; the reply comes back)",
            true,
            udp_probe(&sandbox.edge, Sandbox::client_addr(5353), b"q", TIMEOUT),
        ),
    ];
    step("live denylist edit: netguard deny add 192.0.2.99/32");
    daemon.deny_add(&["192.0.2.99/32"]);
    probes.push(probe_row(
        "TCP 192.0.2.99 -> :443 after deny add",
        false,
        tcp(CLIENT_ADDR, 443),
    ));
    daemon.deny_del(&["192.0.2.99/32"]);
    probes.push(probe_row(
        "TCP 192.0.2.99 -> :443 after deny del",
        true,
        tcp(CLIENT_ADDR, 443),
    ));

    println!();
    println!("    {:<74} {:<8} {:<8}", "probe", "expected", "got");
    let mut wrong = 0;
    for p in &probes {
        let mark = if p.passed == p.expect_pass {
            "ok"
        } else {
            "WRONG"
        };
        if p.passed != p.expect_pass {
            wrong += 1;
        }
        println!(
            "    {:<74} {:<8} {:<8} {mark}",
            p.what,
            verdict(p.expect_pass),
            verdict(p.passed)
        );
    }
    step(format!(
        "counters: netguard stats --pin-path {}",
        daemon.pin_path().display()
    ));
    for line in daemon.cli_ok(&["stats"]).lines() {
        println!("    {line}");
    }
    step("tearing down: stopping the daemon, netguard detach, deleting the namespaces");
    drop(daemon);
    drop(sandbox);
    if wrong > 0 {
        bail!("{wrong} probe(s) did not get the expected outcome");
    }
    step("demo done: every probe got the expected outcome");
    Ok(())
}

fn probe_row(what: &str, expect_pass: bool, passed: bool) -> Probe {
    Probe {
        what: what.to_string(),
        expect_pass,
        passed,
    }
}

fn verdict(pass: bool) -> &'static str {
    if pass { "pass" } else { "dropped" }
}
