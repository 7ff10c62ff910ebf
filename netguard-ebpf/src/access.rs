//! Packet memory behind `netguard_common::packet::PacketBytes`.

use aya_ebpf::programs::{TcContext, XdpContext};
use netguard_common::packet::{Header, MAX_OFFSET, PacketBytes};

/// Direct packet access: every load is checked against `data_end` the way the verifier wants
/// it (`start + off + N > end`), with `off` bounded first so its range is known.
pub struct XdpBytes {
    start: usize,
    end: usize,
}

impl XdpBytes {
    #[inline(always)]
    pub fn new(ctx: &XdpContext) -> Self {
        Self {
            start: ctx.data(),
            end: ctx.data_end(),
        }
    }

    /// Whether the `n` bytes at `off` lie inside the packet.
    #[inline(always)]
    fn holds(&self, off: usize, n: usize) -> bool {
        off <= MAX_OFFSET && self.start + off + n <= self.end
    }
}

impl PacketBytes for XdpBytes {
    type Header<const N: usize> = XdpHeader<N>;

    #[inline(always)]
    fn len(&self) -> usize {
        self.end - self.start
    }

    #[inline(always)]
    fn load<const N: usize>(&self, off: usize) -> Option<[u8; N]> {
        if !self.holds(off, N) {
            return None;
        }
        // SAFETY: the N bytes at start+off lie before data_end (checked above).
        Some(unsafe { core::ptr::read_unaligned((self.start + off) as *const [u8; N]) })
    }

    #[inline(always)]
    fn header<const N: usize>(&self, off: usize) -> Option<XdpHeader<N>> {
        if !self.holds(off, N) {
            return None;
        }
        Some(XdpHeader {
            at: self.start + off,
        })
    }
}

/// `N` bytes of packet memory at `at`, checked against `data_end` by [`XdpBytes::header`].
///
/// Fields are read with one load of their own width. Rust's unaligned reads would be split into
/// byte loads (the BPF backend assumes strict alignment), but packet fields sit at any offset
/// (an IPv4 address at 26), so the loads are written as BPF instructions: the kernel allows
/// unaligned packet access on the architectures it JIT-compiles XDP for without strict
/// alignment (x86-64, arm64), and the verifier still checks every access against the range the
/// bounds check proved.
#[derive(Clone, Copy)]
pub struct XdpHeader<const N: usize> {
    at: usize,
}

impl<const N: usize> Header<N> for XdpHeader<N> {
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

/// skb access through `bpf_skb_load_bytes`, which also reads non-linear (GSO) data.
pub struct SkbBytes<'a> {
    ctx: &'a TcContext,
}

impl<'a> SkbBytes<'a> {
    #[inline(always)]
    pub fn new(ctx: &'a TcContext) -> Self {
        Self { ctx }
    }
}

impl PacketBytes for SkbBytes<'_> {
    type Header<const N: usize> = [u8; N];

    #[inline(always)]
    fn len(&self) -> usize {
        self.ctx.len() as usize
    }

    #[inline(always)]
    fn load<const N: usize>(&self, off: usize) -> Option<[u8; N]> {
        if off > MAX_OFFSET {
            return None;
        }
        self.ctx.load::<[u8; N]>(off).ok()
    }

    #[inline(always)]
    fn header<const N: usize>(&self, off: usize) -> Option<[u8; N]> {
        self.load::<N>(off)
    }
}
