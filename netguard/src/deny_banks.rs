//! The denylist's two banks: each bank is an IPv4 trie, its /24 index and an IPv6 trie, held
//! in slot `bank` of the outer arrays of maps (`NG_DENY_V4`, `NG_DENY_V4_IDX`, `NG_DENY_V6`).
//! `NG_DENY_BANK` names the live bank; the XDP program reads it once per packet and takes
//! every map from that bank.
//!
//! A reload that changes many entries builds the whole new list in fresh maps in the other
//! bank, off the hot path, then makes it live with one write of the bank word: every packet
//! sees either the old list or the new one, never a mix. Then the old bank's slots are cleared
//! (after the programs that could still be using them have finished) and the kernel frees its
//! maps. A few changes (`netguard deny add/del`, a reload touching up to [`DIFF_LIMIT`]
//! entries) go into the live bank as a diff, additions before removals. A reload that leaves
//! the list as it is writes nothing.

use std::{
    collections::HashSet,
    os::fd::{AsFd as _, AsRawFd as _},
    ptr::NonNull,
    sync::atomic::{AtomicU64, Ordering},
};

use aya::maps::{Array, ArrayOfMaps, FromMapData, InnerMap, Map, MapData};
use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use netguard_common::{
    maps::{self, DENY_BANKS, DENY_INNER, InnerLayout},
    prefixes::{BLOCK_ALL, BLOCKS_PER_WORD, V4_BLOCKS, V4_INDEX_WORDS, blocks_of_prefix},
};

use crate::{
    policy::{self, Diff},
    tables::{
        ApplyReport, DENY_V4, DENY_V6, FillProgress, TableError, Trie, apply_diff, current,
        from_v4_key, from_v6_key, is_missing, map_err, v4_key, v6_key,
    },
};

/// A reload changing more entries than this builds the list in the other bank and switches
/// to it; up to this many are written into the live bank as a diff (at ≈ 2 µs per entry, the
/// window in which part of a diff is applied stays around 2 ms).
pub const DIFF_LIMIT: usize = 1_000;

/// How a denylist reaches the maps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DenyAction {
    /// The live bank already holds exactly this list: nothing is written.
    Unchanged,
    /// A few entries change in the live bank, additions first.
    Diff,
    /// The list is built in bank `into`, which then becomes the live one.
    Rebuild { into: u32 },
}

/// The bank a rebuild fills while `live` serves packets.
pub const fn other_bank(live: u32) -> u32 {
    (live + 1) % DENY_BANKS
}

/// Chooses how to go from the live bank's contents to the wanted list, given how many entries
/// the diff between them adds and removes.
pub fn choose(live: u32, changes: usize) -> DenyAction {
    match changes {
        0 => DenyAction::Unchanged,
        n if n <= DIFF_LIMIT => DenyAction::Diff,
        _ => DenyAction::Rebuild {
            into: other_bank(live),
        },
    }
}

/// What one [`DenyBanks::apply`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DenyReport {
    pub action: DenyAction,
    /// The live bank afterwards.
    pub bank: u32,
}

/// An inner map's shape, for errors.
pub fn describe_inner(
    map_type: u32,
    key_size: u32,
    value_size: u32,
    max_entries: u32,
    flags: u32,
) -> String {
    format!(
        "type {map_type} key {key_size} B value {value_size} B max_entries {max_entries} flags {flags:#x}"
    )
}

/// Logs how the denylist reached the maps.
pub fn log_report(r: &DenyReport) {
    match r.action {
        DenyAction::Unchanged => tracing::info!(bank = r.bank, "denylist unchanged"),
        DenyAction::Diff => tracing::info!(bank = r.bank, "denylist patched in the live bank"),
        DenyAction::Rebuild { into } => {
            tracing::info!(bank = into, "denylist built in a new bank and switched in")
        }
    }
}

/// One outer array of maps, with a slot per bank.
struct Outer {
    name: &'static str,
    map: Map,
}

impl Outer {
    fn new(name: &'static str, map: Map) -> Result<Self, TableError> {
        match map {
            Map::ArrayOfMaps(_) => Ok(Self { name, map }),
            _ => Err(map_err(name)(aya::maps::MapError::InvalidMapType {
                map_type: maps::BPF_MAP_TYPE_ARRAY_OF_MAPS,
            })),
        }
    }

    /// The map in slot `bank`, checked against `spec`; `None` for an empty slot.
    fn get<V: FromMapData + InnerMap>(
        &self,
        bank: u32,
        spec: &InnerLayout,
    ) -> Result<Option<(V, u32)>, TableError> {
        let view: ArrayOfMaps<&MapData, MapData> =
            ArrayOfMaps::try_from(&self.map).map_err(map_err(self.name))?;
        let data = match view.get(&bank, 0) {
            Ok(d) => d,
            Err(e) if is_missing(&e) => return Ok(None),
            Err(e) => return Err(map_err(self.name)(e)),
        };
        let info = data.info().map_err(map_err(self.name))?;
        let map_type = info.map_type().map(|t| t as u32).unwrap_or(u32::MAX);
        if !spec.accepts(
            map_type,
            info.key_size(),
            info.value_size(),
            info.max_entries(),
            info.map_flags(),
        ) {
            return Err(TableError::InnerLayout {
                name: self.name,
                bank,
                found: describe_inner(
                    map_type,
                    info.key_size(),
                    info.value_size(),
                    info.max_entries(),
                    info.map_flags(),
                ),
                expected: describe_inner(
                    spec.layout.map_type,
                    spec.layout.key_size,
                    spec.layout.value_size,
                    spec.layout.max_entries,
                    spec.flags,
                ),
            });
        }
        let id = info.id();
        Ok(Some((
            V::from_map_data(data).map_err(map_err(self.name))?,
            id,
        )))
    }

    fn set<V: InnerMap>(&mut self, bank: u32, inner: &V) -> Result<(), TableError> {
        let mut view: ArrayOfMaps<&mut MapData, V> =
            ArrayOfMaps::try_from(&mut self.map).map_err(map_err(self.name))?;
        view.set(bank, inner, 0).map_err(map_err(self.name))
    }

    /// Empties slot `bank` (aya has no delete for arrays of maps): the slot's reference to its
    /// map goes, and the kernel frees the map once nothing else holds it.
    fn clear(&self, bank: u32) -> Result<(), TableError> {
        let Map::ArrayOfMaps(data) = &self.map else {
            unreachable!("checked in Outer::new");
        };
        /// The `bpf_attr` of the element commands (`BPF_MAP_*_ELEM`).
        #[repr(C)]
        struct ElemAttr {
            map_fd: u32,
            _pad: u32,
            key: u64,
            value: u64,
            flags: u64,
        }
        const BPF_MAP_DELETE_ELEM: libc::c_long = 3;
        let key = bank;
        let attr = ElemAttr {
            map_fd: data.fd().as_fd().as_raw_fd() as u32,
            _pad: 0,
            key: &raw const key as u64,
            value: 0,
            flags: 0,
        };
        // SAFETY: `attr` is a valid `bpf_attr` prefix for BPF_MAP_DELETE_ELEM, its key pointer
        // points at a live u32, and the size passed is the struct's.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                BPF_MAP_DELETE_ELEM,
                &raw const attr,
                std::mem::size_of::<ElemAttr>(),
            )
        };
        if rc == 0 {
            return Ok(());
        }
        let err = std::io::Error::last_os_error();
        if err.raw_os_error() == Some(libc::ENOENT) {
            return Ok(());
        }
        Err(TableError::Clear {
            name: self.name,
            slot: bank,
            source: err,
        })
    }
}

/// The outer maps and the bank word.
pub struct DenyBanks {
    bank: Array<MapData, u32>,
    v4: Outer,
    index: Outer,
    v6: Outer,
    /// What this process last wrote to the live bank, while nothing else has edited it.
    known: Option<Known>,
}

/// The live bank's contents as this process left them: valid while the bank and the edit
/// counter (`maps::DENY_EDITS_SLOT`) are as recorded. Spares a reload reading a
/// million-entry trie back from the kernel to find it unchanged.
struct Known {
    bank: u32,
    edits: u32,
    v4: Vec<Ipv4Net>,
    v6: Vec<Ipv6Net>,
}

/// One bank's inner maps, opened (or created) by this process.
pub struct Bank {
    pub id: u32,
    v4: Trie<[u8; 4]>,
    index: DenyIndex,
    v6: Trie<[u8; 16]>,
}

fn create_inner(spec: &InnerLayout, bank: u32) -> Result<MapData, TableError> {
    let l = spec.layout;
    let obj = aya_obj::Map::new_from_params(
        l.map_type,
        l.key_size,
        l.value_size,
        l.max_entries,
        spec.flags,
    );
    let name = format!("{}{bank}", spec.name);
    MapData::create(obj, &name, None).map_err(|source| TableError::Create { name, source })
}

fn new_inner<V: FromMapData>(spec: &InnerLayout, bank: u32) -> Result<V, TableError> {
    V::from_map_data(create_inner(spec, bank)?).map_err(map_err(spec.outer))
}

impl DenyBanks {
    pub fn new(
        bank: Array<MapData, u32>,
        v4: Map,
        index: Map,
        v6: Map,
    ) -> Result<Self, TableError> {
        Ok(Self {
            bank,
            v4: Outer::new(maps::DENY_V4, v4)?,
            index: Outer::new(maps::DENY_V4_INDEX, index)?,
            v6: Outer::new(maps::DENY_V6, v6)?,
            known: None,
        })
    }

    /// The bank the XDP program consults (read the way the program reads it).
    pub fn active_bank(&self) -> Result<u32, TableError> {
        let word = self
            .bank
            .get(&maps::DENY_BANK_SLOT, 0)
            .map_err(map_err(maps::DENY_BANK))?;
        Ok(word & (DENY_BANKS - 1))
    }

    fn edits(&self) -> Result<u32, TableError> {
        self.bank
            .get(&maps::DENY_EDITS_SLOT, 0)
            .map_err(map_err(maps::DENY_BANK))
    }

    /// Tells a running daemon the live bank changed behind its back (`deny add/del`).
    fn count_edit(&mut self) -> Result<(), TableError> {
        let next = self.edits()?.wrapping_add(1);
        self.known = None;
        self.bank
            .set(maps::DENY_EDITS_SLOT, next, 0)
            .map_err(map_err(maps::DENY_BANK))
    }

    /// Ids of the maps in bank `bank`'s slots (v4 trie, index, v6 trie), for inspection.
    pub fn slot_ids(&self, bank: u32) -> Result<[Option<u32>; 3], TableError> {
        let [v4, index, v6] = &DENY_INNER;
        Ok([
            self.v4.get::<MapData>(bank, v4)?.map(|(_, id)| id),
            self.index.get::<MapData>(bank, index)?.map(|(_, id)| id),
            self.v6.get::<MapData>(bank, v6)?.map(|(_, id)| id),
        ])
    }

    /// Bank `id`'s maps; `None` when a slot is empty and `create` is false. With `create`,
    /// empty slots get fresh empty maps (a first start: nothing consults them before the
    /// policy's denylist flags are set).
    fn open(&mut self, id: u32, create: bool) -> Result<Option<Bank>, TableError> {
        let [v4_spec, index_spec, v6_spec] = &DENY_INNER;
        let v4: Trie<[u8; 4]> = match self.v4.get(id, v4_spec)? {
            Some((m, _)) => m,
            None if create => {
                let m = new_inner(v4_spec, id)?;
                self.v4.set(id, &m)?;
                m
            }
            None => return Ok(None),
        };
        let index: Array<MapData, u64> = match self.index.get(id, index_spec)? {
            Some((m, _)) => m,
            None if create => {
                let m = new_inner(index_spec, id)?;
                self.index.set(id, &m)?;
                m
            }
            None => return Ok(None),
        };
        let v6: Trie<[u8; 16]> = match self.v6.get(id, v6_spec)? {
            Some((m, _)) => m,
            None if create => {
                let m = new_inner(v6_spec, id)?;
                self.v6.set(id, &m)?;
                m
            }
            None => return Ok(None),
        };
        Ok(Some(Bank {
            id,
            v4,
            index: DenyIndex::new(index)?,
            v6,
        }))
    }

    fn live(&mut self, create: bool) -> Result<Option<Bank>, TableError> {
        let id = self.active_bank()?;
        self.open(id, create)
    }

    /// Fresh, empty maps for bank `id`, in no slot yet.
    fn create(id: u32) -> Result<Bank, TableError> {
        let [v4_spec, index_spec, v6_spec] = &DENY_INNER;
        Ok(Bank {
            id,
            v4: new_inner(v4_spec, id)?,
            index: DenyIndex::new(new_inner(index_spec, id)?)?,
            v6: new_inner(v6_spec, id)?,
        })
    }

    /// Brings the denylist to `v4` + `v6` as [`choose`] decides. Counts go into `report`.
    pub fn apply(
        &mut self,
        v4: &[Ipv4Net],
        v6: &[Ipv6Net],
        report: &mut ApplyReport,
        progress: &mut dyn FnMut(FillProgress),
    ) -> Result<DenyReport, TableError> {
        let live_id = self.active_bank()?;
        let edits = self.edits()?;
        let known = self
            .known
            .take()
            .filter(|k| k.bank == live_id && k.edits == edits);
        if let Some(k) = &known
            && k.v4 == v4
            && k.v6 == v6
        {
            report.unchanged += v4.len() + v6.len();
            self.known = known;
            return Ok(DenyReport {
                action: DenyAction::Unchanged,
                bank: live_id,
            });
        }
        let live = self
            .open(live_id, true)?
            .expect("open with create yields a bank");
        // The plan's lists are sorted and deduplicated (denylist::load), as is what was
        // written last: a merge walk then diffs a million entries in milliseconds.
        let (d4, d6) = match known {
            Some(k)
                if [&k.v4[..], v4].iter().all(|l| l.is_sorted_by(|a, b| a < b))
                    && [&k.v6[..], v6].iter().all(|l| l.is_sorted_by(|a, b| a < b)) =>
            {
                (
                    policy::diff_sorted(&k.v4, v4),
                    policy::diff_sorted(&k.v6, v6),
                )
            }
            Some(k) => (
                policy::diff(&k.v4.into_iter().collect(), v4),
                policy::diff(&k.v6.into_iter().collect(), v6),
            ),
            None => {
                let (now4, now6) = live.contents()?;
                (policy::diff(&now4, v4), policy::diff(&now6, v6))
            }
        };
        let changes = d4.add.len() + d4.remove.len() + d6.add.len() + d6.remove.len();
        report.added += d4.add.len() + d6.add.len();
        report.removed += d4.remove.len() + d6.remove.len();
        report.unchanged += (v4.len() - d4.add.len()) + (v6.len() - d6.add.len());
        let action = choose(live_id, changes);
        let mut live = live;
        match action {
            DenyAction::Unchanged => {}
            DenyAction::Diff => live.patch(&d4, &d6, v4, progress)?,
            DenyAction::Rebuild { into } => {
                let mut fresh = Self::create(into)?;
                fresh.fill(v4, v6, progress)?;
                self.switch(live, fresh)?;
            }
        }
        let bank = self.active_bank()?;
        self.known = Some(Known {
            bank,
            edits,
            v4: v4.to_vec(),
            v6: v6.to_vec(),
        });
        Ok(DenyReport { action, bank })
    }

    /// Makes `fresh` live: its maps go into their slots, the bank word flips (the one switch
    /// point), and once no program can still be using `old` its slots are cleared.
    fn switch(&mut self, old: Bank, fresh: Bank) -> Result<(), TableError> {
        let into = fresh.id;
        self.v4.set(into, &fresh.v4)?;
        self.index.set(into, &fresh.index.map)?;
        self.v6.set(into, &fresh.v6)?;
        self.bank
            .set(0, into, 0)
            .map_err(map_err(maps::DENY_BANK))?;
        // A program that read the old bank number just before the flip may not have looked up
        // its slots yet. Every update of an array of maps returns only after an RCU grace
        // period (the kernel's `maybe_wait_bpf_programs`), that is after every program running
        // at the flip has finished: rewriting a slot with the map it already holds is that wait.
        self.v4.set(into, &fresh.v4)?;
        let old_id = old.id;
        drop(old);
        self.v4.clear(old_id)?;
        self.index.clear(old_id)?;
        self.v6.clear(old_id)?;
        Ok(())
    }

    /// Adds entries to the live bank: tries first, then the index is raised.
    pub fn add(&mut self, v4: &[Ipv4Net], v6: &[Ipv6Net]) -> Result<(), TableError> {
        let mut live = self.live(true)?.expect("open with create yields a bank");
        for n in v4 {
            live.v4
                .insert(&v4_key(n), 1, 0)
                .map_err(map_err(maps::DENY_V4))?;
        }
        if !v4.is_empty() {
            // Only raises: the blocks of the new prefixes, nothing else.
            live.index.raise(&deny_v4_index(v4));
        }
        for n in v6 {
            live.v6
                .insert(&v6_key(n), 1, 0)
                .map_err(map_err(maps::DENY_V6))?;
        }
        self.count_edit()
    }

    /// Removes exact entries from the live bank; returns the ones that were not present.
    pub fn del(&mut self, v4: &[Ipv4Net], v6: &[Ipv6Net]) -> Result<Vec<IpNet>, TableError> {
        let Some(mut live) = self.live(false)? else {
            return Ok(v4
                .iter()
                .map(|n| IpNet::V4(*n))
                .chain(v6.iter().map(|n| IpNet::V6(*n)))
                .collect());
        };
        let mut missing = Vec::new();
        for n in v4 {
            match live.v4.remove(&v4_key(n)) {
                Ok(()) => {}
                Err(e) if is_missing(&e) => missing.push(IpNet::V4(*n)),
                Err(e) => return Err(map_err(maps::DENY_V4)(e)),
            }
        }
        if !v4.is_empty() {
            // A block may stay covered by other prefixes: recompute it from what the trie holds.
            let rest: Vec<Ipv4Net> = current(&live.v4, maps::DENY_V4, from_v4_key)?
                .into_iter()
                .collect();
            live.index.set(&deny_v4_index(&rest));
        }
        for n in v6 {
            match live.v6.remove(&v6_key(n)) {
                Ok(()) => {}
                Err(e) if is_missing(&e) => missing.push(IpNet::V6(*n)),
                Err(e) => return Err(map_err(maps::DENY_V6)(e)),
            }
        }
        self.count_edit()?;
        Ok(missing)
    }

    /// Every entry of the live bank, sorted.
    pub fn list(&self) -> Result<Vec<IpNet>, TableError> {
        let id = self.active_bank()?;
        let [v4_spec, _, v6_spec] = &DENY_INNER;
        let mut out = Vec::new();
        if let Some((trie, _)) = self.v4.get::<Trie<[u8; 4]>>(id, v4_spec)? {
            out.extend(
                current(&trie, maps::DENY_V4, from_v4_key)?
                    .into_iter()
                    .map(IpNet::V4),
            );
        }
        if let Some((trie, _)) = self.v6.get::<Trie<[u8; 16]>>(id, v6_spec)? {
            out.extend(
                current(&trie, maps::DENY_V6, from_v6_key)?
                    .into_iter()
                    .map(IpNet::V6),
            );
        }
        out.sort_unstable();
        Ok(out)
    }
}

impl Bank {
    fn contents(&self) -> Result<(HashSet<Ipv4Net>, HashSet<Ipv6Net>), TableError> {
        Ok((
            current(&self.v4, maps::DENY_V4, from_v4_key)?,
            current(&self.v6, maps::DENY_V6, from_v6_key)?,
        ))
    }

    /// A diff in place, in the order that never lets a wanted entry go missing: the trie's
    /// additions, each /24 raised to at least its new state, the removals, then every /24 at
    /// exactly its new state.
    fn patch(
        &mut self,
        d4: &Diff<Ipv4Net>,
        d6: &Diff<Ipv6Net>,
        v4: &[Ipv4Net],
        progress: &mut dyn FnMut(FillProgress),
    ) -> Result<(), TableError> {
        let index = deny_v4_index(v4);
        let live_index = &self.index;
        apply_diff(&mut self.v4, &DENY_V4, d4, progress, &mut || {
            live_index.raise(&index)
        })?;
        self.index.set(&index);
        apply_diff(&mut self.v6, &DENY_V6, d6, progress, &mut || {})
    }

    /// Fills fresh (empty, not yet live) maps.
    fn fill(
        &mut self,
        v4: &[Ipv4Net],
        v6: &[Ipv6Net],
        progress: &mut dyn FnMut(FillProgress),
    ) -> Result<(), TableError> {
        let d4 = Diff {
            add: v4.to_vec(),
            remove: Vec::new(),
        };
        let d6 = Diff {
            add: v6.to_vec(),
            remove: Vec::new(),
        };
        apply_diff(&mut self.v4, &DENY_V4, &d4, progress, &mut || {})?;
        self.index.set(&deny_v4_index(v4));
        apply_diff(&mut self.v6, &DENY_V6, &d6, progress, &mut || {})
    }
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
    map: Array<MapData, u64>,
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
        Ok(Self { words, len, map })
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
    fn unchanged_lists_write_nothing() {
        assert_eq!(choose(0, 0), DenyAction::Unchanged);
        assert_eq!(choose(1, 0), DenyAction::Unchanged);
    }

    #[test]
    fn small_changes_patch_the_live_bank() {
        assert_eq!(choose(0, 1), DenyAction::Diff);
        assert_eq!(choose(1, DIFF_LIMIT), DenyAction::Diff);
    }

    #[test]
    fn large_changes_rebuild_in_the_other_bank() {
        assert_eq!(choose(0, DIFF_LIMIT + 1), DenyAction::Rebuild { into: 1 });
        assert_eq!(choose(1, 1_000_000), DenyAction::Rebuild { into: 0 });
        // Two banks: a rebuild never fills the live one, and two rebuilds come back.
        for live in 0..DENY_BANKS {
            assert_ne!(other_bank(live), live);
            assert_eq!(other_bank(other_bank(live)), live);
        }
    }

    /// The decision as a reload makes it: the diff between what the live bank holds and the
    /// new list decides, not the list's size.
    #[test]
    fn reload_decisions_follow_the_diff() {
        let big: Vec<Ipv4Net> = (0..5_000u32)
            .map(|i| {
                Ipv4Net::new(std::net::Ipv4Addr::from(0x0a00_0000 + (i << 8)), 24).expect("net")
            })
            .collect();
        let live: HashSet<Ipv4Net> = big.iter().copied().collect();
        let changes = |d: &Diff<Ipv4Net>| d.add.len() + d.remove.len();
        // The same list: nothing.
        assert_eq!(
            choose(0, changes(&policy::diff(&live, &big))),
            DenyAction::Unchanged
        );
        // One entry leaves and one enters: a diff of two in the live bank.
        let mut swapped = big.clone();
        swapped[0] = nets(&["192.0.2.7/32"])[0];
        assert_eq!(changes(&policy::diff(&live, &swapped)), 2);
        assert_eq!(choose(0, 2), DenyAction::Diff);
        // A different list of the same size: built in the other bank.
        let other: Vec<Ipv4Net> = big
            .iter()
            .map(|n| {
                Ipv4Net::new(
                    std::net::Ipv4Addr::from(u32::from(n.network()) | 0x0080_0000),
                    24,
                )
                .expect("net")
            })
            .collect();
        let d = policy::diff(&live, &other);
        assert_eq!(choose(1, changes(&d)), DenyAction::Rebuild { into: 0 });
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
