//! `cargo xtask`: provisioning, builds, the test suite, the demo and the benchmarks.
//!
//! `cargo xtask test` is the project's test command; CI runs exactly that (through `.ci/run`).

mod demo;
mod exec;
mod provision;

use std::os::unix::process::CommandExt as _;
use std::path::PathBuf;
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use clap::{Parser, Subcommand};

use crate::exec::{step, workspace_root};

const EBPF_PACKAGE: &str = "netguard-ebpf";
const EBPF_TARGET: &str = "bpfel-unknown-none";
/// The eBPF crate's `[[bin]]` name, so also the object's file name.
const EBPF_OBJECT: &str = "netguard";
const DAEMON_PACKAGE: &str = "netguard";
const DAEMON_BIN: &str = "netguard";
const TESTS_PACKAGE: &str = "netguard-tests";

#[derive(Parser)]
#[command(
    name = "cargo xtask",
    bin_name = "cargo xtask",
    about = "netguard's build, test and demo tasks"
)]
struct Cli {
    #[command(subcommand)]
    command: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install what building and testing need (apt packages, rust-src, bpf-linker, bpffs).
    Setup,
    /// Build the eBPF object for bpfel-unknown-none on nightly.
    BuildEbpf {
        /// Build the dev profile instead of release.
        #[arg(long)]
        debug: bool,
    },
    /// Build the daemon (release).
    Build,
    /// Build the daemon (release) and run it with the given arguments.
    Run {
        /// Arguments for `netguard`.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Run the whole test suite: fmt, clippy (userspace and eBPF), build, tests.
    Test {
        /// Skip `cargo fmt --check` and both clippy runs.
        #[arg(long)]
        no_lint: bool,
        /// Passed to the test binaries after `--test-threads=1` (e.g. a name filter).
        #[arg(last = true)]
        filters: Vec<String>,
    },
    /// Build everything, run netguard in a sandbox of network namespaces with real traffic,
    /// show what passes and what is dropped (and the counters), tear it down.
    Demo,
    /// Build the daemon (release) and run the benchmarks (root, about 15 minutes): `cargo bench
    /// -p netguard-tests --bench xdp` (netguard beside a trivial XDP program, xdp-filter and
    /// nftables), `--bench limiter` (the tc limiter beside Linux TBF and an nftables policer),
    /// `--bench proxy` (the L7 proxy beside nginx and HAProxy, wrk) and `--bench reload` (a
    /// reload with 10,000 apps and 1M denylist entries under traffic). Results go to
    /// BENCHMARKS.md.
    Bench,
}

fn main() -> Result<ExitCode> {
    match Cli::parse().command {
        Task::Setup => provision::provision().map(|()| ExitCode::SUCCESS),
        Task::BuildEbpf { debug } => {
            provision::provision()?;
            build_ebpf(debug).map(|()| ExitCode::SUCCESS)
        }
        Task::Build => {
            provision::provision()?;
            build_daemon().map(|_| ExitCode::SUCCESS)
        }
        Task::Run { args } => {
            provision::provision()?;
            let bin = build_daemon()?;
            exec_daemon(bin, &args)
        }
        Task::Test { no_lint, filters } => {
            provision::provision()?;
            test(no_lint, &filters).map(|()| ExitCode::SUCCESS)
        }
        Task::Demo => {
            provision::provision()?;
            let bin = build_daemon()?;
            demo::run(&bin).map(|()| ExitCode::SUCCESS)
        }
        Task::Bench => {
            provision::provision()?;
            provision::bench_packages()?;
            build_daemon()?;
            bench()
        }
    }
}

fn cargo() -> Command {
    exec::command("cargo")
}

fn build_ebpf(debug: bool) -> Result<()> {
    let profile = if debug { "debug" } else { "release" };
    step(format!("building eBPF object ({profile})"));
    let mut cmd = cargo();
    cmd.args(["+nightly", "build", "-p", EBPF_PACKAGE]);
    if !debug {
        cmd.arg("--release");
    }
    cmd.args(["--target", EBPF_TARGET, "-Z", "build-std=core"]);
    exec::run(&mut cmd)?;
    let object = workspace_root()
        .join("target")
        .join(EBPF_TARGET)
        .join(profile)
        .join(EBPF_OBJECT);
    if !object.is_file() {
        bail!("the build succeeded but {} is missing", object.display());
    }
    step(format!("eBPF object: {}", object.display()));
    Ok(())
}

/// `cargo build --release -p netguard` (its build.rs builds and embeds the eBPF object).
fn build_daemon() -> Result<PathBuf> {
    step("building netguard (release)");
    exec::run(cargo().args(["build", "--release", "-p", DAEMON_PACKAGE]))?;
    let bin = target_dir().join("release").join(DAEMON_BIN);
    step(format!("netguard binary: {}", bin.display()));
    Ok(bin)
}

/// Replaces this process with the daemon (under `sudo -E` when not root), so its exit code and
/// signals (Ctrl-C for a graceful shutdown) need no forwarding.
fn exec_daemon(bin: PathBuf, args: &[String]) -> Result<ExitCode> {
    let mut cmd = if exec::is_root()? {
        exec::command(&bin)
    } else {
        let mut cmd = exec::command("sudo");
        cmd.arg("-E").arg(&bin);
        cmd
    };
    cmd.args(args);
    step(format!("running {}", exec::display(&cmd)));
    let err = cmd.exec();
    Err(err).with_context(|| format!("could not start `{}`", exec::display(&cmd)))
}

/// The project's test command. Fails fast on the first failing step.
fn test(no_lint: bool, filters: &[String]) -> Result<()> {
    let start = Instant::now();
    let result = test_steps(no_lint, filters);
    let elapsed = format_duration(start.elapsed());
    match &result {
        Ok(()) => step(format!("all test steps passed in {elapsed}")),
        Err(_) => step(format!("FAILED after {elapsed}")),
    }
    result
}

fn test_steps(no_lint: bool, filters: &[String]) -> Result<()> {
    let mut steps: Vec<(&str, Command)> = Vec::new();
    if no_lint {
        step("--no-lint: skipping cargo fmt and clippy");
    } else {
        let mut fmt = cargo();
        fmt.args(["fmt", "--all", "--", "--check"]);
        steps.push(("formatting (run `cargo fmt --all` to fix)", fmt));

        let mut clippy = cargo();
        clippy.args([
            "clippy",
            "--workspace",
            "--exclude",
            EBPF_PACKAGE,
            "--all-targets",
        ]);
        clippy.args(["--", "-D", "warnings"]);
        // Lints do not need the eBPF object; skip its second build in clippy's profile.
        clippy.env("AYA_BUILD_SKIP", "1");
        steps.push(("clippy, userspace crates", clippy));

        let mut clippy_ebpf = cargo();
        clippy_ebpf.args([
            "+nightly",
            "clippy",
            "-p",
            EBPF_PACKAGE,
            "--target",
            EBPF_TARGET,
        ]);
        clippy_ebpf.args(["-Z", "build-std=core", "--", "-D", "warnings"]);
        steps.push(("clippy, eBPF crate (nightly)", clippy_ebpf));
    }

    // The end-to-end tests run target/debug/netguard.
    let mut build = cargo();
    build.args(["build", "-p", DAEMON_PACKAGE]);
    steps.push(("building netguard (debug) for the end-to-end tests", build));

    // Kernel-state tests run one at a time.
    let mut test = cargo();
    test.args([
        "test",
        "--workspace",
        "--exclude",
        EBPF_PACKAGE,
        // netguard-common's golden-packet tests live behind its `std` feature.
        "--all-features",
        "--no-fail-fast",
        "--",
        "--test-threads=1",
    ]);
    test.args(filters);
    steps.push(("tests", test));

    // Last, the README's first command on the debug daemon the tests ran: every probe of the
    // demo has an announced outcome, so it fails when one differs. Skipped with test filters.
    let demo = filters.is_empty();
    let total = steps.len() + usize::from(demo);
    for (i, (what, mut cmd)) in steps.into_iter().enumerate() {
        step(format!(
            "[{}/{total}] {what}: {}",
            i + 1,
            exec::display(&cmd)
        ));
        exec::run(&mut cmd)
            .with_context(|| format!("test step {}/{total} failed: {what}", i + 1))?;
    }
    if demo {
        let bin = target_dir().join("debug").join(DAEMON_BIN);
        step(format!(
            "[{total}/{total}] the demo (`cargo xtask demo`) on {}",
            bin.display()
        ));
        demo::run(&bin).with_context(|| format!("test step {total}/{total} failed: the demo"))?;
    }
    Ok(())
}

/// `cargo bench -p netguard-tests --bench NAME` for each, in this order.
const BENCHES: [&str; 4] = ["xdp", "limiter", "proxy", "reload"];

/// The benchmarks, one after the other, each `cargo bench -p netguard-tests --bench NAME`:
/// `xdp` (program cost through BPF_PROG_TEST_RUN and drop rates on a veth flood, netguard beside
/// a trivial XDP program, xdp-filter and nftables; rewrites BENCHMARKS.md), then `limiter` (TCP
/// through netguard's tc limiter, Linux TBF and an nftables policer on one veth pair, and the tc
/// program's cost; replaces its own section of BENCHMARKS.md), `proxy` (wrk through netguard's
/// proxy, nginx and HAProxy, and idle-connection memory) and `reload` (reload duration and the
/// proxy's rate under reloads), each replacing its own section. All but `xdp` run the release
/// daemon that `Task::Bench` has just built. Each runs even if an earlier one fails.
fn bench() -> Result<ExitCode> {
    if !exec::is_root()? {
        bail!(
            "`cargo xtask bench` loads eBPF programs and builds network namespaces: run it as root"
        );
    }
    let results = workspace_root().join("BENCHMARKS.md");
    let daemon = target_dir().join("release").join(DAEMON_BIN);
    step(format!(
        "running benchmarks: {} (about 15 minutes; results go to {})",
        BENCHES.join(", "),
        results.display()
    ));
    let mut failed = None;
    for name in BENCHES {
        let mut cmd = cargo();
        cmd.args(["bench", "-p", TESTS_PACKAGE, "--bench", name]);
        if std::env::var_os("NETGUARD_BIN").is_none() {
            cmd.env("NETGUARD_BIN", &daemon);
        }
        step(exec::display(&cmd));
        let status = exec::status(&mut cmd)?;
        if !status.success() {
            step(format!(
                "benchmark {name} failed: `{}`",
                exec::display(&cmd)
            ));
            failed.get_or_insert(status);
        }
    }
    match failed {
        None => {
            step(format!("benchmarks done; results: {}", results.display()));
            Ok(ExitCode::SUCCESS)
        }
        Some(status) => Ok(exit_code(status)),
    }
}

/// `$CARGO_TARGET_DIR`, else the workspace's `target`: where `build_daemon` put the binary.
fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"))
}

fn exit_code(status: std::process::ExitStatus) -> ExitCode {
    // Exit codes are 0..=255 on Unix; 128 + signal also fits.
    ExitCode::from(u8::try_from(exec::exit_code(status)).unwrap_or(1))
}

fn format_duration(d: Duration) -> String {
    let secs = d.as_secs();
    if secs >= 60 {
        format!("{}m {:02}s", secs / 60, secs % 60)
    } else {
        format!("{:.1}s", d.as_secs_f64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Task {
        Cli::try_parse_from(["cargo xtask"].iter().chain(args))
            .unwrap()
            .command
    }

    #[test]
    fn test_takes_filters_after_double_dash() {
        let Task::Test { no_lint, filters } = parse(&["test", "--no-lint", "--", "e2e", "--exact"])
        else {
            panic!("not test");
        };
        assert!(no_lint);
        assert_eq!(filters, ["e2e", "--exact"]);
        assert!(
            matches!(parse(&["test"]), Task::Test { no_lint: false, filters } if filters.is_empty())
        );
    }

    #[test]
    fn run_passes_arguments_through() {
        for args in [
            &["run", "--", "--config", "x.toml"][..],
            &["run", "--config", "x.toml"],
        ] {
            let Task::Run { args } = parse(args) else {
                panic!("not run");
            };
            assert_eq!(args, ["--config", "x.toml"]);
        }
    }

    #[test]
    fn build_ebpf_debug_flag() {
        assert!(matches!(
            parse(&["build-ebpf", "--debug"]),
            Task::BuildEbpf { debug: true }
        ));
        assert!(matches!(
            parse(&["build-ebpf"]),
            Task::BuildEbpf { debug: false }
        ));
    }
}
