//! Map names, capacities and pin layout.
//!
//! Names are at most 15 bytes: the kernel truncates object names to `BPF_OBJ_NAME_LEN - 1`, and
//! `bpftool map show` lists them under these names.

/// Array of one [`crate::policy::FilterConfig`]: the whole XDP policy in one value.
pub const CONFIG: &str = "NG_CONFIG";
/// Per-CPU array of [`crate::reason::Counter`], indexed by [`crate::reason::Reason::counter_index`].
pub const COUNTERS: &str = "NG_COUNTERS";
/// LPM tries of denylisted sources; key data is the address in network byte order.
pub const DENY_V4: &str = "NG_DENY_V4";
pub const DENY_V6: &str = "NG_DENY_V6";
/// LPM tries of trusted sources; key data is the address in network byte order.
pub const TRUSTED_V4: &str = "NG_TRUST_V4";
pub const TRUSTED_V6: &str = "NG_TRUST_V6";
/// LRU hash of flows the host opened, filled by the tc egress program.
pub const FLOWS: &str = "NG_FLOWS";

/// Every map the programs declare, in the order `netguard stats`/`detach` walk them.
pub const ALL: [&str; 7] = [CONFIG, COUNTERS, DENY_V4, DENY_V6, TRUSTED_V4, TRUSTED_V6, FLOWS];

/// Program names (the Rust function names of the entry points).
pub const XDP_PROGRAM: &str = "netguard_xdp";
pub const FLOW_TRACK_PROGRAM: &str = "netguard_flow_track";

/// Pin names of the bpf links under the pin directory.
pub const XDP_LINK_PIN: &str = "link_xdp";
pub const FLOW_TRACK_LINK_PIN: &str = "link_tc_egress";

/// LPM tries are created with `BPF_F_NO_PREALLOC`, so a large capacity costs nothing until used.
pub const DENY_V4_CAPACITY: u32 = 4 * 1024 * 1024;
pub const DENY_V6_CAPACITY: u32 = 256 * 1024;
pub const TRUSTED_CAPACITY: u32 = 16 * 1024;
/// The flow table is an LRU: the host's own outbound flows evict the oldest when it is full.
pub const FLOWS_CAPACITY: u32 = 65_536;

/// Data bytes of an LPM key (the prefix length is a separate `u32`).
pub const V4_KEY_LEN: usize = 4;
pub const V6_KEY_LEN: usize = 16;
