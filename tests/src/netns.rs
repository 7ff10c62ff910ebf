//! Named network namespaces (`/run/netns/NAME`) owned by a guard, and running code inside them.

use std::{
    fs::File,
    io,
    os::fd::AsRawFd,
    path::{Path, PathBuf},
    process::{Command, Output},
    thread,
    time::Duration,
};

use crate::cmd::{self, COMMAND_TIMEOUT, Proc};

/// Where `ip netns add` puts the namespace handles.
pub const NETNS_DIR: &str = "/run/netns";

/// A network namespace named `ngt-<pid>-<n>`, with loopback up. Dropping the guard deletes it
/// (`ip netns del`), also while unwinding from a failed assertion. Processes started with
/// [`NetNs::spawn`] are separate guards: drop them first (declare them after the namespace).
#[derive(Debug)]
pub struct NetNs {
    name: String,
}

#[expect(
    clippy::new_without_default,
    reason = "creating kernel state is not a default"
)]
impl NetNs {
    /// Creates a fresh namespace; panics if `ip netns add` fails.
    pub fn new() -> NetNs {
        Self::try_new().unwrap_or_else(|e| panic!("creating a network namespace: {e}"))
    }

    pub fn try_new() -> io::Result<NetNs> {
        // A name can only be taken by this process itself (it encodes our pid) after the counter
        // wrapped; then the next name is tried.
        for _ in 0..64 {
            let name = crate::unique_name();
            if Path::new(NETNS_DIR).join(&name).exists() {
                continue;
            }
            let out = cmd::run(
                Command::new("ip").args(["netns", "add", &name]),
                COMMAND_TIMEOUT,
            )?;
            if !out.status.success() {
                let err = cmd::lossy(&out.stderr);
                if err.contains("File exists") {
                    continue;
                }
                return Err(io::Error::other(format!(
                    "ip netns add {name}: {}",
                    err.trim()
                )));
            }
            let ns = NetNs { name };
            ns.try_exec(&["ip", "link", "set", "lo", "up"])?;
            return Ok(ns);
        }
        Err(io::Error::other("no free ngt- namespace name"))
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// `/run/netns/NAME`, for `nsenter --net=…` and `setns`.
    pub fn path(&self) -> PathBuf {
        Path::new(NETNS_DIR).join(&self.name)
    }

    /// `ip netns exec NAME args…` as a `Command`, for callers that need more control.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name]).args(args);
        c
    }

    /// `nsenter --net=/run/netns/NAME args…`: only the network namespace changes, so the host's
    /// bpffs (`/sys/fs/bpf`) stays visible — `ip netns exec` remounts `/sys` and hides it.
    pub fn nsenter_command(&self, args: &[&str]) -> Command {
        let mut c = Command::new("nsenter");
        c.arg(format!("--net={}", self.path().display())).args(args);
        c
    }

    /// Runs a command inside the namespace with the default time limit; returns its output
    /// whatever the exit status. Panics only if it cannot run or times out.
    pub fn output(&self, args: &[&str]) -> Output {
        self.output_timeout(args, COMMAND_TIMEOUT)
    }

    pub fn output_timeout(&self, args: &[&str], timeout: Duration) -> Output {
        cmd::run(&mut self.command(args), timeout)
            .unwrap_or_else(|e| panic!("in netns {}: {e}", self.name))
    }

    /// Runs a command inside the namespace; panics (with its output) unless it exits 0.
    /// Returns stdout.
    pub fn exec(&self, args: &[&str]) -> String {
        self.try_exec(args).unwrap_or_else(|e| panic!("{e}"))
    }

    pub fn try_exec(&self, args: &[&str]) -> io::Result<String> {
        let mut c = self.command(args);
        let desc = cmd::describe(&c);
        let out = cmd::run(&mut c, COMMAND_TIMEOUT)?;
        if out.status.success() {
            Ok(cmd::lossy(&out.stdout))
        } else {
            Err(io::Error::other(format!(
                "`{desc}` failed ({}): {}{}",
                out.status,
                cmd::lossy(&out.stdout),
                cmd::lossy(&out.stderr)
            )))
        }
    }

    /// Starts a background command inside the namespace, output to `log`. The returned guard
    /// stops it on drop. `ip netns exec` execs the command, so the guard's pid is the command's.
    pub fn spawn(&self, args: &[&str], log: &Path) -> Proc {
        Proc::spawn(&mut self.command(args), log)
            .unwrap_or_else(|e| panic!("in netns {}: {e}", self.name))
    }

    /// Runs `f` on a thread that has entered this namespace (see [`in_netns`]).
    pub fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        in_netns(&self.name, f).unwrap_or_else(|e| panic!("entering netns {}: {e}", self.name))
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        if let Err(e) = delete(&self.name) {
            eprintln!("netguard-tests: {e}");
        }
    }
}

/// `ip netns del NAME` (its veths go with it).
pub fn delete(name: &str) -> io::Result<()> {
    let out = cmd::run(
        Command::new("ip").args(["netns", "del", name]),
        COMMAND_TIMEOUT,
    )?;
    if out.status.success() {
        Ok(())
    } else {
        Err(io::Error::other(format!(
            "ip netns del {name}: {}",
            cmd::lossy(&out.stderr).trim()
        )))
    }
}

/// Names in `/run/netns`.
pub fn list() -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(NETNS_DIR) else {
        return Vec::new();
    };
    let mut names: Vec<String> = entries
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

pub fn exists(name: &str) -> bool {
    Path::new(NETNS_DIR).join(name).exists()
}

/// Runs `f` on a new thread that first joins the named network namespace with `setns(2)`.
/// Sockets keep the namespace they were created in, so a socket made inside `f` can be returned
/// and used from any thread afterwards. Only this thread changes namespace; a panic in `f` is
/// propagated.
pub fn in_netns<T: Send>(name: &str, f: impl FnOnce() -> T + Send) -> io::Result<T> {
    let path = Path::new(NETNS_DIR).join(name);
    let file = File::open(&path)
        .map_err(|e| io::Error::new(e.kind(), format!("open {}: {e}", path.display())))?;
    thread::scope(|s| {
        let handle = s.spawn(move || {
            // SAFETY: `file` is an open netns handle that outlives the call; CLONE_NEWNET only
            // switches this thread, which exits when `f` returns.
            let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
            if rc != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(f())
        });
        match handle.join() {
            Ok(result) => result,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    })
}
