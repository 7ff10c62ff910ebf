//! The reload bench's section of BENCHMARKS.md.

use std::fmt::Write as _;

use crate::{
    ADDED, QUIET_RELOADS, Reload, Results, STABLE, median,
    section::{date, thousands},
    wrk::{self, WrkResult},
};

pub const SECTION: &str = "reload";

fn yes(met: bool) -> &'static str {
    if met { "**yes**" } else { "**no**" }
}

fn ms_stats(rs: &[Reload], f: fn(&Reload) -> u64) -> String {
    if rs.is_empty() {
        return "—".into();
    }
    let v: Vec<f64> = rs.iter().map(|r| f(r) as f64).collect();
    let max = v.iter().copied().fold(f64::MIN, f64::max);
    let min = v.iter().copied().fold(f64::MAX, f64::min);
    format!(
        "{} ({}–{})",
        thousands(median(v)),
        thousands(min),
        thousands(max)
    )
}

fn wrk_row(o: &mut String, what: &str, r: &WrkResult) {
    let _ = writeln!(
        o,
        "| {what} | {} | {} | {:.2} | {:.2} | {:.1} | {} | {} |",
        thousands(r.requests as f64),
        thousands(r.rps()),
        r.p50_us / 1000.0,
        r.p99_us / 1000.0,
        r.max_us / 1000.0,
        r.socket_errors,
        r.bad_status
    );
}

pub fn render(r: &Results) -> String {
    let mut o = String::new();
    let _ = writeln!(o, "{}\n", crate::section::begin(SECTION));
    let _ = writeln!(o, "## Reload: 10,000 apps and 1,000,000 denylist entries\n");
    let _ = writeln!(
        o,
        "Written by `cargo xtask bench` (`cargo bench -p netguard-tests --bench reload`) in {:.0} \
         s on {}; the next run replaces this section, the other benches keep it. Same shared \
         2-core machine; compare the two wrk runs with each other.\n",
        r.elapsed.as_secs_f64(),
        date()
    );
    let failed = r.reloading.failed() + r.steady.failed();
    let ratio = r.reloading.rps() / r.steady.rps();
    let _ = writeln!(o, "### Targets (from the issue), this run\n");
    let _ = writeln!(o, "| target | measured | met |\n|---|---|---|");
    let _ = writeln!(
        o,
        "| a reload with {} apps and {} denylist entries (distinct prefixes; 1,006,102 lines \
         in the files) completes | {} reloads under traffic \
         and {} without, none rejected; the routes switched every time (checked after the \
         quiet reloads and at the end) | {} |",
        thousands(r.apps as f64),
        r.denylist_entries,
        r.under_load.len(),
        r.quiet.len(),
        yes(!r.under_load.is_empty() && r.quiet.len() == QUIET_RELOADS)
    );
    let _ = writeln!(
        o,
        "| … without disturbing traffic: no failed request to the stable app | {} failed of {} \
         while reloading ({} socket errors, {} non-2xx/3xx) | {} |",
        r.reloading.failed(),
        thousands(r.reloading.requests as f64),
        r.reloading.socket_errors,
        r.reloading.bad_status,
        yes(failed == 0)
    );
    let _ = writeln!(
        o,
        "| reload duration logged (`config reloaded ms=…`), recorded here | median {} ms \
         without traffic, {} ms under traffic (min–max) | — |",
        ms_stats(&r.quiet, |x| x.total_ms),
        ms_stats(&r.under_load, |x| x.total_ms)
    );
    let quiet_ms = median(r.quiet.iter().map(|x| x.total_ms as f64).collect());
    let _ = writeln!(
        o,
        "| reloads every second (each done within the second) | median {} ms without traffic; \
         {} reloads in the {} s under traffic, back to back | {} |",
        thousands(quiet_ms),
        r.under_load.len(),
        r.secs,
        yes(quiet_ms < 1000.0)
    );
    let _ = writeln!(
        o,
        "| proxy request rate while reloads happen every second, recorded | {} req/s, {ratio:.2}× \
         the rate without reloads ({} req/s); p99 {:.2} vs {:.2} ms | — |\n",
        thousands(r.reloading.rps()),
        thousands(r.steady.rps()),
        r.reloading.p99_us / 1000.0,
        r.steady.p99_us / 1000.0
    );

    findings(&mut o, r);
    let _ = writeln!(o, "### Start and reloads\n");
    let _ = writeln!(o, "| | |\n|---|---|");
    let _ = writeln!(
        o,
        "| config | {} apps (variant B: one more), {} denylist files (`tests/data/denylists`) \
         and one inline entry that differs between the variants; {:.1} MB of TOML |",
        thousands(r.apps as f64),
        13,
        r.config_bytes as f64 / 1e6
    );
    let _ = writeln!(
        o,
        "| denylist entries (the daemon's `config valid` line) | {} |",
        r.denylist_entries
    );
    let _ = writeln!(
        o,
        "| time to ready (start to `netguard ready`) | {:.1} s |",
        r.ready.as_secs_f64()
    );
    let _ = writeln!(
        o,
        "| first fill of the maps (`tables applied ms=…`) | {} |",
        r.initial_tables_ms
            .map_or("—".into(), |m| format!("{} ms", thousands(m as f64)))
    );
    let _ = writeln!(
        o,
        "| reload, no traffic: total / of which the map update (median, min–max of {}) | {} ms / \
         {} ms |",
        r.quiet.len(),
        ms_stats(&r.quiet, |x| x.total_ms),
        ms_stats(&r.quiet, |x| x.tables_ms)
    );
    let _ = writeln!(
        o,
        "| reload under wrk: total / of which the map update (median, min–max of {}) | {} ms / \
         {} ms |",
        r.under_load.len(),
        ms_stats(&r.under_load, |x| x.total_ms),
        ms_stats(&r.under_load, |x| x.tables_ms)
    );
    let _ = writeln!(
        o,
        "| seconds skipped because the previous reload was still running | {} of {} |",
        r.skipped_ticks, r.secs
    );
    let _ = writeln!(
        o,
        "| daemon resident memory at the end | {:.0} MiB |\n",
        r.rss_after as f64 / 1048576.0
    );

    let _ = writeln!(
        o,
        "### The proxy's requests per second, with and without reloads\n"
    );
    let _ = writeln!(
        o,
        "wrk {} threads, {} keep-alive connections, {} s each after a 2 s warm-up, `Host: \
         {STABLE}` (the stable app; its backend is nginx on the same loopback answering 100 \
         bytes).\n",
        wrk::THREADS,
        wrk::CONNECTIONS,
        r.secs
    );
    let _ = writeln!(
        o,
        "| run | requests | requests/s | p50 ms | p99 ms | max ms | socket errors | non-2xx/3xx \
         |\n|---|---:|---:|---:|---:|---:|---:|---:|"
    );
    wrk_row(&mut o, "no reload", &r.steady);
    wrk_row(&mut o, "a reload every second", &r.reloading);
    let _ = writeln!(o);
    let _ = writeln!(
        o,
        "Reload durations under traffic, in order (ms, total / map update): {}\n",
        r.under_load
            .iter()
            .map(|x| format!("{}/{}", x.total_ms, x.tables_ms))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let _ = writeln!(o, "### How it runs\n");
    let _ = writeln!(
        o,
        "- The release daemon in a sandbox namespace (XDP on its veth, the proxy on \
         127.0.0.1:8080 of that namespace), the backend and wrk on the same loopback.\n\
         - Every second the bench rewrites the config file (a rename) with the other variant \
         and sends SIGHUP — unless the previous reload has not logged `config reloaded` yet, \
         then that second is skipped, so reloads never queue. Variant B adds the app `{ADDED}` \
         and swaps the inline denylist entry; after the runs the bench checks that `{ADDED}` \
         answers exactly when variant B is in force.\n\
         - A reload re-reads and validates the whole config, denylist files included, before \
         anything changes; the duration is the daemon's own figure.\n\
         - Both wrk runs last 20 s, or long enough for 4 reloads of the quiet reloads' median \
         duration (up to 120 s); when a reload takes longer than a second, the reloads run back \
         to back, so the second run measures the proxy under continuous reloading. \
         `NETGUARD_RELOAD_SECS` fixes the length (the section is then printed, not written).\n"
    );
    let _ = writeln!(o, "{}", crate::section::end(SECTION));
    o
}

/// What the figures say, computed from them.
fn findings(o: &mut String, r: &Results) {
    let quiet_total = median(r.quiet.iter().map(|x| x.total_ms as f64).collect());
    let quiet_tables = median(r.quiet.iter().map(|x| x.tables_ms as f64).collect());
    let _ = writeln!(o, "### What the numbers say\n");
    let _ = writeln!(
        o,
        "- The map update is {:.0} % of a quiet reload ({} of {} ms); reading and validating \
         the config with its denylist files is the rest.",
        quiet_tables / quiet_total.max(1.0) * 100.0,
        thousands(quiet_tables),
        thousands(quiet_total)
    );
    if let Some(fill) = r.initial_tables_ms {
        let _ = writeln!(
            o,
            "- Bringing the maps to the new config (two entries differ) takes {:.1}× as long \
             as filling them from empty at the start ({} vs {} ms).",
            quiet_tables / (fill as f64).max(1.0),
            thousands(quiet_tables),
            thousands(fill as f64)
        );
    }
    let _ = writeln!(
        o,
        "- Under traffic the proxy kept {:.0} % of its request rate and failed no request; \
         the reloads compete with wrk, the backend and the proxy for the 2 cores.\n",
        r.reloading.rps() / r.steady.rps().max(1e-9) * 100.0
    );
}
