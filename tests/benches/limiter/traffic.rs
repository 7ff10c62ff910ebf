//! Part 1: TCP downloads through each limiter, all on the egress of the same interface (the host
//! side of container c1's veth), one limiter after the other.
//!
//! A run: a fresh limiter (full bucket), one `iperf3 -R` with 1 or 4 flows that first spends
//! the burst at line rate and then goes on, in the same TCP connections, for [`SECS`] seconds
//! against the empty bucket; then SIGINT. The receiver's byte counter, the sender's TCP
//! counters and the CPU times are read every [`SAMPLE`], so every figure is taken over exactly
//! the window after the burst ran out.

use std::{
    cell::Cell,
    path::Path,
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use netguard_tests::{
    Daemon, NetNs, Proc, Stats, TempDir,
    daemon::READY_TIMEOUT,
    limiter_sandbox::{
        C1_ADDR, LimiterSandbox, REMOTE_ADDR, bucket, container_stats, ratelimit_toml,
    },
};

use crate::{
    iperf::{self, Report},
    sys::{self, CpuTimes},
};

/// The production limit: 20 MB/s = 160 Mbit/s, 1.6 GB of burst.
pub const RATE: f64 = 20_000_000.0;
pub const BURST: f64 = 1_600_000_000.0;
pub const RATE_TOML: &str = "20MB/s";
pub const BURST_TOML: &str = "1.6GB";
/// nftables' `mbytes` (and tc's `mb`) are MiB.
pub const MIB: f64 = 1_048_576.0;
/// TBF's queue: 50 ms at the rate.
pub const TBF_LIMIT: u64 = 1_000_000;
/// The nftables table the bench creates (in the sandbox's host namespace).
const NFT_TABLE: &str = "ngt_limit";

/// The window measured after the burst ran out.
pub const SECS: u32 = 10;
/// How often the counters are read.
pub const SAMPLE: Duration = Duration::from_millis(100);
/// The burst has run out once this share of it has arrived and then, for [`SPENT_STEPS`]
/// [`SAMPLE`] steps in a row, the receiver got less than [`SPENT_FACTOR`] × the rate (one slow
/// step alone can be a scheduling hiccup of a busy machine).
pub const SPENT_SHARE: f64 = 0.95;
pub const SPENT_FACTOR: f64 = 3.0;
pub const SPENT_STEPS: usize = 5;
/// Upper bound for spending the burst (1.6 GB at 40 MB/s).
const BURST_TIMEOUT: f64 = 40.0;
/// The unlimited reference download.
pub const BASELINE_SECS: u32 = 3;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Netguard,
    Tbf,
    Nft,
    NftIssueUnits,
}

/// One limiter as configured.
pub struct Spec {
    pub kind: Kind,
    pub name: &'static str,
    /// How it is set up (markdown).
    pub how: String,
    /// Configured rate (bytes per second) and burst (bytes), converted from its own units.
    pub rate: f64,
    pub burst: f64,
    /// What the limiter counts as a packet's size (markdown).
    pub counts: &'static str,
}

pub fn specs(iface: &str) -> Vec<Spec> {
    vec![
        Spec {
            kind: Kind::Netguard,
            name: "netguard",
            how: format!(
                "the daemon (release) with `[ratelimit] interfaces = [\"{iface}\"]`, `rate = \
                 \"{RATE_TOML}\"`, `burst = \"{BURST_TOML}\"`: `netguard_limit_down` on tc egress \
                 (TCX), restarted (fresh bucket) for each run"
            ),
            rate: RATE,
            burst: BURST,
            counts: "`skb->len` with the Ethernet header, once per skb",
        },
        Spec {
            kind: Kind::Tbf,
            name: "Linux TBF",
            how: format!(
                "`tc qdisc add dev {iface} root tbf rate 160mbit burst {} limit {TBF_LIMIT}` \
                 (the issue's `burst 1600mb` would be 1600 MiB; `limit` is required: 50 ms at \
                 the rate)",
                BURST as u64
            ),
            rate: RATE,
            burst: BURST,
            counts: "`qdisc_pkt_len`: `skb->len` with the Ethernet header, plus the headers of \
                     every further segment of a GSO packet",
        },
        Spec {
            kind: Kind::Nft,
            name: "nftables policer",
            how: format!(
                "netdev table, chain on the `egress` hook of {iface}: `limit rate over {} \
                 bytes/second burst {} bytes counter drop`",
                RATE as u64, BURST as u64
            ),
            rate: RATE,
            burst: BURST,
            counts: "`skb->len` at the egress hook (Ethernet header included), once per skb",
        },
        Spec {
            kind: Kind::NftIssueUnits,
            name: "nftables, issue's units",
            how: format!(
                "the same chain with the rule as the issue wrote it, `limit rate over 20 \
                 mbytes/second burst 1600 mbytes`: nft's `mbytes` are MiB, so {:.2} Mbit/s \
                 (+{:.2} %) and {:.3} GB",
                20.0 * MIB * 8.0 / 1e6,
                (20.0 * MIB / RATE - 1.0) * 100.0,
                1600.0 * MIB / 1e9
            ),
            rate: 20.0 * MIB,
            burst: 1600.0 * MIB,
            counts: "as the nftables policer",
        },
    ]
}

// ---- installed limiters --------------------------------------------------------------------

/// The limiter part of [`Installed`].
pub enum Limiter<'a> {
    /// In the daemon.
    Netguard,
    Tbf {
        ns: &'a NetNs,
        iface: String,
    },
    Nft {
        ns: &'a NetNs,
    },
}

/// One limiter installed with a full bucket, and the netguard daemon on the host: with the
/// limiter for netguard, without `[ratelimit]` for the others, so that its XDP filter on the
/// uplink — and with it the packet path — is the same for all. Drop removes both (the limiter
/// first; the daemon's guard stops it and detaches its programs).
pub struct Installed<'a> {
    limiter: Limiter<'a>,
    daemon: Daemon,
}

impl<'a> Installed<'a> {
    /// Starts the daemon (`bin`) in the sandbox's host namespace and installs `spec` on the
    /// host side of c1's veth.
    pub fn new(sb: &'a LimiterSandbox, bin: &Path, spec: &Spec) -> Result<Installed<'a>> {
        let iface = sb.host_c1_if.as_str();
        let ratelimit = match spec.kind {
            Kind::Netguard => ratelimit_toml(&[iface], RATE_TOML, BURST_TOML, &[]),
            _ => String::new(),
        };
        let cfg = sb.config(&ratelimit);
        let daemon =
            Daemon::start_toml(bin, &sb.host, &cfg.pin_path, &cfg.to_toml(), READY_TIMEOUT);
        let ns = &sb.host;
        let limiter = match spec.kind {
            Kind::Netguard => Limiter::Netguard,
            Kind::Tbf => {
                ns.try_exec(&[
                    "tc",
                    "qdisc",
                    "add",
                    "dev",
                    iface,
                    "root",
                    "tbf",
                    "rate",
                    "160mbit",
                    "burst",
                    &(BURST as u64).to_string(),
                    "limit",
                    &TBF_LIMIT.to_string(),
                ])?;
                Limiter::Tbf {
                    ns,
                    iface: iface.to_string(),
                }
            }
            Kind::Nft | Kind::NftIssueUnits => {
                let rule = if spec.kind == Kind::Nft {
                    format!(
                        "limit rate over {} bytes/second burst {} bytes",
                        RATE as u64, BURST as u64
                    )
                } else {
                    "limit rate over 20 mbytes/second burst 1600 mbytes".to_string()
                };
                let script = format!(
                    "add table netdev {NFT_TABLE}; \
                     add chain netdev {NFT_TABLE} egress {{ type filter hook egress device \
                     \"{iface}\" priority 0; policy accept; }}; \
                     add rule netdev {NFT_TABLE} egress {rule} counter drop"
                );
                ns.try_exec(&["nft", &script])?;
                Limiter::Nft { ns }
            }
        };
        Ok(Installed { limiter, daemon })
    }

    /// Packets (skbs) the limiter has dropped since it was installed.
    pub fn drops(&self) -> Result<u64> {
        match &self.limiter {
            Limiter::Netguard => {
                let rows = container_stats(&self.daemon);
                Ok(bucket(&rows, C1_ADDR, "download").map_or(0, |r| r.dropped_packets))
            }
            Limiter::Tbf { ns, iface } => {
                let out = ns.try_exec(&["tc", "-s", "-j", "qdisc", "show", "dev", iface])?;
                let v: serde_json::Value =
                    serde_json::from_str(out.trim()).context("parsing `tc -s -j qdisc show`")?;
                v.as_array()
                    .and_then(|a| a.iter().find(|q| q["kind"] == "tbf"))
                    .and_then(|q| q["drops"].as_u64())
                    .with_context(|| format!("no tbf drops in {out}"))
            }
            Limiter::Nft { ns } => {
                let out = ns.try_exec(&["nft", "-j", "list", "table", "netdev", NFT_TABLE])?;
                let v: serde_json::Value =
                    serde_json::from_str(out.trim()).context("parsing `nft -j list table`")?;
                v["nftables"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|item| item["rule"]["expr"].as_array())
                    .flatten()
                    .find_map(|e| e["counter"]["packets"].as_u64())
                    .with_context(|| format!("no counter in the nft rule: {out}"))
            }
        }
    }

    /// Packets the daemon's XDP filter on the uplink dropped (should be 0).
    pub fn xdp_drops(&self) -> u64 {
        xdp_drops(&self.daemon.stats())
    }
}

impl Drop for Limiter<'_> {
    fn drop(&mut self) {
        let r = match self {
            Limiter::Netguard => Ok(String::new()),
            Limiter::Tbf { ns, iface } => {
                ns.try_exec(&["tc", "qdisc", "del", "dev", iface, "root"])
            }
            Limiter::Nft { ns } => ns.try_exec(&["nft", "delete", "table", "netdev", NFT_TABLE]),
        };
        if let Err(e) = r {
            eprintln!("bench: removing a limiter: {e}");
        }
    }
}

// ---- samples -------------------------------------------------------------------------------

/// Every counter at one instant.
#[derive(Clone, Copy, Debug)]
pub struct Sample {
    /// Seconds since the client was started.
    pub at: f64,
    /// c1's `eth0`: frame bytes and skbs received (see [`sys::rx`]).
    pub rx_bytes: u64,
    pub rx_packets: u64,
    /// The sender namespace's TCP counters.
    pub out_segs: u64,
    pub retrans: u64,
    /// The machine's busy, softirq and steal clock ticks.
    pub busy: u64,
    pub softirq: u64,
    pub steal: u64,
    /// Run time of the iperf3 receiver (client) and sender (server), ns.
    pub receiver_ns: u64,
    pub sender_ns: u64,
    /// The receiver's voluntary context switches (wake-ups).
    pub receiver_wakeups: u64,
}

/// The first sample at or after `t` and the last at or before `u`.
fn span(samples: &[Sample], t: f64, u: f64) -> Option<(Sample, Sample)> {
    let a = samples.iter().find(|s| s.at >= t - 1e-6)?;
    let b = samples.iter().rev().find(|s| s.at <= u + 1e-6)?;
    (b.at > a.at).then_some((*a, *b))
}

/// When data started arriving: the sample before the first one 64 KB above the start.
fn first_data(samples: &[Sample]) -> f64 {
    let base = samples.first().map_or(0, |s| s.rx_bytes);
    samples
        .iter()
        .position(|s| s.rx_bytes > base + 65_536)
        .map_or(0.0, |i| samples[i.saturating_sub(1)].at)
}

// ---- the test bed --------------------------------------------------------------------------

/// The sandbox (the remote sends, c1 receives, the limiter sits on the host's egress towards
/// c1), the iperf3 server, a temp dir for iperf3's output.
pub struct Bed<'a> {
    pub sb: &'a LimiterSandbox,
    pub dir: &'a TempDir,
    pub server_pid: u32,
    n: Cell<u32>,
}

impl<'a> Bed<'a> {
    pub fn new(sb: &'a LimiterSandbox, dir: &'a TempDir, server_pid: u32) -> Bed<'a> {
        Bed {
            sb,
            dir,
            server_pid,
            n: Cell::new(0),
        }
    }

    fn sample(&self, start: Instant, client_pid: u32) -> Result<Sample> {
        let (rx_bytes, rx_packets) = sys::rx(&self.sb.c1, &self.sb.inner_if)?;
        let tcp = sys::tcp_counters(&self.sb.remote)?;
        let cpu = CpuTimes::now()?;
        Ok(Sample {
            at: start.elapsed().as_secs_f64(),
            rx_bytes,
            rx_packets,
            out_segs: tcp.out_segs,
            retrans: tcp.retrans_segs,
            busy: cpu.busy,
            softirq: cpu.softirq,
            steal: cpu.steal,
            receiver_ns: sys::task_runtime_ns(client_pid),
            sender_ns: sys::task_runtime_ns(self.server_pid),
            receiver_wakeups: sys::voluntary_switches(client_pid),
        })
    }

    /// Runs `iperf3 -R -P flows` and samples every [`SAMPLE`]. With `spend`, the client runs
    /// until the burst of `spec` has run out and then [`SECS`] more seconds (then SIGINT);
    /// without, it runs `secs` and ends by itself.
    fn run(&self, flows: usize, spend: Option<&Spec>, secs: u32) -> Result<Run> {
        let n = self.n.get();
        self.n.set(n + 1);
        let log = self.dir.join(&format!("{n:02}-{flows}-flows.json"));
        let client_secs = if spend.is_some() { 120 } else { secs };
        let args = iperf::client_args(&REMOTE_ADDR.to_string(), flows, client_secs);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let start = Instant::now();
        let mut proc = Proc::spawn(&mut self.sb.c1.command(&args), &log)
            .with_context(|| format!("starting {}", args.join(" ")))?;
        let pid = proc.pid();
        let mut samples = vec![self.sample(start, pid)?];
        let mut spent: Option<f64> = None;
        let limit = match spend {
            Some(_) => BURST_TIMEOUT + f64::from(SECS) + 5.0,
            None => f64::from(secs) + 10.0,
        };
        for tick in 1u32.. {
            thread::sleep((start + SAMPLE * tick).saturating_duration_since(Instant::now()));
            samples.push(self.sample(start, pid)?);
            let now = samples[samples.len() - 1].at;
            if proc.try_exited().is_some() {
                if spend.is_some() {
                    bail!(
                        "iperf3 ended after {now:.1} s, before the measurement did; log {}:\n{}",
                        log.display(),
                        proc.log_tail(20)
                    );
                }
                break;
            }
            if let Some(spec) = spend {
                match spent {
                    None => spent = burst_spent(&samples, spec),
                    Some(t) if now >= t + f64::from(SECS) => {
                        proc.stop(libc::SIGINT, Duration::from_secs(3));
                        break;
                    }
                    Some(_) => {}
                }
                if spent.is_none() && now > BURST_TIMEOUT {
                    proc.stop(libc::SIGKILL, Duration::from_secs(1));
                    bail!(
                        "{}: the burst was not spent within {BURST_TIMEOUT} s ({:.2} GB arrived)",
                        spec.name,
                        (samples[samples.len() - 1].rx_bytes - samples[0].rx_bytes) as f64 / 1e9
                    );
                }
            }
            if now > limit {
                proc.stop(libc::SIGKILL, Duration::from_secs(1));
                bail!(
                    "iperf3 still running after {limit} s; log {}:\n{}",
                    log.display(),
                    proc.log_tail(20)
                );
            }
        }
        let text = std::fs::read_to_string(&log).with_context(|| format!("{}", log.display()))?;
        let report = Report::parse(&text).with_context(|| {
            format!(
                "iperf3 {flows} flow(s), log {}:\n{}",
                log.display(),
                netguard_tests::cmd::tail(&text, 20)
            )
        })?;
        let t0 = first_data(&samples);
        let window = match spent {
            Some(t) => (t, t + f64::from(SECS)),
            None => (t0 + 1.0, samples[samples.len() - 1].at),
        };
        Ok(Run {
            flows,
            report,
            t0,
            spent,
            window,
            samples,
            drops: 0,
            xdp_drops: 0,
        })
    }

    /// A run from a full bucket: spend the burst, then [`SECS`] s.
    pub fn limited_run(&self, spec: &Spec, flows: usize) -> Result<Run> {
        self.run(flows, Some(spec), 0)
    }

    /// No limiter: 4 flows for [`BASELINE_SECS`].
    pub fn baseline(&self) -> Result<Run> {
        self.run(4, None, BASELINE_SECS)
    }
}

/// When the burst ran out: once at least [`SPENT_SHARE`] of the burst has arrived, the end of
/// the first [`SAMPLE`] step that begins [`SPENT_STEPS`] steps in a row in which less than
/// [`SPENT_FACTOR`] × the rate arrived. The bucket is empty from there on (a limiter that is
/// dropping has no credit), so the window that starts there has no burst left in it.
fn burst_spent(samples: &[Sample], spec: &Spec) -> Option<f64> {
    let base = samples[0].rx_bytes;
    let slow = |w: &[Sample]| {
        ((w[1].rx_bytes - w[0].rx_bytes) as f64 / (w[1].at - w[0].at)) < SPENT_FACTOR * spec.rate
    };
    let steps: Vec<&[Sample]> = samples.windows(2).collect();
    (0..steps.len().saturating_sub(SPENT_STEPS - 1))
        .find(|&i| {
            (steps[i][0].rx_bytes - base) as f64 >= SPENT_SHARE * spec.burst
                && steps[i..i + SPENT_STEPS].iter().all(|w| slow(w))
        })
        .map(|i| steps[i][1].at)
}

/// Packets netguard's XDP filter dropped, all reasons (the limiter's traffic must not be).
pub fn xdp_drops(stats: &Stats) -> u64 {
    [
        "denylisted",
        "port_closed",
        "protocol",
        "fragment",
        "malformed",
        "ipv6",
    ]
    .iter()
    .filter_map(|r| stats.reasons.get(*r))
    .map(|c| c.packets)
    .sum()
}

/// Busy CPU-seconds per second of the machine while the bench does nothing.
pub fn background(over: Duration) -> Result<f64> {
    let a = CpuTimes::now()?;
    thread::sleep(over);
    let b = CpuTimes::now()?;
    Ok(b.busy_secs_since(&a) / (b.at - a.at).as_secs_f64())
}

// ---- results -------------------------------------------------------------------------------

/// One download.
pub struct Run {
    pub flows: usize,
    pub report: Report,
    pub samples: Vec<Sample>,
    /// When data started arriving, s after the client started.
    pub t0: f64,
    /// When the burst ran out (limited runs).
    pub spent: Option<f64>,
    /// The measured window: [`SECS`] s from `spent` (or, without a limiter, from 1 s after
    /// the first data to the end).
    pub window: (f64, f64),
    /// Packets the limiter dropped in the whole run.
    pub drops: u64,
    /// Packets netguard's XDP filter on the uplink dropped in the run (should be 0).
    pub xdp_drops: u64,
}

impl Run {
    fn delta(&self, from: f64, to: f64, f: fn(&Sample) -> u64) -> Option<(u64, f64)> {
        span(&self.samples, from, to).map(|(a, b)| (f(&b) - f(&a), b.at - a.at))
    }

    /// Frame bits per second at the receiving veth over `[from, to]`.
    pub fn frames_bps(&self, from: f64, to: f64) -> f64 {
        self.delta(from, to, |s| s.rx_bytes)
            .map_or(f64::NAN, |(b, secs)| b as f64 * 8.0 / secs)
    }

    /// Steady state: the whole window. It starts when the bucket is empty, so a policer can
    /// admit at most `rate × 10 s` in it, whatever TCP does.
    pub fn frames_steady_bps(&self) -> f64 {
        self.frames_bps(self.window.0, self.window.1)
    }

    /// Where the window's first second ends: the first sample at least 1 s into it, so that
    /// the first second and the rest split the window exactly.
    fn second(&self) -> f64 {
        self.samples
            .iter()
            .find(|s| s.at >= self.window.0 + 1.0 - 1e-6)
            .map_or(self.window.0 + 1.0, |s| s.at)
    }

    /// The window without its first second (seconds 2–10).
    pub fn frames_late_bps(&self) -> f64 {
        self.frames_bps(self.second(), self.window.1)
    }

    /// Frames in the first second after the burst ran out.
    pub fn frames_first_second_bps(&self) -> f64 {
        self.frames_bps(self.window.0, self.second())
    }

    /// Frames in the first second of data (a full bucket: line rate).
    pub fn burst_first_second_bps(&self) -> f64 {
        self.frames_bps(self.t0, self.t0 + 1.0)
    }

    /// Frame bytes from the first data until the burst ran out, and how long that took.
    pub fn burst(&self) -> Option<(u64, f64)> {
        self.spent
            .and_then(|t| self.delta(self.t0, t, |s| s.rx_bytes))
    }

    /// Payload bits per second over the window without its first second (iperf3's 100 ms
    /// intervals, whose clock starts within a sample of `t0`: the first second, right after
    /// the burst, is too steep to place on it).
    pub fn goodput_late_bps(&self) -> f64 {
        self.report
            .goodput_bps(self.second() - self.t0, self.window.1 - self.t0)
    }

    /// Payload bytes over the whole window.
    pub fn window_payload(&self) -> u64 {
        self.report
            .bytes(self.window.0 - self.t0, self.window.1 - self.t0)
    }

    /// Goodput of each second of the window, Mbit/s.
    pub fn per_second_mbps(&self) -> Vec<f64> {
        let secs = (self.window.1 - self.window.0).round() as u32;
        self.report.per_second_mbps(self.window.0 - self.t0, secs)
    }

    /// Retransmitted segments (sender namespace) over the window, and over the whole run.
    pub fn retransmits(&self) -> u64 {
        self.delta(self.window.0, self.window.1, |s| s.retrans)
            .map_or(0, |d| d.0)
    }

    pub fn retransmits_total(&self) -> u64 {
        self.samples[self.samples.len() - 1].retrans - self.samples[0].retrans
    }

    pub fn segments(&self) -> u64 {
        self.delta(self.window.0, self.window.1, |s| s.out_segs)
            .map_or(0, |d| d.0)
    }

    /// Average skb the receiver got over the window, bytes.
    pub fn avg_skb(&self) -> f64 {
        let (a, b) = self.window;
        match (
            self.delta(a, b, |s| s.rx_bytes),
            self.delta(a, b, |s| s.rx_packets),
        ) {
            (Some((bytes, _)), Some((pkts, _))) if pkts > 0 => bytes as f64 / pkts as f64,
            _ => f64::NAN,
        }
    }

    /// CPU-seconds over the window.
    pub fn cpu(&self) -> Cpu {
        let hz = sys::clock_ticks();
        let d = |f: fn(&Sample) -> u64| {
            self.delta(self.window.0, self.window.1, f)
                .map_or(f64::NAN, |(t, _)| t as f64)
        };
        Cpu {
            busy: d(|s| s.busy) / hz,
            softirq: d(|s| s.softirq) / hz,
            steal: d(|s| s.steal) / hz,
            receiver: d(|s| s.receiver_ns) / 1e9,
            sender: d(|s| s.sender_ns) / 1e9,
            receiver_wakeups: d(|s| s.receiver_wakeups),
            secs: self
                .delta(self.window.0, self.window.1, |s| s.busy)
                .map_or(f64::NAN, |(_, secs)| secs),
        }
    }

    fn payload_gb(&self) -> f64 {
        self.window_payload() as f64 / 1e9
    }

    /// Busy CPU-seconds of the machine per GB of payload over the window, minus `background`
    /// CPU-seconds per second.
    pub fn cpu_per_gb(&self, background: f64) -> f64 {
        let c = self.cpu();
        (c.busy - background * c.secs).max(0.0) / self.payload_gb()
    }

    /// The two iperf3 processes' CPU-seconds per GB of payload over the window.
    pub fn iperf_cpu_per_gb(&self) -> f64 {
        let c = self.cpu();
        (c.receiver + c.sender) / self.payload_gb()
    }
}

/// CPU-seconds over a run's window.
pub struct Cpu {
    /// The machine: busy (both CPUs), of which softirq; steal.
    pub busy: f64,
    pub softirq: f64,
    pub steal: f64,
    /// The iperf3 processes' run time (with the softirq work that interrupted them).
    pub receiver: f64,
    pub sender: f64,
    /// The receiver's wake-ups (voluntary context switches).
    pub receiver_wakeups: f64,
    pub secs: f64,
}

/// Everything measured for one limiter: one run per entry of its flows.
pub struct LimiterResult {
    pub spec: Spec,
    pub runs: Vec<Run>,
}

/// One run: installs the limiter fresh (and the daemon), spends the burst, measures, removes
/// both.
pub fn measure(bed: &Bed<'_>, bin: &Path, spec: &Spec, flows: usize) -> Result<Run> {
    crate::step(format!(
        "{}, {flows} flow(s): spend the {:.2} GB burst, then {SECS} s",
        spec.name,
        spec.burst / 1e9
    ));
    let installed = Installed::new(bed.sb, bin, spec)?;
    let mut run = bed.limited_run(spec, flows)?;
    run.drops = installed.drops()?;
    run.xdp_drops = installed.xdp_drops();
    drop(installed);
    let (bytes, secs) = run.burst().unwrap_or((0, f64::NAN));
    println!(
        "    burst: {:.2} GB in {secs:.1} s (first second {:.0} Mbit/s); then frames {:.1} \
         Mbit/s (first second {:.1}, seconds 2-{SECS} {:.1}), {} retransmits, {} drops, \
         average skb {:.0} B; goodput per second {:?}",
        bytes as f64 / 1e9,
        run.burst_first_second_bps() / 1e6,
        run.frames_steady_bps() / 1e6,
        run.frames_first_second_bps() / 1e6,
        run.frames_late_bps() / 1e6,
        run.retransmits(),
        run.drops,
        run.avg_skb(),
        run.per_second_mbps()
            .iter()
            .map(|v| format!("{v:.0}"))
            .collect::<Vec<_>>()
    );
    Ok(run)
}
