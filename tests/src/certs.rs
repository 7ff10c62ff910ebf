//! Test certificates made with the openssl CLI: self-signed, so each is its own CA for curl's
//! `--cacert`.

use std::{
    io,
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use crate::{TempDir, cmd};

/// A self-signed P-256 certificate for `names` (the first is the CN, all are SANs), valid two
/// days, written to `<dir>/<file>.pem` and its key to `<dir>/<file>.key`.
pub fn certificate(dir: &TempDir, file: &str, names: &[&str]) -> (PathBuf, PathBuf) {
    try_certificate(dir.path(), file, names).expect("openssl makes a certificate")
}

/// [`certificate`] in any directory, failing with an error (openssl's stderr) instead of a
/// panic: for the benches.
pub fn try_certificate(dir: &Path, file: &str, names: &[&str]) -> io::Result<(PathBuf, PathBuf)> {
    let cert = dir.join(format!("{file}.pem"));
    let key = dir.join(format!("{file}.key"));
    let sans: Vec<String> = names.iter().map(|n| format!("DNS:{n}")).collect();
    let cn = names
        .first()
        .ok_or_else(|| io::Error::other("a certificate needs a name"))?;
    let out = cmd::run(
        Command::new("openssl").args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "2",
            "-subj",
            &format!("/CN={cn}"),
            "-addext",
            &format!("subjectAltName={}", sans.join(",")),
            "-keyout",
            &key.to_string_lossy(),
            "-out",
            &cert.to_string_lossy(),
        ]),
        Duration::from_secs(30),
    )?;
    if !out.status.success() {
        return Err(io::Error::other(format!(
            "openssl req failed: {}",
            cmd::lossy(&out.stderr)
        )));
    }
    Ok((cert, key))
}
