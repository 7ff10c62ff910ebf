//! The three proxies under test, configured alike: two apps routed by `Host` (and SNI), both
//! over the one shared backend, plain HTTP and TLS (one ECDSA P-256 certificate for both
//! names), no access log, X-Forwarded-For added, `Host` passed through, keep-alive to the
//! clients. nginx and HAProxy keep idle connections to the backend (`keepalive 64` /
//! HAProxy's default `http-reuse safe`), as an operator would configure them.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{Context as _, Result, bail};
use netguard_tests::{Daemon, NetNs, Sandbox, certs, cmd, daemon::Config};

use crate::servers::{self, BACKEND, Server};

pub const APPS: [&str; 2] = ["app1.bench.test", "app2.bench.test"];
/// The app wrk drives.
pub const HOST: &str = APPS[0];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Backend,
    Netguard,
    Nginx,
    Haproxy,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Backend => "backend alone",
            Kind::Netguard => "netguard",
            Kind::Nginx => "nginx",
            Kind::Haproxy => "HAProxy",
        }
    }

    pub fn http(self) -> SocketAddr {
        match self {
            Kind::Backend => BACKEND,
            Kind::Netguard => local(8080),
            Kind::Nginx => local(8081),
            Kind::Haproxy => local(8082),
        }
    }

    /// wrk's URL for the driven app (`None`: the backend has no TLS).
    pub fn url(self, tls: bool) -> Option<String> {
        match tls {
            false => Some(format!("http://{HOST}:{}/", self.http().port())),
            true => Some(format!("https://{HOST}:{}/", self.https()?.port())),
        }
    }

    pub fn https(self) -> Option<SocketAddr> {
        match self {
            Kind::Backend => None,
            Kind::Netguard => Some(local(8443)),
            Kind::Nginx => Some(local(8444)),
            Kind::Haproxy => Some(local(8445)),
        }
    }
}

fn local(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// The certificate (chain) and key both apps use, and the two concatenated for HAProxy.
pub struct Certs {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub combined: PathBuf,
}

pub fn certs(dir: &Path) -> Result<Certs> {
    let (cert, key) =
        certs::try_certificate(dir, "apps", &APPS).context("making the apps' certificate")?;
    let combined = dir.join("apps-combined.pem");
    let mut pem = std::fs::read(&cert)?;
    pem.extend(std::fs::read(&key)?);
    std::fs::write(&combined, pem)?;
    Ok(Certs {
        cert,
        key,
        combined,
    })
}

/// netguard's config: the sandbox's standard XDP policy (the filter sits on the edge veth; the
/// benchmark's traffic stays on loopback) and the proxy.
pub fn netguard_toml(sb: &Sandbox, c: &Certs) -> (Config, String) {
    let mut config = Config::for_sandbox(sb);
    let https = Kind::Netguard.https().expect("netguard has TLS");
    let mut extra = format!(
        "[proxy]\nhttp_listen = \"{}\"\nhttps_listen = \"{https}\"\nrouter_log = \"off\"\n\
         max_connections = 20000\nmax_connections_per_client = 20000\n\
         keepalive_timeout_secs = 300\nbackend_pool_max_idle_per_backend = 64\n",
        Kind::Netguard.http()
    );
    for (i, app) in APPS.iter().enumerate() {
        extra.push_str(&format!(
            "\n[[app]]\nname = \"app{}\"\ndomains = [\"{app}\"]\nbackends = [\"{BACKEND}\"]\n\
             tls = \"terminate\"\ncert = \"{}\"\nkey = \"{}\"\n",
            i + 1,
            c.cert.display(),
            c.key.display()
        ));
    }
    config.extra = extra;
    let toml = config.to_toml();
    (config, toml)
}

pub fn start_netguard(bin: &Path, sb: &Sandbox, c: &Certs) -> Result<Daemon> {
    let (config, toml) = netguard_toml(sb, c);
    let started = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        Daemon::start_toml(
            bin,
            &sb.edge,
            &config.pin_path,
            &toml,
            Duration::from_secs(30),
        )
    }));
    started.map_err(|_| anyhow::anyhow!("the netguard daemon did not start (its log is above)"))
}

pub fn start_nginx(ns: &NetNs, dir: &Path, c: &Certs) -> Result<Server> {
    let d = dir.display();
    let (http, https) = (
        Kind::Nginx.http(),
        Kind::Nginx.https().expect("nginx has TLS"),
    );
    let mut servers = format!(
        "  server {{\n    listen {http} default_server backlog=4096;\n    \
         listen {https} ssl default_server backlog=4096;\n    server_name _;\n    \
         return 404;\n  }}\n"
    );
    for app in APPS {
        servers.push_str(&format!(
            "  server {{\n    listen {http};\n    listen {https} ssl;\n    server_name {app};\n    \
             location / {{ proxy_pass http://backend; }}\n  }}\n"
        ));
    }
    let conf = format!(
        "{head}http {{\n  access_log off;\n  keepalive_requests 100000000;\n  \
         keepalive_timeout 300s;\n  client_body_temp_path {d}/nginx-body;\n  \
         proxy_temp_path {d}/nginx-proxy;\n  ssl_certificate {cert};\n  \
         ssl_certificate_key {key};\n  proxy_http_version 1.1;\n  \
         proxy_set_header Connection \"\";\n  proxy_set_header Host $host;\n  \
         proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;\n  \
         proxy_set_header X-Forwarded-Proto $scheme;\n  \
         upstream backend {{ server {BACKEND}; keepalive 64; }}\n{servers}}}\n",
        head = servers::nginx_head(dir, "nginx"),
        cert = c.cert.display(),
        key = c.key.display(),
    );
    servers::nginx(ns, dir, "nginx", &conf, http)
}

pub fn start_haproxy(ns: &NetNs, dir: &Path, c: &Certs) -> Result<Server> {
    let (http, https) = (
        Kind::Haproxy.http(),
        Kind::Haproxy.https().expect("HAProxy has TLS"),
    );
    let mut routes = String::new();
    let mut backends = String::new();
    for (i, app) in APPS.iter().enumerate() {
        routes.push_str(&format!(
            "  use_backend app{n} if {{ req.hdr(host),field(1,:) -i {app} }}\n",
            n = i + 1
        ));
        backends.push_str(&format!(
            "backend app{n}\n  server s1 {BACKEND}\n",
            n = i + 1
        ));
    }
    let conf = format!(
        "global\n  maxconn 8000\n  nbthread 2\n  pidfile {d}/haproxy.pid\n\n\
         defaults\n  mode http\n  timeout connect 5s\n  timeout client 300s\n  \
         timeout server 60s\n  timeout http-keep-alive 300s\n  option forwardfor\n\n\
         frontend web\n  bind {http} backlog 4096\n  bind {https} ssl crt {crt}\n  \
         http-request set-header X-Forwarded-Proto https if {{ ssl_fc }}\n{routes}  \
         default_backend unknown\n\n{backends}backend unknown\n  \
         http-request deny deny_status 404\n",
        d = dir.display(),
        crt = c.combined.display(),
    );
    let path = dir.join("haproxy.cfg");
    std::fs::write(&path, conf).context("writing haproxy.cfg")?;
    let cfg = path.to_string_lossy().into_owned();
    let check = ns.output(&["haproxy", "-c", "-f", &cfg]);
    if !check.status.success() {
        bail!(
            "haproxy -c rejected the config: {}{}",
            cmd::lossy(&check.stdout),
            cmd::lossy(&check.stderr)
        );
    }
    let proc = ns.spawn(&["haproxy", "-db", "-f", &cfg], &dir.join("haproxy.log"));
    let mut server = Server {
        name: "haproxy",
        proc,
    };
    if let Err(e) = servers::wait_listening(ns, http, Duration::from_secs(10)) {
        server.alive()?;
        return Err(e.context("haproxy did not start"));
    }
    Ok(server)
}
