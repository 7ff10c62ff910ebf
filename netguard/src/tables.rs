//! Reading and writing netguard's maps, from the daemon (maps it just loaded) or from the CLI
//! (maps reopened from their pins, with no daemon running).

use std::{collections::HashSet, time::Instant};

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
    private_net::{GatewayKey, PN_REASON_COUNT},
    reason::{COUNTER_SLOTS, Counter},
};

use crate::{
    deny_banks::{DenyBanks, DenyReport},
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
    #[error("creating denylist map {name}: {source}")]
    Create { name: String, source: MapError },
    #[error("clearing slot {slot} of {name}: {source}")]
    Clear {
        name: &'static str,
        slot: u32,
        source: std::io::Error,
    },
    #[error("denylist map {name} in bank {bank} has {found}, this netguard expects {expected}")]
    InnerLayout {
        name: &'static str,
        bank: u32,
        found: String,
        expected: String,
    },
}

pub(crate) fn map_err(name: &'static str) -> impl Fn(MapError) -> TableError {
    move |source| TableError::Map { name, source }
}

pub(crate) type Trie<K> = LpmTrie<MapData, K, u8>;

/// Handles on every map netguard writes.
pub struct Tables {
    config: Array<MapData, FilterConfig>,
    counters: PerCpuArray<MapData, Counter>,
    deny: DenyBanks,
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
            deny: DenyBanks::new(
                typed(get, maps::DENY_BANK)?,
                get(maps::DENY_V4)?,
                get(maps::DENY_V4_INDEX)?,
                get(maps::DENY_V6)?,
            )?,
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
    /// goes missing). The denylist changes as [`DenyBanks::apply`] decides: not at all, as a
    /// diff in the live bank, or rebuilt in the other bank and switched in with one write.
    pub fn apply(
        &mut self,
        plan: &MapPlan,
        progress: &mut dyn FnMut(FillProgress),
    ) -> Result<ApplyReport, TableError> {
        Ok(self.apply_all(plan, progress)?.0)
    }

    /// [`Tables::apply`], also telling how the denylist changed.
    pub fn apply_all(
        &mut self,
        plan: &MapPlan,
        progress: &mut dyn FnMut(FillProgress),
    ) -> Result<(ApplyReport, DenyReport), TableError> {
        let mut report = ApplyReport::default();
        // The filter skips a family whose flag is clear: before the new denylist can be
        // live, its flags must be on (a superset is harmless: an empty trie just misses).
        let wanted = plan.filter.flags & (FLAG_HAS_DENY_V4 | FLAG_HAS_DENY_V6);
        let mut live = self.filter_config()?;
        if live.flags & wanted != wanted {
            live.flags |= wanted;
            self.set_filter_config(&live)?;
        }
        let deny = self
            .deny
            .apply(&plan.deny_v4, &plan.deny_v6, &mut report, progress)?;
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
        Ok((report, deny))
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

    /// Adds denylist entries to the live bank (effective on the next packet).
    pub fn deny_add(&mut self, nets: &[IpNet]) -> Result<(), TableError> {
        let (v4, v6) = policy::split(nets);
        let mut cfg = self.filter_config()?;
        self.deny.add(&v4, &v6)?;
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

    /// Removes exact entries from the live bank; returns the ones that were not present.
    pub fn deny_del(&mut self, nets: &[IpNet]) -> Result<Vec<IpNet>, TableError> {
        let (v4, v6) = policy::split(nets);
        self.deny.del(&v4, &v6)
    }

    /// Every denylist entry of the live bank, sorted.
    pub fn deny_list(&self) -> Result<Vec<IpNet>, TableError> {
        self.deny.list()
    }

    /// The denylist bank the XDP program consults.
    pub fn deny_bank(&self) -> Result<u32, TableError> {
        self.deny.active_bank()
    }

    /// Ids of the maps in a denylist bank's slots (IPv4 trie, /24 index, IPv6 trie); `None`
    /// for an empty slot.
    pub fn deny_slots(&self, bank: u32) -> Result<[Option<u32>; 3], TableError> {
        self.deny.slot_ids(bank)
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

pub(crate) fn is_missing(e: &MapError) -> bool {
    matches!(e, MapError::KeyNotFound)
        || matches!(e, MapError::SyscallError(s) if s.io_error.raw_os_error() == Some(libc::ENOENT))
}

pub fn v4_key(n: &Ipv4Net) -> Key<[u8; 4]> {
    Key::new(n.prefix_len().into(), n.network().octets())
}

pub fn v6_key(n: &Ipv6Net) -> Key<[u8; 16]> {
    Key::new(n.prefix_len().into(), n.network().octets())
}

pub(crate) fn from_v4_key(k: &Key<[u8; 4]>) -> Option<Ipv4Net> {
    Ipv4Net::new(k.data().into(), u8::try_from(k.prefix_len()).ok()?).ok()
}

pub(crate) fn from_v6_key(k: &Key<[u8; 16]>) -> Option<Ipv6Net> {
    Ipv6Net::new(k.data().into(), u8::try_from(k.prefix_len()).ok()?).ok()
}

pub(crate) trait Prefix: Copy + Eq + std::hash::Hash {}
impl Prefix for Ipv4Net {}
impl Prefix for Ipv6Net {}

pub(crate) fn current<K: aya::Pod, N: Prefix>(
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
pub(crate) struct Codec<K, N> {
    pub name: &'static str,
    pub encode: fn(&N) -> Key<K>,
    pub decode: fn(&Key<K>) -> Option<N>,
}

pub(crate) const DENY_V4: Codec<[u8; 4], Ipv4Net> = Codec {
    name: maps::DENY_V4,
    encode: v4_key,
    decode: from_v4_key,
};
pub(crate) const DENY_V6: Codec<[u8; 16], Ipv6Net> = Codec {
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

/// Makes `trie` hold exactly `desired`: reads what is there, then [`apply_diff`].
fn sync<K: aya::Pod, N: Prefix>(
    trie: &mut Trie<K>,
    codec: &Codec<K, N>,
    desired: &[N],
    report: &mut ApplyReport,
    progress: &mut dyn FnMut(FillProgress),
    between: &mut dyn FnMut(),
) -> Result<(), TableError> {
    let existing = current(trie, codec.name, codec.decode)?;
    let diff = policy::diff(&existing, desired);
    apply_diff(trie, codec, &diff, progress, between)?;
    report.added += diff.add.len();
    report.removed += diff.remove.len();
    report.unchanged += desired.len() - diff.add.len();
    Ok(())
}

/// Adds what `diff` adds, calls `between`, then removes what it removes. Reports progress
/// every 50,000 entries, and at the end of a long run.
pub(crate) fn apply_diff<K: aya::Pod, N: Prefix>(
    trie: &mut Trie<K>,
    codec: &Codec<K, N>,
    diff: &policy::Diff<N>,
    progress: &mut dyn FnMut(FillProgress),
    between: &mut dyn FnMut(),
) -> Result<(), TableError> {
    let name = codec.name;
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
    Ok(())
}
