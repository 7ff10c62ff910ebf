//! The in-process proxy (`netguard::proxy::Proxy`) on loopback with its router log kept in
//! memory, and the pieces its config is built from: shared by `e2e_proxy` and
//! `e2e_proxy_protocols`, which add the methods their own clients need.

use std::{
    net::{SocketAddr, TcpListener},
    path::Path,
    sync::{Arc, Mutex},
    thread,
    time::{Duration, Instant},
};

use netguard::{
    config::{AppConfig, ProxyConfig},
    proxy::{Proxy, log::RouterLog},
};
use netguard_tests::http::{Response, curl};

/// Time limit of any single wait in these tests.
pub const T: Duration = Duration::from_secs(5);

pub struct Edge {
    pub proxy: Proxy,
    log: Arc<Mutex<Vec<String>>>,
}

impl Edge {
    pub fn start(config: ProxyConfig, apps: Vec<AppConfig>) -> Edge {
        let (log, lines) = RouterLog::memory();
        let proxy = Proxy::start_with_log(&config, &apps, log).expect("proxy starts");
        Edge { proxy, log: lines }
    }

    pub fn https_port(&self) -> u16 {
        self.proxy.https_addr().expect("https bound").port()
    }

    /// curl to `https://name:port/path` (name resolved to loopback), trusting `ca`.
    pub fn curl_tls(
        &self,
        name: &str,
        ca: &Path,
        path: &str,
        extra: &[&str],
    ) -> (Vec<Response>, Option<i32>, String) {
        let port = self.https_port();
        let resolve = format!("{name}:{port}:127.0.0.1");
        let url = format!("https://{name}:{port}{path}");
        let ca = ca.to_string_lossy().into_owned();
        let mut args = vec!["--cacert", &ca, "--resolve", &resolve];
        args.extend_from_slice(extra);
        args.push(&url);
        curl(&args)
    }

    /// Router log lines so far (waiting briefly for `n` of them).
    pub fn log_lines(&self, n: usize) -> Vec<String> {
        let deadline = Instant::now() + T;
        loop {
            let lines = self.log.lock().expect("log").clone();
            if lines.len() >= n || Instant::now() > deadline {
                return lines;
            }
            thread::sleep(Duration::from_millis(10));
        }
    }
}

pub fn app(name: &str, domains: &[&str], backends: &[SocketAddr]) -> AppConfig {
    AppConfig {
        name: name.into(),
        domains: domains.iter().map(|d| d.to_string()).collect(),
        backends: backends.to_vec(),
        tls: None,
        cert: None,
        key: None,
        force_https: false,
    }
}

/// An address nothing listens on: connects are refused.
pub fn refusing_addr() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = l.local_addr().expect("addr");
    drop(l);
    addr
}

pub fn statuses(rs: &[Response]) -> Vec<u16> {
    rs.iter().map(|r| r.status).collect()
}

/// An error page the proxy made: `status`, naming its own X-Request-ID, as HTML.
pub fn assert_error_page(r: &Response, status: u16) {
    assert_eq!(r.status, status, "{}", r.head);
    let id = r
        .header("x-request-id")
        .expect("error pages carry X-Request-ID");
    assert!(
        r.body_text().contains(id),
        "page names the request id: {}",
        r.body_text()
    );
    assert!(
        r.header("content-type")
            .is_some_and(|c| c.starts_with("text/html"))
    );
}

/// `-H` arguments that remove curl's own User-Agent and Accept and add fields `<prefix>-<i>`
/// whose lines, each with its CRLF, add up to exactly `bytes` (at most 8,000 bytes a line).
pub fn padding_args(bytes: usize, prefix: &str) -> Vec<String> {
    let mut args = vec![
        "-H".into(),
        "User-Agent:".into(),
        "-H".into(),
        "Accept:".into(),
    ];
    let mut left = bytes;
    let mut i = 0;
    while left > 0 {
        let mut len = (left - 2).min(8000);
        if left - (len + 2) > 0 && left - (len + 2) < 16 {
            len -= 16;
        }
        let name = format!("{prefix}-{i}: ");
        args.push("-H".into());
        args.push(format!("{name}{}", "p".repeat(len - name.len())));
        left -= len + 2;
        i += 1;
    }
    args
}
