//! Private networks as data: the config section, its validation, the isolation maps' contents
//! and the names the DNS responder serves — all pure, tested without a kernel or a socket.
//!
//! Names, for app `ap-<uuid>` in network `pn-<uuid>` (zone `private-network.internal.`):
//! - `ap-….pn-….private-network.internal.` → the app's `web` containers;
//! - `TYPE.ap-….pn-….private-network.internal.` → every container of that type;
//! - `N.TYPE.ap-….pn-….private-network.internal.` → container number N of that type.

use std::{
    collections::{BTreeMap, HashMap},
    net::{Ipv4Addr, SocketAddr},
};

use ipnet::Ipv4Net;
use netguard_common::private_net::GatewayKey;
use serde::{Deserialize, Serialize};

pub const ZONE: &str = "private-network.internal.";
/// The platform's private range: every private address lives here.
pub const PRIVATE_RANGE: Ipv4Net = Ipv4Net::new_assert(Ipv4Addr::new(10, 240, 0, 0), 22);
pub const DEFAULT_GATEWAY: Ipv4Addr = Ipv4Addr::new(10, 240, 0, 1);
/// Process types that may be exposed publicly (proxy backends); every other type is private.
pub const PUBLIC_TYPES: [&str; 2] = ["web", "tcp"];

/// `[[private_network]]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrivateNetwork {
    /// `pn-<uuid>`.
    pub id: String,
    /// Host side of the private veths, or the private bridge.
    #[serde(default)]
    pub interfaces: Vec<String>,
    /// The network's gateway address (the host's address on the private side). Default 10.240.0.1.
    #[serde(default)]
    pub gateway: Option<Ipv4Addr>,
    /// Where the DNS responder listens for this network (UDP and TCP). Default `gateway:53`.
    #[serde(default)]
    pub dns_listen: Option<SocketAddr>,
    /// TTL of the DNS answers for this network: short, since containers come and go.
    #[serde(default = "default_dns_ttl")]
    pub dns_ttl_secs: u32,
    #[serde(default)]
    pub container: Vec<PnContainer>,
}

fn default_dns_ttl() -> u32 {
    5
}

/// `[[private_network.container]]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PnContainer {
    /// `ap-<uuid>`.
    pub app: String,
    /// Process type: `web`, `worker`, `clock`, …
    #[serde(rename = "type")]
    pub kind: String,
    /// Container number within its type, from 1.
    pub index: u32,
    /// Private address, inside 10.240.0.0/22.
    pub address: Ipv4Addr,
    /// Public address (172.17.0.0/16), used to check that only `web`/`tcp` containers are ever
    /// proxy backends.
    #[serde(default)]
    pub public_address: Option<Ipv4Addr>,
}

impl PrivateNetwork {
    pub fn gateway(&self) -> Ipv4Addr {
        self.gateway.unwrap_or(DEFAULT_GATEWAY)
    }

    pub fn dns_listen(&self) -> SocketAddr {
        self.dns_listen
            .unwrap_or(SocketAddr::new(self.gateway().into(), 53))
    }

    /// The kernel's network id: the UUID's first 32 bits. `None` for a malformed id.
    pub fn network_id(&self) -> Option<u32> {
        let uuid = self.id.strip_prefix("pn-")?;
        is_uuid(uuid).then(|| u32::from_str_radix(&uuid[..8], 16).ok())?
    }
}

fn is_uuid(s: &str) -> bool {
    let groups: Vec<&str> = s.split('-').collect();
    groups.len() == 5
        && groups.iter().zip([8, 4, 4, 4, 12]).all(|(g, n)| {
            g.len() == n
                && g.bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        })
}

fn is_type_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.bytes().all(|b| b.is_ascii_digit())
}

/// Every problem of the `[[private_network]]` section, as `(key, message)`.
pub fn validate(networks: &[PrivateNetwork]) -> Vec<(String, String)> {
    let mut problems = Vec::new();
    let mut owner: HashMap<Ipv4Addr, String> = HashMap::new();
    let mut ids: HashMap<u32, usize> = HashMap::new();
    for (n, net) in networks.iter().enumerate() {
        let key = format!("private_network[{n}]");
        match net.network_id() {
            None => problems.push((
                format!("{key}.id"),
                format!(
                    "{:?} is not pn-<uuid> (lowercase, 8-4-4-4-12 hex digits)",
                    net.id
                ),
            )),
            Some(id) => {
                if let Some(first) = ids.insert(id, n) {
                    problems.push((
                        format!("{key}.id"),
                        format!("{} shares its first 32 bits with private_network[{first}]; the kernel keys networks by them", net.id),
                    ));
                }
            }
        }
        if !PRIVATE_RANGE.contains(&net.gateway()) {
            problems.push((
                format!("{key}.gateway"),
                format!("{} is outside {PRIVATE_RANGE}", net.gateway()),
            ));
        }
        let mut seen: HashMap<(&str, &str, u32), usize> = HashMap::new();
        for (c, container) in net.container.iter().enumerate() {
            let ckey = format!("{key}.container[{c}]");
            if container
                .app
                .strip_prefix("ap-")
                .is_none_or(|u| !is_uuid(u))
            {
                problems.push((
                    format!("{ckey}.app"),
                    format!("{:?} is not ap-<uuid>", container.app),
                ));
            }
            if !is_type_name(&container.kind) {
                problems.push((
                    format!("{ckey}.type"),
                    format!(
                        "{:?} is not a process type (lowercase letters, digits, '-')",
                        container.kind
                    ),
                ));
            }
            if container.index == 0 {
                problems.push((
                    format!("{ckey}.index"),
                    "container numbers start at 1".to_string(),
                ));
            }
            if !PRIVATE_RANGE.contains(&container.address) {
                problems.push((
                    format!("{ckey}.address"),
                    format!("{} is outside {PRIVATE_RANGE}", container.address),
                ));
            } else if container.address == net.gateway() {
                problems.push((
                    format!("{ckey}.address"),
                    format!("{} is the network's gateway", container.address),
                ));
            } else if let Some(other) = owner.insert(container.address, ckey.clone()) {
                problems.push((
                    format!("{ckey}.address"),
                    format!("{} is already {other}'s address", container.address),
                ));
            }
            if let Some(first) = seen.insert((&container.app, &container.kind, container.index), c)
            {
                problems.push((
                    ckey.clone(),
                    format!(
                        "{}.{}.{} is already {key}.container[{first}]",
                        container.index, container.kind, container.app
                    ),
                ));
            }
        }
    }
    problems
}

/// A public backend address that belongs to a container of a private type, if any: such a
/// route would expose a `worker` (or any non-`web`/`tcp` type) to the internet.
pub fn private_type_of(networks: &[PrivateNetwork], public: Ipv4Addr) -> Option<&PnContainer> {
    networks
        .iter()
        .flat_map(|n| &n.container)
        .find(|c| c.public_address == Some(public) && !PUBLIC_TYPES.contains(&c.kind.as_str()))
}

/// The isolation maps' contents: member address → network id, and gateway entries.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PnPlan {
    pub members: Vec<([u8; 4], u32)>,
    pub gateways: Vec<GatewayKey>,
}

/// Builds the plan; `networks` must have passed [`validate`].
pub fn plan(networks: &[PrivateNetwork]) -> PnPlan {
    let mut plan = PnPlan::default();
    for net in networks {
        let Some(id) = net.network_id() else { continue };
        plan.gateways.push(GatewayKey {
            addr: net.gateway().octets(),
            network: id,
        });
        for c in &net.container {
            plan.members.push((c.address.octets(), id));
        }
    }
    plan.members.sort_unstable();
    plan.gateways.sort_unstable_by_key(|g| (g.addr, g.network));
    plan
}

/// What the DNS responder answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// NOERROR with these A records.
    A(Vec<Ipv4Addr>),
    /// NOERROR, no records (the name exists, not with this type).
    NoData,
    NxDomain,
    /// Not ours to answer: another zone, or a querier outside the name's network.
    Refused,
}

/// The record type asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueryType {
    A,
    Other,
}

/// Containers of one app: type → container number → address.
type AppContainers = BTreeMap<String, BTreeMap<u32, Ipv4Addr>>;

/// The zone's contents, built from the config, for lookups by name.
#[derive(Debug, Clone, Default)]
pub struct Directory {
    /// Network of each member address (the querier's network decides what it may ask).
    member_network: HashMap<Ipv4Addr, String>,
    /// Answer TTL per network id.
    ttl: HashMap<String, u32>,
    /// network id text → app → type → index → address.
    apps: HashMap<String, HashMap<String, AppContainers>>,
}

impl Directory {
    pub fn new(networks: &[PrivateNetwork]) -> Self {
        let mut d = Directory::default();
        for net in networks {
            let id = net.id.to_ascii_lowercase();
            d.ttl.insert(id.clone(), net.dns_ttl_secs);
            for c in &net.container {
                d.member_network.insert(c.address, id.clone());
                d.apps
                    .entry(id.clone())
                    .or_default()
                    .entry(c.app.to_ascii_lowercase())
                    .or_default()
                    .entry(c.kind.clone())
                    .or_default()
                    .insert(c.index, c.address);
            }
        }
        d
    }

    /// The TTL for answers to `querier` (its network's `dns_ttl_secs`).
    pub fn ttl(&self, querier: Ipv4Addr) -> u32 {
        self.member_network
            .get(&querier)
            .and_then(|n| self.ttl.get(n))
            .copied()
            .unwrap_or_else(default_dns_ttl)
    }

    /// Answers `qname` (any case, with or without the trailing dot) for a query from `querier`.
    pub fn resolve(&self, qname: &str, qtype: QueryType, querier: Ipv4Addr) -> Answer {
        let name = qname.trim_end_matches('.').to_ascii_lowercase() + ".";
        // The zone must end at a label boundary: `xprivate-network.internal.` is not ours.
        let rest = match name.strip_suffix(ZONE) {
            Some(rest) if rest.is_empty() || rest.ends_with('.') => rest,
            _ => return Answer::Refused,
        };
        let Some(own_network) = self.member_network.get(&querier) else {
            return Answer::Refused;
        };
        let labels: Vec<&str> = rest
            .trim_end_matches('.')
            .split('.')
            .filter(|l| !l.is_empty())
            .collect();
        // labels: [[N,] TYPE,] ap-…, pn-…
        let Some((&pn, front)) = labels.split_last() else {
            return Answer::NoData; // the zone apex
        };
        if pn != own_network {
            return if pn.starts_with("pn-") {
                Answer::Refused
            } else {
                Answer::NxDomain
            };
        }
        let Some(apps) = self.apps.get(pn) else {
            return Answer::NxDomain;
        };
        let Some((&app, front)) = front.split_last() else {
            return Answer::NoData; // pn-….private-network.internal. exists, has no records
        };
        let Some(types) = apps.get(app) else {
            return Answer::NxDomain;
        };
        let addresses: Vec<Ipv4Addr> = match front {
            [] => types
                .get("web")
                .map(|c| c.values().copied().collect())
                .unwrap_or_default(),
            [kind] => match types.get(*kind) {
                Some(c) => c.values().copied().collect(),
                None => return Answer::NxDomain,
            },
            [index, kind] => match (index.parse::<u32>().ok(), types.get(*kind)) {
                (Some(i), Some(c)) => match c.get(&i) {
                    Some(a) => vec![*a],
                    None => return Answer::NxDomain,
                },
                _ => return Answer::NxDomain,
            },
            _ => return Answer::NxDomain,
        };
        match qtype {
            QueryType::A if !addresses.is_empty() => Answer::A(addresses),
            _ => Answer::NoData,
        }
    }
}

/// A container's own private hostname (what the platform injects as SCALINGO_PRIVATE_HOSTNAME).
pub fn hostname(networks: &[PrivateNetwork], address: Ipv4Addr) -> Option<String> {
    networks.iter().find_map(|n| {
        n.container
            .iter()
            .find(|c| c.address == address)
            .map(|c| format!("{}.{}.{}.{}.{ZONE}", c.index, c.kind, c.app, n.id))
    })
}

/// Every name of an app: the app name, one per type, one per container.
pub fn domain_names(networks: &[PrivateNetwork], app: &str) -> Vec<String> {
    let mut out = Vec::new();
    for n in networks {
        let mut containers: Vec<&PnContainer> =
            n.container.iter().filter(|c| c.app == app).collect();
        if containers.is_empty() {
            continue;
        }
        containers.sort_by(|a, b| (&a.kind, a.index).cmp(&(&b.kind, b.index)));
        out.push(format!("{app}.{}.{ZONE}", n.id));
        let mut kinds: Vec<&str> = containers.iter().map(|c| c.kind.as_str()).collect();
        kinds.dedup();
        for k in kinds {
            out.push(format!("{k}.{app}.{}.{ZONE}", n.id));
        }
        for c in containers {
            out.push(format!("{}.{}.{app}.{}.{ZONE}", c.index, c.kind, n.id));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const PN_A: &str = "pn-ad0fd6a1-d05e-40ea-bf63-c4f8a75a9d8c";
    const PN_B: &str = "pn-1b2c3d4e-0000-4000-8000-000000000001";
    const AP_1: &str = "ap-a71da13f-7c70-4c00-a644-eee8558d8053";
    const AP_2: &str = "ap-00000000-1111-4222-8333-444444444444";

    fn c(app: &str, kind: &str, index: u32, last: u8) -> PnContainer {
        PnContainer {
            app: app.into(),
            kind: kind.into(),
            index,
            address: Ipv4Addr::new(10, 240, 0, last),
            public_address: Some(Ipv4Addr::new(172, 17, 0, last)),
        }
    }

    fn networks() -> Vec<PrivateNetwork> {
        vec![
            PrivateNetwork {
                id: PN_A.into(),
                interfaces: vec!["pn0".into()],
                gateway: None,
                dns_listen: None,
                dns_ttl_secs: 5,
                container: vec![
                    c(AP_1, "web", 1, 2),
                    c(AP_1, "web", 2, 3),
                    c(AP_1, "worker", 1, 4),
                    c(AP_1, "worker", 2, 5),
                    c(AP_2, "web", 1, 6),
                ],
            },
            PrivateNetwork {
                id: PN_B.into(),
                interfaces: vec!["pn1".into()],
                gateway: None,
                dns_listen: None,
                dns_ttl_secs: 30,
                container: vec![c(AP_2, "web", 1, 20)],
            },
        ]
    }

    fn a(last: u8) -> Ipv4Addr {
        Ipv4Addr::new(10, 240, 0, last)
    }

    #[test]
    fn example_is_valid_and_planned() {
        let n = networks();
        assert!(validate(&n).is_empty(), "{:?}", validate(&n));
        let p = plan(&n);
        assert_eq!(p.members.len(), 6);
        assert!(p.members.contains(&([10, 240, 0, 2], 0xad0f_d6a1)));
        assert_eq!(p.gateways.len(), 2, "both networks share 10.240.0.1");
        assert_eq!(n[0].dns_listen(), "10.240.0.1:53".parse().expect("addr"));
    }

    #[test]
    fn invalid_ids_addresses_and_duplicates_are_refused() {
        let mut n = networks();
        n[0].id = "pn-not-a-uuid".into();
        n[0].container[0].app = "ap-XYZ".into();
        n[0].container[1].address = Ipv4Addr::new(10, 241, 0, 1);
        n[1].container[0].address = a(4); // already A's worker 1
        n[0].container.push(c(AP_1, "worker", 1, 30)); // duplicate 1.worker
        let problems = validate(&n);
        let keys: Vec<&str> = problems.iter().map(|(k, _)| k.as_str()).collect();
        for key in [
            "private_network[0].id",
            "private_network[0].container[0].app",
            "private_network[0].container[1].address",
            "private_network[1].container[0].address",
            "private_network[0].container[5]",
        ] {
            assert!(keys.contains(&key), "{key} missing: {problems:#?}");
        }
    }

    #[test]
    fn resolves_the_three_name_forms() {
        let d = Directory::new(&networks());
        let q = |name: &str| d.resolve(name, QueryType::A, a(2));
        assert_eq!(
            q(&format!("{AP_1}.{PN_A}.{ZONE}")),
            Answer::A(vec![a(2), a(3)])
        );
        assert_eq!(
            q(&format!("worker.{AP_1}.{PN_A}.{ZONE}")),
            Answer::A(vec![a(4), a(5)])
        );
        assert_eq!(
            q(&format!("2.worker.{AP_1}.{PN_A}.{ZONE}")),
            Answer::A(vec![a(5)])
        );
        assert_eq!(
            q(&format!(
                "2.WORKER.{}.{}.private-network.internal",
                AP_1.to_uppercase(),
                PN_A
            )),
            Answer::A(vec![a(5)])
        );
        assert_eq!(
            q(&format!("3.worker.{AP_1}.{PN_A}.{ZONE}")),
            Answer::NxDomain
        );
        assert_eq!(q(&format!("clock.{AP_1}.{PN_A}.{ZONE}")), Answer::NxDomain);
        assert_eq!(
            q(&format!(
                "ap-00000000-0000-4000-8000-000000000000.{PN_A}.{ZONE}"
            )),
            Answer::NxDomain
        );
        assert_eq!(
            d.resolve(&format!("{AP_1}.{PN_A}.{ZONE}"), QueryType::Other, a(2)),
            Answer::NoData
        );
        assert_eq!(q("example.com."), Answer::Refused);
        assert_eq!(
            q("xprivate-network.internal."),
            Answer::Refused,
            "a lookalike zone"
        );
    }

    #[test]
    fn other_networks_are_refused() {
        let d = Directory::new(&networks());
        // A container of B asks for A's names.
        assert_eq!(
            d.resolve(&format!("{AP_1}.{PN_A}.{ZONE}"), QueryType::A, a(20)),
            Answer::Refused
        );
        // B sees its own app.
        assert_eq!(
            d.resolve(&format!("{AP_2}.{PN_B}.{ZONE}"), QueryType::A, a(20)),
            Answer::A(vec![a(20)])
        );
        assert_eq!((d.ttl(a(2)), d.ttl(a(20))), (5, 30));
        // Not a member at all.
        assert_eq!(
            d.resolve(
                &format!("{AP_1}.{PN_A}.{ZONE}"),
                QueryType::A,
                Ipv4Addr::new(192, 0, 2, 1)
            ),
            Answer::Refused
        );
    }

    #[test]
    fn hostnames_and_domain_names() {
        let n = networks();
        assert_eq!(
            hostname(&n, a(5)).as_deref(),
            Some(&*format!("2.worker.{AP_1}.{PN_A}.{ZONE}"))
        );
        assert_eq!(hostname(&n, a(99)), None);
        let names = domain_names(&n, AP_1);
        assert_eq!(names[0], format!("{AP_1}.{PN_A}.{ZONE}"));
        assert!(names.contains(&format!("worker.{AP_1}.{PN_A}.{ZONE}")));
        assert!(names.contains(&format!("1.web.{AP_1}.{PN_A}.{ZONE}")));
        assert_eq!(names.len(), 1 + 2 + 4);
    }

    #[test]
    fn only_web_and_tcp_may_be_exposed() {
        let n = networks();
        assert_eq!(
            private_type_of(&n, Ipv4Addr::new(172, 17, 0, 2)),
            None,
            "web is public"
        );
        let w = private_type_of(&n, Ipv4Addr::new(172, 17, 0, 4)).expect("a worker");
        assert_eq!(w.kind, "worker");
    }
}
