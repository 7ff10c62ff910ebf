//! Running child processes: step messages, PATH with `~/.cargo/bin`, sudo only when not root,
//! and exit codes.

use std::env;
use std::ffi::OsString;
use std::os::unix::process::ExitStatusExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::OnceLock;

use anyhow::{Context as _, Result, bail};

/// Prints the one-line message that announces a step.
pub fn step(msg: impl AsRef<str>) {
    println!("==> {}", msg.as_ref());
}

/// The workspace root (the parent of this crate's directory).
pub fn workspace_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives one level below the workspace root")
}

/// `$CARGO_HOME/bin`, or `~/.cargo/bin`.
pub fn cargo_bin_dir() -> Option<PathBuf> {
    env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| env::var_os("HOME").map(|home| Path::new(&home).join(".cargo")))
        .map(|home| home.join("bin"))
}

/// `PATH` for child processes: the current one with the cargo bin directory appended when it
/// is missing, so a freshly installed `bpf-linker` is found by rustc and by aya-build.
pub fn child_path() -> OsString {
    static PATH: OnceLock<OsString> = OnceLock::new();
    PATH.get_or_init(|| {
        let mut dirs: Vec<PathBuf> = env::var_os("PATH")
            .map(|p| env::split_paths(&p).collect())
            .unwrap_or_default();
        if let Some(bin) = cargo_bin_dir()
            && !dirs.contains(&bin)
        {
            dirs.push(bin);
        }
        env::join_paths(dirs).expect("PATH entries contain no ':'")
    })
    .clone()
}

/// Looks a program up in [`child_path`].
pub fn find_program(name: &str) -> Option<PathBuf> {
    env::split_paths(&child_path())
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

/// A command with [`child_path`] as `PATH`, run from the workspace root.
pub fn command(program: impl AsRef<std::ffi::OsStr>) -> Command {
    let mut cmd = Command::new(program);
    cmd.env("PATH", child_path()).current_dir(workspace_root());
    cmd
}

/// Whether this process runs as root (`id -u` is 0). Computed once.
pub fn is_root() -> Result<bool> {
    static ROOT: OnceLock<bool> = OnceLock::new();
    if let Some(root) = ROOT.get() {
        return Ok(*root);
    }
    let uid = output(Command::new("id").arg("-u"))?;
    let root = uid.trim() == "0";
    Ok(*ROOT.get_or_init(|| root))
}

/// A command that needs root: `program` itself when root, `sudo program` otherwise. `envs` are
/// set in the child either way (sudo resets the environment, so they go on its command line).
pub fn privileged(program: &str, envs: &[(&str, &str)]) -> Result<Command> {
    if is_root()? {
        let mut cmd = command(program);
        cmd.envs(envs.iter().copied());
        Ok(cmd)
    } else {
        let mut cmd = command("sudo");
        cmd.args(envs.iter().map(|(k, v)| format!("{k}={v}")));
        cmd.arg(program);
        Ok(cmd)
    }
}

/// The command line as a shell user would type it (for messages).
pub fn display(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for arg in cmd.get_args() {
        s.push(' ');
        s.push_str(&arg.to_string_lossy());
    }
    s
}

/// Runs `cmd` with inherited stdio and fails unless it exits with 0.
pub fn run(cmd: &mut Command) -> Result<()> {
    let status = status(cmd)?;
    if !status.success() {
        bail!("`{}` failed ({})", display(cmd), describe(status));
    }
    Ok(())
}

/// Runs `cmd` with inherited stdio and returns its exit status, whatever it is.
pub fn status(cmd: &mut Command) -> Result<ExitStatus> {
    cmd.status()
        .with_context(|| format!("could not start `{}`", display(cmd)))
}

/// Runs `cmd`, captures stdout (stderr passes through) and fails unless it exits with 0.
pub fn output(cmd: &mut Command) -> Result<String> {
    let out = cmd
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("could not start `{}`", display(cmd)))?;
    if !out.status.success() {
        bail!("`{}` failed ({})", display(cmd), describe(out.status));
    }
    String::from_utf8(out.stdout)
        .with_context(|| format!("`{}`: stdout is not UTF-8", display(cmd)))
}

/// The shell's convention: the exit code, or 128 + the signal that killed the process.
pub fn exit_code(status: ExitStatus) -> i32 {
    status
        .code()
        .or_else(|| status.signal().map(|sig| 128 + sig))
        .unwrap_or(1)
}

fn describe(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit code {code}"),
        (None, Some(sig)) => format!("killed by signal {sig}"),
        (None, None) => status.to_string(),
    }
}
