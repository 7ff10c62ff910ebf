//! Golden packets: one per rule and per malformed shape, with the reason the XDP decision must
//! give under [`fixture_config`]. The host parser tests and the `BPF_PROG_TEST_RUN` tests both
//! walk this table, so the kernel program and the pure logic are held to the same answers.

use std::{vec, vec::Vec};

use crate::{
    flow::{self, FlowKey},
    packet::{self, Addr, ETH_P_8021AD, ETH_P_8021Q, ETH_P_IPV4, ETH_P_IPV6, L4, Transport},
    policy::{
        FLAG_HAS_DENY_V4, FLAG_HAS_DENY_V6, FLAG_HAS_TRUSTED_V4, FLAG_ICMP_ESSENTIAL,
        FLAG_IPV6_FILTER, FilterConfig,
    },
    reason::Reason,
    verdict::{self, Tables},
};

pub const EDGE: [u8; 4] = [203, 0, 113, 10];
pub const OTHER_HOST: [u8; 4] = [203, 0, 113, 99];
pub const CLIENT: [u8; 4] = [192, 0, 2, 99];
pub const TRUSTED: [u8; 4] = [192, 0, 2, 50];
pub const DENIED: [u8; 4] = [198, 51, 100, 7];
pub const RESOLVER: [u8; 4] = [192, 0, 2, 53];
pub const EDGE6: [u8; 16] = v6(0x2001, 0x0db8, 0, 0x10);
pub const OTHER6: [u8; 16] = v6(0x2001, 0x0db8, 0, 0x99);
pub const CLIENT6: [u8; 16] = v6(0x2001, 0x0db8, 0x0c11, 0x99);
pub const DENIED6: [u8; 16] = v6(0x2001, 0x0db8, 0x0bad, 0x7);
pub const LINK_LOCAL6: [u8; 16] = v6(0xfe80, 0, 0, 1);

/// Denylisted and trusted prefixes of the fixture, as (network bytes, prefix length).
pub const DENY_V4: [([u8; 4], u8); 1] = [([198, 51, 100, 0], 24)];
pub const DENY_V6: [([u8; 16], u8); 1] = [(v6(0x2001, 0x0db8, 0x0bad, 0), 48)];
pub const TRUSTED_V4: [([u8; 4], u8); 1] = [(TRUSTED, 32)];
/// The host resolved a name from port 40000: replies from the resolver's port 53 are a flow.
pub const HOST_DNS_PORT: u16 = 40000;

const fn v6(a: u16, b: u16, c: u16, last: u16) -> [u8; 16] {
    let mut o = [0u8; 16];
    let (a, b, c, l) = (
        a.to_be_bytes(),
        b.to_be_bytes(),
        c.to_be_bytes(),
        last.to_be_bytes(),
    );
    o[0] = a[0];
    o[1] = a[1];
    o[2] = b[0];
    o[3] = b[1];
    o[4] = c[0];
    o[5] = c[1];
    o[14] = l[0];
    o[15] = l[1];
    o
}

/// The fixture's tracked flow, as the tc egress program would have recorded it.
pub fn fixture_flow() -> FlowKey {
    let out = packet::IpPacket {
        src: Addr::v4(EDGE),
        dst: Addr::v4(RESOLVER),
        transport: Transport::ports(L4::Udp, flow::PROTO_UDP, HOST_DNS_PORT, 53),
    };
    // The outbound packet always yields a key: it is UDP.
    flow::outbound_key(&out).unwrap_or_default()
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mode {
    pub ipv6_filter: bool,
    pub icmp_essential: bool,
}

pub const DEFAULT_MODE: Mode = Mode {
    ipv6_filter: false,
    icmp_essential: true,
};
pub const IPV6_FILTER: Mode = Mode {
    ipv6_filter: true,
    icmp_essential: true,
};
pub const ICMP_DROP: Mode = Mode {
    ipv6_filter: false,
    icmp_essential: false,
};

pub fn fixture_config(mode: Mode) -> FilterConfig {
    let mut c = FilterConfig::EMPTY;
    c.ingress.add_v4(EDGE, 32);
    c.ingress.add_v6(EDGE6, 128);
    c.allow_tcp_port(80);
    c.allow_tcp_port(443);
    c.flags = FLAG_HAS_DENY_V4 | FLAG_HAS_DENY_V6 | FLAG_HAS_TRUSTED_V4;
    if mode.ipv6_filter {
        c.flags |= FLAG_IPV6_FILTER;
    }
    if mode.icmp_essential {
        c.flags |= FLAG_ICMP_ESSENTIAL;
    }
    c.flow_timeout_tcp_ns = 600_000_000_000;
    c.flow_timeout_other_ns = 60_000_000_000;
    c
}

/// The fixture's tables answered by plain prefix matching.
pub struct FixtureTables;

fn prefix_match(addr: &[u8], net: &[u8], len: u8) -> bool {
    let full = (len / 8) as usize;
    if addr[..full] != net[..full] {
        return false;
    }
    let rem = len % 8;
    rem == 0 || (addr[full] ^ net[full]) & (0xffu8 << (8 - rem)) == 0
}

impl Tables for FixtureTables {
    fn is_denied(&self, src: &Addr) -> bool {
        if src.is_v6() {
            DENY_V6
                .iter()
                .any(|(n, l)| prefix_match(src.v6_octets(), n, *l))
        } else {
            DENY_V4
                .iter()
                .any(|(n, l)| prefix_match(&src.v4_octets(), n, *l))
        }
    }
    fn is_trusted(&self, src: &Addr) -> bool {
        !src.is_v6()
            && TRUSTED_V4
                .iter()
                .any(|(n, l)| prefix_match(&src.v4_octets(), n, *l))
    }
    fn is_return_flow(&self, key: &FlowKey) -> bool {
        *key == fixture_flow()
    }
}

/// The reason the pure logic gives for `frame` under the fixture.
pub fn classify(frame: &[u8], mode: Mode) -> Reason {
    let parsed = packet::parse(frame);
    verdict::decide(&parsed, &fixture_config(mode), &FixtureTables)
}

// ---- packet builders -------------------------------------------------------------------------

pub const TCP_SYN: u8 = 0x02;
const MAC_DST: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
const MAC_SRC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];

/// Ethernet header with `vlans` tags (outer first; a second tag makes it 802.1ad QinQ).
pub fn eth(ethertype: u16, vlans: &[u16], payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(64 + payload.len());
    f.extend_from_slice(&MAC_DST);
    f.extend_from_slice(&MAC_SRC);
    for (i, vid) in vlans.iter().enumerate() {
        let tpid = if i == 0 && vlans.len() > 1 {
            ETH_P_8021AD
        } else {
            ETH_P_8021Q
        };
        f.extend_from_slice(&tpid.to_be_bytes());
        f.extend_from_slice(&vid.to_be_bytes());
    }
    f.extend_from_slice(&ethertype.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

fn checksum(data: &[u8]) -> u16 {
    let mut sum = 0u32;
    for c in data.chunks(2) {
        let w = if c.len() == 2 {
            u16::from_be_bytes([c[0], c[1]])
        } else {
            u16::from_be_bytes([c[0], 0])
        };
        sum += w as u32;
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// IPv4 header (with `options`, padded to 4 bytes) + payload. `frag` is the flags/offset word.
pub fn ipv4(
    src: [u8; 4],
    dst: [u8; 4],
    proto: u8,
    options: &[u8],
    frag: u16,
    payload: &[u8],
) -> Vec<u8> {
    let mut opts = options.to_vec();
    while !opts.len().is_multiple_of(4) {
        opts.push(0);
    }
    let hlen = 20 + opts.len();
    let total = (hlen + payload.len()) as u16;
    let mut h = vec![0x40 | (hlen / 4) as u8, 0];
    h.extend_from_slice(&total.to_be_bytes());
    h.extend_from_slice(&[0x12, 0x34]);
    h.extend_from_slice(&frag.to_be_bytes());
    h.extend_from_slice(&[64, proto, 0, 0]);
    h.extend_from_slice(&src);
    h.extend_from_slice(&dst);
    h.extend_from_slice(&opts);
    let c = checksum(&h);
    h[10..12].copy_from_slice(&c.to_be_bytes());
    h.extend_from_slice(payload);
    h
}

pub const DF: u16 = 0x4000;
pub const MF: u16 = 0x2000;

/// IPv6 header + payload; `next` is the first next-header value.
pub fn ipv6(src: [u8; 16], dst: [u8; 16], next: u8, payload: &[u8]) -> Vec<u8> {
    let mut h = vec![0x60, 0, 0, 0];
    h.extend_from_slice(&(payload.len() as u16).to_be_bytes());
    h.extend_from_slice(&[next, 64]);
    h.extend_from_slice(&src);
    h.extend_from_slice(&dst);
    h.extend_from_slice(payload);
    h
}

/// An 8-byte IPv6 extension header (hop-by-hop, routing or destination options) before `inner`.
pub fn ext8(next: u8, inner: &[u8]) -> Vec<u8> {
    let mut h = vec![next, 0, 1, 4, 0, 0, 0, 0];
    h.extend_from_slice(inner);
    h
}

/// A 24-byte IPv6 authentication header (RFC 4302: its length counts 4-octet units minus 2,
/// unlike the other extension headers) with a 12-byte ICV, before `inner`.
pub fn ah(next: u8, inner: &[u8]) -> Vec<u8> {
    let mut h = vec![next, 4, 0, 0, 0, 0, 0x10, 0x01, 0, 0, 0, 1];
    h.extend_from_slice(&[0xa5; 12]);
    h.extend_from_slice(inner);
    h
}

pub fn tcp(src_port: u16, dst_port: u16, flags: u8) -> Vec<u8> {
    let mut t = Vec::with_capacity(20);
    t.extend_from_slice(&src_port.to_be_bytes());
    t.extend_from_slice(&dst_port.to_be_bytes());
    t.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0, 0x50, flags, 0xff, 0xff, 0, 0, 0, 0]);
    t
}

pub fn udp(src_port: u16, dst_port: u16, payload: &[u8]) -> Vec<u8> {
    let mut u = Vec::with_capacity(8 + payload.len());
    u.extend_from_slice(&src_port.to_be_bytes());
    u.extend_from_slice(&dst_port.to_be_bytes());
    u.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    u.extend_from_slice(&[0, 0]);
    u.extend_from_slice(payload);
    u
}

pub fn icmp(ty: u8, code: u8, id: u16) -> Vec<u8> {
    let mut i = vec![ty, code, 0, 0];
    i.extend_from_slice(&id.to_be_bytes());
    i.extend_from_slice(&[0, 1]);
    i
}

pub fn v4_tcp(src: [u8; 4], dst: [u8; 4], dport: u16) -> Vec<u8> {
    eth(
        ETH_P_IPV4,
        &[],
        &ipv4(src, dst, 6, &[], DF, &tcp(51000, dport, TCP_SYN)),
    )
}

pub fn v6_tcp(src: [u8; 16], dst: [u8; 16], dport: u16) -> Vec<u8> {
    eth(
        ETH_P_IPV6,
        &[],
        &ipv6(src, dst, 6, &tcp(51000, dport, TCP_SYN)),
    )
}

// ---- the table -------------------------------------------------------------------------------

pub struct Golden {
    pub name: &'static str,
    pub frame: Vec<u8>,
    pub mode: Mode,
    pub expect: Reason,
}

fn g(name: &'static str, frame: Vec<u8>, mode: Mode, expect: Reason) -> Golden {
    Golden {
        name,
        frame,
        mode,
        expect,
    }
}

/// Every rule of the policy and every malformed shape, with the reason it must get.
pub fn table() -> Vec<Golden> {
    use Reason::*;
    let d = DEFAULT_MODE;
    let f = IPV6_FILTER;
    let v4 = |src, dst, proto, l4: &[u8]| eth(ETH_P_IPV4, &[], &ipv4(src, dst, proto, &[], DF, l4));
    let syn = |dport| tcp(51000, dport, TCP_SYN);

    // IHL 6 whose option bytes would read as ports 22 -> 443 if the header length were ignored.
    let opts_22 = eth(
        ETH_P_IPV4,
        &[],
        &ipv4(CLIENT, EDGE, 6, &[0x01, 0xbb, 0x01, 0xbb], DF, &syn(22)),
    );
    let opts_443 = eth(
        ETH_P_IPV4,
        &[],
        &ipv4(CLIENT, EDGE, 6, &[0x00, 0x16, 0x00, 0x16], DF, &syn(443)),
    );

    let mut ihl4 = v4_tcp(CLIENT, EDGE, 443);
    ihl4[14] = 0x44;
    let mut ihl15 = v4_tcp(CLIENT, EDGE, 443);
    ihl15[14] = 0x4f;
    let mut not_v4 = v4_tcp(CLIENT, EDGE, 443);
    not_v4[14] = 0x65;
    let mut long_total = v4_tcp(CLIENT, EDGE, 443);
    long_total[16..18].copy_from_slice(&100u16.to_be_bytes());
    let mut doff4 = v4_tcp(CLIENT, EDGE, 443);
    doff4[14 + 20 + 12] = 0x40;
    let mut doff15 = v4_tcp(CLIENT, EDGE, 443);
    doff15[14 + 20 + 12] = 0xf0;

    // A later fragment whose payload starts with bytes that spell ports 51000 -> 443.
    let nonfirst = eth(ETH_P_IPV4, &[], &ipv4(CLIENT, EDGE, 6, &[], 185, &syn(443)));
    let first = eth(ETH_P_IPV4, &[], &ipv4(CLIENT, EDGE, 6, &[], MF, &syn(443)));

    let ext_chain = |n: usize, dport: u16| {
        // dst-opts headers, each pointing at the next, the last at TCP.
        let mut inner = syn(dport);
        for i in 0..n {
            inner = ext8(if i == 0 { 6 } else { 60 }, &inner);
        }
        eth(
            ETH_P_IPV6,
            &[],
            &ipv6(CLIENT6, EDGE6, if n == 0 { 6 } else { 60 }, &inner),
        )
    };
    let hbh_rt_dst = |dport: u16| {
        let dst = ext8(6, &syn(dport));
        let rt = ext8(60, &dst);
        let hbh = ext8(43, &rt);
        eth(ETH_P_IPV6, &[], &ipv6(CLIENT6, EDGE6, 0, &hbh))
    };
    // AH then TCP: the walk must size AH by its own formula, not by the header after it.
    let v6_ah = |dport: u16| {
        eth(
            ETH_P_IPV6,
            &[],
            &ipv6(CLIENT6, EDGE6, 51, &ah(6, &syn(dport))),
        )
    };
    let v6_frag = {
        let mut fh = vec![6, 0, 0, 0, 0, 0, 0, 1];
        fh.extend_from_slice(&syn(443));
        eth(ETH_P_IPV6, &[], &ipv6(CLIENT6, EDGE6, 44, &fh))
    };
    let ndp_na = eth(
        ETH_P_IPV6,
        &[],
        &ipv6(LINK_LOCAL6, EDGE6, 58, &icmp(136, 0, 0)),
    );
    let arp = eth(
        0x0806,
        &[],
        &[
            0, 1, 8, 0, 6, 4, 0, 1, 2, 0, 0, 0, 0, 2, 192, 0, 2, 99, 0, 0, 0, 0, 0, 0, 203, 0, 113,
            10,
        ],
    );
    let lldp = eth(0x88cc, &[], &[2, 7, 4, 2, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0]);
    let triple = {
        let mut f = eth(
            ETH_P_IPV4,
            &[10, 20],
            &ipv4(CLIENT, EDGE, 6, &[], DF, &syn(443)),
        );
        // Insert a third 802.1Q tag after the second.
        let at = 12 + 8;
        let tag = [0x81, 0x00, 0x00, 0x1e];
        for (i, b) in tag.iter().enumerate() {
            f.insert(at + i, *b);
        }
        f
    };
    let udp_short = v4(CLIENT, EDGE, 17, &[0, 53, 0]);

    vec![
        g("tcp_syn_443", v4_tcp(CLIENT, EDGE, 443), d, Passed),
        g("tcp_syn_80", v4_tcp(CLIENT, EDGE, 80), d, Passed),
        g("tcp_syn_22", v4_tcp(CLIENT, EDGE, 22), d, PortClosed),
        g("tcp_syn_8080", v4_tcp(CLIENT, EDGE, 8080), d, PortClosed),
        g(
            "udp_53",
            v4(CLIENT, EDGE, 17, &udp(5353, 53, b"q")),
            d,
            PortClosed,
        ),
        g(
            "udp_443",
            v4(CLIENT, EDGE, 17, &udp(5353, 443, b"quic")),
            d,
            PortClosed,
        ),
        g(
            "not_guarded_tcp_22",
            v4_tcp(CLIENT, OTHER_HOST, 22),
            d,
            NotGuarded,
        ),
        g(
            "denylisted_tcp_443",
            v4_tcp(DENIED, EDGE, 443),
            d,
            Denylisted,
        ),
        g(
            "denylisted_udp",
            v4(DENIED, EDGE, 17, &udp(1, 53, b"")),
            d,
            Denylisted,
        ),
        g(
            "denylisted_icmp",
            v4(DENIED, EDGE, 1, &icmp(8, 0, 1)),
            d,
            Denylisted,
        ),
        g("trusted_tcp_22", v4_tcp(TRUSTED, EDGE, 22), d, Trusted),
        g(
            "return_flow_dns",
            v4(RESOLVER, EDGE, 17, &udp(53, HOST_DNS_PORT, b"a")),
            d,
            ReturnFlow,
        ),
        g(
            "return_flow_wrong_port",
            v4(RESOLVER, EDGE, 17, &udp(53, HOST_DNS_PORT + 1, b"a")),
            d,
            PortClosed,
        ),
        g(
            "return_flow_wrong_source",
            v4(CLIENT, EDGE, 17, &udp(53, HOST_DNS_PORT, b"a")),
            d,
            PortClosed,
        ),
        g(
            "tcp_ack_to_closed_port",
            v4(CLIENT, EDGE, 6, &tcp(443, 40000, 0x10)),
            d,
            PortClosed,
        ),
        g(
            "icmp_echo_request",
            v4(CLIENT, EDGE, 1, &icmp(8, 0, 7)),
            d,
            Icmp,
        ),
        g(
            "icmp_frag_needed",
            v4(CLIENT, EDGE, 1, &icmp(3, 4, 0)),
            d,
            Icmp,
        ),
        g(
            "icmp_time_exceeded",
            v4(CLIENT, EDGE, 1, &icmp(11, 0, 0)),
            d,
            Icmp,
        ),
        g(
            "icmp_timestamp",
            v4(CLIENT, EDGE, 1, &icmp(13, 0, 0)),
            d,
            Protocol,
        ),
        g(
            "icmp_echo_reply_unsolicited",
            v4(CLIENT, EDGE, 1, &icmp(0, 0, 9)),
            d,
            Protocol,
        ),
        g(
            "icmp_drop_mode_echo",
            v4(CLIENT, EDGE, 1, &icmp(8, 0, 7)),
            ICMP_DROP,
            Protocol,
        ),
        g(
            "icmp_drop_mode_frag_needed",
            v4(CLIENT, EDGE, 1, &icmp(3, 4, 0)),
            ICMP_DROP,
            Protocol,
        ),
        g("icmp_truncated", v4(CLIENT, EDGE, 1, &[8, 0]), d, Malformed),
        g(
            "gre",
            v4(CLIENT, EDGE, 47, &[0, 0, 0x08, 0x00]),
            d,
            Protocol,
        ),
        g(
            "ipip",
            v4(CLIENT, EDGE, 4, &ipv4(CLIENT, EDGE, 6, &[], DF, &syn(443))),
            d,
            Protocol,
        ),
        g(
            "esp",
            v4(CLIENT, EDGE, 50, &[0, 0, 0, 1, 0, 0, 0, 1]),
            d,
            Protocol,
        ),
        g(
            "sctp",
            v4(CLIENT, EDGE, 132, &[0, 80, 1, 187, 0, 0, 0, 0, 0, 0, 0, 0]),
            d,
            Protocol,
        ),
        g("ipv4_first_fragment_443", first, d, Fragment),
        g("ipv4_nonfirst_fragment_spelling_443", nonfirst, d, Fragment),
        g("ipv4_ihl_4", ihl4, d, Malformed),
        g("ipv4_ihl_15_beyond_packet", ihl15, d, Malformed),
        g("ipv4_version_6_in_v4_frame", not_v4, d, Malformed),
        g("ipv4_total_length_beyond_frame", long_total, d, Malformed),
        g("ipv4_options_port_22", opts_22, d, PortClosed),
        g("ipv4_options_port_443", opts_443, d, Passed),
        g("tcp_doff_4", doff4, d, Malformed),
        g("tcp_doff_beyond_packet", doff15, d, Malformed),
        g("udp_truncated", udp_short, d, Malformed),
        g("ethernet_10_bytes", vec![0xff; 10], d, Malformed),
        g(
            "ethernet_header_only_ipv4",
            eth(ETH_P_IPV4, &[], &[]),
            d,
            Malformed,
        ),
        g(
            "vlan_443",
            eth(
                ETH_P_IPV4,
                &[10],
                &ipv4(CLIENT, EDGE, 6, &[], DF, &syn(443)),
            ),
            d,
            Passed,
        ),
        g(
            "vlan_22",
            eth(ETH_P_IPV4, &[10], &ipv4(CLIENT, EDGE, 6, &[], DF, &syn(22))),
            d,
            PortClosed,
        ),
        g(
            "qinq_443",
            eth(
                ETH_P_IPV4,
                &[10, 20],
                &ipv4(CLIENT, EDGE, 6, &[], DF, &syn(443)),
            ),
            d,
            Passed,
        ),
        g(
            "qinq_22",
            eth(
                ETH_P_IPV4,
                &[10, 20],
                &ipv4(CLIENT, EDGE, 6, &[], DF, &syn(22)),
            ),
            d,
            PortClosed,
        ),
        g("three_vlan_tags", triple, d, Malformed),
        g(
            "vlan_truncated_tag",
            eth(ETH_P_8021Q, &[], &[0, 10]),
            d,
            Malformed,
        ),
        g("arp", arp, d, NonIp),
        g("lldp", lldp, d, NonIp),
        g("ipv6_drop_mode_443", v6_tcp(CLIENT6, EDGE6, 443), d, Ipv6),
        g(
            "ipv6_drop_mode_not_guarded",
            v6_tcp(CLIENT6, OTHER6, 443),
            d,
            NotGuarded,
        ),
        g("ipv6_drop_mode_ndp_link_local", ndp_na.clone(), d, Icmp),
        g(
            "ipv6_drop_mode_denylisted",
            v6_tcp(DENIED6, EDGE6, 443),
            d,
            Denylisted,
        ),
        g("ipv6_filter_443", v6_tcp(CLIENT6, EDGE6, 443), f, Passed),
        g("ipv6_filter_22", v6_tcp(CLIENT6, EDGE6, 22), f, PortClosed),
        g(
            "ipv6_filter_udp_443",
            eth(
                ETH_P_IPV6,
                &[],
                &ipv6(CLIENT6, EDGE6, 17, &udp(1, 443, b"")),
            ),
            f,
            PortClosed,
        ),
        g(
            "ipv6_filter_hbh_routing_dstopts_443",
            hbh_rt_dst(443),
            f,
            Passed,
        ),
        g(
            "ipv6_filter_hbh_routing_dstopts_22",
            hbh_rt_dst(22),
            f,
            PortClosed,
        ),
        g("ipv6_filter_ah_443", v6_ah(443), f, Passed),
        g("ipv6_filter_ah_22", v6_ah(22), f, PortClosed),
        g(
            "ipv6_filter_ext_chain_at_bound_443",
            ext_chain(packet::MAX_IPV6_EXT_HEADERS, 443),
            f,
            Passed,
        ),
        g(
            "ipv6_filter_ext_chain_too_long_443",
            ext_chain(packet::MAX_IPV6_EXT_HEADERS + 1, 443),
            f,
            Malformed,
        ),
        g("ipv6_filter_fragment_443", v6_frag, f, Fragment),
        g("ipv6_filter_ndp_link_local", ndp_na, f, Icmp),
        g(
            "ipv6_filter_echo_request",
            eth(ETH_P_IPV6, &[], &ipv6(CLIENT6, EDGE6, 58, &icmp(128, 0, 1))),
            f,
            Icmp,
        ),
        g(
            "ipv6_filter_vlan_22",
            eth(ETH_P_IPV6, &[10], &ipv6(CLIENT6, EDGE6, 6, &syn(22))),
            f,
            PortClosed,
        ),
        g(
            "ipv6_filter_denylisted",
            v6_tcp(DENIED6, EDGE6, 443),
            f,
            Denylisted,
        ),
    ]
}

/// The frames of the truncation sweep: valid 443 SYNs that no prefix of may ever pass.
pub fn truncation_sources() -> Vec<(&'static str, Vec<u8>, Mode)> {
    let syn = tcp(51000, 443, TCP_SYN);
    vec![
        ("ipv4", v4_tcp(CLIENT, EDGE, 443), DEFAULT_MODE),
        (
            "ipv4_vlan",
            eth(ETH_P_IPV4, &[10], &ipv4(CLIENT, EDGE, 6, &[], DF, &syn)),
            DEFAULT_MODE,
        ),
        (
            "ipv4_qinq",
            eth(ETH_P_IPV4, &[10, 20], &ipv4(CLIENT, EDGE, 6, &[], DF, &syn)),
            DEFAULT_MODE,
        ),
        ("ipv6", v6_tcp(CLIENT6, EDGE6, 443), IPV6_FILTER),
        (
            "ipv6_vlan",
            eth(ETH_P_IPV6, &[10], &ipv6(CLIENT6, EDGE6, 6, &syn)),
            IPV6_FILTER,
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::PacketBytes;

    #[test]
    fn every_golden_packet_gets_its_reason() {
        let mut failures = Vec::new();
        for case in table() {
            let got = classify(&case.frame, case.mode);
            if got != case.expect {
                failures.push(std::format!(
                    "{}: expected {:?}, got {:?}",
                    case.name,
                    case.expect,
                    got
                ));
            }
        }
        assert!(failures.is_empty(), "{failures:#?}");
    }

    #[test]
    fn every_reason_is_covered() {
        let t = table();
        for r in Reason::ALL {
            assert!(
                t.iter().any(|c| c.expect == r),
                "no golden packet for {r:?}"
            );
        }
    }

    #[test]
    fn no_truncated_syn_passes() {
        for (name, frame, mode) in truncation_sources() {
            assert_eq!(classify(&frame, mode), Reason::Passed, "{name} whole");
            for len in 0..frame.len() {
                let r = classify(&frame[..len], mode);
                assert!(r.drops(), "{name} cut to {len} bytes: {r:?}");
            }
        }
    }

    /// The first `readable` bytes of a frame, reporting the whole frame's length: an skb whose
    /// linear area ends there.
    struct Linear<'a> {
        frame: &'a [u8],
        readable: usize,
    }

    impl PacketBytes for Linear<'_> {
        type Header<const N: usize> = [u8; N];

        fn len(&self) -> usize {
            self.frame.len()
        }

        fn load<const N: usize>(&self, off: usize) -> Option<[u8; N]> {
            self.frame[..self.readable].load::<N>(off)
        }

        fn header<const N: usize>(&self, off: usize) -> Option<[u8; N]> {
            self.load::<N>(off)
        }
    }

    #[test]
    fn a_parse_that_starts_in_the_linear_area_equals_the_whole_parse() {
        let frames = table()
            .into_iter()
            .map(|g| (g.name, g.frame))
            .chain(truncation_sources().into_iter().map(|(n, f, _)| (n, f)));
        let mut checked = 0;
        for (name, frame) in frames {
            let whole = packet::parse(&frame[..]);
            for readable in 0..=frame.len() {
                let linear = Linear {
                    frame: &frame,
                    readable,
                };
                let got = packet::parse_prefix_first(&linear, readable, &frame[..]);
                assert_eq!(got, whole, "{name}, linear area of {readable} bytes");
                checked += 1;
            }
        }
        assert!(checked > 1000, "only {checked} splits checked");
    }

    #[test]
    fn prefix_match_edges() {
        assert!(prefix_match(&[198, 51, 100, 255], &[198, 51, 100, 0], 24));
        assert!(!prefix_match(&[198, 51, 101, 0], &[198, 51, 100, 0], 24));
        assert!(prefix_match(&[10, 0, 0, 1], &[0, 0, 0, 0], 0));
        assert!(prefix_match(&[10, 0, 0, 1], &[10, 0, 0, 0], 31));
        assert!(!prefix_match(&[10, 0, 0, 2], &[10, 0, 0, 0], 31));
    }
}
