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
            let [a, b, c, d] = addr.v6_words();
            let (hi, lo) = (join(a, b), join(c, d));
            let n = (self.v6_len as usize).min(V6);
            let mut i = 0;
            while i < n {
                let [net_hi, net_lo, mask_hi, mask_lo] = self.v6[i];
                if hi & mask_hi == net_hi && lo & mask_lo == net_lo {
                    return true;
                }
                i += 1;
            }
            false
        } else {
            // Compared as u64: BPF registers are 64-bit, and u32 compares would cost LLVM a
            // zero-extension of each operand.
            let a = addr.v4_word() as u64;
            let n = (self.v4_len as usize).min(V4);
            let mut i = 0;
            while i < n {
                let [net, mask] = self.v4[i];
                if a & mask as u64 == net as u64 {
                    return true;
                }
                i += 1;
            }
            false
        }
    }
}

/// Two words in memory order as the `u64` of their eight bytes (`u64::from_ne_bytes`).
#[inline(always)]
fn join(a: u32, b: u32) -> u64 {
    let (a, b) = (a.to_ne_bytes(), b.to_ne_bytes());
    u64::from_ne_bytes([a[0], a[1], a[2], a[3], b[0], b[1], b[2], b[3]])
}

#[inline(always)]
fn split(a: &[u8; 16]) -> (u64, u64) {
    let mut hi = [0u8; 8];
    let mut lo = [0u8; 8];
    hi.copy_from_slice(&a[..8]);
    lo.copy_from_slice(&a[8..]);
    (u64::from_ne_bytes(hi), u64::from_ne_bytes(lo))
}

// ---- the IPv4 denylist's /24 index ------------------------------------------------------------

/// Two bits per /24 ("block") of the IPv4 space, 32 blocks per `u64` word of the index map
/// ([`crate::maps::DENY_V4_INDEX`]): what the IPv4 denylist holds for the block. Most sources
/// get their answer from this one array read, whatever the size of the list; only blocks that
/// hold prefixes longer than /24 (and no shorter prefix covering them) need the exact lookup.
///
/// Nothing in the list touches this /24: not denied.
pub const BLOCK_CLEAN: u8 = 0;
/// Prefixes longer than /24 lie inside the block: the trie answers.
pub const BLOCK_PARTIAL: u8 = 2;
/// A prefix of /24 or shorter covers the whole block: denied.
pub const BLOCK_ALL: u8 = 3;

pub const V4_BLOCKS: u32 = 1 << 24;
pub const BLOCKS_PER_WORD: u32 = 32;
/// Entries (`u64` words) of the index map: 4 MiB.
pub const V4_INDEX_WORDS: u32 = V4_BLOCKS / BLOCKS_PER_WORD;

/// The /24 an IPv4 address lies in, as a number: `a.b.c.0/24` is `a << 16 | b << 8 | c`, so the
/// blocks of a prefix are consecutive numbers.
#[inline(always)]
pub const fn block_of(addr: &Addr) -> u32 {
    u32::from_be(addr.v4_word()) >> 8
}

/// The blocks a prefix of `prefix_len` at `network` touches (one for /24 and longer).
pub fn blocks_of_prefix(network: [u8; 4], prefix_len: u8) -> core::ops::Range<u32> {
    let span = 1u32 << (24 - prefix_len.min(24));
    let first = u32::from_be_bytes([0, network[0], network[1], network[2]]) & !(span - 1);
    first..first + span
}

/// The state of `block` in the index word that holds it (word `block / BLOCKS_PER_WORD`).
#[inline(always)]
pub const fn block_state(word: u64, block: u32) -> u8 {
    ((word >> ((block % BLOCKS_PER_WORD) * 2)) & 3) as u8
}

/// The strength order of the states, which is also their numeric order: a block whose state is
/// at least what its prefixes need never misses one of them.
#[inline(always)]
pub const fn state_for_prefix_len(prefix_len: u8) -> u8 {
    if prefix_len <= 24 {
        BLOCK_ALL
    } else {
        BLOCK_PARTIAL
    }
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
    fn block_index_layout() {
        let a = Addr::v4([198, 51, 100, 7]);
        assert_eq!(block_of(&a), 198 << 16 | 51 << 8 | 100);
        assert_eq!(blocks_of_prefix([198, 51, 100, 0], 22).count(), 4);
        for (i, b) in blocks_of_prefix([198, 51, 100, 0], 22).enumerate() {
            let inside = Addr::v4([198, 51, 100 + i as u8, 9]);
            assert_eq!(b, block_of(&inside));
        }
        assert!(blocks_of_prefix([198, 51, 100, 128], 25).eq([block_of(&a)]));
        assert_eq!(blocks_of_prefix([0; 4], 0).count(), V4_BLOCKS as usize);
        let block = block_of(&a);
        let word = (BLOCK_ALL as u64) << ((block % BLOCKS_PER_WORD) * 2);
        assert_eq!(block_state(word, block), BLOCK_ALL);
        assert_eq!(block_state(word, block + 1), BLOCK_CLEAN);
        assert_eq!(block_state(u64::MAX, 31), 3);
        assert_eq!(V4_INDEX_WORDS as u64 * 8, 4 << 20);
        const { assert!(BLOCK_CLEAN < BLOCK_PARTIAL && BLOCK_PARTIAL < BLOCK_ALL) };
    }

    #[test]
    fn bounded() {
        let mut p: Prefixes<2, 1> = Prefixes::EMPTY;
        assert!(p.add_v4([10, 0, 0, 1], 32) && p.add_v4([10, 0, 0, 2], 32));
        assert!(!p.add_v4([10, 0, 0, 3], 32));
        assert!(p.add_v6([0xfd; 16], 8) && !p.add_v6([0xfe; 16], 8));
    }
}
