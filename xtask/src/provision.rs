//! Makes a fresh Debian 12 machine (root, stable + nightly rustup toolchains) able to build,
//! test and demo netguard. Every check is cheap, so this runs before each subcommand that needs
//! it and only installs what is missing.

use std::time::Instant;

use anyhow::{Context as _, Result, bail};

use crate::exec::{self, step};

/// What building the eBPF object needs: libLLVM 22 for bpf-linker (Debian 12 ships it in
/// bookworm-security), clang, bpftool, and the tools the daemon shells out to.
const BUILD_PACKAGES: &[&str] = &[
    "llvm-22-dev",
    "libpolly-22-dev",
    "libzstd-dev",
    "zlib1g-dev",
    "clang",
    "bpftool",
    "iproute2",
    "iputils-ping",
];

/// What the end-to-end tests, the demo and the benchmarks use.
const TEST_PACKAGES: &[&str] = &[
    "tcpdump",
    "curl",
    "nmap",
    "ncat",
    "iperf3",
    "nftables",
    "xdp-tools",
    "openssl",
    "dnsutils",
];

/// What only `cargo xtask bench` needs: wrk, and the proxies netguard's is compared with. The
/// benches run their own nginx and HAProxy from their own config files inside a namespace; the
/// packages' own services (which would listen on the host's port 80) are kept from starting and
/// disabled.
const BENCH_PACKAGES: &[&str] = &["wrk", "nginx", "haproxy"];
/// The services those packages install.
const BENCH_SERVICES: &[&str] = &["nginx", "haproxy"];
/// Debian's hook that invoke-rc.d and deb-systemd-invoke consult before starting a service;
/// exit code 101 means "forbidden".
const POLICY_RC_D: &str = "/usr/sbin/policy-rc.d";

/// bpf-linker 0.13 defaults to LLVM 23; LLVM 22 matches the nightly's LLVM and is what Debian
/// has. Without `LLVM_PREFIX` its build looks for libLLVM under /usr and fails.
const BPF_LINKER_VERSION: &str = "0.13.0";
const LLVM_PREFIX: &str = "/usr/lib/llvm-22";
const LLVM_FEATURE: &str = "llvm-22";

const BPFFS: &str = "/sys/fs/bpf";

/// Runs every provisioning step.
pub fn provision() -> Result<()> {
    let start = Instant::now();
    apt_packages().context("provisioning apt packages")?;
    rust_src().context("provisioning rust-src for nightly")?;
    bpf_linker().context("provisioning bpf-linker")?;
    bpffs().context("provisioning bpffs")?;
    step(format!(
        "provisioning done in {:.1}s",
        start.elapsed().as_secs_f64()
    ));
    Ok(())
}

/// Installs [`BENCH_PACKAGES`] that are missing without starting their services: a
/// `policy-rc.d` that forbids starts is in place during the install (unless one already is),
/// then the services of what was installed are disabled and, under systemd, stopped.
pub fn bench_packages() -> Result<()> {
    let mut missing = Vec::new();
    for &pkg in BENCH_PACKAGES {
        if !dpkg_installed(pkg)? {
            missing.push(pkg);
        }
    }
    if missing.is_empty() {
        step(format!(
            "bench packages: all present ({})",
            BENCH_PACKAGES.join(" ")
        ));
        return Ok(());
    }
    if !exec::is_root()? {
        bail!(
            "installing {} keeps their services from starting through {POLICY_RC_D}: run as root",
            missing.join(" ")
        );
    }
    let ours = !std::path::Path::new(POLICY_RC_D).exists();
    if ours {
        std::fs::write(
            POLICY_RC_D,
            "#!/bin/sh\n# cargo xtask bench: no service starts during its install\nexit 101\n",
        )
        .with_context(|| format!("writing {POLICY_RC_D}"))?;
        exec::run(exec::command("chmod").args(["755", POLICY_RC_D]))?;
    }
    step(format!(
        "installing bench packages (services kept from starting): {}",
        missing.join(" ")
    ));
    let noninteractive = [("DEBIAN_FRONTEND", "noninteractive")];
    let installed = exec::run(exec::privileged("apt-get", &noninteractive)?.args(["update", "-q"]))
        .and_then(|()| {
            exec::run(
                exec::privileged("apt-get", &noninteractive)?
                    .args(["install", "-y", "-q", "--no-install-recommends"])
                    .args(&missing),
            )
        });
    if ours {
        std::fs::remove_file(POLICY_RC_D).with_context(|| format!("removing {POLICY_RC_D}"))?;
    }
    installed?;
    let systemd = std::path::Path::new("/run/systemd/system").exists();
    for &service in BENCH_SERVICES.iter().filter(|s| missing.contains(s)) {
        // Works offline too: it removes the unit's links and, through systemd-sysv-install,
        // the init script's.
        let mut disable = exec::command("systemctl");
        disable.args(["disable", "--quiet", service]);
        if systemd {
            disable.arg("--now");
        }
        if let Err(e) = exec::run(&mut disable) {
            step(format!(
                "warning: could not disable the {service} service: {e:#}"
            ));
        }
    }
    for &pkg in &missing {
        if !dpkg_installed(pkg)? {
            bail!("apt-get install succeeded but {pkg} is still not installed");
        }
    }
    Ok(())
}

fn apt_packages() -> Result<()> {
    let wanted: Vec<&str> = BUILD_PACKAGES
        .iter()
        .chain(TEST_PACKAGES)
        .copied()
        .collect();
    let mut missing = Vec::new();
    for &pkg in &wanted {
        if !dpkg_installed(pkg)? {
            missing.push(pkg);
        }
    }
    if missing.is_empty() {
        step(format!(
            "apt packages: all {} present ({})",
            wanted.len(),
            wanted.join(" ")
        ));
        return Ok(());
    }
    step(format!("installing apt packages: {}", missing.join(" ")));
    let noninteractive = [("DEBIAN_FRONTEND", "noninteractive")];
    exec::run(exec::privileged("apt-get", &noninteractive)?.args(["update", "-q"]))?;
    exec::run(
        exec::privileged("apt-get", &noninteractive)?
            .args(["install", "-y", "-q", "--no-install-recommends"])
            .args(&missing),
    )?;
    for &pkg in &missing {
        if !dpkg_installed(pkg)? {
            bail!("apt-get install succeeded but {pkg} is still not installed");
        }
    }
    Ok(())
}

/// `dpkg-query` exits non-zero for a package it has never heard of; that counts as missing.
fn dpkg_installed(pkg: &str) -> Result<bool> {
    let out = exec::command("dpkg-query")
        .args(["-W", "-f=${Status}", pkg])
        .output()
        .context("could not run dpkg-query (this provisioning supports Debian only)")?;
    Ok(out.status.success()
        && String::from_utf8_lossy(&out.stdout).trim() == "install ok installed")
}

/// `-Z build-std=core` needs the nightly's `rust-src`.
fn rust_src() -> Result<()> {
    let installed = exec::output(exec::command("rustup").args([
        "component",
        "list",
        "--toolchain",
        "nightly",
        "--installed",
    ]))?;
    if installed.lines().any(|l| l.trim() == "rust-src") {
        step("rust-src: present for nightly");
        return Ok(());
    }
    step("installing rust-src for nightly: rustup component add rust-src --toolchain nightly");
    exec::run(exec::command("rustup").args([
        "component",
        "add",
        "rust-src",
        "--toolchain",
        "nightly",
    ]))
}

fn bpf_linker() -> Result<()> {
    if let Some(path) = exec::find_program("bpf-linker") {
        let version = exec::output(exec::command(&path).arg("--version"))?;
        let version = version.trim();
        step(format!(
            "bpf-linker: present ({version}, {})",
            path.display()
        ));
        if !version.ends_with(BPF_LINKER_VERSION) {
            step(format!(
                "warning: expected bpf-linker {BPF_LINKER_VERSION} built against LLVM 22; \
                 to replace it: LLVM_PREFIX={LLVM_PREFIX} cargo install bpf-linker --locked \
                 --force --version {BPF_LINKER_VERSION} --no-default-features --features {LLVM_FEATURE}"
            ));
        }
        return Ok(());
    }
    step(format!(
        "installing bpf-linker {BPF_LINKER_VERSION} against LLVM 22 (about a minute): \
         LLVM_PREFIX={LLVM_PREFIX} cargo install bpf-linker"
    ));
    exec::run(
        exec::command("cargo")
            .env("LLVM_PREFIX", LLVM_PREFIX)
            .args([
                "install",
                "bpf-linker",
                "--locked",
                "--version",
                BPF_LINKER_VERSION,
            ])
            .args(["--no-default-features", "--features", LLVM_FEATURE]),
    )?;
    match exec::find_program("bpf-linker") {
        Some(_) => Ok(()),
        None => bail!("cargo install bpf-linker succeeded but bpf-linker is not on PATH"),
    }
}

/// Pins live under `/sys/fs/bpf`, which is present but not mounted on a fresh machine.
fn bpffs() -> Result<()> {
    let fs = exec::output(exec::command("stat").args(["-f", "-c", "%T", BPFFS]))?;
    if fs.trim() == "bpf_fs" {
        step(format!("bpffs: mounted at {BPFFS}"));
        return Ok(());
    }
    step(format!(
        "mounting bpffs: mount -t bpf bpf {BPFFS} (was {})",
        fs.trim()
    ));
    exec::run(exec::privileged("mount", &[])?.args(["-t", "bpf", "bpf", BPFFS]))
}
