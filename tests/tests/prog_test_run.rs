//! The loaded XDP and tc programs, run by the kernel on the golden packets through
//! `BPF_PROG_TEST_RUN`: the verdict and the one counter that moved must match the table that
//! the host-side parser tests use.

use aya::{
    Ebpf, EbpfLoader, TestRunOptions,
    maps::{Array, HashMap, MapData, MapInfo},
    programs::{SchedClassifier, TestRun as _, Xdp},
};
use netguard::{
    policy::{LimiterPlan, MapPlan},
    tables::Tables,
};
use netguard_common::{
    flow::{FlowKey, FlowValue},
    golden::{self, Mode},
    limiter::LimiterConfig,
    maps,
    packet::{ETH_HLEN, ETH_P_IPV4},
    policy::{FLAG_AUDIT, FilterConfig},
    reason::{Counter, Reason},
};

const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;

fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid out-parameter.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// How the trusted list reaches the program: inline in the policy value (what the daemon
/// writes for short lists) or only through the tries (long lists).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Trusted {
    Inline,
    Tries,
}

/// `a.b.c.d/len` (or an IPv6 prefix), parsed into whatever prefix type the context wants (the
/// tests crate does not depend on `ipnet` itself).
fn net<T: std::str::FromStr>(text: &str) -> T
where
    T::Err: std::fmt::Debug,
{
    text.parse().expect("prefix")
}

fn v4<T: std::str::FromStr>(addr: [u8; 4], len: u8) -> T
where
    T::Err: std::fmt::Debug,
{
    net(&format!("{}/{len}", std::net::Ipv4Addr::from(addr)))
}

/// The golden fixture's tables as the daemon would write them.
fn fixture_plan() -> MapPlan {
    MapPlan {
        filter: golden::fixture_config(golden::DEFAULT_MODE),
        deny_v4: golden::DENY_V4.iter().map(|(n, l)| v4(*n, *l)).collect(),
        deny_v6: golden::DENY_V6
            .iter()
            .map(|(n, l)| net(&format!("{}/{l}", std::net::Ipv6Addr::from(*n))))
            .collect(),
        trusted_v4: golden::TRUSTED_V4.iter().map(|(n, l)| v4(*n, *l)).collect(),
        trusted_v6: Vec::new(),
        limiter: LimiterPlan {
            config: LimiterConfig::EMPTY,
            overrides: Vec::new(),
        },
    }
}

/// The object loaded without pins, its maps filled with the golden fixture through the
/// daemon's own table code (tries, the /24 index, the policy value).
struct Fixture {
    ebpf: Ebpf,
    tables: Tables,
    trusted: Trusted,
}

impl Fixture {
    fn new() -> Self {
        Self::with(Trusted::Inline)
    }

    fn with(trusted: Trusted) -> Self {
        let mut ebpf = EbpfLoader::new()
            .load(netguard::ebpf_object())
            .expect("load eBPF object");
        let mut tables = Tables::from_ebpf(&mut ebpf).expect("tables");
        tables
            .apply(&fixture_plan(), &mut |_| {})
            .expect("apply the fixture");
        {
            let mut flows: HashMap<&mut MapData, FlowKey, FlowValue> = ebpf
                .map_mut(maps::FLOWS)
                .expect("flows")
                .try_into()
                .expect("lru hash");
            flows
                .insert(
                    golden::fixture_flow(),
                    FlowValue {
                        last_seen_ns: monotonic_ns(),
                    },
                    0,
                )
                .expect("insert flow");
        }
        let p: &mut Xdp = ebpf
            .program_mut(maps::XDP_PROGRAM)
            .expect("xdp program")
            .try_into()
            .expect("xdp");
        p.load().expect("verifier accepts the XDP program");
        let p: &mut SchedClassifier = ebpf
            .program_mut(maps::FLOW_TRACK_PROGRAM)
            .expect("tc program")
            .try_into()
            .expect("tc");
        p.load().expect("verifier accepts the tc program");
        let mut fx = Self {
            ebpf,
            tables,
            trusted,
        };
        fx.set_mode(golden::DEFAULT_MODE, false);
        fx
    }

    fn set_mode(&mut self, mode: Mode, audit: bool) {
        let mut cfg: FilterConfig = golden::fixture_config(mode);
        if self.trusted == Trusted::Inline {
            assert!(cfg.set_trusted_inline(&golden::TRUSTED_V4, &[]));
        }
        if audit {
            cfg.flags |= FLAG_AUDIT;
        }
        self.tables.set_filter_config(&cfg).expect("set config");
    }

    fn counters(&self) -> Vec<Counter> {
        self.tables.counters().expect("read counters")
    }

    fn run_xdp(&mut self, frame: &[u8]) -> u32 {
        let p: &mut Xdp = self
            .ebpf
            .program_mut(maps::XDP_PROGRAM)
            .expect("xdp")
            .try_into()
            .expect("xdp");
        p.test_run(TestRunOptions {
            data_in: Some(frame),
            ..TestRunOptions::default()
        })
        .expect("BPF_PROG_TEST_RUN")
        .return_value
    }

    fn run_tc(&mut self, frame: &[u8]) {
        let p: &mut SchedClassifier = self
            .ebpf
            .program_mut(maps::FLOW_TRACK_PROGRAM)
            .expect("tc")
            .try_into()
            .expect("tc");
        p.test_run(TestRunOptions {
            data_in: Some(frame),
            ..TestRunOptions::default()
        })
        .expect("BPF_PROG_TEST_RUN (tc)");
    }

    /// Runs one frame and returns (verdict, the single slot that moved, its delta).
    fn judge(&mut self, frame: &[u8]) -> (u32, usize, Counter) {
        let before = self.counters();
        let verdict = self.run_xdp(frame);
        let after = self.counters();
        let moved: Vec<usize> = (0..after.len())
            .filter(|i| after[*i] != before[*i])
            .collect();
        assert_eq!(
            moved.len(),
            1,
            "exactly one counter must move, moved: {moved:?}"
        );
        let i = moved[0];
        let delta = Counter {
            packets: after[i].packets - before[i].packets,
            bytes: after[i].bytes - before[i].bytes,
        };
        (verdict, i, delta)
    }

    /// The reason the program gives `frame`, checked to be the only counter that moved.
    fn reason(&mut self, frame: &[u8]) -> Reason {
        let (verdict, slot, _) = self.judge(frame);
        let reason = Reason::from_index(slot as u32).expect("enforce bank");
        let want = if reason.drops() { XDP_DROP } else { XDP_PASS };
        assert_eq!(verdict, want, "{reason:?}");
        reason
    }
}

/// Every golden packet under `fx`: the verdict and the one counter that moved.
fn check_golden(fx: &mut Fixture) {
    let mut failures = Vec::new();
    for case in golden::table() {
        if case.frame.len() < ETH_HLEN {
            // BPF_PROG_TEST_RUN refuses XDP input shorter than an Ethernet header; the host
            // parser test covers those lengths.
            continue;
        }
        fx.set_mode(case.mode, false);
        let (verdict, slot, delta) = fx.judge(&case.frame);
        let want_verdict = if case.expect.drops() {
            XDP_DROP
        } else {
            XDP_PASS
        };
        let want_slot = case.expect.counter_index(false) as usize;
        if verdict != want_verdict
            || slot != want_slot
            || delta.packets != 1
            || delta.bytes != case.frame.len() as u64
        {
            failures.push(format!(
                "{}: verdict {verdict} (want {want_verdict}), slot {slot} ({:?}) want {want_slot} ({:?}), delta {delta:?}",
                case.name,
                Reason::from_index(slot as u32 % netguard_common::reason::REASON_COUNT),
                case.expect
            ));
        }
    }
    assert!(failures.is_empty(), "{:?}: {failures:#?}", fx.trusted);
}

#[test]
fn golden_packets_get_their_verdict_and_counter() {
    check_golden(&mut Fixture::with(Trusted::Inline));
}

#[test]
fn golden_packets_with_the_trusted_list_in_the_tries() {
    check_golden(&mut Fixture::with(Trusted::Tries));
}

/// `deny add`/`del` on the live maps, through the /24 index's three states: a block the
/// denylist does not touch, one a short prefix covers, one holding longer prefixes (the trie
/// answers), and back.
#[test]
fn denylist_index_follows_add_and_del() {
    let mut fx = Fixture::new();
    let syn = |src| golden::v4_tcp(src, golden::EDGE, 443);
    let client = syn(golden::CLIENT);
    let neighbour = syn([192, 0, 2, 200]);
    assert_eq!(fx.reason(&client), Reason::Passed, "clean block");

    fx.tables.deny_add(&[net("192.0.2.99/32")]).expect("add");
    assert_eq!(fx.reason(&client), Reason::Denylisted, "/32 in its block");
    assert_eq!(
        fx.reason(&neighbour),
        Reason::Passed,
        "same block, trie miss"
    );

    fx.tables.deny_add(&[net("192.0.0.0/16")]).expect("add");
    assert_eq!(fx.reason(&neighbour), Reason::Denylisted, "covered block");
    let missing = fx.tables.deny_del(&[net("192.0.0.0/16")]).expect("del");
    assert!(missing.is_empty());
    assert_eq!(fx.reason(&neighbour), Reason::Passed, "back to partial");
    assert_eq!(fx.reason(&client), Reason::Denylisted, "the /32 stayed");

    fx.tables.deny_add(&[net("192.0.2.192/26")]).expect("add");
    assert_eq!(
        fx.reason(&neighbour),
        Reason::Denylisted,
        "/26 inside the block"
    );
    fx.tables
        .deny_del(&[net("192.0.2.99/32"), net("192.0.2.192/26")])
        .expect("del");
    assert_eq!(fx.reason(&client), Reason::Passed);
    assert_eq!(fx.reason(&neighbour), Reason::Passed);
    // The trusted source's block now only holds the fixture's trusted /32: untouched.
    assert_eq!(fx.reason(&syn(golden::TRUSTED)), Reason::Trusted);
    assert_eq!(
        fx.reason(&syn(golden::DENIED)),
        Reason::Denylisted,
        "the fixture's /24 never moved"
    );
    let listed = fx.tables.deny_list().expect("list");
    assert_eq!(listed.len(), 2, "the fixture's two prefixes: {listed:?}");
}

/// A reload that swaps prefixes keeps the index exact: `apply` raises, then lowers.
#[test]
fn denylist_index_follows_a_reload() {
    let mut fx = Fixture::new();
    let client = golden::v4_tcp(golden::CLIENT, golden::EDGE, 443);
    let mut plan = fixture_plan();
    plan.deny_v4 = vec![v4([192, 0, 0, 0], 22), v4([10, 0, 0, 0], 8)];
    fx.tables.apply(&plan, &mut |_| {}).expect("apply");
    fx.set_mode(golden::DEFAULT_MODE, false);
    assert_eq!(fx.reason(&client), Reason::Denylisted);
    let denied = golden::v4_tcp(golden::DENIED, golden::EDGE, 443);
    assert_eq!(fx.reason(&denied), Reason::Passed, "198.51.100.0/24 left");
    plan.deny_v4 = vec![v4([192, 0, 2, 96], 29)];
    fx.tables.apply(&plan, &mut |_| {}).expect("apply");
    assert_eq!(fx.reason(&client), Reason::Denylisted, "inside the /29");
    let other = golden::v4_tcp([192, 0, 3, 1], golden::EDGE, 443);
    assert_eq!(fx.reason(&other), Reason::Passed, "the /22 left");
}

#[test]
fn truncated_syns_never_pass() {
    let mut fx = Fixture::new();
    for (name, frame, mode) in golden::truncation_sources() {
        fx.set_mode(mode, false);
        assert_eq!(fx.run_xdp(&frame), XDP_PASS, "{name}: the whole SYN passes");
        for len in ETH_HLEN..frame.len() {
            assert_eq!(
                fx.run_xdp(&frame[..len]),
                XDP_DROP,
                "{name} cut to {len} bytes passed"
            );
        }
    }
}

#[test]
fn audit_mode_passes_and_counts_would_drop() {
    let mut fx = Fixture::new();
    fx.set_mode(golden::DEFAULT_MODE, true);
    let frame = golden::v4_tcp(golden::CLIENT, golden::EDGE, 22);
    let (verdict, slot, _) = fx.judge(&frame);
    assert_eq!(verdict, XDP_PASS);
    assert_eq!(slot, Reason::PortClosed.counter_index(true) as usize);
    let frame = golden::v4_tcp(golden::CLIENT, golden::EDGE, 443);
    let (verdict, slot, _) = fx.judge(&frame);
    assert_eq!(verdict, XDP_PASS);
    assert_eq!(slot, Reason::Passed as usize);
}

#[test]
fn flow_tracker_opens_return_path_for_that_flow_only() {
    let mut fx = Fixture::new();
    fx.set_mode(golden::DEFAULT_MODE, false);
    let (edge, remote) = (golden::EDGE, [192, 0, 2, 123]);
    let udp = |src, sport, dst, dport| {
        golden::eth(
            ETH_P_IPV4,
            &[],
            &golden::ipv4(
                src,
                dst,
                17,
                &[],
                golden::DF,
                &golden::udp(sport, dport, b"x"),
            ),
        )
    };
    let reply = udp(remote, 123, edge, 41000);
    assert_eq!(
        fx.judge(&reply).0,
        XDP_DROP,
        "unsolicited before the host sent anything"
    );
    fx.run_tc(&udp(edge, 41000, remote, 123));
    let (verdict, slot, _) = fx.judge(&reply);
    assert_eq!((verdict, slot), (XDP_PASS, Reason::ReturnFlow as usize));
    let other_port = udp(remote, 123, edge, 41001);
    assert_eq!(
        fx.judge(&other_port).0,
        XDP_DROP,
        "another local port is not the flow"
    );
    // The host's answers from an allowed port are not recorded (their peers reach 443 anyway).
    let tcp_reply_from_443 = golden::eth(
        ETH_P_IPV4,
        &[],
        &golden::ipv4(
            edge,
            remote,
            6,
            &[],
            golden::DF,
            &golden::tcp(443, 50000, 0x12),
        ),
    );
    fx.run_tc(&tcp_reply_from_443);
    let flows: HashMap<&MapData, FlowKey, FlowValue> = fx
        .ebpf
        .map(maps::FLOWS)
        .expect("flows")
        .try_into()
        .expect("lru");
    assert_eq!(
        flows.keys().count(),
        2,
        "fixture flow + the UDP flow, not the 443 answer"
    );
}

#[test]
fn maps_have_the_expected_layout() {
    // A fresh object: the fixture's table handles have taken its maps out.
    let ebpf = EbpfLoader::new()
        .load(netguard::ebpf_object())
        .expect("load eBPF object");
    for expected in maps::LAYOUTS {
        let map = ebpf
            .map(expected.name)
            .unwrap_or_else(|| panic!("map {} missing", expected.name));
        let info = map_info(map);
        assert_eq!(
            info.key_size(),
            expected.key_size,
            "{} key size",
            expected.name
        );
        assert_eq!(
            info.value_size(),
            expected.value_size,
            "{} value size",
            expected.name
        );
        assert_eq!(
            info.max_entries(),
            expected.max_entries,
            "{} max entries",
            expected.name
        );
        assert_eq!(
            info.map_type().expect("known type") as u32,
            expected.map_type,
            "{} type",
            expected.name
        );
    }
    assert_eq!(maps::ALL.len(), maps::LAYOUTS.len());
    // The inner maps the daemon made for the live bank: the kernel took them into the outer
    // maps (same shape as the program's templates), and the index is mappable.
    let fx = Fixture::new();
    let bank = fx.tables.deny_bank().expect("bank");
    let slots = fx.tables.deny_slots(bank).expect("slots");
    for (spec, id) in maps::DENY_INNER.iter().zip(slots) {
        let info = MapInfo::from_id(id.expect("live slot filled")).expect("inner map info");
        assert_eq!(info.map_type().expect("type") as u32, spec.layout.map_type);
        assert_eq!(info.key_size(), spec.layout.key_size, "{}", spec.name);
        assert_eq!(info.value_size(), spec.layout.value_size, "{}", spec.name);
        assert_eq!(info.max_entries(), spec.layout.max_entries, "{}", spec.name);
        assert_eq!(info.map_flags(), spec.flags, "{}", spec.name);
        assert_eq!(
            info.name_as_str(),
            Some(format!("{}{bank}", spec.name).as_str()),
            "named for its bank"
        );
    }
    assert_ne!(
        maps::DENY_INNER[1].flags & maps::BPF_F_MMAPABLE,
        0,
        "userspace maps the index"
    );
    let other = fx.tables.deny_slots(1 - bank).expect("slots");
    assert_eq!(
        other, [None; 3],
        "the other bank holds nothing between reloads"
    );
}

fn map_info(map: &aya::maps::Map) -> MapInfo {
    use aya::maps::Map;
    let data: &MapData = match map {
        Map::Array(d)
        | Map::ArrayOfMaps(d)
        | Map::PerCpuArray(d)
        | Map::LpmTrie(d)
        | Map::LruHashMap(d)
        | Map::HashMap(d) => d,
        other => panic!("unexpected map kind {other:?}"),
    };
    data.info().expect("map info")
}

// ---- the tc limiter ---------------------------------------------------------------------------

mod limiter {
    use super::*;
    use aya::maps::HashMap as BpfHashMap;
    use netguard_common::{
        bucket::BucketParams,
        limiter::{BucketKey, BucketState, DIR_DOWNLOAD, DIR_UPLOAD, LimiterConfig, bucket_key},
        packet::{Addr, ETH_P_IPV6},
    };

    const TC_ACT_UNSPEC: u32 = -1i32 as u32;
    const TC_ACT_SHOT: u32 = 2;
    const CONTAINER: [u8; 4] = [172, 17, 0, 2];
    const OTHER_CONTAINER: [u8; 4] = [172, 17, 0, 3];
    const REMOTE: [u8; 4] = [192, 0, 2, 99];

    struct Limiter {
        ebpf: Ebpf,
    }

    impl Limiter {
        /// Rate 1 MB/s, burst 10 frames of 1,000 bytes, containers 172.17.0.0/16 and fd00:17::/64.
        fn new() -> Self {
            let mut ebpf = EbpfLoader::new()
                .load(netguard::ebpf_object())
                .expect("load eBPF object");
            for name in [maps::LIMIT_UPLOAD_PROGRAM, maps::LIMIT_DOWNLOAD_PROGRAM] {
                let p: &mut SchedClassifier = ebpf
                    .program_mut(name)
                    .expect("program")
                    .try_into()
                    .expect("tc");
                p.load().expect("verifier accepts the limiter");
            }
            let mut cfg = LimiterConfig::EMPTY;
            cfg.default = BucketParams::new(1_000, 10_000);
            cfg.containers.add_v4([172, 17, 0, 0], 16);
            let mut v6 = [0u8; 16];
            v6[..4].copy_from_slice(&[0xfd, 0, 0, 0x17]);
            cfg.containers.add_v6(v6, 64);
            let mut a: Array<&mut MapData, LimiterConfig> = ebpf
                .map_mut(maps::LIMIT_CONFIG)
                .expect("limiter config")
                .try_into()
                .expect("array");
            a.set(0, cfg, 0).expect("set limiter config");
            Self { ebpf }
        }

        fn run(&mut self, program: &str, frame: &[u8]) -> u32 {
            let p: &mut SchedClassifier = self
                .ebpf
                .program_mut(program)
                .expect("program")
                .try_into()
                .expect("tc");
            p.test_run(TestRunOptions {
                data_in: Some(frame),
                ..TestRunOptions::default()
            })
            .expect("BPF_PROG_TEST_RUN")
            .return_value
        }

        fn upload(&mut self, frame: &[u8]) -> u32 {
            self.run(maps::LIMIT_UPLOAD_PROGRAM, frame)
        }

        fn download(&mut self, frame: &[u8]) -> u32 {
            self.run(maps::LIMIT_DOWNLOAD_PROGRAM, frame)
        }

        fn bucket(&self, key: &BucketKey) -> Option<BucketState> {
            let m: BpfHashMap<&MapData, BucketKey, BucketState> = self
                .ebpf
                .map(maps::BUCKETS)
                .expect("buckets")
                .try_into()
                .expect("lru hash");
            m.get(key, 0).ok()
        }

        fn set_override(&mut self, addr: [u8; 16], params: BucketParams) {
            let mut m: BpfHashMap<&mut MapData, [u8; 16], BucketParams> = self
                .ebpf
                .map_mut(maps::LIMIT_OVERRIDES)
                .expect("overrides")
                .try_into()
                .expect("hash");
            m.insert(addr, params, 0).expect("insert override");
            // The program looks overrides up only while the config counts some.
            let mut a: Array<&mut MapData, LimiterConfig> = self
                .ebpf
                .map_mut(maps::LIMIT_CONFIG)
                .expect("limiter config")
                .try_into()
                .expect("array");
            let mut cfg = a.get(&0, 0).expect("limiter config");
            cfg.overrides += 1;
            a.set(0, cfg, 0).expect("set limiter config");
        }
    }

    /// A 1,000-byte UDP frame.
    fn frame(src: [u8; 4], dst: [u8; 4]) -> Vec<u8> {
        let payload = vec![0u8; 1000 - 14 - 20 - 8];
        golden::eth(
            ETH_P_IPV4,
            &[],
            &golden::ipv4(
                src,
                dst,
                17,
                &[],
                golden::DF,
                &golden::udp(5000, 5001, &payload),
            ),
        )
    }

    fn mapped(a: [u8; 4]) -> [u8; 16] {
        netguard_common::flow::mapped(&Addr::v4(a))
    }

    #[test]
    fn fresh_bucket_passes_the_burst_then_drops() {
        let mut l = Limiter::new();
        let up = frame(CONTAINER, REMOTE);
        for i in 0..10 {
            assert_eq!(l.upload(&up), TC_ACT_UNSPEC, "packet {i} of the burst");
        }
        assert_eq!(
            l.upload(&up),
            TC_ACT_SHOT,
            "the 11th packet exceeds the 10,000-byte burst"
        );
        let state = l
            .bucket(&bucket_key(&Addr::v4(CONTAINER), DIR_UPLOAD))
            .expect("bucket created");
        assert_eq!((state.passed_packets, state.passed_bytes), (10, 10_000));
        assert_eq!((state.dropped_packets, state.dropped_bytes), (1, 1_000));
        // Download is a separate bucket, and another container has its own.
        assert_eq!(l.download(&frame(REMOTE, CONTAINER)), TC_ACT_UNSPEC);
        assert_eq!(l.upload(&frame(OTHER_CONTAINER, REMOTE)), TC_ACT_UNSPEC);
        assert!(
            l.bucket(&bucket_key(&Addr::v4(CONTAINER), DIR_DOWNLOAD))
                .is_some()
        );
    }

    #[test]
    fn override_applies_to_its_container_only() {
        let mut l = Limiter::new();
        // 1,000 B/s: the loop would need a second to earn back one packet, so a slow (loaded)
        // run cannot pass a 21st.
        l.set_override(mapped(CONTAINER), BucketParams::new(1_000, 20_000));
        let up = frame(CONTAINER, REMOTE);
        let passed = (0..30).filter(|_| l.upload(&up) == TC_ACT_UNSPEC).count();
        assert_eq!(passed, 20, "the override's 20,000-byte burst");
        let other = frame(OTHER_CONTAINER, REMOTE);
        let passed = (0..30)
            .filter(|_| l.upload(&other) == TC_ACT_UNSPEC)
            .count();
        assert_eq!(passed, 10, "the default burst");
    }

    #[test]
    fn ipv6_containers_are_limited() {
        let mut l = Limiter::new();
        let mut c6 = [0u8; 16];
        c6[..4].copy_from_slice(&[0xfd, 0, 0, 0x17]);
        c6[15] = 2;
        let payload = vec![0u8; 1000 - 14 - 40 - 8];
        let f = golden::eth(
            ETH_P_IPV6,
            &[],
            &golden::ipv6(c6, golden::CLIENT6, 17, &golden::udp(1, 2, &payload)),
        );
        let passed = (0..15).filter(|_| l.upload(&f) == TC_ACT_UNSPEC).count();
        assert_eq!(passed, 10);
        assert!(l.bucket(&bucket_key(&Addr::v6(c6), DIR_UPLOAD)).is_some());
    }

    #[test]
    fn non_ip_and_outside_addresses_are_untouched() {
        let mut l = Limiter::new();
        let arp = golden::eth(0x0806, &[], &[0u8; 28]);
        let outside = frame([10, 0, 0, 2], REMOTE);
        let to_outside = frame(REMOTE, [10, 0, 0, 2]);
        for _ in 0..50 {
            assert_eq!(l.upload(&arp), TC_ACT_UNSPEC);
            assert_eq!(l.upload(&outside), TC_ACT_UNSPEC);
            assert_eq!(l.download(&to_outside), TC_ACT_UNSPEC);
        }
        let buckets: BpfHashMap<&MapData, BucketKey, BucketState> = l
            .ebpf
            .map(maps::BUCKETS)
            .expect("buckets")
            .try_into()
            .expect("lru hash");
        assert_eq!(
            buckets.keys().count(),
            0,
            "nothing outside the container ranges gets a bucket"
        );
    }
}
