//! `netguard run`: load, fill, attach, then follow signals until told to stop.
//!
//! The order matters: the tables are filled before the XDP program is attached (the filter
//! never runs with a half-loaded policy), and the flow tracker is attached before the filter
//! (the host's own flows are known before their answers are judged). On exit the programs stay
//! attached through their pinned links; only `netguard detach` removes them.

use std::{
    path::{Path, PathBuf},
    time::Instant,
};

use tokio::signal::unix::{SignalKind, signal};
use tracing::{error, info, warn};

use crate::{
    config::{Config, ConfigError},
    denylist::{self, DenylistError},
    loader::{self, LoadError},
    paths::PinPaths,
    policy::{self, MapPlan},
    tables::{FillProgress, TableError, Tables},
};

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Denylist(#[from] DenylistError),
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error(transparent)]
    Tables(#[from] TableError),
    #[error("setting up signal handling: {0}")]
    Signals(std::io::Error),
}

impl DaemonError {
    /// `EX_DATAERR`-style 64 for bad input (nothing was touched), 1 for runtime failures.
    pub fn exit_code(&self) -> u8 {
        match self {
            DaemonError::Config(_) | DaemonError::Denylist(_) => 64,
            _ => 1,
        }
    }
}

/// A config read, validated and turned into map contents, without touching the kernel.
pub struct Prepared {
    pub config: Config,
    pub plan: MapPlan,
    pub denylist_entries: usize,
    pub warnings: Vec<String>,
}

pub fn prepare(path: &Path) -> Result<Prepared, DaemonError> {
    let config = Config::load(path)?;
    let started = Instant::now();
    let mut shown = false;
    let denylist = denylist::load(&config.denylist, &mut |p| {
        // Only narrate loads slow enough for someone to wonder.
        if started.elapsed().as_secs_f32() > 1.0 || shown {
            shown = true;
            info!(file = %p.file.display(), entries = p.entries_so_far, "loading denylist");
        }
    })?;
    let plan = policy::plan(&config, &denylist);
    Ok(Prepared {
        denylist_entries: denylist.v4.len() + denylist.v6.len(),
        warnings: denylist.warnings.clone(),
        config,
        plan,
    })
}

fn log_progress(p: FillProgress) {
    info!(
        table = p.table,
        done = p.done,
        total = p.total,
        "filling map"
    );
}

fn apply(tables: &mut Tables, prepared: &Prepared) -> Result<(), DaemonError> {
    for w in &prepared.warnings {
        warn!("{w}");
    }
    let started = Instant::now();
    let report = tables.apply(&prepared.plan, &mut log_progress)?;
    info!(
        added = report.added,
        removed = report.removed,
        unchanged = report.unchanged,
        ms = started.elapsed().as_millis() as u64,
        "tables applied"
    );
    Ok(())
}

fn raise_memlock() {
    // Kernels before 5.11 charge BPF maps to RLIMIT_MEMLOCK; newer ones use memcg and ignore it.
    let rlim = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: plain syscall with a valid struct.
    if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &rlim) } != 0 {
        tracing::debug!("could not raise RLIMIT_MEMLOCK (only kernels before 5.11 need it)");
    }
}

pub fn run(config_path: &Path) -> Result<(), DaemonError> {
    let prepared = prepare(config_path)?;
    let cfg = &prepared.config;
    info!(
        config = %config_path.display(),
        interface = %cfg.xdp.interface,
        denylist = prepared.denylist_entries,
        "config valid"
    );
    raise_memlock();
    let paths = PinPaths::new(&cfg.daemon.pin_path);
    // A first start that fails half-way removes what it pinned; a restart that fails leaves the
    // running filter (and its pins) alone.
    let fresh = !loader::is_attached(&paths);
    let attached = (|| {
        let mut ebpf = loader::load(&paths)?;
        let mut tables = Tables::from_ebpf(&mut ebpf)?;
        apply(&mut tables, &prepared)?;
        let tc = loader::attach_flow_tracker(&mut ebpf, &paths, &cfg.xdp.interface)?;
        let xdp = loader::attach_xdp(&mut ebpf, &paths, &cfg.xdp.interface, cfg.xdp.mode)?;
        Ok::<_, DaemonError>((ebpf, tables, tc, xdp))
    })();
    let (ebpf, tables, tc, xdp) = match attached {
        Ok(a) => a,
        Err(e) => {
            if fresh && let Err(cleanup) = loader::detach(&paths) {
                warn!("removing the pins of the failed start: {cleanup}");
            }
            return Err(e);
        }
    };
    info!(
        interface = %cfg.xdp.interface,
        xdp = ?xdp,
        flow_tracker = ?tc,
        pin_path = %paths.root().display(),
        action = ?cfg.xdp.action,
        "netguard ready"
    );
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(DaemonError::Signals)?;
    runtime.block_on(serve(config_path.to_path_buf(), prepared, tables))?;
    // `ebpf` drops here: our fds close, the pinned links keep the programs attached.
    drop(ebpf);
    info!(
        pin_path = %paths.root().display(),
        "exiting; the filter stays attached (`netguard detach` removes it)"
    );
    Ok(())
}

async fn serve(
    config_path: PathBuf,
    mut running: Prepared,
    mut tables: Tables,
) -> Result<(), DaemonError> {
    let mut term = signal(SignalKind::terminate()).map_err(DaemonError::Signals)?;
    let mut int = signal(SignalKind::interrupt()).map_err(DaemonError::Signals)?;
    let mut hup = signal(SignalKind::hangup()).map_err(DaemonError::Signals)?;
    loop {
        tokio::select! {
            _ = term.recv() => return Ok(()),
            _ = int.recv() => return Ok(()),
            _ = hup.recv() => {
                match reload(&config_path, &running, &mut tables) {
                    Ok(next) => running = next,
                    Err(e) => error!("reload rejected, the running config stays in force: {e}"),
                }
            }
        }
    }
}

/// Re-reads the config; on any error nothing changes. Settings that need a re-attach (interface,
/// mode, pin path) are reported and kept as they are.
fn reload(path: &Path, running: &Prepared, tables: &mut Tables) -> Result<Prepared, DaemonError> {
    let started = Instant::now();
    let next = prepare(path)?;
    let (old, new) = (&running.config, &next.config);
    if old.xdp.interface != new.xdp.interface
        || old.xdp.mode != new.xdp.mode
        || old.daemon.pin_path != new.daemon.pin_path
    {
        warn!(
            "interface, mode and pin_path changes take effect on restart; the rest is applied now"
        );
    }
    apply(tables, &next)?;
    info!(ms = started.elapsed().as_millis() as u64, "config reloaded");
    Ok(next)
}
