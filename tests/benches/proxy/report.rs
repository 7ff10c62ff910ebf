//! The proxy's section of BENCHMARKS.md: targets, the side-by-side table, idle memory, raw runs.

use std::fmt::Write as _;

use crate::{
    Measured, Pair, Results, idle, median,
    section::{date, package_version, thousands},
    subjects::{APPS, HOST, Kind},
    wrk,
};

pub const SECTION: &str = "proxy";

/// The targets: requests/s against nginx, p99 against the better of the two.
const RPS_TARGET: f64 = 1.1;

/// Medians over the rounds of one server and protocol.
struct Summary {
    rps: f64,
    p50_ms: f64,
    p90_ms: f64,
    p99_ms: f64,
    /// Server CPU per 1,000 requests.
    cpu_ms_per_k: f64,
    failed: u64,
}

fn summary(r: &Results, kind: Kind, tls: bool) -> Option<Summary> {
    let runs: Vec<&Measured> = r
        .runs
        .iter()
        .filter(|m| m.kind == kind && m.tls == tls)
        .collect();
    if runs.is_empty() {
        return None;
    }
    let m = |f: &dyn Fn(&Measured) -> f64| median(runs.iter().map(|x| f(x)).collect());
    Some(Summary {
        rps: m(&|x| x.wrk.rps()),
        p50_ms: m(&|x| x.wrk.p50_us / 1000.0),
        p90_ms: m(&|x| x.wrk.p90_us / 1000.0),
        p99_ms: m(&|x| x.wrk.p99_us / 1000.0),
        cpu_ms_per_k: m(&|x| x.cpu.as_secs_f64() * 1e6 / x.wrk.requests.max(1) as f64),
        failed: runs.iter().map(|x| x.wrk.failed()).sum(),
    })
}

fn proto(tls: bool) -> &'static str {
    if tls { "TLS" } else { "HTTP" }
}

fn yes(met: bool) -> &'static str {
    if met { "**yes**" } else { "**no**" }
}

fn commit() -> String {
    std::process::Command::new("git")
        .args(["-C", &netguard_tests::workspace_root().to_string_lossy()])
        .args(["log", "-1", "--format=%h %s"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "unknown".into())
}

pub fn render(r: &Results) -> String {
    let mut o = String::new();
    let _ = writeln!(o, "{}\n", crate::section::begin(SECTION));
    let _ = writeln!(o, "## L7 proxy: netguard beside nginx and HAProxy\n");
    let _ = writeln!(
        o,
        "Written by `cargo xtask bench` (`cargo bench -p netguard-tests --bench proxy`) in {:.0} \
         s on {}; the next run replaces this section, the other benches keep it. Every figure \
         comes from this one run on this shared 2-core machine (other builds may have been \
         running), so compare **ratios**.\n",
        r.elapsed.as_secs_f64(),
        date()
    );
    let _ = writeln!(o, "| | |\n|---|---|");
    let _ = writeln!(
        o,
        "| command | `cargo xtask bench` (runs `cargo bench -p netguard-tests --bench proxy`) |"
    );
    let _ = writeln!(o, "| netguard at | `{}` |", commit());
    let _ = writeln!(o, "| nginx | {} |", package_version("nginx"));
    let _ = writeln!(o, "| HAProxy | {} |", package_version("haproxy"));
    let _ = writeln!(o, "| wrk | {} |", wrk::version());
    let _ = writeln!(
        o,
        "| OpenSSL (wrk, nginx, HAProxy) | {} |",
        package_version("openssl")
    );
    let _ = writeln!(
        o,
        "| load | wrk, {} threads, {} keep-alive connections, {} s per run after a 2 s warm-up, \
         `Host: {HOST}`; {} rounds, the order reversed every other round |\n",
        wrk::THREADS,
        wrk::CONNECTIONS,
        r.secs,
        r.rounds
    );

    let s = |k, tls| summary(r, k, tls);
    let _ = writeln!(o, "### Targets (from the issue), this run\n");
    let _ = writeln!(
        o,
        "*Side by side*: netguard and the other proxy loaded at the same time, each by its own \
         wrk (2 threads, 64 connections), so both see the same machine in the same seconds; \
         medians over the rounds. *One at a time*: each proxy alone, in turn (the issue's \
         sequence); consecutive runs of the same server differ by up to ±25 % on this shared \
         machine, which decides those rows as much as the proxies do.\n"
    );
    let _ = writeln!(o, "| target | measured | met |\n|---|---|---|");
    for tls in [false, true] {
        if let Some(ratio) = pair_median(r, Kind::Nginx, tls, |p| p.ratio()) {
            let _ = writeln!(
                o,
                "| requests/s ≥ {RPS_TARGET}× nginx, {}, side by side | {ratio:.2}× (rounds: {}) | {} |",
                proto(tls),
                pair_list(r, Kind::Nginx, tls, |p| format!("{:.2}×", p.ratio())),
                yes(ratio >= RPS_TARGET)
            );
        }
    }
    for tls in [false, true] {
        let worst = [Kind::Nginx, Kind::Haproxy]
            .into_iter()
            .filter_map(|k| {
                pair_median(r, k, tls, |p| p.netguard.p99_us / p.theirs.p99_us).map(|m| (k, m))
            })
            .max_by(|a, b| a.1.total_cmp(&b.1));
        if let Some((who, ratio)) = worst {
            let _ = writeln!(
                o,
                "| p99 no worse than the better of nginx and HAProxy, {}, side by side | {ratio:.2}× \
                 {}'s p99 in the same runs (the closer of the two; rounds: {}) | {} |",
                proto(tls),
                who.name(),
                pair_list(r, who, tls, |p| format!(
                    "{:.2} vs {:.2} ms",
                    p.netguard.p99_us / 1000.0,
                    p.theirs.p99_us / 1000.0
                )),
                yes(ratio <= 1.0)
            );
        }
    }
    for tls in [false, true] {
        if let (Some(ng), Some(nx)) = (s(Kind::Netguard, tls), s(Kind::Nginx, tls)) {
            let ratio = ng.rps / nx.rps;
            let _ = writeln!(
                o,
                "| requests/s ≥ {RPS_TARGET}× nginx, {}, one at a time | {ratio:.2}× ({} vs {} req/s) | {} |",
                proto(tls),
                thousands(ng.rps),
                thousands(nx.rps),
                yes(ratio >= RPS_TARGET)
            );
        }
    }
    for tls in [false, true] {
        if let (Some(ng), Some(nx), Some(hp)) = (
            s(Kind::Netguard, tls),
            s(Kind::Nginx, tls),
            s(Kind::Haproxy, tls),
        ) {
            let (best, who) = if nx.p99_ms <= hp.p99_ms {
                (nx.p99_ms, "nginx")
            } else {
                (hp.p99_ms, "HAProxy")
            };
            let _ = writeln!(
                o,
                "| p99 no worse than the better of nginx and HAProxy, {}, one at a time | {:.2} ms vs {best:.2} \
                 ms ({who}): {:.2}× | {} |",
                proto(tls),
                ng.p99_ms,
                ng.p99_ms / best,
                yes(ng.p99_ms <= best)
            );
        }
    }
    if let Some((_, m)) = r.idle.iter().find(|(k, _)| *k == Kind::Netguard) {
        let _ = writeln!(
            o,
            "| memory per idle keep-alive connection stated | {:.1} KiB (resident, {} idle \
             HTTP connections) | — |",
            m.per_connection() / 1024.0,
            thousands(m.n as f64)
        );
    }
    let failed: u64 = r.runs.iter().map(|m| m.wrk.failed()).sum::<u64>()
        + r.pairs
            .iter()
            .map(|p| p.netguard.failed() + p.theirs.failed())
            .sum::<u64>();
    let _ = writeln!(
        o,
        "| no failed request (socket errors, non-2xx/3xx answers) | {failed} | {} |\n",
        yes(failed == 0)
    );

    findings(&mut o, r);
    let _ = writeln!(o, "### Requests per second and latency\n");
    let _ = writeln!(
        o,
        "Medians over the rounds. *CPU per 1,000 requests*: user + system time of the server's \
         processes (all threads; nginx's master and workers) during the measured run, divided \
         by the requests it answered — less sensitive to the machine's other load than the \
         rate.\n"
    );
    let _ = writeln!(
        o,
        "| server | protocol | requests/s | of the backend alone | of nginx | p50 ms | p90 ms \
         | p99 ms | CPU ms per 1,000 requests | failed |"
    );
    let _ = writeln!(o, "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    let ceiling = s(Kind::Backend, false).map(|b| b.rps);
    for tls in [false, true] {
        let nginx = s(Kind::Nginx, tls).map(|n| n.rps);
        for kind in [Kind::Backend, Kind::Netguard, Kind::Nginx, Kind::Haproxy] {
            let Some(x) = s(kind, tls) else { continue };
            let of = |base: Option<f64>| {
                base.map_or("—".to_string(), |b| format!("{:.2}×", x.rps / b))
            };
            let _ = writeln!(
                o,
                "| {} | {} | {} | {} | {} | {:.2} | {:.2} | {:.2} | {:.1} | {} |",
                kind.name(),
                proto(tls),
                thousands(x.rps),
                of(ceiling),
                if kind == Kind::Backend {
                    "—".into()
                } else {
                    of(nginx)
                },
                x.p50_ms,
                x.p90_ms,
                x.p99_ms,
                x.cpu_ms_per_k,
                x.failed
            );
        }
    }
    let _ = writeln!(o);

    if !r.pairs.is_empty() {
        let _ = writeln!(o, "### Side by side, every round\n");
        let _ = writeln!(
            o,
            "Both proxies under load at once for {} s, each from its own wrk (2 threads, 64 \
             connections), same backend; the ratio is netguard's requests over the other's.\n",
            r.secs
        );
        let _ = writeln!(
            o,
            "| round | protocol | other | netguard req/s | other req/s | ratio | netguard p99 ms \
             | other p99 ms | failed |\n|---:|---|---|---:|---:|---:|---:|---:|---:|"
        );
        for p in &r.pairs {
            let _ = writeln!(
                o,
                "| {} | {} | {} | {} | {} | {:.2}× | {:.2} | {:.2} | {} |",
                p.round,
                proto(p.tls),
                p.other.name(),
                thousands(p.netguard.rps()),
                thousands(p.theirs.rps()),
                p.ratio(),
                p.netguard.p99_us / 1000.0,
                p.theirs.p99_us / 1000.0,
                p.netguard.failed() + p.theirs.failed()
            );
        }
        let _ = writeln!(o);
    }

    let _ = writeln!(o, "### Memory per idle keep-alive connection\n");
    let _ = writeln!(
        o,
        "Resident memory (VmRSS, summed over the server's processes) after 200 warm-up \
         requests, then with {} connections open, each idle after one answered request (plain \
         HTTP), one second after the last opened.\n",
        thousands(idle::N as f64)
    );
    let _ = writeln!(
        o,
        "| server | before, MiB | with {} idle, MiB | per connection, KiB |\n|---|---:|---:|---:|",
        thousands(idle::N as f64)
    );
    for (kind, m) in &r.idle {
        let _ = writeln!(
            o,
            "| {} | {:.1} | {:.1} | {:.1} |",
            kind.name(),
            m.before as f64 / 1048576.0,
            m.after as f64 / 1048576.0,
            m.per_connection() / 1024.0
        );
    }
    let _ = writeln!(o);

    let _ = writeln!(o, "### Raw runs, in the order they ran\n");
    let _ = writeln!(
        o,
        "| round | server | protocol | requests | requests/s | p50 ms | p99 ms | max ms | server \
         CPU s | socket errors | non-2xx/3xx |"
    );
    let _ = writeln!(o, "|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    for m in &r.runs {
        let _ = writeln!(
            o,
            "| {} | {} | {} | {} | {} | {:.2} | {:.2} | {:.1} | {:.2} | {} | {} |",
            m.round,
            m.kind.name(),
            proto(m.tls),
            thousands(m.wrk.requests as f64),
            thousands(m.wrk.rps()),
            m.wrk.p50_us / 1000.0,
            m.wrk.p99_us / 1000.0,
            m.wrk.max_us / 1000.0,
            m.cpu.as_secs_f64(),
            m.wrk.socket_errors,
            m.wrk.bad_status
        );
    }
    let _ = writeln!(o);
    let _ = writeln!(o, "### How it runs\n");
    let _ = writeln!(
        o,
        "- One network namespace, everything on its loopback: wrk, the backend and the three \
         proxies, on ports of that namespace. netguard is the release daemon (`netguard run`, \
         its XDP filter attached to the namespace's veth, which this traffic does not cross).\n\
         - The backend: nginx (`worker_processes auto`) answering `return 200` with a 100-byte \
         body from memory, keep-alive; the same for every proxy, and measured alone as the \
         ceiling (plain HTTP).\n\
         - Each proxy routes `{}` and `{}` by `Host` (and, over TLS, SNI) to that backend and \
         answers 404 for other names; every proxy adds X-Forwarded-For, passes `Host` through, \
         writes no access log, and terminates TLS with the same ECDSA P-256 certificate. \
         nginx: `worker_processes auto`, an upstream with `keepalive 64` \
         (`proxy_http_version 1.1`); HAProxy: `nbthread 2`, its default backend connection \
         reuse; netguard: its defaults apart from `router_log = \"off\"`, the connection \
         caps raised for the idle test and `backend_pool_max_idle_per_backend = 64` (default \
         32), the same 64 idle backend connections as nginx's `keepalive 64`.\n\
         - The machine has 2 cores shared by wrk, the backend and the proxy under test, so a \
         proxy's rate is bounded by how much CPU it leaves to the other two: the CPU column \
         shows the cost per request directly.\n\
         - Each round runs every server alone in turn (HTTP, then TLS), then netguard side by \
         side with nginx and with HAProxy: two wrk processes started together against the two \
         proxies. The scheduler shares the 2 cores between the two proxies (2 worker threads \
         or processes each), so the one that needs less CPU per request answers more requests, \
         whatever the machine's other load does during those seconds.\n\
         - Set `NETGUARD_PROXY_SECS` and `NETGUARD_PROXY_ROUNDS` for shorter or longer runs \
         (the section is then printed, not written).\n",
        APPS[0], APPS[1]
    );
    let _ = writeln!(o, "{}", crate::section::end(SECTION));
    o
}

/// What the figures say, computed from them.
/// The median of `f` over the side-by-side runs against `other`.
fn pair_median(r: &Results, other: Kind, tls: bool, f: impl Fn(&Pair) -> f64) -> Option<f64> {
    let v: Vec<f64> = r
        .pairs
        .iter()
        .filter(|p| p.other == other && p.tls == tls)
        .map(f)
        .collect();
    (!v.is_empty()).then(|| median(v))
}

fn pair_list(r: &Results, other: Kind, tls: bool, f: impl Fn(&Pair) -> String) -> String {
    r.pairs
        .iter()
        .filter(|p| p.other == other && p.tls == tls)
        .map(f)
        .collect::<Vec<_>>()
        .join(", ")
}

fn findings(o: &mut String, r: &Results) {
    let s = |k, tls| summary(r, k, tls);
    let _ = writeln!(o, "### What the numbers say\n");
    for tls in [false, true] {
        if let (Some(ng), Some(nx)) = (s(Kind::Netguard, tls), s(Kind::Nginx, tls)) {
            let _ = writeln!(
                o,
                "- {}: netguard spends {:.1}× nginx's CPU per request ({:.0} vs {:.0} ms per \
                 1,000). wrk, the backend and the proxy share 2 cores, so the proxy's cost per \
                 request sets its rate: {:.2}× nginx's.",
                proto(tls),
                ng.cpu_ms_per_k / nx.cpu_ms_per_k,
                ng.cpu_ms_per_k,
                nx.cpu_ms_per_k,
                ng.rps / nx.rps
            );
        }
    }
    if let Some(b) = s(Kind::Backend, false) {
        let of = |k| s(k, false).map_or(f64::NAN, |x| x.rps / b.rps * 100.0);
        let _ = writeln!(
            o,
            "- Over HTTP nginx reaches {:.0} % and HAProxy {:.0} % of the backend alone, netguard \
             {:.0} %.",
            of(Kind::Nginx),
            of(Kind::Haproxy),
            of(Kind::Netguard)
        );
    }
    let per = |k| {
        r.idle
            .iter()
            .find(|(x, _)| *x == k)
            .map(|(_, m)| m.per_connection() / 1024.0)
    };
    if let (Some(ng), Some(nx), Some(hp)) =
        (per(Kind::Netguard), per(Kind::Nginx), per(Kind::Haproxy))
    {
        let _ = writeln!(
            o,
            "- An idle keep-alive connection costs netguard {ng:.1} KiB of resident memory, \
             nginx {nx:.1} KiB and HAProxy {hp:.1} KiB.\n"
        );
    }
}
