//! What `GET /routes` and `netguard routes` show: every app with its domains and its backends'
//! health, as the running proxy sees them.

use std::{fmt::Write as _, net::SocketAddr, time::Instant};

use serde::{Deserialize, Serialize};

use crate::{config::AppConfig, proxy::upstream::Health};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RoutesView {
    /// Whether the daemon runs the proxy (`[proxy]`); without it `apps` is empty.
    pub proxy: bool,
    pub apps: Vec<AppView>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AppView {
    pub name: String,
    pub domains: Vec<String>,
    /// `"terminate"` or `"passthrough"`; absent for plain HTTP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<String>,
    pub force_https: bool,
    pub backends: Vec<BackendView>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BackendView {
    pub address: SocketAddr,
    /// `"live"` or `"ejected"`.
    pub state: String,
    /// Seconds until an ejected backend is tried again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ejected_for_seconds: Option<f64>,
}

impl RoutesView {
    /// The apps of the running config with their backends' health at `now`.
    pub fn new(apps: &[AppConfig], health: Option<&Health>, now: Instant) -> RoutesView {
        RoutesView {
            proxy: health.is_some(),
            apps: apps
                .iter()
                .map(|a| AppView {
                    name: a.name.clone(),
                    domains: a.domains.clone(),
                    tls: a.tls.map(|t| {
                        serde_json::to_value(t)
                            .ok()
                            .and_then(|v| v.as_str().map(str::to_owned))
                            .unwrap_or_default()
                    }),
                    force_https: a.force_https,
                    backends: a
                        .backends
                        .iter()
                        .map(|&address| {
                            let until = health.and_then(|h| h.ejected_until(address, now));
                            BackendView {
                                address,
                                state: if until.is_some() { "ejected" } else { "live" }.into(),
                                ejected_for_seconds: until.map(|u| {
                                    // Millisecond precision is plenty for a human or a probe.
                                    (u.saturating_duration_since(now).as_millis() as f64) / 1000.0
                                }),
                            }
                        })
                        .collect(),
                })
                .collect(),
        }
    }

    /// One line per backend: app, domains (on the app's first line), backend, state.
    pub fn to_table(&self) -> String {
        let mut out = String::new();
        if !self.proxy {
            out.push_str("the daemon runs no proxy ([proxy] is not configured)\n");
            return out;
        }
        let _ = writeln!(
            out,
            "{:<20} {:<40} {:<24} state",
            "app", "domains", "backend"
        );
        for app in &self.apps {
            let mut domains = app.domains.join(",");
            if let Some(tls) = &app.tls {
                let _ = write!(domains, " (tls {tls})");
            }
            let mut first = true;
            let backends: Vec<Option<&BackendView>> = if app.backends.is_empty() {
                vec![None]
            } else {
                app.backends.iter().map(Some).collect()
            };
            for b in backends {
                let (name, doms) = if first {
                    (app.name.as_str(), domains.as_str())
                } else {
                    ("", "")
                };
                first = false;
                let (backend, state) = match b {
                    None => ("-".to_owned(), "no backends (503)".to_owned()),
                    Some(b) => (
                        b.address.to_string(),
                        match b.ejected_for_seconds {
                            Some(s) => format!("ejected ({:.1} s left)", s),
                            None => b.state.clone(),
                        },
                    ),
                };
                let _ = writeln!(out, "{name:<20} {doms:<40} {backend:<24} {state}");
            }
        }
        if self.apps.is_empty() {
            out.push_str("(no apps)\n");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn health_and_table() {
        let apps = vec![AppConfig {
            name: "shop".into(),
            domains: vec!["shop.example.com".into(), "*.shop.example.com".into()],
            backends: vec![
                "172.17.0.2:5000".parse().unwrap(),
                "172.17.0.3:5000".parse().unwrap(),
            ],
            tls: None,
            cert: None,
            key: None,
            force_https: false,
        }];
        let health = Health::default();
        let now = Instant::now();
        health.eject(apps[0].backends[1], now + Duration::from_millis(7_500));
        let v = RoutesView::new(&apps, Some(&health), now);
        assert_eq!(v.apps[0].backends[0].state, "live");
        assert_eq!(v.apps[0].backends[1].state, "ejected");
        assert_eq!(v.apps[0].backends[1].ejected_for_seconds, Some(7.5));
        let json = serde_json::to_string(&v).unwrap();
        let back: RoutesView = serde_json::from_str(&json).unwrap();
        assert_eq!(back, v);
        let t = v.to_table();
        assert!(t.contains("ejected (7.5 s left)"), "{t}");
        assert!(t.lines().nth(1).unwrap().starts_with("shop "), "{t}");
        assert!(!RoutesView::new(&apps, None, now).proxy);
    }
}
