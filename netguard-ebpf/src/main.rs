//! netguard's kernel programs: the XDP ingress filter and the tc egress flow tracker.
//!
//! The decision logic is `netguard_common::verdict::decide`, the same function the host tests
//! run; this file only binds it to packet memory and maps.
#![no_std]
#![no_main]
// Compare-and-swap and fetch-and-add on map values: `core::sync::atomic` has no BPF lowering.
#![feature(core_intrinsics)]
// Packet loads of a field's own width at any offset (see `access::DirectHeader`).
#![feature(asm_experimental_arch)]
#![expect(
    internal_features,
    reason = "core::intrinsics atomics are the only BPF atomics"
)]
#![expect(
    clippy::needless_borrows_for_generic_args,
    reason = "map keys are built once and lent, not copied, on the 512-byte BPF stack"
)]

mod access;
mod limiter;
mod private_net;

use aya_ebpf::{
    bindings::{TC_ACT_UNSPEC, xdp_action},
    btf_maps::{Array, ArrayOfMaps, LpmTrie, LruHashMap, PerCpuArray, lpm_trie::Key},
    helpers::bpf_ktime_get_ns,
    macros::{btf_map, classifier, xdp},
    programs::{TcContext, XdpContext},
};
use netguard_common::{
    flow::{self, FlowKey, FlowValue, REFRESH_INTERVAL_NS},
    maps::{
        BPF_F_MMAPABLE, DENY_BANK_SLOT, DENY_BANKS, DENY_V4_CAPACITY, DENY_V6_CAPACITY,
        FLOWS_CAPACITY, TRUSTED_CAPACITY,
    },
    packet::{Addr, FrameKind, IpPacket, L4, PacketBytes as _},
    policy::{FLAG_AUDIT, FilterConfig},
    prefixes::{BLOCK_ALL, BLOCK_CLEAN, BLOCKS_PER_WORD, V4_INDEX_WORDS, block_of, block_state},
    reason::{COUNTER_SLOTS, Counter, REASON_COUNT, Reason},
    verdict::{self, Tables},
};

use crate::access::{XdpBytes, parse_skb};

// Map statics carry the names in `netguard_common::maps`; a userspace test checks they match.
#[btf_map]
static NG_CONFIG: Array<FilterConfig, 1> = Array::new();
#[btf_map]
static NG_COUNTERS: PerCpuArray<Counter, { COUNTER_SLOTS as usize }> = PerCpuArray::new();
// The denylist: two banks of inner maps behind outer arrays of maps, and the word naming the
// live bank. Userspace fills the other bank and flips the word: one write switches every map.
#[btf_map]
static NG_DENY_BANK: Array<u32, 2> = Array::new();
#[btf_map]
static NG_DENY_V4: ArrayOfMaps<
    LpmTrie<[u8; 4], u8, { DENY_V4_CAPACITY as usize }>,
    { DENY_BANKS as usize },
> = ArrayOfMaps::new();
#[btf_map]
static NG_DENY_V4_IDX: ArrayOfMaps<
    Array<u64, { V4_INDEX_WORDS as usize }, { BPF_F_MMAPABLE as usize }>,
    { DENY_BANKS as usize },
> = ArrayOfMaps::new();
#[btf_map]
static NG_DENY_V6: ArrayOfMaps<
    LpmTrie<[u8; 16], u8, { DENY_V6_CAPACITY as usize }>,
    { DENY_BANKS as usize },
> = ArrayOfMaps::new();
#[btf_map]
static NG_TRUST_V4: LpmTrie<[u8; 4], u8, { TRUSTED_CAPACITY as usize }> = LpmTrie::new();
#[btf_map]
static NG_TRUST_V6: LpmTrie<[u8; 16], u8, { TRUSTED_CAPACITY as usize }> = LpmTrie::new();
#[btf_map]
static NG_FLOWS: LruHashMap<FlowKey, FlowValue, { FLOWS_CAPACITY as usize }> = LruHashMap::new();

/// The LPM key of one IPv4 address (`/32`), laid out like `Key<[u8; 4]>` but built from the
/// address word: aya's key type is packed (alignment 1), and LLVM takes an address stored into
/// it apart into bytes, which then spill to the stack on the hot path.
#[repr(C, align(4))]
struct V4Key {
    prefix_len: u32,
    data: u32,
}

#[inline(always)]
fn v4_key(addr: &Addr) -> V4Key {
    V4Key {
        prefix_len: 32,
        data: addr.v4_word(),
    }
}

impl V4Key {
    #[inline(always)]
    fn as_key(&self) -> &Key<[u8; 4]> {
        const {
            assert!(core::mem::size_of::<V4Key>() == core::mem::size_of::<Key<[u8; 4]>>());
        }
        // SAFETY: same size and field offsets (`Key` is packed: u32 then four bytes), every bit
        // pattern is valid for both, and `Key`'s alignment (1) is below `V4Key`'s.
        unsafe { &*(self as *const V4Key).cast::<Key<[u8; 4]>>() }
    }
}

/// The live denylist bank, read once (volatile: userspace rewrites it while programs run).
#[inline(always)]
fn deny_bank() -> u32 {
    match NG_DENY_BANK.get_ptr(DENY_BANK_SLOT) {
        // SAFETY: pointer from a successful array lookup; a plain 4-byte load.
        Some(p) => (unsafe { core::ptr::read_volatile(p) }) & (DENY_BANKS - 1),
        None => 0,
    }
}

struct MapTables<'a> {
    cfg: &'a FilterConfig,
}

impl Tables for MapTables<'_> {
    /// Every lookup goes to the bank read once here, so a packet sees one whole denylist. An
    /// empty slot (userspace fills a bank before naming it, and clears the old one only after
    /// the programs that could still use it have finished) answers "not listed".
    #[inline(always)]
    fn is_denied(&self, src: &Addr) -> bool {
        let bank = deny_bank();
        if src.is_v6() {
            let Some(trie) = NG_DENY_V6.get(bank) else {
                return false;
            };
            return trie.get(&Key::new(128, *src.v6_octets())).is_some();
        }
        // The /24 index answers most sources with one array read; blocks holding longer
        // prefixes (and a missing word, which cannot happen) go to the trie.
        let block = block_of(src);
        if let Some(index) = NG_DENY_V4_IDX.get(bank)
            && let Some(word) = index.get(block / BLOCKS_PER_WORD)
        {
            match block_state(*word, block) {
                BLOCK_CLEAN => return false,
                BLOCK_ALL => return true,
                _ => {}
            }
        }
        let Some(trie) = NG_DENY_V4.get(bank) else {
            return false;
        };
        trie.get(v4_key(src).as_key()).is_some()
    }

    #[inline(always)]
    fn is_trusted(&self, src: &Addr) -> bool {
        if src.is_v6() {
            NG_TRUST_V6.get(&Key::new(128, *src.v6_octets())).is_some()
        } else {
            NG_TRUST_V4.get(v4_key(src).as_key()).is_some()
        }
    }

    #[inline(always)]
    fn is_return_flow(&self, key: &FlowKey) -> bool {
        let Some(value) = NG_FLOWS.get_ptr(key) else {
            return false;
        };
        // SAFETY: the pointer came from a successful lookup; the value may be rewritten by the
        // egress program concurrently, so it is read once, volatile, as a plain u64.
        let last_seen = unsafe { core::ptr::read_volatile(&raw const (*value).last_seen_ns) };
        // SAFETY: helper without arguments.
        let now = unsafe { bpf_ktime_get_ns() };
        let timeout = flow::timeout_for(
            key.proto,
            self.cfg.flow_timeout_tcp_ns,
            self.cfg.flow_timeout_other_ns,
        );
        flow::is_fresh(last_seen, now, timeout)
    }
}

#[xdp]
pub fn netguard_xdp(ctx: XdpContext) -> u32 {
    let bytes = XdpBytes::xdp(&ctx);
    let Some(cfg) = NG_CONFIG.get(0) else {
        // Index 0 of a one-entry array always exists; this only satisfies the type.
        return xdp_action::XDP_PASS;
    };
    // The length is all the counter needs of the packet: taken here, one register instead of
    // the two packet pointers stays live through the decision (where only four registers
    // survive a helper call).
    let len = opaque(bytes.len() as u64);
    let reason = verdict::judge(&bytes, cfg, &MapTables { cfg });
    finish(reason, cfg.has(FLAG_AUDIT), len)
}

/// `v`, computed at this point: the compiler may not recompute it later from its inputs.
#[inline(always)]
fn opaque(mut v: u64) -> u64 {
    // SAFETY: an empty instruction sequence; it only pins `v` to a register here.
    unsafe {
        core::arch::asm!("/* {0} */", inout(reg) v, options(nomem, nostack, preserves_flags))
    };
    v
}

/// Bit `r` set: enforce mode drops reason `r` (`Reason::drops`, as one word).
const DROP_MASK: u32 = {
    let mut mask = 0;
    let mut i = 0;
    while i < Reason::ALL.len() {
        if Reason::ALL[i].drops() {
            mask |= 1 << Reason::ALL[i] as u32;
        }
        i += 1;
    }
    mask
};

/// Every XDP exit goes through here: count the reason, then return what it implies. The same
/// as `counter_index(audit)` and `drops() && !audit`, with the mask instead of matches.
#[inline(always)]
fn finish(reason: Reason, audit: bool, bytes: u64) -> u32 {
    // Through u8: a reason is below 256, and LLVM then masks one byte instead of shifting out
    // 32 bits.
    let r = u64::from(reason as u8);
    let drops = (u64::from(DROP_MASK) >> r) & 1;
    let (slot, action) = if audit {
        (r + drops * u64::from(REASON_COUNT), xdp_action::XDP_PASS)
    } else if drops != 0 {
        (r, xdp_action::XDP_DROP)
    } else {
        (r, xdp_action::XDP_PASS)
    };
    if let Some(c) = NG_COUNTERS.get_ptr_mut(slot as u32) {
        // SAFETY: per-CPU slot of this CPU; XDP runs with preemption off, so nothing else writes it.
        unsafe {
            (*c).packets += 1;
            (*c).bytes += bytes;
        }
    }
    action
}

/// Records the flows the host opens so the XDP filter lets their answers in.
#[classifier]
pub fn netguard_flow_track(ctx: TcContext) -> i32 {
    let frame = parse_skb(&ctx);
    if frame.kind == FrameKind::Ip {
        track(&frame.ip);
    }
    // Continue with the next program (TCX_NEXT): tracking never decides the packet's fate.
    TC_ACT_UNSPEC
}

#[inline(always)]
fn track(ip: &IpPacket) {
    let Some(cfg) = NG_CONFIG.get(0) else {
        return;
    };
    if !cfg.is_guarded(&ip.src) {
        return;
    }
    // Answers of the host's own services: inbound traffic to those ports passes anyway.
    if ip.transport.kind() == L4::Tcp && cfg.tcp_port_allowed(ip.transport.src_port()) {
        return;
    }
    let mut key = FlowKey::default();
    if !flow::fill_outbound(&mut key, ip) {
        return;
    }
    // SAFETY: helper without arguments.
    let now = unsafe { bpf_ktime_get_ns() };
    if let Some(v) = NG_FLOWS.get_ptr(key) {
        // SAFETY: pointer from a successful lookup; read once.
        let last = unsafe { core::ptr::read_volatile(&raw const (*v).last_seen_ns) };
        if now.saturating_sub(last) < REFRESH_INTERVAL_NS {
            return;
        }
    }
    let _ = NG_FLOWS.insert(key, FlowValue { last_seen_ns: now }, 0);
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
