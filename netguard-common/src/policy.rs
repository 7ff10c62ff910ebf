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
/// [`FilterConfig::trusted`] holds the whole trusted list, so the trusted tries are not looked
/// up. Set when the list fits ([`MAX_TRUSTED_INLINE_V4`], [`MAX_TRUSTED_INLINE_V6`]).
pub const FLAG_TRUSTED_INLINE: u32 = 1 << 7;

pub const MAX_INGRESS_V4: usize = 64;
pub const MAX_INGRESS_V6: usize = 16;
/// Trusted lists up to this size sit inline in the policy value: a few compares instead of a
/// trie lookup on every packet. Longer lists are looked up in the tries.
pub const MAX_TRUSTED_INLINE_V4: usize = 16;
pub const MAX_TRUSTED_INLINE_V6: usize = 4;
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
    /// The trusted sources when they fit (and [`FLAG_TRUSTED_INLINE`] is set); empty otherwise.
    pub trusted: Prefixes<MAX_TRUSTED_INLINE_V4, MAX_TRUSTED_INLINE_V6>,
    /// Bit `p` set = TCP destination port `p` allowed.
    pub tcp_ports: [u8; PORT_BITMAP_BYTES],
}

const _: () = assert!(
    core::mem::size_of::<FilterConfig>()
        == 24 + (8 + 512 + 512) + (8 + 128 + 128) + PORT_BITMAP_BYTES
);

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
        trusted: Prefixes::EMPTY,
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

    /// Puts the trusted list inline when it fits: sets [`FLAG_TRUSTED_INLINE`] and returns
    /// `true`; otherwise leaves the inline table empty and the flag clear (the tries answer).
    /// Entries are `(network bytes, prefix length)`.
    pub fn set_trusted_inline(&mut self, v4: &[([u8; 4], u8)], v6: &[([u8; 16], u8)]) -> bool {
        self.trusted = Prefixes::EMPTY;
        self.flags &= !FLAG_TRUSTED_INLINE;
        if v4.len() > MAX_TRUSTED_INLINE_V4 || v6.len() > MAX_TRUSTED_INLINE_V6 {
            return false;
        }
        let mut table = Prefixes::EMPTY;
        let fits = v4.iter().all(|(a, len)| table.add_v4(*a, *len))
            && v6.iter().all(|(a, len)| table.add_v6(*a, *len));
        if fits {
            self.trusted = table;
            self.flags |= FLAG_TRUSTED_INLINE;
        }
        fits
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
    fn trusted_inline_only_when_it_fits() {
        let mut c = FilterConfig::EMPTY;
        assert!(c.set_trusted_inline(&[([192, 0, 2, 0], 24)], &[]));
        assert!(c.has(FLAG_TRUSTED_INLINE));
        assert!(c.trusted.contains(&Addr::v4([192, 0, 2, 50])));
        let many = [([10, 0, 0, 0], 8); MAX_TRUSTED_INLINE_V4 + 1];
        assert!(!c.set_trusted_inline(&many, &[]));
        assert!(!c.has(FLAG_TRUSTED_INLINE));
        assert!(c.trusted.is_empty(), "no stale inline entries");
        assert!(!c.set_trusted_inline(&[([10, 0, 0, 0], 33)], &[]));
        assert!(!c.has(FLAG_TRUSTED_INLINE));
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
