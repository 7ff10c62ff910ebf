//! Where netguard keeps things on bpffs: every path derives from the configured pin directory.

use std::path::{Path, PathBuf};

use netguard_common::maps;

const LIMIT_UP_PREFIX: &str = "link_limit_up_";
const LIMIT_DOWN_PREFIX: &str = "link_limit_down_";

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

    /// The limiter's link on `interface`: `link_limit_up_<if>` (tc ingress) or
    /// `link_limit_down_<if>` (tc egress).
    pub fn limit_link(&self, interface: &str, upload: bool) -> PathBuf {
        let dir = if upload {
            LIMIT_UP_PREFIX
        } else {
            LIMIT_DOWN_PREFIX
        };
        self.root.join(format!("{dir}{interface}"))
    }

    /// Every limiter link pinned under the root, as `(interface, pin)`.
    pub fn limit_links(&self) -> Vec<(String, PathBuf)> {
        let Ok(entries) = std::fs::read_dir(&self.root) else {
            return Vec::new();
        };
        let mut out: Vec<(String, PathBuf)> = entries
            .filter_map(Result::ok)
            .filter_map(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                let interface = name
                    .strip_prefix(LIMIT_UP_PREFIX)
                    .or_else(|| name.strip_prefix(LIMIT_DOWN_PREFIX))?
                    .to_string();
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
