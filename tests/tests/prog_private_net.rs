//! The private-network isolation program, run by the kernel through `BPF_PROG_TEST_RUN` on
//! IPv4 and ARP frames between members of two networks that share one gateway address.

use aya::{
    Ebpf, EbpfLoader, TestRunOptions,
    maps::{HashMap, MapData, PerCpuArray},
    programs::{SchedClassifier, TestRun as _},
};
use netguard_common::{
    golden, maps,
    private_net::{GatewayKey, PN_REASON_COUNT, PnReason},
    reason::Counter,
};

const TC_ACT_UNSPEC: u32 = -1i32 as u32;
const TC_ACT_SHOT: u32 = 2;
const NET_A: u32 = 0xad0f_d6a1;
const NET_B: u32 = 0x1b2c_3d4e;
const A1: [u8; 4] = [10, 240, 0, 2];
const A2: [u8; 4] = [10, 240, 0, 3];
const B1: [u8; 4] = [10, 240, 1, 2];
/// One gateway address shared by both networks.
const GATEWAY: [u8; 4] = [10, 240, 0, 1];
const OUTSIDE: [u8; 4] = [172, 17, 0, 5];

struct Fixture {
    ebpf: Ebpf,
}

impl Fixture {
    fn new() -> Self {
        let mut ebpf = EbpfLoader::new()
            .load(netguard::ebpf_object())
            .expect("load eBPF object");
        let p: &mut SchedClassifier = ebpf
            .program_mut(maps::PRIVATE_PROGRAM)
            .expect("program")
            .try_into()
            .expect("tc");
        p.load()
            .expect("verifier accepts the private-network program");
        {
            let mut members: HashMap<&mut MapData, [u8; 4], u32> = ebpf
                .map_mut(maps::PN_MEMBERS)
                .expect("members")
                .try_into()
                .expect("hash");
            for (addr, net) in [(A1, NET_A), (A2, NET_A), (B1, NET_B)] {
                members.insert(addr, net, 0).expect("insert member");
            }
        }
        {
            let mut gateways: HashMap<&mut MapData, GatewayKey, u8> = ebpf
                .map_mut(maps::PN_GATEWAYS)
                .expect("gateways")
                .try_into()
                .expect("hash");
            for net in [NET_A, NET_B] {
                gateways
                    .insert(
                        GatewayKey {
                            addr: GATEWAY,
                            network: net,
                        },
                        1,
                        0,
                    )
                    .expect("insert gateway");
            }
        }
        Self { ebpf }
    }

    fn run(&mut self, frame: &[u8]) -> u32 {
        let p: &mut SchedClassifier = self
            .ebpf
            .program_mut(maps::PRIVATE_PROGRAM)
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

    fn counters(&self) -> Vec<u64> {
        let c: PerCpuArray<&MapData, Counter> = self
            .ebpf
            .map(maps::PN_COUNTERS)
            .expect("counters")
            .try_into()
            .expect("per-cpu");
        (0..PN_REASON_COUNT)
            .map(|i| {
                c.get(&i, 0)
                    .expect("counter")
                    .iter()
                    .map(|c| c.packets)
                    .sum()
            })
            .collect()
    }

    /// Runs `frame`, checks the verdict matches `want` and that exactly its counter moved.
    fn expect(&mut self, name: &str, frame: &[u8], want: PnReason) {
        let before = self.counters();
        let verdict = self.run(frame);
        let after = self.counters();
        let want_verdict = if want == PnReason::Passed {
            TC_ACT_UNSPEC
        } else {
            TC_ACT_SHOT
        };
        assert_eq!(verdict, want_verdict, "{name}: verdict");
        for r in PnReason::ALL {
            let delta = after[r as usize] - before[r as usize];
            assert_eq!(delta, u64::from(r == want), "{name}: counter {}", r.name());
        }
    }
}

fn tcp(src: [u8; 4], dst: [u8; 4], port: u16) -> Vec<u8> {
    golden::v4_tcp(src, dst, port)
}

fn udp(src: [u8; 4], dst: [u8; 4], port: u16) -> Vec<u8> {
    golden::eth(
        0x0800,
        &[],
        &golden::ipv4(
            src,
            dst,
            17,
            &[],
            golden::DF,
            &golden::udp(40000, port, b"x"),
        ),
    )
}

fn arp(sender: [u8; 4], target: [u8; 4]) -> Vec<u8> {
    let mut a = vec![0, 1, 8, 0, 6, 4, 0, 1, 2, 0, 0, 0, 0, 2];
    a.extend_from_slice(&sender);
    a.extend_from_slice(&[0; 6]);
    a.extend_from_slice(&target);
    golden::eth(0x0806, &[], &a)
}

#[test]
fn same_network_any_port_passes() {
    let mut f = Fixture::new();
    f.expect("tcp 3000 A1->A2", &tcp(A1, A2, 3000), PnReason::Passed);
    f.expect("udp 5432 A2->A1", &udp(A2, A1, 5432), PnReason::Passed);
    f.expect("tcp 22 A1->A2", &tcp(A1, A2, 22), PnReason::Passed);
}

#[test]
fn across_networks_is_dropped_both_ways() {
    let mut f = Fixture::new();
    f.expect("A1->B1", &tcp(A1, B1, 3000), PnReason::OtherNetwork);
    f.expect("B1->A1", &udp(B1, A1, 5432), PnReason::OtherNetwork);
}

#[test]
fn gateway_traffic_passes_for_each_network_sharing_it() {
    let mut f = Fixture::new();
    f.expect("A1->gateway dns", &udp(A1, GATEWAY, 53), PnReason::Passed);
    f.expect("B1->gateway dns", &udp(B1, GATEWAY, 53), PnReason::Passed);
    f.expect(
        "gateway->A1 answer",
        &udp(GATEWAY, A1, 40000),
        PnReason::Passed,
    );
    f.expect(
        "gateway->B1 answer",
        &udp(GATEWAY, B1, 40000),
        PnReason::Passed,
    );
}

#[test]
fn strangers_are_dropped() {
    let mut f = Fixture::new();
    f.expect(
        "outside->A1",
        &tcp(OUTSIDE, A1, 3000),
        PnReason::UnknownSource,
    );
    f.expect(
        "A1->outside",
        &tcp(A1, OUTSIDE, 80),
        PnReason::UnknownDestination,
    );
    f.expect(
        "A1->unassigned private address",
        &tcp(A1, [10, 240, 2, 9], 80),
        PnReason::UnknownDestination,
    );
    f.expect(
        "ipv6",
        &golden::v6_tcp(golden::CLIENT6, golden::EDGE6, 443),
        PnReason::NotIpv4,
    );
    f.expect(
        "lldp",
        &golden::eth(0x88cc, &[], &[0; 20]),
        PnReason::NotIpv4,
    );
}

#[test]
fn arp_within_a_network_only() {
    let mut f = Fixture::new();
    f.expect("arp A1 who-has A2", &arp(A1, A2), PnReason::Passed);
    f.expect(
        "arp A1 who-has gateway",
        &arp(A1, GATEWAY),
        PnReason::Passed,
    );
    f.expect("arp B1 who-has A1", &arp(B1, A1), PnReason::OtherNetwork);
    f.expect(
        "arp outside who-has A1",
        &arp(OUTSIDE, A1),
        PnReason::UnknownSource,
    );
}
