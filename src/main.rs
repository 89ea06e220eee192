//! The `headland` command line: parse arguments, load the configuration, start services.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use headland::acme::report;
use headland::admin::client::{post_reload, send};
use headland::admin::status as admin_status;
use headland::cluster::{shared_config, status, Cluster};
use headland::config::{self, ConfigError};
use headland::demo::{self, DemoAddrs};
use headland::pid_file;
use headland::server::{self, StartOptions};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// mimalloc instead of glibc's malloc: a proxied request costs about 110 allocations (75 of
/// them in Pingora and tokio), and glibc's allocator was 14 % of the proxy's CPU in the
/// HTTP/1.1 benchmark; mimalloc takes 15 % off the CPU per request (benches/README.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "headland",
    version,
    about = "Edge reverse proxy and GeoDNS-aware load balancer"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// How diagnostics are written to stderr: `text`, or `json` (one object per line, for
    /// the journal and log collectors). The access log on stdout is JSON either way.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run the proxy with a configuration file.
    Run {
        #[arg(long, short)]
        config: PathBuf,
        /// Take over the listening sockets of a running instance (zero-downtime upgrade).
        #[arg(long)]
        upgrade: bool,
    },
    /// Ask the running instance to reload its configuration: over the admin API when
    /// `admin_token_file` is set (and report the outcome), else by SIGHUP to the pid file.
    Reload {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// List every certificate the running instance serves: names, source (file or ACME),
    /// state, issuer, expiry, next renewal and last error.
    Certs {
        #[arg(long, short)]
        config: PathBuf,
        /// Renew this ACME certificate (by its first name) now, back-off permitting.
        #[arg(long, value_name = "NAME")]
        renew: Option<String>,
    },
    /// What the running instance is doing: pools and each server's health, drain and last
    /// check; regions and where DNS sends clients; certificates with days left.
    Status {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// The nodes sharing this node's `[cluster]`: their status, and the routing configuration
    /// they share.
    Cluster {
        #[command(subcommand)]
        action: ClusterAction,
    },
    /// Validate a configuration file; print every error as FILE:LINE:COL: message.
    Check {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Run a self-contained showcase with built-in upstreams on loopback.
    Demo {
        #[arg(long, default_value = "127.0.0.1:8080")]
        http: SocketAddr,
        #[arg(long, default_value = "127.0.0.1:8443")]
        https: SocketAddr,
        #[arg(long, default_value = "127.0.0.1:9180")]
        admin: SocketAddr,
        #[arg(long, default_value = "127.0.0.1:5353")]
        dns: SocketAddr,
    },
}

#[derive(Subcommand)]
enum ClusterAction {
    /// Every live node: region, readiness, configuration generation, shared configuration
    /// hash, certificates, last reload error.
    Status {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Store FILE as the routing configuration every node runs (everything but [node],
    /// [listen] and [cluster], which stay in each node's file), after validating it with
    /// this node's local sections. Each node validates it again and keeps its last good
    /// configuration if it fails there.
    Push {
        #[arg(long, short)]
        config: PathBuf,
        file: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing(cli.log_format);
    let result = match cli.command {
        Command::Check { config } => return check(&config),
        Command::Run {
            config: path,
            upgrade,
        } => match config::load_with_text(&path) {
            Ok((config, text)) => {
                let (config, shared) = with_shared_config(&path, config);
                let options = StartOptions {
                    upgrade,
                    source: Some((path, text)),
                    shared,
                    remove_on_exit: None,
                };
                server::run(config, options)
                    .map(|_| ())
                    .map_err(anyhow::Error::from)
            }
            Err(error) => return config_failed(&error),
        },
        Command::Reload { config } => return reload(&config),
        Command::Cluster { action } => return cluster(action),
        Command::Certs { config, renew } => return certs(&config, renew.as_deref()),
        Command::Status { config } => return status(&config),
        Command::Demo {
            http,
            https,
            admin,
            dns,
        } => run_demo(DemoAddrs {
            http,
            https,
            admin,
            dns,
        }),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("headland: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn check(path: &Path) -> ExitCode {
    match config::load(path) {
        Ok(config) => {
            for warning in &config.warnings {
                eprintln!("{warning}");
            }
            println!(
                "{}: ok ({} routes, {} upstreams)",
                path.display(),
                config.routes.len(),
                config.upstreams.len()
            );
            ExitCode::SUCCESS
        }
        Err(error) => config_failed(&error),
    }
}

fn reload(path: &Path) -> ExitCode {
    // The running instance would reject an invalid file too; say so without bothering it.
    let config = match config::load(path) {
        Ok(config) => config,
        Err(error) => return config_failed(&error),
    };
    if let (Some(admin), Some(token)) = (config.listen.admin, &config.admin_token) {
        return match post_reload(admin, &token.0) {
            Ok((200, body)) => {
                print!("{body}");
                ExitCode::SUCCESS
            }
            Ok((status, body)) => {
                eprint!("reload failed ({status}): {body}");
                ExitCode::FAILURE
            }
            Err(error) => {
                eprintln!("cannot reach the admin API at {admin}: {error}");
                ExitCode::FAILURE
            }
        };
    }
    let state_dir = &config.node.state_dir;
    let sent = pid_file::read(state_dir)
        .map_err(|e| e.to_string())
        .and_then(|pid| {
            kill(Pid::from_raw(pid), Signal::SIGHUP)
                .map(|()| pid)
                .map_err(|e| format!("cannot signal process {pid}: {e}"))
        });
    match sent {
        Ok(pid) => {
            println!("sent SIGHUP to process {pid}; its log says whether the reload was accepted");
            println!("(set [listen] admin_token_file to get the outcome here)");
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!(
                "cannot reload via {}: {error}",
                pid_file::path(state_dir).display()
            );
            ExitCode::FAILURE
        }
    }
}

fn certs(path: &Path, renew: Option<&str>) -> ExitCode {
    let config = match config::load(path) {
        Ok(config) => config,
        Err(error) => return config_failed(&error),
    };
    let result = match renew {
        Some(name) => report::renew(&config, name),
        None => report::certificates(&config),
    };
    match result {
        Ok(text) => {
            println!("{}", text.trim_end());
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("headland certs: {error}");
            ExitCode::FAILURE
        }
    }
}

fn status(path: &Path) -> ExitCode {
    let config = match config::load(path) {
        Ok(config) => config,
        Err(error) => return config_failed(&error),
    };
    let Some(admin) = config.listen.admin else {
        eprintln!(
            "{}: no [listen] admin, so there is no status to read",
            path.display()
        );
        return ExitCode::FAILURE;
    };
    // Peers other than loopback need the token to read /status (see `admin`).
    let token = config.admin_token.as_ref().map(|token| token.0.as_slice());
    let answer = send(admin, "GET", "/status", token);
    let status = match answer {
        Ok((200, body)) => serde_json::from_str::<admin_status::Status>(&body)
            .map_err(|e| format!("unexpected answer from {admin}: {e}")),
        Ok((code, body)) => Err(format!("GET /status answered {code}: {}", body.trim_end())),
        Err(error) => Err(format!("cannot reach the admin API at {admin}: {error}")),
    };
    match status {
        Ok(status) => {
            print!("{}", admin_status::summary(&status));
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("headland status: {error}");
            ExitCode::FAILURE
        }
    }
}

/// In a cluster with a shared routing configuration (from etcd, else the copy this node
/// kept), the configuration the node starts with; the local file alone otherwise, or when
/// the shared one fails here (said loudly; the node's status reports it after the start).
fn with_shared_config(path: &Path, local: config::Config) -> (config::Config, Option<String>) {
    let Some(shared) = shared_config::fetch_at_start(&local) else {
        return (local, None);
    };
    match shared_config::load(path, Some(&shared)) {
        Ok((config, _)) => (config, Some(shared)),
        Err(error) => {
            eprintln!("the shared configuration does not load on this node; starting with the local file:\n{error}");
            (local, None)
        }
    }
}

fn cluster(action: ClusterAction) -> ExitCode {
    let path = match &action {
        ClusterAction::Status { config } | ClusterAction::Push { config, .. } => config,
    };
    let local = match config::load(path) {
        Ok(config) => config,
        Err(error) => return config_failed(&error),
    };
    let Some(cluster_config) = local.cluster.clone() else {
        eprintln!("{}: no [cluster] section", path.display());
        return ExitCode::FAILURE;
    };
    let pushed = match &action {
        ClusterAction::Push { file, .. } => match validated_push(path, file) {
            Ok(text) => Some(text),
            Err(errors) => {
                eprintln!("{errors}");
                return ExitCode::FAILURE;
            }
        },
        ClusterAction::Status { .. } => None,
    };
    let result = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(anyhow::Error::from)
        .and_then(|runtime| {
            runtime.block_on(async {
                let cluster = Cluster::new(cluster_config, &local.node.name)?;
                match pushed {
                    Some(text) => {
                        let revision = cluster.put(shared_config::ROUTING, text.as_bytes(), false).await?;
                        Ok(format!(
                            "pushed at etcd revision {revision} (sha256 {}); each node reloads with it now, see `headland cluster status`",
                            headland::reload::sha256_hex(text.as_bytes())
                        ))
                    }
                    None => Ok(status::table(&status::read(&cluster).await?)),
                }
            })
        });
    match result {
        Ok(output) => {
            print!("{output}");
            if !output.ends_with('\n') {
                println!();
            }
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("headland: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// FILE's text when it holds no node-local section and loads with this node's local ones;
/// else every error, located in FILE.
fn validated_push(local: &Path, file: &Path) -> Result<String, String> {
    let text = std::fs::read_to_string(file).map_err(|e| format!("{}: {e}", file.display()))?;
    let name = file.display().to_string();
    let misplaced = shared_config::local_sections_in(&text, &name);
    if !misplaced.is_empty() {
        return Err(misplaced.join("\n"));
    }
    let local_text =
        std::fs::read_to_string(local).map_err(|e| format!("{}: {e}", local.display()))?;
    let composed = shared_config::compose(&local_text, &text)?;
    let base_dir = local.parent().unwrap_or(Path::new("."));
    config::parse(&composed, &name, base_dir).map_err(|errors| errors.to_string())?;
    Ok(text)
}

fn config_failed(error: &ConfigError) -> ExitCode {
    eprintln!("{error}");
    ExitCode::FAILURE
}

fn run_demo(addrs: DemoAddrs) -> anyhow::Result<()> {
    let (config, work_dir) = demo::prepare(addrs)?;
    println!("{}", demo::instructions(addrs));
    let options = StartOptions {
        remove_on_exit: Some(work_dir.clone()),
        ..StartOptions::default()
    };
    let Err(error) = server::run(config, options);
    let _ = std::fs::remove_dir_all(work_dir);
    Err(error.into())
}

/// Diagnostics go to stderr (stdout carries the access log); `RUST_LOG` sets the level.
fn init_tracing(format: LogFormat) {
    // hickory-server logs every query at info: that is an access log, not a server log, and
    // at DNS rates it would cost more than answering. RUST_LOG can turn it back on.
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,hickory_server=warn"));
    // Colour codes only on a terminal: the journal and log files would store them verbatim.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.with_ansi(std::io::stderr().is_terminal()).init(),
        LogFormat::Json => builder.json().init(),
    }
}
