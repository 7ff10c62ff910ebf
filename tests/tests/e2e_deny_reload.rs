//! A reload that swaps a 100,000-entry denylist file while real connections keep arriving from
//! two client addresses: one leaves the denylist, the other enters it. Each must switch exactly
//! once, and at the same moment: the daemon builds the new list in the other bank and makes it
//! live with one write. A reload with the same file writes nothing.

use std::{
    fmt::Write as _,
    net::{IpAddr, Ipv4Addr, SocketAddr},
    path::Path,
    thread,
    time::{Duration, Instant},
};

use netguard_tests::{
    Config, Daemon, Sandbox, TempDir,
    daemon::netguard_bin,
    listeners::Services,
    probe::{BackgroundProbes, ProbeTally},
    sandbox::{CLIENT_ADDR, DENIED_ADDR, EDGE_ADDR},
};

/// Listed before the reload (its whole /24, so the /24 index answers), not after.
const LEAVES: Ipv4Addr = DENIED_ADDR;
/// Not listed before (its /24 holds no entry), listed after as a /32 in a partial /24 (the
/// trie answers).
const ENTERS: Ipv4Addr = CLIENT_ADDR;
const BULK: u32 = 100_000;

/// A denylist file: `BULK` /32s from 10.0.0.0/9 (`high` clear) or 10.128.0.0/9, then `extra`.
fn write_list(path: &Path, high: bool, extra: &[&str]) {
    let base = 0x0a00_0000u32 | if high { 0x0080_0000 } else { 0 };
    let mut text = String::with_capacity(20 * BULK as usize);
    for i in 0..BULK {
        let _ = writeln!(text, "{}/32", Ipv4Addr::from(base + i * 7));
    }
    for e in extra {
        let _ = writeln!(text, "{e}");
    }
    std::fs::write(path, text).expect("write the denylist file");
}

/// Each probe's outcome (`true` = connected, i.e. its SYN passed), in the order they started.
fn outcomes(t: &ProbeTally) -> Vec<(Duration, bool)> {
    let mut all: Vec<(Duration, bool)> = t
        .connected
        .iter()
        .map(|at| (*at, true))
        .chain(t.timed_out_at.iter().map(|at| (*at, false)))
        .collect();
    all.sort_by_key(|(at, _)| *at);
    all
}

/// The one switch in `seq`: (start of the last probe before it, start of the first after it).
fn switch_window(name: &str, seq: &[(Duration, bool)]) -> (Duration, Duration) {
    let switches: Vec<usize> = (1..seq.len())
        .filter(|i| seq[*i].1 != seq[i - 1].1)
        .collect();
    assert_eq!(
        switches.len(),
        1,
        "{name} must switch exactly once; switches at probes {switches:?} of {}",
        seq.len()
    );
    let i = switches[0];
    (seq[i - 1].0, seq[i].0)
}

fn wait_for_reload(d: &mut Daemon, mark: usize) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !d.log()[mark..].contains("config reloaded") {
        assert!(
            Instant::now() < deadline && d.is_running(),
            "no reload; log:\n{}",
            d.log_tail(20)
        );
        thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn reload_swaps_a_large_denylist_at_one_point() {
    let sb = Sandbox::new();
    let _services = Services::edge(&sb.edge);
    let dir = TempDir::new().expect("temp dir");
    let list = dir.join("deny.txt");
    write_list(&list, false, &["198.51.100.0/24"]);
    let mut config = Config::for_sandbox(&sb);
    config.deny_cidrs = Vec::new();
    config.deny_files = vec![list.clone()];
    let mut d = Daemon::start_toml(
        &netguard_bin(),
        &sb.edge,
        &config.pin_path,
        &config.to_toml(),
        Duration::from_secs(60),
    );
    let edge = SocketAddr::new(IpAddr::V4(EDGE_ADDR), 443);
    // Below the kernel's first SYN retransmission (1 s): every probe is exactly one SYN, so a
    // probe's outcome is the filter's verdict at the moment it started.
    let probes = BackgroundProbes::start(
        &sb.client,
        &[
            (Some(IpAddr::V4(LEAVES)), edge),
            (Some(IpAddr::V4(ENTERS)), edge),
        ],
        Duration::from_millis(5),
        Duration::from_millis(400),
    );
    thread::sleep(Duration::from_millis(500));

    // The same file again: nothing to write.
    let mark = d.log().len();
    d.signal(libc::SIGHUP);
    wait_for_reload(&mut d, mark);
    assert!(
        d.log()[mark..].contains("denylist unchanged"),
        "{}",
        d.log_tail(10)
    );

    write_list(&list, true, &["192.0.2.99/32", "198.51.100.8/32"]);
    let mark = d.log().len();
    d.signal(libc::SIGHUP);
    wait_for_reload(&mut d, mark);
    thread::sleep(Duration::from_millis(500));
    let tallies = probes.stop();
    let log = d.log();
    assert!(
        log[mark..].contains("denylist built in a new bank and switched in"),
        "the reload did not rebuild in the other bank:\n{}",
        d.log_tail(20)
    );

    for t in &tallies {
        assert!(t.other.is_empty(), "only connects and timeouts: {t}");
    }
    let leaves = outcomes(&tallies[0]);
    let enters = outcomes(&tallies[1]);
    assert!(!leaves[0].1, "{LEAVES} listed before the reload");
    assert!(enters[0].1, "{ENTERS} not listed before the reload");
    let (l0, l1) = switch_window("the address leaving the list", &leaves);
    let (e0, e1) = switch_window("the address entering the list", &enters);
    assert!(leaves[leaves.len() - 1].1 && !enters[enters.len() - 1].1);
    // One switch point for both: the moment the bank flipped lies in both windows. A probe's
    // recorded start precedes its SYN reaching the filter by a syscall, so the windows may miss
    // each other by a scheduling delay; a list applied entry by entry would put them hundreds
    // of milliseconds apart (200,000 map writes).
    let slack = Duration::from_millis(50);
    assert!(
        l0 < e1 + slack && e0 < l1 + slack,
        "{LEAVES} switched between {l0:?} and {l1:?}, {ENTERS} between {e0:?} and {e1:?}"
    );
    eprintln!(
        "{} + {} probes; {LEAVES} switched in ({l0:?}, {l1:?}], {ENTERS} in ({e0:?}, {e1:?}]",
        leaves.len(),
        enters.len()
    );

    let listed = d.deny_list();
    let lines: Vec<&str> = listed.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), BULK as usize + 2, "deny list after the reload");
    assert!(lines.contains(&"192.0.2.99/32"));
    assert!(!lines.contains(&"198.51.100.0/24"));
}
