//! `cargo bench -p netguard-tests --bench limiter` (as root; `cargo xtask bench` runs it after
//! the XDP bench): netguard's tc bandwidth limiter beside Linux TBF and an nftables netdev
//! policer, side by side in one run on the same veth pair, at the production settings
//! (20 MB/s = 160 Mbit/s, 1.6 GB burst). Replaces the section between `<!-- limiter:begin -->`
//! and `<!-- limiter:end -->` of `BENCHMARKS.md` (appending it if absent) and prints it.
//!
//! 1. TCP downloads (iperf3 `-R`, remote → container c1 through the host namespace) with each
//!    limiter on the egress of the host side of c1's veth: spend the burst from a full bucket,
//!    then one flow for 10 s, then 4 parallel flows for 10 s. Steady-state and first-second
//!    rates, retransmits, CPU per GB. netguard and the nftables policer run four more times
//!    for each flow count (alternating), and their retransmits are compared over five runs
//!    each (medians, and a rank test): a single run of either varies by tens of percent.
//! 2. The tc program's cost: `BPF_PROG_TEST_RUN` of `netguard_limit_up` / `_down` on a
//!    1,514-byte frame beside a pass-through tc program (10,000,000 runs, median of 3).
//!
//! The netguard daemon is `$NETGUARD_BIN`, else `target/release/netguard` (build it with
//! `cargo build --release -p netguard`). Everything runs in four network namespaces this
//! process creates and removes (also on failure). About 9 minutes.
//!
//! `NETGUARD_LIMITER_PARTS=traffic` or `=cost` runs one part only, for working on the bench:
//! the section is printed but BENCHMARKS.md is left alone. `NETGUARD_LIMITER_RUNS=netguard:1,
//! nft:1,tbf:4,...` runs only those downloads (limiter `netguard`, `tbf`, `nft` or `nft-issue`,
//! and flows), in that order, and prints one summary line each: for comparing variants of the
//! limiter over many runs without the rest.

#[path = "common/bench.rs"]
mod bench;
#[path = "limiter/cost.rs"]
mod cost;
#[path = "limiter/iperf.rs"]
mod iperf;
#[path = "limiter/report.rs"]
mod report;
#[path = "common/section.rs"]
mod section;
#[path = "limiter/sys.rs"]
mod sys;
#[path = "limiter/traffic.rs"]
mod traffic;

use std::{
    path::PathBuf,
    process::ExitCode,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use netguard_tests::{Daemon, TempDir, daemon::READY_TIMEOUT, limiter_sandbox::LimiterSandbox};

use crate::{
    bench::{median, step},
    traffic::{Bed, Kind, LimiterResult, Run},
};

const TOOLS: [(&str, &str); 5] = [
    ("ip", "iproute2"),
    ("tc", "iproute2"),
    ("nsenter", "util-linux"),
    ("nft", "nftables"),
    ("iperf3", "iperf3"),
];

/// After the first round of runs: four more of netguard and of the nftables policer for each
/// flow count, in alternating order, so that each is run five times: one run of either varies
/// by tens of percent from the next, and their retransmits are compared over all five.
const REPEATS: [(Kind, usize); 16] = {
    // Two runs of each policer and flow count, who goes first alternating.
    const ROUND: [(Kind, usize); 8] = [
        (Kind::Nft, 1),
        (Kind::Netguard, 1),
        (Kind::Netguard, 4),
        (Kind::Nft, 4),
        (Kind::Netguard, 1),
        (Kind::Nft, 1),
        (Kind::Nft, 4),
        (Kind::Netguard, 4),
    ];
    let mut all = [ROUND[0]; 16];
    let mut i = 0;
    while i < all.len() {
        all[i] = ROUND[i % ROUND.len()];
        i += 1;
    }
    all
};

/// How long the machine is watched, idle, for the background CPU figure (before and after).
const BACKGROUND: Duration = Duration::from_secs(2);

fn main() -> ExitCode {
    bench::exit("limiter bench", run())
}

fn run() -> Result<()> {
    let started = Instant::now();
    if let Ok(list) = std::env::var("NETGUARD_LIMITER_RUNS") {
        return selected_runs(&list);
    }
    let parts = std::env::var("NETGUARD_LIMITER_PARTS").unwrap_or_default();
    let (do_traffic, do_cost) = match parts.as_str() {
        "" | "all" => (true, true),
        "traffic" => (true, false),
        "cost" => (false, true),
        other => bail!("NETGUARD_LIMITER_PARTS={other:?}: expected traffic, cost or all"),
    };
    let bin = preflight(do_traffic)?;
    let traffic = if do_traffic {
        Some(part_traffic(&bin)?)
    } else {
        None
    };
    let cost = if do_cost {
        step(format!(
            "tc program cost: {} programs × {} rounds × {} runs (BPF_PROG_TEST_RUN, CPU {})",
            cost::subjects().len(),
            cost::ROUNDS,
            section::thousands(f64::from(cost::REPEAT)),
            cost::CPU
        ));
        Some(cost::measure()?)
    } else {
        None
    };
    let text = report::render(traffic.as_ref(), cost.as_ref(), started.elapsed());
    let not_written = (!(do_traffic && do_cost)).then(|| format!("NETGUARD_LIMITER_PARTS={parts}"));
    section::publish(report::SECTION, &text, not_written, started)
}

/// Root, the tools, two CPUs, the embedded objects; returns the daemon binary.
fn preflight(need_daemon: bool) -> Result<PathBuf> {
    bench::require_root("the benchmark loads eBPF programs and builds network namespaces")?;
    bench::require_tools(&TOOLS)?;
    if std::thread::available_parallelism().map_or(1, |n| n.get()) <= cost::CPU {
        bail!("the bench pins its measuring thread to CPU {}", cost::CPU);
    }
    if netguard::ebpf_object().is_empty() || netguard::floor_object().is_empty() {
        bail!(
            "the embedded eBPF objects are empty (built with AYA_BUILD_SKIP=1?): rebuild without it"
        );
    }
    let bin = if need_daemon {
        bench::release_daemon()?
    } else {
        bench::release_daemon_path()
    };
    netguard_tests::daemon::ensure_bpffs();
    Ok(bin)
}

/// Part 1's results.
pub struct TrafficResults {
    pub limiters: Vec<LimiterResult>,
    /// Further runs of netguard and the nftables policer ([`REPEATS`]).
    pub repeats: Vec<(Kind, Run)>,
    /// No limiter (the XDP filter only), 4 flows.
    pub baseline: Run,
    /// Busy CPU-seconds per second of the machine while the bench did nothing (before and
    /// after the runs).
    pub background: (f64, f64),
    pub iface: String,
    /// What the XDP filter on the uplink dropped over all runs (should be 0).
    pub xdp_drops: u64,
    pub iperf3: String,
    /// The sender's TCP congestion control.
    pub congestion: String,
    /// The runs in the order they ran: (limiter, flows).
    pub order: Vec<(String, usize)>,
}

fn part_traffic(bin: &std::path::Path) -> Result<TrafficResults> {
    step("building the sandbox: containers c1 and c2, the host, the remote (4 namespaces)");
    let sb = LimiterSandbox::new();
    let dir = TempDir::new().context("temp dir")?;
    let iface = sb.host_c1_if.clone();
    let server = iperf::Server::start(&sb.remote, &dir.join("iperf3-server.log"))?;
    let bed = Bed::new(&sb, &dir, server.pid());
    let congestion = sb
        .remote
        .try_exec(&["sysctl", "-n", "net.ipv4.tcp_congestion_control"])
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "?".into());
    step(format!(
        "background: the idle machine's CPU for {:.0} s",
        BACKGROUND.as_secs_f64()
    ));
    let before = traffic::background(BACKGROUND)?;
    println!("    {:.1} % of one CPU", before * 100.0);
    let specs = traffic::specs(&iface);
    // Interleaved, so that a busy period of this shared machine does not hit one limiter
    // only; the order alternates between netguard and nftables.
    let order = [
        (Kind::Netguard, 1),
        (Kind::Nft, 1),
        (Kind::Tbf, 1),
        (Kind::Nft, 4),
        (Kind::Netguard, 4),
        (Kind::Tbf, 4),
        (Kind::NftIssueUnits, 4),
    ];
    let mut runs: Vec<Vec<Run>> = specs.iter().map(|_| Vec::new()).collect();
    let mut xdp = 0;
    let mut ran = Vec::new();
    for (kind, flows) in order {
        let i = specs
            .iter()
            .position(|s| s.kind == kind)
            .context("a spec per kind")?;
        ran.push((specs[i].name.to_string(), flows));
        let run = traffic::measure(&bed, bin, &specs[i], flows)?;
        xdp += run.xdp_drops;
        runs[i].push(run);
    }
    // The two policers again, alternating, so that their retransmits are compared over five
    // runs each: one run of either varies by tens of percent (see BENCHMARKS.md).
    let mut repeats = Vec::new();
    for (kind, flows) in REPEATS {
        let spec = specs
            .iter()
            .find(|s| s.kind == kind)
            .context("a spec per kind")?;
        ran.push((spec.name.to_string(), flows));
        let run = traffic::measure(&bed, bin, spec, flows)?;
        xdp += run.xdp_drops;
        repeats.push((kind, run));
    }
    let mut limiters: Vec<LimiterResult> = specs
        .into_iter()
        .zip(runs)
        .map(|(spec, mut runs)| {
            runs.sort_by_key(|r| r.flows);
            LimiterResult { spec, runs }
        })
        .collect();
    limiters.retain(|l| !l.runs.is_empty());

    step("netguard without the limiter, for the reference download");
    let cfg = sb.config("");
    let daemon = Daemon::start_toml(bin, &sb.host, &cfg.pin_path, &cfg.to_toml(), READY_TIMEOUT);
    step(format!(
        "no limiter: 4 flows for {} s (the XDP filter only)",
        traffic::BASELINE_SECS
    ));
    let baseline = bed.baseline()?;
    println!(
        "    {:.0} Mbit/s of frames, {} retransmits",
        baseline.frames_steady_bps() / 1e6,
        baseline.retransmits()
    );
    xdp += traffic::xdp_drops(&daemon.stats());
    drop(daemon);
    step(format!(
        "background again: the idle machine's CPU for {:.0} s",
        BACKGROUND.as_secs_f64()
    ));
    let after = traffic::background(BACKGROUND)?;
    println!("    {:.1} % of one CPU", after * 100.0);
    Ok(TrafficResults {
        limiters,
        repeats,
        baseline,
        background: (before, after),
        iface,
        xdp_drops: xdp,
        iperf3: section::package_version("iperf3"),
        congestion,
        order: ran,
    })
}

/// `NETGUARD_LIMITER_RUNS`: the listed downloads only, one summary line each.
fn selected_runs(list: &str) -> Result<()> {
    let mut wanted = Vec::new();
    for item in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (name, flows) = item
            .split_once(':')
            .with_context(|| format!("NETGUARD_LIMITER_RUNS: {item:?} is not LIMITER:FLOWS"))?;
        let kind = match name {
            "netguard" => Kind::Netguard,
            "tbf" => Kind::Tbf,
            "nft" => Kind::Nft,
            "nft-issue" => Kind::NftIssueUnits,
            other => bail!("NETGUARD_LIMITER_RUNS: unknown limiter {other:?}"),
        };
        let flows: usize = flows
            .parse()
            .with_context(|| format!("NETGUARD_LIMITER_RUNS: flows in {item:?}"))?;
        wanted.push((kind, flows));
    }
    let bin = preflight(true)?;
    let sb = LimiterSandbox::new();
    let dir = TempDir::new().context("temp dir")?;
    let iface = sb.host_c1_if.clone();
    let server = iperf::Server::start(&sb.remote, &dir.join("iperf3-server.log"))?;
    let bed = Bed::new(&sb, &dir, server.pid());
    let specs = traffic::specs(&iface);
    let mut lines = Vec::new();
    for (kind, flows) in wanted {
        let spec = specs
            .iter()
            .find(|s| s.kind == kind)
            .context("a spec per kind")?;
        let run = traffic::measure(&bed, &bin, spec, flows)?;
        lines.push(format!(
            "{:<24} {flows} flow(s): steady {:+.2} % (2-10 s {:+.2} %), {} retransmits, {} drops",
            spec.name,
            (run.frames_steady_bps() / (traffic::RATE * 8.0) - 1.0) * 100.0,
            (run.frames_late_bps() / (traffic::RATE * 8.0) - 1.0) * 100.0,
            run.retransmits(),
            run.drops
        ));
    }
    println!("\nsummary:");
    for l in lines {
        println!("  {l}");
    }
    Ok(())
}
