//! The XDP decision, in the order the policy states it, as a pure function.

use crate::{
    flow::{self, FlowKey},
    packet::{self, Addr, Frame, FrameKind, IpPacket, L3Kind, L4, PacketBytes},
    policy::{
        FLAG_HAS_DENY_V4, FLAG_HAS_DENY_V6, FLAG_HAS_TRUSTED_V4, FLAG_HAS_TRUSTED_V6,
        FLAG_ICMP_ESSENTIAL, FLAG_IPV6_FILTER, FLAG_TRUSTED_INLINE, FilterConfig,
    },
    reason::Reason,
};

const ICMP_DEST_UNREACH: u8 = 3;
const ICMP_ECHO_REQUEST: u8 = 8;
const ICMP_TIME_EXCEEDED: u8 = 11;
const ICMPV6_DEST_UNREACH: u8 = 1;
const ICMPV6_PACKET_TOO_BIG: u8 = 2;
const ICMPV6_TIME_EXCEEDED: u8 = 3;
const ICMPV6_ECHO_REQUEST: u8 = 128;
const NDP_FIRST: u8 = 133;
const NDP_LAST: u8 = 137;

/// The lookups the decision needs; the XDP program answers them from maps, tests from tables.
pub trait Tables {
    fn is_denied(&self, src: &Addr) -> bool;
    /// Asked only when the policy's inline trusted table is not the whole list
    /// ([`FLAG_TRUSTED_INLINE`] unset).
    fn is_trusted(&self, src: &Addr) -> bool;
    /// Whether the host recently sent on the flow this inbound `key` answers.
    fn is_return_flow(&self, key: &FlowKey) -> bool;
}

/// The decision for a parsed frame.
#[inline(always)]
pub fn decide<T: Tables>(frame: &Frame, cfg: &FilterConfig, tables: &T) -> Reason {
    match frame.kind {
        FrameKind::NonIp => Reason::NonIp,
        FrameKind::Malformed => Reason::Malformed,
        FrameKind::Ip => decide_ip(&frame.ip, cfg, tables),
    }
}

/// Parses and decides in one pass: what the XDP program runs. The same parser pieces and the
/// same [`decide_ip`] as `decide(&packet::parse(p), ..)`, so both give the same reason for
/// every frame (host tests check it); but no [`Frame`] is built, and each address family gets
/// its own inlined copy of the decision, in which the family is a constant.
#[inline(always)]
pub fn judge<P: PacketBytes + ?Sized, T: Tables>(p: &P, cfg: &FilterConfig, tables: &T) -> Reason {
    let l3 = packet::l3(p);
    match l3.kind {
        L3Kind::Ipv4 => {
            let Some(h) = packet::ipv4_header(p, l3.off) else {
                return Reason::Malformed;
            };
            // Sound TCP, the bulk of the traffic, gets a copy of the decision of its own, in
            // which the protocol is a constant: no dispatch on it, nothing kept for the others.
            if h.is_tcp()
                && let Some(t) = packet::tcp(p, h.l4_off, h.end)
            {
                return decide_ip(&h.packet(t), cfg, tables);
            }
            decide_ip(&h.packet(h.transport(p)), cfg, tables)
        }
        L3Kind::Ipv6 => match packet::ipv6(p, l3.off) {
            Some(ip) => decide_ip(&ip, cfg, tables),
            None => Reason::Malformed,
        },
        L3Kind::NonIp => Reason::NonIp,
        L3Kind::Malformed => Reason::Malformed,
    }
}

/// The decision for an IP packet whose network header is sound, in the policy's order.
#[inline(always)]
pub fn decide_ip<T: Tables>(ip: &IpPacket, cfg: &FilterConfig, tables: &T) -> Reason {
    let t = &ip.transport;
    if !cfg.is_guarded(&ip.dst) {
        return Reason::NotGuarded;
    }
    // TCP to an allowed port is never a return flow (egress does not record flows whose local
    // port is an allowed one), so the pass path skips the flow lookup.
    let to_open_port = t.kind() == L4::Tcp && cfg.tcp_port_allowed(t.dst_port());
    if !to_open_port && flow::may_answer(t) {
        let mut key = FlowKey::default();
        if flow::fill_inbound(&mut key, ip) && tables.is_return_flow(&key) {
            return Reason::ReturnFlow;
        }
    }
    let (has_deny, has_trusted) = if ip.src.is_v6() {
        (cfg.has(FLAG_HAS_DENY_V6), cfg.has(FLAG_HAS_TRUSTED_V6))
    } else {
        (cfg.has(FLAG_HAS_DENY_V4), cfg.has(FLAG_HAS_TRUSTED_V4))
    };
    if has_deny && tables.is_denied(&ip.src) {
        return Reason::Denylisted;
    }
    if has_trusted {
        let trusted = if cfg.has(FLAG_TRUSTED_INLINE) {
            cfg.trusted.contains(&ip.src)
        } else {
            tables.is_trusted(&ip.src)
        };
        if trusted {
            return Reason::Trusted;
        }
    }
    if ip.is_v6() && !cfg.has(FLAG_IPV6_FILTER) {
        return if is_link_local_ndp(ip) {
            Reason::Icmp
        } else {
            Reason::Ipv6
        };
    }
    if to_open_port {
        return Reason::Passed;
    }
    let essential = cfg.has(FLAG_ICMP_ESSENTIAL);
    let ty = t.icmp_type();
    match t.kind() {
        L4::Tcp | L4::Udp => Reason::PortClosed,
        L4::Icmp => {
            if essential
                && matches!(
                    ty,
                    ICMP_DEST_UNREACH | ICMP_TIME_EXCEEDED | ICMP_ECHO_REQUEST
                )
            {
                Reason::Icmp
            } else {
                Reason::Protocol
            }
        }
        L4::Icmp6 => {
            let essential_ty = matches!(
                ty,
                ICMPV6_DEST_UNREACH
                    | ICMPV6_PACKET_TOO_BIG
                    | ICMPV6_TIME_EXCEEDED
                    | ICMPV6_ECHO_REQUEST
            ) || (NDP_FIRST..=NDP_LAST).contains(&ty);
            if is_link_local_ndp(ip) || (essential && essential_ty) {
                Reason::Icmp
            } else {
                Reason::Protocol
            }
        }
        L4::Fragment => Reason::Fragment,
        L4::Other => Reason::Protocol,
        L4::Malformed => Reason::Malformed,
    }
}

/// Neighbour discovery from a link-local source: IPv6 on the link breaks without it.
#[inline(always)]
fn is_link_local_ndp(ip: &IpPacket) -> bool {
    // Read as a word, not through the byte view: byte accesses would make LLVM split the
    // address into bytes on every path, IPv4 included.
    let [b0, b1, _, _] = ip.src.v6_words()[0].to_ne_bytes();
    ip.transport.kind() == L4::Icmp6
        && ip.src.is_v6()
        && b0 == 0xfe
        && b1 & 0xc0 == 0x80
        && (NDP_FIRST..=NDP_LAST).contains(&ip.transport.icmp_type())
}

#[cfg(all(test, feature = "std"))]
mod tests {
    use super::*;
    use crate::golden::{self, CLIENT, EDGE, TCP_SYN};
    use crate::packet::{self, ETH_P_IPV4};

    /// Tables under which every inbound packet answers a flow of the host.
    struct EverythingIsAFlow;
    impl Tables for EverythingIsAFlow {
        fn is_denied(&self, _: &Addr) -> bool {
            false
        }
        fn is_trusted(&self, _: &Addr) -> bool {
            false
        }
        fn is_return_flow(&self, _: &FlowKey) -> bool {
            true
        }
    }

    fn tcp_with_flags(flags: u8) -> Reason {
        let frame = golden::eth(
            ETH_P_IPV4,
            &[],
            &golden::ipv4(
                CLIENT,
                EDGE,
                6,
                &[],
                golden::DF,
                &golden::tcp(53, 40000, flags),
            ),
        );
        let cfg = golden::fixture_config(golden::DEFAULT_MODE);
        decide(&packet::parse(&frame[..]), &cfg, &EverythingIsAFlow)
    }

    #[test]
    fn a_bare_syn_is_never_a_return_flow() {
        assert_eq!(tcp_with_flags(TCP_SYN), Reason::PortClosed);
        assert_eq!(
            tcp_with_flags(TCP_SYN | 0x10),
            Reason::ReturnFlow,
            "SYN-ACK answers a connect"
        );
        assert_eq!(tcp_with_flags(0x10), Reason::ReturnFlow, "ACK");
    }
}
