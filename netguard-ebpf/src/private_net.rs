//! Private-network isolation on the private side (host side of each container's private veth,
//! or the private bridge), attached to both tc ingress and egress.
//!
//! A packet passes only between members of one network, or between a member and its network's
//! gateway; ARP is judged by its sender and target addresses the same way, so ARP across
//! networks gets no answer. The decision is `netguard_common::private_net::decide`.

use aya_ebpf::{
    bindings::{TC_ACT_SHOT, TC_ACT_UNSPEC},
    btf_maps::{HashMap, PerCpuArray},
    macros::{btf_map, classifier},
    programs::TcContext,
};
use netguard_common::{
    maps::{PN_GATEWAYS_CAPACITY, PN_MEMBERS_CAPACITY},
    packet::PacketBytes as _,
    private_net::{self, GatewayKey, Lookup, PN_REASON_COUNT, PnReason},
    reason::Counter,
};

use crate::access::SkbBytes;

#[btf_map]
static NG_PN_MEMBERS: HashMap<[u8; 4], u32, { PN_MEMBERS_CAPACITY as usize }> = HashMap::new();
#[btf_map]
static NG_PN_GATEWAYS: HashMap<GatewayKey, u8, { PN_GATEWAYS_CAPACITY as usize }> = HashMap::new();
#[btf_map]
static NG_PN_COUNTERS: PerCpuArray<Counter, { PN_REASON_COUNT as usize }> = PerCpuArray::new();

#[inline(always)]
fn network_of(addr: &[u8; 4]) -> Option<u32> {
    NG_PN_MEMBERS.get_ptr(addr).map(|p| {
        // SAFETY: pointer from a successful lookup; the value is a plain u32 that userspace
        // replaces whole.
        unsafe { core::ptr::read_volatile(p) }
    })
}

#[inline(always)]
fn is_gateway(addr: [u8; 4], network: Option<u32>) -> bool {
    match network {
        Some(network) => NG_PN_GATEWAYS
            .get_ptr(&GatewayKey { addr, network })
            .is_some(),
        None => false,
    }
}

#[classifier]
pub fn netguard_private(ctx: TcContext) -> i32 {
    let bytes = SkbBytes::new(&ctx);
    let reason = match private_net::endpoints(&bytes) {
        None => PnReason::NotIpv4,
        Some((src, dst)) => {
            let src_network = network_of(&src);
            let dst_network = network_of(&dst);
            let lookup = Lookup {
                src_network,
                dst_network,
                dst_is_gateway_of_src: dst_network.is_none() && is_gateway(dst, src_network),
                src_is_gateway_of_dst: src_network.is_none() && is_gateway(src, dst_network),
            };
            private_net::decide(&lookup)
        }
    };
    if let Some(c) = NG_PN_COUNTERS.get_ptr_mut(reason as u32) {
        // SAFETY: this CPU's slot; tc runs with preemption disabled.
        unsafe {
            (*c).packets += 1;
            (*c).bytes += bytes.len() as u64;
        }
    }
    if reason == PnReason::Passed {
        TC_ACT_UNSPEC
    } else {
        TC_ACT_SHOT
    }
}
