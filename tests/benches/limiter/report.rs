//! The limiter's section of BENCHMARKS.md: targets, tables, raw numbers, how to read them.

use std::{fmt::Write as _, time::Duration};

use crate::{
    TrafficResults,
    cost::{self, CostResults},
    section::{self, date, thousands},
    traffic::{self, Kind, LimiterResult, Run},
};

pub const SECTION: &str = "limiter";

/// The rate every target is measured against, bits per second.
const TARGET_BPS: f64 = traffic::RATE * 8.0;
const TOLERANCE: f64 = 0.02;

fn yes(met: Option<bool>) -> &'static str {
    match met {
        Some(true) => "**yes**",
        Some(false) => "**no**",
        None => "—",
    }
}

fn pct(bps: f64) -> f64 {
    (bps / TARGET_BPS - 1.0) * 100.0
}

fn mbps(bps: f64) -> String {
    format!("{:.1}", bps / 1e6)
}

struct Target {
    what: String,
    measured: String,
    /// `None`: reported, no target.
    met: Option<bool>,
}

fn find(t: &TrafficResults, kind: Kind) -> &LimiterResult {
    t.limiters
        .iter()
        .find(|l| l.spec.kind == kind)
        .expect("every limiter ran")
}

pub fn render(
    traffic: Option<&TrafficResults>,
    cost: Option<&CostResults>,
    elapsed: Duration,
) -> String {
    let mut o = String::new();
    let _ = writeln!(o, "{}\n", section::begin(SECTION));
    let _ = writeln!(o, "## Bandwidth limiter\n");
    let _ = writeln!(
        o,
        "Written by `cargo xtask bench` (`cargo bench -p netguard-tests --bench limiter`, after \
         the XDP bench) in {:.0} s on {}; the next run replaces this section, and the XDP bench \
         keeps it when it rewrites the file. Same machine as above; every figure comes from \
         this one run.\n",
        elapsed.as_secs_f64(),
        date()
    );

    let mut targets = Vec::new();
    if let Some(t) = traffic {
        traffic_targets(t, &mut targets);
    }
    if let Some(c) = cost {
        let f = c.median(c.index(cost::FLOOR));
        let up = c.median(c.index(cost::UPLOAD));
        targets.push(Target {
            what: "tc program's ns per packet beside a pass-through tc program (reported, no \
                   target)"
                .into(),
            measured: format!(
                "`netguard_limit_up` {up:.1} vs {f:.1} ns per 1,514-byte frame ({:.2}×, +{:.1} \
                 ns)",
                up / f,
                up - f
            ),
            met: None,
        });
    }
    let _ = writeln!(o, "### Targets (from the issue), this run\n");
    let _ = writeln!(o, "| target | measured | met |\n|---|---|---|");
    for t in &targets {
        let _ = writeln!(o, "| {} | {} | {} |", t.what, t.measured, yes(t.met));
    }
    if traffic.is_none() || cost.is_none() {
        let _ = writeln!(
            o,
            "\nOnly part of the benchmark ran (`NETGUARD_LIMITER_PARTS`)."
        );
    }
    let _ = writeln!(o);
    if let Some(t) = traffic {
        render_findings(&mut o, t, cost, &targets);
        render_traffic(&mut o, t);
    }
    if let Some(c) = cost {
        render_cost(&mut o, c);
    }
    let _ = writeln!(o, "{}\n", HOW_TO_READ.trim());
    let _ = writeln!(o, "{}", section::end(SECTION));
    o
}

fn traffic_targets(t: &TrafficResults, targets: &mut Vec<Target>) {
    let ng = find(t, Kind::Netguard);
    let nft_issue = find(t, Kind::NftIssueUnits);
    for run in &ng.runs {
        let f = run.frames_steady_bps();
        let flows = flows_text(run.flows);
        let all = every_run(t, Kind::Netguard, run.flows);
        let steady: Vec<f64> = all.iter().map(|r| pct(r.frames_steady_bps())).collect();
        let (lo, hi) = steady
            .iter()
            .fold((f64::MAX, f64::MIN), |(lo, hi), &v| (lo.min(v), hi.max(v)));
        targets.push(Target {
            what: format!(
                "steady state within ±2 % of 160 Mbit/s, {flows} ({} s after the burst), \
                 every run",
                traffic::SECS
            ),
            measured: format!(
                "{:+.2} % ({} Mbit/s of frames; seconds 2–{}: {:+.2} %); all {} runs \
                 {lo:+.2} … {hi:+.2} %",
                pct(f),
                mbps(f),
                traffic::SECS,
                pct(run.frames_late_bps()),
                all.len(),
            ),
            met: Some(
                all.iter()
                    .all(|r| (r.frames_steady_bps() / TARGET_BPS - 1.0).abs() <= TOLERANCE),
            ),
        });
    }
    for run in &ng.runs {
        let flows = flows_text(run.flows);
        let ours = every_run(t, Kind::Netguard, run.flows);
        let theirs = every_run(t, Kind::Nft, run.flows);
        if theirs.is_empty() {
            continue;
        }
        let n = median_retransmits(&ours);
        let r = median_retransmits(&theirs);
        let issue = same_flows(nft_issue, run.flows).map_or(String::new(), |x| {
            format!(
                "; the issue's nft rule, one run: {}",
                thousands(x.retransmits() as f64)
            )
        });
        let list = |runs: &[&Run]| {
            runs.iter()
                .map(|r| thousands(r.retransmits() as f64))
                .collect::<Vec<_>>()
                .join(", ")
        };
        targets.push(Target {
            what: format!(
                "retransmits no worse than the nftables policer, {flows}, {} s after the burst \
                 (median of {} runs each)",
                traffic::SECS,
                ours.len().min(theirs.len())
            ),
            measured: format!(
                "{} vs {} ({}, rank test p = {:.2}; runs: {} vs {}{issue})",
                thousands(n),
                thousands(r),
                ratio(n.round() as u64, r.round() as u64),
                p_larger(&counts(&ours), &counts(&theirs)),
                list(&ours),
                list(&theirs),
            ),
            met: Some(n <= r),
        });
    }
}

/// Every run of `kind` with `flows` flows: the first round's and the repeats.
fn every_run(t: &TrafficResults, kind: Kind, flows: usize) -> Vec<&Run> {
    let first = t
        .limiters
        .iter()
        .filter(|l| l.spec.kind == kind)
        .flat_map(|l| l.runs.iter());
    let repeats = t.repeats.iter().filter(|(k, _)| *k == kind).map(|(_, r)| r);
    first.chain(repeats).filter(|r| r.flows == flows).collect()
}

fn median_retransmits(runs: &[&Run]) -> f64 {
    crate::median(counts(runs))
}

fn counts(runs: &[&Run]) -> Vec<f64> {
    runs.iter().map(|r| r.retransmits() as f64).collect()
}

/// Exact one-sided Mann–Whitney test: the share of all ways to split the pooled values into
/// groups of these sizes in which the first group's rank sum is at least the observed one
/// (ties count half), i.e. how likely counts ranking `ours` this far above `theirs` are when
/// both come from the same distribution. Enumerates the splits: fine for the handful of runs
/// here (5 + 5 → 252).
fn p_larger(ours: &[f64], theirs: &[f64]) -> f64 {
    // U for `ours`: pairs in which ours is larger, ties half.
    let u = |a: &[f64], b: &[f64]| -> f64 {
        a.iter()
            .flat_map(|x| {
                b.iter().map(move |y| match x.partial_cmp(y) {
                    Some(std::cmp::Ordering::Greater) => 1.0,
                    Some(std::cmp::Ordering::Equal) => 0.5,
                    _ => 0.0,
                })
            })
            .sum()
    };
    let observed = u(ours, theirs);
    let pooled: Vec<f64> = ours.iter().chain(theirs).copied().collect();
    let n = pooled.len();
    if ours.is_empty() || theirs.is_empty() || n > 20 {
        return f64::NAN;
    }
    let (mut at_least, mut splits) = (0u64, 0u64);
    for mask in 0u32..(1 << n) {
        if mask.count_ones() as usize != ours.len() {
            continue;
        }
        let (a, b): (Vec<_>, Vec<_>) = (0..n).partition(|i| mask & (1 << i) != 0);
        let pick = |idx: Vec<usize>| idx.into_iter().map(|i| pooled[i]).collect::<Vec<_>>();
        splits += 1;
        if u(&pick(a), &pick(b)) >= observed - 1e-9 {
            at_least += 1;
        }
    }
    at_least as f64 / splits as f64
}

/// Every run of netguard and the nftables policer, first round first.
fn render_repeats(o: &mut String, t: &TrafficResults) {
    let _ = writeln!(
        o,
        "#### netguard and the nftables policer, every run\n\nEach policer ran five times per \
         flow count (the first round above, then four more rounds in alternating order); the \
         retransmit targets compare the medians, because one run of either policer varies by \
         tens of percent from the next with the same settings.\n"
    );
    let _ = writeln!(
        o,
        "| limiter | flows | run | steady, vs 160 | retransmits | limiter drops (skbs, whole \
         run) |\n|---|---:|---:|---:|---:|---:|"
    );
    for kind in [Kind::Netguard, Kind::Nft] {
        let name = find(t, kind).spec.name;
        for flows in [1, 4] {
            for (i, r) in every_run(t, kind, flows).iter().enumerate() {
                let _ = writeln!(
                    o,
                    "| {name} | {flows} | {} | {:+.2} % | {} | {} |",
                    i + 1,
                    pct(r.frames_steady_bps()),
                    thousands(r.retransmits() as f64),
                    thousands(r.drops as f64)
                );
            }
        }
    }
    let _ = writeln!(o);
}

fn same_flows(l: &LimiterResult, flows: usize) -> Option<&Run> {
    l.runs.iter().find(|r| r.flows == flows)
}

fn ratio(a: u64, b: u64) -> String {
    if b == 0 {
        if a == 0 { "equal".into() } else { "—".into() }
    } else {
        format!("{:.2}×", a as f64 / b as f64)
    }
}

fn flows_text(n: usize) -> String {
    if n == 1 {
        "1 flow".into()
    } else {
        format!("{n} flows")
    }
}

fn background(t: &TrafficResults) -> f64 {
    (t.background.0 + t.background.1) / 2.0
}

/// "a / b" over a limiter's runs (sorted by flows).
fn per_run(l: &LimiterResult, f: &dyn Fn(&Run) -> String) -> String {
    l.runs.iter().map(f).collect::<Vec<_>>().join(" / ")
}

// ---- findings ------------------------------------------------------------------------------

fn render_findings(
    o: &mut String,
    t: &TrafficResults,
    cost: Option<&CostResults>,
    targets: &[Target],
) {
    let ng = find(t, Kind::Netguard);
    let tbf = find(t, Kind::Tbf);
    let nft = find(t, Kind::Nft);
    let nft_issue = find(t, Kind::NftIssueUnits);
    let _ = writeln!(o, "### What the numbers say\n");
    let missed: Vec<&str> = targets
        .iter()
        .filter(|t| t.met == Some(false))
        .map(|t| t.what.as_str())
        .collect();
    if !missed.is_empty() {
        let _ = writeln!(o, "- **Missed:** {}.", missed.join("; "));
    }
    let steady = |r: &Run| format!("{:+.2} %", pct(r.frames_steady_bps()));
    let late = |r: &Run| format!("{:+.2} %", pct(r.frames_late_bps()));
    let _ = writeln!(
        o,
        "- **Steady state** (frames at the receiving veth over the {s} s after the burst; 1 flow \
         / 4 flows): netguard {}, the nftables policer {}, TBF {}. The issue's nftables rule \
         (4 flows) lands at {}: \
         nft's `mbytes` are MiB, so `20 mbytes/second` asks for 20 × 2^20 B/s, +4.86 % — the \
         issue's +4.9 % is the unit, not the policer. netguard and nftables run the same token \
         bucket and both start the window with it empty, so neither can pass more than `rate × \
         {s} s` there (plus what is in flight); TCP leaves part of it unused while it recovers \
         from the losses at the end of the burst. Without the first second (seconds 2–{s}) \
         netguard reads {} and nftables {}: that window starts with whatever credit \
         the recovering sender left in the bucket and spends it, so it reads high by up to a \
         few percent. TBF, a shaper with a queue, sends at exactly its rate either way.",
        per_run(ng, &steady),
        per_run(nft, &steady),
        per_run(tbf, &steady),
        per_run(nft_issue, &steady),
        per_run(ng, &late),
        per_run(nft, &late),
        s = traffic::SECS,
    );
    let rt = |r: &Run| thousands(r.retransmits() as f64);
    let drops = |r: &Run| thousands(r.drops as f64);
    let _ = writeln!(
        o,
        "- **Retransmits in the {} s after the burst** (1 flow / 4 flows): netguard {}, \
         nftables {}, the issue's nftables rule {} (4 flows), TBF {}. netguard and nftables are the same kind of policer with the \
         same bucket: each drops what exceeds it (netguard {} skbs in the whole run, nftables \
         {}), and TCP retransmits every dropped segment, so their counts differ by run-to-run \
         noise (the sender's {} probing, the machine's load), not by design — hence the medians \
         of five runs in the targets, with a rank test of whether either count is larger, and \
         every run in the table below. Dropping earlier, at \
         random, before the bucket is empty (RED for a policer) was measured and adds losses \
         with this sender (README, \"Why the limiter drops only when the bucket is empty\"); \
         fewer losses than \
         a policer at the same rate need a queue (TBF: {} bytes, 50 ms at the rate; it drops \
         only when that is full, {} drops) or pacing (EDT with `fq`, not available on this \
         kernel).",
        traffic::SECS,
        per_run(ng, &rt),
        per_run(nft, &rt),
        per_run(nft_issue, &rt),
        per_run(tbf, &rt),
        per_run(ng, &drops),
        per_run(nft, &drops),
        t.congestion,
        thousands(traffic::TBF_LIMIT as f64),
        per_run(tbf, &drops),
    );
    let skb = |r: &Run| format!("{:.0}", r.avg_skb());
    let _ = writeln!(
        o,
        "- **Skbs at the limiter**: the receiver got {} bytes per skb on average with netguard \
         (nftables {}, TBF {}; 1 flow / 4 flows): single full-sized frames. A veth with an XDP \
         program turns off GSO on its peer (`veth_xdp_set`), so with the daemon's XDP filter on \
         the uplink the remote sends 1,514-byte frames, and at 160 Mbit/s the uplink's GRO has \
         little to merge. One drop therefore costs one segment here; without an XDP program on \
         the uplink the sender's 64 KiB GSO packets reach the limiter whole, and one drop costs \
         up to 45 segments.",
        per_run(ng, &skb),
        per_run(nft, &skb),
        per_run(tbf, &skb),
    );
    let cpu = |r: &Run| format!("{:.1}", r.iperf_cpu_per_gb());
    let wake = |r: &Run| {
        let c = r.cpu();
        thousands(c.receiver_wakeups / c.secs)
    };
    let split = |r: &Run| {
        let c = r.cpu();
        format!("{:.2} / {:.2}", c.receiver, c.sender)
    };
    let _ = writeln!(
        o,
        "- **CPU per GB** (the two iperf3 processes, with the softirq work that interrupted \
         them: forwarding, the limiter, the receiver's TCP; 1 flow / 4 flows): netguard {}, \
         nftables {}, TBF {} CPU-s per GB of payload. Receiver / sender CPU-s over the window: \
         netguard {}, nftables {}, TBF {}; the receiver woke {} times per second with TBF, {} \
         with netguard, {} with nftables. Most likely TBF releases one frame at a time from \
         its timer (one every 76 µs at this rate) and the receiver handles each separately, \
         while a policer passes the sender's paced bursts, read a few segments per wake-up. The \
         machine-wide figures are in the table; the idle machine's background was {:.0} % / \
         {:.0} % of one CPU (before / after the runs), {}.",
        per_run(ng, &cpu),
        per_run(nft, &cpu),
        per_run(tbf, &cpu),
        per_run(ng, &split),
        per_run(nft, &split),
        per_run(tbf, &split),
        per_run(tbf, &wake),
        per_run(ng, &wake),
        per_run(nft, &wake),
        t.background.0 * 100.0,
        t.background.1 * 100.0,
        if background(t) > 0.2 {
            "so other work was running on this machine and the machine-wide figure is mostly \
             that work (it is clamped at 0 when the run used less than the background): read \
             the iperf3 column"
        } else {
            "small enough for the machine-wide figure to mean something"
        }
    );
    if let Some(c) = cost {
        let m = |n: &str| c.median(c.index(n));
        let floor = m(cost::FLOOR);
        let _ = writeln!(
            o,
            "- **The tc program** costs {:.0} ns per 1,514-byte frame in `BPF_PROG_TEST_RUN` \
             against {floor:.0} ns for a pass-through program: {:.0} ns go to reading the \
             frame (straight from the skb's linear area, as XDP reads its frame; through \
             `bpf_skb_load_bytes` calls it took about 90 ns) and deciding it is not a \
             container's (the *not a container* row, {:.0} ns above the floor), {:.0} ns to \
             the bucket (its lookup, the clock, the compare-and-swap and two atomic adds; \
             the override lookup, about 25 ns more, runs only while overrides are configured). At 160 Mbit/s that is about {:.0} µs \
             of CPU per second ({:.2} % of one CPU) per limited direction.",
            m(cost::UPLOAD),
            m(cost::UNTOUCHED) - floor,
            m(cost::UNTOUCHED) - floor,
            m(cost::UPLOAD) - m(cost::UNTOUCHED),
            (m(cost::UPLOAD) - floor) * traffic::RATE / 1514.0 / 1e3,
            (m(cost::UPLOAD) - floor) * traffic::RATE / 1514.0 / 1e9 * 100.0
        );
    }
    let _ = writeln!(o);
}

// ---- part 1 --------------------------------------------------------------------------------

fn render_traffic(o: &mut String, t: &TrafficResults) {
    let _ = writeln!(o, "### 1. TCP downloads through each limiter\n");
    let _ = writeln!(
        o,
        "Topology (`LimiterSandbox`, four namespaces): remote 192.0.2.10 → host (routes; runs \
         netguard, whose XDP filter on the uplink passes this traffic as `not_guarded`) → \
         `{iface}` → container c1 172.17.0.2. Every limiter sits on the egress of `{iface}`, \
         the host side of c1's veth: the same veth pair for all. The daemon runs in every run \
         (for TBF and nftables without `[ratelimit]`), so the packet path is the same. \
         iperf3 {ver}, `-R` (the server in the remote namespace sends, the client in c1 \
         receives), {cc} congestion control (the machine's default), veth offloads at their \
         defaults. **A run**: install the limiter fresh (full bucket), start one `iperf3 -c` \
         with 1 or 4 flows; it spends the burst at line rate, and once the burst has run out \
         it continues, in the same connections, for {s} s; then it is stopped, and the \
         limiter (and the daemon) removed. Every counter is read every {ms} ms, so each figure \
         covers exactly that window. The runs are interleaved so that a busy period of this \
         shared machine does not hit one limiter only; they ran in this order: {order}.\n",
        iface = t.iface,
        ver = t.iperf3,
        cc = t.congestion,
        s = traffic::SECS,
        ms = traffic::SAMPLE.as_millis(),
        order = t
            .order
            .iter()
            .map(|(name, flows)| format!("{name} ({})", flows_text(*flows)))
            .collect::<Vec<_>>()
            .join(", "),
    );
    let _ = writeln!(o, "Limiters, and what each counts as a packet's size:\n");
    for l in &t.limiters {
        let _ = writeln!(
            o,
            "- **{}**: {}. Counts {}.",
            l.spec.name, l.spec.how, l.spec.counts
        );
    }
    let _ = writeln!(
        o,
        "\n**Frames**: bytes received by c1's `eth0` (`/proc/net/dev`): the skb length with the \
         14-byte Ethernet header, one header per skb — what netguard charges, so the rate is \
         checked on it. **Goodput**: payload iperf3 read (its 100 ms intervals), at most \
         1448/1514 of the frames; only over seconds 2–{s}, because iperf3's clock can only be \
         placed on the counters' to within one {ms} ms sample, too coarse for the first second \
         right after the line-rate burst. **Burst run out**: once {share:.0} % of the burst has \
         arrived, the end of the first {ms} ms step of {n} in a row below {f}× the rate. \
         **Steady**: the {s} s from there; **2–{s}**: the same without its first second; \
         **first second**: its first second. **Retransmits**: `RetransSegs` of the sender's \
         namespace over the {s} s (a client stopped mid-run reports no `sum_sent`). **CPU per \
         GB**: CPU-seconds over the {s} s per GB of payload received — *machine*: busy time of \
         both CPUs (`/proc/stat` user, nice, system, irq, softirq) minus the idle background \
         ({bg:.1} % of one CPU, mean of before and after the runs); *iperf3*: the run time of \
         the sender and receiver processes (`/proc/<pid>/schedstat`), which on this kernel \
         (no IRQ time accounting) includes the softirq work that interrupted them.\n",
        share = traffic::SPENT_SHARE * 100.0,
        n = traffic::SPENT_STEPS,
        f = traffic::SPENT_FACTOR,
        ms = traffic::SAMPLE.as_millis(),
        s = traffic::SECS,
        bg = background(t) * 100.0
    );
    let _ = writeln!(
        o,
        "| limiter | flows | steady, frames Mbit/s | vs 160 | 2–{s} s, vs 160 | 2–{s} s, goodput \
         Mbit/s | first second, frames Mbit/s | retransmits | limiter drops (skbs, whole run) | \
         avg skb, B | CPU-s per GB, machine | CPU-s per GB, iperf3 |",
        s = traffic::SECS
    );
    let _ = writeln!(
        o,
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    let row = |o: &mut String, name: &str, r: &Run, drops: String| {
        let f = r.frames_steady_bps();
        let (vs, late, first, goodput) = if r.spent.is_some() {
            (
                format!("{:+.2} %", pct(f)),
                format!("{:+.2} %", pct(r.frames_late_bps())),
                mbps(r.frames_first_second_bps()),
                mbps(r.goodput_late_bps()),
            )
        } else {
            let gp = r.report.goodput_bps(r.window.0 - r.t0, r.window.1 - r.t0);
            ("—".into(), "—".into(), "—".into(), mbps(gp))
        };
        let _ = writeln!(
            o,
            "| {name} | {} | {} | {vs} | {late} | {goodput} | {first} | {} | {drops} | {:.0} | \
             {:.2} | {:.2} |",
            r.flows,
            mbps(f),
            thousands(r.retransmits() as f64),
            r.avg_skb(),
            r.cpu_per_gb(background(t)),
            r.iperf_cpu_per_gb()
        );
    };
    for l in &t.limiters {
        for r in &l.runs {
            row(o, l.spec.name, r, thousands(r.drops as f64));
        }
    }
    row(
        o,
        &format!(
            "no limiter ({:.0} s)",
            t.baseline.window.1 - t.baseline.window.0
        ),
        &t.baseline,
        "—".into(),
    );
    if t.xdp_drops > 0 {
        let _ = writeln!(
            o,
            "\n**The XDP filter on the uplink dropped {} packets during the runs**: the figures \
             above are suspect.",
            thousands(t.xdp_drops as f64)
        );
    }

    let _ = writeln!(o);
    render_repeats(o, t);
    let _ = writeln!(o, "#### Spending the burst (full bucket)\n");
    let _ = writeln!(
        o,
        "*Arrived*: frame bytes at the receiver from the first data until the burst ran out. \
         A token bucket lets `burst + rate × t` through by then (*allowed*; nftables' bucket \
         holds one second of rate more than its burst). *First second*: frames in the first \
         second of data.\n"
    );
    let _ = writeln!(
        o,
        "| limiter | flows | burst configured | arrived at line rate | in | allowed | first \
         second, frames Mbit/s | retransmits during the burst |"
    );
    let _ = writeln!(o, "|---|---:|---:|---:|---:|---:|---:|---:|");
    for l in &t.limiters {
        for r in &l.runs {
            let (bytes, secs) = r.burst().unwrap_or((0, f64::NAN));
            let _ = writeln!(
                o,
                "| {} | {} | {:.3} GB | {:.3} GB | {secs:.1} s | {:.3} GB | {} | {} |",
                l.spec.name,
                r.flows,
                l.spec.burst / 1e9,
                bytes as f64 / 1e9,
                (l.spec.burst + l.spec.rate * secs) / 1e9,
                thousands(r.burst_first_second_bps() / 1e6),
                thousands(r.retransmits_total().saturating_sub(r.retransmits()) as f64)
            );
        }
    }

    let _ = writeln!(o, "\n#### Raw numbers, every run\n");
    let _ = writeln!(
        o,
        "Goodput in each second of the window (Mbit/s); segments the sender sent in the window \
         (`OutSegs`, retransmissions included); CPU-seconds over the window: the machine busy / \
         of which softirq / steal (time the hypervisor gave to other guests), and the iperf3 \
         receiver / sender; the receiver's wake-ups (voluntary context switches) per second; \
         the window's length.\n"
    );
    let _ = writeln!(
        o,
        "| limiter | flows | goodput per second | OutSegs | machine busy / softirq / steal, \
         CPU-s | iperf3 receiver / sender, CPU-s | receiver wake-ups per s | window, s |"
    );
    let _ = writeln!(o, "|---|---:|---|---:|---:|---:|---:|---:|");
    let raw = |o: &mut String, name: &str, r: &Run| {
        let c = r.cpu();
        let _ = writeln!(
            o,
            "| {name} | {} | {} | {} | {:.2} / {:.2} / {:.2} | {:.2} / {:.2} | {} | {:.2} |",
            r.flows,
            r.per_second_mbps()
                .iter()
                .map(|v| format!("{v:.0}"))
                .collect::<Vec<_>>()
                .join(" "),
            thousands(r.segments() as f64),
            c.busy,
            c.softirq,
            c.steal,
            c.receiver,
            c.sender,
            thousands(c.receiver_wakeups / c.secs),
            c.secs
        );
    };
    for l in &t.limiters {
        for r in &l.runs {
            raw(o, l.spec.name, r);
        }
    }
    raw(o, "no limiter", &t.baseline);
    let _ = writeln!(o);
}

// ---- part 2 --------------------------------------------------------------------------------

fn render_cost(o: &mut String, c: &CostResults) {
    let floor = c.median(c.index(cost::FLOOR));
    let _ = writeln!(
        o,
        "### 2. tc program cost (ns per packet, `BPF_PROG_TEST_RUN`)\n"
    );
    let _ = writeln!(
        o,
        "Each figure: median of {} calls of {} runs each on CPU {}, this thread's CPU time per \
         run. Frames: 1,514-byte TCP segments (1,460 bytes of payload). The limiter runs with \
         the production rate (20 MB/s) and a burst of {} bytes, so its bucket always has \
         credit and every run takes the pass path: charge the bucket, count, `TC_ACT_UNSPEC`.\n",
        cost::ROUNDS,
        thousands(f64::from(cost::REPEAT)),
        cost::CPU,
        thousands(cost::HUGE_BURST as f64)
    );
    let _ = writeln!(
        o,
        "| program | ns per packet | × floor | above floor, ns | insns / JIT bytes | what |"
    );
    let _ = writeln!(o, "|---|---:|---:|---:|---:|---|");
    for (i, (name, detail, _, jit, insns)) in c.subjects.iter().enumerate() {
        let m = c.median(i);
        let _ = writeln!(
            o,
            "| `{name}` | {m:.1} | {:.2}× | {:+.1} | {insns} / {jit} | {detail} |",
            m / floor,
            m - floor
        );
    }
    for (name, passed, dropped) in &c.buckets {
        let _ = writeln!(
            o,
            "\n`{name}`'s bucket afterwards: {} packets passed, {dropped} dropped.",
            thousands(*passed as f64)
        );
    }
    let _ = writeln!(
        o,
        "\nRaw calls: this thread's CPU ns per run / the kernel's average (whole ns) / wall \
         clock ns per run.\n"
    );
    let _ = writeln!(o, "| program | call 1 | call 2 | call 3 | kernel median |");
    let _ = writeln!(o, "|---|---|---|---|---:|");
    for (i, (name, ..)) in c.subjects.iter().enumerate() {
        let _ = write!(o, "| `{name}` |");
        for call in &c.calls[i] {
            let _ = write!(
                o,
                " {:.2} / {:.0} / {:.2} |",
                call.cpu_ns, call.kernel_ns, call.wall_ns
            );
        }
        let _ = writeln!(o, " {:.0} |", c.median_kernel(i));
    }
    let _ = writeln!(o);
}

const HOW_TO_READ: &str = r#"
### How to read the limiter figures

- **Which bytes.** 160 Mbit/s is 20,000,000 bytes per second of *frames*: the skb length with
  the Ethernet header, as netguard charges it (README, "What the limiter does"). The receiving
  veth's byte counter counts exactly that, so the steady-state target is checked on it. TCP
  payload (goodput) is at most 1448/1514 of it with full-sized segments, and the ACKs going
  the other way are not counted here (they pay the container's *upload* bucket). TBF charges
  a GSO packet the headers of every segment it would become; here every skb is one segment,
  so it charges what netguard charges, as nftables does at the egress hook.
- **Policer against shaper.** netguard and nftables drop what does not fit the bucket (TCP
  then backs off); TBF queues it and drops only when its queue is full, so it holds up to
  50 ms of packets here (delay, and memory per container) but causes far fewer losses.
- **Steady state** is the 10 s that start when the bucket ran out; a policer cannot pass more
  than `rate × 10 s` plus what was in flight there. Seconds 2–10 alone start with whatever
  credit TCP left in the bucket while it recovered from the end of the burst, so for a
  policer they read higher; both are in the table.
- **CPU per GB** at 160 Mbit/s is dominated by the TCP stacks and iperf3, not by the limiter
  (whose per-packet cost is part 2), and the machine-wide figure is noisy: these are 2-core
  shared virtual machines, and a few hundredths of a CPU of other activity is a large share of
  the 0.2 GB moved in 10 s. The iperf3 column does not see other processes. Compare the
  limiters with each other within one run.
- **Noise.** The tables above show the first round, one run per limiter and flow count; the
  per-second goodput in the raw table shows how steady each was. Retransmit counts of two
  policers with the same bucket differ from run to run by some tens of percent, so netguard
  and the nftables policer run five times each and the retransmit targets compare medians
  (every run is listed). Beside them, *p* is the exact one-sided Mann–Whitney test over those
  runs: the chance that, were both policers the same, netguard's counts would rank at least
  this far above nftables' (0.5 means no sign of a difference; below 0.05, netguard's are
  larger beyond the noise).
"#;
