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

    /// The bpffs mount point the pin directory lives on (its parent).
    pub fn bpffs(&self) -> &Path {
        self.root.parent().unwrap_or(Path::new("/"))
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
            Path::new("/sys/fs/bpf/netguard/maps-v1/NG_CONFIG")
        );
        assert_eq!(p.xdp_link(), Path::new("/sys/fs/bpf/netguard/link_xdp"));
        assert_eq!(p.bpffs(), Path::new("/sys/fs/bpf"));
    }
}
