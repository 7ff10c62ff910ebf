//! wrk runs inside a namespace, and their results as wrk's own `done()` hook reports them (a
//! Lua script prints one machine-readable line, so nothing scrapes wrk's human summary).

use std::{path::Path, time::Duration};

use anyhow::{Context as _, Result, bail};
use netguard_tests::{NetNs, cmd};

/// 2 threads, 64 keep-alive connections: the issue's load.
pub const THREADS: u32 = 2;
pub const CONNECTIONS: u32 = 64;

const SCRIPT: &str = r#"
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "NGBENCH requests=%d duration_us=%d bytes=%d p50_us=%d p90_us=%d p99_us=%d max_us=%d connect=%d read=%d write=%d status=%d timeout=%d\n",
    summary.requests, summary.duration, summary.bytes,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max,
    e.connect, e.read, e.write, e.status, e.timeout))
end
"#;

/// Writes the `done()` script into `dir`; pass its path to [`run`].
pub fn write_script(dir: &Path) -> Result<std::path::PathBuf> {
    let path = dir.join("wrk-report.lua");
    std::fs::write(&path, SCRIPT).with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}

/// One wrk run.
#[derive(Clone, Debug, Default)]
pub struct WrkResult {
    pub requests: u64,
    pub duration: Duration,
    pub bytes: u64,
    pub p50_us: f64,
    pub p90_us: f64,
    pub p99_us: f64,
    pub max_us: f64,
    /// Socket errors: connect, read, write, timeout.
    pub socket_errors: u64,
    /// Responses with a status other than 2xx or 3xx.
    pub bad_status: u64,
}

impl WrkResult {
    pub fn rps(&self) -> f64 {
        self.requests as f64 / self.duration.as_secs_f64().max(1e-9)
    }

    /// Every request that did not get a 2xx/3xx answer, and every socket error.
    pub fn failed(&self) -> u64 {
        self.socket_errors + self.bad_status
    }

    fn parse(stdout: &str) -> Result<WrkResult> {
        let line = stdout
            .lines()
            .find_map(|l| l.strip_prefix("NGBENCH "))
            .context("wrk printed no NGBENCH line (did the script run?)")?;
        let mut r = WrkResult::default();
        for field in line.split_whitespace() {
            let (k, v) = field
                .split_once('=')
                .with_context(|| format!("wrk report field {field:?}"))?;
            let n: f64 = v
                .parse()
                .with_context(|| format!("wrk report field {field:?}: not a number"))?;
            match k {
                "requests" => r.requests = n as u64,
                "duration_us" => r.duration = Duration::from_micros(n as u64),
                "bytes" => r.bytes = n as u64,
                "p50_us" => r.p50_us = n,
                "p90_us" => r.p90_us = n,
                "p99_us" => r.p99_us = n,
                "max_us" => r.max_us = n,
                "connect" | "read" | "write" | "timeout" => r.socket_errors += n as u64,
                "status" => r.bad_status = n as u64,
                _ => {}
            }
        }
        if r.requests == 0 {
            bail!("wrk completed no request:\n{stdout}");
        }
        Ok(r)
    }
}

/// `wrk -t2 -c64 -dSECS -H "Host: HOST" URL` inside `ns` (through `ip netns exec`, so that the
/// namespace's `/etc/netns/NS/hosts` resolves the app names for TLS's SNI).
pub fn run(ns: &NetNs, script: &Path, url: &str, host: &str, secs: u64) -> Result<WrkResult> {
    let script = script.to_string_lossy().into_owned();
    let (t, c, d) = (
        format!("-t{THREADS}"),
        format!("-c{CONNECTIONS}"),
        format!("-d{secs}s"),
    );
    let header = format!("Host: {host}");
    let args = [
        "wrk",
        &t,
        &c,
        &d,
        "--timeout",
        "5s",
        "-s",
        &script,
        "-H",
        &header,
        url,
    ];
    let out = cmd::run(&mut ns.command(&args), Duration::from_secs(secs + 30))
        .with_context(|| format!("running wrk against {url}"))?;
    let stdout = cmd::lossy(&out.stdout);
    if !out.status.success() {
        bail!(
            "wrk against {url} failed ({}): {stdout}{}",
            out.status,
            cmd::lossy(&out.stderr)
        );
    }
    WrkResult::parse(&stdout).with_context(|| format!("wrk against {url}"))
}

pub fn version() -> String {
    crate::section::package_version("wrk")
}
