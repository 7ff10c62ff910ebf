//! The commands that talk to a running daemon through its admin endpoint (`netguard reload`,
//! `netguard routes`), and `netguard top`, which only reads the pinned counters.

use std::{
    io::{IsTerminal as _, Write as _},
    net::SocketAddr,
    path::Path,
    time::{Duration, Instant},
};

use http::{Method, StatusCode};

use crate::{
    admin::{self, ReloadAnswer},
    paths::PinPaths,
    routes::RoutesView,
    stats::Snapshot,
    tables::Tables,
    top,
};

/// `EX_UNAVAILABLE`: the daemon could not be reached.
pub const EXIT_UNAVAILABLE: u8 = 69;

/// A failed command: what to print and the exit code.
#[derive(Debug)]
pub struct CtlError {
    pub message: String,
    pub code: u8,
}

fn fail(code: u8, message: impl Into<String>) -> CtlError {
    CtlError {
        message: message.into(),
        code,
    }
}

/// The admin address: `--admin`, else `[admin] listen` of the config file (read leniently),
/// else the default.
pub fn admin_addr(explicit: Option<SocketAddr>, config: &Path) -> Result<SocketAddr, CtlError> {
    if let Some(a) = explicit {
        return Ok(admin::client_addr(a));
    }
    let listen = match std::fs::read_to_string(config) {
        Ok(text) => admin::listen_from_config_text(&text)
            .map_err(|e| fail(64, format!("{}: {e}", config.display())))?,
        // No file to read: the default, which is what a daemon without [admin] uses.
        Err(_) => Some(admin::DEFAULT_LISTEN),
    };
    match listen {
        Some(l) => Ok(admin::client_addr(l)),
        None => Err(fail(
            EXIT_UNAVAILABLE,
            format!(
                "{}: [admin] enabled = false, so the daemon cannot be asked; send it SIGHUP instead",
                config.display()
            ),
        )),
    }
}

fn call(
    addr: SocketAddr,
    method: Method,
    path: &str,
    timeout: Duration,
) -> Result<(StatusCode, bytes::Bytes), CtlError> {
    admin::call(addr, method, path, timeout).map_err(|e| {
        let code = match e {
            admin::ClientError::Connect { .. } | admin::ClientError::Timeout { .. } => {
                EXIT_UNAVAILABLE
            }
            admin::ClientError::Http { .. } => 1,
        };
        fail(code, e.to_string())
    })
}

/// `netguard reload`: the daemon re-reads its config and answers; returns the success message.
pub fn reload(addr: SocketAddr, timeout: Duration) -> Result<String, CtlError> {
    let (status, body) = call(addr, Method::POST, "/reload", timeout)?;
    match serde_json::from_slice::<ReloadAnswer>(&body) {
        Ok(answer) if answer.ok => Ok(answer.message),
        Ok(answer) => Err(fail(answer.exit_code.max(1), answer.message)),
        Err(_) => Err(fail(
            1,
            format!(
                "admin endpoint {addr} answered {status}: {}",
                String::from_utf8_lossy(&body).trim()
            ),
        )),
    }
}

/// `netguard routes`: the running proxy's apps and backend health.
pub fn routes(addr: SocketAddr, timeout: Duration) -> Result<RoutesView, CtlError> {
    let (status, body) = call(addr, Method::GET, "/routes", timeout)?;
    if status != StatusCode::OK {
        return Err(fail(
            1,
            format!(
                "admin endpoint {addr} answered {status}: {}",
                String::from_utf8_lossy(&body).trim()
            ),
        ));
    }
    serde_json::from_slice(&body).map_err(|e| {
        fail(
            1,
            format!("admin endpoint {addr}: unreadable /routes answer: {e}"),
        )
    })
}

/// `netguard top`: every `interval`, the rates since the last reading; `count` refreshes, or
/// until interrupted.
pub fn top(
    pin_path: &Path,
    interval: Duration,
    count: Option<u64>,
    json: bool,
) -> Result<(), CtlError> {
    let tables =
        Tables::open_pinned(&PinPaths::new(pin_path)).map_err(|e| fail(1, e.to_string()))?;
    let read = || -> Result<(Snapshot, Instant), CtlError> {
        let cfg = tables.filter_config().map_err(|e| fail(1, e.to_string()))?;
        let counters = tables.counters().map_err(|e| fail(1, e.to_string()))?;
        Ok((Snapshot::new(&cfg, counters), Instant::now()))
    };
    let clear = !json && std::io::stdout().is_terminal();
    let (mut prev, mut at) = read()?;
    let mut shown = 0u64;
    while count.is_none_or(|n| shown < n) {
        std::thread::sleep(interval);
        let (now, now_at) = read()?;
        let rates = top::rates(&prev, &now, now_at.duration_since(at));
        let mut out = std::io::stdout().lock();
        let written = if json {
            serde_json::to_string(&rates)
                .map_err(std::io::Error::other)
                .and_then(|line| writeln!(out, "{line}"))
        } else {
            let screen = rates.to_table();
            if clear {
                // Home and clear, then the table: a refreshing screen like top(1).
                write!(out, "\x1b[H\x1b[2J{screen}")
            } else {
                writeln!(out, "{screen}")
            }
        };
        // A closed pipe (`netguard top | head`) ends the command quietly.
        if written.and_then(|()| out.flush()).is_err() {
            return Ok(());
        }
        (prev, at) = (now, now_at);
        shown += 1;
    }
    Ok(())
}
