//! Part 1: what one packet costs each program, through `BPF_PROG_TEST_RUN`.

use std::{
    collections::HashSet,
    os::fd::{AsFd as _, OwnedFd},
    process::Command,
    time::Instant,
};

use anyhow::{Context as _, Result, bail, ensure};
use aya::{
    Ebpf, EbpfLoader,
    maps::{HashMap, MapData},
    programs::Xdp,
};
use netguard::{
    policy::{LimiterPlan, MapPlan},
    tables::Tables,
};
use netguard_common::{
    flow::{FlowKey, FlowValue},
    golden,
    limiter::LimiterConfig,
    maps,
    policy::{FLAG_HAS_DENY_V4, FLAG_HAS_DENY_V6, FLAG_HAS_TRUSTED_V4, FilterConfig},
    reason::COUNTER_SLOTS,
};
use netguard_tests::{NetNs, cmd};

use crate::{
    bench::median,
    sys::{self, XDP_DROP, XDP_PASS},
};

/// Runs per `BPF_PROG_TEST_RUN` call, and calls per (program, frame); the median is reported.
pub const REPEAT: u32 = 10_000_000;
pub const ROUNDS: usize = 3;
/// Random denylist sizes (one more prefix, covering the denylisted source, is always added).
pub const DENY_SIZES: [usize; 3] = [0, 10_000, 1_000_000];
pub const SEED: u64 = 0x6e67_6265_6e63_6821;

/// The three input frames, identical for every program.
pub struct Frame {
    pub name: &'static str,
    pub what: &'static str,
    pub bytes: Vec<u8>,
}

pub fn frames() -> Vec<Frame> {
    vec![
        Frame {
            name: "pass",
            what: "TCP SYN 192.0.2.99 → 203.0.113.10:443",
            bytes: golden::v4_tcp(golden::CLIENT, golden::EDGE, 443),
        },
        Frame {
            name: "port 22",
            what: "TCP SYN 192.0.2.99 → 203.0.113.10:22",
            bytes: golden::v4_tcp(golden::CLIENT, golden::EDGE, 22),
        },
        Frame {
            name: "denylisted",
            what: "TCP SYN 198.51.100.7 → 203.0.113.10:443",
            bytes: golden::v4_tcp(golden::DENIED, golden::EDGE, 443),
        },
    ]
}

// ---- random prefixes ---------------------------------------------------------------------

/// xorshift64* (Vigna): tiny, deterministic for a seed, good enough for spreading prefixes.
pub struct XorShift(u64);

impl XorShift {
    pub fn new(seed: u64) -> Self {
        XorShift(seed.max(1))
    }
    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

fn mask(len: u8) -> u32 {
    if len == 0 { 0 } else { u32::MAX << (32 - len) }
}

fn covers(net: u32, len: u8, addr: [u8; 4]) -> bool {
    u32::from_be_bytes(addr) & mask(len) == net
}

/// `n` distinct random IPv4 prefixes, lengths uniform in /8../32, none covering the client
/// (whose packets must not be denylisted) or the denylisted source (which must be covered by
/// exactly the one fixture prefix). The first `k` of `prefixes(n)` are `prefixes(k)`.
pub fn random_prefixes(n: usize) -> Vec<(u32, u8)> {
    let mut rng = XorShift::new(SEED);
    let mut seen = HashSet::with_capacity(n);
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let r = rng.next();
        let len = 8 + (r % 25) as u8;
        let net = (r >> 32) as u32 & mask(len);
        if covers(net, len, golden::CLIENT) || covers(net, len, golden::DENIED) {
            continue;
        }
        if seen.insert((net, len)) {
            out.push((net, len));
        }
    }
    out
}

// ---- netguard ------------------------------------------------------------------------------

/// One netguard object, loaded without pins, with its own maps.
pub struct Netguard {
    pub ebpf: Ebpf,
    /// The maps the daemon writes, filled through its own table code.
    tables: Tables,
    pub label: String,
    /// Entries in NG_DENY_V4.
    pub deny_entries: usize,
}

/// `a.b.c.d/len` parsed into the prefix type the context wants (this crate does not depend on
/// `ipnet` itself).
fn prefix<T: std::str::FromStr>(net: [u8; 4], len: u8) -> T
where
    T::Err: std::fmt::Debug,
{
    format!("{}/{len}", std::net::Ipv4Addr::from(net))
        .parse()
        .expect("valid prefix")
}

impl Netguard {
    /// The golden fixture's tables and config plus `random` denylist prefixes, written the way
    /// the daemon writes them (`Tables::apply`: tries, the denylist's /24 index, the policy
    /// value). With `empty_tables`, no deny or trusted entries at all and their flags off:
    /// what the daemon runs with an empty denylist (the lookups are skipped).
    pub fn load(label: &str, random: &[(u32, u8)], empty_tables: bool) -> Result<Netguard> {
        let mut ebpf = EbpfLoader::new()
            .load(netguard::ebpf_object())
            .context("loading netguard's eBPF object (built with AYA_BUILD_SKIP=1?)")?;
        let mut cfg: FilterConfig = golden::fixture_config(golden::DEFAULT_MODE);
        let mut plan = MapPlan {
            filter: cfg,
            deny_v4: Vec::new(),
            deny_v6: Vec::new(),
            trusted_v4: Vec::new(),
            trusted_v6: Vec::new(),
            limiter: LimiterPlan {
                config: LimiterConfig::EMPTY,
                overrides: Vec::new(),
            },
        };
        if empty_tables {
            cfg.flags &= !(FLAG_HAS_DENY_V4 | FLAG_HAS_DENY_V6 | FLAG_HAS_TRUSTED_V4);
            plan.filter = cfg;
        } else {
            plan.deny_v4 = golden::DENY_V4
                .iter()
                .map(|(net, len)| prefix(*net, *len))
                .chain(
                    random
                        .iter()
                        .map(|(net, len)| prefix(net.to_be_bytes(), *len)),
                )
                .collect();
            plan.deny_v6 = golden::DENY_V6
                .iter()
                .map(|(net, len)| {
                    format!("{}/{len}", std::net::Ipv6Addr::from(*net))
                        .parse()
                        .expect("valid prefix")
                })
                .collect();
            plan.trusted_v4 = golden::TRUSTED_V4
                .iter()
                .map(|(net, len)| prefix(*net, *len))
                .collect();
        }
        let deny_entries = plan.deny_v4.len();
        let mut tables = Tables::from_ebpf(&mut ebpf).context("netguard's maps")?;
        let start = Instant::now();
        tables
            .apply(&plan, &mut |p| {
                if p.done > 0 && p.done % 250_000 == 0 {
                    println!(
                        "    {label}: {} of {} {} entries written ({:.1}s)",
                        p.done,
                        p.total,
                        p.table,
                        start.elapsed().as_secs_f64()
                    );
                }
            })
            .with_context(|| format!("filling {label}"))?;
        let mut flows: HashMap<&mut MapData, FlowKey, FlowValue> = map_mut(&mut ebpf, maps::FLOWS)?;
        flows.insert(
            golden::fixture_flow(),
            FlowValue {
                last_seen_ns: sys::monotonic_ns(),
            },
            0,
        )?;
        let prog: &mut Xdp = ebpf
            .program_mut(maps::XDP_PROGRAM)
            .context("netguard_xdp missing")?
            .try_into()?;
        prog.load().context("loading netguard_xdp")?;
        Ok(Netguard {
            ebpf,
            tables,
            label: label.to_string(),
            deny_entries,
        })
    }

    pub fn prog(&mut self) -> Result<&mut Xdp> {
        Ok(self
            .ebpf
            .program_mut(maps::XDP_PROGRAM)
            .context("netguard_xdp missing")?
            .try_into()?)
    }

    pub fn fd(&mut self) -> Result<OwnedFd> {
        Ok(self.prog()?.fd()?.as_fd().try_clone_to_owned()?)
    }

    /// Packets counted in one counter slot, summed over CPUs.
    pub fn counter(&self, slot: u32) -> Result<u64> {
        ensure!(slot < COUNTER_SLOTS, "counter slot {slot}");
        Ok(self.tables.counters()?[slot as usize].packets)
    }
}

fn map_mut<'a, T>(ebpf: &'a mut Ebpf, name: &str) -> Result<T>
where
    T: TryFrom<&'a mut aya::maps::Map, Error = aya::maps::MapError>,
{
    let map = ebpf
        .map_mut(name)
        .with_context(|| format!("map {name} missing"))?;
    T::try_from(map).with_context(|| format!("map {name}"))
}

/// The floor object (`floor_pass`, `floor_drop`), loaded.
pub fn load_floor() -> Result<Ebpf> {
    let mut ebpf = EbpfLoader::new()
        .load(netguard::floor_object())
        .context("loading the floor object (netguard::floor_object())")?;
    for name in ["floor_pass", "floor_drop"] {
        let p: &mut Xdp = ebpf
            .program_mut(name)
            .with_context(|| format!("{name} missing from the floor object"))?
            .try_into()?;
        p.load().with_context(|| format!("loading {name}"))?;
    }
    Ok(ebpf)
}

pub fn floor_prog<'a>(floor: &'a mut Ebpf, name: &str) -> Result<&'a mut Xdp> {
    Ok(floor
        .program_mut(name)
        .with_context(|| format!("{name} missing"))?
        .try_into()?)
}

// ---- xdp-filter ----------------------------------------------------------------------------

/// xdp-filter (xdp-tools) loaded natively on an interface in `ns`, denying TCP port 22 and the
/// denylisted source address. Unloaded on drop.
pub struct XdpFilter<'a> {
    ns: &'a NetNs,
    iface: String,
    pub prog_id: u32,
    pub prog_name: String,
    pub fd: Option<OwnedFd>,
}

impl<'a> XdpFilter<'a> {
    pub fn load(ns: &'a NetNs, iface: &str) -> Result<XdpFilter<'a>> {
        if std::path::Path::new("/sys/fs/bpf/xdp-filter").exists() {
            bail!(
                "/sys/fs/bpf/xdp-filter exists: xdp-filter is already loaded somewhere on this \
                 machine (or a killed run left its pins). Check `xdp-filter status`; the \
                 benchmark does not share it"
            );
        }
        let mut guard = XdpFilter {
            ns,
            iface: iface.to_string(),
            prog_id: 0,
            prog_name: String::new(),
            fd: None,
        };
        let denied = std::net::Ipv4Addr::from(golden::DENIED).to_string();
        guard.run(&["load", iface])?;
        guard.run(&["port", "22", "--proto", "tcp"])?;
        guard.run(&["ip", &denied, "--mode", "src"])?;
        let (id, name) = xdp_prog_of(ns, iface)?;
        guard.prog_id = id;
        guard.prog_name = name;
        guard.fd = Some(sys::prog_fd_by_id(id)?);
        Ok(guard)
    }

    fn run(&self, args: &[&str]) -> Result<String> {
        let mut c = self.ns.nsenter_command(&["xdp-filter"]);
        c.args(args);
        let desc = cmd::describe(&c);
        let out = cmd::run(&mut c, cmd::COMMAND_TIMEOUT)?;
        if !out.status.success() {
            bail!(
                "`{desc}` failed ({}): {}{}",
                out.status,
                cmd::lossy(&out.stdout),
                cmd::lossy(&out.stderr)
            );
        }
        Ok(cmd::lossy(&out.stdout))
    }
}

impl Drop for XdpFilter<'_> {
    fn drop(&mut self) {
        self.fd = None;
        if let Err(e) = self.run(&["unload", &self.iface]) {
            eprintln!("bench: unloading xdp-filter: {e}");
        }
    }
}

/// The id and name of the XDP program attached to `iface` in `ns` (`ip -d -j link show`).
pub fn xdp_prog_of(ns: &NetNs, iface: &str) -> Result<(u32, String)> {
    let out = cmd::run_ok(Command::new("ip").args([
        "-n",
        ns.name(),
        "-d",
        "-j",
        "link",
        "show",
        "dev",
        iface,
    ]));
    let v: serde_json::Value = serde_json::from_str(&out).context("parsing `ip -j link`")?;
    let xdp = &v[0]["xdp"];
    let prog = if xdp["prog"].is_object() {
        &xdp["prog"]
    } else {
        &xdp["attached"][0]["prog"]
    };
    let id = prog["id"]
        .as_u64()
        .with_context(|| format!("no XDP program id on {iface}: {out}"))?;
    Ok((id as u32, prog["name"].as_str().unwrap_or("?").to_string()))
}

// ---- the measurement -----------------------------------------------------------------------

pub struct Subject {
    pub name: String,
    pub detail: String,
    pub fd: OwnedFd,
    /// The verdict expected for each frame of [`frames`].
    pub expect: [u32; 3],
}

/// Every call, per subject and frame: `runs[subject][frame]` has [`ROUNDS`] entries.
pub struct CostResults {
    pub subjects: Vec<(String, String)>,
    pub frames: Vec<(&'static str, &'static str, usize)>,
    pub runs: Vec<Vec<Vec<sys::Run>>>,
    /// Per subject: (JIT-compiled bytes, translated eBPF instructions).
    pub sizes: Vec<(u32, u32)>,
    pub cpu: usize,
}

impl CostResults {
    /// Median of this thread's CPU ns per run.
    pub fn median(&self, subject: usize, frame: usize) -> f64 {
        median(self.runs[subject][frame].iter().map(|r| r.cpu_ns).collect())
    }
    pub fn median_kernel(&self, subject: usize, frame: usize) -> f64 {
        median(
            self.runs[subject][frame]
                .iter()
                .map(|r| f64::from(r.kernel_ns))
                .collect(),
        )
    }
    pub fn index(&self, name: &str) -> usize {
        self.subjects
            .iter()
            .position(|(n, _)| n == name)
            .unwrap_or_else(|| panic!("no subject {name}"))
    }
}

/// Checks each subject's verdicts, then runs [`ROUNDS`] rounds of every (frame, subject), each
/// `REPEAT` times, on one pinned CPU.
pub fn measure(subjects: &[Subject], frames: &[Frame], cpu: usize) -> Result<CostResults> {
    for s in subjects {
        for (f, want) in frames.iter().zip(s.expect) {
            let got = sys::test_run(s.fd.as_fd(), &f.bytes, 1)?.retval;
            ensure!(
                got == want,
                "{} returned {} for the {} frame, expected {}",
                s.name,
                verdict(got),
                f.name,
                verdict(want)
            );
        }
    }
    let mut runs = vec![vec![Vec::with_capacity(ROUNDS); frames.len()]; subjects.len()];
    let result = std::thread::scope(|scope| {
        scope
            .spawn(|| -> Result<()> {
                sys::pin_to_cpu(0, cpu)?;
                sys::set_nice(0, crate::flood::NICE)?;
                for round in 0..ROUNDS {
                    let start = Instant::now();
                    for (fi, f) in frames.iter().enumerate() {
                        for (si, s) in subjects.iter().enumerate() {
                            let r = sys::test_run(s.fd.as_fd(), &f.bytes, REPEAT)?;
                            ensure!(r.retval == s.expect[fi], "{}: verdict changed", s.name);
                            runs[si][fi].push(r);
                        }
                    }
                    println!(
                        "    round {}/{ROUNDS} done in {:.1}s",
                        round + 1,
                        start.elapsed().as_secs_f64()
                    );
                }
                Ok(())
            })
            .join()
            .unwrap_or_else(|p| std::panic::resume_unwind(p))
    });
    result?;
    Ok(CostResults {
        subjects: subjects
            .iter()
            .map(|s| (s.name.clone(), s.detail.clone()))
            .collect(),
        sizes: subjects
            .iter()
            .map(|s| sys::prog_info(s.fd.as_fd()).map_or((0, 0), |(_, jit, x)| (jit, x / 8)))
            .collect(),
        frames: frames
            .iter()
            .map(|f| (f.name, f.what, f.bytes.len()))
            .collect(),
        runs,
        cpu,
    })
}

pub fn verdict(v: u32) -> &'static str {
    match v {
        XDP_DROP => "XDP_DROP",
        XDP_PASS => "XDP_PASS",
        sys::XDP_TX => "XDP_TX",
        0 => "XDP_ABORTED",
        _ => "?",
    }
}
