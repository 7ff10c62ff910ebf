//! `cargo bench -p netguard-tests --bench proxy` (as root; `cargo xtask bench` runs it): the L7
//! proxy beside nginx and HAProxy (the Debian packages), each configured for the same two
//! Host-routed apps over the same backend (nginx answering 100-byte bodies from memory, with
//! keep-alive), driven by wrk (2 threads, 64 keep-alive connections) in one run, over plain
//! HTTP and TLS, and the backend alone as the ceiling; then memory per idle keep-alive
//! connection (resident memory with 2,000 idle connections open against none). Replaces the
//! section between `<!-- proxy:begin -->` and `<!-- proxy:end -->` of `BENCHMARKS.md`
//! (appending it if absent) and prints it.
//!
//! Everything runs on loopback inside a network namespace this process creates (the daemon's
//! XDP filter sits on the namespace's veth, which this traffic does not cross), on ports of
//! that namespace only; nginx and HAProxy run from config, pid and log files in a temp dir.
//! The netguard daemon is `$NETGUARD_BIN`, else `target/release/netguard`.
//!
//! `NETGUARD_PROXY_SECS` (default 6) sets each measured run's length and
//! `NETGUARD_PROXY_ROUNDS` (default 4) how many times every server is measured (the order
//! alternates between rounds: this shared machine's speed drifts by tens of percent within
//! minutes, and short interleaved runs keep a slow phase from landing on one server only); with
//! other than the defaults the section is printed but
//! BENCHMARKS.md is left alone. `NETGUARD_PROXY_QUICK=http` (or `tls`) is for tuning work:
//! netguard and nginx only, that protocol only, no idle-memory test, nothing written.

#[path = "common/bench.rs"]
mod bench;
#[path = "proxy/idle.rs"]
mod idle;
#[path = "common/procs.rs"]
mod procs;
#[path = "proxy/report.rs"]
mod report;
#[path = "common/section.rs"]
mod section;
#[path = "common/servers.rs"]
mod servers;
#[path = "proxy/subjects.rs"]
mod subjects;
#[path = "common/wrk.rs"]
mod wrk;

use std::{
    process::ExitCode,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use netguard_tests::{NetNs, Sandbox, TempDir};

use crate::{
    bench::{median, step},
    subjects::{HOST, Kind},
    wrk::WrkResult,
};

const TOOLS: [(&str, &str); 6] = [
    ("ip", "iproute2"),
    ("nsenter", "util-linux"),
    ("wrk", "wrk"),
    ("nginx", "nginx"),
    ("haproxy", "haproxy"),
    ("openssl", "openssl"),
];

const DEFAULT_SECS: u64 = 6;
const DEFAULT_ROUNDS: usize = 4;
/// Each measured run follows a discarded warm-up run of this length.
const WARMUP_SECS: u64 = 2;

fn main() -> ExitCode {
    bench::exit("proxy bench", run())
}

fn env_num<T: std::str::FromStr>(name: &str, default: T) -> Result<T> {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .map_err(|_| anyhow::anyhow!("{name}={v:?} is not a number")),
        Err(_) => Ok(default),
    }
}

/// One measured wrk run.
#[derive(Clone, Debug)]
pub struct Measured {
    pub kind: Kind,
    pub tls: bool,
    pub round: usize,
    pub wrk: WrkResult,
    /// CPU time of the server's process tree during the run.
    pub cpu: Duration,
}

/// One side-by-side run: netguard and `other` loaded at the same time, each by its own wrk.
#[derive(Clone, Debug)]
pub struct Pair {
    pub other: Kind,
    pub tls: bool,
    pub round: usize,
    pub netguard: WrkResult,
    pub theirs: WrkResult,
}

impl Pair {
    /// netguard's requests over the other proxy's, in the same seconds.
    pub fn ratio(&self) -> f64 {
        self.netguard.requests as f64 / self.theirs.requests.max(1) as f64
    }
}

pub struct Results {
    pub runs: Vec<Measured>,
    pub pairs: Vec<Pair>,
    pub idle: Vec<(Kind, idle::Idle)>,
    pub secs: u64,
    pub rounds: usize,
    pub elapsed: Duration,
}

fn run() -> Result<()> {
    let started = Instant::now();
    let secs = env_num("NETGUARD_PROXY_SECS", DEFAULT_SECS)?;
    let rounds = env_num("NETGUARD_PROXY_ROUNDS", DEFAULT_ROUNDS)?;
    let quick = match std::env::var("NETGUARD_PROXY_QUICK").ok().as_deref() {
        None => None,
        Some("http") => Some(false),
        Some("tls") => Some(true),
        Some(other) => bail!("NETGUARD_PROXY_QUICK={other:?}: expected \"http\" or \"tls\""),
    };
    if secs == 0 || rounds == 0 {
        bail!("NETGUARD_PROXY_SECS and NETGUARD_PROXY_ROUNDS must be at least 1");
    }
    bench::require_root("the benchmark builds network namespaces and attaches XDP")?;
    bench::require_tools(&TOOLS)?;
    let bin = bench::release_daemon()?;
    let nofile = procs::raise_nofile();
    if nofile < (idle::N as u64) + 1_000 {
        bail!(
            "RLIMIT_NOFILE is {nofile}: {} idle connections need more (raise the hard limit)",
            idle::N
        );
    }
    netguard_tests::daemon::ensure_bpffs();

    step("sandbox: a namespace pair; every server on loopback in the edge namespace");
    let sb = Sandbox::new();
    let dir = TempDir::new().context("temp dir")?;
    let _hosts = servers::Hosts::new(&sb.edge, &subjects::APPS)?;
    tune(&sb.edge)?;
    let certs = subjects::certs(dir.path())?;
    let script = wrk::write_script(dir.path())?;

    step(format!(
        "backend: nginx on {} (100-byte answers)",
        servers::BACKEND
    ));
    let mut backend = servers::backend(&sb.edge, dir.path())?;
    step("netguard (release daemon), nginx and HAProxy, two apps each");
    let daemon = subjects::start_netguard(&bin, &sb, &certs)?;
    let mut nginx = subjects::start_nginx(&sb.edge, dir.path(), &certs)?;
    let mut haproxy = subjects::start_haproxy(&sb.edge, dir.path(), &certs)?;
    let pids = [
        (Kind::Backend, backend.pid()),
        (
            Kind::Netguard,
            daemon.pid().context("the daemon has no pid")?,
        ),
        (Kind::Nginx, nginx.pid()),
        (Kind::Haproxy, haproxy.pid()),
    ];
    let pid = |kind: Kind| -> u32 { pids.iter().find(|(k, _)| *k == kind).map_or(0, |(_, p)| *p) };
    let proxies: &[Kind] = if quick.is_some() {
        &[Kind::Netguard, Kind::Nginx]
    } else {
        &[Kind::Netguard, Kind::Nginx, Kind::Haproxy]
    };
    for &kind in proxies {
        check_routing(&sb.edge, kind)?;
    }

    step(format!(
        "memory per idle keep-alive connection: {} idle connections against none",
        idle::N
    ));
    let mut idles = Vec::new();
    for &kind in proxies.iter().filter(|_| quick.is_none()) {
        let m = idle::measure(&sb.edge, pid(kind), kind.http(), HOST)
            .with_context(|| format!("idle connections to {}", kind.name()))?;
        println!(
            "    {:<8} {:>7.1} MiB → {:>7.1} MiB: {:.1} KiB per connection",
            kind.name(),
            m.before as f64 / 1048576.0,
            m.after as f64 / 1048576.0,
            m.per_connection() / 1024.0
        );
        idles.push((kind, m));
    }

    let mut runs = Vec::new();
    for round in 1..=rounds {
        for tls in [false, true]
            .into_iter()
            .filter(|t| quick.is_none_or(|q| q == *t))
        {
            let mut order: Vec<Kind> = if tls || quick.is_some() {
                proxies.to_vec()
            } else {
                [Kind::Backend]
                    .into_iter()
                    .chain(proxies.iter().copied())
                    .collect()
            };
            if round % 2 == 0 {
                order.reverse();
            }
            for kind in order {
                let Some(url) = kind.url(tls) else { continue };
                let host = if kind == Kind::Backend {
                    "backend"
                } else {
                    HOST
                };
                let proto = if tls { "TLS" } else { "HTTP" };
                step(format!(
                    "round {round}/{rounds}: {} over {proto}, {WARMUP_SECS} s warm-up + {secs} s",
                    kind.name()
                ));
                wrk::run(&sb.edge, &script, &url, host, WARMUP_SECS)?;
                let root = pid(kind);
                let cpu0 = procs::tree_cpu(root);
                let r = wrk::run(&sb.edge, &script, &url, host, secs)?;
                let cpu = procs::tree_cpu(root).saturating_sub(cpu0);
                println!(
                    "    {:>9.0} req/s  p50 {:.2} ms  p99 {:.2} ms  failed {}  server CPU {:.1} s",
                    r.rps(),
                    r.p50_us / 1000.0,
                    r.p99_us / 1000.0,
                    r.failed(),
                    cpu.as_secs_f64()
                );
                runs.push(Measured {
                    kind,
                    tls,
                    round,
                    wrk: r,
                    cpu,
                });
            }
        }
        backend.alive()?;
        nginx.alive()?;
        haproxy.alive()?;
    }
    let mut pairs = Vec::new();
    let others: &[Kind] = &proxies[1..];
    for round in 1..=rounds {
        for tls in [false, true]
            .into_iter()
            .filter(|t| quick.is_none_or(|q| q == *t))
        {
            for &other in others {
                let proto = if tls { "TLS" } else { "HTTP" };
                step(format!(
                    "side by side {round}/{rounds}: netguard and {} at once over {proto}, {secs} s",
                    other.name()
                ));
                let url = |k: Kind| k.url(tls).context("a proxy without TLS");
                let (ng_url, their_url) = (url(Kind::Netguard)?, url(other)?);
                let (ng, theirs) = std::thread::scope(|scope| {
                    let ng = scope.spawn(|| wrk::run(&sb.edge, &script, &ng_url, HOST, secs));
                    let theirs =
                        scope.spawn(|| wrk::run(&sb.edge, &script, &their_url, HOST, secs));
                    (ng.join(), theirs.join())
                });
                let joined = |r: std::thread::Result<Result<WrkResult>>| {
                    r.map_err(|_| anyhow::anyhow!("a wrk thread panicked"))?
                };
                let pair = Pair {
                    other,
                    tls,
                    round,
                    netguard: joined(ng)?,
                    theirs: joined(theirs)?,
                };
                println!(
                    "    netguard {:>9.0} req/s p99 {:.2} ms | {} {:>9.0} req/s p99 {:.2} ms | {:.2}×",
                    pair.netguard.rps(),
                    pair.netguard.p99_us / 1000.0,
                    other.name(),
                    pair.theirs.rps(),
                    pair.theirs.p99_us / 1000.0,
                    pair.ratio()
                );
                pairs.push(pair);
            }
        }
    }
    backend.alive()?;
    nginx.alive()?;
    haproxy.alive()?;
    drop(daemon);
    let results = Results {
        runs,
        pairs,
        idle: idles,
        secs,
        rounds,
        elapsed: started.elapsed(),
    };
    let not_written = if quick.is_some() {
        Some("NETGUARD_PROXY_QUICK set".to_string())
    } else {
        (secs != DEFAULT_SECS || rounds != DEFAULT_ROUNDS)
            .then(|| "NETGUARD_PROXY_SECS/ROUNDS set".to_string())
    };
    section::publish(
        report::SECTION,
        &report::render(&results),
        not_written,
        started,
    )
}

/// Room for wrk's and the proxies' connections: the namespace's own sysctls, the same for
/// every server.
fn tune(ns: &NetNs) -> Result<()> {
    for kv in [
        "net.ipv4.ip_local_port_range=1024 65000",
        "net.ipv4.tcp_tw_reuse=1",
        "net.core.somaxconn=4096",
    ] {
        ns.try_exec(&["sysctl", "-q", "-w", kv])
            .with_context(|| format!("sysctl {kv} in the namespace"))?;
    }
    Ok(())
}

/// Both apps answer with the backend's body over HTTP and TLS; an unknown name gets 404.
fn check_routing(ns: &NetNs, kind: Kind) -> Result<()> {
    for app in subjects::APPS {
        servers::check_serves(ns, kind.http(), app, kind.name())?;
        if let Some(https) = kind.https() {
            let url = format!("https://{app}:{}/", https.port());
            let resolve = format!("{app}:{}:127.0.0.1", https.port());
            let out = ns.output(&[
                "curl",
                "-sS",
                "-k",
                "--max-time",
                "10",
                "--resolve",
                &resolve,
                &url,
            ]);
            if !out.status.success() || out.stdout != servers::BODY.as_bytes() {
                bail!(
                    "{} over TLS ({url}) did not answer with the backend's body: {}{}",
                    kind.name(),
                    netguard_tests::cmd::lossy(&out.stdout),
                    netguard_tests::cmd::lossy(&out.stderr)
                );
            }
        }
    }
    let (status, _) = servers::get(ns, kind.http(), "unknown.bench.test")?;
    if status != 404 {
        bail!(
            "{} answered {status} for an unknown host, not 404",
            kind.name()
        );
    }
    Ok(())
}
