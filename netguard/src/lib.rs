//! netguard: the ingress edge's control plane.
//!
//! Data path in `netguard-ebpf`, shared layouts in `netguard-common`; this crate holds the
//! config (plain data, so another source such as etcd can feed it), the denylist loader, the
//! pure policy → map-entry translation, the kernel loader/attacher, and the CLI.

pub mod admin;
pub mod cli;
pub mod config;
pub mod ctl;
pub mod daemon;
pub mod deny_banks;
pub mod denylist;
pub mod dns;
pub mod loader;
pub mod metrics;
pub mod paths;
pub mod policy;
pub mod private_net;
pub mod proxy;
pub mod reuseport;
pub mod routes;
pub mod stats;
pub mod tables;
pub mod top;
pub mod units;

/// The eBPF object built by `build.rs` (aya-build), embedded at compile time.
pub fn ebpf_object() -> &'static [u8] {
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/netguard"))
}

/// Trivial `floor_pass` / `floor_drop` XDP programs, the reference cost in benchmarks.
pub fn floor_object() -> &'static [u8] {
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/netguard-floor"))
}
