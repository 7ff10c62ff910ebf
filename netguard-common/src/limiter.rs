//! Shared layouts of the tc bandwidth limiter.
//!
//! Buckets are keyed by the container's address (IPv4-mapped IPv6 for IPv4, as in
//! [`crate::flow`]) and the direction. A container needs no registration: the first packet from
//! or to an address inside the configured container CIDRs creates its buckets in an LRU map, so
//! address churn can never exhaust it.

use crate::{bucket::BucketParams, packet::Addr};

/// Packets from the container (tc ingress on its host-side interface).
pub const DIR_UPLOAD: u8 = 0;
/// Packets to the container (tc egress on its host-side interface).
pub const DIR_DOWNLOAD: u8 = 1;

pub const MAX_CONTAINER_CIDRS_V4: usize = 16;
pub const MAX_CONTAINER_CIDRS_V6: usize = 4;

/// The limiter's defaults and container ranges: one array value ([`crate::maps::LIMIT_CONFIG`]).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LimiterConfig {
    pub default: BucketParams,
    pub cidrs_v4_len: u32,
    pub cidrs_v6_len: u32,
    /// `(network, mask)` as `from_ne_bytes` of network-order bytes, like the XDP ingress table.
    pub cidrs_v4: [[u32; 2]; MAX_CONTAINER_CIDRS_V4],
    /// `[network_hi, network_lo, mask_hi, mask_lo]`.
    pub cidrs_v6: [[u64; 4]; MAX_CONTAINER_CIDRS_V6],
}

const _: () = assert!(core::mem::size_of::<LimiterConfig>() == 24 + 8 + 128 + 128);

impl LimiterConfig {
    pub const EMPTY: LimiterConfig = LimiterConfig {
        default: BucketParams {
            rate: 0,
            burst: 0,
            tau_ns: 0,
        },
        cidrs_v4_len: 0,
        cidrs_v6_len: 0,
        cidrs_v4: [[0; 2]; MAX_CONTAINER_CIDRS_V4],
        cidrs_v6: [[0; 4]; MAX_CONTAINER_CIDRS_V6],
    };

    pub fn add_cidr_v4(&mut self, addr: [u8; 4], prefix_len: u8) -> bool {
        let i = self.cidrs_v4_len as usize;
        if i >= MAX_CONTAINER_CIDRS_V4 || prefix_len > 32 {
            return false;
        }
        let mask = if prefix_len == 0 {
            0
        } else {
            u32::MAX << (32 - prefix_len)
        };
        let mask = u32::from_ne_bytes(mask.to_be_bytes());
        self.cidrs_v4[i] = [u32::from_ne_bytes(addr) & mask, mask];
        self.cidrs_v4_len += 1;
        true
    }

    pub fn add_cidr_v6(&mut self, addr: [u8; 16], prefix_len: u8) -> bool {
        let i = self.cidrs_v6_len as usize;
        if i >= MAX_CONTAINER_CIDRS_V6 || prefix_len > 128 {
            return false;
        }
        let mask = if prefix_len == 0 {
            0
        } else {
            u128::MAX << (128 - prefix_len)
        }
        .to_be_bytes();
        let (mh, ml) = split(&mask);
        let (h, l) = split(&addr);
        self.cidrs_v6[i] = [h & mh, l & ml, mh, ml];
        self.cidrs_v6_len += 1;
        true
    }

    /// Whether `addr` is a container address (inside one of the container CIDRs).
    #[inline(always)]
    pub fn is_container(&self, addr: &Addr) -> bool {
        if addr.is_v6() {
            let (h, l) = split(addr.v6_octets());
            let mut i = 0;
            while i < MAX_CONTAINER_CIDRS_V6 && i < self.cidrs_v6_len as usize {
                let [nh, nl, mh, ml] = self.cidrs_v6[i];
                if h & mh == nh && l & ml == nl {
                    return true;
                }
                i += 1;
            }
            false
        } else {
            let a = u32::from_ne_bytes(addr.v4_octets());
            let mut i = 0;
            while i < MAX_CONTAINER_CIDRS_V4 && i < self.cidrs_v4_len as usize {
                let [net, mask] = self.cidrs_v4[i];
                if a & mask == net {
                    return true;
                }
                i += 1;
            }
            false
        }
    }
}

#[inline(always)]
fn split(a: &[u8; 16]) -> (u64, u64) {
    let mut h = [0u8; 8];
    let mut l = [0u8; 8];
    h.copy_from_slice(&a[..8]);
    l.copy_from_slice(&a[8..]);
    (u64::from_ne_bytes(h), u64::from_ne_bytes(l))
}

/// Key of one bucket.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct BucketKey {
    /// IPv6, or IPv4-mapped IPv6.
    pub addr: [u8; 16],
    pub direction: u8,
    /// Zero: padding takes part in the hash.
    pub _pad: [u8; 7],
}

const _: () = assert!(core::mem::size_of::<BucketKey>() == 24);

/// One bucket and its counters. `tat` is updated with compare-and-swap, the counters with
/// atomic adds, so both CPUs can charge the same container at once without losing updates.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct BucketState {
    /// Theoretical arrival time, see [`crate::bucket`].
    pub tat: u64,
    pub passed_bytes: u64,
    pub passed_packets: u64,
    pub dropped_bytes: u64,
    pub dropped_packets: u64,
}

const _: () = assert!(core::mem::size_of::<BucketState>() == 40);

/// Key of a per-container override: the address, IPv4-mapped for IPv4.
pub type OverrideKey = [u8; 16];

#[inline(always)]
pub fn bucket_key(addr: &Addr, direction: u8) -> BucketKey {
    BucketKey {
        addr: crate::flow::mapped(addr),
        direction,
        _pad: [0; 7],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn container_ranges() {
        let mut c = LimiterConfig::EMPTY;
        assert!(
            !c.is_container(&Addr::v4([172, 17, 0, 2])),
            "no ranges, no containers"
        );
        assert!(c.add_cidr_v4([172, 17, 0, 0], 16));
        assert!(c.is_container(&Addr::v4([172, 17, 0, 2])));
        assert!(c.is_container(&Addr::v4([172, 17, 255, 255])));
        assert!(!c.is_container(&Addr::v4([172, 18, 0, 1])));
        let mut v6 = [0u8; 16];
        v6[0] = 0xfd;
        assert!(c.add_cidr_v6(v6, 8));
        v6[15] = 7;
        assert!(c.is_container(&Addr::v6(v6)));
        assert!(!c.is_container(&Addr::v6([0x20; 16])));
    }

    #[test]
    fn keys_differ_by_direction_and_family() {
        let a = Addr::v4([172, 17, 0, 2]);
        assert_ne!(bucket_key(&a, DIR_UPLOAD), bucket_key(&a, DIR_DOWNLOAD));
        let mut v6 = [0u8; 16];
        v6[12..].copy_from_slice(&[172, 17, 0, 2]);
        assert_ne!(
            bucket_key(&a, DIR_UPLOAD),
            bucket_key(&Addr::v6(v6), DIR_UPLOAD)
        );
    }
}
