//! Where netguard keeps things on bpffs: every path derives from the configured pin directory.

use std::path::{Path, PathBuf};

use netguard_common::maps;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PinPaths {
    root: PathBuf,
}

impl PinPaths {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// A pinned map, named as the program declares it (`bpftool map show` lists the same name).
    pub fn map(&self, name: &str) -> PathBuf {
        self.maps_dir().join(name)
    }

    pub fn maps_dir(&self) -> PathBuf {
        self.root.join(maps::MAPS_DIR)
    }

    pub fn xdp_link(&self) -> PathBuf {
        self.root.join(maps::XDP_LINK_PIN)
    }

    pub fn flow_track_link(&self) -> PathBuf {
        self.root.join(maps::FLOW_TRACK_LINK_PIN)
    }

    /// The link of a per-interface tc program: `link_<kind>_<interface>`.
    pub fn tc_link(&self, kind: TcLink, interface: &str) -> PathBuf {
        self.root.join(format!("{}{interface}", kind.prefix()))
    }

    /// Every per-interface link of `kind` pinned under the root, as `(interface, pin)`.
    pub fn tc_links(&self, kind: TcLink) -> Vec<(String, PathBuf)> {
        let Ok(entries) = std::fs::read_dir(&self.root) else {
            return Vec::new();
        };
        let mut out: Vec<(String, PathBuf)> = entries
            .filter_map(Result::ok)
            .filter_map(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                let interface = name.strip_prefix(kind.prefix())?.to_string();
                Some((interface, e.path()))
            })
            .collect();
        out.sort();
        out
    }

    /// The bpffs mount point the pin directory lives on (its parent).
    pub fn bpffs(&self) -> &Path {
        self.root.parent().unwrap_or(Path::new("/"))
    }
}

/// Programs attached once per configured interface, each through its own pinned link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TcLink {
    /// Limiter, tc ingress of a container-facing interface.
    LimitUp,
    /// Limiter, tc egress.
    LimitDown,
    /// Private-network isolation, tc ingress of a private-side interface.
    PrivateIn,
    /// Private-network isolation, tc egress.
    PrivateOut,
}

impl TcLink {
    pub const ALL: [TcLink; 4] = [
        TcLink::LimitUp,
        TcLink::LimitDown,
        TcLink::PrivateIn,
        TcLink::PrivateOut,
    ];

    const fn prefix(self) -> &'static str {
        match self {
            TcLink::LimitUp => "link_limit_up_",
            TcLink::LimitDown => "link_limit_down_",
            TcLink::PrivateIn => "link_pn_in_",
            TcLink::PrivateOut => "link_pn_out_",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_derive_from_root() {
        let p = PinPaths::new("/sys/fs/bpf/netguard");
        assert_eq!(
            p.map("NG_CONFIG"),
            Path::new("/sys/fs/bpf/netguard/maps-v4/NG_CONFIG")
        );
        assert_eq!(p.xdp_link(), Path::new("/sys/fs/bpf/netguard/link_xdp"));
        assert_eq!(p.bpffs(), Path::new("/sys/fs/bpf"));
        assert_eq!(
            p.tc_link(TcLink::PrivateIn, "pn0"),
            Path::new("/sys/fs/bpf/netguard/link_pn_in_pn0")
        );
    }
}
