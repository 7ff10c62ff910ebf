//! Packet memory behind `netguard_common::packet::PacketBytes`.
//!
//! XDP reads its frame straight from packet memory. tc programs get an skb, whose headers are
//! nearly always in the linear area but need not be (a GSO packet may keep part of them in its
//! fragments): they read the linear area directly too and go through `bpf_skb_load_bytes` only
//! for bytes beyond it ([`parse_skb`], [`SkbBytes`]). A helper call per header cost the tc
//! programs about 90 ns per packet over direct loads.

use aya_ebpf::programs::{TcContext, XdpContext};
use netguard_common::packet::{self, Frame, Header, MAX_OFFSET, PacketBytes};

/// Direct packet access: every load is checked against `data_end` the way the verifier wants
/// it (`start + off + N > end`), with `off` bounded first so its range is known.
///
/// `WHOLE`: the readable area is the whole frame (XDP), so the frame's length is `end - start`.
/// Otherwise (an skb's linear area) the frame is `len` bytes, of which only `end - start` are
/// readable here. A constant rather than a stored length for XDP: with the length derived from
/// `end`, LLVM folds the parser's length checks into its bounds checks (a stored one made the
/// XDP program a third longer).
pub struct DirectBytes<const WHOLE: bool> {
    start: usize,
    end: usize,
    len: usize,
}

/// An XDP frame.
pub type XdpBytes = DirectBytes<true>;
/// The linear area of an skb.
pub type SkbLinear = DirectBytes<false>;

impl XdpBytes {
    #[inline(always)]
    pub fn xdp(ctx: &XdpContext) -> Self {
        Self {
            start: ctx.data(),
            end: ctx.data_end(),
            len: 0,
        }
    }
}

impl SkbLinear {
    /// The skb's linear area, with its length reported as the whole frame's, so length checks
    /// see the real frame; a header that reaches past the area reads as missing.
    #[inline(always)]
    pub fn skb_linear(ctx: &TcContext) -> Self {
        Self {
            start: ctx.data(),
            end: ctx.data_end(),
            len: ctx.len() as usize,
        }
    }
}

impl<const WHOLE: bool> DirectBytes<WHOLE> {
    /// Whether the `n` bytes at `off` lie inside the readable area.
    #[inline(always)]
    fn holds(&self, off: usize, n: usize) -> bool {
        off <= MAX_OFFSET && self.start + off + n <= self.end
    }

    /// The `N` bytes at `off` if they lie in the readable area.
    #[inline(always)]
    fn copy<const N: usize>(&self, off: usize) -> Option<[u8; N]> {
        if !self.holds(off, N) {
            return None;
        }
        // SAFETY: the N bytes at start+off lie before data_end (checked above).
        Some(unsafe { core::ptr::read_unaligned((self.start + off) as *const [u8; N]) })
    }
}

impl<const WHOLE: bool> PacketBytes for DirectBytes<WHOLE> {
    type Header<const N: usize> = DirectHeader<N>;

    #[inline(always)]
    fn len(&self) -> usize {
        if WHOLE {
            self.end - self.start
        } else {
            self.len
        }
    }

    #[inline(always)]
    fn load<const N: usize>(&self, off: usize) -> Option<[u8; N]> {
        self.copy::<N>(off)
    }

    #[inline(always)]
    fn header<const N: usize>(&self, off: usize) -> Option<DirectHeader<N>> {
        if !self.holds(off, N) {
            return None;
        }
        Some(DirectHeader {
            at: self.start + off,
        })
    }
}

/// The frame of an skb: parsed from its linear area, and through `bpf_skb_load_bytes` only
/// when a header reached past that area (see `packet::parse_prefix_first`).
#[inline(always)]
pub fn parse_skb(ctx: &TcContext) -> Frame {
    let whole = SkbBytes::new(ctx);
    let linear = &whole.linear;
    packet::parse_prefix_first(linear, linear.end - linear.start, &whole)
}

/// `N` bytes of packet memory at `at`, checked against `data_end` by [`DirectBytes::header`].
///
/// Fields are read with one load of their own width. Rust's unaligned reads would be split into
/// byte loads (the BPF backend assumes strict alignment), but packet fields sit at any offset
/// (an IPv4 address at 26), so the loads are written as BPF instructions: the kernel allows
/// unaligned packet access on the architectures it JIT-compiles XDP for without strict
/// alignment (x86-64, arm64), and the verifier still checks every access against the range the
/// bounds check proved.
#[derive(Clone, Copy)]
pub struct DirectHeader<const N: usize> {
    at: usize,
}

impl<const N: usize> Header<N> for DirectHeader<N> {
    #[inline(always)]
    fn u8_at<const O: usize>(&self) -> u8 {
        const { assert!(O < N) };
        // SAFETY: O < N bytes past `at`, inside the checked header.
        unsafe { core::ptr::read((self.at + O) as *const u8) }
    }

    #[inline(always)]
    fn be16_at<const O: usize>(&self) -> u16 {
        const { assert!(O + 2 <= N) };
        let v: u64;
        // SAFETY: a 2-byte load inside the checked header; no side effects.
        unsafe {
            core::arch::asm!(
                "{v} = *(u16 *)({p} + {o})",
                p = in(reg) self.at,
                o = const O,
                v = lateout(reg) v,
                options(pure, readonly, nostack, preserves_flags),
            );
        }
        // SAFETY: BPF loads zero-extend: the upper bits are clear (saves LLVM masking them).
        unsafe { core::hint::assert_unchecked(v <= u64::from(u16::MAX)) };
        u16::from_be(v as u16)
    }

    #[inline(always)]
    fn ne32_at<const O: usize>(&self) -> u32 {
        const { assert!(O + 4 <= N) };
        let v: u64;
        // SAFETY: a 4-byte load inside the checked header; no side effects.
        unsafe {
            core::arch::asm!(
                "{v} = *(u32 *)({p} + {o})",
                p = in(reg) self.at,
                o = const O,
                v = lateout(reg) v,
                options(pure, readonly, nostack, preserves_flags),
            );
        }
        // SAFETY: BPF loads zero-extend: the upper bits are clear (saves LLVM masking them).
        unsafe { core::hint::assert_unchecked(v <= u64::from(u32::MAX)) };
        v as u32
    }
}

/// skb access for programs that read a few fixed spans: the linear area directly, and
/// `bpf_skb_load_bytes` (which also reads non-linear data) for bytes beyond it.
pub struct SkbBytes<'a> {
    ctx: &'a TcContext,
    linear: SkbLinear,
}

impl<'a> SkbBytes<'a> {
    #[inline(always)]
    pub fn new(ctx: &'a TcContext) -> Self {
        Self {
            ctx,
            linear: SkbLinear::skb_linear(ctx),
        }
    }
}

impl PacketBytes for SkbBytes<'_> {
    type Header<const N: usize> = [u8; N];

    #[inline(always)]
    fn len(&self) -> usize {
        self.linear.len
    }

    #[inline(always)]
    fn load<const N: usize>(&self, off: usize) -> Option<[u8; N]> {
        if off > MAX_OFFSET {
            return None;
        }
        if let Some(bytes) = self.linear.copy::<N>(off) {
            return Some(bytes);
        }
        self.ctx.load::<[u8; N]>(off).ok()
    }

    #[inline(always)]
    fn header<const N: usize>(&self, off: usize) -> Option<[u8; N]> {
        self.load::<N>(off)
    }
}
