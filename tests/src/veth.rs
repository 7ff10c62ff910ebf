//! veth pairs between two namespaces, addresses and routes. Every command runs with `ip -n NS`,
//! so devices are created inside the namespaces and the host's own namespace is never touched.

use std::process::Command;

use crate::{cmd, netns::NetNs};

/// One end of a veth pair.
#[derive(Clone, Copy, Debug)]
pub struct VethEnd<'a> {
    pub ns: &'a NetNs,
    /// Interface name inside `ns` (at most 15 bytes).
    pub name: &'a str,
    /// Addresses in CIDR notation (`192.0.2.99/24`); the first of each subnet is its primary.
    pub addrs: &'a [&'a str],
    /// `02:…` style MAC; the kernel picks a random one when `None`.
    pub mac: Option<&'a str>,
}

/// Creates the pair, sets MACs, adds the addresses and brings both ends up. Panics on failure.
pub fn veth_pair(a: VethEnd<'_>, b: VethEnd<'_>) {
    for end in [&a, &b] {
        assert!(
            end.name.len() <= 15,
            "interface name {:?} is longer than 15 bytes",
            end.name
        );
    }
    ip(
        a.ns,
        &[
            "link",
            "add",
            a.name,
            "type",
            "veth",
            "peer",
            "name",
            b.name,
            "netns",
            b.ns.name(),
        ],
    );
    for end in [a, b] {
        if let Some(mac) = end.mac {
            ip(end.ns, &["link", "set", "dev", end.name, "address", mac]);
        }
        for addr in end.addrs {
            add_address(end.ns, end.name, addr);
        }
        ip(end.ns, &["link", "set", "dev", end.name, "up"]);
    }
}

/// Adds one more address (CIDR) to `iface` in `ns`.
pub fn add_address(ns: &NetNs, iface: &str, cidr: &str) {
    ip(ns, &["addr", "add", cidr, "dev", iface]);
}

/// `ip route add DST dev IFACE [src SRC]`: an on-link route, no gateway.
pub fn add_route(ns: &NetNs, dst: &str, iface: &str, src: Option<&str>) {
    let mut args = vec!["route", "add", dst, "dev", iface];
    if let Some(src) = src {
        args.extend(["src", src]);
    }
    ip(ns, &args);
}

/// The interface's MAC address as `ip` prints it.
pub fn mac_of(ns: &NetNs, iface: &str) -> String {
    let out = ip(ns, &["-o", "link", "show", "dev", iface]);
    out.split_whitespace()
        .skip_while(|w| *w != "link/ether")
        .nth(1)
        .unwrap_or_else(|| panic!("no link/ether in `ip link show {iface}`: {out}"))
        .to_string()
}

/// `ip -n NS args…`; panics unless it exits 0. Returns stdout.
pub fn ip(ns: &NetNs, args: &[&str]) -> String {
    cmd::run_ok(Command::new("ip").args(["-n", ns.name()]).args(args))
}
