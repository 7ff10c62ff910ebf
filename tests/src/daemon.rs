//! The netguard daemon and CLI, run inside a sandbox namespace.
//!
//! Both run under `nsenter --net=/run/netns/NS`, not `ip netns exec`: only the network
//! namespace changes, so the pins the daemon makes under the host's `/sys/fs/bpf` are the ones
//! the CLI and the cleanup see.

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    path::{Path, PathBuf},
    process::{Command, Output},
    time::Duration,
};

use crate::{
    cmd::{self, COMMAND_TIMEOUT, Proc, TempDir},
    netns::NetNs,
    sandbox::{DENIED_NET, EDGE_ADDR, Sandbox, TRUSTED_ADDR},
};

/// Where bpffs is mounted; every pin directory the harness makes is `BPFFS/ngt-…`.
pub const BPFFS: &str = "/sys/fs/bpf";

/// The line the daemon logs (stderr) once it is attached and its maps are filled.
pub const READY_LINE: &str = "netguard ready";

/// How long the daemon may take to become ready.
pub const READY_TIMEOUT: Duration = Duration::from_secs(20);

/// The netguard binary: `$NETGUARD_BIN`, else `$CARGO_TARGET_DIR/debug/netguard`, else
/// `<workspace>/target/debug/netguard`. Panics if the file is missing.
pub fn netguard_bin() -> PathBuf {
    let bin = match std::env::var_os("NETGUARD_BIN") {
        Some(p) => PathBuf::from(p),
        None => {
            let target = std::env::var_os("CARGO_TARGET_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|| crate::workspace_root().join("target"));
            target.join("debug").join("netguard")
        }
    };
    assert!(
        bin.is_file(),
        "netguard binary not found at {} — run `cargo build -p netguard` first (or set NETGUARD_BIN)",
        bin.display()
    );
    bin
}

/// Mounts bpffs on `/sys/fs/bpf` unless it already is (a fresh machine here has it unmounted).
pub fn ensure_bpffs() {
    // SAFETY: statfs on a NUL-terminated path into a zeroed, correctly sized struct.
    let mounted = unsafe {
        let mut st: libc::statfs = std::mem::zeroed();
        libc::statfs(c"/sys/fs/bpf".as_ptr(), &mut st) == 0
            && st.f_type as u64 == libc::BPF_FS_MAGIC as u64
    };
    if !mounted {
        cmd::run_ok(Command::new("mount").args(["-t", "bpf", "bpf", BPFFS]));
    }
}

/// A fresh pin directory path `/sys/fs/bpf/ngt-<pid>-<n>` (not created).
pub fn unique_pin_path() -> PathBuf {
    loop {
        let p = Path::new(BPFFS).join(crate::unique_name());
        if !p.exists() {
            return p;
        }
    }
}

/// The daemon's TOML config, as the tests write it. `to_toml` renders exactly the documented
/// keys; `extra` is appended verbatim (for keys a test wants to add).
#[derive(Clone, Debug)]
pub struct Config {
    pub pin_path: PathBuf,
    pub interface: String,
    pub mode: String,
    pub allowed_tcp_ports: Vec<u16>,
    pub ingress_addresses: Vec<String>,
    pub trusted_sources: Vec<String>,
    pub icmp: String,
    pub ipv6: String,
    pub deny_cidrs: Vec<String>,
    pub deny_files: Vec<PathBuf>,
    pub extra: String,
}

impl Config {
    /// The standard policy for a [`Sandbox`]: attach natively to the edge veth, allow TCP 80
    /// and 443 to 203.0.113.10, trust 192.0.2.50, deny 198.51.100.0/24, a fresh pin path.
    pub fn for_sandbox(sandbox: &Sandbox) -> Config {
        Config {
            pin_path: unique_pin_path(),
            interface: sandbox.edge_if.clone(),
            mode: "native".into(),
            allowed_tcp_ports: vec![80, 443],
            ingress_addresses: vec![format!("{EDGE_ADDR}/32")],
            trusted_sources: vec![format!("{TRUSTED_ADDR}/32")],
            icmp: "essential".into(),
            ipv6: "drop".into(),
            deny_cidrs: vec![DENIED_NET.into()],
            deny_files: Vec::new(),
            extra: String::new(),
        }
    }

    pub fn to_toml(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "[daemon]");
        let _ = writeln!(s, "pin_path = {}", quote(&self.pin_path.to_string_lossy()));
        let _ = writeln!(s, "\n[xdp]");
        let _ = writeln!(s, "interface = {}", quote(&self.interface));
        let _ = writeln!(s, "mode = {}", quote(&self.mode));
        let ports: Vec<String> = self.allowed_tcp_ports.iter().map(u16::to_string).collect();
        let _ = writeln!(s, "allowed_tcp_ports = [{}]", ports.join(", "));
        let _ = writeln!(s, "ingress_addresses = {}", list(&self.ingress_addresses));
        let _ = writeln!(s, "trusted_sources = {}", list(&self.trusted_sources));
        let _ = writeln!(s, "icmp = {}", quote(&self.icmp));
        let _ = writeln!(s, "ipv6 = {}", quote(&self.ipv6));
        let _ = writeln!(s, "\n[denylist]");
        let _ = writeln!(s, "cidrs = {}", list(&self.deny_cidrs));
        let files: Vec<String> = self
            .deny_files
            .iter()
            .map(|p| p.to_string_lossy().into_owned())
            .collect();
        let _ = writeln!(s, "files = {}", list(&files));
        if !self.extra.is_empty() {
            let _ = writeln!(s, "\n{}", self.extra);
        }
        s
    }
}

fn quote(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn list(items: &[String]) -> String {
    format!(
        "[{}]",
        items
            .iter()
            .map(|i| quote(i))
            .collect::<Vec<_>>()
            .join(", ")
    )
}

/// A running `netguard run --config FILE` inside a namespace.
///
/// Drop: SIGTERM (the daemon exits and leaves its programs attached), then
/// `netguard detach --pin-path P` inside the namespace, then the pin directory is removed.
/// Drop it before the namespace it runs in (declare it after the [`Sandbox`]).
#[derive(Debug)]
pub struct Daemon {
    bin: PathBuf,
    ns_path: PathBuf,
    ns_name: String,
    pin_path: PathBuf,
    config_path: PathBuf,
    proc: Option<Proc>,
    dir: TempDir,
    /// Cleared by [`Daemon::keep_pins_on_drop`]: then the drop leaves the pins to another guard.
    detach_on_drop: bool,
}

impl Daemon {
    /// Starts the daemon from [`netguard_bin`] and waits for [`READY_LINE`].
    pub fn start(ns: &NetNs, config: &Config) -> Daemon {
        Self::start_with(&netguard_bin(), ns, config)
    }

    /// Starts `bin` as the daemon; panics with the log's tail if it is not ready within
    /// [`READY_TIMEOUT`] or exits early.
    pub fn start_with(bin: &Path, ns: &NetNs, config: &Config) -> Daemon {
        Self::start_toml(bin, ns, &config.pin_path, &config.to_toml(), READY_TIMEOUT)
    }

    /// Starts `bin` with `toml` as its config file, verbatim (for keys [`Config`] does not
    /// render); `pin_path` must be the one the TOML names, since the guard detaches and removes
    /// it. Panics with the log's tail if the daemon is not ready within `ready_timeout`.
    pub fn start_toml(
        bin: &Path,
        ns: &NetNs,
        pin_path: &Path,
        toml: &str,
        ready_timeout: Duration,
    ) -> Daemon {
        assert!(
            pin_path.starts_with(BPFFS)
                && pin_path
                    .file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with(crate::PREFIX)),
            "pin path {} must be {BPFFS}/{}…: the guard removes it recursively",
            pin_path.display(),
            crate::PREFIX
        );
        ensure_bpffs();
        let dir = TempDir::new().expect("temp dir for the daemon");
        let config_path = dir.join("netguard.toml");
        std::fs::write(&config_path, toml).expect("write the daemon config");
        let mut daemon = Daemon {
            bin: bin.to_path_buf(),
            ns_path: ns.path(),
            ns_name: ns.name().to_string(),
            pin_path: pin_path.to_path_buf(),
            config_path,
            proc: None,
            dir,
            detach_on_drop: true,
        };
        let config_arg = daemon.config_path.to_string_lossy().into_owned();
        let mut command = daemon.command(&["run", "--config", &config_arg]);
        if std::env::var_os("RUST_LOG").is_none() {
            command.env("RUST_LOG", "info");
        }
        command.env("NO_COLOR", "1").env("RUST_BACKTRACE", "1");
        let mut proc = Proc::spawn(&mut command, &daemon.dir.join("daemon.log"))
            .unwrap_or_else(|e| panic!("starting the daemon in {}: {e}", daemon.ns_name));
        let ready = proc.wait_for_log(READY_LINE, ready_timeout);
        daemon.proc = Some(proc);
        if let Err(e) = ready {
            panic!(
                "netguard daemon in netns {} not ready: {e}\nconfig:\n{toml}",
                daemon.ns_name
            );
        }
        daemon
    }

    pub fn pin_path(&self) -> &Path {
        &self.pin_path
    }

    pub fn config_path(&self) -> &Path {
        &self.config_path
    }

    pub fn pid(&self) -> Option<u32> {
        self.proc.as_ref().map(Proc::pid)
    }

    /// The daemon's output (stdout and stderr) so far.
    pub fn log(&self) -> String {
        self.proc.as_ref().map(Proc::log).unwrap_or_default()
    }

    pub fn log_tail(&self, lines: usize) -> String {
        cmd::tail(&self.log(), lines)
    }

    /// Whether the daemon process is still running.
    pub fn is_running(&mut self) -> bool {
        self.proc.as_mut().is_some_and(|p| p.try_exited().is_none())
    }

    /// `nsenter --net=NS <bin> args…`.
    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new("nsenter");
        c.arg(format!("--net={}", self.ns_path.display()))
            .arg(&self.bin)
            .args(args);
        c
    }

    /// Runs `<bin> args…` in the daemon's namespace (time-limited); returns the output whatever
    /// the exit status.
    pub fn cli(&self, args: &[&str]) -> Output {
        cmd::run(&mut self.command(args), COMMAND_TIMEOUT)
            .unwrap_or_else(|e| panic!("{e}\ndaemon log:\n{}", self.log_tail(30)))
    }

    /// [`Daemon::cli`] with `--pin-path P` appended; panics unless it exits 0. Returns stdout.
    pub fn cli_ok(&self, args: &[&str]) -> String {
        let pin = self.pin_path.to_string_lossy().into_owned();
        let mut full: Vec<&str> = args.to_vec();
        full.extend(["--pin-path", &pin]);
        let out = self.cli(&full);
        if !out.status.success() {
            panic!(
                "`netguard {}` failed ({}):\nstdout: {}\nstderr: {}\ndaemon log:\n{}",
                full.join(" "),
                out.status,
                cmd::lossy(&out.stdout),
                cmd::lossy(&out.stderr),
                self.log_tail(30)
            );
        }
        cmd::lossy(&out.stdout)
    }

    /// `netguard stats --json --pin-path P`, parsed.
    pub fn stats(&self) -> Stats {
        let out = self.cli_ok(&["stats", "--json"]);
        Stats::parse(&out)
            .unwrap_or_else(|e| panic!("`netguard stats --json`: {e}\noutput:\n{out}"))
    }

    /// `netguard deny add CIDR… --pin-path P`.
    pub fn deny_add(&self, cidrs: &[&str]) -> String {
        let mut args = vec!["deny", "add"];
        args.extend(cidrs);
        self.cli_ok(&args)
    }

    /// `netguard deny del CIDR… --pin-path P`.
    pub fn deny_del(&self, cidrs: &[&str]) -> String {
        let mut args = vec!["deny", "del"];
        args.extend(cidrs);
        self.cli_ok(&args)
    }

    /// `netguard deny list --pin-path P`.
    pub fn deny_list(&self) -> String {
        self.cli_ok(&["deny", "list"])
    }

    /// Stops the daemon with SIGTERM (programs stay attached, as in production) and returns its
    /// exit status; the pins stay until the guard drops.
    pub fn terminate(&mut self) -> Option<std::process::ExitStatus> {
        self.proc
            .as_mut()
            .and_then(|p| p.stop(libc::SIGTERM, Duration::from_secs(10)))
    }

    /// `kill -9` (a crash): the daemon gets no chance to clean up; returns its exit status.
    pub fn kill(&mut self) -> Option<std::process::ExitStatus> {
        self.proc
            .as_mut()
            .and_then(|p| p.stop(libc::SIGKILL, Duration::from_secs(10)))
    }

    /// Sends `signal` (e.g. `libc::SIGHUP`) to the running daemon; panics if it has exited.
    pub fn signal(&mut self, signal: i32) {
        assert!(
            self.is_running(),
            "signal {signal}: the daemon has exited; log:\n{}",
            self.log_tail(30)
        );
        let pid = self.pid().expect("a started daemon has a pid");
        // SAFETY: kill(2) on our own child, which is not reaped yet (checked just above).
        let rc = unsafe { libc::kill(pid as libc::pid_t, signal) };
        assert_eq!(
            rc,
            0,
            "kill({pid}, {signal}): {}",
            std::io::Error::last_os_error()
        );
    }

    /// Waits until the log contains `needle`; the error carries the log's tail. Fails early if
    /// the daemon exits without logging it.
    pub fn wait_for_log(&mut self, needle: &str, timeout: Duration) -> Result<(), String> {
        match self.proc.as_mut() {
            Some(p) => p.wait_for_log(needle, timeout),
            None => Err("the daemon was never started".into()),
        }
    }

    /// From now on the drop only stops the process: it neither detaches nor removes the pin
    /// directory (for handing the pins to a second daemon on the same pin path, whose guard
    /// then cleans up).
    pub fn keep_pins_on_drop(&mut self) {
        self.detach_on_drop = false;
    }

    /// [`Daemon::cli`] with its own time limit (commands over a very large table).
    pub fn cli_timeout(&self, args: &[&str], timeout: Duration) -> Output {
        cmd::run(&mut self.command(args), timeout)
            .unwrap_or_else(|e| panic!("{e}\ndaemon log:\n{}", self.log_tail(30)))
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.terminate();
        if !self.detach_on_drop {
            if std::thread::panicking() {
                eprintln!(
                    "netguard-tests: daemon log ({}):\n{}",
                    self.ns_name,
                    self.log_tail(40)
                );
            }
            return;
        }
        if crate::netns::exists(&self.ns_name) {
            let pin = self.pin_path.to_string_lossy().into_owned();
            match cmd::run(
                &mut self.command(&["detach", "--pin-path", &pin]),
                COMMAND_TIMEOUT,
            ) {
                Ok(out) if out.status.success() => {}
                Ok(out) => eprintln!(
                    "netguard-tests: `netguard detach --pin-path {pin}` failed ({}): {}{}",
                    out.status,
                    cmd::lossy(&out.stdout),
                    cmd::lossy(&out.stderr)
                ),
                Err(e) => eprintln!("netguard-tests: {e}"),
            }
        }
        if self.pin_path.exists()
            && let Err(e) = std::fs::remove_dir_all(&self.pin_path)
        {
            eprintln!("netguard-tests: remove {}: {e}", self.pin_path.display());
        }
        if std::thread::panicking() {
            eprintln!(
                "netguard-tests: daemon log ({}):\n{}",
                self.ns_name,
                self.log_tail(40)
            );
        }
    }
}

/// One counter: packets and bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counter {
    pub packets: u64,
    pub bytes: u64,
}

/// `netguard stats --json`.
#[derive(Clone, Debug)]
pub struct Stats {
    pub action: String,
    pub reasons: BTreeMap<String, Counter>,
    pub would_drop: BTreeMap<String, Counter>,
    pub raw: serde_json::Value,
}

/// The reason names `stats` reports (netguard-common's `Reason::name`).
pub const REASONS: [&str; 12] = [
    "passed",
    "not_guarded",
    "return_flow",
    "denylisted",
    "trusted",
    "port_closed",
    "protocol",
    "fragment",
    "malformed",
    "ipv6",
    "non_ip",
    "icmp",
];

impl Stats {
    pub fn parse(text: &str) -> Result<Stats, String> {
        let raw: serde_json::Value =
            serde_json::from_str(text.trim()).map_err(|e| format!("not JSON: {e}"))?;
        let action = raw
            .get("action")
            .and_then(|a| a.as_str())
            .ok_or("no string \"action\"")?
            .to_string();
        let bank = |key: &str| -> Result<BTreeMap<String, Counter>, String> {
            let Some(obj) = raw.get(key) else {
                return Ok(BTreeMap::new());
            };
            let obj = obj
                .as_object()
                .ok_or(format!("\"{key}\" is not an object"))?;
            obj.iter()
                .map(|(name, v)| {
                    let n = |field: &str| {
                        v.get(field)
                            .and_then(|x| x.as_u64())
                            .ok_or(format!("{key}.{name}.{field} is not a number"))
                    };
                    Ok((
                        name.clone(),
                        Counter {
                            packets: n("packets")?,
                            bytes: n("bytes")?,
                        },
                    ))
                })
                .collect()
        };
        let reasons = bank("reasons")?;
        if reasons.is_empty() {
            return Err("no \"reasons\" counters".into());
        }
        let would_drop = bank("would_drop")?;
        Ok(Stats {
            action,
            reasons,
            would_drop,
            raw,
        })
    }

    /// Packets counted for `reason`; panics (showing the JSON) if the reason is missing.
    pub fn packets(&self, reason: &str) -> u64 {
        self.counter(reason).packets
    }

    pub fn counter(&self, reason: &str) -> Counter {
        *self
            .reasons
            .get(reason)
            .unwrap_or_else(|| panic!("stats have no reasons.{reason}: {}", self.raw))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_parse() {
        let s = Stats::parse(
            r#"{"action":"enforce","reasons":{"passed":{"packets":3,"bytes":180},"port_closed":{"packets":1,"bytes":60}},
                "would_drop":{"passed":{"packets":0,"bytes":0}}}"#,
        )
        .unwrap();
        assert_eq!(s.action, "enforce");
        assert_eq!(s.packets("passed"), 3);
        assert_eq!(
            s.counter("port_closed"),
            Counter {
                packets: 1,
                bytes: 60
            }
        );
        assert!(Stats::parse("{}").is_err());
        assert!(Stats::parse("nope").is_err());
    }

    #[test]
    fn config_renders_documented_keys() {
        let c = Config {
            pin_path: "/sys/fs/bpf/ngt-1-0".into(),
            interface: "ngt-1-1v".into(),
            mode: "native".into(),
            allowed_tcp_ports: vec![80, 443],
            ingress_addresses: vec!["203.0.113.10/32".into()],
            trusted_sources: vec!["192.0.2.50/32".into()],
            icmp: "essential".into(),
            ipv6: "drop".into(),
            deny_cidrs: vec!["198.51.100.0/24".into()],
            deny_files: Vec::new(),
            extra: String::new(),
        };
        assert_eq!(
            c.to_toml(),
            r#"[daemon]
pin_path = "/sys/fs/bpf/ngt-1-0"

[xdp]
interface = "ngt-1-1v"
mode = "native"
allowed_tcp_ports = [80, 443]
ingress_addresses = ["203.0.113.10/32"]
trusted_sources = ["192.0.2.50/32"]
icmp = "essential"
ipv6 = "drop"

[denylist]
cidrs = ["198.51.100.0/24"]
files = []
"#
        );
    }

    #[test]
    fn toml_quotes() {
        assert_eq!(quote(r#"a"b\c"#), r#""a\"b\\c""#);
        assert_eq!(list(&["x".into(), "y".into()]), r#"["x", "y"]"#);
    }
}
