//! The standard edge topology shared by the end-to-end tests and `cargo xtask demo`.
//!
//! ```text
//!  client netns                                   edge netns
//!  <client>v                                      <edge>v   ← netguard attaches here
//!   192.0.2.99/24   (client, primary)               203.0.113.10/24
//!   192.0.2.50/24   (trusted source)                routes: 192.0.2.0/24, 198.51.100.0/24
//!   198.51.100.7/24 (denylisted source)                     dev <edge>v src 203.0.113.10
//!   route: 203.0.113.0/24 dev <client>v src 192.0.2.99
//! ```
//!
//! All routes are on-link, so each side ARPs for the other's address directly, and every client
//! source address is routable in both directions. The client picks its source by binding.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use crate::{
    netns::NetNs,
    veth::{self, VethEnd},
};

/// The internet client's ordinary address.
pub const CLIENT_ADDR: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 99);
/// A client address listed in `trusted_sources`.
pub const TRUSTED_ADDR: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 50);
/// A client address inside the denylisted 198.51.100.0/24.
pub const DENIED_ADDR: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 7);
/// The denylisted network in the standard config.
pub const DENIED_NET: &str = "198.51.100.0/24";
/// The guarded ingress address on the edge.
pub const EDGE_ADDR: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 10);

pub const CLIENT_MAC: &str = "02:6e:67:00:00:01";
pub const EDGE_MAC: &str = "02:6e:67:00:00:02";

/// TCP ports the edge serves in the standard setup, and the UDP echo port.
pub const EDGE_TCP_PORTS: [u16; 4] = [80, 443, 22, 8080];
pub const EDGE_UDP_PORT: u16 = 53;
/// Services on the client that the edge itself connects out to (host return traffic).
pub const CLIENT_TCP_PORT: u16 = 9000;
pub const CLIENT_UDP_PORT: u16 = 5353;

/// Two namespaces joined by a veth pair. Field order is drop order: namespaces go last, and
/// their veths with them.
#[derive(Debug)]
pub struct Sandbox {
    /// Name of the client's veth (inside `client`).
    pub client_if: String,
    /// Name of the edge's veth (inside `edge`): the interface netguard attaches to.
    pub edge_if: String,
    pub client: NetNs,
    pub edge: NetNs,
}

#[expect(
    clippy::new_without_default,
    reason = "creating kernel state is not a default"
)]
impl Sandbox {
    /// Builds the topology above; panics if any step fails (what it made so far is removed).
    pub fn new() -> Sandbox {
        let client = NetNs::new();
        let edge = NetNs::new();
        // Names are at most 14 bytes, so one more letter still fits IFNAMSIZ.
        let client_if = format!("{}v", client.name());
        let edge_if = format!("{}v", edge.name());
        let client_cidrs = [
            format!("{CLIENT_ADDR}/24"),
            format!("{TRUSTED_ADDR}/24"),
            format!("{DENIED_ADDR}/24"),
        ];
        let client_addrs: Vec<&str> = client_cidrs.iter().map(String::as_str).collect();
        let edge_cidr = format!("{EDGE_ADDR}/24");
        veth::veth_pair(
            VethEnd {
                ns: &client,
                name: &client_if,
                addrs: &client_addrs,
                mac: Some(CLIENT_MAC),
            },
            VethEnd {
                ns: &edge,
                name: &edge_if,
                addrs: &[&edge_cidr],
                mac: Some(EDGE_MAC),
            },
        );
        let (client_src, edge_src) = (CLIENT_ADDR.to_string(), EDGE_ADDR.to_string());
        veth::add_route(&client, "203.0.113.0/24", &client_if, Some(&client_src));
        veth::add_route(&edge, "192.0.2.0/24", &edge_if, Some(&edge_src));
        veth::add_route(&edge, "198.51.100.0/24", &edge_if, Some(&edge_src));
        Sandbox {
            client_if,
            edge_if,
            client,
            edge,
        }
    }

    /// `EDGE_ADDR:port`.
    pub fn edge_addr(port: u16) -> SocketAddr {
        SocketAddr::new(IpAddr::V4(EDGE_ADDR), port)
    }

    /// `CLIENT_ADDR:port`.
    pub fn client_addr(port: u16) -> SocketAddr {
        SocketAddr::new(IpAddr::V4(CLIENT_ADDR), port)
    }
}
