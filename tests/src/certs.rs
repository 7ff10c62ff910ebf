//! Test certificates made with the openssl CLI: self-signed, so each is its own CA for curl's
//! `--cacert`.

use std::{path::PathBuf, process::Command, time::Duration};

use crate::{TempDir, cmd};

/// A self-signed P-256 certificate for `names` (the first is the CN, all are SANs), valid two
/// days, written to `<dir>/<file>.pem` and its key to `<dir>/<file>.key`.
pub fn certificate(dir: &TempDir, file: &str, names: &[&str]) -> (PathBuf, PathBuf) {
    let cert = dir.join(&format!("{file}.pem"));
    let key = dir.join(&format!("{file}.key"));
    let sans: Vec<String> = names.iter().map(|n| format!("DNS:{n}")).collect();
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
            &format!("/CN={}", names[0]),
            "-addext",
            &format!("subjectAltName={}", sans.join(",")),
            "-keyout",
            &key.to_string_lossy(),
            "-out",
            &cert.to_string_lossy(),
        ]),
        Duration::from_secs(20),
    )
    .expect("openssl runs");
    assert!(out.status.success(), "openssl: {}", cmd::lossy(&out.stderr));
    (cert, key)
}
