//! End to end: the daemon's lifecycle — a crash and a restart that never leave the interface
//! unfiltered, invalid configs refused before anything touches the kernel, the real 1M-entry
//! denylist, SIGHUP reloads (good and bad), audit mode, and an idempotent `detach`.
//!
//! Each test builds its own [`Sandbox`] and daemon. Where a test asserts that something is
//! dropped, it first shows the same probe succeeding without the filter.
//!
//! Needs root, bpftool and the daemon binary: `cargo build -p netguard && cargo test -p
//! netguard-tests --test e2e_daemon -- --test-threads=1` (`NETGUARD_BIN` overrides the binary).

use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr},
    os::unix::process::ExitStatusExt,
    path::{Path, PathBuf},
    process::{Command, Output},
    thread,
    time::{Duration, Instant},
};

use netguard_common::maps::{FLOW_TRACK_LINK_PIN, MAPS_DIR, XDP_LINK_PIN};
use netguard_tests::{
    Capture, Config, Daemon, ProbeResult, Sandbox, TempDir,
    cmd::{self, COMMAND_TIMEOUT},
    daemon::netguard_bin,
    listeners::Services,
    probe::{BackgroundProbes, PROBE_TIMEOUT, tcp_connect, tcp_echo},
    sandbox::{CLIENT_ADDR, DENIED_ADDR},
};

use ProbeResult::{Connected, TimedOut};

/// A sandbox with the edge's standard services (TCP 80, 443, 22, 8080; UDP 53). Daemons are
/// locals declared after it, so they drop (and detach) before the namespaces go.
struct Edge {
    services: Services,
    sb: Sandbox,
}

impl Edge {
    fn new() -> Edge {
        let sb = Sandbox::new();
        let services = Services::edge(&sb.edge);
        Edge { services, sb }
    }

    /// TCP connect from the client, from `src` (default: 192.0.2.99), to the edge.
    fn connect(&self, src: Option<Ipv4Addr>, port: u16) -> ProbeResult {
        tcp_connect(
            &self.sb.client,
            src.map(IpAddr::V4),
            edge(port),
            PROBE_TIMEOUT,
        )
    }

    /// Connect + echo round trip from the client.
    fn echo(&self, src: Option<Ipv4Addr>, port: u16) -> ProbeResult {
        let src = src.map(|a| SocketAddr::new(IpAddr::V4(a), 0));
        tcp_echo(&self.sb.client, src, edge(port), PROBE_TIMEOUT)
    }

    /// Retries [`Edge::echo`] until it connects or `within` passes; returns the last result.
    fn echo_within(&self, port: u16, within: Duration) -> ProbeResult {
        let deadline = Instant::now() + within;
        loop {
            let r = tcp_echo(
                &self.sb.client,
                None,
                edge(port),
                Duration::from_millis(500),
            );
            if r == Connected || Instant::now() >= deadline {
                return r;
            }
            thread::sleep(Duration::from_millis(100));
        }
    }
}

fn edge(port: u16) -> SocketAddr {
    Sandbox::edge_addr(port)
}

/// Runs `netguard args…` inside `ns` (nsenter, so the host's bpffs is visible).
fn netguard_in(ns: &netguard_tests::NetNs, args: &[&str]) -> Output {
    let bin = netguard_bin();
    let bin = bin.to_string_lossy().into_owned();
    let mut full = vec![bin.as_str()];
    full.extend(args);
    cmd::run(&mut ns.nsenter_command(&full), COMMAND_TIMEOUT).unwrap_or_else(|e| panic!("{e}"))
}

fn show(out: &Output) -> String {
    format!(
        "exit {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        cmd::lossy(&out.stdout),
        cmd::lossy(&out.stderr)
    )
}

/// A pin directory no daemon guard owns (a daemon that should never have started): detached and
/// removed on drop if anything appeared there.
struct PinDirGuard<'a> {
    path: PathBuf,
    ns: &'a netguard_tests::NetNs,
}

impl Drop for PinDirGuard<'_> {
    fn drop(&mut self) {
        if self.path.exists() {
            let pin = self.path.to_string_lossy().into_owned();
            let _ = cmd::run(
                &mut self.ns.nsenter_command(&[
                    &netguard_bin().to_string_lossy(),
                    "detach",
                    "--pin-path",
                    &pin,
                ]),
                COMMAND_TIMEOUT,
            );
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

/// `bpftool -j link show pinned PATH`: the link's id and its program's id.
fn pinned_link(path: &Path) -> (u64, u64) {
    let out = cmd::run_ok(Command::new("bpftool").args([
        "-j",
        "link",
        "show",
        "pinned",
        &path.to_string_lossy(),
    ]));
    let v: serde_json::Value = serde_json::from_str(out.trim())
        .unwrap_or_else(|e| panic!("bpftool link show pinned {}: {e}: {out}", path.display()));
    let field = |k: &str| {
        v.get(k)
            .and_then(|x| x.as_u64())
            .unwrap_or_else(|| panic!("no {k} in {out}"))
    };
    (field("id"), field("prog_id"))
}

/// Whether the kernel still has a bpf link with this id (`bpftool link show id N`).
fn link_exists(id: u64) -> bool {
    let out = cmd::run(
        Command::new("bpftool").args(["link", "show", "id", &id.to_string()]),
        COMMAND_TIMEOUT,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    out.status.success()
}

/// Polls `d`'s log until `needle` occurs after byte `from`; returns where the search ended.
fn wait_for_log_after(d: &mut Daemon, from: usize, needle: &str, timeout: Duration) -> usize {
    let deadline = Instant::now() + timeout;
    loop {
        let log = d.log();
        if let Some(i) = log.get(from..).and_then(|rest| rest.find(needle)) {
            return from + i + needle.len();
        }
        assert!(
            Instant::now() < deadline && d.is_running(),
            "daemon did not log {needle:?} within {timeout:?} (running: {}); log:\n{}",
            d.is_running(),
            cmd::tail(&log, 30)
        );
        thread::sleep(Duration::from_millis(50));
    }
}

/// (1) `kill -9` leaves the filter attached and counting; a new daemon on the same pin path swaps
/// its program into the pinned link. Probes run the whole time, several SYNs in flight at once;
/// not one may connect, and nothing may cross the XDP hook (a capture on the edge veth only sees
/// what XDP passed).
#[test]
fn crash_and_restart_without_a_gap() {
    let e = Edge::new();
    assert_eq!(e.echo(None, 22), Connected, "22 without the filter");
    assert_eq!(
        e.echo(Some(DENIED_ADDR), 80),
        Connected,
        "198.51.100.7 → 80 without the filter"
    );
    let config = Config::for_sandbox(&e.sb);
    let pin = config.pin_path.clone();
    let mut first = Daemon::start(&e.sb.edge, &config);
    let (xdp_link, first_prog) = pinned_link(&pin.join(XDP_LINK_PIN));
    let accepted_before = (e.services.tcp(22).accepted(), e.services.tcp(80).accepted());

    let edge_capture = Capture::start(&e.sb.edge, &e.sb.edge_if);
    let probes = BackgroundProbes::start(
        &e.sb.client,
        &[
            (Some(IpAddr::V4(CLIENT_ADDR)), edge(22)),
            (Some(IpAddr::V4(DENIED_ADDR)), edge(80)),
        ],
        Duration::from_millis(5),
        Duration::from_millis(300),
    );
    thread::sleep(Duration::from_millis(700));
    let before_kill = first.stats();
    assert!(
        before_kill.packets("port_closed") > 0 && before_kill.packets("denylisted") > 0,
        "probes not counted before the kill: {}",
        before_kill.raw
    );

    // Crash: no cleanup at all. The guard must not detach either (the second daemon adopts).
    first.keep_pins_on_drop();
    let status = first.kill().expect("daemon exit status");
    assert_eq!(status.signal(), Some(libc::SIGKILL), "{status:?}");
    for p in [
        pin.join(XDP_LINK_PIN),
        pin.join(FLOW_TRACK_LINK_PIN),
        pin.join(MAPS_DIR).join("NG_COUNTERS"),
        pin.join(MAPS_DIR).join("NG_DENY_V4"),
    ] {
        assert!(p.exists(), "{} gone after kill -9", p.display());
    }
    assert!(
        link_exists(xdp_link),
        "XDP link {xdp_link} gone after kill -9"
    );
    assert_eq!(
        e.connect(None, 22),
        TimedOut,
        "22 with no daemon running (filter gone?)"
    );
    // The pinned program keeps counting into the pinned map with no daemon at all.
    let while_dead = first.stats();
    assert!(
        while_dead.packets("port_closed") > before_kill.packets("port_closed"),
        "no packet counted while the daemon was dead: {} → {}",
        before_kill.raw,
        while_dead.raw
    );

    let started = Instant::now();
    let second = Daemon::start(&e.sb.edge, &config);
    eprintln!("restart: second daemon ready after {:?}", started.elapsed());
    let log = second.log();
    assert!(
        log.contains("swapped into the pinned link"),
        "second daemon did not swap into the pinned link; log:\n{log}"
    );
    assert!(
        !log.contains("XDP program attached"),
        "second daemon attached a new XDP link; log:\n{log}"
    );
    let (link_after, second_prog) = pinned_link(&pin.join(XDP_LINK_PIN));
    assert_eq!(link_after, xdp_link, "the pinned XDP link was replaced");
    assert_ne!(
        second_prog, first_prog,
        "the pinned link still runs the first daemon's program"
    );
    thread::sleep(Duration::from_millis(700));
    let attempts = probes.attempts_so_far();
    let tallies = probes.stop();
    let passed_xdp = edge_capture.finish();

    for t in &tallies {
        eprintln!("probe {t}");
        assert!(
            t.connected.is_empty() && t.other.is_empty(),
            "a probe got through (or an answer came back) during the crash and restart: {t}"
        );
        assert!(t.attempts >= 200, "too few probes to mean anything: {t}");
        assert_eq!(t.timed_out, t.attempts, "{t}");
    }
    assert!(attempts >= 400, "{attempts} probes");
    let leaked = passed_xdp.lines(&format!(
        "(src host {DENIED_ADDR}) or (src host {CLIENT_ADDR} and tcp dst port 22)"
    ));
    assert!(
        leaked.is_empty(),
        "packets crossed the XDP hook during the restart:\n{}",
        leaked.join("\n")
    );
    assert_eq!(
        (e.services.tcp(22).accepted(), e.services.tcp(80).accepted()),
        accepted_before,
        "a listener accepted a probe"
    );

    let after = second.stats();
    for reason in ["port_closed", "denylisted"] {
        assert!(
            after.packets(reason) >= while_dead.packets(reason),
            "{reason} went back after the restart: {} → {}",
            while_dead.raw,
            after.raw
        );
    }
    assert!(
        after.packets("port_closed") > while_dead.packets("port_closed"),
        "the new program does not count: {}",
        after.raw
    );
    // The new program enforces the policy, not just drops.
    assert_eq!(e.echo(None, 443), Connected, "443 after the restart");
    assert_eq!(e.connect(None, 22), TimedOut, "22 after the restart");
    drop(second);
    drop(first);
}

/// (2) A bad denylist line or invalid values: `run` and `check` exit 64 naming the problems, and
/// no pin directory appears.
#[test]
fn invalid_config_is_refused_before_touching_the_kernel() {
    let sb = Sandbox::new();
    let dir = TempDir::new().expect("temp dir");

    // Positive control: the same config without the bad line passes `check`.
    let list = dir.join("deny.txt");
    std::fs::write(&list, "192.0.2.0/24\n").unwrap();
    let mut config = Config::for_sandbox(&sb);
    config.deny_files = vec![list.clone()];
    let good = dir.join("good.toml");
    std::fs::write(&good, config.to_toml()).unwrap();
    let out = netguard_in(&sb.edge, &["check", "--config", &good.to_string_lossy()]);
    assert!(
        out.status.success() && cmd::lossy(&out.stdout).contains("config OK"),
        "check on a valid config: {}",
        show(&out)
    );
    assert!(!config.pin_path.exists(), "check created the pin directory");

    // A bad line 2 in a denylist file.
    std::fs::write(&list, "192.0.2.0/24\n10.0.0.1/8\n").unwrap();
    let _guard = PinDirGuard {
        path: config.pin_path.clone(),
        ns: &sb.edge,
    };
    let bad_line = format!("{}:2", list.display());
    for command in ["run", "check"] {
        let out = netguard_in(&sb.edge, &[command, "--config", &good.to_string_lossy()]);
        let stderr = cmd::lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(64), "{command}: {}", show(&out));
        assert!(
            stderr.contains(&bad_line) && stderr.contains("10.0.0.1/8"),
            "{command}: stderr does not name {bad_line} and the line: {}",
            show(&out)
        );
        assert!(
            !config.pin_path.exists(),
            "`netguard {command}` with a bad denylist line created {}",
            config.pin_path.display()
        );
    }

    // Two validation problems at once: both are listed.
    let mut config = Config::for_sandbox(&sb);
    config.allowed_tcp_ports = vec![0, 443];
    config.ingress_addresses = vec!["203.0.113.10/24".into()];
    let _guard2 = PinDirGuard {
        path: config.pin_path.clone(),
        ns: &sb.edge,
    };
    let bad = dir.join("bad.toml");
    std::fs::write(&bad, config.to_toml()).unwrap();
    for command in ["check", "run"] {
        let out = netguard_in(&sb.edge, &[command, "--config", &bad.to_string_lossy()]);
        let stderr = cmd::lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(64), "{command}: {}", show(&out));
        for key in ["xdp.allowed_tcp_ports[0]", "xdp.ingress_addresses[0]"] {
            assert!(
                stderr.contains(key),
                "{command}: {key} not reported: {}",
                show(&out)
            );
        }
        assert!(
            stderr.contains(&bad.to_string_lossy().into_owned()),
            "{command}: the config file is not named: {}",
            show(&out)
        );
        assert!(
            !config.pin_path.exists(),
            "`netguard {command}` with an invalid config created {}",
            config.pin_path.display()
        );
    }

    // A proxy app whose certificate file is not a certificate: `check` reads certificates as
    // a start would, and both exit 64 naming the file before anything is attached.
    let cert = dir.join("shop.pem");
    let key = dir.join("shop.key");
    std::fs::write(&cert, "not a certificate\n").unwrap();
    std::fs::write(&key, "not a key\n").unwrap();
    let mut config = Config::for_sandbox(&sb);
    config.extra = format!(
        "[proxy]\nhttp_listen = \"127.0.0.1:18080\"\nhttps_listen = \"127.0.0.1:18443\"\n\n[[app]]\nname = \"shop\"\ndomains = [\"shop.example\"]\nbackends = [\"127.0.0.1:9\"]\ntls = \"terminate\"\ncert = \"{}\"\nkey = \"{}\"\n",
        cert.display(),
        key.display()
    );
    let _guard3 = PinDirGuard {
        path: config.pin_path.clone(),
        ns: &sb.edge,
    };
    let bad_cert = dir.join("bad_cert.toml");
    std::fs::write(&bad_cert, config.to_toml()).unwrap();
    for command in ["check", "run"] {
        let out = netguard_in(
            &sb.edge,
            &[command, "--config", &bad_cert.to_string_lossy()],
        );
        let stderr = cmd::lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(64), "{command}: {}", show(&out));
        assert!(
            stderr.contains(&cert.to_string_lossy().into_owned()),
            "{command}: the certificate file is not named: {}",
            show(&out)
        );
        assert!(
            !config.pin_path.exists(),
            "`netguard {command}` with a bad certificate created {}",
            config.pin_path.display()
        );
    }
}

/// Every list in `tests/data/denylists/`.
fn real_denylists() -> Vec<PathBuf> {
    netguard_tests::denylists::real().unwrap_or_else(|e| panic!("{e}"))
}

/// (3) The 13 real lists (1,006,102 entries, 888,411 distinct): the daemon gets ready, logs its
/// progress, the kernel holds every distinct prefix, and firehol_level1 (which lists the
/// documentation prefixes) denies the sandbox's own client.
#[test]
fn large_real_denylist() {
    let e = Edge::new();
    assert_eq!(e.echo(None, 443), Connected, "443 without the filter");
    let files = real_denylists();
    assert_eq!(files.len(), 13, "{files:?}");
    let mut config = Config::for_sandbox(&e.sb);
    config.deny_cidrs = Vec::new();
    config.deny_files = files;
    let started = Instant::now();
    let d = Daemon::start_toml(
        &netguard_bin(),
        &e.sb.edge,
        &config.pin_path,
        &config.to_toml(),
        Duration::from_secs(60),
    );
    let ready = started.elapsed();
    eprintln!("1M denylist: daemon ready after {ready:?}");
    let log = d.log();
    for line in log.lines().filter(|l| l.contains("tables applied")) {
        eprintln!("1M denylist: {line}");
    }
    let progress = log.lines().filter(|l| l.contains("filling map")).count();
    assert!(
        progress >= 2,
        "no progress lines (\"filling map\") while filling ~1M prefixes; log:\n{}",
        cmd::tail(&log, 30)
    );

    let pin = d.pin_path().to_string_lossy().into_owned();
    let listed = Instant::now();
    let out = d.cli_timeout(
        &["deny", "list", "--pin-path", &pin],
        Duration::from_secs(120),
    );
    assert!(out.status.success(), "deny list: {}", show(&out));
    let stdout = cmd::lossy(&out.stdout);
    let lines = stdout.lines().filter(|l| !l.trim().is_empty()).count();
    eprintln!("deny list: {lines} lines in {:?}", listed.elapsed());
    assert_eq!(lines, 888_411, "netguard deny list line count");
    for net in ["192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24"] {
        assert!(
            stdout.lines().any(|l| l.trim() == net),
            "{net} (firehol_level1) not in the kernel's denylist"
        );
    }

    assert_eq!(e.connect(None, 443), TimedOut, "192.0.2.99 → 443");
    assert_eq!(
        e.services.tcp(443).accepted(),
        1,
        "only the unfiltered probe"
    );
    let stats = d.stats();
    assert!(stats.packets("denylisted") >= 1, "{}", stats.raw);
    assert_eq!(stats.packets("passed"), 0, "{}", stats.raw);
}

/// (4) SIGHUP applies a valid config, refuses an invalid one (the running policy stays), and a
/// later valid reload still works.
#[test]
fn sighup_reload_applies_valid_and_rejects_invalid() {
    let e = Edge::new();
    let mut config = Config::for_sandbox(&e.sb);
    let mut d = Daemon::start(&e.sb.edge, &config);
    assert_eq!(e.connect(None, 22), TimedOut, "22 before the reload");

    config.allowed_tcp_ports = vec![80, 443, 22];
    std::fs::write(d.config_path(), config.to_toml()).unwrap();
    let mark = d.log().len();
    d.signal(libc::SIGHUP);
    let mark = wait_for_log_after(&mut d, mark, "config reloaded", Duration::from_secs(10));
    assert_eq!(
        e.echo_within(22, Duration::from_secs(5)),
        Connected,
        "22 after reloading with it allowed"
    );

    let invalid = config.to_toml().replace(
        "allowed_tcp_ports = [80, 443, 22]",
        "allowed_tcp_ports = [0]",
    );
    assert!(invalid.contains("allowed_tcp_ports = [0]"), "{invalid}");
    std::fs::write(d.config_path(), invalid).unwrap();
    d.signal(libc::SIGHUP);
    let end = wait_for_log_after(&mut d, mark, "reload rejected", Duration::from_secs(10));
    let log = d.log();
    let rejection = log[mark..]
        .lines()
        .find(|l| l.contains("reload rejected"))
        .unwrap_or_default();
    assert!(
        log[mark..].contains("allowed_tcp_ports[0]"),
        "the rejection does not name the key: {rejection}\n{}",
        d.log_tail(10)
    );
    assert!(
        !d.log()[mark..end].contains("config reloaded"),
        "{}",
        d.log_tail(10)
    );
    thread::sleep(Duration::from_millis(300));
    assert!(d.is_running(), "daemon exited after a bad reload");
    assert_eq!(e.echo(None, 22), Connected, "22 after the rejected reload");
    assert_eq!(
        e.echo(None, 443),
        Connected,
        "443 after the rejected reload"
    );
    assert_eq!(
        e.connect(None, 8080),
        TimedOut,
        "8080 after the rejected reload"
    );

    // The daemon still takes reloads: back to the standard ports.
    config.allowed_tcp_ports = vec![80, 443];
    std::fs::write(d.config_path(), config.to_toml()).unwrap();
    d.signal(libc::SIGHUP);
    wait_for_log_after(&mut d, end, "config reloaded", Duration::from_secs(10));
    assert_eq!(e.connect(None, 22), TimedOut, "22 after removing it again");
    assert!(d.is_running());
}

/// (5) `action = "audit"`: everything passes, would-be drops are counted in the second bank only.
#[test]
fn audit_mode_passes_and_counts_would_drop() {
    let e = Edge::new();
    let config = Config::for_sandbox(&e.sb);
    let toml = config
        .to_toml()
        .replacen("[xdp]\n", "[xdp]\naction = \"audit\"\n", 1);
    assert!(toml.contains("action = \"audit\""), "{toml}");
    let d = Daemon::start_toml(
        &netguard_bin(),
        &e.sb.edge,
        &config.pin_path,
        &toml,
        Duration::from_secs(20),
    );
    assert_eq!(e.echo(None, 22), Connected, "22 in audit mode");
    assert_eq!(
        e.echo(Some(DENIED_ADDR), 80),
        Connected,
        "denylisted source in audit mode"
    );
    let stats = d.stats();
    assert_eq!(stats.action, "audit", "{}", stats.raw);
    let would = |r: &str| {
        stats
            .would_drop
            .get(r)
            .unwrap_or_else(|| panic!("no would_drop.{r}: {}", stats.raw))
            .packets
    };
    assert!(would("port_closed") > 0, "{}", stats.raw);
    assert!(would("denylisted") > 0, "{}", stats.raw);
    assert_eq!(stats.packets("port_closed"), 0, "{}", stats.raw);
    assert_eq!(stats.packets("denylisted"), 0, "{}", stats.raw);
}

/// (6) `detach` removes the links (the kernel no longer has them, 22 connects again), and a
/// second `detach` succeeds saying nothing is pinned.
#[test]
fn detach_is_idempotent() {
    let e = Edge::new();
    let config = Config::for_sandbox(&e.sb);
    let pin = config.pin_path.clone();
    let mut d = Daemon::start(&e.sb.edge, &config);
    let (xdp_link, _) = pinned_link(&pin.join(XDP_LINK_PIN));
    let (tc_link, _) = pinned_link(&pin.join(FLOW_TRACK_LINK_PIN));
    let status = d.terminate();
    assert!(status.is_some_and(|s| s.success()), "{status:?}");
    assert_eq!(e.connect(None, 22), TimedOut, "22 before detach");
    let pin_arg = pin.to_string_lossy().into_owned();

    let first = d.cli(&["detach", "--pin-path", &pin_arg]);
    assert!(first.status.success(), "first detach: {}", show(&first));
    assert!(
        cmd::lossy(&first.stdout).contains("detached"),
        "first detach: {}",
        show(&first)
    );
    let second = d.cli(&["detach", "--pin-path", &pin_arg]);
    assert!(second.status.success(), "second detach: {}", show(&second));
    assert!(
        cmd::lossy(&second.stdout).contains("nothing pinned"),
        "second detach: {}",
        show(&second)
    );
    assert!(!link_exists(xdp_link), "XDP link {xdp_link} still exists");
    assert!(!link_exists(tc_link), "tc link {tc_link} still exists");
    assert!(!pin.exists(), "{} left after detach", pin.display());
    assert_eq!(e.echo(None, 22), Connected, "22 after detach");
    let stats = d.cli(&["stats", "--json", "--pin-path", &pin_arg]);
    assert!(
        !stats.status.success(),
        "stats after detach still found counters: {}",
        show(&stats)
    );
}
