//! Part 2: how many packets per second each receiver drops on a veth flood.
//!
//! ```text
//!   generator netns                         receiver netns
//!   g<pid>  ── veth ──────────────────────▶ r<pid>   ← the receiver under test (native XDP)
//!   BPF_PROG_TEST_RUN, live frames,          NAPI in its own kthread (threaded NAPI),
//!   `r0 = XDP_TX` on CPU 0                   pinned to CPU 1
//! ```
//!
//! The generator turns one SYN into real frames and transmits them on `g<pid>`; they arrive in
//! the peer's XDP receive ring (256 frames). When the receiver cannot keep up the ring is full
//! and the surplus is dropped at transmit (the receiver's `rx_dropped`). The receiver's drops
//! are divided both by wall-clock time and by the CPU time its NAPI kthread ran
//! (`/proc/<tid>/schedstat`); the second is its cost per packet, whatever else the machine did.

use std::{
    os::fd::{AsFd as _, BorrowedFd, OwnedFd},
    process::Command,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicI32, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use aya::programs::{Xdp, XdpMode};
use netguard_tests::{NetNs, cmd, in_netns};

use crate::sys;

/// Frames per live-frames call (interrupted by a signal to stop), and per batch.
const CHUNK: u32 = 1 << 31;
pub const BATCH: u32 = 64;
pub const WARMUP: Duration = Duration::from_millis(500);
pub const WINDOW: Duration = Duration::from_secs(2);
pub const ROUNDS: usize = 5;
pub const GEN_CPU: usize = 0;
pub const RCV_CPU: usize = 1;
/// Nice value of the generator thread and of the receiver's NAPI kthread: other work on the
/// machine (nice 0) still runs, but takes much less of their CPU.
pub const NICE: i32 = -10;

/// Two namespaces joined by one veth pair; removed on drop.
pub struct Topology {
    pub gen_if: String,
    pub rcv_if: String,
    pub gen_ifindex: u32,
    pub rcv_ifindex: u32,
    pub rcv_mac: [u8; 6],
    pub gen_mac: [u8; 6],
    // Declared last: dropped after everything above, taking the veths with them.
    pub tx: NetNs,
    pub rcv: NetNs,
}

impl Topology {
    pub fn new() -> Result<Topology> {
        let tx = NetNs::try_new()?;
        let rcv = NetNs::try_new()?;
        let pid = std::process::id();
        let (gen_if, rcv_if) = (format!("g{pid}"), format!("r{pid}"));
        netguard_tests::veth::veth_pair(
            netguard_tests::veth::VethEnd {
                ns: &tx,
                name: &gen_if,
                addrs: &["192.0.2.99/24"],
                mac: Some("02:6e:67:62:00:01"),
            },
            netguard_tests::veth::VethEnd {
                ns: &rcv,
                name: &rcv_if,
                addrs: &["203.0.113.10/24"],
                mac: Some("02:6e:67:62:00:02"),
            },
        );
        let gen_ifindex = ifindex(&tx, &gen_if)?;
        let rcv_ifindex = ifindex(&rcv, &rcv_if)?;
        let parse_mac = |s: String| -> Result<[u8; 6]> {
            let v: Vec<u8> = s
                .split(':')
                .map(|h| u8::from_str_radix(h, 16))
                .collect::<Result<_, _>>()
                .with_context(|| format!("MAC {s}"))?;
            v.try_into().map_err(|_| anyhow::anyhow!("MAC {s}"))
        };
        let rcv_mac = parse_mac(netguard_tests::veth::mac_of(&rcv, &rcv_if))?;
        let gen_mac = parse_mac(netguard_tests::veth::mac_of(&tx, &gen_if))?;
        Ok(Topology {
            gen_if,
            rcv_if,
            gen_ifindex,
            rcv_ifindex,
            rcv_mac,
            gen_mac,
            tx,
            rcv,
        })
    }

    /// `ip -s -j link show` of the receiving veth: (rx packets, rx dropped).
    fn rcv_stats(&self) -> Result<(u64, u64)> {
        let s = link_stats(&self.rcv, &self.rcv_if)?;
        Ok((
            s["rx"]["packets"].as_u64().context("rx packets")?,
            s["rx"]["dropped"].as_u64().context("rx dropped")?,
        ))
    }

    /// Frames the sending veth transmitted with XDP_TX, delivered or not: its tx packets plus
    /// tx dropped (a full receive ring, or no receiver NAPI at all).
    fn sent(&self) -> Result<u64> {
        let s = link_stats(&self.tx, &self.gen_if)?;
        Ok(s["tx"]["packets"].as_u64().context("tx packets")?
            + s["tx"]["dropped"].as_u64().context("tx dropped")?)
    }

    /// Attaches `prog` natively to the receiving veth (from a thread inside its namespace, as the
    /// ifindex is resolved there) and moves the veth's NAPI polling to a kthread on [`RCV_CPU`].
    /// Returns what is needed to detach it, and the NAPI kthreads (empty: NAPI not threaded).
    pub fn attach(
        &self,
        prog: &mut Xdp,
    ) -> Result<(aya::programs::xdp::XdpLinkId, Vec<libc::pid_t>)> {
        let iface = self.rcv_if.clone();
        let id = in_netns(self.rcv.name(), || prog.attach(&iface, XdpMode::Driver))?
            .with_context(|| format!("attaching natively to {iface}"))?;
        let threaded = self.threaded_napi();
        Ok((id, threaded))
    }

    /// [`Topology::attach`] for a program aya did not load: a bpf link in driver mode, detached
    /// when the returned descriptor is closed.
    pub fn attach_fd(&self, prog: BorrowedFd<'_>) -> Result<(OwnedFd, Vec<libc::pid_t>)> {
        let ifindex = self.rcv_ifindex;
        let link = in_netns(self.rcv.name(), || sys::xdp_link_native(prog, ifindex))??;
        let threaded = self.threaded_napi();
        Ok((link, threaded))
    }

    /// Threaded NAPI on the receiving veth, its kthreads pinned to [`RCV_CPU`] at nice
    /// [`NICE`]. The veth only has NAPI while an XDP program is attached, so this runs after
    /// each attach.
    pub fn threaded_napi(&self) -> Vec<libc::pid_t> {
        let set = self.rcv.output(&[
            "sh",
            "-c",
            &format!("echo 1 > /sys/class/net/{}/threaded", self.rcv_if),
        ]);
        if !set.status.success() {
            eprintln!(
                "bench: threaded NAPI unavailable on {}: {}",
                self.rcv_if,
                cmd::lossy(&set.stderr).trim()
            );
            return Vec::new();
        }
        let pids = napi_threads(&self.rcv_if);
        if pids.is_empty() {
            eprintln!("bench: no napi/{}-* kthread found", self.rcv_if);
            return Vec::new();
        }
        for pid in &pids {
            if let Err(e) = sys::pin_to_cpu(*pid, RCV_CPU).and_then(|()| sys::set_nice(*pid, NICE))
            {
                eprintln!("bench: napi kthread {pid}: {e}");
                return Vec::new();
            }
        }
        pids
    }
}

/// `stats64` of `ip -s -j link show dev IFACE` in `ns`.
fn link_stats(ns: &NetNs, iface: &str) -> Result<serde_json::Value> {
    let out = cmd::run_ok(Command::new("ip").args([
        "-n",
        ns.name(),
        "-s",
        "-j",
        "link",
        "show",
        "dev",
        iface,
    ]));
    let mut v: serde_json::Value = serde_json::from_str(&out).context("parsing `ip -s -j link`")?;
    Ok(v[0]["stats64"].take())
}

fn ifindex(ns: &NetNs, iface: &str) -> Result<u32> {
    let out =
        cmd::run_ok(Command::new("ip").args(["-n", ns.name(), "-j", "link", "show", "dev", iface]));
    let v: serde_json::Value = serde_json::from_str(&out)?;
    Ok(v[0]["ifindex"].as_u64().context("ifindex")? as u32)
}

/// Pids of the kthreads `napi/<iface>-<id>` (comm is cut at 15 bytes: `r<pid>` keeps the `-`).
fn napi_threads(iface: &str) -> Vec<libc::pid_t> {
    let prefix = format!("napi/{iface}-");
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| {
            let pid: libc::pid_t = e.file_name().to_str()?.parse().ok()?;
            let comm = std::fs::read_to_string(e.path().join("comm")).ok()?;
            comm.starts_with(&prefix).then_some(pid)
        })
        .collect()
}

/// The flood: a thread in the generator's namespace, pinned to [`GEN_CPU`], in one
/// `BPF_PROG_TEST_RUN` call of up to 2^31 live frames until stopped. Each call ends with an RCU
/// grace period (tens of ms on a busy 2-CPU machine, during which nothing is sent), so the
/// generator makes as few calls as possible; stopping interrupts the call with a signal
/// (`BPF_PROG_TEST_RUN` returns `EINTR` when one is pending).
pub struct Generator {
    stop: Arc<AtomicBool>,
    /// The generating thread's kernel thread id, once it runs.
    tid: Arc<AtomicI32>,
    handle: Option<thread::JoinHandle<Result<u64>>>,
}

impl Generator {
    pub fn start(topo: &Topology, frame: Vec<u8>) -> Result<Generator> {
        let prog: OwnedFd = sys::load_xdp_tx()?;
        sys::ignore_signal(libc::SIGUSR1)?;
        let stop = Arc::new(AtomicBool::new(false));
        let ns = std::fs::File::open(topo.tx.path())
            .with_context(|| format!("open {}", topo.tx.path().display()))?;
        let ifindex = topo.gen_ifindex;
        let stop2 = stop.clone();
        let tid = Arc::new(AtomicI32::new(0));
        let tid2 = tid.clone();
        let handle = thread::spawn(move || -> Result<u64> {
            // SAFETY: gettid has no arguments and cannot fail.
            tid2.store(unsafe { libc::gettid() }, Ordering::Relaxed);
            sys::enter_netns(&ns)?;
            sys::pin_to_cpu(0, GEN_CPU)?;
            sys::set_nice(0, NICE)?;
            let mut calls = 0;
            while !stop2.load(Ordering::Relaxed) {
                match sys::live_frames(prog.as_fd(), &frame, ifindex, CHUNK, BATCH) {
                    Ok(()) => calls += 1,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e.into()),
                }
            }
            Ok(calls)
        });
        let g = Generator {
            stop,
            tid,
            handle: Some(handle),
        };
        // Fail now, not after the first window, if the kernel refuses live frames.
        thread::sleep(Duration::from_millis(300));
        if g.handle.as_ref().is_some_and(|h| h.is_finished()) {
            return g
                .finish()
                .and_then(|_| bail!("the generator stopped at once"));
        }
        Ok(g)
    }

    /// Stops the flood; returns how many calls ran to completion (normally none).
    pub fn finish(mut self) -> Result<u64> {
        match self.stop_and_join() {
            Some(Ok(r)) => r,
            Some(Err(p)) => std::panic::resume_unwind(p),
            None => Ok(0),
        }
    }

    fn stop_and_join(&mut self) -> Option<thread::Result<Result<u64>>> {
        use std::os::unix::thread::JoinHandleExt as _;
        self.stop.store(true, Ordering::Relaxed);
        let handle = self.handle.take()?;
        let deadline = Instant::now() + Duration::from_secs(10);
        // Not joined yet, so the pthread_t stays valid even if the thread has just exited.
        while !handle.is_finished() && Instant::now() < deadline {
            // SAFETY: signalling a thread of this process that has not been joined.
            unsafe { libc::pthread_kill(handle.as_pthread_t(), libc::SIGUSR1) };
            thread::sleep(Duration::from_millis(20));
        }
        Some(handle.join())
    }
}

impl Drop for Generator {
    fn drop(&mut self) {
        let _ = self.stop_and_join();
    }
}

/// One measurement window on one receiver.
#[derive(Clone, Copy, Debug, Default)]
pub struct Window {
    pub secs: f64,
    /// Frames the generator transmitted, delivered or not.
    pub sent: u64,
    /// Frames the receiving veth processed (its rx packets: every frame its XDP program saw).
    pub rx: u64,
    /// Frames that did not fit in the receiver's ring (its rx dropped).
    pub ring_full: u64,
    /// Drops counted by the receiver itself (netguard's counter, nft's counter), if it has one.
    pub counted: Option<u64>,
    /// CPU time the receiver's NAPI kthread(s) ran, and waited to run, during the window
    /// (`/proc/<tid>/schedstat`); `None` when NAPI was not threaded.
    pub rcv_cpu_ns: Option<u64>,
    pub rcv_wait_ns: Option<u64>,
    /// CPU time of the generator thread during the window.
    pub gen_cpu_ns: Option<u64>,
    pub threaded: bool,
}

impl Window {
    /// Drops per second: the receiver's own count when it has one, else its rx packets.
    pub fn pps(&self) -> f64 {
        self.counted.unwrap_or(self.rx) as f64 / self.secs
    }
    /// Drops per second of receiver CPU time: what one fully available core would drop. Time
    /// the receiving CPU spent on other work does not count, so this is the robust figure on a
    /// shared machine.
    pub fn pps_per_core(&self) -> f64 {
        match self.rcv_cpu_ns {
            Some(ns) if ns > 0 => self.counted.unwrap_or(self.rx) as f64 / (ns as f64 / 1e9),
            // NAPI not threaded: its time cannot be told apart; fall back to wall clock.
            _ => self.pps(),
        }
    }
    /// Share of the window the generator was running.
    pub fn gen_busy(&self) -> f64 {
        self.gen_cpu_ns
            .map_or(f64::NAN, |ns| ns as f64 / 1e9 / self.secs)
    }
    /// Share of the window the receiver's NAPI kthread was running.
    pub fn busy(&self) -> f64 {
        self.rcv_cpu_ns
            .map_or(f64::NAN, |ns| ns as f64 / 1e9 / self.secs)
    }
    pub fn offered_pps(&self) -> f64 {
        self.sent as f64 / self.secs
    }
}

/// Measures one window: warm up, then count over [`WINDOW`]. `counter` reads the receiver's
/// own drop count.
pub fn window(
    topo: &Topology,
    generator: &Generator,
    napi: &[libc::pid_t],
    counter: &mut dyn FnMut() -> Result<Option<u64>>,
) -> Result<Window> {
    thread::sleep(WARMUP);
    let sent0 = topo.sent()?;
    let (rx0, drop0) = topo.rcv_stats()?;
    let c0 = counter()?;
    let gen_tid = [generator.tid.load(Ordering::Relaxed)];
    let g0 = schedstat(&gen_tid);
    let k0 = schedstat(napi);
    let t0 = Instant::now();
    thread::sleep(WINDOW);
    let k1 = schedstat(napi);
    let g1 = schedstat(&gen_tid);
    let secs = t0.elapsed().as_secs_f64();
    let (rx1, drop1) = topo.rcv_stats()?;
    let c1 = counter()?;
    let sent1 = topo.sent()?;
    let cpu = k0.zip(k1).map(|(a, b)| (b.0 - a.0, b.1 - a.1));
    Ok(Window {
        secs,
        sent: sent1 - sent0,
        rx: rx1 - rx0,
        ring_full: drop1 - drop0,
        counted: c0.zip(c1).map(|(a, b)| b - a),
        rcv_cpu_ns: cpu.map(|c| c.0),
        rcv_wait_ns: cpu.map(|c| c.1),
        gen_cpu_ns: g0.zip(g1).map(|(a, b)| b.0 - a.0),
        threaded: !napi.is_empty(),
    })
}

/// Summed (run, wait) nanoseconds of these threads from `/proc/<tid>/schedstat`.
fn schedstat(pids: &[libc::pid_t]) -> Option<(u64, u64)> {
    if pids.is_empty() || pids.contains(&0) {
        return None;
    }
    let mut sum = (0, 0);
    for pid in pids {
        let text = std::fs::read_to_string(format!("/proc/{pid}/schedstat")).ok()?;
        let mut f = text.split_whitespace().map(|v| v.parse::<u64>().ok());
        sum.0 += f.next()??;
        sum.1 += f.next()??;
    }
    Some(sum)
}

/// nftables netdev ingress `counter drop` on the receiving veth; the table is deleted on drop.
pub struct NftDrop<'a> {
    ns: &'a NetNs,
}

impl<'a> NftDrop<'a> {
    pub fn add(ns: &'a NetNs, iface: &str) -> Result<NftDrop<'a>> {
        let guard = NftDrop { ns };
        guard.nft(&["add", "table", "netdev", "ngb"])?;
        guard.nft(&[
            "add",
            "chain",
            "netdev",
            "ngb",
            "c",
            &format!("{{ type filter hook ingress device {iface} priority 0; }}"),
        ])?;
        guard.nft(&["add", "rule", "netdev", "ngb", "c", "counter", "drop"])?;
        Ok(guard)
    }

    fn nft(&self, args: &[&str]) -> Result<String> {
        let mut full = vec!["nft"];
        full.extend_from_slice(args);
        self.ns.try_exec(&full).map_err(Into::into)
    }

    pub fn packets(&self) -> Result<u64> {
        let out = self.nft(&["-j", "list", "chain", "netdev", "ngb", "c"])?;
        let v: serde_json::Value = serde_json::from_str(&out).context("parsing `nft -j`")?;
        v["nftables"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|o| o["rule"]["expr"].as_array())
            .flatten()
            .find_map(|e| e["counter"]["packets"].as_u64())
            .with_context(|| format!("no counter in {out}"))
    }
}

impl Drop for NftDrop<'_> {
    fn drop(&mut self) {
        if let Err(e) = self.nft(&["delete", "table", "netdev", "ngb"]) {
            eprintln!("bench: {e}");
        }
    }
}
