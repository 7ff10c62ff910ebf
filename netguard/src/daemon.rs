//! `netguard run`: load, fill, attach, then follow signals until told to stop.
//!
//! The order matters: the tables are filled before the XDP program is attached (the filter
//! never runs with a half-loaded policy), and the flow tracker is attached before the filter
//! (the host's own flows are known before their answers are judged). On exit the programs stay
//! attached through their pinned links; only `netguard detach` removes them.

use std::{
    path::{Path, PathBuf},
    sync::{Arc, RwLock},
    time::Instant,
};

use tokio::signal::unix::{SignalKind, signal};
use tracing::{error, info, warn};

use crate::{
    admin::{AdminError, AdminServer, AdminState, ReloadAnswer, ReloadRequest},
    config::{Config, ConfigError},
    denylist::{self, DenylistError},
    dns,
    loader::{self, LoadError},
    paths::PinPaths,
    policy::{self, MapPlan},
    private_net,
    proxy::{Proxy, ProxyError},
    tables::{FillProgress, TableError, Tables},
};

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Denylist(#[from] DenylistError),
    /// Boxed: kernel errors carry paths and syscall details, and are rare.
    #[error(transparent)]
    Load(Box<LoadError>),
    #[error(transparent)]
    Tables(#[from] TableError),
    #[error(transparent)]
    Dns(#[from] dns::DnsError),
    #[error("setting up signal handling: {0}")]
    Signals(std::io::Error),
    #[error(transparent)]
    Proxy(#[from] ProxyError),
    #[error(transparent)]
    Admin(#[from] AdminError),
}

impl From<LoadError> for DaemonError {
    fn from(e: LoadError) -> Self {
        DaemonError::Load(Box::new(e))
    }
}

impl DaemonError {
    /// `EX_DATAERR`-style 64 for bad input (nothing was touched), 1 for runtime failures.
    pub fn exit_code(&self) -> u8 {
        match self {
            DaemonError::Config(_) | DaemonError::Denylist(_) => 64,
            // Unreadable certificates or keys, or routes that cannot coexist: bad input too.
            DaemonError::Proxy(
                ProxyError::Tls(_) | ProxyError::TlsConfig(_) | ProxyError::Routes(_),
            ) => 64,
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
    let (report, deny) = tables.apply_all(&prepared.plan, &mut log_progress)?;
    crate::deny_banks::log_report(&deny);
    let private = tables.apply_private(&private_net::plan(&prepared.config.private_network))?;
    if private.added + private.removed > 0 {
        info!(
            added = private.added,
            removed = private.removed,
            "private-network tables applied"
        );
    }
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
    // The proxy binds before anything is attached: a taken port fails the start cleanly.
    let proxy = match &cfg.proxy {
        Some(p) => Some(Proxy::start(p, &cfg.app)?),
        None => None,
    };
    // Up before the maps are filled, so probes see 503 (not a refused connection) meanwhile.
    let (admin, admin_reloads) = AdminState::new(cfg);
    if let Some(p) = &proxy {
        admin.set_proxy(p.shared());
    }
    let admin_server = match cfg.admin.enabled {
        true => Some(AdminServer::start(cfg.admin.listen, admin.clone())?),
        false => None,
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(DaemonError::Signals)?;
    let directory: dns::SharedDirectory = Arc::new(RwLock::new(Arc::new(
        private_net::Directory::new(&cfg.private_network),
    )));
    let paths = PinPaths::new(&cfg.daemon.pin_path);
    // A first start that fails half-way removes what it pinned; a restart that fails leaves the
    // running filter (and its pins) alone.
    let fresh = !loader::is_attached(&paths);
    let attached = (|| {
        let mut ebpf = loader::load(&paths)?;
        let mut tables = Tables::from_ebpf(&mut ebpf)?;
        apply(&mut tables, &prepared)?;
        let tc = loader::attach_flow_tracker(&mut ebpf, &paths, &cfg.xdp.interface)?;
        loader::attach_limiter(&mut ebpf, &paths, &cfg.ratelimit.interfaces)?;
        // Limiter links of interfaces this config no longer lists (from an earlier run).
        for gone in loader::detach_limiter_except(&paths, &cfg.ratelimit.interfaces)? {
            info!(interface = %gone, "limiter detached: interface no longer configured");
        }
        let private_interfaces = private_interfaces(cfg);
        loader::attach_private(&mut ebpf, &paths, &private_interfaces)?;
        for gone in loader::detach_private_except(&paths, &private_interfaces)? {
            info!(interface = %gone, "private-network isolation detached: interface no longer configured");
        }
        let _entered = runtime.enter();
        let dns_tasks = dns::spawn(&dns_listens(cfg), directory.clone())?;
        let xdp = loader::attach_xdp(&mut ebpf, &paths, &cfg.xdp.interface, cfg.xdp.mode)?;
        Ok::<_, DaemonError>((ebpf, tables, tc, xdp, dns_tasks))
    })();
    let (mut ebpf, tables, tc, xdp, dns_tasks) = match attached {
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
        limiter_interfaces = ?cfg.ratelimit.interfaces,
        pin_path = %paths.root().display(),
        action = ?cfg.xdp.action,
        "netguard ready"
    );
    match loader::remove_stale_maps(&paths) {
        Ok(removed) if removed.is_empty() => {}
        Ok(removed) => info!(
            removed = removed.len(),
            "unpinned the maps of an older netguard's layout"
        ),
        Err(e) => warn!("maps of an older netguard's layout stay pinned: {e}"),
    }
    admin.set_ready(true);
    let mut state = Running {
        config_path: config_path.to_path_buf(),
        paths: paths.clone(),
        prepared,
        tables,
        proxy,
        directory,
        dns_tasks,
        admin,
    };
    let served = runtime.block_on(serve(&mut state, &mut ebpf, admin_reloads));
    state.admin.set_ready(false);
    served?;
    if let (Some(proxy), Some(config)) = (&state.proxy, &state.prepared.config.proxy) {
        runtime.block_on(drain(proxy, config.drain_timeout_secs.0));
    }
    for task in &state.dns_tasks {
        task.abort();
    }
    // `ebpf` drops here: our fds close, the pinned links keep the programs attached.
    drop(ebpf);
    drop(admin_server);
    info!(
        pin_path = %paths.root().display(),
        "exiting; the filter stays attached (`netguard detach` removes it)"
    );
    Ok(())
}

/// What a running daemon holds between signals.
struct Running {
    config_path: PathBuf,
    paths: PinPaths,
    prepared: Prepared,
    tables: Tables,
    /// The L7 proxy, when the config has `[proxy]`.
    proxy: Option<Proxy>,
    /// What the private-network DNS responders answer from; swapped whole on reload.
    directory: dns::SharedDirectory,
    /// Dropped (and aborted) with the daemon; listen addresses change on restart only.
    dns_tasks: Vec<tokio::task::JoinHandle<()>>,
    /// Readiness, reload counters and the routes `/routes` shows.
    admin: Arc<AdminState>,
}

/// Graceful proxy drain after SIGTERM/SIGINT; a second signal ends it at once.
async fn drain(proxy: &Proxy, timeout: std::time::Duration) {
    info!(
        open = proxy.open_connections(),
        timeout_secs = timeout.as_secs_f64(),
        "proxy draining: no new connections, finishing requests in flight"
    );
    if crate::reuseport::migrates_queued_connections() == Some(false) {
        info!(
            "net.ipv4.tcp_migrate_req is 0: connections queued but not yet accepted are reset when the listeners close, even with a new netguard listening (see README, \"Upgrading without a gap\")"
        );
    }
    let started = Instant::now();
    let again = async {
        match (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) {
            (Ok(mut term), Ok(mut int)) => tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            },
            _ => std::future::pending().await,
        }
    };
    let left = proxy.drain(timeout, again).await;
    if left == 0 {
        info!(ms = started.elapsed().as_millis() as u64, "proxy drained");
    } else {
        warn!(
            connections = left,
            "proxy drain ended with connections still open; they are closed"
        );
    }
}

/// Every private-side interface of every network, once.
fn private_interfaces(cfg: &Config) -> Vec<String> {
    let mut out: Vec<String> = cfg
        .private_network
        .iter()
        .flat_map(|n| n.interfaces.iter().cloned())
        .collect();
    out.sort();
    out.dedup();
    out
}

/// Every DNS listen address, once (networks may share their gateway).
fn dns_listens(cfg: &Config) -> Vec<std::net::SocketAddr> {
    let mut out: Vec<std::net::SocketAddr> =
        cfg.private_network.iter().map(|n| n.dns_listen()).collect();
    out.sort();
    out.dedup();
    out
}

async fn serve(
    state: &mut Running,
    ebpf: &mut aya::Ebpf,
    mut reload_requests: tokio::sync::mpsc::Receiver<ReloadRequest>,
) -> Result<(), DaemonError> {
    let mut term = signal(SignalKind::terminate()).map_err(DaemonError::Signals)?;
    let mut int = signal(SignalKind::interrupt()).map_err(DaemonError::Signals)?;
    let mut hup = signal(SignalKind::hangup()).map_err(DaemonError::Signals)?;
    loop {
        tokio::select! {
            _ = term.recv() => return Ok(()),
            _ = int.recv() => return Ok(()),
            _ = hup.recv() => {
                reload_and_record(state, ebpf);
            }
            Some(request) = reload_requests.recv() => {
                let _ = request.reply.send(reload_and_record(state, ebpf));
            }
        }
    }
}

/// [`reload`] for SIGHUP and `POST /reload` alike: counted, timed, and answered.
fn reload_and_record(state: &mut Running, ebpf: &mut aya::Ebpf) -> ReloadAnswer {
    let started = Instant::now();
    let result = reload(state, ebpf);
    let took = started.elapsed();
    match result {
        Ok(next) => {
            state.admin.record_reload(Some(&next.config), took);
            let answer = ReloadAnswer::applied(&state.config_path, &next, took);
            state.prepared = next;
            answer
        }
        Err(e) => {
            error!("reload rejected, the running config stays in force: {e}");
            state.admin.record_reload(None, took);
            ReloadAnswer::rejected(&e, took)
        }
    }
}

/// Re-reads the config; on any error nothing changes. Limiter interfaces are attached first
/// (a failure rolls back the ones this reload attached), then the maps are brought to the new
/// config, then interfaces no longer listed are detached. XDP interface, mode and pin path
/// changes need a restart.
fn reload(state: &mut Running, ebpf: &mut aya::Ebpf) -> Result<Prepared, DaemonError> {
    let started = Instant::now();
    let next = prepare(&state.config_path)?;
    let (old, new) = (&state.prepared.config, &next.config);
    if old.xdp.interface != new.xdp.interface
        || old.xdp.mode != new.xdp.mode
        || old.daemon.pin_path != new.daemon.pin_path
    {
        warn!(
            "xdp.interface, xdp.mode and daemon.pin_path changes take effect on restart; the rest is applied now"
        );
    }
    let added: Vec<String> = new
        .ratelimit
        .interfaces
        .iter()
        .filter(|i| !old.ratelimit.interfaces.contains(i))
        .cloned()
        .collect();
    // The proxy's new routes are built first (nothing changes if they cannot be) and
    // installed once the maps are applied.
    let proxy_next = match (&state.proxy, &new.proxy) {
        (Some(proxy), Some(config)) => Some(proxy.prepare(config, &new.app)?),
        (None, None) => None,
        _ => {
            warn!("adding or removing [proxy] takes effect on restart");
            None
        }
    };
    if let Err(e) = loader::attach_limiter(ebpf, &state.paths, &added) {
        let _ = loader::detach_limiter_except(&state.paths, &old.ratelimit.interfaces);
        return Err(e.into());
    }
    let (old_private, new_private) = (private_interfaces(old), private_interfaces(new));
    let added_private: Vec<String> = new_private
        .iter()
        .filter(|i| !old_private.contains(i))
        .cloned()
        .collect();
    if let Err(e) = loader::attach_private(ebpf, &state.paths, &added_private) {
        let _ = loader::detach_private_except(&state.paths, &old_private);
        let _ = loader::detach_limiter_except(&state.paths, &old.ratelimit.interfaces);
        return Err(e.into());
    }
    if old.admin != new.admin {
        warn!("[admin] changes take effect on restart");
    }
    if dns_listens(old) != dns_listens(new) {
        warn!("private_network dns_listen changes take effect on restart");
    }
    apply(&mut state.tables, &next)?;
    if let (Some(proxy), Some(routes)) = (state.proxy.as_mut(), proxy_next) {
        proxy.install(routes);
        info!(apps = next.config.app.len(), "proxy routes reloaded");
    }
    // The maps now hold the new members: answer with the new names at once.
    if let Ok(mut directory) = state.directory.write() {
        *directory = Arc::new(private_net::Directory::new(&next.config.private_network));
    }
    for gone in loader::detach_limiter_except(&state.paths, &new.ratelimit.interfaces)? {
        info!(interface = %gone, "limiter detached: interface no longer configured");
    }
    for gone in loader::detach_private_except(&state.paths, &new_private)? {
        info!(interface = %gone, "private-network isolation detached: interface no longer configured");
    }
    info!(ms = started.elapsed().as_millis() as u64, "config reloaded");
    Ok(next)
}
