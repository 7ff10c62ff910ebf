//! The XDP policy as one map value ([`crate::maps::CONFIG`]).
//!
//! Small, per-packet data (flags, ingress prefixes, the allowed-port bitmap) sits inline so the
//! hot path does one array lookup for all of it; large sets (denylist, trusted) live in LPM tries.

use crate::packet::Addr;

/// Drops are only counted (in the audit bank); every packet passes.
pub const FLAG_AUDIT: u32 = 1 << 0;
/// Destination-unreachable, time-exceeded and echo-request pass.
pub const FLAG_ICMP_ESSENTIAL: u32 = 1 << 1;
/// IPv6 is filtered like IPv4 instead of dropped.
pub const FLAG_IPV6_FILTER: u32 = 1 << 2;
/// The tries are known to be empty unless these are set: an empty trie is not looked up.
pub const FLAG_HAS_DENY_V4: u32 = 1 << 3;
pub const FLAG_HAS_DENY_V6: u32 = 1 << 4;
pub const FLAG_HAS_TRUSTED_V4: u32 = 1 << 5;
pub const FLAG_HAS_TRUSTED_V6: u32 = 1 << 6;

pub const MAX_INGRESS_V4: usize = 64;
pub const MAX_INGRESS_V6: usize = 16;
const PORT_BITMAP_BYTES: usize = 65_536 / 8;

/// Values in `ingress_*` are `(network, mask)` words built with `from_ne_bytes` from
/// network-order address bytes, so the kernel compares them without byte swapping.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FilterConfig {
    pub flags: u32,
    pub ingress_v4_len: u32,
    pub ingress_v6_len: u32,
    pub _pad: u32,
    pub flow_timeout_tcp_ns: u64,
    pub flow_timeout_other_ns: u64,
    pub ingress_v4: [[u32; 2]; MAX_INGRESS_V4],
    /// `[network_hi, network_lo, mask_hi, mask_lo]`.
    pub ingress_v6: [[u64; 4]; MAX_INGRESS_V6],
    /// Bit `p` set = TCP destination port `p` allowed.
    pub tcp_ports: [u8; PORT_BITMAP_BYTES],
}

const _: () = assert!(core::mem::size_of::<FilterConfig>() == 32 + 512 + 512 + PORT_BITMAP_BYTES);

impl Default for FilterConfig {
    fn default() -> Self {
        Self::EMPTY
    }
}

impl FilterConfig {
    /// All zero: nothing configured. With no ingress prefixes every destination is guarded.
    pub const EMPTY: FilterConfig = FilterConfig {
        flags: 0,
        ingress_v4_len: 0,
        ingress_v6_len: 0,
        _pad: 0,
        flow_timeout_tcp_ns: 0,
        flow_timeout_other_ns: 0,
        ingress_v4: [[0; 2]; MAX_INGRESS_V4],
        ingress_v6: [[0; 4]; MAX_INGRESS_V6],
        tcp_ports: [0; PORT_BITMAP_BYTES],
    };

    #[inline(always)]
    pub const fn has(&self, flag: u32) -> bool {
        self.flags & flag != 0
    }

    #[inline(always)]
    pub fn tcp_port_allowed(&self, port: u16) -> bool {
        self.tcp_ports[(port >> 3) as usize] & (1 << (port & 7)) != 0
    }

    pub fn allow_tcp_port(&mut self, port: u16) {
        self.tcp_ports[(port >> 3) as usize] |= 1 << (port & 7);
    }

    /// Adds an ingress prefix; `false` when the inline table is full.
    pub fn add_ingress_v4(&mut self, addr: [u8; 4], prefix_len: u8) -> bool {
        let i = self.ingress_v4_len as usize;
        if i >= MAX_INGRESS_V4 || prefix_len > 32 {
            return false;
        }
        let mask = if prefix_len == 0 {
            0
        } else {
            u32::MAX << (32 - prefix_len)
        }
        .to_be_bytes();
        let mask = u32::from_ne_bytes(mask);
        self.ingress_v4[i] = [u32::from_ne_bytes(addr) & mask, mask];
        self.ingress_v4_len += 1;
        true
    }

    pub fn add_ingress_v6(&mut self, addr: [u8; 16], prefix_len: u8) -> bool {
        let i = self.ingress_v6_len as usize;
        if i >= MAX_INGRESS_V6 || prefix_len > 128 {
            return false;
        }
        let mask = if prefix_len == 0 {
            0
        } else {
            u128::MAX << (128 - prefix_len)
        }
        .to_be_bytes();
        let (mask_hi, mask_lo) = split_ne(&mask);
        let (hi, lo) = split_ne(&addr);
        self.ingress_v6[i] = [hi & mask_hi, lo & mask_lo, mask_hi, mask_lo];
        self.ingress_v6_len += 1;
        true
    }

    /// With no ingress prefix configured at all, every destination is guarded.
    #[inline(always)]
    pub fn is_guarded(&self, dst: &Addr) -> bool {
        if self.ingress_v4_len == 0 && self.ingress_v6_len == 0 {
            return true;
        }
        if dst.is_v6() {
            let (hi, lo) = split_ne(dst.v6_octets());
            let mut i = 0;
            while i < MAX_INGRESS_V6 && i < self.ingress_v6_len as usize {
                let [net_hi, net_lo, mask_hi, mask_lo] = self.ingress_v6[i];
                if hi & mask_hi == net_hi && lo & mask_lo == net_lo {
                    return true;
                }
                i += 1;
            }
            false
        } else {
            let a = u32::from_ne_bytes(dst.v4_octets());
            let mut i = 0;
            while i < MAX_INGRESS_V4 && i < self.ingress_v4_len as usize {
                let [net, mask] = self.ingress_v4[i];
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
fn split_ne(a: &[u8; 16]) -> (u64, u64) {
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
    fn ports_bitmap() {
        let mut c = FilterConfig::EMPTY;
        for p in [0u16, 80, 443, 65535] {
            assert!(!c.tcp_port_allowed(p));
            c.allow_tcp_port(p);
            assert!(c.tcp_port_allowed(p));
        }
        assert!(!c.tcp_port_allowed(81));
        assert!(!c.tcp_port_allowed(442));
    }

    #[test]
    fn ingress_prefixes() {
        let mut c = FilterConfig::EMPTY;
        assert!(c.is_guarded(&Addr::v4([1, 2, 3, 4])), "empty guards all");
        assert!(c.add_ingress_v4([203, 0, 113, 10], 32));
        assert!(c.add_ingress_v4([198, 51, 100, 77], 24));
        assert!(c.is_guarded(&Addr::v4([203, 0, 113, 10])));
        assert!(!c.is_guarded(&Addr::v4([203, 0, 113, 11])));
        assert!(c.is_guarded(&Addr::v4([198, 51, 100, 1])));
        assert!(!c.is_guarded(&Addr::v6([0; 16])));
        let mut v6 = [0u8; 16];
        v6[..4].copy_from_slice(&[0x20, 0x01, 0x0d, 0xb8]);
        assert!(c.add_ingress_v6(v6, 32));
        v6[15] = 9;
        assert!(c.is_guarded(&Addr::v6(v6)));
        v6[3] = 0xb9;
        assert!(!c.is_guarded(&Addr::v6(v6)));
        assert!(!c.add_ingress_v4([0; 4], 33));
    }

    #[test]
    fn ingress_table_bounded() {
        let mut c = FilterConfig::EMPTY;
        for i in 0..MAX_INGRESS_V4 {
            assert!(c.add_ingress_v4([10, 0, 0, i as u8], 32));
        }
        assert!(!c.add_ingress_v4([10, 0, 1, 0], 32));
    }
}
