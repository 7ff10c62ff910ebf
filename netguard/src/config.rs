//! The whole configuration as plain data.
//!
//! Nothing here touches the kernel or the network: a TOML file today, another source (etcd)
//! later, both go through [`Config::from_toml_str`] and [`Config::validate`], and the rest of the
//! daemon only ever sees a validated [`Config`]. Every key has a default except
//! `xdp.interface`, so the smallest config is:
//!
//! ```toml
//! [xdp]
//! interface = "eth0"
//! ```
//!
//! # The L7 proxy: `[proxy]` and `[[app]]`
//!
//! The proxy runs inside `netguard run` when the config has a `[proxy]` table (an `[[app]]`
//! without one is an error). Every key of `[proxy]` has a default; timeouts are seconds, an
//! integer or a fraction (`0.5`), kept to the millisecond; sizes take the units of
//! [`crate::units`] (`"75MiB"`).
//!
//! ```toml
//! [proxy]
//! http_listen = "0.0.0.0:80"           # plain HTTP/1.1
//! https_listen = "0.0.0.0:443"         # TLS (HTTP/2 and HTTP/1.1 by ALPN); bound only when an app has tls set
//! max_body_bytes = 78643200            # 75 MiB (nginx's 75m); a bigger body is answered 413
//! max_header_section_bytes = 32768     # all field lines with their CRLFs; more is 431
//! max_header_line_bytes = 8192         # one field line without CRLF (431), or the request line (414)
//! header_read_timeout_secs = 10        # whole head, from its first byte (from accept for the first request): 408
//! body_read_timeout_secs = 10          # slack for the request body: it must arrive at
//! body_min_bytes_per_sec = 1024        #   body_min_bytes_per_sec after this many seconds, else 408
//! client_write_timeout_secs = 30       # one write to the client; then the connection is dropped
//! keepalive_timeout_secs = 60          # idle time between requests on one connection
//! backend_connect_timeout_secs = 5     # TCP connect to a backend; on expiry: ejected, next backend
//! backend_response_timeout_secs = 60   # request sent → response head, and between response body reads: 504
//! backend_eject_secs = 10              # how long a backend that refused or timed out a connect is skipped
//! backend_pool_idle_timeout_secs = 30  # idle keep-alive connections to backends are closed after this; keep it
//!                                      #   below the backends' own keep-alive timeout
//! workers = 0                          # proxy threads, each with its own listeners, connections and backend
//!                                      #   pool (as nginx's worker_processes); 0: one per CPU (at most 64)
//! backend_pool_max_idle_per_backend = 32  # idle connections kept per backend address and worker; 0: one connection per request
//! backend_pool_max_idle = 1024         # idle connections kept over all backends, per worker
//! balance = "round_robin"              # or "least_connections": the live backend with the fewest requests in flight
//! drain_timeout_secs = 30              # SIGTERM/SIGINT: stop accepting, finish requests in flight for at most
//!                                      #   this long, then exit (0: at once)
//! tunnel_idle_timeout_secs = 600       # WebSocket/101 tunnels and TLS passthrough: closed after this long without a byte either way
//! max_connections = 10000              # client connections open at once; more get 503 and are closed
//! max_connections_per_client = 256     # the same per client IP address
//! trusted_proxies = []                 # clients whose X-Forwarded-* are kept and appended to
//! router_log = "stderr"                # one logfmt line per request: "stderr", "off" or a file path
//!
//! [[app]]
//! name = "shop"                                          # [A-Za-z0-9._-], unique
//! domains = ["shop.example.com", "*.shop.example.com"]   # exact beats wildcard; case-insensitive; trailing dot ignored
//! backends = ["172.17.0.2:5000", "172.17.0.3:5000"]      # round-robin; empty: every request gets 503
//! tls = "terminate"                                      # "passthrough": TLS forwarded untouched by SNI; omitted: "terminate" with cert/key, else plain HTTP only
//! cert = "/etc/netguard/certs/shop.pem"                  # PEM chain (tls = "terminate" only); relative to the config file
//! key = "/etc/netguard/certs/shop.key"                   # PEM private key
//! force_https = false                                    # true: plain HTTP gets 301 to https (needs tls)
//! ```
//!
//! With `tls = "passthrough"` the app has no `cert`/`key` (its backends terminate TLS
//! themselves, and the client sees their certificate); it is reached only on `https_listen`
//! with SNI, and plain HTTP requests for its names get a 301 to https (see
//! `proxy::passthrough`).

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;
use netguard_common::{
    bucket::MAX_PACKET_BYTES,
    limiter::{MAX_CONTAINER_CIDRS_V4, MAX_CONTAINER_CIDRS_V6},
    maps::LIMIT_OVERRIDES_CAPACITY,
    policy::{MAX_INGRESS_V4, MAX_INGRESS_V6},
};

use crate::units::{Bytes, BytesPerSec};
use serde::{Deserialize, Deserializer, Serialize};

pub const DEFAULT_PIN_PATH: &str = "/sys/fs/bpf/netguard";

/// `IFNAMSIZ` (include/uapi/linux/if.h) counts the terminating NUL.
const MAX_INTERFACE_NAME: usize = 15;

/// A day: flows idle longer than that are not worth a slot in the flow table.
const MAX_FLOW_TIMEOUT_SECS: u64 = 86_400;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub daemon: DaemonConfig,
    pub xdp: XdpConfig,
    pub denylist: DenylistConfig,
    pub ratelimit: RatelimitConfig,
    /// The L7 proxy; `None` (no `[proxy]` table): not started.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub proxy: Option<ProxyConfig>,
    /// `[[app]]`: what the proxy serves.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub app: Vec<AppConfig>,
    /// `[[private_network]]`: isolation on the private side and the names it serves
    /// (see [`crate::private_net`]).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub private_network: Vec<crate::private_net::PrivateNetwork>,
    /// `[admin]`: metrics, probes, routes and reload over HTTP (see [`crate::admin`]).
    pub admin: crate::admin::AdminConfig,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DaemonConfig {
    /// bpffs directory for pinned maps and links, so `netguard deny add` and a restarted daemon
    /// find the running filter's state.
    pub pin_path: PathBuf,
}

impl Default for DaemonConfig {
    fn default() -> Self {
        Self {
            pin_path: PathBuf::from(DEFAULT_PIN_PATH),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct XdpConfig {
    /// Required: the default is empty, which [`Config::validate`] refuses.
    pub interface: String,
    pub mode: AttachMode,
    pub action: Action,
    /// TCP destination ports open to new connections.
    pub allowed_tcp_ports: Vec<u16>,
    /// Destinations the filter guards; empty guards every destination.
    #[serde(deserialize_with = "deserialize_ingress")]
    pub ingress_addresses: Vec<IpNet>,
    /// Sources that bypass the port and denylist checks.
    #[serde(deserialize_with = "deserialize_trusted")]
    pub trusted_sources: Vec<IpNet>,
    pub icmp: IcmpMode,
    pub ipv6: Ipv6Mode,
    pub flow_timeout_tcp_secs: u64,
    /// UDP and ICMP echo flows.
    pub flow_timeout_udp_secs: u64,
}

impl Default for XdpConfig {
    fn default() -> Self {
        Self {
            interface: String::new(),
            mode: AttachMode::default(),
            action: Action::default(),
            allowed_tcp_ports: vec![80, 443],
            ingress_addresses: Vec::new(),
            trusted_sources: Vec::new(),
            icmp: IcmpMode::default(),
            ipv6: Ipv6Mode::default(),
            flow_timeout_tcp_secs: 600,
            flow_timeout_udp_secs: 60,
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DenylistConfig {
    /// Same syntax as a denylist file line (see [`crate::denylist`]).
    pub cidrs: Vec<String>,
    /// List files, plain or gzip. [`Config::load`] makes relative paths relative to the config
    /// file's directory, so a config and its lists can move together.
    pub files: Vec<PathBuf>,
}

/// The tc bandwidth limiter: a token bucket per container and direction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RatelimitConfig {
    /// Container-facing interfaces: the host side of each container's veth, or a bridge such
    /// as `docker0`. Empty: the limiter is off.
    pub interfaces: Vec<String>,
    /// Addresses that are containers; anything else is never limited.
    #[serde(deserialize_with = "deserialize_container_cidrs")]
    pub container_cidrs: Vec<IpNet>,
    /// Default rate of every container, each direction.
    pub rate: BytesPerSec,
    /// Default burst of every container, each direction.
    pub burst: Bytes,
    /// `[[ratelimit.container]]` overrides ("contact us for more bandwidth").
    pub container: Vec<ContainerLimit>,
}

impl Default for RatelimitConfig {
    fn default() -> Self {
        Self {
            interfaces: Vec::new(),
            container_cidrs: vec![IpNet::V4(ipnet::Ipv4Net::new_assert(
                std::net::Ipv4Addr::new(172, 17, 0, 0),
                16,
            ))],
            rate: BytesPerSec(20_000_000),
            burst: Bytes(1_600_000_000),
            container: Vec::new(),
        }
    }
}

/// One container's own rate and burst; an omitted one keeps the default.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContainerLimit {
    pub address: std::net::IpAddr,
    #[serde(default)]
    pub rate: Option<BytesPerSec>,
    #[serde(default)]
    pub burst: Option<Bytes>,
}

/// More proxy threads than this only add memory: each holds its own listeners and pool.
pub const MAX_PROXY_WORKERS: u32 = 64;

/// `[proxy]`: listeners, limits and timeouts of the L7 proxy (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProxyConfig {
    pub http_listen: SocketAddr,
    pub https_listen: SocketAddr,
    pub max_body_bytes: Bytes,
    pub max_header_section_bytes: Bytes,
    pub max_header_line_bytes: Bytes,
    pub header_read_timeout_secs: Seconds,
    pub body_read_timeout_secs: Seconds,
    pub body_min_bytes_per_sec: BytesPerSec,
    pub client_write_timeout_secs: Seconds,
    pub keepalive_timeout_secs: Seconds,
    pub backend_connect_timeout_secs: Seconds,
    pub backend_response_timeout_secs: Seconds,
    pub backend_eject_secs: Seconds,
    pub backend_pool_idle_timeout_secs: Seconds,
    pub backend_pool_max_idle_per_backend: u32,
    pub backend_pool_max_idle: u32,
    /// Proxy worker threads; 0: one per CPU.
    pub workers: u32,
    pub balance: Balance,
    pub drain_timeout_secs: Seconds,
    pub tunnel_idle_timeout_secs: Seconds,
    pub max_connections: u32,
    pub max_connections_per_client: u32,
    #[serde(deserialize_with = "deserialize_trusted_proxies")]
    pub trusted_proxies: Vec<IpNet>,
    pub router_log: String,
}

impl Default for ProxyConfig {
    fn default() -> Self {
        let secs = |s| Seconds(Duration::from_secs(s));
        Self {
            http_listen: SocketAddr::from(([0, 0, 0, 0], 80)),
            https_listen: SocketAddr::from(([0, 0, 0, 0], 443)),
            max_body_bytes: Bytes(75 * 1024 * 1024),
            max_header_section_bytes: Bytes(32 * 1024),
            max_header_line_bytes: Bytes(8 * 1024),
            header_read_timeout_secs: secs(10),
            body_read_timeout_secs: secs(10),
            body_min_bytes_per_sec: BytesPerSec(1024),
            client_write_timeout_secs: secs(30),
            keepalive_timeout_secs: secs(60),
            backend_connect_timeout_secs: secs(5),
            backend_response_timeout_secs: secs(60),
            backend_eject_secs: secs(10),
            backend_pool_idle_timeout_secs: secs(30),
            backend_pool_max_idle_per_backend: 32,
            backend_pool_max_idle: 1024,
            workers: 0,
            balance: Balance::RoundRobin,
            drain_timeout_secs: secs(30),
            tunnel_idle_timeout_secs: secs(600),
            max_connections: 10_000,
            max_connections_per_client: 256,
            trusted_proxies: Vec::new(),
            router_log: "stderr".into(),
        }
    }
}

/// `[[app]]`: one application the proxy routes to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppConfig {
    pub name: String,
    /// Exact names and `*.suffix` wildcards.
    #[serde(default)]
    pub domains: Vec<String>,
    /// The app's containers, `ip:port`.
    #[serde(default)]
    pub backends: Vec<SocketAddr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsMode>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<PathBuf>,
    #[serde(default)]
    pub force_https: bool,
}

/// `proxy.balance`: how a request picks among an app's live backends.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Balance {
    /// Each request starts one backend further along the list.
    #[default]
    RoundRobin,
    /// The backend with the fewest requests in flight (through this proxy); ties go
    /// round-robin.
    LeastConnections,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TlsMode {
    /// The proxy holds the certificate and speaks HTTP to the backends.
    Terminate,
    /// The TLS stream goes to the backends as is, routed by SNI.
    Passthrough,
}

/// A duration written in seconds, integer or fractional, kept to the millisecond.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Seconds(pub Duration);

impl Serialize for Seconds {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let ms = self.0.as_millis();
        if ms.is_multiple_of(1000) {
            s.serialize_u64(self.0.as_secs())
        } else {
            s.serialize_f64(ms as f64 / 1000.0)
        }
    }
}

impl<'de> Deserialize<'de> for Seconds {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Seconds;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a number of seconds")
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Seconds, E> {
                u64::try_from(v)
                    .map(|s| Seconds(Duration::from_secs(s)))
                    .map_err(|_| E::custom(format_args!("{v} seconds: must not be negative")))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Seconds, E> {
                Ok(Seconds(Duration::from_secs(v)))
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Seconds, E> {
                if !v.is_finite() || !(0.0..=1e9).contains(&v) {
                    return Err(E::custom(format_args!("{v} seconds: out of range")));
                }
                Ok(Seconds(Duration::from_millis((v * 1000.0).round() as u64)))
            }
        }
        d.deserialize_any(V)
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AttachMode {
    /// In the driver: fastest, and fails loudly where the driver lacks XDP support.
    #[default]
    Native,
    /// `XDP_FLAGS_SKB_MODE`: works on any interface, at skb cost.
    Generic,
    /// Native, falling back to generic.
    Auto,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    #[default]
    Enforce,
    /// Count what would be dropped, pass everything: for trying a policy on live traffic.
    Audit,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IcmpMode {
    /// Destination-unreachable (path MTU discovery needs it), time-exceeded and echo pass.
    #[default]
    Essential,
    Drop,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Ipv6Mode {
    #[default]
    Drop,
    /// Filter IPv6 with the same rules as IPv4.
    Filter,
}

/// One thing wrong with a config, at a dotted key path such as `xdp.allowed_tcp_ports[2]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub key: String,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.message)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("reading config {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// `line` and `column` are 1-based; 0 when toml gave no position.
    #[error("parsing config {}: {message}", Located(.origin, *.line, *.column))]
    Parse {
        origin: String,
        line: usize,
        column: usize,
        message: String,
    },
    #[error("{origin}: invalid config:{}", ProblemList(.problems))]
    Invalid {
        origin: String,
        problems: Vec<Problem>,
    },
}

struct Located<'a>(&'a str, usize, usize);

impl fmt::Display for Located<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Located(origin, 0, _) => write!(f, "{origin}"),
            Located(origin, line, column) => write!(f, "{origin}:{line}:{column}"),
        }
    }
}

struct ProblemList<'a>(&'a [Problem]);

impl fmt::Display for ProblemList<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0
            .iter()
            .try_for_each(|problem| write!(f, "\n  - {problem}"))
    }
}

impl Config {
    /// Parse + validate; `origin` names the source in errors (a file path, `"etcd:/key"`, `"<embedded>"`).
    pub fn from_toml_str(text: &str, origin: &str) -> Result<Config, ConfigError> {
        let mut config: Config = toml::from_str(text).map_err(|e| parse_error(&e, text, origin))?;
        config.infer_tls();
        config.validate().map_err(|problems| ConfigError::Invalid {
            origin: origin.to_owned(),
            problems,
        })?;
        Ok(config)
    }

    /// Reads the file, parses, validates, and resolves relative `denylist.files` against the file's directory.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let mut config = Self::from_toml_str(&text, &path.display().to_string())?;
        // `parent` of a bare file name is "", and joining "" keeps the path relative to the
        // working directory, which is where that config file is too.
        if let Some(dir) = path.parent() {
            for file in &mut config.denylist.files {
                if file.is_relative() {
                    *file = dir.join(&*file);
                }
            }
            for app in &mut config.app {
                for file in [&mut app.cert, &mut app.key].into_iter().flatten() {
                    if file.is_relative() {
                        *file = dir.join(&*file);
                    }
                }
            }
        }
        Ok(config)
    }

    /// An app with a `cert` or `key` but no `tls` terminates TLS: what giving a certificate
    /// means (the issue's default). One without either stays plain HTTP.
    fn infer_tls(&mut self) {
        for app in &mut self.app {
            if app.tls.is_none() && (app.cert.is_some() || app.key.is_some()) {
                app.tls = Some(TlsMode::Terminate);
            }
        }
    }

    /// Every problem at once, not just the first.
    pub fn validate(&self) -> Result<(), Vec<Problem>> {
        let mut problems = Problems::default();
        self.validate_daemon(&mut problems);
        self.validate_xdp(&mut problems);
        self.validate_denylist(&mut problems);
        self.validate_ratelimit(&mut problems);
        self.validate_proxy(&mut problems);
        self.validate_private_networks(&mut problems);
        if problems.0.is_empty() {
            Ok(())
        } else {
            Err(problems.0)
        }
    }

    fn validate_daemon(&self, problems: &mut Problems) {
        let pin_path = &self.daemon.pin_path;
        if pin_path.as_os_str().is_empty() {
            problems.add("daemon.pin_path", "must not be empty");
        } else if pin_path.is_relative() {
            // Pins are shared with the CLI, which may run from any directory.
            problems.add(
                "daemon.pin_path",
                "must be an absolute path (a bpffs directory)",
            );
        }
        if self.admin.enabled && self.admin.listen.port() == 0 {
            // `netguard reload` and scrapers must know where to connect.
            problems.add("admin.listen", "needs a port other than 0");
        }
    }

    fn validate_xdp(&self, problems: &mut Problems) {
        let xdp = &self.xdp;
        if let Some(message) = interface_problem(&xdp.interface) {
            problems.add("xdp.interface", message);
        }

        let mut first_index = HashMap::new();
        for (i, &port) in xdp.allowed_tcp_ports.iter().enumerate() {
            let key = format!("xdp.allowed_tcp_ports[{i}]");
            if port == 0 {
                problems.add(key, "port 0 cannot be a destination port");
                continue;
            }
            match first_index.entry(port) {
                Entry::Occupied(first) => problems.add(
                    key,
                    format!("{port} duplicates xdp.allowed_tcp_ports[{}]", first.get()),
                ),
                Entry::Vacant(slot) => {
                    slot.insert(i);
                }
            }
        }

        for (name, nets) in [
            ("ingress_addresses", &xdp.ingress_addresses),
            ("trusted_sources", &xdp.trusted_sources),
        ] {
            for (i, net) in nets.iter().enumerate() {
                if let Some(message) = crate::denylist::host_bits_problem(*net) {
                    problems.add(format!("xdp.{name}[{i}]"), format!("{net}: {message}"));
                }
            }
        }

        // The ingress prefixes live inline in the XDP program's config value, which has
        // room for only so many.
        let v4 = xdp
            .ingress_addresses
            .iter()
            .filter(|n| matches!(n, IpNet::V4(_)))
            .count();
        let v6 = xdp.ingress_addresses.len() - v4;
        for (family, count, max) in [("IPv4", v4, MAX_INGRESS_V4), ("IPv6", v6, MAX_INGRESS_V6)] {
            if count > max {
                problems.add(
                    "xdp.ingress_addresses",
                    format!("{count} {family} entries; the XDP program holds at most {max}"),
                );
            }
        }

        for (key, secs) in [
            ("xdp.flow_timeout_tcp_secs", xdp.flow_timeout_tcp_secs),
            ("xdp.flow_timeout_udp_secs", xdp.flow_timeout_udp_secs),
        ] {
            if !(1..=MAX_FLOW_TIMEOUT_SECS).contains(&secs) {
                problems.add(
                    key,
                    format!("must be 1 to {MAX_FLOW_TIMEOUT_SECS} seconds, not {secs}"),
                );
            }
        }
    }

    fn validate_denylist(&self, problems: &mut Problems) {
        for (i, text) in self.denylist.cidrs.iter().enumerate() {
            if let Err(reason) = crate::denylist::parse_inline(text) {
                problems.add(
                    format!("denylist.cidrs[{i}]"),
                    format!("{reason}: {text:?}"),
                );
            }
        }
        for (i, file) in self.denylist.files.iter().enumerate() {
            if file.as_os_str().is_empty() {
                problems.add(format!("denylist.files[{i}]"), "must not be empty");
            }
        }
    }
}

impl Config {
    fn validate_ratelimit(&self, problems: &mut Problems) {
        let r = &self.ratelimit;
        let mut seen = HashMap::new();
        for (i, name) in r.interfaces.iter().enumerate() {
            let key = format!("ratelimit.interfaces[{i}]");
            if let Some(message) = interface_problem(name) {
                problems.add(key, message);
            } else if let Some(first) = seen.insert(name.as_str(), i) {
                problems.add(
                    key,
                    format!("{name:?} duplicates ratelimit.interfaces[{first}]"),
                );
            }
        }
        for (i, net) in r.container_cidrs.iter().enumerate() {
            if let Some(message) = crate::denylist::host_bits_problem(*net) {
                problems.add(
                    format!("ratelimit.container_cidrs[{i}]"),
                    format!("{net}: {message}"),
                );
            }
        }
        let v4 = r
            .container_cidrs
            .iter()
            .filter(|n| matches!(n, IpNet::V4(_)))
            .count();
        let v6 = r.container_cidrs.len() - v4;
        for (family, count, max) in [
            ("IPv4", v4, MAX_CONTAINER_CIDRS_V4),
            ("IPv6", v6, MAX_CONTAINER_CIDRS_V6),
        ] {
            if count > max {
                problems.add(
                    "ratelimit.container_cidrs",
                    format!("{count} {family} ranges; the limiter holds at most {max}"),
                );
            }
        }
        let check = |problems: &mut Problems, key: &str, rate: BytesPerSec, burst: Bytes| {
            if rate.0 == 0 {
                problems.add(format!("{key}rate"), "must be more than 0 bytes/s");
            }
            if burst.0 < MAX_PACKET_BYTES {
                problems.add(
                    format!("{key}burst"),
                    format!(
                        "{} bytes is smaller than the largest packet the limiter charges \
                         ({MAX_PACKET_BYTES} B, a GSO super-packet): such packets would never pass",
                        burst.0
                    ),
                );
            }
        };
        check(problems, "ratelimit.", r.rate, r.burst);
        if r.container.len() > LIMIT_OVERRIDES_CAPACITY as usize {
            problems.add(
                "ratelimit.container",
                format!(
                    "{} overrides; the limiter holds at most {LIMIT_OVERRIDES_CAPACITY}",
                    r.container.len()
                ),
            );
        }
        let mut addresses = HashMap::new();
        for (i, c) in r.container.iter().enumerate() {
            let key = format!("ratelimit.container[{i}].");
            check(
                problems,
                &key,
                c.rate.unwrap_or(r.rate),
                c.burst.unwrap_or(r.burst),
            );
            if !r.container_cidrs.iter().any(|n| n.contains(&c.address)) {
                problems.add(
                    format!("{key}address"),
                    format!(
                        "{} is outside ratelimit.container_cidrs, so it is never limited",
                        c.address
                    ),
                );
            }
            if let Some(first) = addresses.insert(c.address, i) {
                problems.add(
                    format!("{key}address"),
                    format!("{} duplicates ratelimit.container[{first}]", c.address),
                );
            }
        }
    }
}

/// Longest timeout the proxy accepts: a day.
const MAX_PROXY_TIMEOUT: Duration = Duration::from_secs(86_400);

impl Config {
    fn validate_proxy(&self, problems: &mut Problems) {
        let Some(p) = &self.proxy else {
            if !self.app.is_empty() {
                problems.add(
                    "app",
                    "[[app]] entries are served by the proxy: add a [proxy] section",
                );
            }
            return;
        };
        if p.http_listen == p.https_listen {
            problems.add(
                "proxy.https_listen",
                format!("{} is also proxy.http_listen", p.https_listen),
            );
        }
        let line = p.max_header_line_bytes.0;
        if !(256..=65_536).contains(&line) {
            problems.add(
                "proxy.max_header_line_bytes",
                format!("must be 256 to 65536 bytes, not {line}"),
            );
        }
        let section = p.max_header_section_bytes.0;
        if !(line..=1 << 20).contains(&section) {
            problems.add(
                "proxy.max_header_section_bytes",
                format!(
                    "must be at least proxy.max_header_line_bytes ({line}) and at most 1048576, not {section}"
                ),
            );
        }
        for (key, secs) in [
            ("header_read_timeout_secs", p.header_read_timeout_secs),
            ("body_read_timeout_secs", p.body_read_timeout_secs),
            ("client_write_timeout_secs", p.client_write_timeout_secs),
            ("keepalive_timeout_secs", p.keepalive_timeout_secs),
            (
                "backend_connect_timeout_secs",
                p.backend_connect_timeout_secs,
            ),
            (
                "backend_response_timeout_secs",
                p.backend_response_timeout_secs,
            ),
            ("backend_eject_secs", p.backend_eject_secs),
            (
                "backend_pool_idle_timeout_secs",
                p.backend_pool_idle_timeout_secs,
            ),
            ("tunnel_idle_timeout_secs", p.tunnel_idle_timeout_secs),
        ] {
            if secs.0.is_zero() || secs.0 > MAX_PROXY_TIMEOUT {
                problems.add(
                    format!("proxy.{key}"),
                    format!(
                        "must be more than 0 and at most 86400 seconds, not {:?}",
                        secs.0
                    ),
                );
            }
        }
        if p.drain_timeout_secs.0 > MAX_PROXY_TIMEOUT {
            problems.add(
                "proxy.drain_timeout_secs",
                format!(
                    "must be at most 86400 seconds (0: exit at once), not {:?}",
                    p.drain_timeout_secs.0
                ),
            );
        }
        if p.max_connections == 0 {
            problems.add("proxy.max_connections", "must be at least 1");
        }
        if p.workers > MAX_PROXY_WORKERS {
            problems.add(
                "proxy.workers",
                format!(
                    "must be at most {MAX_PROXY_WORKERS} (0: one per CPU), not {}",
                    p.workers
                ),
            );
        }
        if p.backend_pool_max_idle_per_backend > p.backend_pool_max_idle {
            problems.add(
                "proxy.backend_pool_max_idle_per_backend",
                format!(
                    "must be at most proxy.backend_pool_max_idle ({}), not {}",
                    p.backend_pool_max_idle, p.backend_pool_max_idle_per_backend
                ),
            );
        }
        if p.max_connections_per_client == 0 || p.max_connections_per_client > p.max_connections {
            problems.add(
                "proxy.max_connections_per_client",
                "must be at least 1 and at most proxy.max_connections",
            );
        }
        for (i, net) in p.trusted_proxies.iter().enumerate() {
            if let Some(message) = crate::denylist::host_bits_problem(*net) {
                problems.add(
                    format!("proxy.trusted_proxies[{i}]"),
                    format!("{net}: {message}"),
                );
            }
        }
        if p.router_log.is_empty() {
            problems.add(
                "proxy.router_log",
                "must be \"stderr\", \"off\" or a file path",
            );
        }
        self.validate_apps(problems);
    }

    fn validate_apps(&self, problems: &mut Problems) {
        let mut names = HashMap::new();
        let mut domains: HashMap<String, String> = HashMap::new();
        for (i, app) in self.app.iter().enumerate() {
            let key = format!("app[{i}]");
            let name_ok = !app.name.is_empty()
                && app.name.len() <= 64
                && app
                    .name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
            if !name_ok {
                problems.add(
                    format!("{key}.name"),
                    format!("{:?}: 1 to 64 of A-Z a-z 0-9 . _ -", app.name),
                );
            } else if let Some(first) = names.insert(app.name.as_str(), i) {
                problems.add(
                    format!("{key}.name"),
                    format!("{:?} duplicates app[{first}].name", app.name),
                );
            }
            if app.domains.is_empty() {
                problems.add(format!("{key}.domains"), "must list at least one domain");
            }
            for (j, domain) in app.domains.iter().enumerate() {
                let dkey = format!("{key}.domains[{j}]");
                match crate::proxy::route::Pattern::parse(domain) {
                    Err(e) => problems.add(dkey, e.to_string()),
                    Ok(pattern) => {
                        let canonical = match pattern {
                            crate::proxy::route::Pattern::Exact(n) => n,
                            crate::proxy::route::Pattern::Wildcard(s) => format!("*.{s}"),
                        };
                        match domains.entry(canonical) {
                            Entry::Occupied(first) => problems.add(
                                dkey,
                                format!("{domain:?} is already routed by {}", first.get()),
                            ),
                            Entry::Vacant(slot) => {
                                slot.insert(format!("{key}.domains[{j}]"));
                            }
                        }
                    }
                }
            }
            let mut seen = HashMap::new();
            for (j, backend) in app.backends.iter().enumerate() {
                let bkey = format!("{key}.backends[{j}]");
                if backend.port() == 0 || backend.ip().is_unspecified() {
                    problems.add(bkey, format!("{backend} is not a destination address"));
                } else if let Some(first) = seen.insert(*backend, j) {
                    problems.add(
                        bkey,
                        format!("{backend} duplicates {key}.backends[{first}]"),
                    );
                }
            }
            match app.tls {
                Some(TlsMode::Terminate) => {
                    for (field, path) in [("cert", &app.cert), ("key", &app.key)] {
                        if path.as_ref().is_none_or(|p| p.as_os_str().is_empty()) {
                            problems.add(
                                format!("{key}.{field}"),
                                "tls = \"terminate\" needs a PEM file",
                            );
                        }
                    }
                }
                Some(TlsMode::Passthrough) => {
                    for (field, path) in [("cert", &app.cert), ("key", &app.key)] {
                        if path.is_some() {
                            problems.add(
                                format!("{key}.{field}"),
                                "not used with tls = \"passthrough\": the backends hold the certificate",
                            );
                        }
                    }
                }
                None => {
                    for (field, path) in [("cert", &app.cert), ("key", &app.key)] {
                        if path.is_some() {
                            problems.add(
                                format!("{key}.{field}"),
                                "only used with tls = \"terminate\"",
                            );
                        }
                    }
                    if app.force_https {
                        problems.add(
                            format!("{key}.force_https"),
                            "redirecting to https needs tls = \"terminate\"",
                        );
                    }
                }
            }
        }
    }
}

impl Config {
    fn validate_private_networks(&self, problems: &mut Problems) {
        for (key, message) in crate::private_net::validate(&self.private_network) {
            problems.add(key, message);
        }
        for (n, net) in self.private_network.iter().enumerate() {
            for (i, name) in net.interfaces.iter().enumerate() {
                if let Some(message) = interface_problem(name) {
                    problems.add(format!("private_network[{n}].interfaces[{i}]"), message);
                }
            }
        }
        // The public exposure rule: only `web` and `tcp` containers may be proxy backends.
        for (a, app) in self.app.iter().enumerate() {
            for (b, backend) in app.backends.iter().enumerate() {
                let std::net::IpAddr::V4(ip) = backend.ip() else {
                    continue;
                };
                if let Some(c) = crate::private_net::private_type_of(&self.private_network, ip) {
                    problems.add(
                        format!("app[{a}].backends[{b}]"),
                        format!(
                            "{backend} is container {}.{} of {}, a private process type: only web and tcp \
                             containers may be exposed through the proxy",
                            c.index, c.kind, c.app
                        ),
                    );
                }
            }
        }
    }
}

#[derive(Default)]
struct Problems(Vec<Problem>);

impl Problems {
    fn add(&mut self, key: impl Into<String>, message: impl Into<String>) {
        self.0.push(Problem {
            key: key.into(),
            message: message.into(),
        });
    }
}

/// The kernel's rules for a name `ip link` would accept (`dev_valid_name`, net/core/dev.c),
/// so a typo fails here rather than at attach time.
fn interface_problem(name: &str) -> Option<String> {
    if name.is_empty() {
        Some("must not be empty".to_owned())
    } else if name.len() > MAX_INTERFACE_NAME {
        Some(format!(
            "{name:?} is {} bytes; interface names are at most {MAX_INTERFACE_NAME}",
            name.len()
        ))
    } else if name == "." || name == ".." {
        Some(format!("{name:?} is not an interface name"))
    } else if name.contains(['/', ':']) {
        Some(format!("{name:?} must not contain '/' or ':'"))
    } else if name.chars().any(char::is_whitespace) {
        Some(format!("{name:?} must not contain whitespace"))
    } else {
        None
    }
}

fn deserialize_ingress<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<IpNet>, D::Error> {
    d.deserialize_seq(NetsVisitor("xdp.ingress_addresses"))
}

fn deserialize_trusted<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<IpNet>, D::Error> {
    d.deserialize_seq(NetsVisitor("xdp.trusted_sources"))
}

fn deserialize_container_cidrs<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<IpNet>, D::Error> {
    d.deserialize_seq(NetsVisitor("ratelimit.container_cidrs"))
}

fn deserialize_trusted_proxies<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<IpNet>, D::Error> {
    d.deserialize_seq(NetsVisitor("proxy.trusted_proxies"))
}

/// Addresses as the operator writes them: a CIDR, or a bare address meaning /32 or /128.
/// Host bits are accepted here and refused by `validate`, which lists them with the rest.
///
/// toml positions a bad element's error at the whole array, so the message names the element
/// (`xdp.trusted_sources[1]`) itself.
struct NetsVisitor(&'static str);

impl<'de> serde::de::Visitor<'de> for NetsVisitor {
    type Value = Vec<IpNet>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an array of addresses or CIDRs")
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut nets = Vec::with_capacity(seq.size_hint().unwrap_or(0));
        while let Some(text) = seq.next_element::<String>()? {
            let net = crate::denylist::parse_net(&text).map_err(|reason| {
                serde::de::Error::custom(format_args!(
                    "{}[{}]: {reason}: {text:?}",
                    self.0,
                    nets.len()
                ))
            })?;
            nets.push(net);
        }
        Ok(nets)
    }
}

fn parse_error(error: &toml::de::Error, text: &str, origin: &str) -> ConfigError {
    let (line, column) = error
        .span()
        .map_or((0, 0), |span| line_column(text, span.start));
    ConfigError::Parse {
        origin: origin.to_owned(),
        line,
        column,
        message: error.message().trim_end().to_owned(),
    }
}

/// 1-based line and column (in characters) of a byte offset.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = &text.as_bytes()[..offset.min(text.len())];
    let line_start = before
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |i| i + 1);
    let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
    // Count characters, not bytes: UTF-8 continuation bytes are 0b10xx_xxxx.
    let column = before[line_start..]
        .iter()
        .filter(|&&b| b & 0xc0 != 0x80)
        .count()
        + 1;
    (line, column)
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use super::*;

    const FULL: &str = r#"
[daemon]
pin_path = "/sys/fs/bpf/edge"

[xdp]
interface = "ens5"
mode = "generic"
action = "audit"
allowed_tcp_ports = [22, 80, 443]
ingress_addresses = ["203.0.113.10/32", "203.0.113.128/25", "2001:db8::10"]
trusted_sources = ["198.51.100.0/24", "192.0.2.7"]
icmp = "drop"
ipv6 = "filter"
flow_timeout_tcp_secs = 3600
flow_timeout_udp_secs = 30

[denylist]
cidrs = ["192.0.2.0/24", "2001:db8:bad::/48 ; inline comment"]
files = ["/var/lib/netguard/drop.txt", "lists/firehol_level1.netset"]

[ratelimit]
interfaces = ["docker0", "veth1a2b"]
container_cidrs = ["172.17.0.0/16", "fd00:17::/64"]
rate = "160Mbit/s"
burst = "1.6GB"

[[ratelimit.container]]
address = "172.17.0.9"
rate = "40MB/s"

[[ratelimit.container]]
address = "fd00:17::9"
burst = 3200000000
"#;

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    fn minimal() -> Config {
        Config {
            xdp: XdpConfig {
                interface: "eth0".into(),
                ..XdpConfig::default()
            },
            ..Config::default()
        }
    }

    fn problems_of(text: &str) -> Vec<Problem> {
        match Config::from_toml_str(text, "test.toml") {
            Err(ConfigError::Invalid { origin, problems }) => {
                assert_eq!(origin, "test.toml");
                problems
            }
            other => panic!("expected Invalid, got {other:?}"),
        }
    }

    fn parse_err(text: &str) -> (usize, usize, String) {
        match Config::from_toml_str(text, "test.toml") {
            Err(ConfigError::Parse {
                origin,
                line,
                column,
                message,
            }) => {
                assert_eq!(origin, "test.toml");
                (line, column, message)
            }
            other => panic!("expected Parse, got {other:?}"),
        }
    }

    /// A unique directory under the system temp dir, removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(tag: &str) -> Self {
            let dir = std::env::temp_dir().join(format!(
                "netguard-config-{tag}-{}-{:?}",
                std::process::id(),
                std::thread::current().id()
            ));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            TempDir(dir)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn defaults() {
        let config = Config::from_toml_str("[xdp]\ninterface = \"eth0\"\n", "test.toml").unwrap();
        assert_eq!(config, minimal());
        assert_eq!(config.daemon.pin_path, Path::new(DEFAULT_PIN_PATH));
        let xdp = &config.xdp;
        assert_eq!(xdp.mode, AttachMode::Native);
        assert_eq!(xdp.action, Action::Enforce);
        assert_eq!(xdp.allowed_tcp_ports, [80, 443]);
        assert!(xdp.ingress_addresses.is_empty());
        assert!(xdp.trusted_sources.is_empty());
        assert_eq!(xdp.icmp, IcmpMode::Essential);
        assert_eq!(xdp.ipv6, Ipv6Mode::Drop);
        assert_eq!(xdp.flow_timeout_tcp_secs, 600);
        assert_eq!(xdp.flow_timeout_udp_secs, 60);
        assert_eq!(config.denylist, DenylistConfig::default());
    }

    #[test]
    fn interface_is_required() {
        let problems = problems_of("");
        assert_eq!(
            problems,
            [Problem {
                key: "xdp.interface".into(),
                message: "must not be empty".into()
            }]
        );
    }

    #[test]
    fn full_example_round_trip() {
        let config = Config::from_toml_str(FULL, "full.toml").unwrap();
        let want = Config {
            daemon: DaemonConfig {
                pin_path: "/sys/fs/bpf/edge".into(),
            },
            xdp: XdpConfig {
                interface: "ens5".into(),
                mode: AttachMode::Generic,
                action: Action::Audit,
                allowed_tcp_ports: vec![22, 80, 443],
                ingress_addresses: vec![
                    net("203.0.113.10/32"),
                    net("203.0.113.128/25"),
                    net("2001:db8::10/128"),
                ],
                trusted_sources: vec![net("198.51.100.0/24"), net("192.0.2.7/32")],
                icmp: IcmpMode::Drop,
                ipv6: Ipv6Mode::Filter,
                flow_timeout_tcp_secs: 3600,
                flow_timeout_udp_secs: 30,
            },
            denylist: DenylistConfig {
                cidrs: vec![
                    "192.0.2.0/24".into(),
                    "2001:db8:bad::/48 ; inline comment".into(),
                ],
                files: vec![
                    "/var/lib/netguard/drop.txt".into(),
                    "lists/firehol_level1.netset".into(),
                ],
            },
            ratelimit: RatelimitConfig {
                interfaces: vec!["docker0".into(), "veth1a2b".into()],
                container_cidrs: vec![net("172.17.0.0/16"), net("fd00:17::/64")],
                rate: BytesPerSec(20_000_000),
                burst: Bytes(1_600_000_000),
                container: vec![
                    ContainerLimit {
                        address: "172.17.0.9".parse().unwrap(),
                        rate: Some(BytesPerSec(40_000_000)),
                        burst: None,
                    },
                    ContainerLimit {
                        address: "fd00:17::9".parse().unwrap(),
                        rate: None,
                        burst: Some(Bytes(3_200_000_000)),
                    },
                ],
            },
            proxy: None,
            app: Vec::new(),
            private_network: Vec::new(),
            admin: crate::admin::AdminConfig::default(),
        };
        assert_eq!(config, want);

        let text = toml::to_string(&config).unwrap();
        assert_eq!(Config::from_toml_str(&text, "round-trip").unwrap(), config);
        // Serialized addresses are always CIDRs.
        assert!(text.contains("\"192.0.2.7/32\""), "{text}");

        let defaults = toml::to_string(&minimal()).unwrap();
        assert_eq!(
            Config::from_toml_str(&defaults, "round-trip").unwrap(),
            minimal()
        );
    }

    #[test]
    fn bare_address_is_a_host_prefix() {
        let config = Config::from_toml_str(
            "[xdp]\ninterface = \"eth0\"\ningress_addresses = [\"203.0.113.10\", \"2001:db8::1\"]\n",
            "test.toml",
        )
        .unwrap();
        assert_eq!(
            config.xdp.ingress_addresses,
            [net("203.0.113.10/32"), net("2001:db8::1/128")]
        );
    }

    #[test]
    fn each_validation_problem() {
        let cases: &[(&str, &str, &str)] = &[
            // (xdp keys after `interface`, or a whole document; key; message fragment)
            ("interface = \"\"", "xdp.interface", "must not be empty"),
            (
                "interface = \"abcdefghijklmnop\"",
                "xdp.interface",
                "at most 15",
            ),
            ("interface = \"eth/0\"", "xdp.interface", "'/'"),
            ("interface = \"eth0:1\"", "xdp.interface", "':'"),
            ("interface = \"eth 0\"", "xdp.interface", "whitespace"),
            (
                "interface = \"..\"",
                "xdp.interface",
                "not an interface name",
            ),
            (
                "allowed_tcp_ports = [80, 0]",
                "xdp.allowed_tcp_ports[1]",
                "port 0",
            ),
            (
                "allowed_tcp_ports = [80, 443, 80]",
                "xdp.allowed_tcp_ports[2]",
                "80 duplicates xdp.allowed_tcp_ports[0]",
            ),
            (
                "ingress_addresses = [\"203.0.113.10/24\"]",
                "xdp.ingress_addresses[0]",
                "use 203.0.113.10/32 for the single address or 203.0.113.0/24 for the network",
            ),
            (
                "trusted_sources = [\"10.0.0.0/8\", \"2001:db8::1/64\"]",
                "xdp.trusted_sources[1]",
                "2001:db8::1/128",
            ),
            (
                "flow_timeout_tcp_secs = 0",
                "xdp.flow_timeout_tcp_secs",
                "1 to 86400",
            ),
            (
                "flow_timeout_udp_secs = 86401",
                "xdp.flow_timeout_udp_secs",
                "not 86401",
            ),
        ];
        for &(xdp, key, fragment) in cases {
            let text = if xdp.starts_with("interface") {
                format!("[xdp]\n{xdp}\n")
            } else {
                format!("[xdp]\ninterface = \"eth0\"\n{xdp}\n")
            };
            let problems = problems_of(&text);
            assert_eq!(problems.len(), 1, "{xdp}: {problems:?}");
            assert_eq!(problems[0].key, key, "{xdp}");
            assert!(
                problems[0].message.contains(fragment),
                "{xdp}: {}",
                problems[0].message
            );
        }

        let other: &[(&str, &str, &str)] = &[
            (
                "[daemon]\npin_path = \"\"",
                "daemon.pin_path",
                "must not be empty",
            ),
            (
                "[daemon]\npin_path = \"bpf/netguard\"",
                "daemon.pin_path",
                "absolute",
            ),
            (
                "[denylist]\ncidrs = [\"192.0.2.0/24\", \"10.0.0.1/8\"]",
                "denylist.cidrs[1]",
                "host bits set",
            ),
            (
                "[denylist]\ncidrs = [\"hello\"]",
                "denylist.cidrs[0]",
                "\"hello\"",
            ),
            (
                "[denylist]\ncidrs = [\"# nothing\"]",
                "denylist.cidrs[0]",
                "no address",
            ),
            (
                "[denylist]\nfiles = [\"\"]",
                "denylist.files[0]",
                "must not be empty",
            ),
        ];
        for &(section, key, fragment) in other {
            let text = format!("[xdp]\ninterface = \"eth0\"\n{section}\n");
            let problems = problems_of(&text);
            assert_eq!(problems.len(), 1, "{section}: {problems:?}");
            assert_eq!(problems[0].key, key, "{section}");
            assert!(
                problems[0].message.contains(fragment),
                "{section}: {}",
                problems[0].message
            );
        }
    }

    #[test]
    fn every_duplicate_port_points_at_the_first() {
        let mut config = minimal();
        config.xdp.allowed_tcp_ports = vec![80, 443, 80, 80];
        let problems = config.validate().unwrap_err();
        let shown: Vec<String> = problems.iter().map(ToString::to_string).collect();
        assert_eq!(
            shown,
            [
                "xdp.allowed_tcp_ports[2]: 80 duplicates xdp.allowed_tcp_ports[0]",
                "xdp.allowed_tcp_ports[3]: 80 duplicates xdp.allowed_tcp_ports[0]",
            ]
        );
    }

    #[test]
    fn ingress_capacity() {
        let mut config = minimal();
        config.xdp.ingress_addresses = (0..=MAX_INGRESS_V4)
            .map(|i| IpNet::from(IpAddr::from([10, 0, 0, i as u8])))
            .chain(
                (0..=MAX_INGRESS_V6)
                    .map(|i| IpNet::from(IpAddr::from([0x2001, 0xdb8, 0, 0, 0, 0, 0, i as u16]))),
            )
            .collect();
        let problems = config.validate().unwrap_err();
        let messages: Vec<&str> = problems
            .iter()
            .inspect(|p| assert_eq!(p.key, "xdp.ingress_addresses"))
            .map(|p| p.message.as_str())
            .collect();
        assert_eq!(
            messages,
            [
                "65 IPv4 entries; the XDP program holds at most 64",
                "17 IPv6 entries; the XDP program holds at most 16"
            ]
        );

        config.xdp.ingress_addresses.truncate(MAX_INGRESS_V4);
        assert_eq!(config.validate(), Ok(()));
    }

    #[test]
    fn several_problems_reported_together() {
        let text = r#"
[daemon]
pin_path = "relative"
[xdp]
interface = ""
allowed_tcp_ports = [0, 22, 22]
ingress_addresses = ["203.0.113.10/24"]
flow_timeout_udp_secs = 0
[denylist]
cidrs = ["1.2.3.4/33"]
"#;
        let err = Config::from_toml_str(text, "edge.toml").unwrap_err();
        let ConfigError::Invalid { problems, .. } = &err else {
            panic!("expected Invalid, got {err:?}");
        };
        let keys: Vec<&str> = problems.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "daemon.pin_path",
                "xdp.interface",
                "xdp.allowed_tcp_ports[0]",
                "xdp.allowed_tcp_ports[2]",
                "xdp.ingress_addresses[0]",
                "xdp.flow_timeout_udp_secs",
                "denylist.cidrs[0]",
            ]
        );
        let shown = err.to_string();
        assert!(
            shown.starts_with(
                "edge.toml: invalid config:\n  - daemon.pin_path: must be an absolute path"
            ),
            "{shown}"
        );
        assert!(
            shown.contains("\n  - xdp.interface: must not be empty\n  - "),
            "{shown}"
        );
        assert_eq!(shown.lines().count(), 1 + problems.len(), "{shown}");
    }

    #[test]
    fn unknown_key_names_key_and_line() {
        let (line, column, message) =
            parse_err("[xdp]\ninterface = \"eth0\"\nallowed_ports = [22]\n");
        assert_eq!((line, column), (3, 1));
        assert!(
            message.contains("unknown field `allowed_ports`"),
            "{message}"
        );

        let (line, _, message) = parse_err("[daemon]\npin_path = \"/x\"\n[bogus]\nfoo = 1\n");
        assert_eq!(line, 3);
        assert!(message.contains("unknown field `bogus`"), "{message}");

        let err =
            Config::from_toml_str("[xdp]\nifname = \"eth0\"\n", "/etc/netguard.toml").unwrap_err();
        assert!(
            err.to_string()
                .starts_with("parsing config /etc/netguard.toml:2:1: unknown field `ifname`"),
            "{err}"
        );
    }

    #[test]
    fn bad_values_are_parse_errors_with_position() {
        let (line, column, message) = parse_err(
            "[xdp]\ninterface = \"eth0\"\ningress_addresses = [\"203.0.113.10\", \"bogus\"]\n",
        );
        assert_eq!((line, column), (3, 21));
        assert_eq!(
            message,
            "xdp.ingress_addresses[1]: not an IP address or CIDR: \"bogus\""
        );

        let (line, _, message) = parse_err("[xdp]\ninterface = \"eth0\"\nmode = \"fast\"\n");
        assert_eq!(line, 3);
        assert!(message.contains("unknown variant `fast`"), "{message}");

        let (line, _, _) =
            parse_err("[xdp]\ninterface = \"eth0\"\nallowed_tcp_ports = [80, 65536]\n");
        assert_eq!(line, 3);

        let (line, _, _) = parse_err("[xdp\n");
        assert_eq!(line, 1);
    }

    #[test]
    fn load_resolves_relative_list_paths_against_the_config_directory() {
        let dir = TempDir::new("load");
        let path = dir.0.join("netguard.toml");
        std::fs::write(
            &path,
            "[xdp]\ninterface = \"eth0\"\n[denylist]\n\
             files = [\"lists/drop.txt\", \"/abs/edrop.txt\", \"../up.netset\"]\n",
        )
        .unwrap();
        let config = Config::load(&path).unwrap();
        assert_eq!(
            config.denylist.files,
            [
                dir.0.join("lists/drop.txt"),
                PathBuf::from("/abs/edrop.txt"),
                dir.0.join("../up.netset"),
            ]
        );
    }

    #[test]
    fn load_errors_name_the_path() {
        let dir = TempDir::new("load-errors");
        let missing = dir.0.join("missing.toml");
        let err = Config::load(&missing).unwrap_err();
        assert!(matches!(&err, ConfigError::Read { path, .. } if *path == missing));
        assert!(
            err.to_string()
                .starts_with(&format!("reading config {}: ", missing.display())),
            "{err}"
        );

        let invalid = dir.0.join("invalid.toml");
        std::fs::write(&invalid, "[xdp]\ninterface = \"eth0\"\nicmp = \"some\"\n").unwrap();
        let err = Config::load(&invalid).unwrap_err();
        assert!(
            err.to_string()
                .starts_with(&format!("parsing config {}:3:", invalid.display())),
            "{err}"
        );
    }

    #[test]
    fn line_column_counts_characters() {
        let text = "a\nbé=x";
        assert_eq!(line_column(text, 0), (1, 1));
        assert_eq!(line_column(text, 2), (2, 1));
        assert_eq!(line_column(text, text.find('=').unwrap()), (2, 3));
        assert_eq!(line_column(text, 1000), (2, 5));
    }

    #[test]
    fn more_overrides_than_the_map_holds_are_refused() {
        let mut text = String::from(
            "[xdp]\ninterface = \"eth0\"\n[ratelimit]\ninterfaces = [\"docker0\"]\n\
             container_cidrs = [\"172.16.0.0/12\"]\n",
        );
        for i in 0..=LIMIT_OVERRIDES_CAPACITY {
            text.push_str(&format!(
                "[[ratelimit.container]]\naddress = \"172.{}.{}.{}\"\n",
                16 + i / 65_536,
                (i / 256) % 256,
                i % 256
            ));
        }
        let problems = problems_of(&text);
        let too_many = problems
            .iter()
            .find(|p| p.key == "ratelimit.container")
            .unwrap_or_else(|| panic!("no count problem in {problems:#?}"));
        assert!(too_many.message.contains("65537 overrides"), "{too_many}");
    }

    #[test]
    fn ratelimit_problems_are_all_listed() {
        let problems = problems_of(
            r#"
[xdp]
interface = "eth0"
[ratelimit]
interfaces = ["docker0", "docker0", ""]
container_cidrs = ["172.17.0.1/16"]
rate = 0
burst = "32KiB"
[[ratelimit.container]]
address = "10.9.9.9"
[[ratelimit.container]]
address = "10.9.9.9"
burst = "1MB"
"#,
        );
        let keys: Vec<&str> = problems.iter().map(|p| p.key.as_str()).collect();
        for key in [
            "ratelimit.interfaces[1]",
            "ratelimit.interfaces[2]",
            "ratelimit.container_cidrs[0]",
            "ratelimit.rate",
            "ratelimit.burst",
            "ratelimit.container[0].address",
            "ratelimit.container[1].address",
        ] {
            assert!(keys.contains(&key), "{key} missing from {problems:#?}");
        }
        let burst = problems
            .iter()
            .find(|p| p.key == "ratelimit.burst")
            .unwrap();
        assert!(burst.message.contains("65536"), "{burst}");
    }

    #[test]
    fn ratelimit_units_errors_name_the_key() {
        let err = Config::from_toml_str(
            "[xdp]\ninterface = \"eth0\"\n[ratelimit]\nrate = \"fast\"\n",
            "t.toml",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("t.toml:4") && err.contains("fast"), "{err}");
    }
    const PROXY: &str = r#"
[xdp]
interface = "eth0"

[proxy]
http_listen = "127.0.0.1:8080"
https_listen = "[::]:8443"
max_body_bytes = "75MiB"
max_header_section_bytes = 32768
max_header_line_bytes = "8KiB"
header_read_timeout_secs = 2.5
backend_response_timeout_secs = 30
trusted_proxies = ["10.0.0.0/8", "192.0.2.7"]
router_log = "off"

[[app]]
name = "shop"
domains = ["shop.example.com", "*.shop.example.com"]
backends = ["172.17.0.2:5000", "172.17.0.3:5000"]
tls = "terminate"
cert = "certs/shop.pem"
key = "/etc/netguard/certs/shop.key"
force_https = true

[[app]]
name = "blog"
domains = ["blog.example.com"]
backends = []
"#;

    #[test]
    fn an_app_with_a_certificate_and_no_tls_terminates_and_one_without_is_plain_http() {
        let text = "[xdp]\ninterface = \"eth0\"\n[proxy]\n\
            [[app]]\nname = \"a\"\ndomains = [\"a.example\"]\ncert = \"a.pem\"\nkey = \"a.key\"\n\
            [[app]]\nname = \"b\"\ndomains = [\"b.example\"]\n";
        let config = Config::from_toml_str(text, "t.toml").unwrap();
        assert_eq!(config.app[0].tls, Some(TlsMode::Terminate));
        assert_eq!(config.app[1].tls, None);
        // Half a certificate is still an error, now naming the missing half.
        let half = "[xdp]\ninterface = \"eth0\"\n[proxy]\n[[app]]\nname = \"a\"\ndomains = [\"a.example\"]\ncert = \"a.pem\"\n";
        let err = Config::from_toml_str(half, "t.toml")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("app[0].key") && err.contains("needs a PEM file"),
            "{err}"
        );
    }

    #[test]
    fn proxy_and_apps_parse_with_defaults_for_the_rest() {
        let config = Config::from_toml_str(PROXY, "proxy.toml").unwrap();
        let p = config.proxy.as_ref().expect("[proxy] present");
        assert_eq!(p.http_listen, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(p.https_listen, "[::]:8443".parse().unwrap());
        assert_eq!(p.max_body_bytes, Bytes(78_643_200));
        assert_eq!(p.max_header_line_bytes, Bytes(8192));
        assert_eq!(
            p.header_read_timeout_secs,
            Seconds(Duration::from_millis(2500))
        );
        assert_eq!(
            p.backend_response_timeout_secs,
            Seconds(Duration::from_secs(30))
        );
        assert_eq!(
            p.keepalive_timeout_secs,
            ProxyConfig::default().keepalive_timeout_secs
        );
        assert_eq!(p.trusted_proxies, [net("10.0.0.0/8"), net("192.0.2.7/32")]);
        assert_eq!(config.app.len(), 2);
        assert_eq!(config.app[0].tls, Some(TlsMode::Terminate));
        assert_eq!(config.app[1].backends, []);
        assert!(!config.app[1].force_https);

        let text = toml::to_string(&config).unwrap();
        assert_eq!(Config::from_toml_str(&text, "round-trip").unwrap(), config);

        // No [proxy]: the proxy is off and nothing about it is serialized.
        assert_eq!(minimal().proxy, None);
        assert!(!toml::to_string(&minimal()).unwrap().contains("proxy"));
        let defaults =
            Config::from_toml_str("[xdp]\ninterface = \"eth0\"\n[proxy]\n", "t").unwrap();
        assert_eq!(defaults.proxy, Some(ProxyConfig::default()));
        assert_eq!(
            ProxyConfig::default().max_body_bytes,
            Bytes(75 * 1024 * 1024)
        );
    }

    #[test]
    fn app_certificate_paths_are_relative_to_the_config_file() {
        let dir = TempDir::new("proxy-load");
        let path = dir.0.join("netguard.toml");
        std::fs::write(&path, PROXY).unwrap();
        let config = Config::load(&path).unwrap();
        assert_eq!(config.app[0].cert, Some(dir.0.join("certs/shop.pem")));
        assert_eq!(
            config.app[0].key,
            Some(PathBuf::from("/etc/netguard/certs/shop.key"))
        );
    }

    #[test]
    fn balance_and_pool_keys_parse_and_bad_values_name_the_line() {
        let config = Config::from_toml_str(
            "[xdp]\ninterface = \"eth0\"\n[proxy]\nbalance = \"least_connections\"\nbackend_pool_idle_timeout_secs = 4.5\nbackend_pool_max_idle_per_backend = 0\ndrain_timeout_secs = 0\n",
            "t",
        )
        .unwrap();
        let p = config.proxy.unwrap();
        assert_eq!(p.balance, Balance::LeastConnections);
        assert_eq!(
            p.backend_pool_idle_timeout_secs,
            Seconds(Duration::from_millis(4500))
        );
        assert_eq!(p.backend_pool_max_idle_per_backend, 0);
        assert_eq!(p.drain_timeout_secs, Seconds(Duration::ZERO));
        assert_eq!(ProxyConfig::default().balance, Balance::RoundRobin);
        let err = Config::from_toml_str(
            "[xdp]\ninterface = \"eth0\"\n[proxy]\nbalance = \"random\"\n",
            "bad.toml",
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("bad.toml:4:") && err.contains("least_connections"),
            "{err}"
        );
    }

    #[test]
    fn proxy_problems_are_all_listed() {
        let problems = problems_of(
            r#"
[xdp]
interface = "eth0"
[proxy]
http_listen = "0.0.0.0:80"
https_listen = "0.0.0.0:80"
max_header_line_bytes = 100
max_header_section_bytes = "2MiB"
keepalive_timeout_secs = 0
backend_eject_secs = 86401
backend_pool_idle_timeout_secs = 0
backend_pool_max_idle_per_backend = 10
backend_pool_max_idle = 5
drain_timeout_secs = 90000
max_connections = 0
workers = 65
tunnel_idle_timeout_secs = 0
trusted_proxies = ["10.0.0.1/8"]
router_log = ""
[[app]]
name = "shop"
domains = ["shop.example.com", "*.shop.example.com"]
backends = ["172.17.0.2:5000", "172.17.0.2:5000", "0.0.0.0:80", "172.17.0.3:0"]
tls = "terminate"
[[app]]
name = "shop"
domains = ["SHOP.example.com.", "bad domain", "*.*.x"]
force_https = true
[[app]]
name = "bad name!"
domains = []
tls = "passthrough"
cert = "backend.pem"
[[app]]
name = "stray"
domains = ["stray.example.com"]
cert = "x.pem"
"#,
        );
        let keys: Vec<&str> = problems.iter().map(|p| p.key.as_str()).collect();
        for key in [
            "proxy.https_listen",
            "proxy.max_header_line_bytes",
            "proxy.max_header_section_bytes",
            "proxy.keepalive_timeout_secs",
            "proxy.backend_eject_secs",
            "proxy.backend_pool_idle_timeout_secs",
            "proxy.backend_pool_max_idle_per_backend",
            "proxy.drain_timeout_secs",
            "proxy.tunnel_idle_timeout_secs",
            "proxy.max_connections",
            "proxy.workers",
            "proxy.max_connections_per_client",
            "proxy.trusted_proxies[0]",
            "proxy.router_log",
            "app[0].backends[1]",
            "app[0].backends[2]",
            "app[0].backends[3]",
            "app[0].cert",
            "app[0].key",
            "app[1].name",
            "app[1].domains[0]",
            "app[1].domains[1]",
            "app[1].domains[2]",
            "app[1].force_https",
            "app[2].name",
            "app[2].domains",
            "app[2].cert",
            // A cert without tls means terminate, which needs the key too.
            "app[3].key",
        ] {
            assert!(keys.contains(&key), "{key} missing from {problems:#?}");
        }
        let dup = problems
            .iter()
            .find(|p| p.key == "app[1].domains[0]")
            .unwrap();
        assert!(dup.message.contains("app[0].domains[0]"), "{dup}");

        let problems = problems_of(
            "[xdp]\ninterface = \"eth0\"\n[[app]]\nname = \"a\"\ndomains = [\"a.com\"]\n",
        );
        assert_eq!(problems[0].key, "app");

        // A passthrough app needs no certificate, and may redirect plain HTTP.
        let config = Config::from_toml_str(
            "[xdp]\ninterface = \"eth0\"\n[proxy]\n[[app]]\nname = \"a\"\ndomains = [\"a.com\"]\n\
             backends = [\"172.17.0.2:443\"]\ntls = \"passthrough\"\nforce_https = true\n",
            "t",
        )
        .unwrap();
        assert_eq!(config.app[0].tls, Some(TlsMode::Passthrough));
        assert!(config.validate().is_ok(), "{:?}", config.validate());
    }

    #[test]
    fn seconds_accept_integers_and_fractions() {
        let parse = |v: &str| {
            Config::from_toml_str(
                &format!("[xdp]\ninterface = \"eth0\"\n[proxy]\nkeepalive_timeout_secs = {v}\n"),
                "t",
            )
            .map(|c| c.proxy.unwrap().keepalive_timeout_secs.0)
        };
        assert_eq!(parse("5").unwrap(), Duration::from_secs(5));
        assert_eq!(parse("0.25").unwrap(), Duration::from_millis(250));
        assert_eq!(parse("1.0004").unwrap(), Duration::from_millis(1000));
        assert!(parse("-1").is_err());
        assert!(parse("\"5s\"").is_err());
        assert!(parse("nan").is_err());
    }
}
