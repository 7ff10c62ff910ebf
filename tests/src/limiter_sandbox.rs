//! The container topology of the tc bandwidth limiter's end-to-end tests.
//!
//! ```text
//!  c1 netns                       host netns (netguard runs here)           remote netns
//!  <c1>v 172.17.0.2/16 ───────── <host>a 172.17.0.1/32                      default via 192.0.2.1
//!  c2 netns                         route 172.17.0.2/32 dev <host>a
//!  <c2>v 172.17.0.3/16 ───────── <host>b 172.17.0.1/32
//!                                   route 172.17.0.3/32 dev <host>b
//!  containers: default via        <host>u 192.0.2.1/24 ───────────────── <remote>v 192.0.2.10/24
//!  172.17.0.1                     net.ipv4.ip_forward = 1
//! ```
//!
//! `<host>a` and `<host>b` are the container-facing interfaces (`ratelimit.interfaces`),
//! `<host>u` is the public one (`xdp.interface`, guarding only 192.0.2.1, so container traffic
//! passes the XDP filter as `not_guarded`). Every veth has two queues on each side, so flows
//! hash onto both and the packet path runs on both CPUs.

use std::{net::Ipv4Addr, path::PathBuf, process::Command};

use crate::{
    cmd,
    daemon::{Config, Daemon, unique_pin_path},
    netns::NetNs,
    veth,
};

pub const HOST_CONTAINER_GW: Ipv4Addr = Ipv4Addr::new(172, 17, 0, 1);
pub const C1_ADDR: Ipv4Addr = Ipv4Addr::new(172, 17, 0, 2);
pub const C2_ADDR: Ipv4Addr = Ipv4Addr::new(172, 17, 0, 3);
pub const HOST_PUBLIC_ADDR: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
pub const REMOTE_ADDR: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 10);

/// Queues per veth end.
const QUEUES: &str = "2";

/// Four namespaces: two containers, the host that routes them, a remote peer. Field order is
/// drop order: the namespaces go last, and their veths with them.
#[derive(Debug)]
pub struct LimiterSandbox {
    /// Host side of c1's veth (in `host`).
    pub host_c1_if: String,
    /// Host side of c2's veth (in `host`).
    pub host_c2_if: String,
    /// Host side of the remote's veth (in `host`): the XDP interface.
    pub uplink_if: String,
    /// The containers' and the remote's own interface name (each in its namespace).
    pub inner_if: String,
    pub c1: NetNs,
    pub c2: NetNs,
    pub remote: NetNs,
    pub host: NetNs,
}

#[expect(
    clippy::new_without_default,
    reason = "creating kernel state is not a default"
)]
impl LimiterSandbox {
    /// Builds the topology above; panics if any step fails (what it made so far is removed).
    pub fn new() -> LimiterSandbox {
        let host = NetNs::new();
        let c1 = NetNs::new();
        let c2 = NetNs::new();
        let remote = NetNs::new();
        let sb = LimiterSandbox {
            host_c1_if: format!("{}a", host.name()),
            host_c2_if: format!("{}b", host.name()),
            uplink_if: format!("{}u", host.name()),
            inner_if: "eth0".into(),
            c1,
            c2,
            remote,
            host,
        };
        let gw = HOST_CONTAINER_GW.to_string();
        for (ns, host_if, addr) in [
            (&sb.c1, &sb.host_c1_if, C1_ADDR),
            (&sb.c2, &sb.host_c2_if, C2_ADDR),
        ] {
            veth_pair(&sb.host, host_if, ns, &sb.inner_if);
            veth::add_address(&sb.host, host_if, &format!("{gw}/32"));
            veth::add_address(ns, &sb.inner_if, &format!("{addr}/16"));
            up(&sb.host, host_if);
            up(ns, &sb.inner_if);
            veth::add_route(&sb.host, &format!("{addr}/32"), host_if, Some(&gw));
            veth::ip(
                ns,
                &["route", "add", "default", "via", &gw, "dev", &sb.inner_if],
            );
        }
        veth_pair(&sb.host, &sb.uplink_if, &sb.remote, &sb.inner_if);
        veth::add_address(&sb.host, &sb.uplink_if, &format!("{HOST_PUBLIC_ADDR}/24"));
        veth::add_address(&sb.remote, &sb.inner_if, &format!("{REMOTE_ADDR}/24"));
        up(&sb.host, &sb.uplink_if);
        up(&sb.remote, &sb.inner_if);
        let host_gw = HOST_PUBLIC_ADDR.to_string();
        veth::ip(
            &sb.remote,
            &[
                "route",
                "add",
                "default",
                "via",
                &host_gw,
                "dev",
                &sb.inner_if,
            ],
        );
        sb.host
            .exec(&["sysctl", "-q", "-w", "net.ipv4.ip_forward=1"]);
        sb
    }

    /// A daemon config for this sandbox: XDP on the uplink guarding only 192.0.2.1 (ports 80
    /// and 443), no denylist, a fresh pin path, and `ratelimit` (a `[ratelimit]` section and
    /// its `[[ratelimit.container]]` tables, see [`ratelimit_toml`]) appended.
    pub fn config(&self, ratelimit: &str) -> Config {
        Config {
            pin_path: unique_pin_path(),
            interface: self.uplink_if.clone(),
            mode: "native".into(),
            allowed_tcp_ports: vec![80, 443],
            ingress_addresses: vec![format!("{HOST_PUBLIC_ADDR}/32")],
            trusted_sources: Vec::new(),
            icmp: "essential".into(),
            ipv6: "drop".into(),
            deny_cidrs: Vec::new(),
            deny_files: Vec::new(),
            extra: ratelimit.to_string(),
        }
    }

    /// Both container-facing interfaces.
    pub fn container_interfaces(&self) -> [&str; 2] {
        [&self.host_c1_if, &self.host_c2_if]
    }
}

/// One `[[ratelimit.container]]` override.
#[derive(Clone, Debug)]
pub struct Override<'a> {
    pub address: &'a str,
    pub rate: Option<&'a str>,
    pub burst: Option<&'a str>,
}

/// A `[ratelimit]` section with 172.17.0.0/16 as the container range.
pub fn ratelimit_toml(
    interfaces: &[&str],
    rate: &str,
    burst: &str,
    overrides: &[Override<'_>],
) -> String {
    let ifs: Vec<String> = interfaces.iter().map(|i| format!("{i:?}")).collect();
    let mut s = format!(
        "[ratelimit]\ninterfaces = [{}]\ncontainer_cidrs = [\"172.17.0.0/16\"]\nrate = {rate:?}\nburst = {burst:?}\n",
        ifs.join(", ")
    );
    for o in overrides {
        s.push_str(&format!(
            "\n[[ratelimit.container]]\naddress = {:?}\n",
            o.address
        ));
        if let Some(rate) = o.rate {
            s.push_str(&format!("rate = {rate:?}\n"));
        }
        if let Some(burst) = o.burst {
            s.push_str(&format!("burst = {burst:?}\n"));
        }
    }
    s
}

/// One row of `netguard stats --containers --json`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BucketRow {
    pub address: String,
    pub direction: String,
    pub passed_bytes: u64,
    pub passed_packets: u64,
    pub dropped_bytes: u64,
    pub dropped_packets: u64,
    pub tokens: u64,
    pub rate: u64,
    pub burst: u64,
}

impl BucketRow {
    /// Parses the JSON array `stats --containers --json` prints.
    pub fn parse_all(text: &str) -> Result<Vec<BucketRow>, String> {
        let raw: serde_json::Value =
            serde_json::from_str(text.trim()).map_err(|e| format!("not JSON: {e}"))?;
        let rows = raw.as_array().ok_or("not a JSON array")?;
        rows.iter()
            .map(|r| {
                let s = |k: &str| {
                    r.get(k)
                        .and_then(|v| v.as_str())
                        .map(str::to_string)
                        .ok_or(format!("{k} is not a string in {r}"))
                };
                let n = |k: &str| {
                    r.get(k)
                        .and_then(|v| v.as_u64())
                        .ok_or(format!("{k} is not a number in {r}"))
                };
                Ok(BucketRow {
                    address: s("address")?,
                    direction: s("direction")?,
                    passed_bytes: n("passed_bytes")?,
                    passed_packets: n("passed_packets")?,
                    dropped_bytes: n("dropped_bytes")?,
                    dropped_packets: n("dropped_packets")?,
                    tokens: n("tokens")?,
                    rate: n("rate")?,
                    burst: n("burst")?,
                })
            })
            .collect()
    }
}

/// `netguard stats --containers --json --pin-path P`, parsed.
pub fn container_stats(daemon: &Daemon) -> Vec<BucketRow> {
    let out = daemon.cli_ok(&["stats", "--containers", "--json"]);
    BucketRow::parse_all(&out)
        .unwrap_or_else(|e| panic!("`netguard stats --containers --json`: {e}\noutput:\n{out}"))
}

/// The row of `address` and `direction` ("upload" / "download"), if the bucket exists.
pub fn bucket<'a>(
    rows: &'a [BucketRow],
    address: Ipv4Addr,
    direction: &str,
) -> Option<&'a BucketRow> {
    let address = address.to_string();
    rows.iter()
        .find(|r| r.address == address && r.direction == direction)
}

/// Writes `toml` over the daemon's config file (for a SIGHUP reload).
pub fn rewrite_config(daemon: &Daemon, toml: &str) -> PathBuf {
    let path = daemon.config_path().to_path_buf();
    std::fs::write(&path, toml).unwrap_or_else(|e| panic!("rewrite {}: {e}", path.display()));
    path
}

/// A veth pair with [`QUEUES`] queues per end: `a_if` in `a`, `b_if` in `b`.
fn veth_pair(a: &NetNs, a_if: &str, b: &NetNs, b_if: &str) {
    assert!(
        a_if.len() <= 15 && b_if.len() <= 15,
        "{a_if} / {b_if} too long"
    );
    cmd::run_ok(Command::new("ip").args([
        "-n",
        a.name(),
        "link",
        "add",
        a_if,
        "numtxqueues",
        QUEUES,
        "numrxqueues",
        QUEUES,
        "type",
        "veth",
        "peer",
        "name",
        b_if,
        "numtxqueues",
        QUEUES,
        "numrxqueues",
        QUEUES,
        "netns",
        b.name(),
    ]));
}

fn up(ns: &NetNs, iface: &str) {
    veth::ip(ns, &["link", "set", "dev", iface, "up"]);
}

/// The nftables table [`install_meter`] creates.
pub const METER_TABLE: &str = "ngt_meter";

/// Ethernet header bytes, added per packet to nftables' layer-3 byte counts.
pub const ETH_HLEN: u64 = 14;

/// Packets and bytes of one meter counter.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MeterCount {
    pub packets: u64,
    /// Layer-3 bytes (IP header and payload), as nftables counts them.
    pub bytes: u64,
}

impl MeterCount {
    /// Frame bytes, as the limiter charges them (the skb length including the Ethernet header;
    /// a GSO packet is one skb).
    pub fn frame_bytes(&self) -> u64 {
        self.bytes + ETH_HLEN * self.packets
    }
}

/// Counts what arrives in `ns`, independently of netguard: an nftables table with one named
/// counter per `(name, match)` (`("from_c1", "ip saddr 172.17.0.2")`), in a prerouting chain
/// ahead of everything else. The table lives as long as the namespace.
pub fn install_meter(ns: &NetNs, counters: &[(&str, &str)]) {
    let mut script = format!(
        "add table inet {METER_TABLE}; \
         add chain inet {METER_TABLE} pre {{ type filter hook prerouting priority -300; policy accept; }}"
    );
    for (name, expr) in counters {
        script.push_str(&format!(
            "; add counter inet {METER_TABLE} {name}; \
             add rule inet {METER_TABLE} pre {expr} counter name \"{name}\""
        ));
    }
    ns.exec(&["nft", &script]);
}

/// The counters of [`install_meter`]'s table in `ns`, by name.
pub fn read_meter(ns: &NetNs) -> std::collections::BTreeMap<String, MeterCount> {
    let out = ns.exec(&[
        "nft",
        "-j",
        "list",
        "counters",
        "table",
        "inet",
        METER_TABLE,
    ]);
    let raw: serde_json::Value = serde_json::from_str(out.trim())
        .unwrap_or_else(|e| panic!("`nft -j list counters`: {e}\n{out}"));
    raw.get("nftables")
        .and_then(|v| v.as_array())
        .unwrap_or_else(|| panic!("`nft -j list counters`: no nftables array\n{out}"))
        .iter()
        .filter_map(|item| item.get("counter"))
        .map(|c| {
            let n = |k: &str| {
                c.get(k)
                    .and_then(|v| v.as_u64())
                    .unwrap_or_else(|| panic!("nft counter without {k}: {c}"))
            };
            let name = c
                .get("name")
                .and_then(|v| v.as_str())
                .unwrap_or_else(|| panic!("nft counter without a name: {c}"));
            (
                name.to_string(),
                MeterCount {
                    packets: n("packets"),
                    bytes: n("bytes"),
                },
            )
        })
        .collect()
}
