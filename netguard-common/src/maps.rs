//! Map names, capacities and pin layout.
//!
//! Names are at most 15 bytes: the kernel truncates object names to `BPF_OBJ_NAME_LEN - 1`, and
//! `bpftool map show` lists them under these names.

/// Array of one [`crate::policy::FilterConfig`]: the whole XDP policy in one value.
pub const CONFIG: &str = "NG_CONFIG";
/// Per-CPU array of [`crate::reason::Counter`], indexed by [`crate::reason::Reason::counter_index`].
pub const COUNTERS: &str = "NG_COUNTERS";
/// The denylist lives in two banks of inner maps; these outer arrays of maps hold, at index
/// `bank`, that bank's map of each kind ([`DENY_BANKS`] slots each). Only the outer maps are
/// pinned: an inner map lives as long as a slot references it.
///
/// LPM tries of denylisted sources; key data is the address in network byte order.
pub const DENY_V4: &str = "NG_DENY_V4";
pub const DENY_V6: &str = "NG_DENY_V6";
/// Arrays of `u64`, two bits per /24 of the IPv4 space ([`crate::prefixes::block_state`]):
/// whether the IPv4 denylist covers the /24, holds longer prefixes inside it (then the trie
/// answers) or nothing. Memory-mappable, so userspace reads and writes it in place.
pub const DENY_V4_INDEX: &str = "NG_DENY_V4_IDX";
/// Array of two `u32`. Index [`DENY_BANK_SLOT`]: the bank ([`DENY_BANKS`]) whose maps the XDP
/// program consults; the program reads it once per packet, and a new denylist built in the
/// other bank goes live with one write of this word. Index [`DENY_EDITS_SLOT`]: bumped by every
/// `netguard deny add/del`, so the daemon knows whether the live bank still holds what it wrote.
pub const DENY_BANK: &str = "NG_DENY_BANK";
pub const DENY_BANK_SLOT: u32 = 0;
pub const DENY_EDITS_SLOT: u32 = 1;
/// Banks of denylist maps: the live one and the one a reload builds.
pub const DENY_BANKS: u32 = 2;
/// LPM tries of trusted sources; key data is the address in network byte order.
pub const TRUSTED_V4: &str = "NG_TRUST_V4";
pub const TRUSTED_V6: &str = "NG_TRUST_V6";
/// LRU hash of flows the host opened, filled by the tc egress program.
pub const FLOWS: &str = "NG_FLOWS";

/// Array of one [`crate::limiter::LimiterConfig`]: default rate/burst and container ranges.
pub const LIMIT_CONFIG: &str = "NG_LIM_CONFIG";
/// Hash of per-container [`crate::bucket::BucketParams`] overrides.
pub const LIMIT_OVERRIDES: &str = "NG_LIM_OVERRIDE";
/// LRU hash of [`crate::limiter::BucketState`] per container and direction.
pub const BUCKETS: &str = "NG_BUCKETS";

/// Hash of private address → network id ([`crate::private_net`]).
pub const PN_MEMBERS: &str = "NG_PN_MEMBERS";
/// Hash of [`crate::private_net::GatewayKey`] → 1: a network's gateway addresses.
pub const PN_GATEWAYS: &str = "NG_PN_GATEWAYS";
/// Per-CPU array of [`crate::reason::Counter`] per [`crate::private_net::PnReason`].
pub const PN_COUNTERS: &str = "NG_PN_COUNTERS";

/// Every map the programs declare, in the order `netguard stats`/`detach` walk them.
pub const ALL: [&str; 15] = [
    CONFIG,
    COUNTERS,
    DENY_BANK,
    DENY_V4,
    DENY_V4_INDEX,
    DENY_V6,
    TRUSTED_V4,
    TRUSTED_V6,
    FLOWS,
    LIMIT_CONFIG,
    LIMIT_OVERRIDES,
    BUCKETS,
    PN_MEMBERS,
    PN_GATEWAYS,
    PN_COUNTERS,
];

/// Program names (the Rust function names of the entry points).
pub const XDP_PROGRAM: &str = "netguard_xdp";
pub const FLOW_TRACK_PROGRAM: &str = "netguard_flow_track";
/// The limiter: tc ingress of a container-facing interface (upload) and tc egress (download).
pub const LIMIT_UPLOAD_PROGRAM: &str = "netguard_limit_up";
pub const LIMIT_DOWNLOAD_PROGRAM: &str = "netguard_limit_down";
/// Private-network isolation: tc ingress and egress of each private-side interface.
pub const PRIVATE_PROGRAM: &str = "netguard_private";

/// Pin names of the bpf links under the pin directory.
pub const XDP_LINK_PIN: &str = "link_xdp";
pub const FLOW_TRACK_LINK_PIN: &str = "link_tc_egress";

/// LPM tries are created with `BPF_F_NO_PREALLOC`, so a large capacity costs nothing until used.
pub const DENY_V4_CAPACITY: u32 = 4 * 1024 * 1024;
pub const DENY_V6_CAPACITY: u32 = 256 * 1024;
pub const TRUSTED_CAPACITY: u32 = 16 * 1024;
/// The flow table is an LRU: the host's own outbound flows evict the oldest when it is full.
pub const FLOWS_CAPACITY: u32 = 65_536;
/// 65,536 containers × 2 directions, twice over: an LRU, so churn evicts the idlest.
pub const BUCKETS_CAPACITY: u32 = 262_144;
pub const LIMIT_OVERRIDES_CAPACITY: u32 = 65_536;
/// 10.240.0.0/22 holds 1,024 addresses; room to spare for renumbering.
pub const PN_MEMBERS_CAPACITY: u32 = 4_096;
pub const PN_GATEWAYS_CAPACITY: u32 = 1_024;

/// Data bytes of an LPM key (the prefix length is a separate `u32`).
pub const V4_KEY_LEN: usize = 4;
pub const V6_KEY_LEN: usize = 16;

/// Maps are pinned under `<pin dir>/<MAPS_DIR>/`. aya reopens a pinned map by name without
/// checking its type or sizes; a new layout gets a new directory name, so a daemon with other
/// layouts never shares maps with a different shape (it builds fresh ones and the old directory
/// is removed once the programs are swapped). Bump on any map layout change.
pub const MAPS_DIR: &str = "maps-v4";

/// `BPF_F_MMAPABLE`: the denylist index is created with it.
pub const BPF_F_MMAPABLE: u32 = 1 << 10;

/// Kernel map type numbers (`enum bpf_map_type`) of the maps netguard declares.
pub const BPF_MAP_TYPE_HASH: u32 = 1;
pub const BPF_MAP_TYPE_ARRAY: u32 = 2;
pub const BPF_MAP_TYPE_PERCPU_ARRAY: u32 = 6;
pub const BPF_MAP_TYPE_LRU_HASH: u32 = 9;
pub const BPF_MAP_TYPE_LPM_TRIE: u32 = 11;
pub const BPF_MAP_TYPE_ARRAY_OF_MAPS: u32 = 12;

/// `BPF_F_NO_PREALLOC`: LPM tries must be created with it.
pub const BPF_F_NO_PREALLOC: u32 = 1;

/// Inner map names (the kernel keeps 15 bytes) of bank `b`: `NG_DENY_V4.b0`, ...
pub const DENY_V4_INNER: &str = "NG_DENY_V4.b";
pub const DENY_V4_INDEX_INNER: &str = "NG_DENY_IDX.b";
pub const DENY_V6_INNER: &str = "NG_DENY_V6.b";

/// The shape of one map, as the kernel reports it for a pinned map.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MapLayout {
    pub name: &'static str,
    pub map_type: u32,
    pub key_size: u32,
    pub value_size: u32,
    pub max_entries: u32,
}

const fn layout(
    name: &'static str,
    map_type: u32,
    key_size: usize,
    value_size: usize,
    max_entries: u32,
) -> MapLayout {
    MapLayout {
        name,
        map_type,
        key_size: key_size as u32,
        value_size: value_size as u32,
        max_entries,
    }
}

/// The shape every inner denylist map must have (the kernel refuses an inner map whose type,
/// key or value size or flags differ from the template the program was verified with).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InnerLayout {
    /// The outer map holding maps of this shape.
    pub outer: &'static str,
    /// Name prefix of the inner maps; the bank number follows.
    pub name: &'static str,
    pub layout: MapLayout,
    pub flags: u32,
}

impl InnerLayout {
    /// Whether a map of this shape may sit in the outer map: the kernel's own test (type, key
    /// and value size, flags), plus the entry count for arrays (an inner array is looked up
    /// with the template's bounds). A trie may be larger than the template.
    pub const fn accepts(
        &self,
        map_type: u32,
        key_size: u32,
        value_size: u32,
        max_entries: u32,
        flags: u32,
    ) -> bool {
        let l = &self.layout;
        map_type == l.map_type
            && key_size == l.key_size
            && value_size == l.value_size
            && flags == self.flags
            && (map_type != BPF_MAP_TYPE_ARRAY || max_entries == l.max_entries)
    }
}

/// The inner maps of one denylist bank.
pub const DENY_INNER: [InnerLayout; 3] = [
    InnerLayout {
        outer: DENY_V4,
        name: DENY_V4_INNER,
        layout: layout(
            DENY_V4,
            BPF_MAP_TYPE_LPM_TRIE,
            4 + V4_KEY_LEN,
            1,
            DENY_V4_CAPACITY,
        ),
        flags: BPF_F_NO_PREALLOC,
    },
    InnerLayout {
        outer: DENY_V4_INDEX,
        name: DENY_V4_INDEX_INNER,
        layout: layout(
            DENY_V4_INDEX,
            BPF_MAP_TYPE_ARRAY,
            4,
            8,
            crate::prefixes::V4_INDEX_WORDS,
        ),
        flags: BPF_F_MMAPABLE,
    },
    InnerLayout {
        outer: DENY_V6,
        name: DENY_V6_INNER,
        layout: layout(
            DENY_V6,
            BPF_MAP_TYPE_LPM_TRIE,
            4 + V6_KEY_LEN,
            1,
            DENY_V6_CAPACITY,
        ),
        flags: BPF_F_NO_PREALLOC,
    },
];

/// Every map's expected layout; the loader checks pinned maps against it before reusing them.
pub const LAYOUTS: [MapLayout; 15] = [
    layout(
        CONFIG,
        BPF_MAP_TYPE_ARRAY,
        4,
        core::mem::size_of::<crate::policy::FilterConfig>(),
        1,
    ),
    layout(
        COUNTERS,
        BPF_MAP_TYPE_PERCPU_ARRAY,
        4,
        core::mem::size_of::<crate::reason::Counter>(),
        crate::reason::COUNTER_SLOTS,
    ),
    layout(DENY_BANK, BPF_MAP_TYPE_ARRAY, 4, 4, 2),
    layout(DENY_V4, BPF_MAP_TYPE_ARRAY_OF_MAPS, 4, 4, DENY_BANKS),
    layout(DENY_V4_INDEX, BPF_MAP_TYPE_ARRAY_OF_MAPS, 4, 4, DENY_BANKS),
    layout(DENY_V6, BPF_MAP_TYPE_ARRAY_OF_MAPS, 4, 4, DENY_BANKS),
    layout(
        TRUSTED_V4,
        BPF_MAP_TYPE_LPM_TRIE,
        4 + V4_KEY_LEN,
        1,
        TRUSTED_CAPACITY,
    ),
    layout(
        TRUSTED_V6,
        BPF_MAP_TYPE_LPM_TRIE,
        4 + V6_KEY_LEN,
        1,
        TRUSTED_CAPACITY,
    ),
    layout(
        FLOWS,
        BPF_MAP_TYPE_LRU_HASH,
        core::mem::size_of::<crate::flow::FlowKey>(),
        core::mem::size_of::<crate::flow::FlowValue>(),
        FLOWS_CAPACITY,
    ),
    layout(
        LIMIT_CONFIG,
        BPF_MAP_TYPE_ARRAY,
        4,
        core::mem::size_of::<crate::limiter::LimiterConfig>(),
        1,
    ),
    layout(
        LIMIT_OVERRIDES,
        BPF_MAP_TYPE_HASH,
        16,
        core::mem::size_of::<crate::bucket::BucketParams>(),
        LIMIT_OVERRIDES_CAPACITY,
    ),
    layout(
        BUCKETS,
        BPF_MAP_TYPE_LRU_HASH,
        core::mem::size_of::<crate::limiter::BucketKey>(),
        core::mem::size_of::<crate::limiter::BucketState>(),
        BUCKETS_CAPACITY,
    ),
    layout(PN_MEMBERS, BPF_MAP_TYPE_HASH, 4, 4, PN_MEMBERS_CAPACITY),
    layout(
        PN_GATEWAYS,
        BPF_MAP_TYPE_HASH,
        core::mem::size_of::<crate::private_net::GatewayKey>(),
        1,
        PN_GATEWAYS_CAPACITY,
    ),
    layout(
        PN_COUNTERS,
        BPF_MAP_TYPE_PERCPU_ARRAY,
        4,
        core::mem::size_of::<crate::reason::Counter>(),
        crate::private_net::PN_REASON_COUNT,
    ),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inner_maps_must_match_their_template() {
        let [trie, index, _] = DENY_INNER;
        let t = trie.layout;
        assert!(trie.accepts(
            t.map_type,
            t.key_size,
            t.value_size,
            t.max_entries,
            trie.flags
        ));
        assert!(
            trie.accepts(
                t.map_type,
                t.key_size,
                t.value_size,
                2 * t.max_entries,
                trie.flags
            ),
            "a trie may be larger than its template"
        );
        assert!(!trie.accepts(t.map_type, 4 + 16, t.value_size, t.max_entries, trie.flags));
        assert!(!trie.accepts(t.map_type, t.key_size, 4, t.max_entries, trie.flags));
        assert!(!trie.accepts(t.map_type, t.key_size, t.value_size, t.max_entries, 0));
        let i = index.layout;
        assert!(index.accepts(i.map_type, 4, 8, i.max_entries, BPF_F_MMAPABLE));
        assert!(
            !index.accepts(i.map_type, 4, 8, i.max_entries / 2, BPF_F_MMAPABLE),
            "an array is looked up with the template's bounds"
        );
        assert!(
            !index.accepts(i.map_type, 4, 8, i.max_entries, 0),
            "not mappable"
        );
        assert!(!index.accepts(BPF_MAP_TYPE_HASH, 4, 8, i.max_entries, BPF_F_MMAPABLE));
    }

    #[test]
    fn inner_map_names_fit_the_kernel() {
        for spec in DENY_INNER {
            // The bank number follows; the kernel keeps 15 bytes of a name.
            assert!(spec.name.len() < 15, "{}", spec.name);
        }
        assert!(
            DENY_BANKS.is_power_of_two(),
            "the program masks the bank word"
        );
    }
}
