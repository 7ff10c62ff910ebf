//! TLS termination with rustls: the certificate is chosen by SNI among the apps with
//! `tls = "terminate"`, using the same exact/wildcard names as HTTP routing.
//!
//! Certificates are loaded when a snapshot is built (start and every reload, so a SIGHUP picks up
//! renewed files); a missing or unreadable file, a chain without certificates, or a key that does
//! not match the certificate fails the start or the reload. A client without SNI, or with a name
//! no app covers, gets a handshake failure. On a TLS connection every request's `Host` must
//! route to the app its SNI chose, else 421 Misdirected Request. ALPN offers `h2` (served by
//! [`super::h2`]) and `http/1.1`; a client without ALPN gets HTTP/1.1. TLS 1.2 and 1.3 with
//! rustls's safe defaults and the ring provider.

use std::{path::Path, sync::Arc};

use rustls::{
    ServerConfig,
    crypto::CryptoProvider,
    pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject},
    server::{ClientHello, ResolvesServerCert},
    sign::CertifiedKey,
};

use super::{
    route::{Pattern, RouteTable},
    state::Shared,
};
use crate::config::{AppConfig, TlsMode};

/// One app's certificate.
#[derive(Debug, Clone)]
pub struct Site {
    /// Index of the app in the snapshot.
    pub app: usize,
    pub key: Arc<CertifiedKey>,
}

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("app {app}: reading {path}: {message}")]
    Read {
        app: String,
        path: String,
        message: String,
    },
    #[error("app {app}: {path} holds no certificate")]
    NoCertificate { app: String, path: String },
    #[error("app {app}: key {path}: {message}")]
    Key {
        app: String,
        path: String,
        message: String,
    },
    #[error("certificate names: {0}")]
    Routes(String),
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Loads the certificates of every app with `tls = "terminate"` into a table by domain.
pub fn load_sites(apps: &[AppConfig]) -> Result<RouteTable<Site>, TlsError> {
    let provider = provider();
    let mut entries = Vec::new();
    for (i, app) in apps.iter().enumerate() {
        if app.tls != Some(TlsMode::Terminate) {
            continue;
        }
        let (Some(cert), Some(key)) = (&app.cert, &app.key) else {
            continue;
        };
        let site = Site {
            app: i,
            key: Arc::new(load_key(&app.name, cert, key, &provider)?),
        };
        for domain in &app.domains {
            let pattern = Pattern::parse(domain)
                .map_err(|e| TlsError::Routes(format!("{}: {e}", app.name)))?;
            entries.push((pattern, site.clone()));
        }
    }
    RouteTable::new(entries).map_err(|e| TlsError::Routes(e.to_string()))
}

fn load_key(
    app: &str,
    cert: &Path,
    key: &Path,
    provider: &CryptoProvider,
) -> Result<CertifiedKey, TlsError> {
    let read = |path: &Path, e: &dyn std::fmt::Display| TlsError::Read {
        app: app.to_owned(),
        path: path.display().to_string(),
        message: e.to_string(),
    };
    let chain = CertificateDer::pem_file_iter(cert)
        .map_err(|e| read(cert, &e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| read(cert, &e))?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate {
            app: app.to_owned(),
            path: cert.display().to_string(),
        });
    }
    let private = PrivateKeyDer::from_pem_file(key).map_err(|e| read(key, &e))?;
    CertifiedKey::from_der(chain, private, provider).map_err(|e| TlsError::Key {
        app: app.to_owned(),
        path: key.display().to_string(),
        message: e.to_string(),
    })
}

/// Picks the certificate for the client's SNI from the snapshot in force.
#[derive(Debug)]
struct SniResolver {
    shared: Arc<Shared>,
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let name = hello.server_name()?;
        self.shared
            .snapshot()
            .sites
            .lookup(name)
            .map(|site| site.key.clone())
    }
}

/// The server config every TLS connection uses; certificates follow reloads.
pub fn server_config(shared: Arc<Shared>) -> Result<Arc<ServerConfig>, rustls::Error> {
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(SniResolver { shared }));
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use std::{path::PathBuf, process::Command};

    use super::*;

    /// A directory with certificates made by the openssl CLI (as the e2e tests do).
    struct Certs(PathBuf);

    impl Certs {
        fn new(tag: &str) -> Certs {
            let dir =
                std::env::temp_dir().join(format!("netguard-tls-{tag}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            Certs(dir)
        }

        fn make(&self, name: &str) -> (PathBuf, PathBuf) {
            let (cert, key) = (
                self.0.join(format!("{name}.pem")),
                self.0.join(format!("{name}.key")),
            );
            let status = Command::new("openssl")
                .args([
                    "req",
                    "-x509",
                    "-newkey",
                    "ec",
                    "-pkeyopt",
                    "ec_paramgen_curve:prime256v1",
                ])
                .args(["-nodes", "-days", "1", "-subj", &format!("/CN={name}")])
                .arg("-keyout")
                .arg(&key)
                .arg("-out")
                .arg(&cert)
                .output()
                .expect("openssl runs");
            assert!(
                status.status.success(),
                "{}",
                String::from_utf8_lossy(&status.stderr)
            );
            (cert, key)
        }
    }

    impl Drop for Certs {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn app(name: &str, domains: &[&str], cert: &Path, key: &Path) -> AppConfig {
        AppConfig {
            name: name.into(),
            domains: domains.iter().map(|d| d.to_string()).collect(),
            backends: Vec::new(),
            tls: Some(TlsMode::Terminate),
            cert: Some(cert.to_path_buf()),
            key: Some(key.to_path_buf()),
            force_https: false,
        }
    }

    #[test]
    fn sites_by_name_and_load_errors() {
        let certs = Certs::new("load");
        let (a_cert, a_key) = certs.make("a.example");
        let (b_cert, b_key) = certs.make("b.example");
        let mut plain = app("plain", &["plain.example"], &a_cert, &a_key);
        plain.tls = None;
        let sites = load_sites(&[
            app("a", &["a.example", "*.a.example"], &a_cert, &a_key),
            plain,
            app("b", &["b.example"], &b_cert, &b_key),
        ])
        .expect("loads");
        assert_eq!(sites.lookup("x.A.example.").map(|s| s.app), Some(0));
        assert_eq!(sites.lookup("b.example").map(|s| s.app), Some(2));
        assert!(sites.lookup("plain.example").is_none());

        let mismatch = load_sites(&[app("a", &["a.example"], &a_cert, &b_key)]).unwrap_err();
        assert!(matches!(mismatch, TlsError::Key { .. }), "{mismatch}");
        let missing = certs.0.join("missing.pem");
        let err = load_sites(&[app("a", &["a.example"], &missing, &a_key)]).unwrap_err();
        assert!(
            matches!(err, TlsError::Read { .. }) && err.to_string().contains("missing.pem"),
            "{err}"
        );
        let empty = certs.0.join("empty.pem");
        std::fs::write(&empty, "").unwrap();
        let err = load_sites(&[app("a", &["a.example"], &empty, &a_key)]).unwrap_err();
        assert!(matches!(err, TlsError::NoCertificate { .. }), "{err}");
        // A certificate file given as the key.
        let err = load_sites(&[app("a", &["a.example"], &a_cert, &a_cert)]).unwrap_err();
        assert!(matches!(err, TlsError::Read { .. }), "{err}");
    }
}
