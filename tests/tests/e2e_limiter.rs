//! End to end: the tc bandwidth limiter under real TCP transfers between network namespaces,
//! at scaled-down settings (8 MB/s, 16 MB burst) so each transfer takes seconds.
//!
//! Topology ([`LimiterSandbox`]): two containers c1 (172.17.0.2) and c2 (172.17.0.3), each on
//! its own veth to a host namespace that runs netguard and routes to a remote namespace
//! (192.0.2.10). Transfers are [`BulkTransfer`]s: eight parallel TCP flows for 8.5 s, flow `i`'s
//! sender and receiver pinned to CPU `i mod 2` (so both CPUs charge the same bucket), received
//! bytes binned by arrival time (50 ms).
//!
//! A fresh bucket is full: in the first second (from the first arrival) at least the burst
//! arrives, three quarters of it within 250 ms (six times the rate; in practice one to three
//! 50 ms bins, i.e. at line rate).
//!
//! What is measured, per container and direction, over the window 3 s – 8 s (the burst and the
//! first losses long over):
//! - the **frame rate**, by an nftables counter in the receiving namespace (IP bytes + 14 per
//!   packet, which is what the limiter charges: the skb length with the Ethernet header), read
//!   at the window's ends. This is independent of netguard and must be within ±5 % of the
//!   configured rate;
//! - the limiter's own `passed_bytes` over the same window (±5 % too);
//! - the **goodput** the receiving application got. The limiter charges frames, so goodput is
//!   lower by the headers: at least 1448/1514 of the frame bytes (a full-sized segment with
//!   TCP timestamps). It must be within [−5 % of rate × 1448/1514, +5 % of rate]. (Downloads
//!   arrive as single 1514-byte frames, so their goodput sits about 4.4 % under the rate, and a
//!   container's upload also pays for the ACKs of its downloads.)
//!
//! And in every transfer, at every 50 ms step, what arrived is at most `burst + rate × t` (plus
//! one GSO packet): the limiter never admits more than its bucket allows.
//!
//! Each test first shows the same transfers far above the rate without netguard.
//!
//! Needs root, nftables and the daemon binary: `cargo build -p netguard && cargo test -p
//! netguard-tests --test e2e_limiter -- --test-threads=1` (`NETGUARD_BIN` overrides the binary).

use std::{
    fmt::Write as _,
    net::{IpAddr, Ipv4Addr, SocketAddr},
    thread,
    time::{Duration, Instant},
};

use netguard_tests::{
    Daemon, NetNs,
    bulk::{BulkTransfer, Throughput},
    daemon::{READY_TIMEOUT, netguard_bin},
    limiter_sandbox::{
        BucketRow, C1_ADDR, C2_ADDR, LimiterSandbox, MeterCount, Override, REMOTE_ADDR, bucket,
        container_stats, install_meter, ratelimit_toml, read_meter, rewrite_config,
    },
};

const RATE: u64 = 8_000_000;
const RATE_TOML: &str = "8MB/s";
const OVERRIDE_RATE: u64 = 4_000_000;
const OVERRIDE_RATE_TOML: &str = "4MB/s";
const BURST: u64 = 16_000_000;
const BURST_TOML: &str = "16MB";

/// Parallel TCP flows per transfer.
const FLOWS: usize = 8;
/// How long the senders send.
const TRANSFER: Duration = Duration::from_millis(8_500);
/// The steady-state window, from the senders' start: the burst is long spent by then.
const WINDOW: (Duration, Duration) = (Duration::from_secs(3), Duration::from_secs(8));
/// Allowed deviation of the steady rate from the configured one.
const TOLERANCE: f64 = 0.05;
/// Payload share of a full-sized TCP segment's frame (MTU 1500, TCP timestamps): the goodput
/// lower bound for a rate the limiter applies to frames.
const MIN_PAYLOAD_SHARE: f64 = 1448.0 / 1514.0;
/// Slack of the `burst + rate × t` upper bound: one GSO super-packet.
const ONE_PACKET: u64 = 65_536;
/// Unlimited transfers must be at least this many times the configured rate.
const UNLIMITED_FACTOR: f64 = 10.0;

/// One transfer of a test phase, with where to measure it.
struct Leg<'a> {
    /// "c1 (172.17.0.2) upload", for messages.
    what: String,
    sender: &'a NetNs,
    receiver: &'a NetNs,
    /// Where the receiver listens.
    listen: Ipv4Addr,
    /// The container whose bucket this is, and its direction ("upload" / "download").
    container: Ipv4Addr,
    direction: &'static str,
    /// The nftables counter (see [`meters`]) in `receiver` that sees this leg's packets.
    counter: &'static str,
    /// The rate the limiter should hold this bucket to.
    rate: u64,
}

fn upload(sb: &LimiterSandbox, container: Ipv4Addr, rate: u64) -> Leg<'_> {
    let (ns, name) = container_ns(sb, container);
    Leg {
        what: format!("{name} ({container}) upload"),
        sender: ns,
        receiver: &sb.remote,
        listen: REMOTE_ADDR,
        container,
        direction: "upload",
        counter: if name == "c1" { "from_c1" } else { "from_c2" },
        rate,
    }
}

fn download(sb: &LimiterSandbox, container: Ipv4Addr, rate: u64) -> Leg<'_> {
    let (ns, name) = container_ns(sb, container);
    Leg {
        what: format!("{name} ({container}) download"),
        sender: &sb.remote,
        receiver: ns,
        listen: container,
        container,
        direction: "download",
        counter: if name == "c1" { "to_c1" } else { "to_c2" },
        rate,
    }
}

fn container_ns(sb: &LimiterSandbox, container: Ipv4Addr) -> (&NetNs, &'static str) {
    match container {
        C1_ADDR => (&sb.c1, "c1"),
        C2_ADDR => (&sb.c2, "c2"),
        other => panic!("{other} is not a container of the sandbox"),
    }
}

/// Counters of everything arriving from a container at the remote, and at each container.
fn meters(sb: &LimiterSandbox) {
    install_meter(
        &sb.remote,
        &[
            ("from_c1", &format!("ip saddr {C1_ADDR}")),
            ("from_c2", &format!("ip saddr {C2_ADDR}")),
        ],
    );
    install_meter(&sb.c1, &[("to_c1", &format!("ip daddr {C1_ADDR}"))]);
    install_meter(&sb.c2, &[("to_c2", &format!("ip daddr {C2_ADDR}"))]);
}

/// One leg's results.
struct Measured {
    what: String,
    rate: u64,
    goodput: Throughput,
    /// Frame bytes per second by the nftables meter over the window.
    wire_rate: f64,
    wire_secs: f64,
    /// `passed_bytes` per second of the leg's bucket over the window, and its drops.
    limiter_rate: f64,
    limiter_dropped_packets: u64,
    /// The bucket's tokens at the window's start and end.
    tokens: (u64, u64),
}

impl Measured {
    fn steady_goodput(&self) -> f64 {
        self.goodput.rate(WINDOW.0, WINDOW.1)
    }

    /// When the first bytes arrived: the burst is timed from there, so a scheduling hiccup
    /// before the first packet (seen once: 500 ms of nothing, also without netguard) does not
    /// count against the limiter.
    fn first_arrival(&self) -> Duration {
        self.goodput.first_arrival().unwrap_or_default()
    }

    /// Bytes in the first second from the first arrival.
    fn first_second(&self) -> u64 {
        let from = self.first_arrival();
        self.goodput.bytes(from, from + Duration::from_secs(1))
    }

    /// How long after the first arrival `bytes` had arrived in total.
    fn time_to(&self, bytes: u64) -> Option<Duration> {
        self.goodput
            .time_to(bytes)
            .map(|t| t.saturating_sub(self.first_arrival()))
    }

    fn report(&self) -> String {
        let ms =
            |d: Option<Duration>| d.map_or("never".into(), |d| format!("{} ms", d.as_millis()));
        format!(
            "{}: configured {:.2} MB/s; window {:.1}-{:.1} s: frames {:.3} MB/s ({:+.2} %, nft, {:.2} s), \
             limiter passed {:.3} MB/s ({:+.2} %), goodput {:.3} MB/s ({:+.2} %); \
             tokens {} -> {}, {} drops; first second {:.2} MB, 3/4 burst after {}, burst after {}\n  goodput {}",
            self.what,
            self.rate as f64 / 1e6,
            WINDOW.0.as_secs_f64(),
            WINDOW.1.as_secs_f64(),
            self.wire_rate / 1e6,
            pct(self.wire_rate, self.rate),
            self.wire_secs,
            self.limiter_rate / 1e6,
            pct(self.limiter_rate, self.rate),
            self.steady_goodput() / 1e6,
            pct(self.steady_goodput(), self.rate),
            self.tokens.0,
            self.tokens.1,
            self.limiter_dropped_packets,
            self.first_second() as f64 / 1e6,
            ms(self.time_to(BURST * 3 / 4)),
            ms(self.time_to(BURST)),
            self.goodput.profile(Duration::from_millis(500)),
        )
    }
}

fn pct(measured: f64, configured: u64) -> f64 {
    (measured / configured as f64 - 1.0) * 100.0
}

/// A reading of the meters and the limiter at one instant (the midpoint of each read).
struct Sample {
    meter: Vec<(Instant, MeterCount)>,
    limiter_at: Instant,
    limiter: Vec<BucketRow>,
}

fn sample(daemon: &Daemon, legs: &[Leg<'_>]) -> Sample {
    let meter = legs
        .iter()
        .map(|leg| {
            let before = Instant::now();
            let counts = read_meter(leg.receiver);
            let at = before + before.elapsed() / 2;
            let count = *counts
                .get(leg.counter)
                .unwrap_or_else(|| panic!("no meter counter {}: {counts:?}", leg.counter));
            (at, count)
        })
        .collect();
    let before = Instant::now();
    let limiter = container_stats(daemon);
    Sample {
        meter,
        limiter_at: before + before.elapsed() / 2,
        limiter,
    }
}

/// Runs every leg at once for [`TRANSFER`], reading the meters and the limiter at both ends of
/// [`WINDOW`].
fn run(daemon: &Daemon, legs: &[Leg<'_>]) -> Vec<Measured> {
    let transfers: Vec<BulkTransfer> = legs
        .iter()
        .map(|leg| {
            BulkTransfer::start(
                leg.sender,
                leg.receiver,
                SocketAddr::new(IpAddr::V4(leg.listen), 0),
                FLOWS,
                TRANSFER,
            )
            .unwrap_or_else(|e| panic!("{}: starting the transfer: {e}", leg.what))
        })
        .collect();
    let t0 = transfers[0].start_time();
    let at = |d: Duration| thread::sleep((t0 + d).saturating_duration_since(Instant::now()));
    at(WINDOW.0);
    let start = sample(daemon, legs);
    at(WINDOW.1);
    let end = sample(daemon, legs);
    let results: Vec<Throughput> = transfers.into_iter().map(BulkTransfer::wait).collect();
    legs.iter()
        .zip(results)
        .enumerate()
        .map(|(i, (leg, goodput))| {
            let (t_a, m_a) = start.meter[i];
            let (t_b, m_b) = end.meter[i];
            let wire_secs = (t_b - t_a).as_secs_f64();
            let row = |s: &Sample| {
                bucket(&s.limiter, leg.container, leg.direction)
                    .cloned()
                    .unwrap_or_else(|| {
                        panic!(
                            "{}: no {} bucket of {} in `stats --containers`: {:?}",
                            leg.what, leg.direction, leg.container, s.limiter
                        )
                    })
            };
            let (r_a, r_b) = (row(&start), row(&end));
            let limiter_secs = (end.limiter_at - start.limiter_at).as_secs_f64();
            Measured {
                what: leg.what.clone(),
                rate: leg.rate,
                goodput,
                wire_rate: (m_b.frame_bytes() - m_a.frame_bytes()) as f64 / wire_secs,
                wire_secs,
                limiter_rate: (r_b.passed_bytes - r_a.passed_bytes) as f64 / limiter_secs,
                limiter_dropped_packets: r_b.dropped_packets - r_a.dropped_packets,
                tokens: (r_a.tokens, r_b.tokens),
            }
        })
        .collect()
}

/// Problems with a steady state held at `m.rate`, and with the `burst + rate × t` bound.
fn steady_problems(m: &Measured) -> Vec<String> {
    let mut problems = Vec::new();
    let rate = m.rate as f64;
    let within = |x: f64| (x - rate).abs() <= TOLERANCE * rate;
    if !within(m.wire_rate) {
        problems.push(format!(
            "{}: frame rate {:.3} MB/s is not within ±5 % of {:.2} MB/s",
            m.what,
            m.wire_rate / 1e6,
            rate / 1e6
        ));
    }
    if !within(m.limiter_rate) {
        problems.push(format!(
            "{}: the limiter's passed_bytes grew by {:.3} MB/s, not within ±5 % of {:.2} MB/s",
            m.what,
            m.limiter_rate / 1e6,
            rate / 1e6
        ));
    }
    let goodput = m.steady_goodput();
    let (low, high) = (
        (1.0 - TOLERANCE) * rate * MIN_PAYLOAD_SHARE,
        (1.0 + TOLERANCE) * rate,
    );
    if !(low..=high).contains(&goodput) {
        problems.push(format!(
            "{}: goodput {:.3} MB/s is outside [{:.3}, {:.3}] MB/s",
            m.what,
            goodput / 1e6,
            low / 1e6,
            high / 1e6
        ));
    }
    // Goodput is at most the frames the limiter let through: never above burst + rate × t.
    for (t, got) in m.goodput.cumulative() {
        let bound = BURST + (m.rate as f64 * t.as_secs_f64()) as u64 + ONE_PACKET;
        if got > bound {
            problems.push(format!(
                "{}: {got} bytes arrived within {} ms, more than burst + rate × t = {bound}",
                m.what,
                t.as_millis()
            ));
            break;
        }
    }
    problems
}

/// Problems with a fresh (full) bucket's first second: the burst goes through at line rate.
fn burst_problems(m: &Measured) -> Vec<String> {
    let mut problems = Vec::new();
    let first = m.first_second();
    if first < BURST {
        problems.push(format!(
            "{}: only {first} bytes in the first second; a full bucket lets {BURST} through at once",
            m.what
        ));
    }
    // Three quarters of the burst within 250 ms: 48 MB/s, six times the rate.
    match m.time_to(BURST * 3 / 4) {
        Some(t) if t <= Duration::from_millis(250) => {}
        t => problems.push(format!(
            "{}: 3/4 of the burst took {t:?}; expected at most 250 ms (line rate)",
            m.what
        )),
    }
    problems
}

/// Panics with every problem and every measurement if there is any problem.
fn verdict(phase: &str, measured: &[Measured], problems: Vec<String>, daemon: &Daemon) {
    let mut report = String::new();
    for m in measured {
        let _ = writeln!(report, "  {}", m.report());
    }
    eprintln!("{phase}:\n{report}");
    if !problems.is_empty() {
        panic!(
            "{phase}:\n- {}\nmeasurements:\n{report}limiter buckets now: {:?}\nXDP counters: {}",
            problems.join("\n- "),
            container_stats(daemon),
            daemon.stats().raw
        );
    }
}

/// Transfers without netguard: far above the rate, or the limits below prove nothing.
fn assert_unlimited(legs: &[(&str, &NetNs, &NetNs, Ipv4Addr)]) {
    for (what, sender, receiver, listen) in legs {
        let t = BulkTransfer::start(
            sender,
            receiver,
            SocketAddr::new(IpAddr::V4(*listen), 0),
            FLOWS,
            Duration::from_secs(1),
        )
        .unwrap_or_else(|e| panic!("{what} without netguard: {e}"))
        .wait();
        let rate = t.rate(Duration::ZERO, Duration::from_secs(1));
        eprintln!(
            "{what} without netguard: {:.1} MB/s ({})",
            rate / 1e6,
            t.profile(Duration::from_millis(250))
        );
        assert!(
            rate >= UNLIMITED_FACTOR * RATE as f64,
            "{what} without netguard: {:.1} MB/s, not ≥ {UNLIMITED_FACTOR} × the rate: the limiter tests would prove nothing",
            rate / 1e6
        );
    }
}

fn start_daemon(sb: &LimiterSandbox, ratelimit: &str) -> (Daemon, netguard_tests::Config) {
    let cfg = sb.config(ratelimit);
    let daemon = Daemon::start_toml(
        &netguard_bin(),
        &sb.host,
        &cfg.pin_path,
        &cfg.to_toml(),
        READY_TIMEOUT,
    );
    (daemon, cfg)
}

/// The XDP filter on the uplink must not have dropped anything (container traffic is not
/// guarded); a drop there would distort every number above.
fn assert_no_xdp_drops(daemon: &Daemon) {
    let stats = daemon.stats();
    for reason in [
        "denylisted",
        "port_closed",
        "protocol",
        "fragment",
        "malformed",
        "ipv6",
    ] {
        assert_eq!(
            stats.packets(reason),
            0,
            "XDP dropped packets as {reason}: {}",
            stats.raw
        );
    }
}

#[test]
fn upload_and_download_are_limited_independently() {
    let sb = LimiterSandbox::new();
    meters(&sb);
    assert_unlimited(&[
        ("c1 upload", &sb.c1, &sb.remote, REMOTE_ADDR),
        ("c1 download", &sb.remote, &sb.c1, C1_ADDR),
    ]);
    let (daemon, _cfg) = start_daemon(
        &sb,
        &ratelimit_toml(&sb.container_interfaces(), RATE_TOML, BURST_TOML, &[]),
    );

    // Upload alone, from a fresh bucket: the burst at once, then the rate.
    let up = run(&daemon, &[upload(&sb, C1_ADDR, RATE)]);
    let mut problems = burst_problems(&up[0]);
    problems.extend(steady_problems(&up[0]));
    verdict("c1 uploads alone", &up, problems, &daemon);

    // Download alone, from its own fresh bucket: the upload used none of it.
    let down = run(&daemon, &[download(&sb, C1_ADDR, RATE)]);
    let mut problems = burst_problems(&down[0]);
    problems.extend(steady_problems(&down[0]));
    verdict("c1 downloads alone", &down, problems, &daemon);

    // Both at once: one shared bucket would hold each to half the rate.
    let both = run(
        &daemon,
        &[upload(&sb, C1_ADDR, RATE), download(&sb, C1_ADDR, RATE)],
    );
    let problems = both.iter().flat_map(steady_problems).collect();
    verdict("c1 uploads and downloads at once", &both, problems, &daemon);

    assert_no_xdp_drops(&daemon);
}

#[test]
fn containers_are_limited_independently_and_an_override_applies_on_reload() {
    let sb = LimiterSandbox::new();
    meters(&sb);
    assert_unlimited(&[
        ("c1 upload", &sb.c1, &sb.remote, REMOTE_ADDR),
        ("c2 upload", &sb.c2, &sb.remote, REMOTE_ADDR),
    ]);
    let interfaces = sb.container_interfaces();
    let (mut daemon, mut cfg) = start_daemon(
        &sb,
        &ratelimit_toml(&interfaces, RATE_TOML, BURST_TOML, &[]),
    );

    // Both containers at once, each from its own full bucket: each gets the whole rate.
    let both = run(
        &daemon,
        &[upload(&sb, C1_ADDR, RATE), upload(&sb, C2_ADDR, RATE)],
    );
    let mut problems: Vec<String> = both.iter().flat_map(burst_problems).collect();
    problems.extend(both.iter().flat_map(steady_problems));
    verdict("c1 and c2 upload at once", &both, problems, &daemon);

    // c2 gets 4 MB/s (same burst) by a reload; c1 keeps the default.
    let c2 = C2_ADDR.to_string();
    cfg.extra = ratelimit_toml(
        &interfaces,
        RATE_TOML,
        BURST_TOML,
        &[Override {
            address: &c2,
            rate: Some(OVERRIDE_RATE_TOML),
            burst: None,
        }],
    );
    rewrite_config(&daemon, &cfg.to_toml());
    daemon.signal(libc::SIGHUP);
    daemon
        .wait_for_log("config reloaded", Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("SIGHUP with a c2 override: {e}"));
    let rows = container_stats(&daemon);
    let params = |addr| {
        bucket(&rows, addr, "upload")
            .map(|r| (r.rate, r.burst))
            .unwrap_or_else(|| panic!("no upload bucket of {addr}: {rows:?}"))
    };
    assert_eq!(
        params(C2_ADDR),
        (OVERRIDE_RATE, BURST),
        "c2's bucket after the reload"
    );
    assert_eq!(
        params(C1_ADDR),
        (RATE, BURST),
        "c1's bucket after the reload"
    );

    let after = run(
        &daemon,
        &[
            upload(&sb, C1_ADDR, RATE),
            upload(&sb, C2_ADDR, OVERRIDE_RATE),
        ],
    );
    let problems = after.iter().flat_map(steady_problems).collect();
    verdict(
        "c1 and c2 upload at once after the c2 override (4 MB/s)",
        &after,
        problems,
        &daemon,
    );

    assert_no_xdp_drops(&daemon);
}
