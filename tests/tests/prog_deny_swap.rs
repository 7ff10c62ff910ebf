//! The denylist bank switch, observed by the loaded XDP program: one thread judges packets
//! from an address that leaves the denylist and one that enters it (`BPF_PROG_TEST_RUN`, in a
//! tight loop) while the main thread swaps 100,000-entry denylists back and forth. Every swap
//! must show as exactly one switch point for each address, and the same one for both: never a
//! flap, never a packet that sees part of the old list and part of the new one.

use std::{
    net::Ipv4Addr,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    thread,
    time::Duration,
};

use aya::{
    Ebpf, EbpfLoader, TestRunOptions,
    programs::{TestRun as _, Xdp},
};
use ipnet::Ipv4Net;
use netguard::{
    deny_banks::DenyAction,
    policy::{LimiterPlan, MapPlan},
    tables::Tables,
};
use netguard_common::{golden, limiter::LimiterConfig, maps};

const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;

/// Leaves the denylist when plan B goes live.
const A: [u8; 4] = [192, 0, 2, 10];
/// Enters it.
const B: [u8; 4] = [198, 51, 100, 20];
const BULK: u32 = 100_000;
const SWAPS: usize = 6;

fn net(text: &str) -> Ipv4Net {
    text.parse().expect("prefix")
}

/// `BULK` /32s in 10.0.0.0/9 (`high` clear) or 10.128.0.0/9 (`high` set): the two lists share
/// no entry, so every swap is a rebuild.
fn bulk(high: bool) -> impl Iterator<Item = Ipv4Net> {
    let base = 0x0a00_0000u32 | if high { 0x0080_0000 } else { 0 };
    (0..BULK).map(move |i| Ipv4Net::new(Ipv4Addr::from(base + i * 7), 32).expect("/32"))
}

/// Plan A lists A through its whole /24 (the index answers) and leaves B's /24 partial
/// (the trie answers, and misses B). Plan B is the mirror image.
fn plan(b_listed: bool) -> MapPlan {
    let mut deny_v4: Vec<Ipv4Net> = bulk(b_listed).collect();
    if b_listed {
        deny_v4.extend([net("192.0.2.11/32"), net("198.51.100.0/24")]);
    } else {
        deny_v4.extend([net("192.0.2.0/24"), net("198.51.100.21/32")]);
    }
    deny_v4.sort_unstable();
    MapPlan {
        filter: golden::fixture_config(golden::DEFAULT_MODE),
        deny_v4,
        deny_v6: Vec::new(),
        trusted_v4: Vec::new(),
        trusted_v6: Vec::new(),
        limiter: LimiterPlan {
            config: LimiterConfig::EMPTY,
            overrides: Vec::new(),
        },
    }
}

fn run(ebpf: &mut Ebpf, frame: &[u8]) -> bool {
    let p: &mut Xdp = ebpf
        .program_mut(maps::XDP_PROGRAM)
        .expect("xdp")
        .try_into()
        .expect("xdp");
    let verdict = p
        .test_run(TestRunOptions {
            data_in: Some(frame),
            ..TestRunOptions::default()
        })
        .expect("BPF_PROG_TEST_RUN")
        .return_value;
    assert!(verdict == XDP_DROP || verdict == XDP_PASS, "{verdict}");
    verdict == XDP_DROP
}

/// Indices where `seq` changes value.
fn switches(seq: &[bool]) -> Vec<usize> {
    (1..seq.len()).filter(|i| seq[*i] != seq[i - 1]).collect()
}

#[test]
fn bank_swaps_switch_every_address_once_and_together() {
    let mut ebpf = EbpfLoader::new()
        .load(netguard::ebpf_object())
        .expect("load eBPF object");
    let mut tables = Tables::from_ebpf(&mut ebpf).expect("tables");
    let first = tables.apply_all(&plan(false), &mut |_| {}).expect("apply");
    let p: &mut Xdp = ebpf
        .program_mut(maps::XDP_PROGRAM)
        .expect("xdp")
        .try_into()
        .expect("xdp");
    p.load().expect("verifier accepts the XDP program");
    let (frame_a, frame_b) = (
        golden::v4_tcp(A, golden::EDGE, 443),
        golden::v4_tcp(B, golden::EDGE, 443),
    );
    assert!(run(&mut ebpf, &frame_a), "A listed at first");
    assert!(!run(&mut ebpf, &frame_b), "B not listed at first");

    let stop = Arc::new(AtomicBool::new(false));
    let probed = Arc::new(AtomicUsize::new(0));
    let prober = {
        let (stop, probed) = (stop.clone(), probed.clone());
        thread::spawn(move || {
            let mut pairs = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                // A first, then B: a switch between the two probes of one pair shows as B
                // switching one pair before A.
                let a = run(&mut ebpf, &frame_a);
                let b = run(&mut ebpf, &frame_b);
                pairs.push((a, b));
                probed.store(pairs.len(), Ordering::Relaxed);
            }
            pairs
        })
    };
    let settle = |at_least: usize| {
        while probed.load(Ordering::Relaxed) < at_least {
            thread::sleep(Duration::from_millis(5));
        }
    };
    settle(200);
    let mut bank = first.1.bank;
    for swap in 0..SWAPS {
        let b_listed = swap % 2 == 0;
        let (_, deny) = tables
            .apply_all(&plan(b_listed), &mut |_| {})
            .expect("apply");
        assert_eq!(
            deny.action,
            DenyAction::Rebuild { into: 1 - bank },
            "swap {swap}: a new list of {BULK} entries is built in the other bank"
        );
        assert_eq!(deny.bank, 1 - bank);
        bank = deny.bank;
        assert_eq!(tables.deny_bank().expect("bank"), bank);
        assert!(
            tables
                .deny_slots(bank)
                .expect("slots")
                .iter()
                .all(Option::is_some),
            "swap {swap}: the live bank is complete"
        );
        assert_eq!(
            tables.deny_slots(1 - bank).expect("slots"),
            [None; 3],
            "swap {swap}: the old bank's maps are released"
        );
        // Let the prober see the new state for a while before the next swap.
        settle(probed.load(Ordering::Relaxed) + 200);
    }
    stop.store(true, Ordering::Relaxed);
    let pairs = prober.join().expect("prober");

    let a: Vec<bool> = pairs.iter().map(|p| p.0).collect();
    let b: Vec<bool> = pairs.iter().map(|p| p.1).collect();
    let (sa, sb) = (switches(&a), switches(&b));
    assert_eq!(
        sa.len(),
        SWAPS,
        "A switches exactly once per swap ({} probes): at {sa:?}",
        pairs.len()
    );
    assert_eq!(
        sb.len(),
        SWAPS,
        "B switches exactly once per swap: at {sb:?}"
    );
    for (i, (ia, ib)) in sa.iter().zip(&sb).enumerate() {
        // Both flip at the same packet pair, or B one pair early (the flip fell between A's
        // and B's probe): never a stretch where one address has switched and the other not.
        assert!(
            *ia == *ib || *ia == *ib + 1,
            "swap {i}: A switched at pair {ia}, B at pair {ib}"
        );
    }
    // Listed exactly one at a time outside the switch pairs, and alternating.
    let mixed = pairs.iter().filter(|(a, b)| a == b).count();
    assert!(mixed <= SWAPS, "{mixed} pairs saw both or neither listed");
    assert!(a[0] && !b[0]);
    assert_eq!(a[a.len() - 1], SWAPS.is_multiple_of(2));
    eprintln!(
        "{} probe pairs over {SWAPS} swaps of {BULK}-entry lists; switch pairs A {sa:?}, B {sb:?}",
        pairs.len()
    );
}

/// Pins under a fresh directory, removed (with everything in it) on drop.
struct Pins(netguard::paths::PinPaths);

impl Drop for Pins {
    fn drop(&mut self) {
        let _ = netguard::loader::detach(&self.0);
    }
}

/// A reload with the same list writes nothing: same bank, same inner maps. A few changes are
/// patched into the live bank; an edit by another process (`netguard deny add`) is noticed and
/// undone by the next reload.
#[test]
fn unchanged_denylist_touches_nothing() {
    netguard_tests::daemon::ensure_bpffs();
    let pins = Pins(netguard::paths::PinPaths::new(format!(
        "/sys/fs/bpf/ngt-{}-deny-swap",
        std::process::id()
    )));
    let mut ebpf = netguard::loader::load(&pins.0).expect("load with pinned maps");
    let mut tables = Tables::from_ebpf(&mut ebpf).expect("tables");
    let plan = plan(false);
    let (_, first) = tables.apply_all(&plan, &mut |_| {}).expect("apply");
    assert_eq!(
        first.action,
        DenyAction::Rebuild { into: 1 },
        "a first start with a big list builds it in a fresh bank"
    );
    let slots = tables.deny_slots(first.bank).expect("slots");
    let (_, again) = tables.apply_all(&plan, &mut |_| {}).expect("apply");
    assert_eq!(again.action, DenyAction::Unchanged);
    assert_eq!(again.bank, first.bank);
    assert_eq!(tables.deny_slots(first.bank).expect("slots"), slots);
    // Two entries change: patched in place, in the live bank.
    let mut small = plan.clone();
    small.deny_v4.retain(|n| *n != net("198.51.100.21/32"));
    small.deny_v4.push(net("203.0.113.77/32"));
    let (report, patched) = tables.apply_all(&small, &mut |_| {}).expect("apply");
    assert_eq!(patched.action, DenyAction::Diff);
    assert_eq!(patched.bank, first.bank);
    assert_eq!((report.added, report.removed), (1, 1));
    assert_eq!(tables.deny_slots(first.bank).expect("slots"), slots);
    let listed = tables.deny_list().expect("list");
    assert_eq!(listed.len(), small.deny_v4.len());
    assert!(listed.contains(&"203.0.113.77/32".parse().expect("net")));

    // The CLI's view: the same maps reopened from their pins.
    let mut cli = Tables::open_pinned(&pins.0).expect("open pinned");
    assert_eq!(cli.deny_bank().expect("bank"), first.bank);
    assert_eq!(cli.deny_list().expect("list"), listed);
    let (_, again) = tables.apply_all(&small, &mut |_| {}).expect("apply");
    assert_eq!(again.action, DenyAction::Unchanged, "nothing edited yet");
    cli.deny_add(&["192.0.2.200/32".parse().expect("net")])
        .expect("add");
    let (report, reverted) = tables.apply_all(&small, &mut |_| {}).expect("apply");
    assert_eq!(reverted.action, DenyAction::Diff, "the edit is noticed");
    assert_eq!((report.added, report.removed), (0, 1), "and undone");
    assert_eq!(cli.deny_list().expect("list"), listed);
}
