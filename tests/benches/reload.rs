//! `cargo bench -p netguard-tests --bench reload` (as root; `cargo xtask bench` runs it): a
//! config with 10,000 apps (each its own domain and backend) and the real denylists of
//! `tests/data/denylists` (1,006,102 entries), the release daemon in a sandbox namespace:
//! time to ready, the duration of a reload as the daemon logs it (`config reloaded ms=…`),
//! and the proxy's request rate on one stable app measured by wrk without reloads and while
//! a SIGHUP reload happens every second (the config alternating between two variants: one app
//! added or removed, one denylist entry changed), with every failed request counted. Replaces
//! the section between `<!-- reload:begin -->` and `<!-- reload:end -->` of `BENCHMARKS.md`.
//!
//! wrk and the backend (nginx, 100-byte answers) run on the loopback of the daemon's
//! namespace. Each wrk run lasts 20 s, or longer (up to 120 s) when reloads are slow enough
//! that fewer than 4 would fit; `NETGUARD_RELOAD_SECS` fixes the length, and then the section
//! is printed, not written. The daemon is `$NETGUARD_BIN`, else
//! `target/release/netguard`.

#[path = "common/bench.rs"]
mod bench;
#[path = "common/procs.rs"]
#[allow(
    dead_code,
    reason = "shared with the proxy bench, which uses all of it"
)]
mod procs;
#[path = "reload/report.rs"]
mod report;
#[path = "common/section.rs"]
#[allow(
    dead_code,
    reason = "shared with the proxy bench, which uses all of it"
)]
mod section;
#[path = "common/servers.rs"]
#[allow(
    dead_code,
    reason = "shared with the proxy bench, which uses all of it"
)]
mod servers;
#[path = "common/wrk.rs"]
#[allow(
    dead_code,
    reason = "shared with the proxy bench, which uses all of it"
)]
mod wrk;

use std::{
    fmt::Write as _,
    net::SocketAddr,
    path::PathBuf,
    process::ExitCode,
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use netguard_tests::{Daemon, NetNs, Sandbox, TempDir, daemon::Config};

use crate::{
    bench::{median, step},
    servers::BACKEND,
    wrk::WrkResult,
};

const TOOLS: [(&str, &str); 4] = [
    ("ip", "iproute2"),
    ("nsenter", "util-linux"),
    ("wrk", "wrk"),
    ("nginx", "nginx"),
];

/// Apps in the config; the first is the stable one wrk drives.
pub const APPS: usize = 10_000;
pub const STABLE: &str = "stable.bench.test";
/// Present in variant B only.
pub const ADDED: &str = "added.bench.test";
/// The inline denylist entry, one per variant (public resolvers: in none of the lists, and
/// unreachable from the sandbox anyway).
const VARIANT_CIDR: [&str; 2] = ["9.9.9.9/32", "149.112.112.112/32"];
const PROXY: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 8080);

/// The wrk runs last this long, or long enough for [`MIN_RELOADS_UNDER_LOAD`] reloads of the
/// duration measured without traffic, up to [`MAX_SECS`].
const DEFAULT_SECS: u64 = 20;
const MIN_RELOADS_UNDER_LOAD: u64 = 4;
const MAX_SECS: u64 = 120;
const WARMUP_SECS: u64 = 2;
/// Reloads before the traffic runs, for the duration alone.
const QUIET_RELOADS: usize = 4;
/// The longest a reload may take before the bench gives up.
const RELOAD_TIMEOUT: Duration = Duration::from_secs(180);
const READY_TIMEOUT: Duration = Duration::from_secs(300);

fn main() -> ExitCode {
    bench::exit("reload bench", run())
}

/// One reload as the daemon logged it.
#[derive(Clone, Copy, Debug)]
pub struct Reload {
    /// `config reloaded ms=…`: reading, validating, applying, installing.
    pub total_ms: u64,
    /// `tables applied … ms=…`: the map update inside it.
    pub tables_ms: u64,
}

pub struct Results {
    pub apps: usize,
    pub denylist_entries: String,
    pub config_bytes: usize,
    pub ready: Duration,
    pub initial_tables_ms: Option<u64>,
    pub quiet: Vec<Reload>,
    pub steady: WrkResult,
    pub reloading: WrkResult,
    pub under_load: Vec<Reload>,
    /// Seconds in which the previous reload had not finished, so none was started.
    pub skipped_ticks: usize,
    pub rss_after: u64,
    pub secs: u64,
    pub elapsed: Duration,
}

fn run() -> Result<()> {
    let started = Instant::now();
    let fixed_secs: Option<u64> = match std::env::var("NETGUARD_RELOAD_SECS") {
        Ok(v) => Some(
            v.parse()
                .ok()
                .filter(|s| *s > 0)
                .with_context(|| format!("NETGUARD_RELOAD_SECS={v:?}: expected seconds ≥ 1"))?,
        ),
        Err(_) => None,
    };
    bench::require_root("the benchmark builds network namespaces and attaches XDP")?;
    bench::require_tools(&TOOLS)?;
    let bin = bench::release_daemon()?;
    let lists = denylists()?;
    procs::raise_nofile();
    netguard_tests::daemon::ensure_bpffs();

    step("sandbox: a namespace pair; the backend and wrk on the edge namespace's loopback");
    let sb = Sandbox::new();
    let dir = TempDir::new().context("temp dir")?;
    let _hosts = servers::Hosts::new(&sb.edge, &[STABLE, ADDED])?;
    for kv in [
        "net.ipv4.ip_local_port_range=1024 65000",
        "net.ipv4.tcp_tw_reuse=1",
    ] {
        sb.edge.try_exec(&["sysctl", "-q", "-w", kv])?;
    }
    let mut backend = servers::backend(&sb.edge, dir.path())?;
    let script = wrk::write_script(dir.path())?;

    let mut config = Config::for_sandbox(&sb);
    config.deny_files = lists;
    let variants = [render(&config, 0), render(&config, 1)];
    step(format!(
        "netguard with {} apps and {} denylist files ({:.1} MB of TOML)",
        section::thousands(APPS as f64),
        config.deny_files.len(),
        variants[0].len() as f64 / 1e6
    ));
    let t0 = Instant::now();
    let mut daemon = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        Daemon::start_toml(
            &bin,
            &sb.edge,
            &config.pin_path,
            &variants[0],
            READY_TIMEOUT,
        )
    }))
    .map_err(|_| anyhow::anyhow!("the netguard daemon did not get ready (its log is above)"))?;
    let ready = t0.elapsed();
    let log = daemon.log();
    let denylist_entries = field(&log, "config valid", "denylist")
        .and_then(|v| v.parse::<f64>().ok())
        .map_or_else(|| "?".into(), section::thousands);
    let initial_tables_ms = field(&log, "tables applied", "ms").and_then(|v| v.parse().ok());
    println!(
        "    ready after {:.1} s ({denylist_entries} denylist entries; tables filled in {} ms)",
        ready.as_secs_f64(),
        initial_tables_ms.map_or("?".into(), |m: u64| m.to_string())
    );
    servers::check_serves(&sb.edge, PROXY, STABLE, "netguard")?;
    let pid = daemon.pid().context("the daemon has no pid")?;

    step(format!("{QUIET_RELOADS} reloads without traffic"));
    let mut quiet = Vec::new();
    let mut variant = 0;
    for _ in 0..QUIET_RELOADS {
        variant = 1 - variant;
        let done = reloads(&daemon.log()).len();
        start_reload(&daemon, pid, &variants[variant])?;
        let r = wait_reload(&mut daemon, done)?;
        println!(
            "    variant {}: {} ms (tables {} ms)",
            ["A", "B"][variant],
            r.total_ms,
            r.tables_ms
        );
        check_variant(&sb.edge, variant)?;
        quiet.push(r);
    }

    // Long enough for several reloads when each takes longer than the one second between
    // them; both runs get the same length.
    let secs = fixed_secs.unwrap_or_else(|| {
        let reload_s = median(quiet.iter().map(|r| r.total_ms as f64 / 1000.0).collect());
        ((MIN_RELOADS_UNDER_LOAD as f64 * reload_s).ceil() as u64 + 1).clamp(DEFAULT_SECS, MAX_SECS)
    });
    step(format!(
        "wrk on {STABLE} without reloads: {WARMUP_SECS} s warm-up + {secs} s"
    ));
    let url = format!("http://{STABLE}:{}/", PROXY.port());
    wrk::run(&sb.edge, &script, &url, STABLE, WARMUP_SECS)?;
    let steady = wrk::run(&sb.edge, &script, &url, STABLE, secs)?;
    print_wrk(&steady);

    step(format!(
        "wrk on {STABLE} for {secs} s while a SIGHUP reload starts every second (when the last \
         one has finished)"
    ));
    let before = reloads(&daemon.log()).len();
    let running = AtomicBool::new(true);
    let (reloading, skipped, last_variant) = std::thread::scope(|s| -> Result<_> {
        let reloader = s.spawn(|| -> Result<(usize, usize)> {
            let mut skipped = 0;
            let mut v = variant;
            let mut started = reloads(&daemon.log()).len();
            let mut tick = Instant::now();
            while running.load(Ordering::Relaxed) {
                let done = reloads(&daemon.log()).len();
                if done >= started {
                    v = 1 - v;
                    start_reload(&daemon, pid, &variants[v])?;
                    started = done + 1;
                } else {
                    skipped += 1;
                }
                tick += Duration::from_secs(1);
                while running.load(Ordering::Relaxed) && Instant::now() < tick {
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
            Ok((skipped, v))
        });
        let result = wrk::run(&sb.edge, &script, &url, STABLE, secs);
        running.store(false, Ordering::Relaxed);
        let (skipped, v) = reloader
            .join()
            .map_err(|_| anyhow::anyhow!("the reload thread panicked"))??;
        Ok((result?, skipped, v))
    })?;
    print_wrk(&reloading);
    // The last reload may still be running.
    let deadline = Instant::now() + RELOAD_TIMEOUT;
    while reloads(&daemon.log()).len() < SENT.load(Ordering::Relaxed) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let all = reloads(&daemon.log());
    let under_load: Vec<Reload> = all[before..].to_vec();
    println!(
        "    {} reloads during the run ({} seconds skipped while one was still running); ms: {:?}",
        under_load.len(),
        skipped,
        under_load.iter().map(|r| r.total_ms).collect::<Vec<_>>()
    );
    if !daemon.is_running() {
        bail!("the daemon exited; log:\n{}", daemon.log_tail(30));
    }
    if daemon.log().contains("reload rejected") {
        bail!("a reload was rejected; log:\n{}", daemon.log_tail(30));
    }
    check_variant(&sb.edge, last_variant)?;
    backend.alive()?;
    let rss_after = procs::rss(pid).unwrap_or(0);
    drop(daemon);

    let results = Results {
        apps: APPS,
        denylist_entries,
        config_bytes: variants[0].len(),
        ready,
        initial_tables_ms,
        quiet,
        steady,
        reloading,
        under_load,
        skipped_ticks: skipped,
        rss_after,
        secs,
        elapsed: started.elapsed(),
    };
    let not_written = fixed_secs.map(|_| "NETGUARD_RELOAD_SECS set".to_string());
    section::publish(
        report::SECTION,
        &report::render(&results),
        not_written,
        started,
    )
}

/// Every list in `tests/data/denylists/` (the daemon reads plain and gzip files).
fn denylists() -> Result<Vec<PathBuf>> {
    let files = netguard_tests::denylists::real().context("reading the real denylists")?;
    if files.is_empty() {
        bail!("no denylists in tests/data/denylists");
    }
    Ok(files)
}

/// Variant 0 (A): the stable app and 9,999 others, the first inline denylist entry.
/// Variant 1 (B): the same plus `added`, and the other inline entry.
fn render(base: &Config, variant: usize) -> String {
    let mut config = base.clone();
    config.deny_cidrs = vec![VARIANT_CIDR[variant].to_string()];
    let mut extra = format!(
        "[proxy]\nhttp_listen = \"{PROXY}\"\nrouter_log = \"off\"\n\n\
         [[app]]\nname = \"stable\"\ndomains = [\"{STABLE}\"]\nbackends = [\"{BACKEND}\"]\n"
    );
    for i in 1..APPS {
        // Backends nobody connects to: 10.x.y.z, distinct per app.
        let _ = write!(
            extra,
            "\n[[app]]\nname = \"app{i:05}\"\ndomains = [\"app{i:05}.bench.test\"]\n\
             backends = [\"10.{}.{}.{}:5000\"]\n",
            (i >> 16) & 0xff,
            (i >> 8) & 0xff,
            (i & 0xff).max(1)
        );
    }
    if variant == 1 {
        let _ = write!(
            extra,
            "\n[[app]]\nname = \"added\"\ndomains = [\"{ADDED}\"]\nbackends = [\"{BACKEND}\"]\n"
        );
    }
    config.extra = extra;
    config.to_toml()
}

/// The value of `key=` on the first log line containing `message`.
fn field(log: &str, message: &str, key: &str) -> Option<String> {
    let line = log.lines().find(|l| l.contains(message))?;
    value(line, key)
}

fn value(line: &str, key: &str) -> Option<String> {
    let prefix = format!("{key}=");
    line.split_whitespace()
        .find_map(|t| t.strip_prefix(&prefix))
        .map(|v| v.trim_matches('"').to_string())
}

/// Every completed reload in the log, in order, with the map update that preceded it.
fn reloads(log: &str) -> Vec<Reload> {
    let mut out = Vec::new();
    let mut tables = 0;
    for line in log.lines() {
        if line.contains("tables applied") {
            tables = value(line, "ms").and_then(|v| v.parse().ok()).unwrap_or(0);
        } else if line.contains("config reloaded")
            && let Some(ms) = value(line, "ms").and_then(|v| v.parse().ok())
        {
            out.push(Reload {
                total_ms: ms,
                tables_ms: tables,
            });
        }
    }
    out
}

/// SIGHUPs this bench has sent.
static SENT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Writes `toml` over the daemon's config (a rename, so it never reads half a file) and sends
/// SIGHUP.
fn start_reload(daemon: &Daemon, pid: u32, toml: &str) -> Result<()> {
    let path = daemon.config_path();
    let tmp = path.with_extension("toml.next");
    std::fs::write(&tmp, toml).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("replacing {}", path.display()))?;
    // SAFETY: kill(2) on the daemon, our child, which the caller checked is running.
    if unsafe { libc::kill(pid as libc::pid_t, libc::SIGHUP) } != 0 {
        bail!("SIGHUP to the daemon: {}", std::io::Error::last_os_error());
    }
    SENT.fetch_add(1, Ordering::Relaxed);
    Ok(())
}

/// Waits for reload number `done + 1` to be logged.
fn wait_reload(daemon: &mut Daemon, done: usize) -> Result<Reload> {
    let deadline = Instant::now() + RELOAD_TIMEOUT;
    loop {
        let log = daemon.log();
        if log.contains("reload rejected") {
            bail!("the reload was rejected:\n{}", daemon.log_tail(20));
        }
        if let Some(r) = reloads(&log).get(done) {
            return Ok(*r);
        }
        if !daemon.is_running() || Instant::now() > deadline {
            bail!("no reload logged; log:\n{}", daemon.log_tail(30));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The stable app answers; `added` answers in variant B only (the new routes are in force).
fn check_variant(ns: &NetNs, variant: usize) -> Result<()> {
    servers::check_serves(ns, PROXY, STABLE, "netguard")?;
    let (status, _) = servers::get(ns, PROXY, ADDED)?;
    let want = if variant == 1 { 200 } else { 404 };
    if status != want {
        bail!("after reloading variant {variant}, {ADDED} answered {status}, not {want}");
    }
    Ok(())
}

fn print_wrk(r: &WrkResult) {
    println!(
        "    {:.0} req/s  p50 {:.2} ms  p99 {:.2} ms  max {:.1} ms  failed {}",
        r.rps(),
        r.p50_us / 1000.0,
        r.p99_us / 1000.0,
        r.max_us / 1000.0,
        r.failed()
    );
}
