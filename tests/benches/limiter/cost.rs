//! Part 2: what one packet costs the tc limiter program, through `BPF_PROG_TEST_RUN`, beside a
//! pass-through tc program.

use std::time::Instant;

use anyhow::{Context as _, Result, ensure};
use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, HashMap, MapData},
    programs::{ProgramError, SchedClassifier, TestRun as _, TestRunOptions},
};
use netguard_common::{
    bucket::BucketParams,
    golden,
    limiter::{BucketKey, BucketState, DIR_DOWNLOAD, DIR_UPLOAD, LimiterConfig, bucket_key},
    maps,
    packet::{Addr, ETH_P_IPV4},
};

use crate::sys;

/// Runs per call, and calls per program; the median is reported.
pub const REPEAT: u32 = 10_000_000;
pub const ROUNDS: usize = 3;
/// The CPU the measuring thread is pinned to.
pub const CPU: usize = 1;
/// The production rate, with a burst no test run can spend (10^15 bytes: 13 days of 1,514-byte
/// frames at 10 ns each), so every run takes the pass path of a bucket that has credit.
pub const RATE: u64 = 20_000_000;
pub const HUGE_BURST: u64 = 1_000_000_000_000_000;
/// `TC_ACT_UNSPEC` (-1) as the test run reports it.
pub const TC_ACT_UNSPEC: u32 = u32::MAX;

pub const CONTAINER: [u8; 4] = [172, 17, 0, 2];
pub const REMOTE: [u8; 4] = [192, 0, 2, 10];
pub const OUTSIDE: [u8; 4] = [10, 99, 0, 2];

/// A 1,514-byte TCP frame (ACK with 1,460 bytes of payload).
pub fn frame(src: [u8; 4], dst: [u8; 4]) -> Vec<u8> {
    let mut tcp = golden::tcp(5201, 40000, 0x10);
    tcp.extend(std::iter::repeat_n(0x5a, 1514 - 14 - 20 - 20));
    golden::eth(
        ETH_P_IPV4,
        &[],
        &golden::ipv4(src, dst, 6, &[], golden::DF, &tcp),
    )
}

/// One program on one frame.
pub struct Subject {
    pub name: &'static str,
    pub detail: String,
    pub frame: Vec<u8>,
    /// Which object and program.
    prog: (Obj, &'static str),
    /// The bucket this subject charges, if any (checked for drops afterwards).
    pub bucket: Option<BucketKey>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Obj {
    Netguard,
    Floor,
}

/// One call of [`REPEAT`] runs.
#[derive(Clone, Copy, Debug)]
pub struct Call {
    /// This thread's CPU time per run, ns (sub-ns resolution; other tasks not counted).
    pub cpu_ns: f64,
    /// The kernel's average, whole ns.
    pub kernel_ns: f64,
    pub wall_ns: f64,
}

pub struct CostResults {
    /// (name, detail, frame bytes, JIT bytes, translated instructions)
    pub subjects: Vec<(String, String, usize, u32, u32)>,
    pub calls: Vec<Vec<Call>>,
    /// Per limiter subject: passed and dropped packets of its bucket after all calls.
    pub buckets: Vec<(String, u64, u64)>,
}

impl CostResults {
    pub fn median(&self, i: usize) -> f64 {
        crate::median(self.calls[i].iter().map(|c| c.cpu_ns).collect())
    }
    pub fn median_kernel(&self, i: usize) -> f64 {
        crate::median(self.calls[i].iter().map(|c| c.kernel_ns).collect())
    }
    pub fn index(&self, name: &str) -> usize {
        self.subjects
            .iter()
            .position(|s| s.0 == name)
            .unwrap_or_else(|| panic!("no subject {name}"))
    }
}

pub const FLOOR: &str = "floor_tc_pass";
pub const UPLOAD: &str = "netguard_limit_up";
pub const DOWNLOAD: &str = "netguard_limit_down";
pub const UNTOUCHED: &str = "netguard_limit_up, not a container";

pub fn subjects() -> Vec<Subject> {
    let v4 = |a| bucket_key(&Addr::v4(a), DIR_UPLOAD);
    vec![
        Subject {
            name: FLOOR,
            detail: "`return TC_ACT_UNSPEC` (netguard::floor_object())".into(),
            frame: frame(CONTAINER, REMOTE),
            prog: (Obj::Floor, "floor_tc_pass"),
            bucket: None,
        },
        Subject {
            name: UPLOAD,
            detail: "172.17.0.2 → 192.0.2.10 (tc ingress program): parse, container range, \
                     bucket lookup, clock, CAS, two atomic adds (no overrides configured: their \
                     lookup is skipped)"
                .into(),
            frame: frame(CONTAINER, REMOTE),
            prog: (Obj::Netguard, maps::LIMIT_UPLOAD_PROGRAM),
            bucket: Some(v4(CONTAINER)),
        },
        Subject {
            name: DOWNLOAD,
            detail: "192.0.2.10 → 172.17.0.2 (tc egress program), same path keyed by destination"
                .into(),
            frame: frame(REMOTE, CONTAINER),
            prog: (Obj::Netguard, maps::LIMIT_DOWNLOAD_PROGRAM),
            bucket: Some(bucket_key(&Addr::v4(CONTAINER), DIR_DOWNLOAD)),
        },
        Subject {
            name: UNTOUCHED,
            detail: "10.99.0.2 → 192.0.2.10: outside the container range, parsed and passed \
                     without a bucket"
                .into(),
            frame: frame(OUTSIDE, REMOTE),
            prog: (Obj::Netguard, maps::LIMIT_UPLOAD_PROGRAM),
            bucket: None,
        },
    ]
}

/// netguard's object with both limiter programs loaded, configured with the production rate, a
/// burst no test can spend and 172.17.0.0/16 as the container range. No pins: its own maps.
fn load_netguard() -> Result<Ebpf> {
    let mut ebpf = EbpfLoader::new()
        .load(netguard::ebpf_object())
        .context("loading netguard's eBPF object")?;
    for name in [maps::LIMIT_UPLOAD_PROGRAM, maps::LIMIT_DOWNLOAD_PROGRAM] {
        let p: &mut SchedClassifier = ebpf
            .program_mut(name)
            .with_context(|| format!("{name} missing from the object"))?
            .try_into()?;
        p.load().with_context(|| format!("loading {name}"))?;
    }
    let mut cfg = LimiterConfig::EMPTY;
    cfg.default = BucketParams::new(RATE, HUGE_BURST);
    ensure!(
        cfg.containers.add_v4([172, 17, 0, 0], 16),
        "adding the container range"
    );
    let mut a: Array<&mut MapData, LimiterConfig> = ebpf
        .map_mut(maps::LIMIT_CONFIG)
        .context("limiter config map")?
        .try_into()?;
    a.set(0, cfg, 0)?;
    Ok(ebpf)
}

fn load_floor() -> Result<Ebpf> {
    let mut ebpf = EbpfLoader::new()
        .load(netguard::floor_object())
        .context("loading the floor object")?;
    let p: &mut SchedClassifier = ebpf
        .program_mut("floor_tc_pass")
        .context("floor_tc_pass missing from netguard::floor_object()")?
        .try_into()?;
    p.load().context("loading floor_tc_pass")?;
    Ok(ebpf)
}

fn prog<'a>(ebpf: &'a Ebpf, name: &str) -> Result<&'a SchedClassifier> {
    Ok(ebpf
        .program(name)
        .with_context(|| format!("{name} missing"))?
        .try_into()?)
}

fn run_once(p: &SchedClassifier, frame: &[u8], repeat: u32) -> Result<(u32, Call)> {
    let (c0, w0) = (sys::thread_cpu_ns(), Instant::now());
    let r = p
        .test_run(TestRunOptions {
            data_in: Some(frame),
            repeat,
            ..TestRunOptions::default()
        })
        .map_err(|e: ProgramError| anyhow::anyhow!("BPF_PROG_TEST_RUN: {e}"))?;
    let (c1, wall) = (sys::thread_cpu_ns(), w0.elapsed());
    Ok((
        r.return_value,
        Call {
            cpu_ns: (c1 - c0) as f64 / f64::from(repeat),
            kernel_ns: r.duration.as_nanos() as f64,
            wall_ns: wall.as_nanos() as f64 / f64::from(repeat),
        },
    ))
}

/// Checks every verdict, then [`ROUNDS`] rounds of every subject, [`REPEAT`] runs each, on a
/// thread pinned to [`CPU`]; then that no limiter bucket dropped anything.
pub fn measure() -> Result<CostResults> {
    let ng = load_netguard()?;
    let floor = load_floor()?;
    let subjects = subjects();
    let obj = |o: Obj| if o == Obj::Netguard { &ng } else { &floor };
    for s in &subjects {
        let (ret, _) = run_once(prog(obj(s.prog.0), s.prog.1)?, &s.frame, 1)?;
        ensure!(
            ret == TC_ACT_UNSPEC,
            "{} returned {ret} on its frame, expected TC_ACT_UNSPEC (-1)",
            s.name
        );
    }
    let mut calls = vec![Vec::with_capacity(ROUNDS); subjects.len()];
    std::thread::scope(|scope| {
        scope
            .spawn(|| -> Result<()> {
                sys::pin_to_cpu(CPU)?;
                for round in 0..ROUNDS {
                    let start = Instant::now();
                    for (i, s) in subjects.iter().enumerate() {
                        let p = prog(obj(s.prog.0), s.prog.1)?;
                        let (ret, call) = run_once(p, &s.frame, REPEAT)?;
                        ensure!(ret == TC_ACT_UNSPEC, "{}: verdict changed to {ret}", s.name);
                        calls[i].push(call);
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
    })?;
    let buckets_map: HashMap<&MapData, BucketKey, BucketState> =
        ng.map(maps::BUCKETS).context("buckets map")?.try_into()?;
    let mut buckets = Vec::new();
    for s in &subjects {
        if let Some(key) = s.bucket {
            let st = buckets_map
                .get(&key, 0)
                .with_context(|| format!("{}: no bucket after the runs", s.name))?;
            ensure!(
                st.dropped_packets == 0,
                "{}: the bucket dropped {} packets: the runs did not all take the pass path",
                s.name,
                st.dropped_packets
            );
            buckets.push((s.name.to_string(), st.passed_packets, st.dropped_packets));
        }
    }
    let mut out = Vec::new();
    for s in &subjects {
        let info = prog(obj(s.prog.0), s.prog.1)?.info()?;
        out.push((
            s.name.to_string(),
            s.detail.clone(),
            s.frame.len(),
            info.size_jitted(),
            info.size_translated().unwrap_or(0) / 8,
        ));
    }
    Ok(CostResults {
        subjects: out,
        calls,
        buckets,
    })
}
