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
    /// Load test a running `vaka serve`: N devices publish at a rate, then
    /// count what was stored and alerted. Exits non-zero on any loss or
    /// duplicate.
    Load(LoadArgs),
    /// Raw broker or database figures to compare vaka's with.
    #[command(subcommand)]
    Baseline(BaselineCmd),
}

#[derive(Debug, Args)]
struct LoadArgs {
    /// The broker vaka listens to.
    #[arg(long, env = "VAKA_MQTT_URL", default_value = "mqtt://127.0.0.1:1883")]
    mqtt_url: String,
    /// vaka's topic root.
    #[arg(long, env = "VAKA_TOPIC_ROOT", default_value = "vaka/v1")]
    topic_root: String,
    /// vaka's HTTP API, e.g. http://127.0.0.1:8080.
    #[arg(long, env = "VAKA_API_URL")]
    api: String,
    /// vaka's API token.
    #[arg(long, env = "VAKA_API_TOKEN", hide_env_values = true)]
    api_token: String,
    /// vaka's database (postgres://… or sqlite://…), read for the counts.
    #[arg(long, env = "VAKA_DATABASE_URL", hide_env_values = true)]
    database_url: String,
    /// Simulated devices, each its own MQTT client and patient.
    #[arg(long, default_value_t = 1000)]
    devices: usize,
    /// Messages a second over all devices; 0: as fast as possible.
    #[arg(long, default_value_t = 1000.0)]
    rate: f64,
    /// Seconds of publishing.
    #[arg(long, default_value_t = 30.0)]
    duration: f64,
    /// One device in this many is a fall sensor sending falls (0: none).
    #[arg(long, default_value_t = 50)]
    alarm_every: usize,
    /// One observation message in this many is a stored-latency probe.
    #[arg(long, default_value_t = 20)]
    probe_every: u64,
    /// Seconds without progress before the drain gives up.
    #[arg(long, default_value_t = 30.0)]
    drain_timeout: f64,
    /// The run's id in device, patient and client ids (default: random).
    #[arg(long)]
    run_id: Option<String>,
    /// Also write the report as JSON to this file.
    #[arg(long)]
    json: Option<std::path::PathBuf>,
}

#[derive(Debug, Subcommand)]
enum BaselineCmd {
    /// rumqttc publishers → one MQTT 5 subscriber through the broker.
    Broker {
        #[arg(long, env = "VAKA_MQTT_URL", default_value = "mqtt://127.0.0.1:1883")]
        mqtt_url: String,
        #[arg(long, default_value_t = 1)]
        qos: u8,
        #[arg(long, default_value_t = 200_000)]
        messages: u64,
        #[arg(long, default_value_t = 1000)]
        publishers: usize,
        #[arg(long)]
        json: Option<std::path::PathBuf>,
    },
    /// COPY (PostgreSQL) or batched INSERT (SQLite) of observation rows
    /// into a database set up by `vaka migrate`.
    Database {
        #[arg(long, env = "VAKA_DATABASE_URL", hide_env_values = true)]
        database_url: String,
        #[arg(long, default_value_t = 400_000)]
        rows: u64,
        #[arg(long, default_value_t = 1000)]
        devices: u64,
        #[arg(long)]
        json: Option<std::path::PathBuf>,
    },
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
        Cmd::Load(args) => tokio::runtime::Runtime::new()
            .context("could not start the async runtime")
            .and_then(|rt| rt.block_on(load(args))),
        Cmd::Baseline(cmd) => tokio::runtime::Runtime::new()
            .context("could not start the async runtime")
            .and_then(|rt| rt.block_on(baseline(cmd))),
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

async fn load(args: LoadArgs) -> anyhow::Result<()> {
    match vaka_sim::load::raise_fd_limit() {
        Ok(limit) if (limit as usize) < args.devices + 100 => tracing::warn!(
            limit,
            devices = args.devices,
            "the open-file limit is below one socket per device; raise it (ulimit -Hn)"
        ),
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "could not raise the open-file limit"),
    }
    let mut config = vaka_sim::load::LoadConfig::new(
        args.mqtt_url,
        args.topic_root,
        args.api,
        args.api_token,
        args.database_url,
    );
    config.devices = args.devices;
    config.rate = (args.rate > 0.0).then_some(args.rate);
    config.duration = std::time::Duration::from_secs_f64(args.duration.max(0.0));
    config.alarm_every = args.alarm_every;
    config.probe_every = args.probe_every;
    config.drain_timeout = std::time::Duration::from_secs_f64(args.drain_timeout.max(0.0));
    if let Some(id) = args.run_id {
        config.run_id = id;
    }
    let report = vaka_sim::load::run(config).await?;
    println!("{report}");
    if let Some(path) = &args.json {
        write_json(path, &report)?;
    }
    let problems = report.problems();
    if !problems.is_empty() {
        anyhow::bail!("the run lost or doubled data: {}", problems.join("; "));
    }
    Ok(())
}

async fn baseline(cmd: BaselineCmd) -> anyhow::Result<()> {
    if let Err(e) = vaka_sim::load::raise_fd_limit() {
        tracing::warn!(error = %e, "could not raise the open-file limit");
    }
    match cmd {
        BaselineCmd::Broker {
            mqtt_url,
            qos,
            messages,
            publishers,
            json,
        } => {
            let b = vaka_sim::baseline::broker(&mqtt_url, qos, messages, publishers).await?;
            println!(
                "broker QoS {}: {} of {} messages ({} bytes) in {:.2} s: {:.0} msg/s",
                b.qos, b.received, b.messages, b.payload_bytes, b.secs, b.rate
            );
            if let Some(path) = &json {
                write_json(path, &b)?;
            }
        }
        BaselineCmd::Database {
            database_url,
            rows,
            devices,
            json,
        } => {
            let b = vaka_sim::baseline::database(&database_url, rows, devices).await?;
            println!(
                "{} {}: {} rows in {:.2} s: {:.0} rows/s ({:.0} messages/s)",
                b.backend, b.method, b.rows, b.secs, b.rows_per_sec, b.messages_per_sec
            );
            if let Some(path) = &json {
                write_json(path, &b)?;
            }
        }
    }
    Ok(())
}

fn write_json<T: serde::Serialize>(path: &std::path::Path, value: &T) -> anyhow::Result<()> {
    let text = serde_json::to_string_pretty(value).context("could not write the report")?;
    std::fs::write(path, text).with_context(|| format!("could not write {}", path.display()))
}
