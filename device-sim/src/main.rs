//! `vaka-sim`: simulated home-monitoring devices against any MQTT broker.
//!
//! Thin: parse the command line, set up logging, and call the library.

use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use tokio_util::sync::CancellationToken;
use tracing::info;
use tracing_subscriber::EnvFilter;

/// Simulated patients at home for vaka: scales, BP cuffs, fetal monitors,
/// medicine dispensers and fall sensors, each its own MQTT client.
///
/// Everything is seeded: the same seed gives the same patients, readings
/// and episodes. All names are invented.
#[derive(Debug, Parser)]
#[command(name = "vaka-sim", version)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Connect every device, publish the history, then run live until Ctrl-C.
    Run(RunArgs),
    /// Print the roster (patients, devices, episodes) as JSON.
    Roster(RosterArgs),
}

#[derive(Debug, Args)]
struct RosterArgs {
    /// How many patients to simulate.
    #[arg(long, default_value_t = 50)]
    patients: usize,
    /// Seed of the roster and of everything that happens to it.
    #[arg(long, default_value_t = 42)]
    seed: u64,
}

#[derive(Debug, Args)]
struct RunArgs {
    #[command(flatten)]
    roster: RosterArgs,
    /// The MQTT broker (plain TCP), e.g. mqtt://user:password@host:1883.
    #[arg(long, env = "VAKA_MQTT_URL", default_value = "mqtt://127.0.0.1:1883")]
    mqtt_url: String,
    /// The topic root; devices publish on {root}/d/{device}/{obs,evt,status}.
    #[arg(long, env = "VAKA_TOPIC_ROOT", default_value = "vaka/v1")]
    topic_root: String,
    /// Days of past readings (weights, BP, doses) to publish at the start.
    #[arg(long, default_value_t = 14)]
    history_days: u32,
    /// The hub's HTTP API, e.g. http://127.0.0.1:8080. If given, the roster
    /// is registered there (patients, devices, bindings) before the run.
    #[arg(long, env = "VAKA_API_URL")]
    api: Option<String>,
    /// Bearer token for the hub's API.
    #[arg(long, env = "VAKA_API_TOKEN", hide_env_values = true)]
    api_token: Option<String>,
    /// Enrol every simulated patient in this care unit (repeat for
    /// several), so that its staff see them; the unit must exist
    /// (`vaka unit add`).
    #[arg(long = "unit")]
    units: Vec<String>,
    /// MQTT client ids are {prefix}-{device id}.
    #[arg(long, default_value = "vaka-sim")]
    client_prefix: String,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let result = match cli.command {
        Cmd::Roster(args) => print_roster(&args),
        Cmd::Run(args) => tokio::runtime::Runtime::new()
            .context("could not start the async runtime")
            .and_then(|rt| rt.block_on(run(args))),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vaka-sim: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn print_roster(args: &RosterArgs) -> anyhow::Result<()> {
    let roster = vaka_sim::roster(args.seed, args.patients);
    let json = serde_json::to_string_pretty(&roster).context("could not write the roster")?;
    println!("{json}");
    Ok(())
}

async fn run(args: RunArgs) -> anyhow::Result<()> {
    let roster = vaka_sim::roster(args.roster.seed, args.roster.patients);
    if let Some(api) = &args.api {
        vaka_sim::register::register_in_units(&roster, api, args.api_token.as_deref(), &args.units)
            .await
            .context("registering the roster with the hub failed")?;
    }
    let shutdown = CancellationToken::new();
    let on_signal = shutdown.clone();
    tokio::spawn(async move {
        match tokio::signal::ctrl_c().await {
            Ok(()) => {
                info!("Ctrl-C: disconnecting the devices");
                on_signal.cancel();
            }
            // Without a signal handler the run goes on until killed.
            Err(e) => tracing::warn!(error = %e, "cannot listen for Ctrl-C"),
        }
    });
    let config = vaka_sim::SimConfig {
        mqtt_url: args.mqtt_url,
        topic_root: args.topic_root,
        seed: args.roster.seed,
        history_days: args.history_days,
        client_prefix: args.client_prefix,
        credentials: Default::default(),
    };
    let report = vaka_sim::run(&roster, config, shutdown).await?;
    info!(
        published = report.published,
        acked = report.acked,
        history = report.history,
        replies = report.replies,
        "done"
    );
    Ok(())
}
