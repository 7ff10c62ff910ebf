//! Shared layouts of the tc bandwidth limiter.
//!
//! Buckets are keyed by the container's address (IPv4-mapped IPv6 for IPv4, as in
//! [`crate::flow`]) and the direction. A container needs no registration: the first packet from
//! or to an address inside the configured container CIDRs creates its buckets in an LRU map, so
//! address churn can never exhaust it.

use crate::{bucket::BucketParams, packet::Addr, prefixes::Prefixes};

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
    /// Container addresses; anything outside is never limited.
    pub containers: Prefixes<MAX_CONTAINER_CIDRS_V4, MAX_CONTAINER_CIDRS_V6>,
    /// How many entries [`crate::maps::LIMIT_OVERRIDES`] holds. With none (the usual case) the
    /// program skips that lookup, a third of its per-packet cost. Userspace writes overrides
    /// before this count and removes them after it, so a packet never misses one that is in
    /// force.
    pub overrides: u32,
    pub _pad: u32,
}

const _: () = assert!(core::mem::size_of::<LimiterConfig>() == 24 + 8 + 128 + 128 + 8);

impl LimiterConfig {
    pub const EMPTY: LimiterConfig = LimiterConfig {
        default: BucketParams {
            rate: 0,
            burst: 0,
            tau_ns: 0,
        },
        containers: Prefixes::EMPTY,
        overrides: 0,
        _pad: 0,
    };

    /// Whether `addr` is a container address (inside one of the container ranges).
    #[inline(always)]
    pub fn is_container(&self, addr: &Addr) -> bool {
        self.containers.contains(addr)
    }
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
        assert!(c.containers.add_v4([172, 17, 0, 0], 16));
        assert!(c.is_container(&Addr::v4([172, 17, 0, 2])));
        assert!(c.is_container(&Addr::v4([172, 17, 255, 255])));
        assert!(!c.is_container(&Addr::v4([172, 18, 0, 1])));
        let mut v6 = [0u8; 16];
        v6[0] = 0xfd;
        assert!(c.containers.add_v6(v6, 8));
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
