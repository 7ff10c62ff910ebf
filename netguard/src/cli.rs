//! Command line: `netguard run | check | stats | deny | detach | pn | reload | routes | top |
//! example-config`.

use std::{path::PathBuf, process::ExitCode, time::Duration};

use clap::{Parser, Subcommand};
use ipnet::IpNet;
use tracing::error;

use crate::{
    config::DEFAULT_PIN_PATH,
    ctl,
    daemon::{self, DaemonError},
    denylist, loader,
    paths::PinPaths,
    stats::{ContainerRow, Snapshot, containers_table, monotonic_ns, sort_containers},
    tables::Tables,
};

/// The example configuration, also printed by `netguard example-config`.
pub const EXAMPLE_CONFIG: &str = include_str!("example.toml");

#[derive(Debug, Parser)]
#[command(
    name = "netguard",
    version,
    about = "XDP ingress filter for the hosting platform's edge"
)]
pub struct Cli {
    /// Log filter (tracing EnvFilter syntax); RUST_LOG overrides it.
    #[arg(long, global = true, default_value = "info")]
    pub log_level: String,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Load, attach and run in the foreground (SIGHUP reloads, SIGTERM/SIGINT exit and leave the filter attached).
    Run {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Validate a config and its denylist files without touching the kernel.
    Check {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Show the XDP counters (or, with --containers, the limiter's buckets) of the instance
    /// pinned at --pin-path.
    Stats {
        #[arg(long, default_value = DEFAULT_PIN_PATH)]
        pin_path: PathBuf,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
        /// Per container and direction: bytes/packets passed and dropped, current tokens,
        /// sorted by drops.
        #[arg(long, conflicts_with = "private")]
        containers: bool,
        /// Private-network isolation decisions per reason.
        #[arg(long)]
        private: bool,
    },
    /// Edit the live denylist (effective on the next packet; the next start or reload re-applies the config).
    Deny {
        #[command(subcommand)]
        action: DenyAction,
        #[arg(long, default_value = DEFAULT_PIN_PATH, global = true)]
        pin_path: PathBuf,
    },
    /// Detach the programs and remove every pin (links, maps, directories).
    Detach {
        #[arg(long, default_value = DEFAULT_PIN_PATH)]
        pin_path: PathBuf,
    },
    /// Private networks: the names of an app, or a container's own hostname.
    Pn {
        #[command(subcommand)]
        action: PnAction,
        #[arg(
            long,
            short,
            global = true,
            default_value = "/etc/netguard/netguard.toml"
        )]
        config: PathBuf,
    },
    /// Ask the running daemon to re-read its config (like SIGHUP) and report the outcome; exits
    /// 64 when the config is rejected (the running one stays in force), 69 when the daemon
    /// cannot be reached.
    Reload {
        /// The daemon's config file: where `[admin] listen` is read from.
        #[arg(long, short, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
        /// The admin endpoint, overriding the config file's.
        #[arg(long)]
        admin: Option<std::net::SocketAddr>,
        /// How long to wait for the reload to finish.
        #[arg(long, default_value_t = 300)]
        timeout_secs: u64,
    },
    /// The running proxy's apps, domains and backends with their health (live / ejected).
    Routes {
        #[arg(long, short, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
        #[arg(long)]
        admin: Option<std::net::SocketAddr>,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Per-reason packet and drop rates, refreshed from the pinned counters (no daemon needed).
    Top {
        #[arg(long, default_value = DEFAULT_PIN_PATH)]
        pin_path: PathBuf,
        /// Seconds between refreshes.
        #[arg(long, default_value_t = 1.0, value_parser = parse_interval)]
        interval: f64,
        /// Stop after this many refreshes (default: until interrupted).
        #[arg(long)]
        count: Option<u64>,
        /// One JSON object per refresh, one per line.
        #[arg(long)]
        json: bool,
    },
    /// Print an example configuration with every key.
    ExampleConfig,
}

/// Where `netguard reload` and `netguard routes` look for the daemon's config by default.
const DEFAULT_CONFIG: &str = "/etc/netguard/netguard.toml";

fn parse_interval(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if (0.05..=3600.0).contains(&v) => Ok(v),
        _ => Err(format!("{s:?}: seconds between 0.05 and 3600")),
    }
}

#[derive(Debug, Subcommand)]
pub enum PnAction {
    /// Every private name of an app (like the platform's private-networks-domain-names).
    DomainNames {
        #[arg(long)]
        app: String,
    },
    /// The private hostname of the container with this private address
    /// (what the platform injects as SCALINGO_PRIVATE_HOSTNAME).
    Hostname {
        #[arg(long)]
        address: std::net::Ipv4Addr,
    },
}

#[derive(Debug, Subcommand)]
pub enum DenyAction {
    /// Add CIDRs or addresses.
    Add {
        #[arg(required = true, value_parser = parse_net)]
        cidrs: Vec<IpNet>,
    },
    /// Remove exact CIDRs or addresses.
    Del {
        #[arg(required = true, value_parser = parse_net)]
        cidrs: Vec<IpNet>,
    },
    /// List every entry in the kernel.
    List,
}

fn parse_net(s: &str) -> Result<IpNet, String> {
    denylist::parse_entry(s)
}

fn init_logging(level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(level))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    use std::io::IsTerminal as _;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    // aya logs through `log`; route it into tracing.
    let _ = tracing_log::LogTracer::init();
}

/// Runs the CLI and maps failures to exit codes: 64 for bad input, 1 for runtime errors.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(&cli.log_level);
    match execute(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure { message, code }) => {
            error!("{message}");
            eprintln!("netguard: {message}");
            ExitCode::from(code)
        }
    }
}

struct Failure {
    message: String,
    code: u8,
}

impl From<DaemonError> for Failure {
    fn from(e: DaemonError) -> Self {
        Self {
            code: e.exit_code(),
            message: e.to_string(),
        }
    }
}

impl From<ctl::CtlError> for Failure {
    fn from(e: ctl::CtlError) -> Self {
        Self {
            code: e.code,
            message: e.message,
        }
    }
}

fn runtime<E: std::fmt::Display>(e: E) -> Failure {
    Failure {
        message: e.to_string(),
        code: 1,
    }
}

fn execute(command: Command) -> Result<(), Failure> {
    match command {
        Command::Run { config } => daemon::run(&config)?,
        Command::Check { config } => {
            let p = daemon::prepare(&config)?;
            // Certificates and keys are read as a start or reload would read them; nothing binds.
            let sites = match &p.config.proxy {
                Some(proxy) => {
                    crate::proxy::state::Snapshot::build(proxy, &p.config.app)
                        .map_err(DaemonError::from)?;
                    p.config.app.len()
                }
                None => 0,
            };
            for w in &p.warnings {
                println!("warning: {w}");
            }
            println!(
                "{}: config OK: interface {}, {} denylist prefixes ({} IPv4, {} IPv6), {} trusted, ports {:?}, {} proxy apps (certificates loaded)",
                config.display(),
                p.config.xdp.interface,
                p.denylist_entries,
                p.plan.deny_v4.len(),
                p.plan.deny_v6.len(),
                p.plan.trusted_v4.len() + p.plan.trusted_v6.len(),
                p.config.xdp.allowed_tcp_ports,
                sites,
            );
        }
        Command::Stats {
            pin_path,
            json,
            containers: true,
            ..
        } => {
            let tables = Tables::open_pinned(&PinPaths::new(pin_path)).map_err(runtime)?;
            let defaults = tables.limiter_config().map_err(runtime)?;
            let now = monotonic_ns();
            let mut rows: Vec<ContainerRow> = tables
                .buckets()
                .map_err(runtime)?
                .iter()
                .map(|(key, state)| {
                    ContainerRow::new(key, state, &tables.limiter_params(key, &defaults), now)
                })
                .collect();
            sort_containers(&mut rows);
            if json {
                println!("{}", serde_json::to_string(&rows).map_err(runtime)?);
            } else {
                print!("{}", containers_table(&rows));
            }
        }
        Command::Stats {
            pin_path,
            json,
            private: true,
            ..
        } => {
            let tables = Tables::open_pinned(&PinPaths::new(pin_path)).map_err(runtime)?;
            let counters = tables.private_counters().map_err(runtime)?;
            let reasons = netguard_common::private_net::PnReason::ALL;
            if json {
                let mut m = serde_json::Map::new();
                for (r, c) in reasons.iter().zip(&counters) {
                    m.insert(
                        r.name().to_string(),
                        serde_json::json!({"packets": c.packets, "bytes": c.bytes}),
                    );
                }
                println!("{}", serde_json::Value::Object(m));
            } else {
                println!(
                    "{:<20} {:<8} {:>14} {:>16}",
                    "reason", "verdict", "packets", "bytes"
                );
                for (r, c) in reasons.iter().zip(&counters) {
                    let verdict = if *r == netguard_common::private_net::PnReason::Passed {
                        "pass"
                    } else {
                        "drop"
                    };
                    println!(
                        "{:<20} {:<8} {:>14} {:>16}",
                        r.name(),
                        verdict,
                        c.packets,
                        c.bytes
                    );
                }
            }
        }
        Command::Stats { pin_path, json, .. } => {
            let tables = Tables::open_pinned(&PinPaths::new(pin_path)).map_err(runtime)?;
            let snapshot = Snapshot::new(
                &tables.filter_config().map_err(runtime)?,
                tables.counters().map_err(runtime)?,
            );
            if json {
                println!("{}", snapshot.to_json());
            } else {
                print!("{}", snapshot.to_table());
            }
        }
        Command::Deny { action, pin_path } => {
            let mut tables = Tables::open_pinned(&PinPaths::new(pin_path)).map_err(runtime)?;
            match action {
                DenyAction::Add { cidrs } => {
                    tables.deny_add(&cidrs).map_err(runtime)?;
                    println!("added {} entries", cidrs.len());
                }
                DenyAction::Del { cidrs } => {
                    let missing = tables.deny_del(&cidrs).map_err(runtime)?;
                    for m in &missing {
                        eprintln!("netguard: {m} was not in the denylist");
                    }
                    println!("removed {} entries", cidrs.len() - missing.len());
                    if !missing.is_empty() {
                        return Err(Failure {
                            message: format!(
                                "{} of the given entries were not in the denylist",
                                missing.len()
                            ),
                            code: 1,
                        });
                    }
                }
                DenyAction::List => {
                    for net in tables.deny_list().map_err(runtime)? {
                        println!("{net}");
                    }
                }
            }
        }
        Command::Detach { pin_path } => {
            let paths = PinPaths::new(pin_path);
            let removed = loader::detach(&paths).map_err(runtime)?;
            if removed.is_empty() {
                println!("nothing pinned under {}", paths.root().display());
            } else {
                println!(
                    "detached; removed {} pins under {}",
                    removed.len(),
                    paths.root().display()
                );
            }
        }
        Command::Pn { action, config } => {
            let config = crate::config::Config::load(&config).map_err(|e| Failure {
                message: e.to_string(),
                code: 64,
            })?;
            let networks = &config.private_network;
            match action {
                PnAction::DomainNames { app } => {
                    let names = crate::private_net::domain_names(networks, &app);
                    if names.is_empty() {
                        return Err(Failure {
                            message: format!("app {app} has no container in any private network"),
                            code: 1,
                        });
                    }
                    for name in names {
                        println!("{name}");
                    }
                }
                PnAction::Hostname { address } => {
                    match crate::private_net::hostname(networks, address) {
                        Some(name) => println!("{name}"),
                        None => {
                            return Err(Failure {
                                message: format!("{address} is not a container's private address"),
                                code: 1,
                            });
                        }
                    }
                }
            }
        }
        Command::Reload {
            config,
            admin,
            timeout_secs,
        } => {
            let addr = ctl::admin_addr(admin, &config)?;
            println!("{}", ctl::reload(addr, Duration::from_secs(timeout_secs))?);
        }
        Command::Routes {
            config,
            admin,
            json,
        } => {
            let addr = ctl::admin_addr(admin, &config)?;
            let routes = ctl::routes(addr, Duration::from_secs(30))?;
            if json {
                println!("{}", serde_json::to_string(&routes).map_err(runtime)?);
            } else {
                print!("{}", routes.to_table());
            }
        }
        Command::Top {
            pin_path,
            interval,
            count,
            json,
        } => ctl::top(&pin_path, Duration::from_secs_f64(interval), count, json)?,
        Command::ExampleConfig => print!("{EXAMPLE_CONFIG}"),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    #[test]
    fn production_sample_config_is_valid() {
        let text = include_str!("../../dist/netguard.toml");
        let c = Config::from_toml_str(text, "dist/netguard.toml").expect("sample config parses");
        assert_eq!(c.ratelimit.interfaces, vec!["docker0".to_string()]);
    }

    #[test]
    fn example_config_is_valid() {
        let c =
            Config::from_toml_str(EXAMPLE_CONFIG, "example.toml").expect("example config parses");
        assert_eq!(c.xdp.allowed_tcp_ports, vec![80, 443]);
    }

    #[test]
    fn cli_parses() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
        let cli = Cli::try_parse_from([
            "netguard",
            "deny",
            "add",
            "192.0.2.1",
            "--pin-path",
            "/sys/fs/bpf/x",
        ])
        .expect("parses");
        assert!(matches!(
            cli.command,
            Command::Deny {
                action: DenyAction::Add { .. },
                ..
            }
        ));
        assert!(Cli::try_parse_from(["netguard", "deny", "add", "not-an-ip"]).is_err());
    }
}
