//! Types and constants shared by the eBPF programs and the userspace daemon.
//!
//! Everything the kernel side and the userspace side must agree on lives here exactly once:
//! map names and capacities, map key/value layouts, counter indices, flag bits, and the pure
//! packet-classification logic that the XDP program runs and the host tests exercise.
#![no_std]

#[cfg(feature = "std")]
extern crate std;

pub mod bucket;
pub mod flow;
pub mod limiter;
pub mod maps;
pub mod packet;
pub mod policy;
pub mod prefixes;
pub mod private_net;
pub mod reason;
pub mod verdict;

#[cfg(feature = "std")]
pub mod golden;

#[cfg(feature = "user")]
mod pod {
    // SAFETY: every type below is `#[repr(C)]`, `Copy`, made only of integers and byte arrays,
    // and has no implicit padding (checked by the size assertions next to each definition).
    unsafe impl aya::Pod for crate::policy::FilterConfig {}
    unsafe impl aya::Pod for crate::reason::Counter {}
    unsafe impl aya::Pod for crate::flow::FlowKey {}
    unsafe impl aya::Pod for crate::flow::FlowValue {}
    unsafe impl aya::Pod for crate::bucket::BucketParams {}
    unsafe impl aya::Pod for crate::limiter::LimiterConfig {}
    unsafe impl aya::Pod for crate::limiter::BucketKey {}
    unsafe impl aya::Pod for crate::limiter::BucketState {}
    unsafe impl aya::Pod for crate::private_net::GatewayKey {}
}
