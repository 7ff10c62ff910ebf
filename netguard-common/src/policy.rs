//! The XDP policy as one map value ([`crate::maps::CONFIG`]).
//!
//! Small, per-packet data (flags, ingress prefixes, the allowed-port bitmap) sits inline so the
//! hot path does one array lookup for all of it; large sets (denylist, trusted) live in LPM tries.

use crate::{packet::Addr, prefixes::Prefixes};

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

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FilterConfig {
    pub flags: u32,
    pub _pad: u32,
    pub flow_timeout_tcp_ns: u64,
    pub flow_timeout_other_ns: u64,
    /// Guarded destinations; empty guards every destination.
    pub ingress: Prefixes<MAX_INGRESS_V4, MAX_INGRESS_V6>,
    /// Bit `p` set = TCP destination port `p` allowed.
    pub tcp_ports: [u8; PORT_BITMAP_BYTES],
}

const _: () =
    assert!(core::mem::size_of::<FilterConfig>() == 24 + 8 + 512 + 512 + PORT_BITMAP_BYTES);

impl Default for FilterConfig {
    fn default() -> Self {
        Self::EMPTY
    }
}

impl FilterConfig {
    /// All zero: nothing configured. With no ingress prefixes every destination is guarded.
    pub const EMPTY: FilterConfig = FilterConfig {
        flags: 0,
        _pad: 0,
        flow_timeout_tcp_ns: 0,
        flow_timeout_other_ns: 0,
        ingress: Prefixes::EMPTY,
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

    /// With no ingress prefix configured at all, every destination is guarded.
    #[inline(always)]
    pub fn is_guarded(&self, dst: &Addr) -> bool {
        self.ingress.is_empty() || self.ingress.contains(dst)
    }
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
    fn empty_ingress_guards_everything() {
        let mut c = FilterConfig::EMPTY;
        assert!(c.is_guarded(&Addr::v4([1, 2, 3, 4])), "empty guards all");
        assert!(c.ingress.add_v4([203, 0, 113, 10], 32));
        assert!(c.is_guarded(&Addr::v4([203, 0, 113, 10])));
        assert!(!c.is_guarded(&Addr::v4([203, 0, 113, 11])));
        assert!(
            !c.is_guarded(&Addr::v6([0; 16])),
            "IPv6 is not guarded by IPv4 entries"
        );
    }
}
