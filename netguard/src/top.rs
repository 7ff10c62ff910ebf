//! `netguard top`: per-reason packet and drop rates, refreshed from the pinned counters (no
//! daemon needed).

use std::{fmt::Write as _, time::Duration};

use netguard_common::reason::{Counter, Reason};
use serde::Serialize;

use crate::stats::Snapshot;

/// One reason's rates between two readings.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RateRow {
    pub reason: &'static str,
    /// `pass`, `drop`, or `audit` (passed in audit mode, enforce would drop).
    pub verdict: &'static str,
    pub packets_per_second: f64,
    pub bytes_per_second: f64,
    /// Packets counted since the counters were created.
    pub packets: u64,
}

/// One refresh.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Rates {
    pub interval_seconds: f64,
    pub action: &'static str,
    /// Packets per second dropped (enforce) or that would be dropped (audit).
    pub drops_per_second: f64,
    pub rows: Vec<RateRow>,
}

/// The rates from `prev` to `now`, `elapsed` apart. A counter that went backwards (the pins
/// were recreated) counts as a fresh start from zero.
pub fn rates(prev: &Snapshot, now: &Snapshot, elapsed: Duration) -> Rates {
    let secs = elapsed.as_secs_f64().max(1e-9);
    let per_sec = |a: Counter, b: Counter| {
        let (p, by) = if b.packets >= a.packets {
            (b.packets - a.packets, b.bytes.saturating_sub(a.bytes))
        } else {
            (b.packets, b.bytes)
        };
        (p as f64 / secs, by as f64 / secs)
    };
    let mut rows = Vec::new();
    for r in Reason::ALL {
        let (pps, bps) = per_sec(prev.taken(r), now.taken(r));
        rows.push(RateRow {
            reason: r.name(),
            verdict: if r.drops() { "drop" } else { "pass" },
            packets_per_second: pps,
            bytes_per_second: bps,
            packets: now.taken(r).packets,
        });
    }
    for r in Reason::ALL.into_iter().filter(|r| r.drops()) {
        let (pps, bps) = per_sec(prev.would_drop(r), now.would_drop(r));
        if now.would_drop(r).packets > 0 {
            rows.push(RateRow {
                reason: r.name(),
                verdict: "audit",
                packets_per_second: pps,
                bytes_per_second: bps,
                packets: now.would_drop(r).packets,
            });
        }
    }
    Rates {
        interval_seconds: secs,
        action: if now.audit { "audit" } else { "enforce" },
        drops_per_second: rows
            .iter()
            .filter(|r| r.verdict != "pass")
            .map(|r| r.packets_per_second)
            .sum(),
        rows,
    }
}

impl Rates {
    pub fn to_table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "action: {}   drops: {:.1} pkt/s   (every {:.1} s)",
            self.action, self.drops_per_second, self.interval_seconds
        );
        let _ = writeln!(
            out,
            "{:<12} {:<8} {:>12} {:>14} {:>16}",
            "reason", "verdict", "pkt/s", "bit/s", "packets"
        );
        for r in &self.rows {
            let _ = writeln!(
                out,
                "{:<12} {:<8} {:>12.1} {:>14} {:>16}",
                r.reason,
                r.verdict,
                r.packets_per_second,
                human_bits(r.bytes_per_second * 8.0),
                r.packets
            );
        }
        out
    }
}

/// `1.2 Mbit` style, SI.
fn human_bits(bits: f64) -> String {
    const UNITS: [&str; 5] = ["", "k", "M", "G", "T"];
    let mut v = bits;
    let mut i = 0;
    while v >= 1000.0 && i < UNITS.len() - 1 {
        v /= 1000.0;
        i += 1;
    }
    format!("{v:.1} {}bit", UNITS[i])
}

#[cfg(test)]
mod tests {
    use netguard_common::{
        policy::{FLAG_AUDIT, FilterConfig},
        reason::COUNTER_SLOTS,
    };

    use super::*;

    fn snap(audit: bool, port_closed: u64, passed: u64) -> Snapshot {
        let mut slots = vec![Counter::default(); COUNTER_SLOTS as usize];
        slots[Reason::PortClosed.counter_index(audit) as usize] = Counter {
            packets: port_closed,
            bytes: port_closed * 60,
        };
        slots[Reason::Passed.counter_index(false) as usize] = Counter {
            packets: passed,
            bytes: passed * 1500,
        };
        let mut cfg = FilterConfig::EMPTY;
        if audit {
            cfg.flags |= FLAG_AUDIT;
        }
        Snapshot::new(&cfg, slots)
    }

    #[test]
    fn rates_per_reason_and_drops() {
        let r = rates(
            &snap(false, 10, 100),
            &snap(false, 30, 1100),
            Duration::from_secs(2),
        );
        let row = |name| r.rows.iter().find(|x| x.reason == name).unwrap();
        assert_eq!(row("port_closed").packets_per_second, 10.0);
        assert_eq!(row("port_closed").bytes_per_second, 600.0);
        assert_eq!(row("passed").packets_per_second, 500.0);
        assert_eq!(row("passed").packets, 1100);
        assert_eq!(r.drops_per_second, 10.0);
        let t = r.to_table();
        assert!(t.contains("6.0 Mbit"), "{t}");
        // Recreated pins: counting restarts from zero, never a negative rate.
        let r = rates(
            &snap(false, 30, 0),
            &snap(false, 4, 0),
            Duration::from_secs(1),
        );
        assert_eq!(r.drops_per_second, 4.0);
    }

    #[test]
    fn audit_mode_shows_would_drop_rates() {
        let r = rates(&snap(true, 0, 0), &snap(true, 5, 0), Duration::from_secs(1));
        assert_eq!(r.action, "audit");
        let audit: Vec<&RateRow> = r.rows.iter().filter(|x| x.verdict == "audit").collect();
        assert_eq!(audit.len(), 1);
        assert_eq!(audit[0].reason, "port_closed");
        assert_eq!(r.drops_per_second, 5.0);
    }
}
