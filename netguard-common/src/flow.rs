//! Flows the host opened itself, so their return traffic passes the XDP filter.
//!
//! The tc egress program records `(remote, local, ports, protocol)` for packets the host sends;
//! the XDP program looks the same key up with source and destination swapped. Addresses are
//! IPv6 or IPv4-mapped IPv6 (`::ffff:a.b.c.d`), so one table holds both families without a tag.
//! Ports are host byte order. For ICMP echo the identifier stands in the remote port.

use crate::packet::{Addr, IpPacket, L4, TCP_ACK, TCP_SYN, Transport};

pub const PROTO_ICMP: u8 = 1;
pub const PROTO_TCP: u8 = 6;
pub const PROTO_UDP: u8 = 17;
pub const PROTO_ICMPV6: u8 = 58;

const ICMP_ECHO_REPLY: u8 = 0;
const ICMP_ECHO_REQUEST: u8 = 8;
const ICMPV6_ECHO_REQUEST: u8 = 128;
const ICMPV6_ECHO_REPLY: u8 = 129;

/// An egress write is skipped while the stored timestamp is younger than this: one write per
/// flow per second keeps the LRU fresh without a map update on every packet.
pub const REFRESH_INTERVAL_NS: u64 = 1_000_000_000;

/// Aligned to 8 (the layout is unchanged: 40 bytes, no padding) so that an IPv4 address is
/// written into the key with one 4-byte store: with the 2-byte alignment of its fields, LLVM
/// would take the address apart into bytes wherever a key might be built.
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct FlowKey {
    pub remote: [u8; 16],
    pub local: [u8; 16],
    pub remote_port: u16,
    pub local_port: u16,
    pub proto: u8,
    /// Zero: padding bytes take part in the hash lookup.
    pub _pad: [u8; 3],
}

const _: () = assert!(core::mem::size_of::<FlowKey>() == 40);
const _: () = assert!(core::mem::align_of::<FlowKey>() == 8);

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct FlowValue {
    /// `bpf_ktime_get_ns()` of the last outbound packet.
    pub last_seen_ns: u64,
}

#[inline(always)]
pub fn mapped(addr: &Addr) -> [u8; 16] {
    let mut out = [0u8; 16];
    write_mapped(&mut out, addr);
    out
}

#[inline(always)]
fn write_mapped(out: &mut [u8; 16], addr: &Addr) {
    if addr.is_v6() {
        *out = *addr.v6_octets();
    } else {
        out[10] = 0xff;
        out[11] = 0xff;
        out[12..].copy_from_slice(&addr.v4_octets());
    }
}

/// `(remote port, local port, protocol)` of an outbound packet that opens something answerable.
#[inline(always)]
fn outbound_ports(t: &Transport) -> Option<(u16, u16, u8)> {
    Some(match t.kind() {
        L4::Tcp => (t.dst_port(), t.src_port(), PROTO_TCP),
        L4::Udp => (t.dst_port(), t.src_port(), PROTO_UDP),
        L4::Icmp if t.icmp_type() == ICMP_ECHO_REQUEST => (t.icmp_id(), 0, PROTO_ICMP),
        L4::Icmp6 if t.icmp_type() == ICMPV6_ECHO_REQUEST => (t.icmp_id(), 0, PROTO_ICMPV6),
        _ => return None,
    })
}

#[inline(always)]
fn inbound_ports(t: &Transport) -> Option<(u16, u16, u8)> {
    Some(match t.kind() {
        // A bare SYN opens a connection; it never answers one the host opened (that answer is
        // a SYN-ACK), so it has no flow to find and SYN floods skip the lookup.
        L4::Tcp if t.tcp_flags() as u16 & (TCP_SYN | TCP_ACK) == TCP_SYN => return None,
        L4::Tcp => (t.src_port(), t.dst_port(), PROTO_TCP),
        L4::Udp => (t.src_port(), t.dst_port(), PROTO_UDP),
        L4::Icmp if t.icmp_type() == ICMP_ECHO_REPLY => (t.icmp_id(), 0, PROTO_ICMP),
        L4::Icmp6 if t.icmp_type() == ICMPV6_ECHO_REPLY => (t.icmp_id(), 0, PROTO_ICMPV6),
        _ => return None,
    })
}

/// Fills `key` (which must be zeroed) in place. Building it in place rather than returning
/// it keeps the XDP program within the 512-byte BPF stack.
#[inline(always)]
fn fill(key: &mut FlowKey, remote: &Addr, local: &Addr, (rport, lport, proto): (u16, u16, u8)) {
    write_mapped(&mut key.remote, remote);
    write_mapped(&mut key.local, local);
    key.remote_port = rport;
    key.local_port = lport;
    key.proto = proto;
}

/// Fills the zeroed `key` with what an outbound packet records; `false` if it records nothing.
#[inline(always)]
pub fn fill_outbound(key: &mut FlowKey, ip: &IpPacket) -> bool {
    let Some(ports) = outbound_ports(&ip.transport) else {
        return false;
    };
    fill(key, &ip.dst, &ip.src, ports);
    true
}

/// Whether an inbound packet with this transport could answer a flow of the host at all: when
/// it cannot, no key is built and nothing is looked up.
#[inline(always)]
pub fn may_answer(t: &Transport) -> bool {
    inbound_ports(t).is_some()
}

/// Fills the zeroed `key` under which an inbound packet would find the flow the host opened.
#[inline(always)]
pub fn fill_inbound(key: &mut FlowKey, ip: &IpPacket) -> bool {
    let Some(ports) = inbound_ports(&ip.transport) else {
        return false;
    };
    fill(key, &ip.src, &ip.dst, ports);
    true
}

/// The key an outbound packet records, if it opens something that can be answered.
pub fn outbound_key(ip: &IpPacket) -> Option<FlowKey> {
    let mut key = FlowKey::default();
    fill_outbound(&mut key, ip).then_some(key)
}

/// The key under which an inbound packet would find the flow that the host opened.
pub fn inbound_key(ip: &IpPacket) -> Option<FlowKey> {
    let mut key = FlowKey::default();
    fill_inbound(&mut key, ip).then_some(key)
}

/// Whether a flow last seen at `last_seen_ns` still admits return traffic at `now_ns`.
/// A `now` older than the stored time (another CPU wrote after this one read the clock) counts
/// as fresh instead of wrapping.
#[inline(always)]
pub fn is_fresh(last_seen_ns: u64, now_ns: u64, timeout_ns: u64) -> bool {
    now_ns.saturating_sub(last_seen_ns) <= timeout_ns
}

/// The idle timeout for a flow of `proto`, from the policy.
#[inline(always)]
pub fn timeout_for(proto: u8, tcp_ns: u64, other_ns: u64) -> u64 {
    if proto == PROTO_TCP { tcp_ns } else { other_ns }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn udp(src: [u8; 4], sp: u16, dst: [u8; 4], dp: u16) -> IpPacket {
        IpPacket {
            src: Addr::v4(src),
            dst: Addr::v4(dst),
            transport: Transport::ports(L4::Udp, PROTO_UDP, sp, dp),
        }
    }

    #[test]
    fn reply_matches_request() {
        let out = udp([203, 0, 113, 10], 40000, [192, 0, 2, 53], 53);
        let back = udp([192, 0, 2, 53], 53, [203, 0, 113, 10], 40000);
        assert_eq!(outbound_key(&out), inbound_key(&back));
        let spoof = udp([192, 0, 2, 53], 54, [203, 0, 113, 10], 40000);
        assert_ne!(outbound_key(&out), inbound_key(&spoof));
    }

    #[test]
    fn echo_request_matches_reply_only() {
        let req = IpPacket {
            src: Addr::v4([203, 0, 113, 10]),
            dst: Addr::v4([192, 0, 2, 1]),
            transport: Transport::icmp(false, 8, 0, 77),
        };
        let rep = IpPacket {
            src: Addr::v4([192, 0, 2, 1]),
            dst: Addr::v4([203, 0, 113, 10]),
            transport: Transport::icmp(false, 0, 0, 77),
        };
        assert_eq!(outbound_key(&req), inbound_key(&rep));
        assert_eq!(
            inbound_key(&req),
            None,
            "an inbound echo request is not a reply"
        );
    }

    #[test]
    fn freshness_never_wraps() {
        assert!(is_fresh(100, 100, 0));
        assert!(is_fresh(200, 100, 0), "now before last_seen");
        assert!(is_fresh(0, 60, 60));
        assert!(!is_fresh(0, 61, 60));
        assert!(!is_fresh(0, u64::MAX, 60));
    }
}
