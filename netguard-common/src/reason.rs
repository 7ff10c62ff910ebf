//! Why the XDP program took its decision: one counter per reason.

/// Every packet the XDP program sees moves exactly one of these counters.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Reason {
    /// TCP to an allowed port.
    Passed = 0,
    /// Destination is not one of the guarded ingress addresses.
    NotGuarded = 1,
    /// Inbound packet of a flow the host opened itself.
    ReturnFlow = 2,
    /// Source in the denylist.
    Denylisted = 3,
    /// Source in `trusted_sources`.
    Trusted = 4,
    /// TCP to a port that is not allowed, or UDP to any port.
    PortClosed = 5,
    /// An IP protocol that is never allowed (GRE, ESP, SCTP, non-essential ICMP, …).
    Protocol = 6,
    /// IPv4 fragment (first or not) or IPv6 fragment header.
    Fragment = 7,
    /// Truncated or inconsistent headers.
    Malformed = 8,
    /// IPv6 to a guarded destination while `ipv6 = "drop"`.
    Ipv6 = 9,
    /// Not IPv4/IPv6 (ARP, LLDP, …).
    NonIp = 10,
    /// Essential ICMP (PMTU, time exceeded, echo request) and NDP.
    Icmp = 11,
}

pub const REASON_COUNT: u32 = 12;

/// Counter slots: one bank for decisions taken, one for drops only observed in audit mode.
pub const COUNTER_SLOTS: u32 = 2 * REASON_COUNT;

impl Reason {
    pub const ALL: [Reason; REASON_COUNT as usize] = [
        Reason::Passed,
        Reason::NotGuarded,
        Reason::ReturnFlow,
        Reason::Denylisted,
        Reason::Trusted,
        Reason::PortClosed,
        Reason::Protocol,
        Reason::Fragment,
        Reason::Malformed,
        Reason::Ipv6,
        Reason::NonIp,
        Reason::Icmp,
    ];

    /// Whether enforce mode drops a packet for this reason.
    pub const fn drops(self) -> bool {
        matches!(
            self,
            Reason::Denylisted
                | Reason::PortClosed
                | Reason::Protocol
                | Reason::Fragment
                | Reason::Malformed
                | Reason::Ipv6
        )
    }

    /// The slot in the counters map. In audit mode a would-be drop is counted in the second bank,
    /// so `stats` can tell "dropped" from "would have dropped".
    pub const fn counter_index(self, audit: bool) -> u32 {
        if audit && self.drops() {
            self as u32 + REASON_COUNT
        } else {
            self as u32
        }
    }

    /// Name used in `netguard stats`, metrics and docs.
    pub const fn name(self) -> &'static str {
        match self {
            Reason::Passed => "passed",
            Reason::NotGuarded => "not_guarded",
            Reason::ReturnFlow => "return_flow",
            Reason::Denylisted => "denylisted",
            Reason::Trusted => "trusted",
            Reason::PortClosed => "port_closed",
            Reason::Protocol => "protocol",
            Reason::Fragment => "fragment",
            Reason::Malformed => "malformed",
            Reason::Ipv6 => "ipv6",
            Reason::NonIp => "non_ip",
            Reason::Icmp => "icmp",
        }
    }

    pub fn from_index(index: u32) -> Option<Reason> {
        Self::ALL.get(index as usize).copied()
    }
}

/// One counter slot: packets and bytes (frame length as XDP sees it).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counter {
    pub packets: u64,
    pub bytes: u64,
}

const _: () = assert!(core::mem::size_of::<Counter>() == 16);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indices_are_dense_and_names_unique() {
        for (i, r) in Reason::ALL.iter().enumerate() {
            assert_eq!(*r as usize, i);
            assert_eq!(Reason::from_index(i as u32), Some(*r));
            for other in &Reason::ALL[i + 1..] {
                assert_ne!(r.name(), other.name());
            }
        }
        assert_eq!(Reason::from_index(REASON_COUNT), None);
    }

    #[test]
    fn audit_bank_only_for_drops() {
        assert_eq!(Reason::Passed.counter_index(true), 0);
        assert_eq!(
            Reason::Denylisted.counter_index(true),
            Reason::Denylisted as u32 + REASON_COUNT
        );
        assert!(Reason::Malformed.counter_index(true) < COUNTER_SLOTS);
    }
}
