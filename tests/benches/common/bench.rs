//! What every bench binary does around its measurements: checks that it can run at all (root,
//! the tools it drives), prints its steps, takes medians, and turns a failure into an exit code.

use std::{path::PathBuf, process::ExitCode};

use anyhow::{Result, bail};

/// The bench's `main`: success, or the error chain under `{name} bench failed`.
pub fn exit(name: &str, result: Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("\n{name} failed: {e:#}");
            ExitCode::FAILURE
        }
    }
}

pub fn step(msg: impl AsRef<str>) {
    println!("--> {}", msg.as_ref());
}

pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n == 0 {
        f64::NAN
    } else if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// `what` says why root is needed, e.g. "the benchmark builds network namespaces".
pub fn require_root(what: &str) -> Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("{what}: run it as root");
    }
    Ok(())
}

/// The tools the bench runs, each with its Debian package.
pub fn require_tools(tools: &[(&str, &str)]) -> Result<()> {
    for (tool, package) in tools {
        let found = std::env::var_os("PATH")
            .map(|p| {
                std::env::split_paths(&p)
                    .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/sbin")])
                    .any(|d| d.join(tool).is_file())
            })
            .unwrap_or(false);
        if !found {
            bail!(
                "`{tool}` not found: install the Debian package `{package}` (`cargo xtask bench` \
                 provisions it, with any service it brings kept from starting)"
            );
        }
    }
    Ok(())
}

/// The release daemon: `$NETGUARD_BIN`, else `$CARGO_TARGET_DIR/release/netguard`, else
/// `target/release/netguard`; whether it exists is [`release_daemon`]'s question.
pub fn release_daemon_path() -> PathBuf {
    match std::env::var_os("NETGUARD_BIN") {
        Some(p) => PathBuf::from(p),
        None => std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| netguard_tests::workspace_root().join("target"))
            .join("release")
            .join("netguard"),
    }
}

/// [`release_daemon_path`], which must exist.
pub fn release_daemon() -> Result<PathBuf> {
    let bin = release_daemon_path();
    if !bin.is_file() {
        bail!(
            "netguard daemon not found at {}: run `cargo build --release -p netguard` (or set \
             NETGUARD_BIN)",
            bin.display()
        );
    }
    Ok(bin)
}
