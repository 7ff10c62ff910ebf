//! Config → map entries, as plain functions tested without a kernel.

use std::{collections::HashSet, hash::Hash};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use netguard_common::bucket::BucketParams;
use netguard_common::limiter::{LimiterConfig, OverrideKey};
use netguard_common::policy::{
    FLAG_AUDIT, FLAG_HAS_DENY_V4, FLAG_HAS_DENY_V6, FLAG_HAS_TRUSTED_V4, FLAG_HAS_TRUSTED_V6,
    FLAG_ICMP_ESSENTIAL, FLAG_IPV6_FILTER, FilterConfig,
};
#[cfg(test)]
use netguard_common::policy::{FLAG_TRUSTED_INLINE, MAX_TRUSTED_INLINE_V4};

use crate::{
    config::{Action, Config, IcmpMode, Ipv6Mode, RatelimitConfig},
    denylist::Denylist,
};

/// Everything the maps must hold for one config: the single policy value and the prefix sets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MapPlan {
    pub filter: FilterConfig,
    pub deny_v4: Vec<Ipv4Net>,
    pub deny_v6: Vec<Ipv6Net>,
    pub trusted_v4: Vec<Ipv4Net>,
    pub trusted_v6: Vec<Ipv6Net>,
    pub limiter: LimiterPlan,
}

/// The limiter's map contents: defaults and ranges, and one entry per override.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LimiterPlan {
    pub config: LimiterConfig,
    pub overrides: Vec<(OverrideKey, BucketParams)>,
}

pub fn limiter_plan(r: &RatelimitConfig) -> LimiterPlan {
    let mut config = LimiterConfig::EMPTY;
    config.default = BucketParams::new(r.rate.0, r.burst.0);
    for net in &r.container_cidrs {
        // validate() bounds the ranges, so `add_*` cannot refuse here.
        match net {
            IpNet::V4(n) => config
                .containers
                .add_v4(n.network().octets(), n.prefix_len()),
            IpNet::V6(n) => config
                .containers
                .add_v6(n.network().octets(), n.prefix_len()),
        };
    }
    let overrides = r
        .container
        .iter()
        .map(|c| {
            let rate = c.rate.unwrap_or(r.rate).0;
            let burst = c.burst.unwrap_or(r.burst).0;
            (override_key(c.address), BucketParams::new(rate, burst))
        })
        .collect::<Vec<_>>();
    // validate() caps the overrides at the map's capacity (65,536).
    config.overrides = overrides.len() as u32;
    LimiterPlan { config, overrides }
}

/// The limiter's key for an address: IPv6, or IPv4-mapped IPv6.
pub fn override_key(addr: std::net::IpAddr) -> OverrideKey {
    match addr {
        std::net::IpAddr::V4(a) => a.to_ipv6_mapped().octets(),
        std::net::IpAddr::V6(a) => a.octets(),
    }
}

/// Builds the plan. The config must have passed `validate()` (ingress table sizes, ports).
pub fn plan(config: &Config, denylist: &Denylist) -> MapPlan {
    let (trusted_v4, trusted_v6) = split(&config.xdp.trusted_sources);
    let mut filter = filter_config(config, denylist, &trusted_v4, &trusted_v6);
    inline_trusted(&mut filter, &trusted_v4, &trusted_v6);
    MapPlan {
        filter,
        deny_v4: denylist.v4.clone(),
        deny_v6: denylist.v6.clone(),
        trusted_v4,
        trusted_v6,
        limiter: limiter_plan(&config.ratelimit),
    }
}

fn filter_config(
    config: &Config,
    deny: &Denylist,
    trusted_v4: &[Ipv4Net],
    trusted_v6: &[Ipv6Net],
) -> FilterConfig {
    let x = &config.xdp;
    let mut f = FilterConfig::EMPTY;
    for port in &x.allowed_tcp_ports {
        f.allow_tcp_port(*port);
    }
    for net in &x.ingress_addresses {
        // validate() bounds the table, so `add_*` cannot refuse here.
        match net {
            IpNet::V4(n) => f.ingress.add_v4(n.network().octets(), n.prefix_len()),
            IpNet::V6(n) => f.ingress.add_v6(n.network().octets(), n.prefix_len()),
        };
    }
    let flag = |on: bool, bit: u32| if on { bit } else { 0 };
    f.flags = flag(x.action == Action::Audit, FLAG_AUDIT)
        | flag(x.icmp == IcmpMode::Essential, FLAG_ICMP_ESSENTIAL)
        | flag(x.ipv6 == Ipv6Mode::Filter, FLAG_IPV6_FILTER)
        | flag(!deny.v4.is_empty(), FLAG_HAS_DENY_V4)
        | flag(!deny.v6.is_empty(), FLAG_HAS_DENY_V6)
        | flag(!trusted_v4.is_empty(), FLAG_HAS_TRUSTED_V4)
        | flag(!trusted_v6.is_empty(), FLAG_HAS_TRUSTED_V6);
    f.flow_timeout_tcp_ns = x.flow_timeout_tcp_secs.saturating_mul(1_000_000_000);
    f.flow_timeout_other_ns = x.flow_timeout_udp_secs.saturating_mul(1_000_000_000);
    f
}

/// Puts the trusted lists into the policy value when they fit
/// (`FilterConfig::set_trusted_inline`), so the filter compares a few words instead of looking
/// up the trusted tries; longer lists stay in the tries only.
pub fn inline_trusted(f: &mut FilterConfig, v4: &[Ipv4Net], v6: &[Ipv6Net]) {
    let v4: Vec<([u8; 4], u8)> = v4
        .iter()
        .map(|n| (n.network().octets(), n.prefix_len()))
        .collect();
    let v6: Vec<([u8; 16], u8)> = v6
        .iter()
        .map(|n| (n.network().octets(), n.prefix_len()))
        .collect();
    f.set_trusted_inline(&v4, &v6);
}

pub fn split(nets: &[IpNet]) -> (Vec<Ipv4Net>, Vec<Ipv6Net>) {
    let mut v4 = Vec::new();
    let mut v6 = Vec::new();
    for n in nets {
        match n {
            IpNet::V4(n) => v4.push(n.trunc()),
            IpNet::V6(n) => v6.push(n.trunc()),
        }
    }
    v4.sort_unstable();
    v4.dedup();
    v6.sort_unstable();
    v6.dedup();
    (v4, v6)
}

/// What to change to get from `current` to `desired`: additions first, so an entry that stays
/// never blinks out, then removals.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diff<T> {
    pub add: Vec<T>,
    pub remove: Vec<T>,
}

pub fn diff<T: Eq + Hash + Clone>(current: &HashSet<T>, desired: &[T]) -> Diff<T> {
    let wanted: HashSet<&T> = desired.iter().collect();
    Diff {
        add: desired
            .iter()
            .filter(|d| !current.contains(*d))
            .cloned()
            .collect(),
        remove: current
            .iter()
            .filter(|c| !wanted.contains(c))
            .cloned()
            .collect(),
    }
}

/// [`diff`] of two sorted, duplicate-free lists by one merge walk: no hashing, which matters
/// when a reload compares a million-entry denylist with the one it wrote last time.
pub fn diff_sorted<T: Ord + Clone>(current: &[T], desired: &[T]) -> Diff<T> {
    let (mut add, mut remove) = (Vec::new(), Vec::new());
    let (mut c, mut d) = (current.iter().peekable(), desired.iter().peekable());
    loop {
        match (c.peek(), d.peek()) {
            (Some(x), Some(y)) => match x.cmp(y) {
                std::cmp::Ordering::Less => remove.extend(c.next().cloned()),
                std::cmp::Ordering::Greater => add.extend(d.next().cloned()),
                std::cmp::Ordering::Equal => {
                    c.next();
                    d.next();
                }
            },
            (Some(_), None) => remove.extend(c.next().cloned()),
            (None, Some(_)) => add.extend(d.next().cloned()),
            (None, None) => return Diff { add, remove },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use netguard_common::{golden, packet::Addr};

    fn config(toml: &str) -> Config {
        Config::from_toml_str(toml, "<test>").expect("valid config")
    }

    #[test]
    fn defaults_allow_80_and_443_and_guard_everything() {
        let c = config("[xdp]\ninterface = \"eth0\"\n");
        let p = plan(&c, &Denylist::default());
        assert!(p.filter.tcp_port_allowed(80));
        assert!(p.filter.tcp_port_allowed(443));
        assert!(!p.filter.tcp_port_allowed(22));
        assert!(p.filter.is_guarded(&Addr::v4([8, 8, 8, 8])));
        assert!(p.filter.has(FLAG_ICMP_ESSENTIAL));
        assert!(!p.filter.has(FLAG_AUDIT));
        assert!(!p.filter.has(FLAG_IPV6_FILTER));
        assert_eq!(p.filter.flags & (FLAG_HAS_DENY_V4 | FLAG_HAS_TRUSTED_V4), 0);
        assert_eq!(p.filter.flow_timeout_tcp_ns, 600_000_000_000);
        assert!(
            p.filter.has(FLAG_TRUSTED_INLINE),
            "an empty list fits inline"
        );
    }

    #[test]
    fn long_trusted_lists_stay_in_the_tries() {
        let many: Vec<String> = (0..=MAX_TRUSTED_INLINE_V4)
            .map(|i| format!("\"192.0.2.{i}/32\""))
            .collect();
        let c = config(&format!(
            "[xdp]\ninterface = \"eth0\"\ntrusted_sources = [{}]\n",
            many.join(", ")
        ));
        let p = plan(&c, &Denylist::default());
        assert!(!p.filter.has(FLAG_TRUSTED_INLINE));
        assert!(p.filter.has(FLAG_HAS_TRUSTED_V4));
        assert_eq!(p.trusted_v4.len(), MAX_TRUSTED_INLINE_V4 + 1);
        let few = config("[xdp]\ninterface = \"eth0\"\ntrusted_sources = [\"192.0.2.0/24\"]\n");
        let p = plan(&few, &Denylist::default());
        assert!(p.filter.has(FLAG_TRUSTED_INLINE));
        assert!(p.filter.trusted.contains(&Addr::v4([192, 0, 2, 77])));
    }

    #[test]
    fn fixture_config_matches_golden_fixture() {
        // The same policy the golden packets are judged under, written as an operator would.
        let c = config(
            r#"
            [xdp]
            interface = "eth0"
            allowed_tcp_ports = [80, 443]
            ingress_addresses = ["203.0.113.10/32", "2001:db8::10/128"]
            trusted_sources = ["192.0.2.50/32"]
            [denylist]
            cidrs = ["198.51.100.0/24", "2001:db8:bad::/48"]
            "#,
        );
        let deny = Denylist {
            v4: vec!["198.51.100.0/24".parse().expect("cidr")],
            v6: vec!["2001:db8:bad::/48".parse().expect("cidr")],
            ..Default::default()
        };
        let p = plan(&c, &deny);
        let mut expected = golden::fixture_config(golden::DEFAULT_MODE);
        assert!(expected.set_trusted_inline(&golden::TRUSTED_V4, &[]));
        expected.flow_timeout_tcp_ns = p.filter.flow_timeout_tcp_ns;
        expected.flow_timeout_other_ns = p.filter.flow_timeout_other_ns;
        assert_eq!(p.filter, expected);
        assert_eq!(
            p.trusted_v4,
            vec!["192.0.2.50/32".parse::<Ipv4Net>().expect("cidr")]
        );
    }

    #[test]
    fn audit_and_modes() {
        let c = config(
            "[xdp]\ninterface = \"eth0\"\naction = \"audit\"\nicmp = \"drop\"\nipv6 = \"filter\"\n",
        );
        let f = plan(&c, &Denylist::default()).filter;
        assert!(f.has(FLAG_AUDIT));
        assert!(!f.has(FLAG_ICMP_ESSENTIAL));
        assert!(f.has(FLAG_IPV6_FILTER));
    }

    #[test]
    fn limiter_plan_from_config() {
        let c = config(
            r#"
            [xdp]
            interface = "eth0"
            [ratelimit]
            interfaces = ["docker0"]
            rate = "8MB/s"
            burst = "16MB"
            [[ratelimit.container]]
            address = "172.17.0.9"
            rate = "16MB/s"
            "#,
        );
        let p = limiter_plan(&c.ratelimit);
        assert_eq!(p.config.default, BucketParams::new(8_000_000, 16_000_000));
        // The count that makes the program look overrides up at all.
        assert_eq!(p.config.overrides, 1);
        assert!(p.config.is_container(&Addr::v4([172, 17, 3, 4])));
        assert!(!p.config.is_container(&Addr::v4([10, 0, 0, 1])));
        assert_eq!(
            p.overrides,
            vec![(
                override_key("172.17.0.9".parse().expect("ip")),
                BucketParams::new(16_000_000, 16_000_000)
            )]
        );
        assert_eq!(
            &override_key("172.17.0.9".parse().expect("ip"))[10..],
            &[0xff, 0xff, 172, 17, 0, 9]
        );
    }

    #[test]
    fn diff_adds_before_removing() {
        let current: HashSet<u32> = [1, 2, 3].into_iter().collect();
        let sorted = diff_sorted(&[1, 2, 3], &[2, 3, 4, 5]);
        assert_eq!((sorted.add, sorted.remove), (vec![4, 5], vec![1]));
        let both_empty = diff_sorted::<u8>(&[], &[]);
        assert!(both_empty.add.is_empty() && both_empty.remove.is_empty());
        let mut d = diff(&current, &[2, 3, 4, 5]);
        d.remove.sort_unstable();
        assert_eq!(d.add, vec![4, 5]);
        assert_eq!(d.remove, vec![1]);
        let same = diff(&current, &[3, 2, 1]);
        assert!(same.add.is_empty() && same.remove.is_empty());
    }
}
