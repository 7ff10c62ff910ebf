//! The private-network topology of the isolation and DNS end-to-end tests.
//!
//! ```text
//!  container netns (one per container)        host netns (netguard runs here)
//!  eth1 10.240.0.N/22 ─────────────────────── <host><letter>  ─┐ enslaved to
//!  default via 10.240.0.1                                      ├─ pnbr 10.240.0.1/22
//!  TCP echo :3000, UDP echo :5432                              ┘ (the gateway, DNS on :53)
//!
//!  outside netns                               <host>z 192.0.2.1/24  (xdp.interface, guarding
//!  eth0 192.0.2.10/24 ───────────────────────                        only 192.0.2.1)
//!  route 10.240.0.0/22 via 192.0.2.1           net.ipv4.ip_forward = 1
//! ```
//!
//! Every container's host-side veth is listed in its network's `interfaces`, so the isolation
//! program sees each container's traffic in both directions. The outside namespace is routed
//! to the private range through the host: without netguard it reaches every container.

use std::{
    fmt::Write as _,
    net::{IpAddr, Ipv4Addr, SocketAddr},
    process::Output,
    time::Duration,
};

use crate::{
    cmd,
    daemon::{Config, unique_pin_path},
    listeners::Services,
    netns::NetNs,
    veth::{self, VethEnd},
};

pub const GATEWAY: Ipv4Addr = Ipv4Addr::new(10, 240, 0, 1);
pub const BRIDGE: &str = "pnbr";
pub const HOST_UPLINK_ADDR: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
pub const OUTSIDE_ADDR: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 10);
/// The containers' private interface (inside each container namespace).
pub const CONTAINER_IF: &str = "eth1";
/// Ports every container serves (echo).
pub const TCP_PORT: u16 = 3000;
pub const UDP_PORT: u16 = 5432;

pub const PN_A: &str = "pn-ad0fd6a1-d05e-40ea-bf63-c4f8a75a9d8c";
pub const PN_B: &str = "pn-5b0e7c2a-3f1d-4e8b-9a6c-0d2e4f6a8b1c";
pub const APP_A: &str = "ap-a71da13f-7c70-4c00-a644-eee8558d8053";
pub const APP_B: &str = "ap-0c1d2e3f-4a5b-4c6d-8e7f-901234567890";
pub const ZONE: &str = "private-network.internal.";

/// What the config says about one container.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Spec {
    pub network: &'static str,
    pub app: &'static str,
    pub kind: &'static str,
    pub index: u32,
    pub address: Ipv4Addr,
}

impl Spec {
    /// `N.TYPE.APP.NETWORK.private-network.internal.`
    pub fn hostname(&self) -> String {
        format!(
            "{}.{}.{}.{}.{ZONE}",
            self.index, self.kind, self.app, self.network
        )
    }
}

/// Network A: app A's `web` 1 and `worker` 1–2. Network B: app B's `web` 1.
pub const STANDARD: [Spec; 4] = [
    Spec {
        network: PN_A,
        app: APP_A,
        kind: "web",
        index: 1,
        address: Ipv4Addr::new(10, 240, 0, 2),
    },
    Spec {
        network: PN_A,
        app: APP_A,
        kind: "worker",
        index: 1,
        address: Ipv4Addr::new(10, 240, 0, 3),
    },
    Spec {
        network: PN_A,
        app: APP_A,
        kind: "worker",
        index: 2,
        address: Ipv4Addr::new(10, 240, 0, 4),
    },
    Spec {
        network: PN_B,
        app: APP_B,
        kind: "web",
        index: 1,
        address: Ipv4Addr::new(10, 240, 0, 10),
    },
];

/// One container: its namespace, its echo services and the host side of its private veth.
/// Field order is drop order: services before the namespace.
#[derive(Debug)]
pub struct Container {
    pub services: ServicesGuard,
    pub spec: Spec,
    /// Host side of the veth, in the host namespace, enslaved to [`BRIDGE`].
    pub host_if: String,
    pub ns: NetNs,
}

/// [`Services`] with a `Debug` impl, so [`Container`] can derive it.
pub struct ServicesGuard(pub Services);

impl std::fmt::Debug for ServicesGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Services")
    }
}

impl Container {
    pub fn tcp(&self) -> SocketAddr {
        SocketAddr::new(IpAddr::V4(self.spec.address), TCP_PORT)
    }

    pub fn udp(&self) -> SocketAddr {
        SocketAddr::new(IpAddr::V4(self.spec.address), UDP_PORT)
    }

    /// `ContainerName(10.240.0.N, 2.worker)` for messages.
    pub fn label(&self) -> String {
        format!(
            "{}.{} ({}, {})",
            self.spec.index,
            self.spec.kind,
            self.spec.address,
            if self.spec.network == PN_A { "A" } else { "B" }
        )
    }
}

/// The topology above. Field order is drop order: containers, then outside, then the host.
#[derive(Debug)]
pub struct PrivateSandbox {
    pub containers: Vec<Container>,
    /// Host side of the outside veth (in `host`): the XDP interface.
    pub uplink_if: String,
    pub outside: NetNs,
    pub host: NetNs,
}

#[expect(
    clippy::new_without_default,
    reason = "creating kernel state is not a default"
)]
impl PrivateSandbox {
    /// The host, the bridge, the outside namespace, and the [`STANDARD`] containers.
    pub fn new() -> PrivateSandbox {
        let host = NetNs::new();
        let outside = NetNs::new();
        let mut sb = PrivateSandbox {
            containers: Vec::new(),
            uplink_if: format!("{}z", host.name()),
            outside,
            host,
        };
        veth::ip(&sb.host, &["link", "add", BRIDGE, "type", "bridge"]);
        veth::add_address(&sb.host, BRIDGE, &format!("{GATEWAY}/22"));
        veth::ip(&sb.host, &["link", "set", "dev", BRIDGE, "up"]);
        let uplink_cidr = format!("{HOST_UPLINK_ADDR}/24");
        let outside_cidr = format!("{OUTSIDE_ADDR}/24");
        veth::veth_pair(
            VethEnd {
                ns: &sb.host,
                name: &sb.uplink_if,
                addrs: &[&uplink_cidr],
                mac: None,
            },
            VethEnd {
                ns: &sb.outside,
                name: "eth0",
                addrs: &[&outside_cidr],
                mac: None,
            },
        );
        let via = HOST_UPLINK_ADDR.to_string();
        veth::ip(
            &sb.outside,
            &["route", "add", "10.240.0.0/22", "via", &via, "dev", "eth0"],
        );
        sb.host
            .exec(&["sysctl", "-q", "-w", "net.ipv4.ip_forward=1"]);
        for spec in STANDARD {
            sb.add_container(spec);
        }
        sb
    }

    /// Creates a container namespace with its veth on the bridge and its echo services; the
    /// config is not touched (see [`PrivateSandbox::config`]).
    pub fn add_container(&mut self, spec: Spec) -> &Container {
        let letter = (b'a' + self.containers.len() as u8) as char;
        assert!(letter < 'z', "at most 25 containers ('z' is the uplink)");
        let host_if = format!("{}{letter}", self.host.name());
        let ns = NetNs::new();
        let cidr = format!("{}/22", spec.address);
        veth::veth_pair(
            VethEnd {
                ns: &self.host,
                name: &host_if,
                addrs: &[],
                mac: None,
            },
            VethEnd {
                ns: &ns,
                name: CONTAINER_IF,
                addrs: &[&cidr],
                mac: None,
            },
        );
        veth::ip(
            &self.host,
            &["link", "set", "dev", &host_if, "master", BRIDGE],
        );
        let gw = GATEWAY.to_string();
        veth::ip(
            &ns,
            &["route", "add", "default", "via", &gw, "dev", CONTAINER_IF],
        );
        let services = ServicesGuard(Services::start(&ns, &[TCP_PORT], &[UDP_PORT]));
        self.containers.push(Container {
            services,
            spec,
            host_if,
            ns,
        });
        self.containers.last().expect("just pushed")
    }

    /// The container with this address; panics if there is none.
    pub fn container(&self, address: Ipv4Addr) -> &Container {
        self.containers
            .iter()
            .find(|c| c.spec.address == address)
            .unwrap_or_else(|| panic!("no container {address}"))
    }

    /// Containers of one network.
    pub fn network(&self, id: &str) -> Vec<&Container> {
        self.containers
            .iter()
            .filter(|c| c.spec.network == id)
            .collect()
    }

    /// The daemon config: XDP on the uplink guarding only 192.0.2.1, and one
    /// `[[private_network]]` per network among `containers` (all of them when `None`), each
    /// listing its containers' host-side veths, DNS on 10.240.0.1:53 with `ttl`.
    pub fn config(&self, containers: Option<&[Ipv4Addr]>, ttl: u32) -> Config {
        let chosen: Vec<&Container> = self
            .containers
            .iter()
            .filter(|c| containers.is_none_or(|list| list.contains(&c.spec.address)))
            .collect();
        let mut extra = String::new();
        for network in [PN_A, PN_B] {
            let members: Vec<&&Container> = chosen
                .iter()
                .filter(|c| c.spec.network == network)
                .collect();
            if members.is_empty() {
                continue;
            }
            let ifs: Vec<String> = members.iter().map(|c| format!("{:?}", c.host_if)).collect();
            let _ = write!(
                extra,
                "[[private_network]]\nid = {network:?}\ninterfaces = [{}]\ndns_listen = \"{GATEWAY}:53\"\ndns_ttl_secs = {ttl}\n\n",
                ifs.join(", ")
            );
            for c in members {
                let _ = write!(
                    extra,
                    "[[private_network.container]]\napp = {:?}\ntype = {:?}\nindex = {}\naddress = \"{}\"\n\n",
                    c.spec.app, c.spec.kind, c.spec.index, c.spec.address
                );
            }
        }
        Config {
            pin_path: unique_pin_path(),
            interface: self.uplink_if.clone(),
            mode: "native".into(),
            allowed_tcp_ports: vec![80, 443],
            ingress_addresses: vec![format!("{HOST_UPLINK_ADDR}/32")],
            trusted_sources: Vec::new(),
            icmp: "essential".into(),
            ipv6: "drop".into(),
            deny_cidrs: Vec::new(),
            deny_files: Vec::new(),
            extra,
        }
    }
}

/// What `dig` printed, parsed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dig {
    /// `NOERROR`, `NXDOMAIN`, `REFUSED`, …
    pub status: String,
    /// Header flags: `qr`, `aa`, `rd`, `tc`, …
    pub flags: Vec<String>,
    /// Answer section: (name, TTL, type, data).
    pub answers: Vec<(String, u32, String, String)>,
    /// The whole output, for messages.
    pub raw: String,
}

impl Dig {
    /// The A records' addresses, sorted.
    pub fn addresses(&self) -> Vec<Ipv4Addr> {
        let mut out: Vec<Ipv4Addr> = self
            .answers
            .iter()
            .filter(|(_, _, kind, _)| kind == "A")
            .filter_map(|(_, _, _, data)| data.parse().ok())
            .collect();
        out.sort();
        out
    }

    pub fn authoritative(&self) -> bool {
        self.flags.iter().any(|f| f == "aa")
    }

    pub fn parse(text: &str) -> Result<Dig, String> {
        let status = text
            .lines()
            .find_map(|l| l.split("status: ").nth(1))
            .and_then(|rest| rest.split(',').next())
            .map(|s| s.trim().to_string())
            .ok_or_else(|| format!("no status in dig output:\n{text}"))?;
        let flags = text
            .lines()
            .find_map(|l| l.strip_prefix(";; flags:"))
            .and_then(|rest| rest.split(';').next())
            .map(|f| f.split_whitespace().map(str::to_string).collect())
            .unwrap_or_default();
        let mut answers = Vec::new();
        let mut in_answer = false;
        for line in text.lines() {
            if line.starts_with(";; ANSWER SECTION:") {
                in_answer = true;
                continue;
            }
            if in_answer {
                if line.trim().is_empty() || line.starts_with(';') {
                    break;
                }
                let f: Vec<&str> = line.split_whitespace().collect();
                if let [name, ttl, _class, kind, data @ ..] = f.as_slice() {
                    let ttl = ttl
                        .parse()
                        .map_err(|e| format!("TTL {ttl:?} in {line:?}: {e}"))?;
                    answers.push((name.to_string(), ttl, kind.to_string(), data.join(" ")));
                }
            }
        }
        Ok(Dig {
            status,
            flags,
            answers,
            raw: text.to_string(),
        })
    }
}

/// `dig @server NAME TYPE` from `ns` (two tries of two seconds; `+tcp` when `tcp`).
pub fn dig(ns: &NetNs, server: Ipv4Addr, name: &str, qtype: &str, tcp: bool) -> Dig {
    let at = format!("@{server}");
    let mut args = vec!["dig", &at, "+time=2", "+tries=2", name, qtype];
    if tcp {
        args.push("+tcp");
    }
    let out: Output = ns.output_timeout(&args, Duration::from_secs(15));
    let text = cmd::lossy(&out.stdout);
    if !out.status.success() {
        panic!(
            "`{}` in {} failed ({}):\n{text}{}",
            args.join(" "),
            ns.name(),
            out.status,
            cmd::lossy(&out.stderr)
        );
    }
    Dig::parse(&text).unwrap_or_else(|e| panic!("{e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dig_output_parses() {
        let text = "\
; <<>> DiG 9.18.33-1~deb12u2-Debian <<>> @10.240.0.1 +time=2 x A
;; global options: +cmd
;; Got answer:
;; ->>HEADER<<- opcode: QUERY, status: NOERROR, id: 4242
;; flags: qr aa rd; QUERY: 1, ANSWER: 2, AUTHORITY: 0, ADDITIONAL: 1
;; WARNING: recursion requested but not available

;; OPT PSEUDOSECTION:
; EDNS: version: 0, flags:; udp: 1232
;; QUESTION SECTION:
;worker.ap-x.pn-y.private-network.internal. IN A

;; ANSWER SECTION:
worker.ap-x.pn-y.private-network.internal. 5 IN A 10.240.0.4
worker.ap-x.pn-y.private-network.internal. 5 IN A 10.240.0.3

;; Query time: 0 msec
";
        let d = Dig::parse(text).expect("parses");
        assert_eq!(d.status, "NOERROR");
        assert!(d.authoritative());
        assert_eq!(d.flags, ["qr", "aa", "rd"]);
        assert_eq!(
            d.addresses(),
            [Ipv4Addr::new(10, 240, 0, 3), Ipv4Addr::new(10, 240, 0, 4)]
        );
        assert_eq!(d.answers[0].1, 5);
        let refused = Dig::parse(
            ";; ->>HEADER<<- opcode: QUERY, status: REFUSED, id: 1\n;; flags: qr rd; QUERY: 1, ANSWER: 0\n",
        )
        .expect("parses");
        assert_eq!(refused.status, "REFUSED");
        assert!(!refused.authoritative());
        assert!(refused.answers.is_empty());
        assert!(Dig::parse(";; connection timed out; no servers could be reached\n").is_err());
    }

    #[test]
    fn hostnames() {
        assert_eq!(
            STANDARD[2].hostname(),
            format!("2.worker.{APP_A}.{PN_A}.{ZONE}")
        );
    }
}
