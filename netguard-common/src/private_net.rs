//! Private networks: which private addresses may talk to which.
//!
//! Every container of an app in a private network has a private address (10.240.0.0/22). A tc
//! program on the private side lets a packet through only when its source and destination
//! belong to the same network, or when one of them is that network's gateway (where the DNS
//! responder listens). Everything else is dropped and counted by reason. Network ids are the
//! first four bytes of the network's UUID (`pn-<uuid>`), so they stay the same across reloads
//! however the config is ordered; the config loader refuses two networks whose ids collide.

use crate::packet::PacketBytes;

/// Why the private-side program decided as it did; one counter each.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PnReason {
    /// Same network, or a container and its network's gateway.
    Passed = 0,
    /// Source and destination are both known, in different networks.
    OtherNetwork = 1,
    /// The source is neither a member nor a gateway.
    UnknownSource = 2,
    /// The destination is neither a member of the source's network nor its gateway.
    UnknownDestination = 3,
    /// Not IPv4 or ARP (private networks are IPv4-only).
    NotIpv4 = 4,
}

pub const PN_REASON_COUNT: u32 = 5;

impl PnReason {
    pub const ALL: [PnReason; PN_REASON_COUNT as usize] = [
        PnReason::Passed,
        PnReason::OtherNetwork,
        PnReason::UnknownSource,
        PnReason::UnknownDestination,
        PnReason::NotIpv4,
    ];

    pub const fn name(self) -> &'static str {
        match self {
            PnReason::Passed => "passed",
            PnReason::OtherNetwork => "other_network",
            PnReason::UnknownSource => "unknown_source",
            PnReason::UnknownDestination => "unknown_destination",
            PnReason::NotIpv4 => "not_ipv4",
        }
    }
}

/// Key of the gateway table: a gateway address serves a network. Several networks may share
/// one gateway address (their common gateway), hence the pair.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct GatewayKey {
    pub addr: [u8; 4],
    pub network: u32,
}

const _: () = assert!(core::mem::size_of::<GatewayKey>() == 8);

/// The IPv4 endpoints of a frame on the private side: IPv4 source/destination, or ARP sender
/// and target protocol addresses. `None` for anything else.
#[inline(always)]
pub fn endpoints<P: PacketBytes + ?Sized>(p: &P) -> Option<([u8; 4], [u8; 4])> {
    let eth = p.load::<14>(0)?;
    match u16::from_be_bytes([eth[12], eth[13]]) {
        0x0800 => {
            let h = p.load::<20>(14)?;
            if h[0] >> 4 != 4 {
                return None;
            }
            Some(([h[12], h[13], h[14], h[15]], [h[16], h[17], h[18], h[19]]))
        }
        0x0806 => {
            // htype(2) ptype(2) hlen(1) plen(1) oper(2) sha(6) spa(4) tha(6) tpa(4), for
            // Ethernet/IPv4 only.
            let a = p.load::<28>(14)?;
            if a[0..6] != [0, 1, 8, 0, 6, 4] {
                return None;
            }
            Some(([a[14], a[15], a[16], a[17]], [a[24], a[25], a[26], a[27]]))
        }
        _ => None,
    }
}

/// What the program knows about a packet's two endpoints.
pub struct Lookup {
    /// Network of the source, if it is a member.
    pub src_network: Option<u32>,
    /// Network of the destination, if it is a member.
    pub dst_network: Option<u32>,
    /// The destination is the gateway of the source's network.
    pub dst_is_gateway_of_src: bool,
    /// The source is the gateway of the destination's network.
    pub src_is_gateway_of_dst: bool,
}

#[inline(always)]
pub fn decide(l: &Lookup) -> PnReason {
    match (l.src_network, l.dst_network) {
        (Some(s), Some(d)) if s == d => PnReason::Passed,
        (Some(_), Some(_)) => PnReason::OtherNetwork,
        (Some(_), None) if l.dst_is_gateway_of_src => PnReason::Passed,
        (Some(_), None) => PnReason::UnknownDestination,
        (None, Some(_)) if l.src_is_gateway_of_dst => PnReason::Passed,
        (None, _) => PnReason::UnknownSource,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn l(src: Option<u32>, dst: Option<u32>, dgw: bool, sgw: bool) -> Lookup {
        Lookup {
            src_network: src,
            dst_network: dst,
            dst_is_gateway_of_src: dgw,
            src_is_gateway_of_dst: sgw,
        }
    }

    #[test]
    fn decisions() {
        assert_eq!(decide(&l(Some(1), Some(1), false, false)), PnReason::Passed);
        assert_eq!(
            decide(&l(Some(1), Some(2), false, false)),
            PnReason::OtherNetwork
        );
        assert_eq!(
            decide(&l(Some(1), None, true, false)),
            PnReason::Passed,
            "to own gateway"
        );
        assert_eq!(
            decide(&l(Some(1), None, false, false)),
            PnReason::UnknownDestination
        );
        assert_eq!(
            decide(&l(None, Some(1), false, true)),
            PnReason::Passed,
            "gateway answers"
        );
        assert_eq!(
            decide(&l(None, Some(1), false, false)),
            PnReason::UnknownSource
        );
        assert_eq!(
            decide(&l(None, None, false, false)),
            PnReason::UnknownSource
        );
    }

    #[test]
    fn endpoints_of_ipv4_and_arp() {
        use crate::golden;
        let f = golden::v4_tcp([10, 240, 0, 2], [10, 240, 0, 3], 3000);
        assert_eq!(endpoints(&f[..]), Some(([10, 240, 0, 2], [10, 240, 0, 3])));
        let arp = golden::eth(
            0x0806,
            &[],
            &[
                0, 1, 8, 0, 6, 4, 0, 1, 2, 0, 0, 0, 0, 2, 10, 240, 0, 2, 0, 0, 0, 0, 0, 0, 10, 240,
                0, 1,
            ],
        );
        assert_eq!(
            endpoints(&arp[..]),
            Some(([10, 240, 0, 2], [10, 240, 0, 1]))
        );
        assert_eq!(endpoints(&arp[..30]), None, "truncated ARP");
        let v6 = golden::v6_tcp(golden::CLIENT6, golden::EDGE6, 443);
        assert_eq!(endpoints(&v6[..]), None);
    }
}
