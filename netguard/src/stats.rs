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
