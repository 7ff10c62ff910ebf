//! The XDP counters as `netguard stats` shows them (table or JSON).

use std::fmt::Write as _;

use netguard_common::{
    policy::{FLAG_AUDIT, FilterConfig},
    reason::{Counter, Reason},
};
use serde_json::{Map, Value, json};

/// Counters summed over CPUs, plus the action in force.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    pub audit: bool,
    /// Indexed like `Reason::counter_index`: decisions, then the audit bank.
    pub slots: Vec<Counter>,
}

impl Snapshot {
    pub fn new(cfg: &FilterConfig, slots: Vec<Counter>) -> Self {
        Self {
            audit: cfg.has(FLAG_AUDIT),
            slots,
        }
    }

    pub fn taken(&self, r: Reason) -> Counter {
        self.slot(r.counter_index(false))
    }

    pub fn would_drop(&self, r: Reason) -> Counter {
        if r.drops() {
            self.slot(r.counter_index(true))
        } else {
            Counter::default()
        }
    }

    fn slot(&self, i: u32) -> Counter {
        self.slots.get(i as usize).copied().unwrap_or_default()
    }

    fn action(&self) -> &'static str {
        if self.audit { "audit" } else { "enforce" }
    }

    pub fn to_json(&self) -> Value {
        let bank = |f: &dyn Fn(Reason) -> Counter| {
            let mut m = Map::new();
            for r in Reason::ALL {
                let c = f(r);
                m.insert(
                    r.name().to_string(),
                    json!({"packets": c.packets, "bytes": c.bytes}),
                );
            }
            Value::Object(m)
        };
        json!({
            "action": self.action(),
            "reasons": bank(&|r| self.taken(r)),
            "would_drop": bank(&|r| self.would_drop(r)),
        })
    }

    pub fn to_table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "action: {}", self.action());
        let _ = writeln!(
            out,
            "{:<12} {:<8} {:>14} {:>16}",
            "reason", "verdict", "packets", "bytes"
        );
        for r in Reason::ALL {
            let c = self.taken(r);
            let verdict = if r.drops() { "drop" } else { "pass" };
            let _ = writeln!(
                out,
                "{:<12} {:<8} {:>14} {:>16}",
                r.name(),
                verdict,
                c.packets,
                c.bytes
            );
        }
        let audited: Vec<Reason> = Reason::ALL
            .into_iter()
            .filter(|r| self.would_drop(*r).packets > 0)
            .collect();
        if !audited.is_empty() {
            let _ = writeln!(out, "\nwould drop (audit mode, passed):");
            for r in audited {
                let c = self.would_drop(r);
                let _ = writeln!(
                    out,
                    "{:<12} {:<8} {:>14} {:>16}",
                    r.name(),
                    "audit",
                    c.packets,
                    c.bytes
                );
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use netguard_common::reason::COUNTER_SLOTS;

    fn snapshot(audit: bool) -> Snapshot {
        let mut slots = vec![Counter::default(); COUNTER_SLOTS as usize];
        slots[Reason::Passed.counter_index(audit) as usize] = Counter {
            packets: 3,
            bytes: 180,
        };
        slots[Reason::PortClosed.counter_index(audit) as usize] = Counter {
            packets: 2,
            bytes: 120,
        };
        let mut cfg = FilterConfig::EMPTY;
        if audit {
            cfg.flags |= FLAG_AUDIT;
        }
        Snapshot::new(&cfg, slots)
    }

    #[test]
    fn json_has_every_reason_in_both_banks() {
        let j = snapshot(false).to_json();
        assert_eq!(j["action"], "enforce");
        assert_eq!(j["reasons"]["passed"]["packets"], 3);
        assert_eq!(j["reasons"]["port_closed"]["bytes"], 120);
        for r in Reason::ALL {
            assert!(j["reasons"][r.name()].is_object());
            assert!(j["would_drop"][r.name()].is_object());
        }
    }

    #[test]
    fn audit_counts_show_as_would_drop() {
        let s = snapshot(true);
        assert_eq!(s.taken(Reason::PortClosed).packets, 0);
        assert_eq!(s.would_drop(Reason::PortClosed).packets, 2);
        let t = s.to_table();
        assert!(t.starts_with("action: audit"));
        assert!(t.contains("would drop"));
    }
}

/// CLOCK_MONOTONIC in nanoseconds: the clock the kernel programs stamp buckets with.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid out-parameter for a clock every Linux has.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// One container and direction as `netguard stats --containers` shows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ContainerRow {
    pub address: std::net::IpAddr,
    pub direction: &'static str,
    pub passed_bytes: u64,
    pub passed_packets: u64,
    pub dropped_bytes: u64,
    pub dropped_packets: u64,
    /// Bytes the container may send (upload) or receive (download) right now at full speed.
    pub tokens: u64,
    pub rate: u64,
    pub burst: u64,
}

impl ContainerRow {
    /// Builds a row from a bucket as the kernel holds it, judged at `now_ns` (CLOCK_MONOTONIC,
    /// the clock `bpf_ktime_get_ns` reads).
    pub fn new(
        key: &netguard_common::limiter::BucketKey,
        state: &netguard_common::limiter::BucketState,
        params: &netguard_common::bucket::BucketParams,
        now_ns: u64,
    ) -> Self {
        let v6 = std::net::Ipv6Addr::from(key.addr);
        let address = match v6.to_ipv4_mapped() {
            Some(v4) => std::net::IpAddr::V4(v4),
            None => std::net::IpAddr::V6(v6),
        };
        Self {
            address,
            direction: if key.direction == netguard_common::limiter::DIR_UPLOAD {
                "upload"
            } else {
                "download"
            },
            passed_bytes: state.passed_bytes,
            passed_packets: state.passed_packets,
            dropped_bytes: state.dropped_bytes,
            dropped_packets: state.dropped_packets,
            tokens: params.tokens(state.tat, now_ns),
            rate: params.rate,
            burst: params.burst,
        }
    }
}

/// Most drops first (the containers hitting their limit), then most bytes passed.
pub fn sort_containers(rows: &mut [ContainerRow]) {
    rows.sort_by(|a, b| {
        b.dropped_packets
            .cmp(&a.dropped_packets)
            .then(b.passed_bytes.cmp(&a.passed_bytes))
            .then(a.address.cmp(&b.address))
            .then(a.direction.cmp(b.direction))
    });
}

pub fn containers_table(rows: &[ContainerRow]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<40} {:<9} {:>14} {:>12} {:>14} {:>12} {:>14}",
        "container",
        "direction",
        "passed bytes",
        "passed pkts",
        "dropped bytes",
        "dropped pkts",
        "tokens"
    );
    for r in rows {
        let _ = writeln!(
            out,
            "{:<40} {:<9} {:>14} {:>12} {:>14} {:>12} {:>14}",
            r.address.to_string(),
            r.direction,
            r.passed_bytes,
            r.passed_packets,
            r.dropped_bytes,
            r.dropped_packets,
            r.tokens
        );
    }
    if rows.is_empty() {
        let _ = writeln!(
            out,
            "(no container has sent or received through the limiter yet)"
        );
    }
    out
}

#[cfg(test)]
mod container_tests {
    use super::*;
    use netguard_common::{
        bucket::BucketParams,
        limiter::{BucketKey, BucketState, DIR_DOWNLOAD, DIR_UPLOAD},
    };

    fn row(last: u8, direction: u8, dropped: u64) -> ContainerRow {
        let mut addr = [0u8; 16];
        addr[10] = 0xff;
        addr[11] = 0xff;
        addr[12..].copy_from_slice(&[172, 17, 0, last]);
        let key = BucketKey {
            addr,
            direction,
            _pad: [0; 7],
        };
        let state = BucketState {
            tat: 0,
            passed_bytes: 10,
            passed_packets: 1,
            dropped_bytes: dropped * 100,
            dropped_packets: dropped,
        };
        ContainerRow::new(
            &key,
            &state,
            &BucketParams::new(1_000, 100_000),
            1_000_000_000_000,
        )
    }

    #[test]
    fn rows_sorted_by_drops_and_addresses_unmapped() {
        let mut rows = vec![
            row(2, DIR_UPLOAD, 0),
            row(3, DIR_DOWNLOAD, 7),
            row(4, DIR_UPLOAD, 3),
        ];
        sort_containers(&mut rows);
        let order: Vec<String> = rows.iter().map(|r| r.address.to_string()).collect();
        assert_eq!(order, ["172.17.0.3", "172.17.0.4", "172.17.0.2"]);
        assert_eq!(rows[0].direction, "download");
        assert_eq!(rows[0].tokens, 100_000, "an idle bucket is full");
        let t = containers_table(&rows);
        assert!(
            t.lines()
                .nth(1)
                .is_some_and(|l| l.starts_with("172.17.0.3")),
            "{t}"
        );
    }
}
