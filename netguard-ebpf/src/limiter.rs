//! The tc bandwidth limiter: a token bucket per container and direction.
//!
//! Attached to container-facing interfaces (the host side of each container's veth, or a
//! bridge): tc ingress sees packets *from* containers (upload, keyed by source), tc egress
//! packets *to* them (download, keyed by destination). Addresses outside the container ranges
//! and non-IP frames are not touched. The arithmetic is `netguard_common::bucket::admit`.

use core::intrinsics::{AtomicOrdering, atomic_cxchg, atomic_xadd};

use aya_ebpf::{
    bindings::{BPF_NOEXIST, TC_ACT_SHOT, TC_ACT_UNSPEC},
    btf_maps::{Array, HashMap, LruHashMap},
    helpers::bpf_ktime_get_ns,
    macros::{btf_map, classifier},
    programs::TcContext,
};
use netguard_common::{
    bucket::{self, BucketParams},
    flow,
    limiter::{
        BucketKey, BucketState, DIR_DOWNLOAD, DIR_UPLOAD, LimiterConfig, OverrideKey, bucket_key,
    },
    maps::{BUCKETS_CAPACITY, LIMIT_OVERRIDES_CAPACITY},
    packet::FrameKind,
};

use crate::access::parse_skb;

#[btf_map]
static NG_LIM_CONFIG: Array<LimiterConfig, 1> = Array::new();
#[btf_map]
static NG_LIM_OVERRIDE: HashMap<OverrideKey, BucketParams, { LIMIT_OVERRIDES_CAPACITY as usize }> =
    HashMap::new();
#[btf_map]
static NG_BUCKETS: LruHashMap<BucketKey, BucketState, { BUCKETS_CAPACITY as usize }> =
    LruHashMap::new();

/// Compare-and-swap attempts before giving up on a contended bucket. Each failed attempt means
/// another CPU just charged the same bucket; after this many the packet passes uncharged rather
/// than spinning (with two CPUs a second attempt practically always succeeds).
const CAS_ATTEMPTS: u32 = 8;

#[classifier]
pub fn netguard_limit_up(ctx: TcContext) -> i32 {
    limit(&ctx, DIR_UPLOAD)
}

#[classifier]
pub fn netguard_limit_down(ctx: TcContext) -> i32 {
    limit(&ctx, DIR_DOWNLOAD)
}

#[inline(always)]
fn limit(ctx: &TcContext, direction: u8) -> i32 {
    let frame = parse_skb(ctx);
    if frame.kind != FrameKind::Ip {
        return TC_ACT_UNSPEC;
    }
    let Some(cfg) = NG_LIM_CONFIG.get(0) else {
        return TC_ACT_UNSPEC;
    };
    let addr = if direction == DIR_UPLOAD {
        &frame.ip.src
    } else {
        &frame.ip.dst
    };
    if !cfg.is_container(addr) {
        return TC_ACT_UNSPEC;
    }
    let params = if cfg.overrides == 0 {
        cfg.default
    } else {
        // SAFETY: read-only use of a hash value that userspace replaces whole; a torn read
        // could only mix two valid configs for one packet.
        match unsafe { NG_LIM_OVERRIDE.get(&flow::mapped(addr)) } {
            Some(p) => *p,
            None => cfg.default,
        }
    };
    let key = bucket_key(addr, direction);
    let state = match NG_BUCKETS.get_ptr_mut(&key) {
        Some(s) => s,
        None => {
            // First packet of this container and direction: a fresh (full) bucket. NOEXIST:
            // if another CPU created it meanwhile, use theirs.
            let _ = NG_BUCKETS.insert(&key, &BucketState::default(), BPF_NOEXIST as u64);
            match NG_BUCKETS.get_ptr_mut(&key) {
                Some(s) => s,
                None => return TC_ACT_UNSPEC,
            }
        }
    };
    let size = u64::from(ctx.len());
    // The clock is read before the compare-and-swap loop: a CPU that loses the race retries
    // with the same `now`, which `admit` handles (`now` older than `tat` never refills).
    // SAFETY: helper without arguments.
    let now = unsafe { bpf_ktime_get_ns() };
    let mut attempt = 0;
    let passed = loop {
        // SAFETY: `state` points into a live map value; the word is only written by CAS.
        let old = unsafe { core::ptr::read_volatile(&raw const (*state).tat) };
        let Some(new) = bucket::admit(&params, old, now, size) else {
            break false;
        };
        // SAFETY: as above; an aligned u64 inside the map value.
        let (_, swapped) = unsafe {
            atomic_cxchg::<u64, { AtomicOrdering::SeqCst }, { AtomicOrdering::SeqCst }>(
                &raw mut (*state).tat,
                old,
                new,
            )
        };
        attempt += 1;
        if swapped || attempt >= CAS_ATTEMPTS {
            break true;
        }
    };
    // SAFETY: aligned u64 counters in the map value; the results are unused (the base BPF ISA
    // has fetch-and-add only without a result).
    unsafe {
        if passed {
            atomic_xadd::<u64, u64, { AtomicOrdering::SeqCst }>(
                &raw mut (*state).passed_bytes,
                size,
            );
            atomic_xadd::<u64, u64, { AtomicOrdering::SeqCst }>(
                &raw mut (*state).passed_packets,
                1,
            );
        } else {
            atomic_xadd::<u64, u64, { AtomicOrdering::SeqCst }>(
                &raw mut (*state).dropped_bytes,
                size,
            );
            atomic_xadd::<u64, u64, { AtomicOrdering::SeqCst }>(
                &raw mut (*state).dropped_packets,
                1,
            );
        }
    }
    if passed { TC_ACT_UNSPEC } else { TC_ACT_SHOT }
}
