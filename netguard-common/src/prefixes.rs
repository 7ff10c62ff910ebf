//! A small inline table of IPv4 and IPv6 prefixes, stored inside a map value so the hot path
//! needs no extra lookup: the XDP program's guarded destinations and the limiter's container
//! ranges are both one of these.

use crate::packet::Addr;

/// Up to `V4` IPv4 and `V6` IPv6 prefixes. Entries are `(network, mask)` words built with
/// `from_ne_bytes` from network-order bytes, so the kernel compares them without byte swaps.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Prefixes<const V4: usize, const V6: usize> {
    pub v4_len: u32,
    pub v6_len: u32,
    pub v4: [[u32; 2]; V4],
    /// `[network_hi, network_lo, mask_hi, mask_lo]`.
    pub v6: [[u64; 4]; V6],
}

impl<const V4: usize, const V6: usize> Default for Prefixes<V4, V6> {
    fn default() -> Self {
        Self::EMPTY
    }
}

impl<const V4: usize, const V6: usize> Prefixes<V4, V6> {
    pub const EMPTY: Self = Self {
        v4_len: 0,
        v6_len: 0,
        v4: [[0; 2]; V4],
        v6: [[0; 4]; V6],
    };

    /// Adds a prefix; `false` when this family's table is full or the length is invalid.
    pub fn add_v4(&mut self, addr: [u8; 4], prefix_len: u8) -> bool {
        let i = self.v4_len as usize;
        if i >= V4 || prefix_len > 32 {
            return false;
        }
        let mask = if prefix_len == 0 {
            0
        } else {
            u32::MAX << (32 - prefix_len)
        };
        let mask = u32::from_ne_bytes(mask.to_be_bytes());
        self.v4[i] = [u32::from_ne_bytes(addr) & mask, mask];
        self.v4_len += 1;
        true
    }

    pub fn add_v6(&mut self, addr: [u8; 16], prefix_len: u8) -> bool {
        let i = self.v6_len as usize;
        if i >= V6 || prefix_len > 128 {
            return false;
        }
        let mask = if prefix_len == 0 {
            0
        } else {
            u128::MAX << (128 - prefix_len)
        }
        .to_be_bytes();
        let (mask_hi, mask_lo) = split(&mask);
        let (hi, lo) = split(&addr);
        self.v6[i] = [hi & mask_hi, lo & mask_lo, mask_hi, mask_lo];
        self.v6_len += 1;
        true
    }

    #[inline(always)]
    pub const fn is_empty(&self) -> bool {
        self.v4_len == 0 && self.v6_len == 0
    }

    /// Whether `addr` is inside one of the prefixes of its family.
    #[inline(always)]
    pub fn contains(&self, addr: &Addr) -> bool {
        if addr.is_v6() {
            let (hi, lo) = split(addr.v6_octets());
            let mut i = 0;
            while i < V6 && i < self.v6_len as usize {
                let [net_hi, net_lo, mask_hi, mask_lo] = self.v6[i];
                if hi & mask_hi == net_hi && lo & mask_lo == net_lo {
                    return true;
                }
                i += 1;
            }
            false
        } else {
            let a = u32::from_ne_bytes(addr.v4_octets());
            let mut i = 0;
            while i < V4 && i < self.v4_len as usize {
                let [net, mask] = self.v4[i];
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
    let mut hi = [0u8; 8];
    let mut lo = [0u8; 8];
    hi.copy_from_slice(&a[..8]);
    lo.copy_from_slice(&a[8..]);
    (u64::from_ne_bytes(hi), u64::from_ne_bytes(lo))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_by_family_and_length() {
        let mut p: Prefixes<4, 2> = Prefixes::EMPTY;
        assert!(p.is_empty());
        assert!(p.add_v4([203, 0, 113, 10], 32));
        assert!(p.add_v4([198, 51, 100, 77], 24), "host bits are masked off");
        assert!(p.contains(&Addr::v4([203, 0, 113, 10])));
        assert!(!p.contains(&Addr::v4([203, 0, 113, 11])));
        assert!(p.contains(&Addr::v4([198, 51, 100, 1])));
        assert!(!p.contains(&Addr::v6([0; 16])));
        let mut v6 = [0u8; 16];
        v6[..4].copy_from_slice(&[0x20, 0x01, 0x0d, 0xb8]);
        assert!(p.add_v6(v6, 32));
        v6[15] = 9;
        assert!(p.contains(&Addr::v6(v6)));
        v6[3] = 0xb9;
        assert!(!p.contains(&Addr::v6(v6)));
        assert!(!p.add_v4([0; 4], 33));
        assert!(p.add_v4([0; 4], 0), "/0 matches everything");
        assert!(p.contains(&Addr::v4([8, 8, 8, 8])));
    }

    #[test]
    fn bounded() {
        let mut p: Prefixes<2, 1> = Prefixes::EMPTY;
        assert!(p.add_v4([10, 0, 0, 1], 32) && p.add_v4([10, 0, 0, 2], 32));
        assert!(!p.add_v4([10, 0, 0, 3], 32));
        assert!(p.add_v6([0xfd; 16], 8) && !p.add_v6([0xfe; 16], 8));
    }
}
