//! `vaka`: the operator's binary.
//!
//! Exit codes: 0 on a clean stop, 1 when the hub fails at run time (for
//! example the database cannot be reached at start), 2 on bad usage or
//! configuration (clap's convention).

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand, ValueEnum};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use vaka_gateway::validate::Limits;
use vaka_gateway::{BatchConfig, MqttConfig, TopicRoot, UnixMillis};
use vaka_hub::access::{CareUnit, Role, UnitKind};
use vaka_hub::store::{NewStaff, StaffChange, Store};
use vaka_hub::{HubConfig, demo};

/// vaka: remote patient monitoring hub.
///
/// Home devices (scales, blood pressure cuffs, fetal heart monitors,
/// medicine dispensers, fall sensors) publish SenML over MQTT; vaka stores
/// every reading durably, evaluates per-patient alert rules, and shows the
/// nurse who needs a call, worst first.
#[derive(Parser)]
#[command(name = "vaka", version, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,

    /// Log filter (tracing EnvFilter syntax), e.g. "info" or "vaka_hub=debug".
    #[arg(
        long,
        env = "VAKA_LOG",
        default_value = "info,rumqttd=warn",
        global = true
    )]
    log: String,

    /// Log format.
    #[arg(long, env = "VAKA_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text, global = true)]
    log_format: LogFormat,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

// Parsed once at start: the size of the largest variant costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum Command {
    /// Run the hub: MQTT gateway, rules engine, HTTP API and websocket.
    Serve(ServeArgs),
    /// Run a self-contained demo: embedded MQTT broker, SQLite and about
    /// 50 simulated patients. Needs no services installed.
    Demo(DemoArgs),
    /// Create or upgrade the database schema, then exit. Safe to repeat.
    Migrate(DatabaseArgs),
    /// Check every active alert against the stored data (a missing
    /// measurement beside a later reading, an offline device that was
    /// heard, a reading an alert names that is not stored). Prints what
    /// disagrees; exits 1 if anything does.
    Check(DatabaseArgs),
    /// Run the rules over a patient's stored history and print the alerts
    /// they would have raised (with the current plan, or a proposed one).
    /// Writes nothing.
    Replay(ReplayArgs),
    /// Care units (vårdcentraler, wards, municipal home care).
    #[command(subcommand)]
    Unit(UnitCommand),
    /// Staff accounts: add one, or set a new password (which also unlocks).
    #[command(subcommand)]
    Staff(StaffCommand),
    /// Device credentials: each device has its own MQTT account.
    #[command(subcommand)]
    Device(DeviceCommand),
    /// Write Mosquitto's password file and ACL file from the database
    /// (every device with live credentials, and the gateway's account).
    MosquittoConfig(MosquittoConfigArgs),
}

#[derive(Subcommand)]
enum UnitCommand {
    /// Add a care unit.
    Add {
        #[command(flatten)]
        database: DatabaseArgs,
        /// Its id, e.g. vc-norrby.
        id: String,
        /// Its name, e.g. "Norrby vårdcentral".
        #[arg(long)]
        name: String,
        /// region (clinical care) or municipality (dispensers, falls).
        #[arg(long)]
        kind: String,
    },
}

#[derive(Subcommand)]
enum StaffCommand {
    /// Add a member of staff. The password is read from VAKA_STAFF_PASSWORD
    /// or, when that is not set, from the first line of standard input.
    Add {
        #[command(flatten)]
        database: DatabaseArgs,
        /// Login name, e.g. anna.svensson.
        username: String,
        /// Name shown to colleagues.
        #[arg(long)]
        name: String,
        /// nurse, physician or admin.
        #[arg(long)]
        role: String,
        /// A care unit she belongs to (repeat for several).
        #[arg(long = "unit", required = true)]
        units: Vec<String>,
    },
    /// Set a new password (VAKA_STAFF_PASSWORD or standard input); unlocks
    /// a locked account and ends its sessions.
    Password {
        #[command(flatten)]
        database: DatabaseArgs,
        username: String,
    },
}

#[derive(Subcommand)]
enum DeviceCommand {
    /// Issue new credentials to a device (printed once; only a hash is
    /// stored). Replaces earlier ones and lifts a revocation.
    Provision(ProvisionArgs),
    /// Revoke a device's credentials: the gateway refuses (quarantines)
    /// its messages from the next batch on, and the broker config leaves
    /// it out.
    Revoke(RevokeArgs),
}

#[derive(Args)]
struct ProvisionArgs {
    #[command(flatten)]
    database: DatabaseArgs,
    /// The device id (also its MQTT username).
    id: String,
    /// Register the device first, as this kind (scale, bp_cuff,
    /// pulse_oximeter, thermometer, fetal_monitor, dispenser, fall_sensor),
    /// if it is not registered yet.
    #[arg(long)]
    kind: Option<String>,
    #[command(flatten)]
    broker: BrokerFilesArgs,
}

#[derive(Args)]
struct RevokeArgs {
    #[command(flatten)]
    database: DatabaseArgs,
    /// The device id.
    id: String,
    #[command(flatten)]
    broker: BrokerFilesArgs,
}

/// Where the broker's files are, to rewrite them after a change.
#[derive(Args)]
struct BrokerFilesArgs {
    /// Rewrite the Mosquitto files in this directory afterwards (as
    /// `vaka mosquitto-config --out DIR` does).
    #[arg(long, env = "VAKA_MOSQUITTO_DIR")]
    mosquitto_dir: Option<std::path::PathBuf>,
    /// Then send SIGHUP to the Mosquitto whose pid is in this file, so it
    /// reloads them.
    #[arg(long, env = "VAKA_MOSQUITTO_PID_FILE", requires = "mosquitto_dir")]
    mosquitto_pid_file: Option<std::path::PathBuf>,
    /// MQTT topic root the ACL is written for.
    #[arg(long, env = "VAKA_TOPIC_ROOT", default_value = "vaka/v1")]
    topic_root: String,
    /// The gateway's broker URL; its user:password is the gateway's account.
    #[arg(long, env = "VAKA_MQTT_URL", hide_env_values = true)]
    mqtt_url: Option<String>,
}

#[derive(Args)]
struct MosquittoConfigArgs {
    #[command(flatten)]
    database: DatabaseArgs,
    /// Directory for `passwd` and `acl` (created if missing).
    #[arg(long)]
    out: std::path::PathBuf,
    /// Send SIGHUP to the Mosquitto whose pid is in this file afterwards.
    #[arg(long, env = "VAKA_MOSQUITTO_PID_FILE")]
    mosquitto_pid_file: Option<std::path::PathBuf>,
    /// MQTT topic root the ACL is written for.
    #[arg(long, env = "VAKA_TOPIC_ROOT", default_value = "vaka/v1")]
    topic_root: String,
    /// The gateway's broker URL, mqtt://user:password@host: its user and
    /// password become the gateway's account, the only one that reads
    /// every device's topics.
    #[arg(long, env = "VAKA_MQTT_URL", hide_env_values = true)]
    mqtt_url: String,
}

#[derive(Args)]
struct ReplayArgs {
    #[command(flatten)]
    database: DatabaseArgs,

    /// The patient id.
    #[arg(long)]
    patient: String,

    /// Start (RFC 3339, e.g. 2026-09-01T00:00:00Z); default: 90 days before --to.
    #[arg(long)]
    from: Option<String>,

    /// End (RFC 3339); default: now.
    #[arg(long)]
    to: Option<String>,

    /// A JSON file with a proposed plan, or a merge patch on the current one,
    /// e.g. {"thresholds": {"weight_gain_3d_kg": 1.5}}.
    #[arg(long)]
    plan: Option<std::path::PathBuf>,

    /// Print the alerts as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct DatabaseArgs {
    /// Database: postgres://user@host/db or sqlite://path/to/file.db
    #[arg(long, env = "VAKA_DATABASE_URL")]
    database_url: String,
}

#[derive(Args)]
struct ServeArgs {
    #[command(flatten)]
    database: DatabaseArgs,

    /// MQTT broker: mqtt://[user:password@]host[:port], or mqtts://… for
    /// TLS (port 8883 by default).
    #[arg(
        long,
        env = "VAKA_MQTT_URL",
        default_value = "mqtt://127.0.0.1:1883",
        hide_env_values = true
    )]
    mqtt_url: String,

    /// CA certificate (PEM) that signed the broker's certificate, for
    /// mqtts:// (default: the system's trust store).
    #[arg(long, env = "VAKA_MQTT_CA")]
    mqtt_ca: Option<std::path::PathBuf>,

    /// Client certificate (PEM) for a broker that requires one.
    #[arg(long, env = "VAKA_MQTT_CLIENT_CERT", requires = "mqtt_client_key")]
    mqtt_client_cert: Option<std::path::PathBuf>,

    /// The client certificate's private key (PEM).
    #[arg(long, env = "VAKA_MQTT_CLIENT_KEY", requires = "mqtt_client_cert")]
    mqtt_client_key: Option<std::path::PathBuf>,

    /// Serve HTTPS with this certificate chain (PEM) instead of HTTP.
    #[arg(long, env = "VAKA_TLS_CERT", requires = "tls_key")]
    tls_cert: Option<std::path::PathBuf>,

    /// The HTTPS certificate's private key (PEM).
    #[arg(long, env = "VAKA_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<std::path::PathBuf>,

    /// Messages per second a device may keep up; more are refused with
    /// rate_limited (and raise device_flooding).
    #[arg(long, env = "VAKA_DEVICE_RATE", default_value_t = 20.0)]
    device_rate: f64,

    /// Messages a device may send at once (e.g. a backlog) before its rate
    /// applies.
    #[arg(long, env = "VAKA_DEVICE_BURST", default_value_t = 2000)]
    device_burst: u32,

    /// Seconds a device must keep within its limits before its
    /// device_flooding alert clears.
    #[arg(long, env = "VAKA_DEVICE_CALM_SECS", default_value_t = 60)]
    device_calm_secs: u64,

    /// Largest payload accepted, in bytes; larger ones are too_large.
    #[arg(long, env = "VAKA_MAX_PAYLOAD", default_value_t = 64 * 1024)]
    max_payload: usize,

    /// MQTT client id of the gateway. Keep it fixed: the broker holds the
    /// gateway's persistent session (unacknowledged messages) under it.
    #[arg(long, env = "VAKA_MQTT_CLIENT_ID", default_value = "vaka-gateway")]
    mqtt_client_id: String,

    /// MQTT 5 Receive Maximum: unacknowledged QoS 1 messages the broker may
    /// have in flight to the gateway (vaka acknowledges after each commit).
    #[arg(long, env = "VAKA_MQTT_INFLIGHT", default_value_t = vaka_gateway::DEFAULT_INFLIGHT)]
    mqtt_inflight: u16,

    /// Address for the HTTP API, websocket and dashboard (port 0: any free port).
    #[arg(
        long = "http",
        env = "VAKA_HTTP_ADDR",
        default_value = "127.0.0.1:8080"
    )]
    http: SocketAddr,

    /// MQTT topic root; devices publish under {root}/d/{device}/…
    #[arg(long, env = "VAKA_TOPIC_ROOT", default_value = "vaka/v1")]
    topic_root: String,

    /// Bearer token for services (simulator, scripts): acts as an
    /// administrator of every care unit. Staff log in with passwords.
    #[arg(long, env = "VAKA_API_TOKEN", hide_env_values = true)]
    api_token: String,

    /// How long to collect messages into one commit, in milliseconds.
    #[arg(long, env = "VAKA_BATCH_WAIT_MS", default_value_t = 5)]
    batch_wait_ms: u64,

    /// Most messages in one commit.
    #[arg(long, env = "VAKA_BATCH_MAX", default_value_t = 1000)]
    batch_max: usize,

    /// Batches committing at once [default: 4 on PostgreSQL, 2 on SQLite,
    /// which has one writer].
    #[arg(long, env = "VAKA_COMMIT_PIPELINE", value_parser = clap::value_parser!(u16).range(1..=64))]
    commit_pipeline: Option<u16>,

    /// Readings older than this are refused (too_old).
    #[arg(long, env = "VAKA_MAX_READING_AGE_DAYS", default_value_t = 365)]
    max_reading_age_days: i64,

    /// Minutes before an unacknowledged high alert escalates (again each interval, twice).
    #[arg(long, env = "VAKA_ESCALATE_HIGH_AFTER_MIN", default_value_t = 5)]
    escalate_high_after_min: i64,

    /// Minutes before an unacknowledged medium alert escalates.
    #[arg(long, env = "VAKA_ESCALATE_MEDIUM_AFTER_MIN", default_value_t = 30)]
    escalate_medium_after_min: i64,

    /// Longest snooze of a medium or low alert, in hours.
    #[arg(long, env = "VAKA_MAX_SNOOZE_HOURS", default_value_t = 24)]
    max_snooze_hours: i64,

    /// Do not apply database migrations at start.
    #[arg(long, env = "VAKA_NO_MIGRATE")]
    no_migrate: bool,

    /// Failed logins in a row before a staff account is locked.
    #[arg(long, env = "VAKA_LOGIN_MAX_FAILURES", default_value_t = 5)]
    login_max_failures: i32,

    /// Minutes a locked account stays locked.
    #[arg(long, env = "VAKA_LOGIN_LOCKOUT_MIN", default_value_t = 15)]
    login_lockout_min: i64,

    /// Hours a staff session lasts.
    #[arg(long, env = "VAKA_SESSION_HOURS", default_value_t = 12)]
    session_hours: i64,

    /// Send the session cookie without the Secure flag. Only behind a proxy
    /// that terminates TLS and forwards plain HTTP from another host;
    /// browsers send Secure cookies to http://localhost anyway.
    #[arg(long, env = "VAKA_INSECURE_COOKIES")]
    insecure_cookies: bool,
}

#[derive(Args)]
struct DemoArgs {
    /// Address for the dashboard and API (another free port if taken).
    #[arg(
        long = "http",
        env = "VAKA_HTTP_ADDR",
        default_value = "127.0.0.1:8080"
    )]
    http: SocketAddr,

    /// Number of simulated patients.
    #[arg(long, default_value_t = 50)]
    patients: usize,

    /// Seed of the simulation (same seed, same patients and readings).
    #[arg(long, default_value_t = 42)]
    seed: u64,

    /// Days of history the simulated devices upload at start.
    #[arg(long, default_value_t = 14)]
    history_days: u32,

    /// Database (default: a new SQLite file in a temporary directory).
    #[arg(long, env = "VAKA_DATABASE_URL")]
    database_url: Option<String>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Err(e) = init_logging(&cli.log, cli.log_format) {
        eprintln!("vaka: {e:#}");
        return ExitCode::from(2);
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("vaka: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Serve(args) => serve(args).await,
            Command::Demo(args) => run_demo(args).await,
            Command::Migrate(args) => migrate(args).await,
            Command::Replay(args) => replay(args).await,
            Command::Check(args) => check(args).await,
            Command::Unit(cmd) => unit_command(cmd).await,
            Command::Staff(cmd) => staff_command(cmd).await,
            Command::Device(DeviceCommand::Provision(args)) => provision(args).await,
            Command::Device(DeviceCommand::Revoke(args)) => revoke(args).await,
            Command::MosquittoConfig(args) => mosquitto_config(args).await,
        }
    });
    runtime.shutdown_timeout(Duration::from_secs(5));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Usage(e)) => {
            eprintln!("vaka: {e:#}");
            ExitCode::from(2)
        }
        Err(Failure::Runtime(e)) => {
            eprintln!("vaka: {e:#}");
            ExitCode::FAILURE
        }
    }
}

enum Failure {
    Usage(anyhow::Error),
    Runtime(anyhow::Error),
}

impl From<anyhow::Error> for Failure {
    fn from(e: anyhow::Error) -> Self {
        Failure::Runtime(e)
    }
}

fn init_logging(filter: &str, format: LogFormat) -> anyhow::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_new(filter).context("invalid --log filter")?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
    Ok(())
}

/// Cancelled on Ctrl-C or SIGTERM.
fn shutdown_on_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let t = token.clone();
    tokio::spawn(async move {
        let ctrl_c = tokio::signal::ctrl_c();
        #[cfg(unix)]
        {
            let mut term =
                match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                    Ok(s) => s,
                    Err(_) => {
                        let _ = ctrl_c.await;
                        t.cancel();
                        return;
                    }
                };
            tokio::select! {
                _ = ctrl_c => {}
                _ = term.recv() => {}
            }
        }
        #[cfg(not(unix))]
        let _ = ctrl_c.await;
        t.cancel();
    });
    token
}

/// Connects and brings the schema up to date (for the admin commands,
/// which may be the first thing run on a new database).
async fn connect_migrated(url: &str) -> Result<Store, Failure> {
    let store = connect(url).await?;
    store.migrate().await.context("migration failed")?;
    Ok(store)
}

async fn connect(url: &str) -> Result<Store, Failure> {
    match Store::connect(url).await {
        Ok(s) => Ok(s),
        Err(e @ vaka_hub::store::StoreError::Url(_)) => Err(Failure::Usage(e.into())),
        Err(e) => Err(Failure::Runtime(
            anyhow::Error::new(e).context("cannot connect to the database"),
        )),
    }
}

async fn unit_command(cmd: UnitCommand) -> Result<(), Failure> {
    let UnitCommand::Add {
        database,
        id,
        name,
        kind,
    } = cmd;
    if UnitKind::parse(&kind).is_none() {
        return Err(Failure::Usage(anyhow::anyhow!(
            "--kind must be region or municipality"
        )));
    }
    let store = connect_migrated(&database.database_url).await?;
    let unit = CareUnit {
        unit_id: id,
        name,
        kind,
    };
    store
        .create_care_unit(&unit, UnixMillis::now())
        .await
        .context("could not add the care unit")?;
    println!("vaka: added care unit {} ({})", unit.unit_id, unit.kind);
    store.close().await;
    Ok(())
}

/// A new password from VAKA_STAFF_PASSWORD or the first line of stdin,
/// hashed.
fn new_password_hash() -> Result<String, Failure> {
    let password = match std::env::var("VAKA_STAFF_PASSWORD") {
        Ok(p) => p,
        Err(_) => {
            let mut line = String::new();
            std::io::stdin()
                .read_line(&mut line)
                .context("could not read the password from standard input")?;
            line.trim_end_matches(['\r', '\n']).to_owned()
        }
    };
    vaka_hub::passwords::hash(&password).map_err(|e| Failure::Usage(e.into()))
}

async fn staff_command(cmd: StaffCommand) -> Result<(), Failure> {
    match cmd {
        StaffCommand::Add {
            database,
            username,
            name,
            role,
            units,
        } => {
            let role = Role::parse(&role).ok_or_else(|| {
                Failure::Usage(anyhow::anyhow!("--role must be nurse, physician or admin"))
            })?;
            let hash = new_password_hash()?;
            let store = connect_migrated(&database.database_url).await?;
            let username = username.to_lowercase();
            store
                .create_staff(
                    &NewStaff {
                        staff_id: &username,
                        username: &username,
                        display_name: &name,
                        role,
                        password_hash: Some(hash),
                        units: &units,
                    },
                    UnixMillis::now(),
                )
                .await
                .context("could not add the member of staff")?;
            println!("vaka: added {username} ({role}, {})", units.join(", "));
            store.close().await;
        }
        StaffCommand::Password { database, username } => {
            let hash = new_password_hash()?;
            let store = connect_migrated(&database.database_url).await?;
            let who = store
                .credentials(&username)
                .await
                .context("could not look up the account")?
                .ok_or_else(|| Failure::Usage(anyhow::anyhow!("no account {username:?}")))?;
            store
                .update_staff(
                    &who.staff_id,
                    &StaffChange {
                        password_hash: Some(hash),
                        ..Default::default()
                    },
                )
                .await
                .context("could not set the password")?;
            println!("vaka: new password set for {username}; the account is unlocked");
            store.close().await;
        }
    }
    Ok(())
}

async fn migrate(args: DatabaseArgs) -> Result<(), Failure> {
    let store = connect(&args.database_url).await?;
    store.migrate().await.context("migration failed")?;
    let layout = store
        .observations_layout()
        .await
        .context("cannot inspect the schema")?;
    println!(
        "vaka: schema is up to date ({}; observations: {layout})",
        store.backend()
    );
    store.close().await;
    Ok(())
}

async fn check(args: DatabaseArgs) -> Result<(), Failure> {
    let store = connect(&args.database_url).await?;
    let violations = vaka_hub::consistency::check(&store)
        .await
        .context("cannot read the alerts")?;
    store.close().await;
    for v in &violations {
        println!("{v}");
    }
    if violations.is_empty() {
        println!("vaka: every active alert agrees with the stored data");
        Ok(())
    } else {
        Err(Failure::Runtime(anyhow::anyhow!(
            "{} active alert(s) disagree with the stored data",
            violations.len()
        )))
    }
}

fn parse_time(flag: &str, value: &str) -> Result<UnixMillis, Failure> {
    chrono::DateTime::parse_from_rfc3339(value)
        .map(|t| UnixMillis(t.timestamp_millis()))
        .map_err(|e| {
            Failure::Usage(anyhow::anyhow!(
                "{flag} {value:?} is not an RFC 3339 time: {e}"
            ))
        })
}

async fn replay(args: ReplayArgs) -> Result<(), Failure> {
    let to = match &args.to {
        Some(t) => parse_time("--to", t)?,
        None => UnixMillis::now(),
    };
    let from = match &args.from {
        Some(t) => parse_time("--from", t)?,
        None => UnixMillis(to.0 - 90 * UnixMillis::DAY),
    };
    if from >= to {
        return Err(Failure::Usage(anyhow::anyhow!(
            "--from must be before --to"
        )));
    }
    let patch = match &args.plan {
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|e| {
                Failure::Usage(anyhow::anyhow!("cannot read {}: {e}", path.display()))
            })?;
            Some(
                serde_json::from_str::<serde_json::Value>(&text).map_err(|e| {
                    Failure::Usage(anyhow::anyhow!("{} is not JSON: {e}", path.display()))
                })?,
            )
        }
        None => None,
    };
    let store = connect(&args.database.database_url).await?;
    let report = vaka_hub::replay::replay(&store, &args.patient, from, to, patch.as_ref())
        .await
        .map_err(|e| match e {
            vaka_hub::replay::ReplayError::Plan(e) => Failure::Usage(e.into()),
            vaka_hub::replay::ReplayError::NoPatient(p) => {
                Failure::Usage(anyhow::anyhow!("no patient {p:?}"))
            }
            e => Failure::Runtime(e.into()),
        })?;
    store.close().await;
    if args.json {
        let json =
            serde_json::to_string_pretty(&report.alerts).context("alerts do not serialize")?;
        println!("{json}");
        return Ok(());
    }
    let day = |t: UnixMillis| {
        vaka_hub::alerts::rfc3339(t)
            .get(..16)
            .unwrap_or_default()
            .replace('T', " ")
    };
    println!(
        "Replay of {} from {} to {} (UTC), plan version {}{}: {} messages, {} alerts.",
        args.patient,
        day(from),
        day(to),
        report.plan.version,
        if args.plan.is_some() {
            " with the proposed changes"
        } else {
            ""
        },
        report.messages,
        report.alerts.len()
    );
    for a in &report.alerts {
        let state = match (a.state.as_str(), a.outcome.as_deref()) {
            ("resolved", Some(o)) => o.to_owned(),
            (s, _) => s.to_owned(),
        };
        println!(
            "  {}  {:<20} {:<6} {:<10} {}",
            day(a.first_reading_at),
            a.rule.as_str(),
            a.severity.as_str(),
            state,
            a.explanation
        );
    }
    Ok(())
}

async fn serve(args: ServeArgs) -> Result<(), Failure> {
    let topic_root = TopicRoot::new(&args.topic_root).map_err(|e| Failure::Usage(e.into()))?;
    vaka_gateway::BrokerAddress::parse(&args.mqtt_url).map_err(|e| Failure::Usage(e.into()))?;
    if args.api_token.len() < 16 {
        return Err(Failure::Usage(anyhow::anyhow!(
            "--api-token must be at least 16 characters"
        )));
    }
    if args.max_reading_age_days < 1 {
        return Err(Failure::Usage(anyhow::anyhow!(
            "--max-reading-age-days must be at least 1"
        )));
    }
    if !(args.device_rate > 0.0 && args.device_rate.is_finite()) || args.device_burst < 1 {
        return Err(Failure::Usage(anyhow::anyhow!(
            "--device-rate must be above 0 and --device-burst at least 1"
        )));
    }
    if args.max_payload < 1024 {
        return Err(Failure::Usage(anyhow::anyhow!(
            "--max-payload must be at least 1024 bytes"
        )));
    }
    let https = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => {
            Some(vaka_hub::tls::server_config(cert, key).map_err(|e| Failure::Usage(e.into()))?)
        }
        _ => None,
    };
    let store = connect(&args.database.database_url).await?;
    if !args.no_migrate {
        store.migrate().await.context("migration failed")?;
    }
    let listener = TcpListener::bind(args.http)
        .await
        .with_context(|| format!("cannot listen on {}", args.http))?;
    let addr = listener.local_addr().context("no local address")?;
    // One line on stdout that scripts can read (the port, when it was 0).
    let scheme = if https.is_some() { "https" } else { "http" };
    println!("vaka: listening on {scheme}://{addr}");
    let mut mqtt = MqttConfig::new(args.mqtt_url, args.mqtt_client_id);
    mqtt.inflight = args.mqtt_inflight;
    mqtt.tls = vaka_gateway::TlsFiles {
        ca: args.mqtt_ca,
        client: args.mqtt_client_cert.zip(args.mqtt_client_key),
    };
    // Room above the payload limit for the packet's header and topic, so
    // a too-large payload is still received, refused and answered.
    mqtt.max_packet_bytes = mqtt.max_packet_bytes.max(args.max_payload + 64 * 1024);
    let limits = Limits {
        max_age_ms: args.max_reading_age_days * UnixMillis::DAY,
        max_payload_bytes: args.max_payload,
        ..Limits::default()
    };
    let config = HubConfig {
        mqtt,
        topic_root,
        api_token: args.api_token,
        limits,
        batch: BatchConfig {
            max_messages: args.batch_max.max(1),
            max_wait: Duration::from_millis(args.batch_wait_ms),
            pipeline: args
                .commit_pipeline
                .map_or(store.default_commit_pipeline(), usize::from),
            ..BatchConfig::default()
        },
        rate: vaka_gateway::RateLimit {
            rate: args.device_rate,
            burst: f64::from(args.device_burst),
            calm_after: Duration::from_secs(args.device_calm_secs.max(1)),
        },
        https,
        policy: vaka_hub::alerts::Policy {
            escalate_high_after_ms: args.escalate_high_after_min * UnixMillis::MINUTE,
            escalate_medium_after_ms: args.escalate_medium_after_min * UnixMillis::MINUTE,
            max_snooze_ms: args.max_snooze_hours * UnixMillis::HOUR,
            ..Default::default()
        },
        login: vaka_hub::http::login::LoginPolicy {
            max_failures: args.login_max_failures.max(1),
            lockout_ms: args.login_lockout_min.max(1) * UnixMillis::MINUTE,
            session_ms: args.session_hours.clamp(1, 24 * 7) * UnixMillis::HOUR,
            secure_cookies: !args.insecure_cookies,
        },
    };
    vaka_hub::run(config, store, listener, shutdown_on_signal())
        .await
        .map_err(|e| Failure::Runtime(e.into()))
}

async fn run_demo(args: DemoArgs) -> Result<(), Failure> {
    let options = demo::DemoOptions {
        http: args.http,
        patients: args.patients,
        seed: args.seed,
        history_days: args.history_days,
        database_url: args.database_url,
    };
    demo::run(options, shutdown_on_signal())
        .await
        .map_err(|e| Failure::Runtime(e.into()))
}

// ------------------------------------------------------------ credentials

async fn provision(args: ProvisionArgs) -> Result<(), Failure> {
    let id = vaka_gateway::DeviceId::parse(&args.id).ok_or_else(|| {
        Failure::Usage(anyhow::anyhow!(
            "device id {:?} must match [A-Za-z0-9_-]{{1,64}}",
            args.id
        ))
    })?;
    let kind = match &args.kind {
        Some(k) => Some(
            vaka_gateway::model::DeviceKind::parse(k)
                .ok_or_else(|| Failure::Usage(anyhow::anyhow!("unknown device kind {k:?}")))?,
        ),
        None => None,
    };
    let store = connect(&args.database.database_url).await?;
    store.migrate().await.context("migration failed")?;
    let now = UnixMillis::now();
    if let Some(kind) = kind
        && store
            .device(id.as_str())
            .await
            .context("database")?
            .is_none()
    {
        store
            .register_device(id.as_str(), kind, now)
            .await
            .context("cannot register the device")?;
    }
    let password = vaka_hub::credentials::new_password().context("no password")?;
    let hash = vaka_hub::credentials::hash_password(&password).context("no hash")?;
    match store.provision_device(id.as_str(), &hash, now).await {
        Ok(()) => {}
        Err(vaka_hub::store::StoreError::NotFound(_)) => {
            return Err(Failure::Usage(anyhow::anyhow!(
                "device {id} is not registered (register it with POST /api/v1/devices, or give --kind)"
            )));
        }
        Err(e) => return Err(Failure::Runtime(e.into())),
    }
    update_broker(&store, &args.broker).await?;
    store.close().await;
    // The one time the password is shown: it is not stored anywhere.
    println!("device:   {id}");
    println!("username: {id}");
    println!("password: {password}");
    println!(
        "topics:   {}/d/{id}/{{obs,evt,status}} (publish), …/err and …/cmd (subscribe)",
        args.broker.topic_root
    );
    Ok(())
}

async fn revoke(args: RevokeArgs) -> Result<(), Failure> {
    let store = connect(&args.database.database_url).await?;
    store.migrate().await.context("migration failed")?;
    let revoked = match store.revoke_device(&args.id, UnixMillis::now()).await {
        Ok(r) => r,
        Err(vaka_hub::store::StoreError::NotFound(_)) => {
            return Err(Failure::Usage(anyhow::anyhow!(
                "device {:?} is not registered",
                args.id
            )));
        }
        Err(e) => return Err(Failure::Runtime(e.into())),
    };
    update_broker(&store, &args.broker).await?;
    store.close().await;
    match revoked {
        vaka_hub::store::Revoked::Now => println!("vaka: revoked the credentials of {}", args.id),
        vaka_hub::store::Revoked::Already => {
            println!("vaka: the credentials of {} were revoked already", args.id)
        }
    }
    Ok(())
}

async fn update_broker(store: &Store, args: &BrokerFilesArgs) -> Result<(), Failure> {
    let Some(dir) = &args.mosquitto_dir else {
        return Ok(());
    };
    let Some(url) = &args.mqtt_url else {
        return Err(Failure::Usage(anyhow::anyhow!(
            "--mosquitto-dir needs --mqtt-url (VAKA_MQTT_URL) with the gateway's user:password"
        )));
    };
    write_mosquitto_files(store, dir, &args.topic_root, url).await?;
    if let Some(pid_file) = &args.mosquitto_pid_file {
        reload_mosquitto(pid_file)?;
    }
    Ok(())
}

async fn mosquitto_config(args: MosquittoConfigArgs) -> Result<(), Failure> {
    let store = connect(&args.database.database_url).await?;
    store.migrate().await.context("migration failed")?;
    let n = write_mosquitto_files(&store, &args.out, &args.topic_root, &args.mqtt_url).await?;
    store.close().await;
    println!(
        "vaka: wrote {} and {} ({n} device accounts and the gateway's)",
        args.out.join("passwd").display(),
        args.out.join("acl").display()
    );
    if let Some(pid_file) = &args.mosquitto_pid_file {
        reload_mosquitto(pid_file)?;
    }
    Ok(())
}

/// Writes `passwd` and `acl` into `dir`; returns the number of devices.
async fn write_mosquitto_files(
    store: &Store,
    dir: &std::path::Path,
    topic_root: &str,
    mqtt_url: &str,
) -> Result<usize, Failure> {
    use vaka_hub::credentials::{self, Account};
    let root = TopicRoot::new(topic_root).map_err(|e| Failure::Usage(e.into()))?;
    let address =
        vaka_gateway::BrokerAddress::parse(mqtt_url).map_err(|e| Failure::Usage(e.into()))?;
    let Some((gateway, gateway_password)) = address
        .credentials
        .filter(|(u, p)| !u.is_empty() && !p.is_empty())
    else {
        return Err(Failure::Usage(anyhow::anyhow!(
            "the gateway needs a broker account: give --mqtt-url mqtt://USER:PASSWORD@host"
        )));
    };
    let mut accounts = store.broker_accounts().await.context("database")?;
    let devices = accounts.len();
    if accounts.iter().any(|a| a.username == gateway) {
        return Err(Failure::Usage(anyhow::anyhow!(
            "a device is called {gateway:?}, like the gateway's account; rename one"
        )));
    }
    accounts.push(Account {
        username: gateway.clone(),
        password_hash: credentials::hash_password(&gateway_password).context("no hash")?,
    });
    let passwd = credentials::password_file(&accounts).map_err(|e| Failure::Runtime(e.into()))?;
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    // Readable by Mosquitto (group) but nobody else: hashes only, still.
    credentials::write_atomically(&dir.join("passwd"), &passwd, 0o640)
        .map_err(|e| Failure::Runtime(e.into()))?;
    credentials::write_atomically(
        &dir.join("acl"),
        &credentials::acl_file(root.as_str(), &gateway),
        0o644,
    )
    .map_err(|e| Failure::Runtime(e.into()))?;
    Ok(devices)
}

/// SIGHUP: Mosquitto reloads its password and ACL files.
fn reload_mosquitto(pid_file: &std::path::Path) -> Result<(), Failure> {
    let pid = std::fs::read_to_string(pid_file)
        .with_context(|| format!("cannot read {}", pid_file.display()))?;
    let pid: u32 = pid
        .trim()
        .parse()
        .map_err(|_| Failure::Usage(anyhow::anyhow!("{} holds no pid", pid_file.display())))?;
    let status = std::process::Command::new("kill")
        .args(["-HUP", &pid.to_string()])
        .status()
        .context("cannot run kill")?;
    if !status.success() {
        return Err(Failure::Runtime(anyhow::anyhow!(
            "could not signal Mosquitto (pid {pid})"
        )));
    }
    println!("vaka: told Mosquitto (pid {pid}) to reload");
    Ok(())
}
