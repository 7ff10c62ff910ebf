//! Attach modes and guarded destinations, end to end.
//!
//! - `mode = "native"` on an interface whose driver has no XDP support (loopback) must fail
//!   loudly, naming the interface and the mode, and leave nothing attached or pinned;
//!   `mode = "auto"` falls back to generic XDP there; `mode = "generic"` attaches generically.
//! - Only the configured ingress addresses are guarded: a second (management) address on the
//!   edge keeps answering on port 22.

use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr},
    time::Duration,
};

use netguard_tests::{
    Config, Daemon, NetNs, ProbeResult, Sandbox,
    cmd::{self, lossy},
    daemon::{ensure_bpffs, netguard_bin, unique_pin_path},
    listeners::Services,
    probe::{PROBE_TIMEOUT, tcp_connect},
    sandbox::{CLIENT_ADDR, EDGE_ADDR},
    veth,
};

/// Loopback has no native XDP support (no `ndo_bpf`), and every namespace has its own: the
/// kernel here lacks the dummy driver.
const NO_NATIVE_XDP: &str = "lo";

fn dummy_ns() -> NetNs {
    NetNs::new()
}

fn config_for(interface: &str, mode: &str) -> Config {
    Config {
        pin_path: unique_pin_path(),
        interface: interface.to_string(),
        mode: mode.to_string(),
        allowed_tcp_ports: vec![80, 443],
        ingress_addresses: vec![format!("{EDGE_ADDR}/32")],
        trusted_sources: Vec::new(),
        icmp: "essential".into(),
        ipv6: "drop".into(),
        deny_cidrs: Vec::new(),
        deny_files: Vec::new(),
        extra: String::new(),
    }
}

/// The XDP attachment of `iface` as `ip link` reports it: "xdp" (native) or "xdpgeneric".
fn xdp_flavour(ns: &NetNs, iface: &str) -> String {
    let out = ns.exec(&["ip", "-d", "link", "show", "dev", iface]);
    for word in out.split_whitespace() {
        if word == "xdp" || word == "xdpgeneric" || word == "xdpdrv" {
            return word.to_string();
        }
    }
    String::new()
}

#[test]
fn native_mode_refused_by_the_driver_fails_loudly_and_leaves_nothing() {
    ensure_bpffs();
    let ns = dummy_ns();
    let config = config_for(NO_NATIVE_XDP, "native");
    let dir = netguard_tests::TempDir::new().expect("temp dir");
    let path = dir.join("netguard.toml");
    std::fs::write(&path, config.to_toml()).expect("write config");
    let bin = netguard_bin();
    let out = cmd::run(
        &mut ns.nsenter_command(&[
            &bin.to_string_lossy(),
            "run",
            "--config",
            &path.to_string_lossy(),
        ]),
        Duration::from_secs(30),
    )
    .expect("run netguard");
    let stderr = lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "native attach on loopback must fail:\n{stderr}"
    );
    assert_eq!(
        out.status.code(),
        Some(1),
        "runtime failure exit code:\n{stderr}"
    );
    assert!(
        stderr.contains(NO_NATIVE_XDP) && stderr.contains("native"),
        "the error names the interface and the mode:\n{stderr}"
    );
    assert!(
        !stderr.contains("netguard ready"),
        "never claims to be ready:\n{stderr}"
    );
    assert_eq!(
        xdp_flavour(&ns, NO_NATIVE_XDP),
        "",
        "no XDP program left on the interface"
    );
    assert!(
        !config.pin_path.exists(),
        "a failed first start removes everything it pinned"
    );
}

#[test]
fn auto_mode_falls_back_to_generic_where_native_is_refused() {
    let ns = dummy_ns();
    let daemon = Daemon::start(&ns, &config_for(NO_NATIVE_XDP, "auto"));
    assert_eq!(
        xdp_flavour(&ns, NO_NATIVE_XDP),
        "xdpgeneric",
        "{}",
        daemon.log_tail(20)
    );
    assert!(
        daemon.log().contains("mode=\"generic\""),
        "{}",
        daemon.log_tail(20)
    );
}

#[test]
fn native_mode_on_veth_attaches_in_the_driver() {
    let sb = Sandbox::new();
    let daemon = Daemon::start(&sb.edge, &Config::for_sandbox(&sb));
    assert_eq!(
        xdp_flavour(&sb.edge, &sb.edge_if),
        "xdp",
        "{}",
        daemon.log_tail(20)
    );
}

#[test]
fn generic_mode_attaches_generically() {
    let sb = Sandbox::new();
    let mut config = Config::for_sandbox(&sb);
    config.mode = "generic".into();
    let _services = Services::edge(&sb.edge);
    let daemon = Daemon::start(&sb.edge, &config);
    assert_eq!(
        xdp_flavour(&sb.edge, &sb.edge_if),
        "xdpgeneric",
        "{}",
        daemon.log_tail(20)
    );
    let edge = |port| SocketAddr::new(IpAddr::V4(EDGE_ADDR), port);
    assert_eq!(
        tcp_connect(
            &sb.client,
            Some(IpAddr::V4(CLIENT_ADDR)),
            edge(443),
            PROBE_TIMEOUT
        ),
        ProbeResult::Connected
    );
    assert_eq!(
        tcp_connect(
            &sb.client,
            Some(IpAddr::V4(CLIENT_ADDR)),
            edge(22),
            PROBE_TIMEOUT
        ),
        ProbeResult::TimedOut
    );
}

#[test]
fn management_address_is_not_guarded() {
    let sb = Sandbox::new();
    let mgmt = Ipv4Addr::new(203, 0, 113, 20);
    veth::add_address(&sb.edge, &sb.edge_if, &format!("{mgmt}/24"));
    let _services = Services::edge(&sb.edge);
    let ssh = |dst: Ipv4Addr| {
        tcp_connect(
            &sb.client,
            Some(IpAddr::V4(CLIENT_ADDR)),
            SocketAddr::new(IpAddr::V4(dst), 22),
            PROBE_TIMEOUT,
        )
    };
    // Both answer without the filter.
    assert_eq!(ssh(EDGE_ADDR), ProbeResult::Connected);
    assert_eq!(ssh(mgmt), ProbeResult::Connected);
    let daemon = Daemon::start(&sb.edge, &Config::for_sandbox(&sb));
    assert_eq!(
        ssh(EDGE_ADDR),
        ProbeResult::TimedOut,
        "the guarded address drops port 22"
    );
    assert_eq!(
        ssh(mgmt),
        ProbeResult::Connected,
        "the management address keeps working"
    );
    assert!(daemon.stats().packets("not_guarded") > 0);
}

/// Operators inspect the pinned maps with bpftool: they are listed by name and, being
/// BTF-described, dump with named fields.
#[test]
fn bpftool_lists_pinned_maps_by_name_with_named_fields() {
    let sb = Sandbox::new();
    let daemon = Daemon::start(&sb.edge, &Config::for_sandbox(&sb));
    let maps_dir = daemon.pin_path().join(netguard_common::maps::MAPS_DIR);
    let run = |args: &[&str]| {
        let out = cmd::run(
            std::process::Command::new("bpftool").args(args),
            Duration::from_secs(10),
        )
        .expect("bpftool runs");
        assert!(
            out.status.success(),
            "bpftool {args:?}: {}",
            lossy(&out.stderr)
        );
        lossy(&out.stdout)
    };
    for name in [
        "NG_CONFIG",
        "NG_COUNTERS",
        "NG_DENY_BANK",
        "NG_DENY_V4",
        "NG_DENY_V4_IDX",
        "NG_DENY_V6",
        "NG_TRUST_V4",
        "NG_TRUST_V6",
        "NG_FLOWS",
    ] {
        let path = maps_dir.join(name);
        let shown = run(&["map", "show", "pinned", &path.to_string_lossy()]);
        assert!(shown.contains(&format!("name {name}")), "{name}: {shown}");
    }
    let counters = run(&[
        "map",
        "dump",
        "pinned",
        &maps_dir.join("NG_COUNTERS").to_string_lossy(),
    ]);
    assert!(
        counters.contains("\"packets\"") && counters.contains("\"bytes\""),
        "{counters}"
    );
    // The denylist: the bank word names the live bank; that bank's slot of the outer map holds
    // the id of the inner trie, whose keys dump raw (prefix length as a little-endian u32,
    // then the address bytes).
    let bank = run(&[
        "map",
        "dump",
        "pinned",
        &maps_dir.join("NG_DENY_BANK").to_string_lossy(),
    ]);
    assert!(
        bank.contains("\"value\": 0"),
        "first start fills bank 0: {bank}"
    );
    let outer = run(&[
        "map",
        "dump",
        "pinned",
        &maps_dir.join("NG_DENY_V4").to_string_lossy(),
    ]);
    // `key: 00 00 00 00  value: <id as 4 little-endian bytes>`, one line per filled slot.
    let line = outer
        .lines()
        .find(|l| l.starts_with("key: 00 00 00 00"))
        .unwrap_or_else(|| panic!("bank 0 slot missing: {outer}"));
    let id_bytes: Vec<u8> = line
        .split("value:")
        .nth(1)
        .expect("value")
        .split_whitespace()
        .map(|b| u8::from_str_radix(b, 16).expect("hex byte"))
        .collect();
    let id = u32::from_le_bytes(id_bytes.try_into().expect("4-byte map id"));
    let shown = run(&["map", "show", "id", &id.to_string()]);
    assert!(shown.contains("name NG_DENY_V4.b0"), "{shown}");
    let deny = run(&["map", "dump", "id", &id.to_string()]);
    assert!(
        deny.contains("key: 18 00 00 00 c6 33 64 00  value: 01"),
        "198.51.100.0/24 in the live trie: {deny}"
    );
    let config = run(&[
        "map",
        "dump",
        "pinned",
        &maps_dir.join("NG_CONFIG").to_string_lossy(),
    ]);
    assert!(
        config.contains("\"flags\"") && config.contains("\"v4_len\": 1"),
        "{config}"
    );
}

const PN: &str = "pn-ad0fd6a1-d05e-40ea-bf63-c4f8a75a9d8c";
const APP: &str = "ap-a71da13f-7c70-4c00-a644-eee8558d8053";

fn private_config(pin_path: &std::path::Path) -> String {
    format!(
        r#"[daemon]
pin_path = "{}"
[xdp]
interface = "lo"
mode = "generic"
ingress_addresses = ["203.0.113.10/32"]
[[private_network]]
id = "{PN}"
interfaces = ["lo"]
[[private_network.container]]
app = "{APP}"
type = "web"
index = 1
address = "10.240.0.2"
[[private_network.container]]
app = "{APP}"
type = "worker"
index = 1
address = "10.240.0.3"
"#,
        pin_path.display()
    )
}

/// `netguard pn` prints an app's names and a container's own hostname from the config alone.
#[test]
fn pn_cli_prints_names_from_the_config() {
    let dir = netguard_tests::TempDir::new().expect("temp dir");
    let path = dir.join("netguard.toml");
    std::fs::write(
        &path,
        private_config(std::path::Path::new("/sys/fs/bpf/ngt-unused")),
    )
    .expect("write config");
    let bin = netguard_bin();
    let run = |args: &[&str]| {
        let out = cmd::run(
            std::process::Command::new(&bin)
                .args(args)
                .args(["--config", &path.to_string_lossy()]),
            Duration::from_secs(10),
        )
        .expect("netguard runs");
        (out.status.code(), lossy(&out.stdout), lossy(&out.stderr))
    };
    let (code, names, err) = run(&["pn", "domain-names", "--app", APP]);
    assert_eq!(code, Some(0), "{err}");
    let zone = "private-network.internal.";
    for want in [
        format!("{APP}.{PN}.{zone}"),
        format!("web.{APP}.{PN}.{zone}"),
        format!("worker.{APP}.{PN}.{zone}"),
        format!("1.web.{APP}.{PN}.{zone}"),
        format!("1.worker.{APP}.{PN}.{zone}"),
    ] {
        assert!(
            names.lines().any(|l| l == want),
            "{want} missing from:\n{names}"
        );
    }
    let (code, host, err) = run(&["pn", "hostname", "--address", "10.240.0.3"]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(host.trim(), format!("1.worker.{APP}.{PN}.{zone}"));
    let (code, _, err) = run(&["pn", "hostname", "--address", "10.240.0.99"]);
    assert_eq!(code, Some(1), "an unknown address is an error");
    assert!(err.contains("10.240.0.99"), "{err}");
}

/// `stats --private` shows the isolation program's decisions per reason.
#[test]
fn stats_private_counts_isolation_decisions() {
    let ns = NetNs::new();
    for addr in [
        "10.240.0.1/22",
        "10.240.0.2/22",
        "10.240.0.3/22",
        "10.240.0.9/22",
    ] {
        ns.exec(&["ip", "addr", "add", addr, "dev", "lo"]);
    }
    let pin_path = unique_pin_path();
    let daemon = Daemon::start_toml(
        &netguard_bin(),
        &ns,
        &pin_path,
        &private_config(&pin_path),
        Duration::from_secs(20),
    );
    // Same network: passes. To an address that is no member: dropped.
    let ping = |from: &str, to: &str| {
        ns.output(&["ping", "-c", "1", "-W", "1", "-I", from, to])
            .status
            .success()
    };
    assert!(ping("10.240.0.2", "10.240.0.3"), "{}", daemon.log_tail(20));
    assert!(
        !ping("10.240.0.2", "10.240.0.9"),
        "a non-member is unreachable"
    );
    let json = daemon.cli_ok(&["stats", "--private", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&json).expect("stats --private --json is JSON");
    assert!(v["passed"]["packets"].as_u64().unwrap_or(0) > 0, "{json}");
    assert!(
        v["unknown_destination"]["packets"].as_u64().unwrap_or(0) > 0,
        "{json}"
    );
}
