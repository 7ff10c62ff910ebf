//! The real denylists kept in `tests/data/denylists` (see its SOURCES.md), for the tests and
//! benches that load them as an operator would.

use std::{io, path::PathBuf};

/// Every list file, sorted by name (SOURCES.md and SHA256SUMS left out).
pub fn real() -> io::Result<Vec<PathBuf>> {
    let dir = crate::workspace_root().join("tests/data/denylists");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", dir.display())))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            let name = p.file_name().unwrap_or_default().to_string_lossy();
            name != "SOURCES.md" && name != "SHA256SUMS"
        })
        .collect();
    files.sort();
    Ok(files)
}
