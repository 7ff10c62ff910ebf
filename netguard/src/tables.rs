//! Reading and writing netguard's maps, from the daemon (maps it just loaded) or from the CLI
//! (maps reopened from their pins, with no daemon running).

use std::{
    collections::HashSet,
    os::fd::{AsFd as _, AsRawFd as _},
    ptr::NonNull,
    sync::atomic::{AtomicU64, Ordering},
    time::Instant,
};

use aya::{
    Ebpf,
    maps::{Array, HashMap, LpmTrie, Map, MapData, MapError, PerCpuArray, lpm_trie::Key},
};
use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use netguard_common::{
    bucket::BucketParams,
    limiter::{BucketKey, BucketState, LimiterConfig, OverrideKey},
    maps,
    policy::{FLAG_HAS_DENY_V4, FLAG_HAS_DENY_V6, FilterConfig},
    prefixes::{BLOCK_ALL, BLOCKS_PER_WORD, V4_BLOCKS, V4_INDEX_WORDS, blocks_of_prefix},
    private_net::{GatewayKey, PN_REASON_COUNT},
    reason::{COUNTER_SLOTS, Counter},
};

use crate::{
    paths::PinPaths,
    policy::{self, MapPlan},
};

#[derive(Debug, thiserror::Error)]
pub enum TableError {
    #[error("map {name} is missing from the eBPF object")]
    Missing { name: &'static str },
    #[error(
        "opening pinned map {path}: {source} (is netguard running or attached with this pin path?)"
    )]
    Open { path: String, source: MapError },
    #[error("map {name}: {source}")]
    Map {
        name: &'static str,
        source: MapError,
    },
    #[error("mapping {name} into memory: {source}")]
    Mmap {
        name: &'static str,
        source: std::io::Error,
    },
}

fn map_err(name: &'static str) -> impl Fn(MapError) -> TableError {
    move |source| TableError::Map { name, source }
}

type Trie<K> = LpmTrie<MapData, K, u8>;

/// Handles on every map netguard writes.
pub struct Tables {
    config: Array<MapData, FilterConfig>,
    counters: PerCpuArray<MapData, Counter>,
    deny_v4: Trie<[u8; 4]>,
    deny_v4_index: DenyIndex,
    deny_v6: Trie<[u8; 16]>,
    trusted_v4: Trie<[u8; 4]>,
    trusted_v6: Trie<[u8; 16]>,
    limit_config: Array<MapData, LimiterConfig>,
    limit_overrides: HashMap<MapData, OverrideKey, BucketParams>,
    buckets: HashMap<MapData, BucketKey, BucketState>,
    pn_members: HashMap<MapData, [u8; 4], u32>,
    pn_gateways: HashMap<MapData, GatewayKey, u8>,
    pn_counters: PerCpuArray<MapData, Counter>,
}

/// Counts of one `apply`, for logs.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ApplyReport {
    pub added: usize,
    pub removed: usize,
    pub unchanged: usize,
}

/// Progress of a long table fill.
#[derive(Debug, Clone, Copy)]
pub struct FillProgress {
    pub table: &'static str,
    pub done: usize,
    pub total: usize,
}

impl Tables {
    /// Takes the maps out of a freshly loaded object (the object keeps using them).
    pub fn from_ebpf(ebpf: &mut Ebpf) -> Result<Self, TableError> {
        let mut take = |name: &'static str| ebpf.take_map(name).ok_or(TableError::Missing { name });
        Self::from_maps(&mut take)
    }

    /// Reopens the pinned maps of a running (or daemon-less, still attached) instance.
    pub fn open_pinned(paths: &PinPaths) -> Result<Self, TableError> {
        let mut open = |name: &'static str| {
            let path = paths.map(name);
            MapData::from_pin(&path)
                .and_then(Map::from_map_data)
                .map_err(|source| TableError::Open {
                    path: path.display().to_string(),
                    source,
                })
        };
        Self::from_maps(&mut open)
    }

    fn from_maps(
        get: &mut dyn FnMut(&'static str) -> Result<Map, TableError>,
    ) -> Result<Self, TableError> {
        fn typed<T: TryFrom<Map, Error = MapError>>(
            get: &mut dyn FnMut(&'static str) -> Result<Map, TableError>,
            name: &'static str,
        ) -> Result<T, TableError> {
            get(name)?.try_into().map_err(map_err(name))
        }
        Ok(Self {
            config: typed(get, maps::CONFIG)?,
            counters: typed(get, maps::COUNTERS)?,
            deny_v4: typed(get, maps::DENY_V4)?,
            deny_v4_index: DenyIndex::new(typed(get, maps::DENY_V4_INDEX)?)?,
            deny_v6: typed(get, maps::DENY_V6)?,
            trusted_v4: typed(get, maps::TRUSTED_V4)?,
            trusted_v6: typed(get, maps::TRUSTED_V6)?,
            limit_config: typed(get, maps::LIMIT_CONFIG)?,
            limit_overrides: typed(get, maps::LIMIT_OVERRIDES)?,
            buckets: typed(get, maps::BUCKETS)?,
            pn_members: typed(get, maps::PN_MEMBERS)?,
            pn_gateways: typed(get, maps::PN_GATEWAYS)?,
            pn_counters: typed(get, maps::PN_COUNTERS)?,
        })
    }

    pub fn filter_config(&self) -> Result<FilterConfig, TableError> {
        self.config.get(&0, 0).map_err(map_err(maps::CONFIG))
    }

    pub fn set_filter_config(&mut self, cfg: &FilterConfig) -> Result<(), TableError> {
        self.config.set(0, cfg, 0).map_err(map_err(maps::CONFIG))
    }

    /// Brings every table to `plan`: prefixes are added before stale ones leave, and the policy
    /// value is written last, so no packet sees a state that is neither the old nor the new one
    /// in a way that opens anything (a stale deny entry may linger a moment; a wanted one never
    /// goes missing). The IPv4 denylist's /24 index follows the same order: after the trie's
    /// additions each block is raised to at least its new state, after the removals it is set
    /// to exactly that state.
    pub fn apply(
        &mut self,
        plan: &MapPlan,
        progress: &mut dyn FnMut(FillProgress),
    ) -> Result<ApplyReport, TableError> {
        let mut report = ApplyReport::default();
        let index = deny_v4_index(&plan.deny_v4);
        let deny_v4_index = &self.deny_v4_index;
        sync(
            &mut self.deny_v4,
            &DENY_V4,
            &plan.deny_v4,
            &mut report,
            progress,
            &mut || deny_v4_index.raise(&index),
        )?;
        self.deny_v4_index.set(&index);
        sync(
            &mut self.deny_v6,
            &DENY_V6,
            &plan.deny_v6,
            &mut report,
            progress,
            &mut || {},
        )?;
        sync(
            &mut self.trusted_v4,
            &TRUSTED_V4,
            &plan.trusted_v4,
            &mut report,
            progress,
            &mut || {},
        )?;
        sync(
            &mut self.trusted_v6,
            &TRUSTED_V6,
            &plan.trusted_v6,
            &mut report,
            progress,
            &mut || {},
        )?;
        let mut filter = plan.filter;
        policy::inline_trusted(&mut filter, &plan.trusted_v4, &plan.trusted_v6);
        self.set_filter_config(&filter)?;
        self.apply_limiter(&plan.limiter, &mut report)?;
        Ok(report)
    }

    /// Overrides first (changed and new ones, then stale ones go), then the defaults. Buckets
    /// are left alone: a container's tokens survive a reload.
    fn apply_limiter(
        &mut self,
        plan: &policy::LimiterPlan,
        report: &mut ApplyReport,
    ) -> Result<(), TableError> {
        let name = maps::LIMIT_OVERRIDES;
        let mut current = std::collections::HashMap::new();
        for entry in self.limit_overrides.iter() {
            let (k, v) = entry.map_err(map_err(name))?;
            current.insert(k, v);
        }
        for (key, params) in &plan.overrides {
            if current.get(key) != Some(params) {
                self.limit_overrides
                    .insert(key, params, 0)
                    .map_err(map_err(name))?;
                report.added += 1;
            } else {
                report.unchanged += 1;
            }
        }
        let wanted: HashSet<&OverrideKey> = plan.overrides.iter().map(|(k, _)| k).collect();
        for key in current.keys().filter(|k| !wanted.contains(k)) {
            match self.limit_overrides.remove(key) {
                Ok(()) => report.removed += 1,
                Err(e) if is_missing(&e) => {}
                Err(e) => return Err(map_err(name)(e)),
            }
        }
        self.limit_config
            .set(0, plan.config, 0)
            .map_err(map_err(maps::LIMIT_CONFIG))
    }

    pub fn limiter_config(&self) -> Result<LimiterConfig, TableError> {
        self.limit_config
            .get(&0, 0)
            .map_err(map_err(maps::LIMIT_CONFIG))
    }

    /// The rate and burst in force for a bucket key's container.
    pub fn limiter_params(&self, key: &BucketKey, defaults: &LimiterConfig) -> BucketParams {
        self.limit_overrides
            .get(&key.addr, 0)
            .unwrap_or(defaults.default)
    }

    /// Brings the private-network maps to `plan`: new and changed members and gateways first,
    /// then stale ones leave.
    pub fn apply_private(
        &mut self,
        plan: &crate::private_net::PnPlan,
    ) -> Result<ApplyReport, TableError> {
        let mut report = ApplyReport::default();
        let name = maps::PN_MEMBERS;
        let mut current = std::collections::HashMap::new();
        for entry in self.pn_members.iter() {
            let (k, v) = entry.map_err(map_err(name))?;
            current.insert(k, v);
        }
        for (addr, network) in &plan.members {
            if current.get(addr) == Some(network) {
                report.unchanged += 1;
            } else {
                self.pn_members
                    .insert(addr, network, 0)
                    .map_err(map_err(name))?;
                report.added += 1;
            }
        }
        let name = maps::PN_GATEWAYS;
        let mut gateways = HashSet::new();
        for key in self.pn_gateways.keys() {
            gateways.insert(key.map_err(map_err(name))?);
        }
        for g in &plan.gateways {
            if !gateways.contains(g) {
                self.pn_gateways.insert(g, 1, 0).map_err(map_err(name))?;
                report.added += 1;
            }
        }
        let wanted: HashSet<&GatewayKey> = plan.gateways.iter().collect();
        for g in gateways.iter().filter(|g| !wanted.contains(g)) {
            remove_key(&mut self.pn_gateways, g, name, &mut report)?;
        }
        let members: HashSet<&[u8; 4]> = plan.members.iter().map(|(a, _)| a).collect();
        for addr in current.keys().filter(|a| !members.contains(a)) {
            remove_key(&mut self.pn_members, addr, maps::PN_MEMBERS, &mut report)?;
        }
        Ok(report)
    }

    /// Private-network decisions per reason (indexed like `PnReason`), summed over CPUs.
    pub fn private_counters(&self) -> Result<Vec<Counter>, TableError> {
        (0..PN_REASON_COUNT)
            .map(|i| {
                let per_cpu = self
                    .pn_counters
                    .get(&i, 0)
                    .map_err(map_err(maps::PN_COUNTERS))?;
                Ok(per_cpu.iter().fold(Counter::default(), |acc, c| Counter {
                    packets: acc.packets + c.packets,
                    bytes: acc.bytes + c.bytes,
                }))
            })
            .collect()
    }

    /// Every bucket the limiter has created (containers seen since their last eviction).
    pub fn buckets(&self) -> Result<Vec<(BucketKey, BucketState)>, TableError> {
        self.buckets
            .iter()
            .map(|e| e.map_err(map_err(maps::BUCKETS)))
            .collect()
    }

    /// Adds denylist entries to the live map (effective on the next packet).
    pub fn deny_add(&mut self, nets: &[IpNet]) -> Result<(), TableError> {
        let (v4, v6) = policy::split(nets);
        let mut cfg = self.filter_config()?;
        for n in &v4 {
            self.deny_v4
                .insert(&v4_key(n), 1, 0)
                .map_err(map_err(maps::DENY_V4))?;
        }
        if !v4.is_empty() {
            // Only raises: the blocks of the new prefixes, nothing else.
            self.deny_v4_index.raise(&deny_v4_index(&v4));
        }
        for n in &v6 {
            self.deny_v6
                .insert(&v6_key(n), 1, 0)
                .map_err(map_err(maps::DENY_V6))?;
        }
        // The filter skips an empty trie; tell it this one is not empty any more.
        let before = cfg.flags;
        if !v4.is_empty() {
            cfg.flags |= FLAG_HAS_DENY_V4;
        }
        if !v6.is_empty() {
            cfg.flags |= FLAG_HAS_DENY_V6;
        }
        if cfg.flags != before {
            self.set_filter_config(&cfg)?;
        }
        Ok(())
    }

    /// Removes exact entries; returns the ones that were not present.
    pub fn deny_del(&mut self, nets: &[IpNet]) -> Result<Vec<IpNet>, TableError> {
        let (v4, v6) = policy::split(nets);
        let mut missing = Vec::new();
        let removing_v4 = !v4.is_empty();
        for n in v4 {
            match self.deny_v4.remove(&v4_key(&n)) {
                Ok(()) => {}
                Err(e) if is_missing(&e) => missing.push(IpNet::V4(n)),
                Err(e) => return Err(map_err(maps::DENY_V4)(e)),
            }
        }
        if removing_v4 {
            // A block may stay covered by other prefixes: recompute it from what the trie holds.
            let rest: Vec<Ipv4Net> = current(&self.deny_v4, maps::DENY_V4, from_v4_key)?
                .into_iter()
                .collect();
            self.deny_v4_index.set(&deny_v4_index(&rest));
        }
        for n in v6 {
            match self.deny_v6.remove(&v6_key(&n)) {
                Ok(()) => {}
                Err(e) if is_missing(&e) => missing.push(IpNet::V6(n)),
                Err(e) => return Err(map_err(maps::DENY_V6)(e)),
            }
        }
        Ok(missing)
    }

    /// Every denylist entry currently in the kernel, sorted.
    pub fn deny_list(&self) -> Result<Vec<IpNet>, TableError> {
        let mut out: Vec<IpNet> = current(&self.deny_v4, maps::DENY_V4, from_v4_key)?
            .into_iter()
            .map(IpNet::V4)
            .collect();
        out.extend(
            current(&self.deny_v6, maps::DENY_V6, from_v6_key)?
                .into_iter()
                .map(IpNet::V6),
        );
        out.sort_unstable();
        Ok(out)
    }

    /// Per-slot counters summed over CPUs, indexed like `Reason::counter_index`.
    pub fn counters(&self) -> Result<Vec<Counter>, TableError> {
        (0..COUNTER_SLOTS)
            .map(|i| {
                let per_cpu = self.counters.get(&i, 0).map_err(map_err(maps::COUNTERS))?;
                Ok(per_cpu.iter().fold(Counter::default(), |acc, c| Counter {
                    packets: acc.packets + c.packets,
                    bytes: acc.bytes + c.bytes,
                }))
            })
            .collect()
    }
}

fn remove_key<K: aya::Pod, V: aya::Pod>(
    map: &mut HashMap<MapData, K, V>,
    key: &K,
    name: &'static str,
    report: &mut ApplyReport,
) -> Result<(), TableError> {
    match map.remove(key) {
        Ok(()) => {
            report.removed += 1;
            Ok(())
        }
        Err(e) if is_missing(&e) => Ok(()),
        Err(e) => Err(map_err(name)(e)),
    }
}

fn is_missing(e: &MapError) -> bool {
    matches!(e, MapError::KeyNotFound)
        || matches!(e, MapError::SyscallError(s) if s.io_error.raw_os_error() == Some(libc::ENOENT))
}

pub fn v4_key(n: &Ipv4Net) -> Key<[u8; 4]> {
    Key::new(n.prefix_len().into(), n.network().octets())
}

pub fn v6_key(n: &Ipv6Net) -> Key<[u8; 16]> {
    Key::new(n.prefix_len().into(), n.network().octets())
}

fn from_v4_key(k: &Key<[u8; 4]>) -> Option<Ipv4Net> {
    Ipv4Net::new(k.data().into(), u8::try_from(k.prefix_len()).ok()?).ok()
}

fn from_v6_key(k: &Key<[u8; 16]>) -> Option<Ipv6Net> {
    Ipv6Net::new(k.data().into(), u8::try_from(k.prefix_len()).ok()?).ok()
}

trait Prefix: Copy + Eq + std::hash::Hash {}
impl Prefix for Ipv4Net {}
impl Prefix for Ipv6Net {}

fn current<K: aya::Pod, N: Prefix>(
    trie: &Trie<K>,
    name: &'static str,
    decode: fn(&Key<K>) -> Option<N>,
) -> Result<HashSet<N>, TableError> {
    let mut set = HashSet::new();
    for key in trie.keys() {
        let key = key.map_err(map_err(name))?;
        if let Some(n) = decode(&key) {
            set.insert(n);
        }
    }
    Ok(set)
}

/// How to turn one address family's prefixes into trie keys and back.
struct Codec<K, N> {
    name: &'static str,
    encode: fn(&N) -> Key<K>,
    decode: fn(&Key<K>) -> Option<N>,
}

const DENY_V4: Codec<[u8; 4], Ipv4Net> = Codec {
    name: maps::DENY_V4,
    encode: v4_key,
    decode: from_v4_key,
};
const DENY_V6: Codec<[u8; 16], Ipv6Net> = Codec {
    name: maps::DENY_V6,
    encode: v6_key,
    decode: from_v6_key,
};
const TRUSTED_V4: Codec<[u8; 4], Ipv4Net> = Codec {
    name: maps::TRUSTED_V4,
    encode: v4_key,
    decode: from_v4_key,
};
const TRUSTED_V6: Codec<[u8; 16], Ipv6Net> = Codec {
    name: maps::TRUSTED_V6,
    encode: v6_key,
    decode: from_v6_key,
};

/// Makes `trie` hold exactly `desired`: reads what is there, adds what is missing, calls
/// `between`, then removes what is stale. Reports progress every 50,000 entries.
fn sync<K: aya::Pod, N: Prefix>(
    trie: &mut Trie<K>,
    codec: &Codec<K, N>,
    desired: &[N],
    report: &mut ApplyReport,
    progress: &mut dyn FnMut(FillProgress),
    between: &mut dyn FnMut(),
) -> Result<(), TableError> {
    let name = codec.name;
    let existing = current(trie, name, codec.decode)?;
    let diff = policy::diff(&existing, desired);
    let total = diff.add.len() + diff.remove.len();
    let started = Instant::now();
    let mut done = 0;
    let mut tick = |done: usize| {
        if done.is_multiple_of(50_000) {
            progress(FillProgress {
                table: name,
                done,
                total,
            });
        }
    };
    for n in &diff.add {
        trie.insert(&(codec.encode)(n), 1, 0)
            .map_err(map_err(name))?;
        done += 1;
        tick(done);
    }
    between();
    for n in &diff.remove {
        match trie.remove(&(codec.encode)(n)) {
            Ok(()) => {}
            Err(e) if is_missing(&e) => {}
            Err(e) => return Err(map_err(name)(e)),
        }
        done += 1;
        tick(done);
    }
    if total >= 50_000 || started.elapsed().as_secs() >= 1 {
        progress(FillProgress {
            table: name,
            done,
            total,
        });
    }
    report.added += diff.add.len();
    report.removed += diff.remove.len();
    report.unchanged += desired.len() - diff.add.len();
    Ok(())
}

// ---- the IPv4 denylist's /24 index -----------------------------------------------------------

/// The index words (`netguard_common::prefixes`) for an IPv4 denylist: every /24 at the state
/// its prefixes need, [`BLOCK_ALL`] winning over partial.
pub fn deny_v4_index(nets: &[Ipv4Net]) -> Vec<u64> {
    let mut states = vec![0u8; V4_BLOCKS as usize];
    for n in nets {
        let blocks = blocks_of_prefix(n.network().octets(), n.prefix_len());
        let state = netguard_common::prefixes::state_for_prefix_len(n.prefix_len());
        let range = &mut states[blocks.start as usize..blocks.end as usize];
        if state == BLOCK_ALL {
            range.fill(BLOCK_ALL);
        } else {
            for s in range {
                *s = (*s).max(state);
            }
        }
    }
    states
        .chunks_exact(BLOCKS_PER_WORD as usize)
        .map(|blocks| {
            blocks
                .iter()
                .enumerate()
                .fold(0u64, |w, (i, s)| w | u64::from(*s) << (2 * i))
        })
        .collect()
}

/// Each 2-bit block of `a` and `b` at the stronger of its two states.
fn max_blocks(a: u64, b: u64) -> u64 {
    (0..BLOCKS_PER_WORD).fold(0, |w, i| {
        let shift = 2 * i;
        w | ((a >> shift) & 3).max((b >> shift) & 3) << shift
    })
}

/// `NG_DENY_V4_IDX`, memory-mapped (the map is `BPF_F_MMAPABLE`): 4 MiB read and written in
/// place, word by word, while the XDP program reads it.
struct DenyIndex {
    words: NonNull<AtomicU64>,
    len: usize,
    /// Keeps the map's fd open for as long as the mapping is used (the mapping itself also
    /// holds a reference to the map).
    _map: Array<MapData, u64>,
}

// SAFETY: the mapping is plain shared memory accessed only through atomics.
unsafe impl Send for DenyIndex {}
// SAFETY: as above.
unsafe impl Sync for DenyIndex {}

impl DenyIndex {
    fn new(map: Array<MapData, u64>) -> Result<Self, TableError> {
        let len = V4_INDEX_WORDS as usize;
        let bytes = len * std::mem::size_of::<u64>();
        let fd = aya::maps::IterableMap::map(&map).fd().as_fd().as_raw_fd();
        // SAFETY: a fresh shared mapping of the map's value area, which is `bytes` long (its
        // layout is checked against `maps::LAYOUTS` when pinned maps are reused); nothing else
        // in this process aliases it.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                bytes,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(TableError::Mmap {
                name: maps::DENY_V4_INDEX,
                source: std::io::Error::last_os_error(),
            });
        }
        let words = NonNull::new(ptr.cast::<AtomicU64>()).ok_or(TableError::Mmap {
            name: maps::DENY_V4_INDEX,
            source: std::io::Error::other("mmap returned null"),
        })?;
        Ok(Self {
            words,
            len,
            _map: map,
        })
    }

    fn words(&self) -> &[AtomicU64] {
        // SAFETY: `len` aligned u64 words mapped in `new`, alive until `drop`.
        unsafe { std::slice::from_raw_parts(self.words.as_ptr(), self.len) }
    }

    /// Raises every block to at least its state in `want` (never lowers one).
    fn raise(&self, want: &[u64]) {
        for (live, want) in self.words().iter().zip(want) {
            let now = live.load(Ordering::Acquire);
            if now != *want {
                let merged = max_blocks(now, *want);
                if merged != now {
                    live.store(merged, Ordering::Release);
                }
            }
        }
    }

    /// Makes every word equal to `want`.
    fn set(&self, want: &[u64]) {
        for (live, want) in self.words().iter().zip(want) {
            if live.load(Ordering::Acquire) != *want {
                live.store(*want, Ordering::Release);
            }
        }
    }
}

impl Drop for DenyIndex {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly what `new` mapped; no reference into it outlives `self`.
        unsafe {
            libc::munmap(
                self.words.as_ptr().cast(),
                self.len * std::mem::size_of::<u64>(),
            )
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use netguard_common::{
        packet::Addr,
        prefixes::{BLOCK_CLEAN, BLOCK_PARTIAL, block_of, block_state},
    };

    fn state(index: &[u64], addr: [u8; 4]) -> u8 {
        let block = block_of(&Addr::v4(addr));
        block_state(index[(block / BLOCKS_PER_WORD) as usize], block)
    }

    fn nets(list: &[&str]) -> Vec<Ipv4Net> {
        list.iter().map(|s| s.parse().expect("cidr")).collect()
    }

    #[test]
    fn index_states() {
        let index = deny_v4_index(&nets(&[
            "198.51.100.0/24",
            "10.0.0.0/8",
            "192.0.2.50/32",
            "203.0.113.128/25",
            "203.0.114.0/23",
        ]));
        assert_eq!(index.len(), V4_INDEX_WORDS as usize);
        assert_eq!(state(&index, [198, 51, 100, 7]), BLOCK_ALL);
        assert_eq!(state(&index, [198, 51, 101, 7]), BLOCK_CLEAN);
        assert_eq!(state(&index, [10, 200, 3, 4]), BLOCK_ALL);
        assert_eq!(state(&index, [11, 0, 0, 0]), BLOCK_CLEAN);
        assert_eq!(state(&index, [192, 0, 2, 99]), BLOCK_PARTIAL);
        assert_eq!(state(&index, [203, 0, 113, 1]), BLOCK_PARTIAL);
        assert_eq!(state(&index, [203, 0, 114, 1]), BLOCK_ALL);
        assert_eq!(state(&index, [203, 0, 115, 255]), BLOCK_ALL);
        assert_eq!(state(&index, [203, 0, 116, 0]), BLOCK_CLEAN);
        // A covering prefix wins over a longer one inside, in either order.
        for list in [
            ["10.1.2.3/32", "10.1.0.0/16"],
            ["10.1.0.0/16", "10.1.2.3/32"],
        ] {
            assert_eq!(
                state(&deny_v4_index(&nets(&list)), [10, 1, 2, 9]),
                BLOCK_ALL
            );
        }
        assert_eq!(
            state(&deny_v4_index(&nets(&["0.0.0.0/0"])), [255, 255, 255, 255]),
            BLOCK_ALL
        );
    }

    /// The index never contradicts longest-prefix matching: CLEAN only where nothing matches,
    /// ALL only where something does; PARTIAL defers to the exact lookup.
    #[test]
    fn index_agrees_with_prefix_matching() {
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let list: Vec<Ipv4Net> = (0..2000)
            .map(|_| {
                let r = next();
                // Addresses in a small space so prefixes overlap and share blocks.
                let addr = std::net::Ipv4Addr::from(0x0a00_0000 | (r as u32 & 0x000f_ffff));
                Ipv4Net::new(addr, 12 + (r >> 40) as u8 % 21)
                    .expect("length")
                    .trunc()
            })
            .collect();
        let index = deny_v4_index(&list);
        for _ in 0..100_000 {
            let a = std::net::Ipv4Addr::from(0x0a00_0000 | (next() as u32 & 0x001f_ffff));
            let matched = list.iter().any(|n| n.contains(&a));
            match state(&index, a.octets()) {
                BLOCK_CLEAN => assert!(!matched, "{a} is clean but matched"),
                BLOCK_ALL => assert!(matched, "{a} is covered but nothing matched"),
                _ => assert!(
                    !list.iter().any(|n| n.prefix_len() <= 24 && n.contains(&a)),
                    "{a} partial under a covering prefix"
                ),
            }
        }
    }

    #[test]
    fn raising_keeps_the_stronger_state() {
        let a = u64::from(BLOCK_PARTIAL) | u64::from(BLOCK_CLEAN) << 2;
        let b = u64::from(BLOCK_ALL) << 2;
        assert_eq!(max_blocks(a, b), a | b);
        assert_eq!(
            max_blocks(u64::from(BLOCK_ALL), u64::from(BLOCK_PARTIAL)),
            3
        );
    }
}
