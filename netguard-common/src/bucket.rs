//! Token-bucket arithmetic for the tc bandwidth limiter, as one pure function.
//!
//! The bucket is kept in its "virtual scheduling" form (GCRA, RFC 2697's cousin used by ATM):
//! instead of `(tokens, last_refill)` the state is one `u64`, the *theoretical arrival time*
//! `tat`: the instant at which the bucket would be full again if nothing else were sent. A
//! packet of `size` bytes costs `size / rate` seconds; it conforms when, after paying, the
//! bucket is still not more than `burst` bytes "in debt":
//!
//! ```text
//! start   = max(tat, now)            // an idle bucket saturates: no refill beyond full
//! new_tat = start + cost(size)
//! pass    = new_tat - now <= tau     // tau = burst / rate, the time a full bucket lasts
//! ```
//!
//! This is exactly a token bucket holding `tokens = (tau - (tat - now)) * rate`, capped at
//! `burst`, and it has the properties the limiter needs by construction:
//! - no overflow: no `rate × elapsed` product is ever formed; `tat` never exceeds `now + tau`;
//! - long idle gaps (100 s, 16 min, 24 h) saturate at the burst through `max(tat, now)`;
//! - a `now` older than `tat` (another CPU paid after this one read its clock) cannot
//!   underflow into a refill: `start` is then `tat`, the debt only grows;
//! - one `u64` of state, so two CPUs updating the same bucket at once can use a compare-and-swap
//!   on that word alone (the eBPF program does), and no update is lost.
//!
//! Costs round up, so the limiter never admits more than `burst + rate × t`.

pub const NS_PER_SEC: u64 = 1_000_000_000;

/// The largest packet the limiter is ever asked to charge: a GSO/GRO super-packet on a veth.
/// A burst smaller than this would drop such packets forever, so config validation refuses it.
pub const MAX_PACKET_BYTES: u64 = 65_536;

/// Rate and burst of one bucket, precomputed for the per-packet path.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct BucketParams {
    /// Bytes per second; never zero for a valid config.
    pub rate: u64,
    /// Bytes.
    pub burst: u64,
    /// `burst / rate` in nanoseconds (saturating), computed once in userspace with 128-bit
    /// arithmetic so large bursts cannot overflow in the kernel.
    pub tau_ns: u64,
}

const _: () = assert!(core::mem::size_of::<BucketParams>() == 24);

impl BucketParams {
    pub const fn new(rate: u64, burst: u64) -> Self {
        let tau = if rate == 0 {
            0
        } else {
            (burst as u128 * NS_PER_SEC as u128) / rate as u128
        };
        Self {
            rate,
            burst,
            tau_ns: if tau > u64::MAX as u128 {
                u64::MAX
            } else {
                tau as u64
            },
        }
    }

    /// Nanoseconds of credit a packet of `size` bytes uses, rounded up. `size` is bounded by
    /// the packet length (≤ 2^32) and `NS_PER_SEC` < 2^30, so the product fits in a `u64`
    /// for any packet up to 16 GiB.
    #[inline(always)]
    pub const fn cost_ns(&self, size: u64) -> u64 {
        if self.rate == 0 {
            return u64::MAX;
        }
        (size * NS_PER_SEC).div_ceil(self.rate)
    }

    /// Bytes available at `now` for a bucket whose state is `tat`.
    pub const fn tokens(&self, tat: u64, now: u64) -> u64 {
        let debt = tat.saturating_sub(now);
        if debt >= self.tau_ns {
            return 0;
        }
        let credit_ns = (self.tau_ns - debt) as u128;
        let tokens = credit_ns * self.rate as u128 / NS_PER_SEC as u128;
        if tokens > self.burst as u128 {
            self.burst
        } else {
            tokens as u64
        }
    }
}

/// Decides one packet: `Some(new_tat)` to store if it conforms, `None` to drop it (state
/// unchanged).
#[inline(always)]
pub fn admit(params: &BucketParams, tat: u64, now: u64, size: u64) -> Option<u64> {
    let start = if tat > now { tat } else { now };
    let new_tat = start.saturating_add(params.cost_ns(size));
    if new_tat - now <= params.tau_ns {
        Some(new_tat)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RATE: u64 = 20_000_000;
    const BURST: u64 = 1_600_000_000;

    /// Deterministic xorshift so property runs are reproducible.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
    }

    #[test]
    fn production_numbers() {
        let p = BucketParams::new(RATE, BURST);
        assert_eq!(p.tau_ns, 80 * NS_PER_SEC, "1.6 GB at 20 MB/s lasts 80 s");
        assert_eq!(p.cost_ns(1500), 75_000);
        assert_eq!(p.tokens(0, 1_000 * NS_PER_SEC), BURST);
    }

    #[test]
    fn fresh_bucket_passes_the_burst_then_holds_the_rate() {
        let p = BucketParams::new(1_000_000, 10_000);
        let (mut tat, now) = (0u64, 5 * NS_PER_SEC);
        let mut admitted = 0;
        while let Some(t) = admit(&p, tat, now, 1_000) {
            tat = t;
            admitted += 1_000;
        }
        assert_eq!(admitted, 10_000, "exactly the burst at one instant");
        // 1 ms later: 1,000 bytes of credit, one more packet, not two.
        let later = now + 1_000_000;
        tat = admit(&p, tat, later, 1_000).expect("refilled by rate × 1 ms");
        assert_eq!(admit(&p, tat, later, 1_000), None);
    }

    #[test]
    fn idle_gaps_saturate_at_the_burst_and_never_wrap() {
        let p = BucketParams::new(RATE, BURST);
        for gap_s in [100u64, 16 * 60, 24 * 3600, 10 * 365 * 24 * 3600] {
            let tat = 1_000 * NS_PER_SEC;
            let now = tat + gap_s * NS_PER_SEC;
            assert_eq!(p.tokens(tat, now), BURST, "gap {gap_s} s");
            // Spend the whole burst at once: one byte more must not fit.
            let t = admit(&p, tat, now, BURST).expect("a full burst fits");
            assert_eq!(
                admit(&p, t, now, 1),
                None,
                "gap {gap_s} s: no credit beyond the burst"
            );
        }
    }

    #[test]
    fn now_before_tat_does_not_refill() {
        let p = BucketParams::new(RATE, 1_000_000);
        let now = 50 * NS_PER_SEC;
        let tat = admit(&p, 0, now, 900_000).expect("fits");
        // A CPU whose clock reading predates the other's update, by up to a whole second.
        for skew in [1, 1_000, NS_PER_SEC] {
            let stale_now = now - skew;
            assert!(p.tokens(tat, stale_now) <= p.tokens(tat, now));
            assert_eq!(admit(&p, tat, stale_now, 200_000), None, "skew {skew}");
        }
        assert_eq!(
            admit(&p, u64::MAX - 10, 0, 1500),
            None,
            "absurd tat saturates, no wrap"
        );
    }

    #[test]
    fn huge_bursts_do_not_overflow() {
        let p = BucketParams::new(1, u64::MAX);
        assert_eq!(p.tau_ns, u64::MAX);
        assert!(admit(&p, 0, 0, 1).is_some());
        let z = BucketParams::new(0, 1_000);
        assert_eq!(admit(&z, 0, 0, 1), None, "a zero rate admits nothing");
    }

    /// Any window `[t0, t1]` admits at most `burst + rate·(t1 − t0)`, and under continuous
    /// overload starting from a full bucket at least that bound minus one packet.
    #[test]
    fn property_windows_respect_the_bound() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        for case in 0..200 {
            let rate = 1_000 + rng.below(50_000_000);
            let burst = MAX_PACKET_BYTES + rng.below(5_000_000);
            let p = BucketParams::new(rate, burst);
            let mut now = rng.below(1 << 40);
            let mut tat = 0u64;
            let mut log: std::vec::Vec<(u64, u64)> = std::vec::Vec::new();
            let overload = case % 2 == 0;
            for _ in 0..2_000 {
                let size = 40 + rng.below(MAX_PACKET_BYTES - 40);
                now += if overload {
                    rng.below(200_000)
                } else {
                    rng.below(50_000_000)
                };
                if let Some(t) = admit(&p, tat, now, size) {
                    tat = t;
                    log.push((now, size));
                }
            }
            // Upper bound, every window starting and ending at admitted packets.
            for i in (0..log.len()).step_by(37) {
                let mut sum: u128 = 0;
                for &(t1, size) in &log[i..] {
                    sum += size as u128;
                    let bound =
                        burst as u128 + (t1 - log[i].0) as u128 * rate as u128 / NS_PER_SEC as u128;
                    assert!(sum <= bound + 1, "case {case}: {sum} > {bound}");
                }
            }
            if overload && let (Some(first), Some(last)) = (log.first(), log.last()) {
                let total: u128 = log.iter().map(|(_, s)| *s as u128).sum();
                let bound =
                    burst as u128 + (last.0 - first.0) as u128 * rate as u128 / NS_PER_SEC as u128;
                assert!(
                    total + MAX_PACKET_BYTES as u128 >= bound,
                    "case {case}: overload admitted {total}, bound {bound}"
                );
            }
        }
    }
}
