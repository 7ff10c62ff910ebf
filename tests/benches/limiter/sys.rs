//! What the bench reads from /proc: the machine's CPU time, and (inside a namespace) an
//! interface's received bytes and the TCP counters.

use std::{path::Path, time::Instant};

use anyhow::{Context as _, Result, bail};
use netguard_tests::{NetNs, in_netns};

/// `/proc/stat`'s aggregate `cpu` line, in clock ticks.
#[derive(Clone, Copy, Debug)]
pub struct CpuTimes {
    /// user + nice + system + irq + softirq (guest time is already inside user).
    pub busy: u64,
    /// softirq alone (also inside `busy`).
    pub softirq: u64,
    /// Time the hypervisor gave to someone else.
    pub steal: u64,
    pub at: Instant,
}

impl CpuTimes {
    pub fn now() -> Result<CpuTimes> {
        let text = std::fs::read_to_string("/proc/stat").context("reading /proc/stat")?;
        let line = text
            .lines()
            .find(|l| l.starts_with("cpu "))
            .context("/proc/stat has no aggregate cpu line")?;
        let v: Vec<u64> = line
            .split_whitespace()
            .skip(1)
            .map(|f| f.parse().unwrap_or(0))
            .collect();
        if v.len() < 8 {
            bail!("/proc/stat cpu line too short: {line}");
        }
        Ok(CpuTimes {
            busy: v[0] + v[1] + v[2] + v[5] + v[6],
            softirq: v[6],
            steal: v[7],
            at: Instant::now(),
        })
    }

    /// CPU-seconds (all CPUs) spent busy between `earlier` and `self`.
    pub fn busy_secs_since(&self, earlier: &CpuTimes) -> f64 {
        self.busy.saturating_sub(earlier.busy) as f64 / clock_ticks()
    }
}

/// `USER_HZ`, the unit of /proc/stat.
pub fn clock_ticks() -> f64 {
    // SAFETY: sysconf has no memory effects.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if hz > 0 { hz as f64 } else { 100.0 }
}

/// Nanoseconds a task (here: a single-threaded iperf3 process) has run on a CPU, from
/// `/proc/<pid>/schedstat`; 0 once it has gone. Without IRQ time accounting (this kernel) this
/// includes the softirq work that ran while the task was interrupted.
pub fn task_runtime_ns(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/schedstat"))
        .ok()
        .and_then(|t| t.split_whitespace().next().and_then(|v| v.parse().ok()))
        .unwrap_or(0)
}

/// Voluntary context switches of a process (its sleeps: for the iperf3 receiver, about one
/// per wake-up to read); 0 once it has gone.
pub fn voluntary_switches(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("voluntary_ctxt_switches:"))
                .and_then(|v| v.trim().parse().ok())
        })
        .unwrap_or(0)
}

/// Reads a `/proc/thread-self/net/…` file from a thread inside `ns`: the namespace's own view.
fn read_net_file(ns: &NetNs, file: &str) -> Result<String> {
    let path = Path::new("/proc/thread-self/net").join(file);
    in_netns(ns.name(), || std::fs::read_to_string(&path))
        .with_context(|| format!("entering netns {}", ns.name()))?
        .with_context(|| format!("reading {} in netns {}", path.display(), ns.name()))
}

/// Bytes and packets `iface` in `ns` has received (`/proc/net/dev`). On a veth the bytes are
/// the sum of `skb->len` as the peer transmitted them: frame bytes with the 14-byte Ethernet
/// header, one header per skb (a GSO packet is one skb, and one packet here).
pub fn rx(ns: &NetNs, iface: &str) -> Result<(u64, u64)> {
    let text = read_net_file(ns, "dev")?;
    for line in text.lines() {
        let Some((name, rest)) = line.split_once(':') else {
            continue;
        };
        if name.trim() == iface {
            let v: Vec<u64> = rest
                .split_whitespace()
                .take(2)
                .filter_map(|v| v.parse().ok())
                .collect();
            if v.len() == 2 {
                return Ok((v[0], v[1]));
            }
            bail!("/proc/net/dev line for {iface}: {line}");
        }
    }
    bail!("no {iface} in /proc/net/dev of netns {}", ns.name())
}

/// The TCP MIB counters of a namespace that the bench uses.
#[derive(Clone, Copy, Debug, Default)]
pub struct TcpCounters {
    /// Segments sent, GSO packets counted per segment, retransmissions included.
    pub out_segs: u64,
    pub retrans_segs: u64,
}

pub fn tcp_counters(ns: &NetNs) -> Result<TcpCounters> {
    let text = read_net_file(ns, "snmp")?;
    let tcp: Vec<&str> = text.lines().filter(|l| l.starts_with("Tcp:")).collect();
    if tcp.len() < 2 {
        bail!("no Tcp lines in /proc/net/snmp of netns {}", ns.name());
    }
    let names: Vec<&str> = tcp[0].split_whitespace().collect();
    let values: Vec<&str> = tcp[1].split_whitespace().collect();
    let get = |key: &str| -> Result<u64> {
        names
            .iter()
            .position(|n| *n == key)
            .and_then(|i| values.get(i))
            .and_then(|v| v.parse().ok())
            .with_context(|| format!("no Tcp {key} in /proc/net/snmp"))
    };
    Ok(TcpCounters {
        out_segs: get("OutSegs")?,
        retrans_segs: get("RetransSegs")?,
    })
}

/// Pins the calling thread to one CPU.
pub fn pin_to_cpu(cpu: usize) -> Result<()> {
    // SAFETY: a zeroed cpu_set_t is the empty set; CPU_SET stays within it for cpu < 1024;
    // pid 0 is the calling thread.
    let rc = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set)
    };
    if rc != 0 {
        bail!(
            "sched_setaffinity(cpu {cpu}): {}",
            std::io::Error::last_os_error()
        );
    }
    Ok(())
}

/// This thread's CPU time, ns.
pub fn thread_cpu_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid out-parameter.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}
