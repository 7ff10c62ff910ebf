//! `/metrics`: everything netguard counts, in the Prometheus text format (version 0.0.4).
//!
//! The kernel's counters are read from the pinned maps at every scrape, through the same
//! [`Tables`] and [`crate::stats`] code `netguard stats` uses, so the endpoint and the CLI never
//! disagree. The proxy's and the reloads' counters live in the daemon. Rendering is a pure
//! function of a [`Readings`], so the format is unit-tested without a kernel.

use std::fmt::Write as _;

use netguard_common::{private_net::PnReason, reason::Counter, reason::Reason};

use crate::{
    paths::PinPaths,
    proxy::metrics::{AppReading, DURATION_BUCKETS, STATUS_CLASSES},
    stats::{ContainerRow, Snapshot},
    tables::Tables,
};

/// The content type of the text format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The version `netguard --version` prints.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The commit the binary was built from, when the build set `NETGUARD_GIT_SHA`
/// (`NETGUARD_GIT_SHA=$(git rev-parse HEAD) cargo build --release`).
pub const GIT_SHA: &str = match option_env!("NETGUARD_GIT_SHA") {
    Some(sha) => sha,
    None => "unknown",
};

/// What the kernel's pinned maps hold now.
#[derive(Debug, Clone, Default)]
pub struct KernelReadings {
    pub xdp: Option<Snapshot>,
    pub containers: Vec<ContainerRow>,
    pub private: Vec<Counter>,
    /// Why the maps could not be read, when they could not.
    pub error: Option<String>,
}

impl KernelReadings {
    /// Reads the filter's, the limiter's and the private networks' counters pinned at `paths`.
    pub fn read(paths: &PinPaths) -> KernelReadings {
        let read = || -> Result<KernelReadings, crate::tables::TableError> {
            let tables = Tables::open_pinned(paths)?;
            let xdp = Snapshot::new(&tables.filter_config()?, tables.counters()?);
            let defaults = tables.limiter_config()?;
            let now = crate::stats::monotonic_ns();
            let containers = tables
                .buckets()?
                .iter()
                .map(|(key, state)| {
                    ContainerRow::new(key, state, &tables.limiter_params(key, &defaults), now)
                })
                .collect();
            Ok(KernelReadings {
                xdp: Some(xdp),
                containers,
                private: tables.private_counters()?,
                error: None,
            })
        };
        read().unwrap_or_else(|e| KernelReadings {
            error: Some(e.to_string()),
            ..KernelReadings::default()
        })
    }
}

/// The proxy's counters at one moment.
#[derive(Debug, Clone, Default)]
pub struct ProxyReadings {
    pub apps: Vec<(String, AppReading)>,
    pub open_connections: u32,
    /// Client connections open on each proxy worker.
    pub open_per_worker: Vec<usize>,
    pub refused: u64,
    pub ejections: u64,
}

/// Config reloads since the daemon started.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ReloadReadings {
    pub successes: u64,
    pub failures: u64,
    /// Unix time of the last successful reload (or of the start), seconds.
    pub last_success_unix: f64,
    /// How long the last reload (successful or not) took.
    pub last_duration_seconds: f64,
}

/// Everything one scrape renders.
#[derive(Debug, Clone, Default)]
pub struct Readings {
    pub kernel: KernelReadings,
    /// `None` without a `[proxy]`.
    pub proxy: Option<ProxyReadings>,
    pub reloads: ReloadReadings,
    pub ready: bool,
}

/// A text-format writer: a family's `# HELP` and `# TYPE` once, then its samples.
struct Exposition(String);

impl Exposition {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.0, "# HELP {name} {help}");
        let _ = writeln!(self.0, "# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl Into<Value>) {
        self.0.push_str(name);
        if !labels.is_empty() {
            self.0.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.0.push(',');
                }
                self.0.push_str(k);
                self.0.push_str("=\"");
                escape_label(&mut self.0, v);
                self.0.push('"');
            }
            self.0.push('}');
        }
        let _ = match value.into() {
            Value::Int(v) => writeln!(self.0, " {v}"),
            Value::Float(v) => writeln!(self.0, " {}", float(v)),
        };
    }
}

enum Value {
    Int(u64),
    Float(f64),
}

impl From<u64> for Value {
    fn from(v: u64) -> Self {
        Value::Int(v)
    }
}

impl From<f64> for Value {
    fn from(v: f64) -> Self {
        Value::Float(v)
    }
}

fn float(v: f64) -> String {
    if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.to_owned()
    } else {
        format!("{v}")
    }
}

/// Label values escape `\`, `"` and newlines (the format's only escapes).
fn escape_label(out: &mut String, v: &str) {
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

/// The whole exposition.
pub fn render(r: &Readings) -> String {
    let mut e = Exposition(String::with_capacity(16 * 1024));
    e.family(
        "netguard_build_info",
        "gauge",
        "Version and commit of the running binary.",
    );
    e.sample(
        "netguard_build_info",
        &[("version", VERSION), ("git_sha", GIT_SHA)],
        1u64,
    );
    e.family(
        "netguard_ready",
        "gauge",
        "1 when every program is attached and the proxy listens (what /readyz answers).",
    );
    e.sample("netguard_ready", &[], u64::from(r.ready));
    render_kernel(&mut e, &r.kernel);
    if let Some(p) = &r.proxy {
        render_proxy(&mut e, p);
    }
    render_reloads(&mut e, &r.reloads);
    e.0
}

fn render_kernel(e: &mut Exposition, k: &KernelReadings) {
    e.family(
        "netguard_pinned_maps_up",
        "gauge",
        "1 when the pinned maps could be read for this scrape.",
    );
    e.sample("netguard_pinned_maps_up", &[], u64::from(k.error.is_none()));
    if let Some(xdp) = &k.xdp {
        e.family(
            "netguard_xdp_audit_mode",
            "gauge",
            "1 when the filter only counts would-be drops (xdp.action = \"audit\").",
        );
        e.sample("netguard_xdp_audit_mode", &[], u64::from(xdp.audit));
        for (unit, pick) in [
            ("packets", (|c: Counter| c.packets) as fn(Counter) -> u64),
            ("bytes", |c: Counter| c.bytes),
        ] {
            let name = format!("netguard_xdp_{unit}_total");
            e.family(
                &name,
                "counter",
                &format!("XDP decisions by reason, in {unit} (frame length as XDP sees it)."),
            );
            for reason in Reason::ALL {
                let verdict = if reason.drops() { "drop" } else { "pass" };
                e.sample(
                    &name,
                    &[("reason", reason.name()), ("verdict", verdict)],
                    pick(xdp.taken(reason)),
                );
            }
            let name = format!("netguard_xdp_would_drop_{unit}_total");
            e.family(
                &name,
                "counter",
                &format!("Packets audit mode passed but enforce mode would drop, in {unit}."),
            );
            for reason in Reason::ALL.into_iter().filter(|r| r.drops()) {
                e.sample(
                    &name,
                    &[("reason", reason.name())],
                    pick(xdp.would_drop(reason)),
                );
            }
        }
        for (unit, passed, dropped) in [
            (
                "packets",
                (|c: &ContainerRow| c.passed_packets) as fn(&ContainerRow) -> u64,
                (|c: &ContainerRow| c.dropped_packets) as fn(&ContainerRow) -> u64,
            ),
            ("bytes", |c| c.passed_bytes, |c| c.dropped_bytes),
        ] {
            let name = format!("netguard_limiter_{unit}_total");
            e.family(
                &name,
                "counter",
                &format!("Rate limiter decisions per container and direction, in {unit}."),
            );
            for c in &k.containers {
                let address = c.address.to_string();
                for (result, value) in [("passed", passed(c)), ("dropped", dropped(c))] {
                    e.sample(
                        &name,
                        &[
                            ("container", &address),
                            ("direction", c.direction),
                            ("result", result),
                        ],
                        value,
                    );
                }
            }
        }
        for (unit, pick) in [
            ("packets", (|c: &Counter| c.packets) as fn(&Counter) -> u64),
            ("bytes", |c: &Counter| c.bytes),
        ] {
            let name = format!("netguard_private_network_{unit}_total");
            e.family(
                &name,
                "counter",
                &format!("Private-network isolation decisions by reason, in {unit}."),
            );
            for (reason, c) in PnReason::ALL.iter().zip(&k.private) {
                let verdict = if *reason == PnReason::Passed {
                    "pass"
                } else {
                    "drop"
                };
                e.sample(
                    &name,
                    &[("reason", reason.name()), ("verdict", verdict)],
                    pick(c),
                );
            }
        }
    }
}

fn render_proxy(e: &mut Exposition, p: &ProxyReadings) {
    e.family(
        "netguard_proxy_requests_total",
        "counter",
        "Finished proxy requests by app (\"-\": no app matched) and status class.",
    );
    for (app, r) in &p.apps {
        for (class, n) in STATUS_CLASSES.iter().zip(r.by_class) {
            e.sample(
                "netguard_proxy_requests_total",
                &[("app", app), ("code", class)],
                n,
            );
        }
    }
    e.family(
        "netguard_proxy_request_duration_seconds",
        "histogram",
        "Time from a request's first byte to its last response byte, by app.",
    );
    for (app, r) in &p.apps {
        let bounds = DURATION_BUCKETS.iter().map(|b| float(*b));
        for (le, n) in bounds.chain(["+Inf".to_owned()]).zip(r.cumulative) {
            e.sample(
                "netguard_proxy_request_duration_seconds_bucket",
                &[("app", app), ("le", &le)],
                n,
            );
        }
        e.sample(
            "netguard_proxy_request_duration_seconds_sum",
            &[("app", app)],
            r.sum_seconds,
        );
        e.sample(
            "netguard_proxy_request_duration_seconds_count",
            &[("app", app)],
            r.count(),
        );
    }
    e.family(
        "netguard_proxy_client_connections",
        "gauge",
        "Client connections open now.",
    );
    e.sample(
        "netguard_proxy_client_connections",
        &[],
        u64::from(p.open_connections),
    );
    e.family(
        "netguard_proxy_worker_client_connections",
        "gauge",
        "Client connections open on each proxy worker (new ones go to the least busy).",
    );
    for (worker, open) in p.open_per_worker.iter().enumerate() {
        e.sample(
            "netguard_proxy_worker_client_connections",
            &[("worker", &worker.to_string())],
            *open as u64,
        );
    }
    e.family(
        "netguard_proxy_connections_refused_total",
        "counter",
        "Client connections answered 503 and closed because a connection cap was reached.",
    );
    e.sample("netguard_proxy_connections_refused_total", &[], p.refused);
    e.family(
        "netguard_proxy_backend_ejections_total",
        "counter",
        "Backends ejected after a failed or timed-out connect.",
    );
    e.sample("netguard_proxy_backend_ejections_total", &[], p.ejections);
}

fn render_reloads(e: &mut Exposition, r: &ReloadReadings) {
    e.family(
        "netguard_config_reloads_total",
        "counter",
        "Config reloads (SIGHUP or netguard reload) by result.",
    );
    e.sample(
        "netguard_config_reloads_total",
        &[("result", "success")],
        r.successes,
    );
    e.sample(
        "netguard_config_reloads_total",
        &[("result", "failure")],
        r.failures,
    );
    e.family(
        "netguard_config_last_reload_success_timestamp_seconds",
        "gauge",
        "Unix time of the last successful reload (the start counts as one).",
    );
    e.sample(
        "netguard_config_last_reload_success_timestamp_seconds",
        &[],
        r.last_success_unix,
    );
    e.family(
        "netguard_config_last_reload_duration_seconds",
        "gauge",
        "How long the last reload took, accepted or rejected.",
    );
    e.sample(
        "netguard_config_last_reload_duration_seconds",
        &[],
        r.last_duration_seconds,
    );
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use netguard_common::{policy::FilterConfig, reason::COUNTER_SLOTS};

    use super::*;
    use crate::proxy::metrics::ProxyMetrics;

    fn readings() -> Readings {
        let mut slots = vec![Counter::default(); COUNTER_SLOTS as usize];
        slots[Reason::PortClosed.counter_index(false) as usize] = Counter {
            packets: 7,
            bytes: 420,
        };
        let m = ProxyMetrics::default();
        m.record(Some("sh\"op"), 200, Duration::from_millis(20));
        Readings {
            kernel: KernelReadings {
                xdp: Some(Snapshot::new(&FilterConfig::EMPTY, slots)),
                containers: Vec::new(),
                private: vec![Counter::default(); PnReason::ALL.len()],
                error: None,
            },
            proxy: Some(ProxyReadings {
                apps: m.read(),
                open_connections: 2,
                open_per_worker: vec![1, 1],
                refused: 1,
                ejections: 3,
            }),
            reloads: ReloadReadings {
                successes: 4,
                failures: 1,
                last_success_unix: 1.7e9,
                last_duration_seconds: 0.25,
            },
            ready: true,
        }
    }

    #[test]
    fn families_and_samples() {
        let text = render(&readings());
        for line in [
            "netguard_xdp_packets_total{reason=\"port_closed\",verdict=\"drop\"} 7",
            "netguard_xdp_bytes_total{reason=\"port_closed\",verdict=\"drop\"} 420",
            "netguard_xdp_would_drop_packets_total{reason=\"port_closed\"} 0",
            "netguard_proxy_requests_total{app=\"sh\\\"op\",code=\"2xx\"} 1",
            "netguard_proxy_request_duration_seconds_bucket{app=\"sh\\\"op\",le=\"0.01\"} 0",
            "netguard_proxy_request_duration_seconds_bucket{app=\"sh\\\"op\",le=\"0.025\"} 1",
            "netguard_proxy_request_duration_seconds_bucket{app=\"sh\\\"op\",le=\"+Inf\"} 1",
            "netguard_proxy_request_duration_seconds_count{app=\"sh\\\"op\"} 1",
            "netguard_proxy_client_connections 2",
            "netguard_proxy_worker_client_connections{worker=\"1\"} 1",
            "netguard_config_reloads_total{result=\"failure\"} 1",
            "netguard_config_last_reload_duration_seconds 0.25",
            "netguard_ready 1",
            "# TYPE netguard_proxy_request_duration_seconds histogram",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in\n{text}"
            );
        }
        // Every family is declared once, before its samples.
        let mut declared = std::collections::HashSet::new();
        for l in text.lines() {
            if let Some(rest) = l.strip_prefix("# TYPE ") {
                let name = rest.split(' ').next().unwrap_or_default();
                assert!(declared.insert(name.to_owned()), "{name} twice");
            } else if !l.starts_with('#') {
                let name = l.split(['{', ' ']).next().unwrap_or_default();
                let family = ["_bucket", "_sum", "_count"]
                    .iter()
                    .find_map(|s| name.strip_suffix(s).filter(|f| declared.contains(*f)))
                    .unwrap_or(name);
                assert!(declared.contains(family), "{name} before its TYPE");
            }
        }
    }
}
