//! `cargo xtask demo`: netguard's main job on a sandbox of network namespaces.
//!
//! An internet client (192.0.2.99, plus a trusted 192.0.2.50 and a denylisted 198.51.100.7) and an
//! edge (203.0.113.10, listening on TCP 22/8080 and UDP 53) joined by a veth; netguard runs in the
//! edge with the demo policy: the XDP filter on the veth, the L7 proxy on 203.0.113.10:80/443 in
//! front of two apps whose backends run in a container namespace (172.17.0.2, on a second veth from
//! the edge: `shop.demo.test`, TLS terminated with a self-signed certificate, and
//! `files.demo.test`, a 5 MB download), and the tc bandwidth limiter on the container's veth,
//! scaled down to 2 MB/s with a 1 MB burst so that the download shows it in two seconds. Then
//! private networks, on a topology of their own (`demo::private`). Every probe has an expected
//! outcome, and the demo fails (exit 1) when one differs, so it doubles as a smoke test (`cargo
//! xtask test` runs it last). Everything it creates is removed on exit, also on failure.

use std::{
    net::{IpAddr, SocketAddr},
    path::Path,
    time::Duration,
};

use anyhow::{Result, bail};
use netguard_tests::{
    Config, Daemon, ProbeResult, Sandbox, TempDir, certs,
    daemon::ensure_bpffs,
    listeners::Services,
    netns::NetNs,
    probe::{self, tcp_connect, udp_probe},
    recording::{RecordingBackend, Reply},
    sandbox::{CLIENT_ADDR, DENIED_ADDR, EDGE_ADDR, TRUSTED_ADDR},
    veth::{VethEnd, veth_pair},
};

use crate::exec::step;

mod private;

const TIMEOUT: Duration = Duration::from_millis(1500);

/// The demo app's name and what its backend answers.
const SHOP: &str = "shop.demo.test";
const SHOP_BODY: &str = "hello from the shop app";
const FILES: &str = "files.demo.test";

/// The container's address, and the demo's limit on it: small enough to see in two seconds.
const CONTAINER: [u8; 4] = [172, 17, 0, 2];
const RATE: f64 = 2_000_000.0;
const BURST: f64 = 1_000_000.0;
/// The download from `files`: the burst, then two seconds at the rate.
const DOWNLOAD: usize = 5_000_000;

struct Probe {
    what: String,
    expect_pass: bool,
    passed: bool,
}

pub fn run(bin: &Path) -> Result<()> {
    ensure_bpffs();
    let wrong = edge(bin)? + private::run(bin);
    if wrong > 0 {
        bail!("{wrong} probe(s) did not get the expected outcome");
    }
    step("demo done: every probe got the expected outcome");
    Ok(())
}

/// The edge: filter, proxy and limiter; how many probes got another outcome than expected.
fn edge(bin: &Path) -> Result<usize> {
    step("building the sandbox: namespaces `client`, `edge` and a container, two veths");
    let sandbox = Sandbox::new();
    let container = NetNs::new();
    let container_if = format!("{}c", sandbox.edge.name());
    veth_pair(
        VethEnd {
            ns: &sandbox.edge,
            name: &container_if,
            addrs: &["172.17.0.1/16"],
            mac: None,
        },
        VethEnd {
            ns: &container,
            name: "eth0",
            addrs: &["172.17.0.2/16"],
            mac: None,
        },
    );
    // 80 and 443 are netguard's proxy; the others are plain services the filter must hide.
    let _edge_services = Services::start(&sandbox.edge, &[22, 8080], &[53]);
    let _client_services = Services::client(&sandbox.client);
    let backend = RecordingBackend::start_in(
        &container,
        SocketAddr::from((CONTAINER, 5000)),
        Reply::Status(200, SHOP_BODY.as_bytes().to_vec()),
    );
    let files = RecordingBackend::start_in(
        &container,
        SocketAddr::from((CONTAINER, 5001)),
        Reply::Stream {
            head: format!("HTTP/1.1 200 OK\r\nContent-Length: {DOWNLOAD}\r\n"),
            len: DOWNLOAD,
        },
    );
    let dir = TempDir::new()?;
    let wildcard = format!("*.{SHOP}");
    let (cert, key) = certs::certificate(&dir, "shop", &[SHOP, &wildcard]);
    let mut config = Config::for_sandbox(&sandbox);
    config.extra = format!(
        "[proxy]\nhttp_listen = \"{EDGE_ADDR}:80\"\nhttps_listen = \"{EDGE_ADDR}:443\"\n\n\
         [[app]]\nname = \"shop\"\ndomains = [\"{SHOP}\", \"{wildcard}\"]\n\
         backends = [\"{}\"]\ncert = \"{}\"\nkey = \"{}\"\n\n\
         [[app]]\nname = \"files\"\ndomains = [\"{FILES}\"]\nbackends = [\"{}\"]\n\n\
         [ratelimit]\ninterfaces = [\"{container_if}\"]\nrate = {RATE}\nburst = {BURST}",
        backend.addr(),
        cert.display(),
        key.display(),
        files.addr(),
    );
    println!(
        "    client {} (+ trusted {}, denylisted {}) --veth-- edge {} on {} [proxy on TCP 80 443; TCP 22 8080, UDP 53 listening] --veth {container_if}-- container {} [shop {}, files {}]",
        sandbox.client.name(),
        TRUSTED_ADDR,
        DENIED_ADDR,
        sandbox.edge.name(),
        sandbox.edge_if,
        container.name(),
        backend.addr(),
        files.addr()
    );
    step("netguard config (written to a temporary file):");
    for line in config.to_toml().lines() {
        println!("    {line}");
    }
    step(format!(
        "starting {} run in the edge namespace",
        bin.display()
    ));
    let daemon = Daemon::start_with(bin, &sandbox.edge, &config);
    step("probing from the client with real traffic");
    let edge = |port| SocketAddr::new(IpAddr::V4(EDGE_ADDR), port);
    let tcp = |src, port| {
        tcp_connect(&sandbox.client, Some(IpAddr::V4(src)), edge(port), TIMEOUT)
            == ProbeResult::Connected
    };
    let mut probes = vec![
        probe_row(
            "TCP 192.0.2.99 -> :80 (allowed port)",
            true,
            tcp(CLIENT_ADDR, 80),
        ),
        probe_row(
            "TCP 192.0.2.99 -> :443 (allowed port)",
            true,
            tcp(CLIENT_ADDR, 443),
        ),
        probe_row(
            "TCP 192.0.2.99 -> :22 (closed: silent drop, no RST)",
            false,
            tcp(CLIENT_ADDR, 22),
        ),
        probe_row(
            "TCP 192.0.2.99 -> :8080 (closed)",
            false,
            tcp(CLIENT_ADDR, 8080),
        ),
        probe_row(
            "UDP 192.0.2.99 -> :53 (UDP never allowed)",
            false,
            udp_probe(&sandbox.client, edge(53), b"demo", TIMEOUT),
        ),
        probe_row(
            "TCP 198.51.100.7 -> :80 (denylisted source)",
            false,
            tcp(DENIED_ADDR, 80),
        ),
        probe_row(
            "TCP 192.0.2.50 -> :22 (trusted source)",
            true,
            tcp(TRUSTED_ADDR, 22),
        ),
        probe_row(
            "ICMP echo 192.0.2.99 -> edge (essential ICMP)",
            true,
            probe::ping(&sandbox.client, IpAddr::V4(EDGE_ADDR), 1, TIMEOUT),
        ),
        probe_row(
            "TCP edge -> client :9000 (the host's own connection; answers come back)",
            true,
            tcp_connect(&sandbox.edge, None, Sandbox::client_addr(9000), TIMEOUT)
                == ProbeResult::Connected,
        ),
        probe_row(
            "UDP edge -> client :5353 (the host's own query; the reply comes back)",
            true,
            udp_probe(&sandbox.edge, Sandbox::client_addr(5353), b"q", TIMEOUT),
        ),
    ];
    step("live denylist edit: netguard deny add 192.0.2.99/32");
    daemon.deny_add(&["192.0.2.99/32"]);
    probes.push(probe_row(
        "TCP 192.0.2.99 -> :443 after deny add",
        false,
        tcp(CLIENT_ADDR, 443),
    ));
    daemon.deny_del(&["192.0.2.99/32"]);
    probes.push(probe_row(
        "TCP 192.0.2.99 -> :443 after deny del",
        true,
        tcp(CLIENT_ADDR, 443),
    ));

    step(format!(
        "requests through netguard's proxy: curl from {CLIENT_ADDR}, routed by Host or SNI"
    ));
    let big_header = format!("X-Big: {}", "a".repeat(9000));
    let answers = [
        (
            format!("GET http://{SHOP}/ (routed by Host to the shop app)"),
            200,
            http_status(&sandbox.client, &["-H", &format!("Host: {SHOP}")]),
        ),
        (
            format!("GET http://api.{SHOP}/ (wildcard domain)"),
            200,
            http_status(&sandbox.client, &["-H", &format!("Host: api.{SHOP}")]),
        ),
        (
            format!("GET https://{SHOP}/ (SNI, TLS terminated by netguard)"),
            200,
            https_status(&sandbox.client, &cert.to_string_lossy()),
        ),
        (
            "GET http://unknown.demo.test/ (no such app)".to_string(),
            404,
            http_status(&sandbox.client, &["-H", "Host: unknown.demo.test"]),
        ),
        (
            "GET with a 9,000-byte header line (limit 8 kB)".to_string(),
            431,
            http_status(
                &sandbox.client,
                &["-H", &format!("Host: {SHOP}"), "-H", &big_header],
            ),
        ),
    ];

    println!();
    let mut wrong = print_probes(&probes);
    println!();
    println!("    {:<74} {:<8} {:<8}", "request", "expected", "got");
    for (what, want, got) in &answers {
        let ok = got == &Some(*want);
        if !ok {
            wrong += 1;
        }
        let got = got.map_or_else(|| "none".to_string(), |s| s.to_string());
        let mark = if ok { "ok" } else { "WRONG" };
        println!("    {what:<74} {want:<8} {got:<8} {mark}");
    }
    // The 404 and the 431 are answered by netguard: only the three 200s reach the app.
    let reached: usize = backend
        .received()
        .iter()
        .map(|bytes| {
            bytes
                .windows(b"GET / HTTP/1.1\r\n".len())
                .filter(|w| w == b"GET / HTTP/1.1\r\n")
                .count()
        })
        .sum();
    println!(
        "    the shop app's backend received {reached} request(s): the three answered 200, not \
         the 404 and the 431 netguard answered itself"
    );
    if reached != 3 {
        wrong += 1;
    }

    step(format!(
        "the bandwidth limit: GET http://{FILES}/ ({} MB from the container, its upload), {} MB/s \
         after a {} MB burst",
        DOWNLOAD as f64 / 1e6,
        RATE / 1e6,
        BURST / 1e6
    ));
    let (bytes, secs) = download(&sandbox.client);
    // Past the burst the container may send at the rate and no faster; TCP recovering from the
    // limiter's drops may use a little less.
    let rate = (bytes - BURST) / secs;
    let held = bytes >= DOWNLOAD as f64 && (0.5 * RATE..=1.05 * RATE).contains(&rate);
    println!(
        "    {:.1} MB in {secs:.2} s: {:.2} MB/s past the {} MB burst (limit {} MB/s) {}",
        bytes / 1e6,
        rate / 1e6,
        BURST / 1e6,
        RATE / 1e6,
        if held { "ok" } else { "WRONG" }
    );
    if !held {
        wrong += 1;
    }
    step("per container: netguard stats --containers");
    for line in daemon.cli_ok(&["stats", "--containers"]).lines() {
        println!("    {line}");
    }
    step(format!(
        "counters: netguard stats --pin-path {}",
        daemon.pin_path().display()
    ));
    for line in daemon.cli_ok(&["stats"]).lines() {
        println!("    {line}");
    }
    step("tearing down: stopping the daemon, netguard detach, deleting the namespaces");
    drop(daemon);
    drop(sandbox);
    Ok(wrong)
}

/// Prints the probes as a table; how many got another outcome than expected.
fn print_probes(probes: &[Probe]) -> usize {
    println!("    {:<74} {:<8} {:<8}", "probe", "expected", "got");
    let mut wrong = 0;
    for p in probes {
        let ok = p.passed == p.expect_pass;
        if !ok {
            wrong += 1;
        }
        println!(
            "    {:<74} {:<8} {:<8} {}",
            p.what,
            verdict(p.expect_pass),
            verdict(p.passed),
            if ok { "ok" } else { "WRONG" }
        );
    }
    wrong
}

fn probe_row(what: &str, expect_pass: bool, passed: bool) -> Probe {
    Probe {
        what: what.to_string(),
        expect_pass,
        passed,
    }
}

/// The status curl got from `http://EDGE_ADDR/` with `args` (headers), `None` if no answer.
fn http_status(ns: &NetNs, args: &[&str]) -> Option<u16> {
    let url = format!("http://{EDGE_ADDR}/");
    let mut all = args.to_vec();
    all.push(&url);
    curl_status(ns, &all)
}

/// The status of `https://SHOP/` resolved to the edge, the certificate checked against `ca`.
fn https_status(ns: &NetNs, ca: &str) -> Option<u16> {
    let resolve = format!("{SHOP}:443:{EDGE_ADDR}");
    let url = format!("https://{SHOP}/");
    curl_status(ns, &["--resolve", &resolve, "--cacert", ca, &url])
}

/// Downloads `http://FILES/` through the proxy: bytes received and seconds taken (curl's
/// figures; `(0, 1)` when it failed).
fn download(ns: &NetNs) -> (f64, f64) {
    let host = format!("Host: {FILES}");
    let url = format!("http://{EDGE_ADDR}/");
    let text = curl(
        ns,
        "%{size_download} %{time_total}",
        20,
        &["-H", &host, &url],
    );
    let mut figures = text.split_whitespace().map(|f| f.parse::<f64>().ok());
    match (figures.next().flatten(), figures.next().flatten()) {
        (Some(bytes), Some(secs)) if secs > 0.0 => (bytes, secs),
        _ => (0.0, 1.0),
    }
}

/// `curl ARGS` inside `ns`, 5 s at most: the answer's status, `None` if there was none.
fn curl_status(ns: &NetNs, args: &[&str]) -> Option<u16> {
    curl(ns, "%{http_code}", 5, args)
        .trim()
        .parse()
        .ok()
        .filter(|&s| s != 0)
}

/// `curl -w WRITE_OUT ARGS` inside `ns`, the body discarded, at most `secs` seconds: what
/// `-w` printed.
fn curl(ns: &NetNs, write_out: &str, secs: u64, args: &[&str]) -> String {
    let max_time = secs.to_string();
    let mut cmd = vec!["curl", "-sS", "-o", "/dev/null", "-w", write_out];
    cmd.extend(["--max-time", &max_time]);
    cmd.extend(args);
    let out = ns.output_timeout(&cmd, Duration::from_secs(secs + 10));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn verdict(pass: bool) -> &'static str {
    if pass { "pass" } else { "dropped" }
}
