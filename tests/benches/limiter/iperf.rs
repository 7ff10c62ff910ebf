//! iperf3: the server (the sender, with `-R`) and the client's JSON report.

use std::{path::Path, time::Duration};

use anyhow::{Context as _, Result, bail};
use netguard_tests::{NetNs, Proc};

pub const PORT: u16 = 5201;

/// `iperf3 -s` in a namespace, stopped on drop.
pub struct Server {
    proc: Proc,
}

impl Server {
    pub fn start(ns: &NetNs, log: &Path) -> Result<Server> {
        let port = PORT.to_string();
        // --forceflush: the readiness line reaches the log file at once.
        let mut proc = Proc::spawn(
            &mut ns.command(&["iperf3", "-s", "-p", &port, "--forceflush"]),
            log,
        )
        .context("starting iperf3 -s")?;
        if let Err(e) = proc.wait_for_log("Server listening", Duration::from_secs(5)) {
            bail!("iperf3 server: {e}");
        }
        Ok(Server { proc })
    }

    /// The server process (`ip netns exec` execs it, so this is iperf3 itself).
    pub fn pid(&self) -> u32 {
        self.proc.pid()
    }
}

/// The client's arguments for a download (`-R`: the server sends, this client receives),
/// JSON output with 100 ms intervals.
pub fn client_args(server: &str, flows: usize, secs: u32) -> Vec<String> {
    [
        "iperf3",
        "-c",
        server,
        "-p",
        &PORT.to_string(),
        "-R",
        "-P",
        &flows.to_string(),
        "-t",
        &secs.to_string(),
        "-i",
        "0.1",
        "-J",
        "--connect-timeout",
        "5000",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// One interval of the receiving client (all streams summed).
#[derive(Clone, Copy, Debug)]
pub struct Interval {
    pub start: f64,
    pub end: f64,
    pub bytes: u64,
}

/// What the bench takes from `iperf3 -J -R`. A client stopped with SIGINT (as the bench stops
/// the runs) still writes its intervals, but not the sender's totals (no retransmits).
#[derive(Clone, Debug)]
pub struct Report {
    /// Receiver side (the client, with `-R`): payload bytes the application read.
    pub intervals: Vec<Interval>,
}

impl Report {
    pub fn parse(text: &str) -> Result<Report> {
        let start = text
            .find('{')
            .context("no JSON object in iperf3's output")?;
        let end = text
            .rfind('}')
            .context("no JSON object in iperf3's output")?;
        let v: serde_json::Value =
            serde_json::from_str(&text[start..=end]).context("parsing iperf3 -J output")?;
        let f = |v: &serde_json::Value, k: &str| -> Result<f64> {
            v.get(k)
                .and_then(|x| x.as_f64())
                .with_context(|| format!("iperf3 JSON: no number {k} in {v}"))
        };
        let intervals = v["intervals"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default()
            .iter()
            .map(|i| {
                let s = &i["sum"];
                Ok(Interval {
                    start: f(s, "start")?,
                    end: f(s, "end")?,
                    bytes: f(s, "bytes")? as u64,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        if intervals.is_empty() {
            let err = v.get("error").and_then(|e| e.as_str()).unwrap_or("");
            bail!("iperf3 reported no intervals {err}");
        }
        Ok(Report { intervals })
    }

    /// Payload bits per second over the intervals inside `[from, to]` s (whole 100 ms
    /// intervals; divided by the time they cover).
    pub fn goodput_bps(&self, from: f64, to: f64) -> f64 {
        let (bytes, secs) = self
            .intervals
            .iter()
            .filter(|i| i.start >= from - 0.02 && i.end <= to + 0.02)
            .fold((0u64, 0f64), |(b, s), i| {
                (b + i.bytes, s + (i.end - i.start))
            });
        if secs > 0.0 {
            bytes as f64 * 8.0 / secs
        } else {
            f64::NAN
        }
    }

    /// Payload bytes in the intervals inside `[from, to]` s.
    pub fn bytes(&self, from: f64, to: f64) -> u64 {
        self.intervals
            .iter()
            .filter(|i| i.start >= from - 0.02 && i.end <= to + 0.02)
            .map(|i| i.bytes)
            .sum()
    }

    /// Goodput per second from `from` s on, Mbit/s (for the raw table).
    pub fn per_second_mbps(&self, from: f64, seconds: u32) -> Vec<f64> {
        (0..seconds)
            .map(|k| {
                let a = from + f64::from(k);
                self.goodput_bps(a, a + 1.0) / 1e6
            })
            .collect()
    }
}
