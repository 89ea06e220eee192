//! The `headland` command line: parse arguments, load the configuration, start services.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use headland::config::{self, ConfigError};
use headland::demo::{self, DemoAddrs};
use headland::server::{self, StartOptions};

#[derive(Parser)]
#[command(
    name = "headland",
    version,
    about = "Edge reverse proxy and GeoDNS-aware load balancer"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
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
    /// Validate a configuration file; print every error as FILE:LINE:COL: message.
    Check {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Run a self-contained showcase with built-in upstreams on loopback.
    Demo {
        #[arg(long, default_value = "127.0.0.1:8080")]
        http: SocketAddr,
        #[arg(long, default_value = "127.0.0.1:9180")]
        admin: SocketAddr,
    },
}

fn main() -> ExitCode {
    init_tracing();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Check { config } => return check(&config),
        Command::Run {
            config: path,
            upgrade,
        } => match config::load(&path) {
            Ok(config) => {
                let options = StartOptions {
                    upgrade,
                    config_path: Some(path),
                };
                server::run(config, options).map_err(anyhow::Error::from)
            }
            Err(error) => return config_failed(&error),
        },
        Command::Demo { http, admin } => run_demo(DemoAddrs { http, admin }),
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

fn config_failed(error: &ConfigError) -> ExitCode {
    eprintln!("{error}");
    ExitCode::FAILURE
}

fn run_demo(addrs: DemoAddrs) -> anyhow::Result<()> {
    let config = demo::prepare(addrs)?;
    println!("{}", demo::instructions(addrs));
    server::run(config, StartOptions::default())?;
    Ok(())
}

/// Diagnostics go to stderr (stdout carries the access log); `RUST_LOG` sets the level.
fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}
