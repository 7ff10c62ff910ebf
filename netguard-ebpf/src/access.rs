//! Packet memory behind `netguard_common::packet::PacketBytes`.

use aya_ebpf::programs::{TcContext, XdpContext};
use netguard_common::packet::{MAX_OFFSET, PacketBytes};

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
}

impl PacketBytes for XdpBytes {
    #[inline(always)]
    fn len(&self) -> usize {
        self.end - self.start
    }

    #[inline(always)]
    fn load<const N: usize>(&self, off: usize) -> Option<[u8; N]> {
        if off > MAX_OFFSET {
            return None;
        }
        if self.start + off + N > self.end {
            return None;
        }
        // SAFETY: the N bytes at start+off lie before data_end (checked above).
        Some(unsafe { core::ptr::read_unaligned((self.start + off) as *const [u8; N]) })
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
}
