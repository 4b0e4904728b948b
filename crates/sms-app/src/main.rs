//! `sms-app`: the SMS gateway binary. Reads configuration, picks backends, wires the
//! send path, and serves the HTTP API, or runs one of the operator commands.

mod activity;
mod blocked;
mod callback_guard;
mod callbacks;
mod chart;
mod config;
mod http;
mod metrics;
mod openapi;
mod pull;
mod routes;
mod sandbox;
mod serve;
mod simulate;
mod spend;
mod switch_log;
mod telemetry;
mod wire;

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use sms_core::{MessageId, MessageStatus};

/// Multi-vendor SMS gateway with failover, a durable queue and rate limits.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    /// Configuration file (TOML); every key has a default.
    #[arg(long, global = true, env = "SMS_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the HTTP API.
    Serve,
    /// Run the gateway on embedded defaults against simulated vendors and print a report.
    Simulate {
        /// A built-in scenario (default, steady, flaky, mapping, outage) or a scenario TOML file.
        #[arg(long, default_value = "default")]
        scenario: String,
        /// How long traffic runs, in seconds (overrides the scenario).
        #[arg(long)]
        duration: Option<f64>,
        /// Total steady requests over the run (overrides the scenario's rate).
        #[arg(long)]
        requests: Option<u32>,
        /// Print one JSON object instead of the table.
        #[arg(long)]
        json: bool,
        /// Draw the timeline to this SVG file.
        #[arg(long)]
        chart: Option<PathBuf>,
    },
    /// Apply the database migrations and exit.
    Migrate,
    /// Serve a local sandbox speaking the Aliyun, Tencent Cloud and Cloopen APIs (for tests and demos).
    Sandbox {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:9090")]
        listen: String,
        /// Sandbox settings (accepted credentials, approved templates and signatures,
        /// per-number limits, seed) as TOML. With `--config`, the sandbox also approves
        /// the templates and signatures of the gateway's configuration.
        #[arg(long = "sandbox-config")]
        sandbox_config: Option<PathBuf>,
        /// Append every delivery to this JSON-lines file.
        #[arg(long)]
        delivery_log: Option<PathBuf>,
    },
    /// Inspect configuration.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Inspect and repair the deferred queue.
    Queue {
        #[command(subcommand)]
        command: QueueCommand,
    },
}

#[derive(Debug, Subcommand)]
enum ConfigCommand {
    /// Validate the configuration and print the effective values, secrets hidden.
    Check,
}

#[derive(Debug, Subcommand)]
enum QueueCommand {
    /// List messages in one status.
    List {
        /// queued, leased, sent, dead or expired.
        #[arg(long, default_value = "dead")]
        status: String,
        /// At most this many.
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
    /// Queue a dead or expired message again.
    Retry {
        /// The message id.
        id: String,
    },
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    runtime.block_on(run(cli))
}

async fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Simulate {
            scenario,
            duration,
            requests,
            json,
            chart,
        } => {
            init_logs(json || std::env::var_os("RUST_LOG").is_none(), "warn")?;
            let mut s = match simulate::Scenario::preset(&scenario) {
                Some(s) => s,
                None => simulate::Scenario::from_file(std::path::Path::new(&scenario))
                    .with_context(|| {
                        format!(
                            "--scenario: not a preset ({}) nor a readable file",
                            simulate::Scenario::PRESETS.join(", ")
                        )
                    })?,
            };
            if let Some(d) = duration {
                s.duration_s = d;
            }
            if let Some(n) = requests {
                s.rate_per_s = ((f64::from(n) / s.duration_s).ceil() as u32).max(1);
            }
            let progress = !json && std::io::IsTerminal::is_terminal(&std::io::stderr());
            let report = simulate::run(simulate::Options {
                scenario: s,
                chart: chart.clone(),
                progress,
            })
            .await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{}", report.render_text());
                if let Some(path) = chart {
                    println!("timeline written to {}", path.display());
                }
            }
            if report.lost > 0 {
                anyhow::bail!("{} accepted messages were lost", report.lost);
            }
            Ok(())
        }
        Command::Sandbox {
            listen,
            sandbox_config,
            delivery_log,
        } => {
            init_logs(false, "info")?;
            let gateway = cli
                .config
                .as_deref()
                .map(|path| config::Config::load(Some(path)))
                .transpose()?;
            sandbox::run(&listen, sandbox_config, delivery_log, gateway).await
        }
        command => {
            let config = config::Config::load(cli.config.as_deref())?;
            match command {
                Command::Config {
                    command: ConfigCommand::Check,
                } => {
                    print!("{}", config.to_redacted_toml()?);
                    let ids: Vec<sms_core::VendorId> = config
                        .vendors_in_order()
                        .into_iter()
                        .map(|(name, _)| sms_core::VendorId::new(name))
                        .collect::<Result<_, _>>()?;
                    for line in routes::report(&config.templates, &ids) {
                        let level = if line.is_warning() { "warning: " } else { "" };
                        eprintln!("{level}{line}");
                    }
                    eprintln!("configuration is valid");
                    Ok(())
                }
                Command::Serve => {
                    let telemetry = telemetry::init(false, "info", &config.telemetry)?;
                    let served = serve::run(config).await;
                    telemetry.shutdown().await;
                    served
                }
                Command::Migrate => {
                    init_logs(false, "info")?;
                    wire::migrate(&config).await
                }
                Command::Queue { command } => {
                    init_logs(false, "warn")?;
                    let store = wire::open_store(&config).await?;
                    match command {
                        QueueCommand::List { status, limit } => {
                            let status: MessageStatus = status
                                .parse()
                                .map_err(|e| anyhow::anyhow!("--status: {e}"))?;
                            for m in store.queue.list(status, limit).await? {
                                println!(
                                    "{}  {}  attempts {}/{}  vendor {}  {}",
                                    m.id,
                                    m.status,
                                    m.attempts,
                                    m.max_attempts,
                                    m.last_vendor.as_ref().map(|v| v.as_str()).unwrap_or("-"),
                                    m.last_error.as_deref().unwrap_or("")
                                );
                            }
                            Ok(())
                        }
                        QueueCommand::Retry { id } => {
                            let id: MessageId =
                                id.parse().map_err(|e| anyhow::anyhow!("ID: {e}"))?;
                            let m =
                                wire::retry_message(store.queue.as_ref(), id, chrono::Utc::now())
                                    .await?;
                            println!("{} queued again", m.id);
                            Ok(())
                        }
                    }
                }
                Command::Simulate { .. } | Command::Sandbox { .. } => unreachable!("handled above"),
            }
        }
    }
}

/// Logs to stderr, without trace export: only `serve` exports traces.
fn init_logs(compact: bool, default_level: &str) -> Result<()> {
    let no_export = telemetry::TelemetryConfig::default();
    // Without an endpoint there is nothing to shut down.
    let _no_exporter = telemetry::init(compact, default_level, &no_export)?;
    Ok(())
}
