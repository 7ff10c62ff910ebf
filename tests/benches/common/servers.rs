//! Server processes the benches run inside their namespace: nginx as the shared backend (and
//! as a proxy), HAProxy, each with its own config, pid and log files in a temp dir, on ports of
//! the bench's own namespace (never the host's). Also the namespace's hosts file, so that wrk
//! can resolve the app names it sends as SNI.

use std::{
    net::{SocketAddr, TcpStream},
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use netguard_tests::{NetNs, Proc, http::Client};

/// Every backend answer: 100 bytes of body.
pub const BODY: &str = "netguard benchmark backend: a 100-byte body, served by nginx from memory...........................\n";

/// The backend every proxy forwards to.
pub const BACKEND: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 8000);

/// `/etc/netns/NS/hosts`: `ip netns exec NS` bind-mounts it over /etc/hosts. Removed on drop.
pub struct Hosts {
    dir: PathBuf,
}

impl Hosts {
    pub fn new(ns: &NetNs, names: &[&str]) -> Result<Hosts> {
        let dir = Path::new("/etc/netns").join(ns.name());
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let hosts = Hosts { dir };
        let text = format!(
            "127.0.0.1 localhost {}\n::1 localhost ip6-localhost\n",
            names.join(" ")
        );
        std::fs::write(hosts.dir.join("hosts"), text).context("writing the namespace's hosts")?;
        Ok(hosts)
    }
}

impl Drop for Hosts {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Waits until something accepts TCP connections on `addr` inside `ns`.
pub fn wait_listening(ns: &NetNs, addr: SocketAddr, timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        let ok = ns.run(|| TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok());
        if ok {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!("nothing listens on {addr} after {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// One GET with `Host: host` on a fresh connection inside `ns`: the status and body.
pub fn get(ns: &NetNs, addr: SocketAddr, host: &str) -> Result<(u16, Vec<u8>)> {
    let request = format!("GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    let r = ns.run(|| {
        let mut c = Client::connect(addr);
        c.write(request.as_bytes());
        c.responses(1, Duration::from_secs(5))
    });
    let r = r
        .into_iter()
        .next()
        .with_context(|| format!("no answer from {addr} for Host {host}"))?;
    Ok((r.status, r.body))
}

/// Checks that `addr` answers `Host: host` with 200 and the backend's body.
pub fn check_serves(ns: &NetNs, addr: SocketAddr, host: &str, what: &str) -> Result<()> {
    let (status, body) = get(ns, addr, host)?;
    if status != 200 || body != BODY.as_bytes() {
        bail!(
            "{what} on {addr} (Host {host}) answered {status} with {} bytes, not 200 with the \
             backend's 100 bytes: {:?}",
            body.len(),
            String::from_utf8_lossy(&body)
        );
    }
    Ok(())
}

/// A process started in the namespace, with its log.
pub struct Server {
    pub name: &'static str,
    pub proc: Proc,
}

impl Server {
    pub fn pid(&self) -> u32 {
        self.proc.pid()
    }

    /// Fails with the log's tail if the process has exited.
    pub fn alive(&mut self) -> Result<()> {
        if let Some(status) = self.proc.try_exited() {
            bail!(
                "{} exited ({status}); log:\n{}",
                self.name,
                self.proc.log_tail(20)
            );
        }
        Ok(())
    }
}

/// `nginx` in the foreground (`daemon off;` is in the config) with `conf` as its config, its
/// prefix, pid and error log in `dir`; waits until `ready` accepts connections.
pub fn nginx(
    ns: &NetNs,
    dir: &Path,
    name: &'static str,
    conf: &str,
    ready: SocketAddr,
) -> Result<Server> {
    let conf_path = dir.join(format!("{name}.conf"));
    std::fs::write(&conf_path, conf).with_context(|| format!("writing {}", conf_path.display()))?;
    let prefix = dir.join(name);
    std::fs::create_dir_all(&prefix)?;
    let (p, c, e) = (
        format!("{}/", prefix.display()),
        conf_path.to_string_lossy().into_owned(),
        dir.join(format!("{name}-error.log"))
            .to_string_lossy()
            .into_owned(),
    );
    let proc = ns.spawn(
        &["nginx", "-p", &p, "-c", &c, "-e", &e],
        &dir.join(format!("{name}.log")),
    );
    let mut server = Server { name, proc };
    if let Err(err) = wait_listening(ns, ready, Duration::from_secs(10)) {
        server.alive()?;
        return Err(err.context(format!("{name} did not start")));
    }
    Ok(server)
}

/// The nginx settings every instance shares: workers as root (the temp dir is root's), no
/// access log, keep-alive connections that outlast a run.
pub fn nginx_head(dir: &Path, name: &str) -> String {
    let d = dir.display();
    format!(
        "daemon off;\nuser root;\nworker_processes auto;\nworker_rlimit_nofile 20000;\n\
         pid {d}/{name}.pid;\nevents {{ worker_connections 10000; }}\n"
    )
}

/// The shared backend: nginx answering every request with [`BODY`] from memory.
pub fn backend(ns: &NetNs, dir: &Path) -> Result<Server> {
    let d = dir.display();
    let conf = format!(
        "{head}http {{\n  access_log off;\n  keepalive_requests 100000000;\n  \
         keepalive_timeout 300s;\n  default_type text/plain;\n  \
         client_body_temp_path {d}/backend-body;\n  proxy_temp_path {d}/backend-proxy;\n  \
         server {{\n    listen {BACKEND} backlog=4096;\n    \
         location / {{ return 200 \"{body}\"; }}\n  }}\n}}\n",
        head = nginx_head(dir, "backend"),
        body = BODY.replace('\n', "\\n"),
    );
    let server = nginx(ns, dir, "backend", &conf, BACKEND)?;
    check_serves(ns, BACKEND, "backend", "the backend")?;
    Ok(server)
}
