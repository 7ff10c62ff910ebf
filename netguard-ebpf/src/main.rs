//! netguard's kernel programs: the XDP ingress filter and the tc egress flow tracker.
//!
//! The decision logic is `netguard_common::verdict::decide`, the same function the host tests
//! run; this file only binds it to packet memory and maps.
#![no_std]
#![no_main]
// Compare-and-swap and fetch-and-add on map values: `core::sync::atomic` has no BPF lowering.
#![feature(core_intrinsics)]
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
    btf_maps::{Array, LpmTrie, LruHashMap, PerCpuArray, lpm_trie::Key},
    helpers::bpf_ktime_get_ns,
    macros::{btf_map, classifier, xdp},
    programs::{TcContext, XdpContext},
};
use netguard_common::{
    flow::{self, FlowKey, FlowValue, REFRESH_INTERVAL_NS},
    maps::{DENY_V4_CAPACITY, DENY_V6_CAPACITY, FLOWS_CAPACITY, TRUSTED_CAPACITY},
    packet::{self, Addr, FrameKind, IpPacket, L4, PacketBytes as _},
    policy::{FLAG_AUDIT, FilterConfig},
    reason::{COUNTER_SLOTS, Counter, Reason},
    verdict::{self, Tables},
};

use crate::access::{SkbBytes, XdpBytes};

// Map statics carry the names in `netguard_common::maps`; a userspace test checks they match.
#[btf_map]
static NG_CONFIG: Array<FilterConfig, 1> = Array::new();
#[btf_map]
static NG_COUNTERS: PerCpuArray<Counter, { COUNTER_SLOTS as usize }> = PerCpuArray::new();
#[btf_map]
static NG_DENY_V4: LpmTrie<[u8; 4], u8, { DENY_V4_CAPACITY as usize }> = LpmTrie::new();
#[btf_map]
static NG_DENY_V6: LpmTrie<[u8; 16], u8, { DENY_V6_CAPACITY as usize }> = LpmTrie::new();
#[btf_map]
static NG_TRUST_V4: LpmTrie<[u8; 4], u8, { TRUSTED_CAPACITY as usize }> = LpmTrie::new();
#[btf_map]
static NG_TRUST_V6: LpmTrie<[u8; 16], u8, { TRUSTED_CAPACITY as usize }> = LpmTrie::new();
#[btf_map]
static NG_FLOWS: LruHashMap<FlowKey, FlowValue, { FLOWS_CAPACITY as usize }> = LruHashMap::new();

struct MapTables<'a> {
    cfg: &'a FilterConfig,
}

impl Tables for MapTables<'_> {
    #[inline(always)]
    fn is_denied(&self, src: &Addr) -> bool {
        if src.is_v6() {
            NG_DENY_V6.get(&Key::new(128, *src.v6_octets())).is_some()
        } else {
            NG_DENY_V4.get(&Key::new(32, src.v4_octets())).is_some()
        }
    }

    #[inline(always)]
    fn is_trusted(&self, src: &Addr) -> bool {
        if src.is_v6() {
            NG_TRUST_V6.get(&Key::new(128, *src.v6_octets())).is_some()
        } else {
            NG_TRUST_V4.get(&Key::new(32, src.v4_octets())).is_some()
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
    let bytes = XdpBytes::new(&ctx);
    let Some(cfg) = NG_CONFIG.get(0) else {
        // Index 0 of a one-entry array always exists; this only satisfies the type.
        return xdp_action::XDP_PASS;
    };
    let frame = packet::parse(&bytes);
    let reason = verdict::decide(&frame, cfg, &MapTables { cfg });
    finish(reason, cfg.has(FLAG_AUDIT), bytes.len() as u64)
}

/// Every XDP exit goes through here: count the reason, then return what it implies.
#[inline(always)]
fn finish(reason: Reason, audit: bool, bytes: u64) -> u32 {
    if let Some(c) = NG_COUNTERS.get_ptr_mut(reason.counter_index(audit)) {
        // SAFETY: per-CPU slot of this CPU; XDP runs with preemption off, so nothing else writes it.
        unsafe {
            (*c).packets += 1;
            (*c).bytes += bytes;
        }
    }
    if reason.drops() && !audit {
        xdp_action::XDP_DROP
    } else {
        xdp_action::XDP_PASS
    }
}

/// Records the flows the host opens so the XDP filter lets their answers in.
#[classifier]
pub fn netguard_flow_track(ctx: TcContext) -> i32 {
    let frame = packet::parse(&SkbBytes::new(&ctx));
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
    if ip.transport.kind == L4::Tcp && cfg.tcp_port_allowed(ip.transport.src_port) {
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
