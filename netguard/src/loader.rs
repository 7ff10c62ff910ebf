//! Loading the embedded eBPF object with pinned maps, and attaching its programs through pinned
//! bpf links so the filter outlives the daemon.

use std::{
    ffi::CString,
    fs, io,
    path::{Path, PathBuf},
};

use aya::{
    Ebpf, EbpfLoader,
    maps::{ArrayOfMaps, Map, MapData, MapInfo},
    programs::{
        ProgramError, SchedClassifier, TcAttachType, Xdp, XdpMode,
        links::{FdLink, LinkError, PinnedLink},
        tc::SchedClassifierLink,
        xdp::XdpLink,
    },
    sys::SyscallError,
};
use netguard_common::maps::{self, MapLayout};
use tracing::{info, warn};

use crate::{
    config::AttachMode,
    paths::{PinPaths, TcLink},
};

const BPF_FS_MAGIC: i64 = 0xcafe4a11;

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("{path} is not on a mounted bpffs; mount one with `mount -t bpf bpf {mount}`")]
    NotBpffs { path: PathBuf, mount: PathBuf },
    #[error("creating pin directory {path}: {source}")]
    CreateDir { path: PathBuf, source: io::Error },
    #[error(
        "pinned map {path} has {found}, this netguard expects {expected}; \
         remove the old pins with `netguard detach --pin-path {root}`"
    )]
    Layout {
        path: PathBuf,
        root: PathBuf,
        found: String,
        expected: String,
    },
    #[error("reading pinned map {path}: {source}")]
    MapInfo {
        path: PathBuf,
        source: aya::maps::MapError,
    },
    #[error("loading the eBPF object: {0}")]
    Load(#[from] aya::EbpfError),
    #[error(
        "this netguard binary embeds no eBPF object (it was built with AYA_BUILD_SKIP=1); rebuild without it"
    )]
    NoObject,
    #[error("adopting pinned link {path}: {source}")]
    AdoptLink { path: PathBuf, source: LinkError },
    #[error("the eBPF object has no program {0}")]
    MissingProgram(&'static str),
    #[error("loading program {name}: {source}")]
    Program {
        name: &'static str,
        source: ProgramError,
    },
    #[error("attaching XDP to {interface} in {mode} mode: {source}")]
    AttachXdp {
        interface: String,
        mode: &'static str,
        source: ProgramError,
    },
    #[error("attaching tc program {program} to {interface}: {source}")]
    AttachTc {
        interface: String,
        program: &'static str,
        source: ProgramError,
    },
    #[error(
        "attaching to {interface} did not create a bpf link (the kernel fell back to netlink), \
         so it cannot be pinned to outlive the daemon"
    )]
    NotALink { interface: String },
    #[error("opening pinned link {path}: {source}")]
    OpenLink { path: PathBuf, source: LinkError },
    #[error("pinning link {path}: {source}")]
    PinLink {
        path: PathBuf,
        source: aya::pin::PinError,
    },
    #[error("removing {path}: {source}")]
    Remove { path: PathBuf, source: io::Error },
}

/// Fails unless `paths`' parent directory is a mounted bpffs.
pub fn check_bpffs(paths: &PinPaths) -> Result<(), LoadError> {
    let mount = paths.bpffs().to_path_buf();
    let not_bpffs = || LoadError::NotBpffs {
        path: paths.root().to_path_buf(),
        mount: mount.clone(),
    };
    let c = CString::new(mount.as_os_str().as_encoded_bytes()).map_err(|_| not_bpffs())?;
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a valid C string and `st` a properly sized out-parameter.
    let rc = unsafe { libc::statfs(c.as_ptr(), &mut st) };
    if rc != 0 || st.f_type as i64 != BPF_FS_MAGIC {
        return Err(not_bpffs());
    }
    Ok(())
}

fn describe(l: &MapLayout) -> String {
    format!(
        "type {} key {} B value {} B max_entries {}",
        l.map_type, l.key_size, l.value_size, l.max_entries
    )
}

/// aya reopens a pinned map by name without checking it: compare every existing pin with the
/// layout this build expects, and refuse rather than share maps of another shape.
pub fn check_pinned_layouts(paths: &PinPaths) -> Result<(), LoadError> {
    for expected in maps::LAYOUTS {
        let path = paths.map(expected.name);
        if !path.exists() {
            continue;
        }
        let info = MapInfo::from_pin(&path).map_err(|source| LoadError::MapInfo {
            path: path.clone(),
            source,
        })?;
        let found = MapLayout {
            name: expected.name,
            map_type: info.map_type().map(|t| t as u32).unwrap_or(u32::MAX),
            key_size: info.key_size(),
            value_size: info.value_size(),
            max_entries: info.max_entries(),
        };
        if found != expected {
            return Err(LoadError::Layout {
                path,
                root: paths.root().to_path_buf(),
                found: describe(&found),
                expected: describe(&expected),
            });
        }
    }
    check_pinned_inner_layouts(paths)
}

/// The denylist's inner maps are not pinned themselves: check the ones the pinned outer maps
/// hold, bank by bank (the outer map's own layout does not show their shape).
fn check_pinned_inner_layouts(paths: &PinPaths) -> Result<(), LoadError> {
    for spec in maps::DENY_INNER {
        let path = paths.map(spec.outer);
        if !path.exists() {
            continue;
        }
        let info_err = |source| LoadError::MapInfo {
            path: path.clone(),
            source,
        };
        let outer = Map::ArrayOfMaps(MapData::from_pin(&path).map_err(info_err)?);
        let outer: ArrayOfMaps<&MapData, MapData> = (&outer).try_into().map_err(info_err)?;
        for bank in 0..maps::DENY_BANKS {
            let inner = match outer.get(&bank, 0) {
                Ok(inner) => inner,
                Err(e) if crate::tables::is_missing(&e) => continue,
                Err(e) => return Err(info_err(e)),
            };
            let info = inner.info().map_err(info_err)?;
            let map_type = info.map_type().map(|t| t as u32).unwrap_or(u32::MAX);
            let shape = (
                info.key_size(),
                info.value_size(),
                info.max_entries(),
                info.map_flags(),
            );
            if !spec.accepts(map_type, shape.0, shape.1, shape.2, shape.3) {
                let l = spec.layout;
                return Err(LoadError::Layout {
                    path: path.join(format!("[{bank}]")),
                    root: paths.root().to_path_buf(),
                    found: crate::deny_banks::describe_inner(
                        map_type, shape.0, shape.1, shape.2, shape.3,
                    ),
                    expected: crate::deny_banks::describe_inner(
                        l.map_type,
                        l.key_size,
                        l.value_size,
                        l.max_entries,
                        spec.flags,
                    ),
                });
            }
        }
    }
    Ok(())
}

/// Loads the embedded object. Maps are reused from their pins when present (counters and
/// tables survive a restart) and created and pinned otherwise.
pub fn load(paths: &PinPaths) -> Result<Ebpf, LoadError> {
    if crate::ebpf_object().is_empty() {
        return Err(LoadError::NoObject);
    }
    check_bpffs(paths)?;
    let dir = paths.maps_dir();
    fs::create_dir_all(&dir).map_err(|source| LoadError::CreateDir { path: dir, source })?;
    check_pinned_layouts(paths)?;
    let pins: Vec<(&str, PathBuf)> = maps::ALL.iter().map(|n| (*n, paths.map(n))).collect();
    let mut loader = EbpfLoader::new();
    for (name, path) in &pins {
        loader.map_pin_path(name, path.as_path());
    }
    Ok(loader.load(crate::ebpf_object())?)
}

fn xdp_modes(mode: AttachMode) -> &'static [(XdpMode, &'static str)] {
    match mode {
        AttachMode::Native => &[(XdpMode::Driver, "native")],
        AttachMode::Generic => &[(XdpMode::Skb, "generic")],
        AttachMode::Auto => &[(XdpMode::Driver, "native"), (XdpMode::Skb, "generic")],
    }
}

fn is_not_found(e: &LinkError) -> bool {
    matches!(e, LinkError::SyscallError(SyscallError { io_error, .. }) if io_error.kind() == io::ErrorKind::NotFound)
}

/// How a program got onto its hook.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attached {
    /// A new link was created and pinned.
    New { mode: &'static str },
    /// A pinned link from an earlier run now runs this program (atomic `BPF_LINK_UPDATE`).
    Replaced,
}

/// Attaches the XDP filter to `interface`, or swaps it into the link pinned by an earlier run
/// without ever leaving the interface unfiltered.
pub fn attach_xdp(
    ebpf: &mut Ebpf,
    paths: &PinPaths,
    interface: &str,
    mode: AttachMode,
) -> Result<Attached, LoadError> {
    let name = maps::XDP_PROGRAM;
    let prog: &mut Xdp = ebpf
        .program_mut(name)
        .ok_or(LoadError::MissingProgram(name))?
        .try_into()
        .map_err(|source| LoadError::Program { name, source })?;
    prog.load()
        .map_err(|source| LoadError::Program { name, source })?;
    let pin = paths.xdp_link();
    match PinnedLink::from_pin(&pin) {
        Ok(old) => {
            let link =
                XdpLink::try_from(FdLink::from(old)).map_err(|source| LoadError::AdoptLink {
                    path: pin.clone(),
                    source,
                })?;
            let id = prog
                .attach_to_link(link)
                .map_err(|source| LoadError::AttachXdp {
                    interface: interface.to_string(),
                    mode: "existing link",
                    source,
                })?;
            // The pin keeps the link; dropping our handle must not detach it.
            let owned = prog
                .take_link(id)
                .map_err(|source| LoadError::Program { name, source })?;
            drop(FdLink::try_from(owned));
            info!(interface, pin = %pin.display(), "XDP program swapped into the pinned link");
            Ok(Attached::Replaced)
        }
        Err(e) if is_not_found(&e) => {
            let mut last = None;
            for (xdp_mode, label) in xdp_modes(mode) {
                match prog.attach(interface, *xdp_mode) {
                    Ok(id) => {
                        let owned = prog
                            .take_link(id)
                            .map_err(|source| LoadError::Program { name, source })?;
                        let fd = FdLink::try_from(owned).map_err(|_| LoadError::NotALink {
                            interface: interface.to_string(),
                        })?;
                        fd.pin(&pin).map_err(|source| LoadError::PinLink {
                            path: pin.clone(),
                            source,
                        })?;
                        info!(interface, mode = label, pin = %pin.display(), "XDP program attached");
                        return Ok(Attached::New { mode: label });
                    }
                    Err(source) => {
                        if mode == AttachMode::Auto {
                            warn!(interface, mode = label, error = %source, "XDP attach failed, trying the next mode");
                        }
                        last = Some(LoadError::AttachXdp {
                            interface: interface.to_string(),
                            mode: label,
                            source,
                        });
                    }
                }
            }
            Err(last.unwrap_or(LoadError::MissingProgram(name)))
        }
        Err(source) => Err(LoadError::OpenLink { path: pin, source }),
    }
}

/// Attaches the flow tracker on `interface` egress (TCX), or swaps it into the pinned link.
pub fn attach_flow_tracker(
    ebpf: &mut Ebpf,
    paths: &PinPaths,
    interface: &str,
) -> Result<Attached, LoadError> {
    let prog = load_classifier(ebpf, maps::FLOW_TRACK_PROGRAM)?;
    let attached = attach_tc(
        prog,
        maps::FLOW_TRACK_PROGRAM,
        &paths.flow_track_link(),
        interface,
        TcAttachType::Egress,
    )?;
    if attached != Attached::Replaced {
        info!(interface, "tc egress flow tracker attached (TCX)");
    }
    Ok(attached)
}

/// Attaches the limiter to every interface: upload on tc ingress, download on tc egress, each
/// through its own pinned link (adopted when an earlier run left one).
pub fn attach_limiter(
    ebpf: &mut Ebpf,
    paths: &PinPaths,
    interfaces: &[String],
) -> Result<(), LoadError> {
    attach_per_interface(
        ebpf,
        paths,
        interfaces,
        &[
            (
                maps::LIMIT_UPLOAD_PROGRAM,
                TcAttachType::Ingress,
                TcLink::LimitUp,
            ),
            (
                maps::LIMIT_DOWNLOAD_PROGRAM,
                TcAttachType::Egress,
                TcLink::LimitDown,
            ),
        ],
    )
}

/// Attaches private-network isolation to both directions of every private-side interface.
pub fn attach_private(
    ebpf: &mut Ebpf,
    paths: &PinPaths,
    interfaces: &[String],
) -> Result<(), LoadError> {
    attach_per_interface(
        ebpf,
        paths,
        interfaces,
        &[
            (
                maps::PRIVATE_PROGRAM,
                TcAttachType::Ingress,
                TcLink::PrivateIn,
            ),
            (
                maps::PRIVATE_PROGRAM,
                TcAttachType::Egress,
                TcLink::PrivateOut,
            ),
        ],
    )
}

fn attach_per_interface(
    ebpf: &mut Ebpf,
    paths: &PinPaths,
    interfaces: &[String],
    hooks: &[(&'static str, TcAttachType, TcLink)],
) -> Result<(), LoadError> {
    for (name, hook, kind) in hooks {
        let prog = load_classifier(ebpf, name)?;
        for interface in interfaces {
            let how = attach_tc(
                prog,
                name,
                &paths.tc_link(*kind, interface),
                interface,
                *hook,
            )?;
            info!(interface, program = name, hook = ?hook, how = ?how, "tc program attached");
        }
    }
    Ok(())
}

/// Removes the limiter's links on interfaces no longer configured; returns their names.
pub fn detach_limiter_except(paths: &PinPaths, keep: &[String]) -> Result<Vec<String>, LoadError> {
    detach_except(paths, &[TcLink::LimitUp, TcLink::LimitDown], keep)
}

/// Removes private-network links on interfaces no longer configured; returns their names.
pub fn detach_private_except(paths: &PinPaths, keep: &[String]) -> Result<Vec<String>, LoadError> {
    detach_except(paths, &[TcLink::PrivateIn, TcLink::PrivateOut], keep)
}

fn detach_except(
    paths: &PinPaths,
    kinds: &[TcLink],
    keep: &[String],
) -> Result<Vec<String>, LoadError> {
    let mut gone = Vec::new();
    for kind in kinds {
        for (interface, pin) in paths.tc_links(*kind) {
            if !keep.contains(&interface) {
                fs::remove_file(&pin).map_err(|source| LoadError::Remove { path: pin, source })?;
                if !gone.contains(&interface) {
                    gone.push(interface);
                }
            }
        }
    }
    Ok(gone)
}

fn load_classifier<'a>(
    ebpf: &'a mut Ebpf,
    name: &'static str,
) -> Result<&'a mut SchedClassifier, LoadError> {
    let prog: &mut SchedClassifier = ebpf
        .program_mut(name)
        .ok_or(LoadError::MissingProgram(name))?
        .try_into()
        .map_err(|source| LoadError::Program { name, source })?;
    // A program object loads once; later calls (a reload attaching new interfaces) reuse it.
    if prog.fd().is_err() {
        prog.load()
            .map_err(|source| LoadError::Program { name, source })?;
    }
    Ok(prog)
}

/// Attaches `prog` on `interface`'s `hook` through the link pinned at `pin`: a pinned link from
/// an earlier run gets the new program atomically; otherwise a new TCX link is made and pinned.
fn attach_tc(
    prog: &mut SchedClassifier,
    name: &'static str,
    pin: &Path,
    interface: &str,
    hook: TcAttachType,
) -> Result<Attached, LoadError> {
    let tc_err = |source| LoadError::AttachTc {
        interface: interface.to_string(),
        program: name,
        source,
    };
    match PinnedLink::from_pin(pin) {
        Ok(old) => {
            let link = SchedClassifierLink::try_from(FdLink::from(old)).map_err(|source| {
                LoadError::AdoptLink {
                    path: pin.to_path_buf(),
                    source,
                }
            })?;
            let id = prog.attach_to_link(link).map_err(tc_err)?;
            // The pin keeps the link; dropping our handle must not detach it.
            let owned = prog
                .take_link(id)
                .map_err(|source| LoadError::Program { name, source })?;
            drop(FdLink::try_from(owned));
            Ok(Attached::Replaced)
        }
        Err(e) if is_not_found(&e) => {
            let id = prog.attach(interface, hook).map_err(tc_err)?;
            let owned = prog
                .take_link(id)
                .map_err(|source| LoadError::Program { name, source })?;
            let fd = FdLink::try_from(owned).map_err(|_| LoadError::NotALink {
                interface: interface.to_string(),
            })?;
            fd.pin(pin).map_err(|source| LoadError::PinLink {
                path: pin.to_path_buf(),
                source,
            })?;
            Ok(Attached::New { mode: "tcx" })
        }
        Err(source) => Err(LoadError::OpenLink {
            path: pin.to_path_buf(),
            source,
        }),
    }
}

/// Removes the links (which detaches the programs), then every map pin and the directories.
/// Missing pieces are skipped, so detach is idempotent. Returns what was removed.
pub fn detach(paths: &PinPaths) -> Result<Vec<PathBuf>, LoadError> {
    let mut removed = Vec::new();
    let mut remove = |path: PathBuf| remove_pin(path, &mut removed);
    // XDP first: once the filter is gone, the flow tracker has no reader.
    remove(paths.xdp_link())?;
    remove(paths.flow_track_link())?;
    for kind in TcLink::ALL {
        for (_, pin) in paths.tc_links(kind) {
            remove(pin)?;
        }
    }
    for name in maps::ALL {
        remove(paths.map(name))?;
    }
    removed.extend(remove_stale_maps(paths)?);
    remove_dir(paths.maps_dir(), &mut removed)?;
    match remove_dir(paths.root().to_path_buf(), &mut removed) {
        // The pin root holds something not netguard's: it stays, with that.
        Err(LoadError::Remove { source, .. })
            if source.kind() == io::ErrorKind::DirectoryNotEmpty => {}
        other => other?,
    }
    Ok(removed)
}

/// Unpins `path` (recorded in `removed`); a missing pin is skipped.
fn remove_pin(path: PathBuf, removed: &mut Vec<PathBuf>) -> Result<(), LoadError> {
    remove_with(|p| fs::remove_file(p), path, removed)
}

/// Removes the empty directory `dir` (recorded in `removed`); a missing one is skipped.
fn remove_dir(dir: PathBuf, removed: &mut Vec<PathBuf>) -> Result<(), LoadError> {
    remove_with(|p| fs::remove_dir(p), dir, removed)
}

fn remove_with(
    remove: fn(&Path) -> io::Result<()>,
    path: PathBuf,
    removed: &mut Vec<PathBuf>,
) -> Result<(), LoadError> {
    match remove(&path) {
        Ok(()) => {
            removed.push(path);
            Ok(())
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(LoadError::Remove { path, source }),
    }
}

/// Unpins the maps an older netguard pinned under an earlier layout's directory (`maps-v2`, …):
/// this version never reads them and nothing else would remove them. `run` calls it once its
/// own programs are attached (the old ones, the maps' last users, are gone then), `detach`
/// too. Returns what it removed.
pub fn remove_stale_maps(paths: &PinPaths) -> Result<Vec<PathBuf>, LoadError> {
    let mut removed = Vec::new();
    for dir in stale_map_dirs(paths) {
        for entry in fs::read_dir(&dir).into_iter().flatten().flatten() {
            remove_pin(entry.path(), &mut removed)?;
        }
        remove_dir(dir, &mut removed)?;
    }
    Ok(removed)
}

/// Map directories of other layout versions than [`maps::MAPS_DIR`] under the pin root.
fn stale_map_dirs(paths: &PinPaths) -> Vec<PathBuf> {
    let Ok(entries) = fs::read_dir(paths.root()) else {
        return Vec::new();
    };
    let mut dirs: Vec<PathBuf> = entries
        .flatten()
        .filter(|e| {
            let name = e.file_name();
            let name = name.to_string_lossy();
            name.starts_with("maps-v") && name != maps::MAPS_DIR && e.path().is_dir()
        })
        .map(|e| e.path())
        .collect();
    dirs.sort();
    dirs
}

/// Whether an earlier run left a pinned XDP link (the filter is enforcing without a daemon).
pub fn is_attached(paths: &PinPaths) -> bool {
    Path::new(&paths.xdp_link()).exists()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detach_removes_maps_pinned_under_an_older_layout() {
        let root = std::env::temp_dir().join(format!("ng-detach-{}", std::process::id()));
        let old = root.join("maps-v2");
        fs::create_dir_all(&old).unwrap();
        fs::write(old.join("NG_CONFIG"), b"").unwrap();
        fs::write(old.join("NG_DENY_V4"), b"").unwrap();
        let unrelated = root.join("notes");
        fs::create_dir_all(&unrelated).unwrap();
        let paths = PinPaths::new(&root);
        fs::create_dir_all(paths.maps_dir()).unwrap();

        let removed = detach(&paths).unwrap();
        assert!(!old.exists(), "{removed:?}");
        assert!(removed.contains(&old.join("NG_CONFIG")));
        assert!(!paths.maps_dir().exists());
        // Not netguard's: left alone, and so is the root that still holds it.
        assert!(unrelated.exists());
        fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn a_start_unpins_only_the_maps_of_older_layouts() {
        let root = std::env::temp_dir().join(format!("ng-stale-{}", std::process::id()));
        let old = root.join("maps-v1");
        fs::create_dir_all(&old).unwrap();
        fs::write(old.join("NG_CONFIG"), b"").unwrap();
        let paths = PinPaths::new(&root);
        fs::create_dir_all(paths.maps_dir()).unwrap();
        let current = paths.maps_dir().join("NG_CONFIG");
        fs::write(&current, b"").unwrap();

        let removed = remove_stale_maps(&paths).unwrap();
        assert_eq!(removed, [old.join("NG_CONFIG"), old.clone()]);
        assert!(!old.exists());
        assert!(current.exists(), "this version's maps stay");
        assert_eq!(remove_stale_maps(&paths).unwrap(), Vec::<PathBuf>::new());
        fs::remove_dir_all(&root).unwrap();
    }
}
