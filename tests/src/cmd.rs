//! Running external commands with a time limit, background processes that die with their guard,
//! and temporary directories.

use std::{
    fs::File,
    io::{self, Read},
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Output, Stdio},
    thread,
    time::{Duration, Instant},
};

/// Time limit for short administrative commands (`ip`, `tcpdump -r`, the CLI).
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(15);

const POLL: Duration = Duration::from_millis(10);

/// Runs `cmd` to completion, capturing stdout and stderr; kills it after `timeout` and returns
/// an `ErrorKind::TimedOut` error naming the command.
pub fn run(cmd: &mut Command, timeout: Duration) -> io::Result<Output> {
    let desc = describe(cmd);
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| io::Error::new(e.kind(), format!("spawn `{desc}`: {e}")))?;
    let out = child.stdout.take().map(reader);
    let err = child.stderr.take().map(reader);
    let status = wait_deadline(&mut child, timeout)?;
    match status {
        Some(status) => {
            let stdout = out
                .map(|h| h.join().unwrap_or_default())
                .unwrap_or_default();
            let stderr = err
                .map(|h| h.join().unwrap_or_default())
                .unwrap_or_default();
            Ok(Output {
                status,
                stdout,
                stderr,
            })
        }
        // The readers are not joined: a grandchild may still hold the pipes open.
        None => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("`{desc}` did not finish within {timeout:?} (killed)"),
        )),
    }
}

/// Like [`run`] with [`COMMAND_TIMEOUT`], but panics unless the command exits 0; returns stdout.
pub fn run_ok(cmd: &mut Command) -> String {
    let desc = describe(cmd);
    let out = run(cmd, COMMAND_TIMEOUT).unwrap_or_else(|e| panic!("{e}"));
    if !out.status.success() {
        panic!(
            "`{desc}` failed ({}):\nstdout: {}\nstderr: {}",
            out.status,
            lossy(&out.stdout),
            lossy(&out.stderr)
        );
    }
    lossy(&out.stdout)
}

/// `program arg arg …`, for messages.
pub fn describe(cmd: &Command) -> String {
    std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|s| s.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

pub fn lossy(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn reader(mut r: impl Read + Send + 'static) -> thread::JoinHandle<Vec<u8>> {
    thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = r.read_to_end(&mut buf);
        buf
    })
}

/// Waits for `child` up to `timeout`; on expiry kills it (SIGKILL), reaps it and returns `None`.
fn wait_deadline(child: &mut Child, timeout: Duration) -> io::Result<Option<ExitStatus>> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(Some(status));
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Ok(None);
        }
        thread::sleep(POLL);
    }
}

/// A background process whose stdout and stderr go to a log file. Dropping the guard stops it
/// (SIGTERM, then SIGKILL after a grace period) and reaps it.
#[derive(Debug)]
pub struct Proc {
    child: Child,
    desc: String,
    log: PathBuf,
    exited: Option<ExitStatus>,
}

impl Proc {
    /// Starts `cmd` with stdin from /dev/null and stdout + stderr appended to `log`.
    pub fn spawn(cmd: &mut Command, log: &Path) -> io::Result<Proc> {
        let desc = describe(cmd);
        let file = File::options().create(true).append(true).open(log)?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file)
            .spawn()
            .map_err(|e| io::Error::new(e.kind(), format!("spawn `{desc}`: {e}")))?;
        Ok(Proc {
            child,
            desc,
            log: log.to_path_buf(),
            exited: None,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// The whole log so far (lossy UTF-8; empty if unreadable).
    pub fn log(&self) -> String {
        std::fs::read(&self.log)
            .map(|b| lossy(&b))
            .unwrap_or_default()
    }

    /// The last `lines` lines of the log.
    pub fn log_tail(&self, lines: usize) -> String {
        tail(&self.log(), lines)
    }

    /// `Some(status)` once the process has exited.
    pub fn try_exited(&mut self) -> Option<ExitStatus> {
        if self.exited.is_none() {
            self.exited = self.child.try_wait().ok().flatten();
        }
        self.exited
    }

    /// Polls the log until it contains `needle`. Fails early if the process exits, and after
    /// `timeout`; the error carries the log's tail.
    pub fn wait_for_log(&mut self, needle: &str, timeout: Duration) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        loop {
            if self.log().contains(needle) {
                return Ok(());
            }
            if let Some(status) = self.try_exited() {
                // The line may have been written just before the exit.
                if self.log().contains(needle) {
                    return Ok(());
                }
                return Err(format!(
                    "`{}` exited ({status}) before logging {needle:?}; log {}:\n{}",
                    self.desc,
                    self.log.display(),
                    self.log_tail(40)
                ));
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "`{}` did not log {needle:?} within {timeout:?}; log {}:\n{}",
                    self.desc,
                    self.log.display(),
                    self.log_tail(40)
                ));
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// Sends `signal`, waits up to `grace` for the exit, then SIGKILLs. Returns the exit status.
    pub fn stop(&mut self, signal: i32, grace: Duration) -> Option<ExitStatus> {
        if let Some(status) = self.try_exited() {
            return Some(status);
        }
        // SAFETY: kill(2) on our own child's pid; the child is not reaped yet (try_wait above
        // returned None), so the pid cannot have been reused.
        unsafe { libc::kill(self.child.id() as libc::pid_t, signal) };
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if let Some(status) = self.try_exited() {
                return Some(status);
            }
            thread::sleep(POLL);
        }
        let _ = self.child.kill();
        self.exited = self.child.wait().ok();
        self.exited
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.stop(libc::SIGTERM, Duration::from_secs(3));
    }
}

/// The last `lines` lines of `text`.
pub fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// A directory under the system temp dir, named like everything else here, removed on drop —
/// unless the thread is panicking, in which case it is kept (and its path printed) for the
/// post-mortem.
#[derive(Debug)]
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    pub fn new() -> io::Result<TempDir> {
        loop {
            let path = std::env::temp_dir().join(crate::unique_name());
            match std::fs::create_dir(&path) {
                Ok(()) => return Ok(TempDir { path }),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => {
                    return Err(io::Error::new(
                        e.kind(),
                        format!("create {}: {e}", path.display()),
                    ));
                }
            }
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn join(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if thread::panicking() {
            eprintln!(
                "netguard-tests: kept {} for inspection",
                self.path.display()
            );
        } else {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_times_out() {
        let start = Instant::now();
        let err = run(Command::new("sleep").arg("10"), Duration::from_millis(200)).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert!(start.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn run_captures_output() {
        let out = run(
            Command::new("sh").args(["-c", "echo out; echo err >&2"]),
            COMMAND_TIMEOUT,
        )
        .unwrap();
        assert!(out.status.success());
        assert_eq!(lossy(&out.stdout), "out\n");
        assert_eq!(lossy(&out.stderr), "err\n");
    }

    #[test]
    fn tail_keeps_last_lines() {
        assert_eq!(tail("a\nb\nc\n", 2), "b\nc");
        assert_eq!(tail("a", 5), "a");
    }
}
