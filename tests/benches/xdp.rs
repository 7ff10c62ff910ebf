//! `cargo xtask bench` (= `cargo bench -p netguard-tests --bench xdp`, as root): netguard's XDP
//! program against a trivial XDP program (the floor), xdp-filter and an nftables ingress rule,
//! all measured side by side in one run. Writes `BENCHMARKS.md` at the workspace root and prints
//! the same tables.
//!
//! 1. Program cost: ns per packet through `BPF_PROG_TEST_RUN` (10,000,000 runs, median of 3),
//!    for a passed SYN, a SYN to a closed port and a SYN from a denylisted source, with 0,
//!    10,000 and 1,000,000 random denylist prefixes.
//! 2. Drop rate: packets per second each receiver drops on a veth flood generated with
//!    `BPF_PROG_TEST_RUN` live frames (`XDP_TX`).
//!
//! Everything runs in two network namespaces this process creates and removes (also on
//! failure); nothing is attached to the machine's own interfaces. About 3–4 minutes.
//!
//! `NETGUARD_BENCH_PARTS=cost` or `=flood` runs one part only, for working on the bench: the
//! report is printed but BENCHMARKS.md is left alone.

#[path = "common/bench.rs"]
#[allow(dead_code, reason = "the xdp bench runs no daemon")]
mod bench;
#[path = "xdp/cost.rs"]
mod cost;
#[path = "xdp/flood.rs"]
mod flood;
#[path = "xdp/report.rs"]
mod report;
#[path = "common/section.rs"]
#[allow(
    dead_code,
    reason = "xdp writes the whole file; it shares the number formatting"
)]
mod section;
#[path = "xdp/sys.rs"]
mod sys;

use std::{
    os::fd::{AsFd as _, OwnedFd},
    process::{Command, ExitCode},
    time::Instant,
};

use anyhow::{Context as _, Result, bail};
use netguard_common::{golden, reason::Reason};

use crate::{
    bench::step,
    cost::{Netguard, Subject, XdpFilter},
    flood::{Generator, NftDrop, Topology, Window},
    sys::{XDP_DROP, XDP_PASS},
};

/// Tools the bench runs; `cargo xtask bench` provisions all of them.
const TOOLS: [(&str, &str); 4] = [
    ("ip", "iproute2"),
    ("nsenter", "util-linux"),
    ("nft", "nftables"),
    ("xdp-filter", "xdp-tools"),
];

fn main() -> ExitCode {
    bench::exit("bench", run())
}

fn run() -> Result<()> {
    let started = Instant::now();
    preflight()?;
    let parts = std::env::var("NETGUARD_BENCH_PARTS").unwrap_or_default();
    let (do_cost, do_flood) = match parts.as_str() {
        "" | "all" => (true, true),
        "cost" => (true, false),
        "flood" => (false, true),
        other => bail!("NETGUARD_BENCH_PARTS={other:?}: expected cost, flood or all"),
    };
    let machine = report::Machine::collect();
    println!("{}", machine.markdown());

    step("building two network namespaces joined by a veth");
    let topo = Topology::new()?;
    let mut floor = cost::load_floor()?;

    step(format!(
        "generating {} random IPv4 prefixes (/8../32, seed {:#x})",
        cost::DENY_SIZES[2],
        cost::SEED
    ));
    let prefixes = cost::random_prefixes(cost::DENY_SIZES[2]);
    let mut ng = Vec::new();
    for size in cost::DENY_SIZES {
        let label = format!(
            "netguard, {} prefix{}",
            section::thousands(size as f64 + 1.0),
            if size == 0 { "" } else { "es" }
        );
        step(format!("loading {label}"));
        let t = Instant::now();
        ng.push(Netguard::load(&label, &prefixes[..size], false)?);
        println!("    loaded and filled in {:.1}s", t.elapsed().as_secs_f64());
    }
    let mut ng_empty = Netguard::load("netguard, empty tables", &[], true)?;

    let cost_results = if do_cost {
        Some(part_cost(&topo, &mut floor, &mut ng, &mut ng_empty)?)
    } else {
        None
    };
    let flood_results = if do_flood {
        Some(part_flood(&topo, &mut floor, &mut ng)?)
    } else {
        None
    };
    drop(topo);

    let text = report::render(
        &machine,
        cost_results.as_ref(),
        flood_results.as_ref(),
        started.elapsed(),
    );
    println!("\n{text}");
    if !(do_cost && do_flood) {
        println!("NETGUARD_BENCH_PARTS={parts}: BENCHMARKS.md not written");
        return Ok(());
    }
    let path = netguard_tests::workspace_root().join("BENCHMARKS.md");
    std::fs::write(&path, &text).with_context(|| format!("writing {}", path.display()))?;
    println!(
        "results written to {} ({:.0}s)",
        path.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

fn preflight() -> Result<()> {
    bench::require_root("the benchmark loads eBPF programs and builds network namespaces")?;
    bench::require_tools(&TOOLS)?;
    if std::thread::available_parallelism().map_or(1, |n| n.get()) < 2 {
        bail!("the flood needs two CPUs (generator and receiver)");
    }
    netguard_tests::daemon::ensure_bpffs();
    if netguard::ebpf_object().is_empty() || netguard::floor_object().is_empty() {
        bail!(
            "the embedded eBPF objects are empty (built with AYA_BUILD_SKIP=1?): rebuild without it"
        );
    }
    Ok(())
}

fn dup(prog: &mut aya::programs::Xdp) -> Result<OwnedFd> {
    Ok(prog.fd()?.as_fd().try_clone_to_owned()?)
}

fn part_cost(
    topo: &Topology,
    floor: &mut aya::Ebpf,
    ng: &mut [Netguard],
    ng_empty: &mut Netguard,
) -> Result<cost::CostResults> {
    step("loading xdp-filter on the receiving veth (deny TCP port 22, deny source 198.51.100.7)");
    let xf = XdpFilter::load(&topo.rcv, &topo.rcv_if)?;
    let xf_fd = xf
        .fd
        .as_ref()
        .context("xdp-filter fd")?
        .try_clone()
        .context("dup")?;
    let mut subjects = vec![
        Subject {
            name: "floor".into(),
            detail: "`floor_pass`: `return XDP_PASS`".into(),
            fd: dup(cost::floor_prog(floor, "floor_pass")?)?,
            expect: [XDP_PASS; 3],
        },
        Subject {
            name: "port-22 filter, 11 insns".into(),
            detail: "raw program: bounds check, read the TCP port, drop 22".into(),
            fd: sys::load_read_drop()?,
            expect: [XDP_PASS, XDP_DROP, XDP_PASS],
        },
        Subject {
            name: "xdp-filter".into(),
            detail: format!(
                "`{}` (prog id {}): TCP dst port 22 + src 198.51.100.7, hash lookups",
                xf.prog_name, xf.prog_id
            ),
            fd: xf_fd,
            expect: [XDP_PASS, XDP_DROP, XDP_DROP],
        },
        Subject {
            name: "netguard, empty tables".into(),
            detail: "no deny/trusted entries: the daemon then skips both lookups".into(),
            fd: ng_empty.fd()?,
            expect: [XDP_PASS, XDP_DROP, XDP_PASS],
        },
    ];
    for n in ng.iter_mut() {
        subjects.push(Subject {
            name: n.label.clone(),
            detail: format!(
                "{} in NG_DENY_V4 (fixture config: 1 trusted /32, 1 tracked flow)",
                section::thousands(n.deny_entries as f64)
            ),
            fd: n.fd()?,
            expect: [XDP_PASS, XDP_DROP, XDP_DROP],
        });
    }
    let frames = cost::frames();
    let cpu = flood::RCV_CPU;
    step(format!(
        "program cost: {} programs × {} frames × {} rounds × {} runs (BPF_PROG_TEST_RUN, CPU {cpu})",
        subjects.len(),
        frames.len(),
        cost::ROUNDS,
        section::thousands(f64::from(cost::REPEAT))
    ));
    let results = cost::measure(&subjects, &frames, cpu)?;
    drop(subjects);
    drop(xf);
    Ok(results)
}

pub struct FloodResults {
    /// (name, detail)
    pub receivers: Vec<(String, String)>,
    /// `windows[receiver]`, one per round.
    pub windows: Vec<Vec<Window>>,
    /// The nft rule with no XDP program on the receiving veth.
    pub no_xdp: Window,
    pub frame_len: usize,
}

#[derive(Clone, Copy)]
enum Receiver {
    FloorDrop,
    ReadDrop,
    Netguard(usize),
    XdpFilter,
    Nft,
}

fn part_flood(topo: &Topology, floor: &mut aya::Ebpf, ng: &mut [Netguard]) -> Result<FloodResults> {
    let mut frame = golden::v4_tcp(golden::CLIENT, golden::EDGE, 22);
    frame[..6].copy_from_slice(&topo.rcv_mac);
    frame[6..12].copy_from_slice(&topo.gen_mac);
    let receivers = [
        (
            Receiver::FloorDrop,
            "floor_drop".to_string(),
            "`return XDP_DROP`, native XDP; veth rx packets".to_string(),
        ),
        (
            Receiver::ReadDrop,
            "port-22 filter, 11 insns".to_string(),
            "reads the TCP port, drops 22 (raw program, native XDP); rx packets".to_string(),
        ),
        (
            Receiver::Netguard(0),
            "netguard".to_string(),
            format!(
                "native XDP, {} deny prefix; counted by its port_closed counter",
                ng[0].deny_entries
            ),
        ),
        (
            Receiver::Netguard(ng.len() - 1),
            "netguard, 1M prefixes".to_string(),
            format!(
                "native XDP, {} deny prefixes; port_closed counter",
                section::thousands(ng[ng.len() - 1].deny_entries as f64)
            ),
        ),
        (
            Receiver::XdpFilter,
            "xdp-filter".to_string(),
            "TCP port 22 + 1 source address, native XDP; rx packets".to_string(),
        ),
        (
            Receiver::Nft,
            "nftables ingress".to_string(),
            "netdev ingress `counter drop`, behind `floor_pass` (native XDP_PASS); nft counter"
                .to_string(),
        ),
    ];
    step(format!(
        "drop rate: generator (live frames, XDP_TX) on CPU {}, receiver NAPI on CPU {}, \
         {} receivers × {} rounds × {:.1}s",
        flood::GEN_CPU,
        flood::RCV_CPU,
        receivers.len(),
        flood::ROUNDS,
        flood::WINDOW.as_secs_f64()
    ));
    let read_drop = sys::load_read_drop()?;
    let generator = Generator::start(topo, frame.clone())?;
    let port_closed = Reason::PortClosed.counter_index(false);
    let mut windows = vec![Vec::new(); receivers.len()];
    for round in 0..flood::ROUNDS {
        for (ri, (kind, name, _)) in receivers.iter().enumerate() {
            let w = match *kind {
                Receiver::FloorDrop => {
                    let prog = cost::floor_prog(floor, "floor_drop")?;
                    let (id, napi) = topo.attach(prog)?;
                    let w = flood::window(topo, &generator, &napi, &mut || Ok(None));
                    cost::floor_prog(floor, "floor_drop")?.detach(id)?;
                    w?
                }
                Receiver::ReadDrop => {
                    let (link, napi) = topo.attach_fd(read_drop.as_fd())?;
                    let w = flood::window(topo, &generator, &napi, &mut || Ok(None));
                    drop(link);
                    w?
                }
                Receiver::XdpFilter => {
                    let xf = XdpFilter::load(&topo.rcv, &topo.rcv_if)?;
                    let napi = topo.threaded_napi();
                    let w = flood::window(topo, &generator, &napi, &mut || Ok(None));
                    drop(xf);
                    w?
                }
                Receiver::Netguard(i) => {
                    let (id, napi) = topo.attach(ng[i].prog()?)?;
                    let n = &ng[i];
                    let w = flood::window(topo, &generator, &napi, &mut || {
                        n.counter(port_closed).map(Some)
                    });
                    ng[i].prog()?.detach(id)?;
                    w?
                }
                Receiver::Nft => {
                    let nft = NftDrop::add(&topo.rcv, &topo.rcv_if)?;
                    let (id, napi) = topo.attach(cost::floor_prog(floor, "floor_pass")?)?;
                    let w = flood::window(topo, &generator, &napi, &mut || nft.packets().map(Some));
                    cost::floor_prog(floor, "floor_pass")?.detach(id)?;
                    drop(nft);
                    w?
                }
            };
            println!(
                "    round {}/{}: {name:<24} {:>5.2} Mpps per receiver core ({:.2} Mpps observed, \
                 receiver busy {:.0}%, offered {:.2} Mpps, generator busy {:.0}%){}",
                round + 1,
                flood::ROUNDS,
                w.pps_per_core() / 1e6,
                w.pps() / 1e6,
                w.busy() * 100.0,
                w.offered_pps() / 1e6,
                w.gen_busy() * 100.0,
                if w.threaded { "" } else { " NAPI NOT THREADED" }
            );
            if let Some(counted) = w.counted
                && counted.abs_diff(w.rx) > w.rx / 20 + 1000
            {
                eprintln!(
                    "bench: {name} counted {counted} drops but its veth received {} frames",
                    w.rx
                );
            }
            windows[ri].push(w);
        }
    }
    step("the nftables rule again, without any XDP program on the receiving veth");
    let no_xdp = {
        let nft = NftDrop::add(&topo.rcv, &topo.rcv_if)?;
        flood::window(topo, &generator, &[], &mut || nft.packets().map(Some))?
    };
    println!(
        "    without XDP on the receiver: {} frames reached nft in {:.1}s (generator busy {:.0}%)",
        no_xdp.counted.unwrap_or(0),
        no_xdp.secs,
        no_xdp.gen_busy() * 100.0
    );
    generator.finish()?;
    Ok(FloodResults {
        receivers: receivers
            .into_iter()
            .map(|(_, name, detail)| (name, detail))
            .collect(),
        windows,
        no_xdp,
        frame_len: frame.len(),
    })
}

/// Output of a short command, trimmed; empty when it fails.
pub fn command_output(program: &str, args: &[&str]) -> String {
    netguard_tests::cmd::run(
        Command::new(program).args(args),
        netguard_tests::cmd::COMMAND_TIMEOUT,
    )
    .ok()
    .filter(|o| o.status.success())
    .map(|o| netguard_tests::cmd::lossy(&o.stdout).trim().to_string())
    .unwrap_or_default()
}
