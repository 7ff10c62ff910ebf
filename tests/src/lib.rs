//! Network-namespace harness for netguard's end-to-end tests and `cargo xtask demo`.
//!
//! Everything here builds kernel state that a guard owns and removes in `Drop`, also when a test
//! panics: namespaces ([`NetNs`]), the two-namespace edge topology ([`Sandbox`]), listeners
//! ([`listeners`]), packet captures ([`probe::Capture`]) and the daemon ([`Daemon`]). Nothing
//! touches the machine's own interfaces: veths are created directly inside namespaces this
//! process made. Every external command and every probe has a time limit, so no test can hang.
//!
//! The library depends on std, `libc` and `serde_json` only.
//!
//! Names: every namespace, pin directory and temporary directory is `ngt-<pid>-<counter>`, so
//! two sandboxes (in one process or in two) never collide, and [`reap_stale`] can tell leftovers
//! of a dead process from live ones.

pub mod bulk;
pub mod certs;
pub mod cmd;
pub mod daemon;
pub mod denylists;
pub mod http;
pub mod keepalive;
pub mod limiter_sandbox;
pub mod listeners;
pub mod netns;
pub mod polled_server;
pub mod private_sandbox;
pub mod probe;
pub mod prom;
pub mod recording;
pub mod sandbox;
pub mod veth;

use std::{
    path::PathBuf,
    sync::atomic::{AtomicU32, Ordering},
};

pub use cmd::{Proc, TempDir};
pub use daemon::{Config, Daemon, Stats};
pub use listeners::{TcpEchoServer, UdpEchoServer};
pub use netns::{NetNs, in_netns};
pub use probe::{Capture, ProbeResult};
pub use sandbox::Sandbox;

/// Prefix of everything this harness creates: namespaces, pin directories, temp directories.
pub const PREFIX: &str = "ngt-";

/// Counter values are written in base 36 with at most this many digits, so a name is at most
/// `ngt-` + 7 pid digits + `-` + 2 = 14 bytes and an interface named `<name>` + one letter still
/// fits `IFNAMSIZ` (15 bytes plus NUL).
const COUNTER_DIGITS: u32 = 2;

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A name unique on this machine while this process lives: `ngt-<pid>-<counter in base 36>`.
pub fn unique_name() -> String {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed) % 36u32.pow(COUNTER_DIGITS);
    format!("{PREFIX}{}-{}", std::process::id(), base36(n))
}

fn base36(mut n: u32) -> String {
    const DIGITS: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut out = Vec::new();
    loop {
        out.push(DIGITS[(n % 36) as usize]);
        n /= 36;
        if n == 0 {
            break;
        }
    }
    out.reverse();
    String::from_utf8(out).expect("ASCII digits")
}

/// The pid encoded in a name made by [`unique_name`].
fn owner_pid(name: &str) -> Option<u32> {
    name.strip_prefix(PREFIX)?.split('-').next()?.parse().ok()
}

/// The workspace root (this package's parent directory, as compiled).
pub fn workspace_root() -> PathBuf {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().map(PathBuf::from).unwrap_or(manifest)
}

/// Removes namespaces and bpffs pin directories named `ngt-<pid>-*` whose process no longer
/// exists (leftovers of a run that was killed before its `Drop`s ran). Returns what it removed.
/// Never called implicitly: entries of live processes are left alone, but a process in another
/// pid namespace would look dead from here.
pub fn reap_stale() -> Vec<String> {
    let dead = |name: &str| {
        owner_pid(name).is_some_and(|pid| !PathBuf::from(format!("/proc/{pid}")).exists())
    };
    let mut removed = Vec::new();
    for ns in netns::list() {
        if dead(&ns) && netns::delete(&ns).is_ok() {
            removed.push(ns);
        }
    }
    if let Ok(entries) = std::fs::read_dir(daemon::BPFFS) {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if dead(&name) && std::fs::remove_dir_all(entry.path()).is_ok() {
                removed.push(entry.path().display().to_string());
            }
        }
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_short_and_parseable() {
        let a = unique_name();
        let b = unique_name();
        assert_ne!(a, b);
        assert!(a.len() <= 14, "{a}");
        assert_eq!(owner_pid(&a), Some(std::process::id()));
        assert_eq!(base36(0), "0");
        assert_eq!(base36(35), "z");
        assert_eq!(base36(36), "10");
        assert_eq!(owner_pid("ngt-4194304-zz"), Some(4194304));
        assert_eq!(owner_pid("other"), None);
    }
}
