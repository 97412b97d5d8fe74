//! `vaka demo`: the whole system on one machine with nothing installed: an
//! embedded MQTT broker (rumqttd) on a free port, a fresh SQLite database,
//! the hub, and the device simulator with about 50 patients.
//!
//! Access control as in production: every simulated device gets its own
//! credentials (stored hashed, like `vaka device provision`), and devices
//! reach rumqttd only through the [`guard`](crate::guard), which lets a
//! device publish only under its own topics and read only its own replies.
//! The gateway has an account of its own on a listener of its own.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr, TcpListener as StdListener};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};
use vaka_gateway::{MqttConfig, TopicRoot, UnixMillis};

use crate::access::{CareUnit, Role, UnitKind};
use crate::store::{NewPatient, NewStaff, Store, StoreError};
use crate::{HubConfig, HubError};

#[derive(Debug, Clone)]
pub struct DemoOptions {
    pub http: SocketAddr,
    pub patients: usize,
    pub seed: u64,
    pub history_days: u32,
    pub database_url: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Hub(#[from] HubError),
    #[error("embedded MQTT broker: {0}")]
    Broker(String),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

const TOPIC_ROOT: &str = "vaka/v1";
const GATEWAY_USER: &str = "vaka-gateway";

pub async fn run(options: DemoOptions, shutdown: CancellationToken) -> Result<(), DemoError> {
    let database_url = match &options.database_url {
        Some(url) => url.clone(),
        None => {
            let dir = demo_dir()?;
            format!("sqlite://{}", dir.join("vaka-demo.db").display())
        }
    };
    let store = Store::connect(&database_url).await?;
    store.migrate().await?;

    let roster = vaka_sim::roster(options.seed, options.patients);
    let passwords = register(&store, &roster).await?;
    seed_staff(&store, &roster).await?;

    // Devices speak MQTT 3.1.1, the gateway MQTT 5: one listener each. The
    // devices' one is behind the guard, which does all the checking;
    // rumqttd's own device listener is on loopback only (a local process
    // could go round the guard there: this is a demo on one machine). The
    // gateway's listener wants the gateway's account.
    let guard_listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
    let mqtt_port = guard_listener.local_addr()?.port();
    let upstream_port = free_port()?;
    let gateway_port = free_port()?;
    let gateway_password =
        crate::credentials::new_password().map_err(|e| DemoError::Broker(e.to_string()))?;
    start_broker(
        upstream_port,
        gateway_port,
        (GATEWAY_USER, &gateway_password),
    )?;
    let guard_store = store.clone();
    let authenticate: crate::guard::Authenticate = Arc::new(
        move |user: String, password: String| -> crate::guard::Verdict {
            let store = guard_store.clone();
            Box::pin(async move {
                let Ok(Some(c)) = store.device_credential(&user).await else {
                    return false;
                };
                c.revoked_at.is_none()
                    && crate::credentials::verify_password(&password, &c.password_hash)
            })
        },
    );
    tokio::spawn(crate::guard::serve(
        guard_listener,
        SocketAddr::from((Ipv4Addr::LOCALHOST, upstream_port)),
        TOPIC_ROOT.to_owned(),
        authenticate,
        shutdown.child_token(),
    ));

    let listener = match TcpListener::bind(options.http).await {
        Ok(l) => l,
        Err(e) => {
            warn!(error = %e, addr = %options.http, "address taken; using a free port");
            TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?
        }
    };
    let http = listener.local_addr()?;
    let token = uuid::Uuid::new_v4().simple().to_string();
    let devices: usize = roster.patients.iter().map(|p| p.devices.len()).sum();
    println!();
    println!("  vaka demo is running");
    println!();
    println!("  Open:      http://{http}/");
    println!("  Logins (password {DEMO_PASSWORD}):");
    for (username, name, role, unit) in DEMO_LOGINS {
        println!("             {username:<14} {name}, {role} ({unit})");
    }
    println!("  API token: {token}   (Authorization: Bearer …, for scripts)");
    println!(
        "  Patients:  {}  ({devices} simulated devices)",
        roster.patients.len()
    );
    println!(
        "  MQTT:      mqtt://127.0.0.1:{mqtt_port}  (topic root {TOPIC_ROOT}; each device logs in as itself)"
    );
    println!("  Database:  {database_url}");
    println!();
    println!("  Press Ctrl-C to stop.");
    println!();

    let topic_root = TopicRoot::new(TOPIC_ROOT)?;
    let mqtt_url = format!("mqtt://127.0.0.1:{mqtt_port}");
    let config = HubConfig {
        mqtt: MqttConfig::new(
            format!("mqtt://{GATEWAY_USER}:{gateway_password}@127.0.0.1:{gateway_port}"),
            "vaka-demo-gateway",
        ),
        topic_root,
        api_token: token,
        limits: Default::default(),
        batch: vaka_gateway::BatchConfig {
            pipeline: store.default_commit_pipeline(),
            ..Default::default()
        },
        rate: Default::default(),
        https: None,
        policy: Default::default(),
        login: Default::default(),
    };
    let hub = tokio::spawn(crate::run(config, store, listener, shutdown.clone()));
    wait_until_ready(http).await?;

    let sim_stop = shutdown.child_token();
    let sim_config = vaka_sim::SimConfig {
        mqtt_url,
        topic_root: TOPIC_ROOT.into(),
        seed: options.seed,
        history_days: options.history_days,
        client_prefix: "vaka-demo".into(),
        credentials: passwords,
    };
    let sim = tokio::spawn(async move { vaka_sim::run(&roster, sim_config, sim_stop).await });

    let result = hub.await;
    shutdown.cancel();
    match sim.await {
        Ok(Ok(report)) => info!(published = report.published, "simulator stopped"),
        Ok(Err(e)) => warn!(error = %e, "the simulator failed"),
        Err(e) => warn!(error = %e, "the simulator task failed"),
    }
    match result {
        Ok(r) => Ok(r?),
        Err(e) => Err(DemoError::Io(std::io::Error::other(e))),
    }
}

impl From<vaka_gateway::Error> for DemoError {
    fn from(e: vaka_gateway::Error) -> Self {
        DemoError::Hub(HubError::Gateway(e))
    }
}

/// A new directory for this demo's database.
fn demo_dir() -> std::io::Result<PathBuf> {
    let stamp = UnixMillis::now().0;
    let dir = std::env::temp_dir().join(format!("vaka-demo-{}-{stamp}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

fn free_port() -> std::io::Result<u16> {
    Ok(StdListener::bind((Ipv4Addr::LOCALHOST, 0))?
        .local_addr()?
        .port())
}

/// Starts rumqttd on its own thread (it runs its own runtimes and blocks).
/// The gateway's listener wants the gateway's account; the devices' one is
/// reached through the guard.
fn start_broker(
    devices_port: u16,
    gateway_port: u16,
    gateway: (&str, &str),
) -> Result<(), DemoError> {
    let server =
        |name: &str, port: u16, auth: Option<HashMap<String, String>>| rumqttd::ServerSettings {
            name: name.into(),
            listen: SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
            tls: None,
            next_connection_delay_ms: 1,
            connections: rumqttd::ConnectionSettings {
                connection_timeout_ms: 60_000,
                max_payload_size: 1024 * 1024,
                max_inflight_count: 1000,
                auth,
                external_auth: None,
                dynamic_filters: true,
            },
        };
    let config = rumqttd::Config {
        router: rumqttd::RouterConfig {
            max_connections: 10_000,
            max_outgoing_packet_count: 1000,
            max_segment_size: 100 * 1024 * 1024,
            max_segment_count: 10,
            ..Default::default()
        },
        v4: Some(HashMap::from([(
            "devices".to_owned(),
            server("devices", devices_port, None),
        )])),
        v5: Some(HashMap::from([(
            "gateway".to_owned(),
            server(
                "gateway",
                gateway_port,
                Some(HashMap::from([(
                    gateway.0.to_owned(),
                    gateway.1.to_owned(),
                )])),
            ),
        )])),
        ..Default::default()
    };
    let mut broker = rumqttd::Broker::new(config);
    std::thread::Builder::new()
        .name("rumqttd".into())
        .spawn(move || {
            if let Err(e) = broker.start() {
                tracing::error!(error = %e, "the embedded MQTT broker stopped");
            }
        })
        .map_err(|e| DemoError::Broker(e.to_string()))?;
    Ok(())
}

/// Waits until `/readyz` says the database and the broker are connected,
/// so the simulator's first messages find the gateway subscribed.
async fn wait_until_ready(http: SocketAddr) -> Result<(), DemoError> {
    let url = format!("http://{http}/readyz");
    let client = reqwest::Client::new();
    for _ in 0..200 {
        if let Ok(r) = client.get(&url).send().await
            && r.status().is_success()
        {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Err(DemoError::Broker(
        "the hub did not connect to the embedded broker within 10 s".into(),
    ))
}

/// Registers the simulated patients and devices (idempotent), and gives
/// every device new credentials; returns their passwords, by device id.
async fn register(
    store: &Store,
    roster: &vaka_sim::Roster,
) -> Result<HashMap<String, String>, DemoError> {
    let now = UnixMillis::now();
    let mut passwords = HashMap::new();
    for p in &roster.patients {
        let patient = NewPatient {
            patient_id: p.id.clone(),
            display_name: p.name.clone(),
            timezone: p.timezone.clone(),
            program: Some(p.program.as_str().to_owned()),
        };
        match store.create_patient(&patient, now).await {
            Ok(_) | Err(StoreError::Conflict(_)) => {}
            Err(e) => return Err(e.into()),
        }
        for d in &p.devices {
            match store.register_device(&d.id, d.kind, now).await {
                Ok(_) => {
                    store.bind_device(&d.id, &p.id, None, now).await?;
                }
                Err(StoreError::Conflict(_)) => {}
                Err(e) => return Err(e.into()),
            }
            let password =
                crate::credentials::new_password().map_err(|e| DemoError::Broker(e.to_string()))?;
            let hash = crate::credentials::hash_password(&password)
                .map_err(|e| DemoError::Broker(e.to_string()))?;
            store.provision_device(&d.id, &hash, now).await?;
            passwords.insert(d.id.clone(), password);
        }
    }
    Ok(passwords)
}

/// The demo's care units and staff (printed at start). The passwords are
/// for this demo on this machine only.
pub const DEMO_LOGINS: [(&str, &str, Role, &str); 4] = [
    (
        "sjukskoterska",
        "Sara Sjuksköterska",
        Role::Nurse,
        "vc-norrby",
    ),
    ("lakare", "Lars Läkare", Role::Physician, "vc-norrby"),
    (
        "hemtjanst",
        "Hanna Hemtjänst",
        Role::Nurse,
        "hemtjanst-norrby",
    ),
    ("admin", "Alva Administratör", Role::Admin, "vc-norrby"),
];
pub const DEMO_PASSWORD: &str = "vaka-demo-2026";

/// A vårdcentral responsible for everyone's clinical care, and a municipal
/// home-care unit for the elderly at home (their dispensers and falls).
async fn seed_staff(store: &Store, roster: &vaka_sim::Roster) -> Result<(), StoreError> {
    let now = UnixMillis::now();
    for (id, name, kind) in [
        ("vc-norrby", "Norrby vårdcentral", UnitKind::Region),
        (
            "hemtjanst-norrby",
            "Hemtjänsten Norrby",
            UnitKind::Municipality,
        ),
    ] {
        let unit = CareUnit {
            unit_id: id.into(),
            name: name.into(),
            kind: kind.as_str().into(),
        };
        match store.create_care_unit(&unit, now).await {
            Ok(_) | Err(StoreError::Conflict(_)) => {}
            Err(e) => return Err(e),
        }
    }
    let hash =
        crate::passwords::hash(DEMO_PASSWORD).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    for (username, name, role, unit) in DEMO_LOGINS {
        let units = if role == Role::Admin {
            vec![unit.to_owned(), "hemtjanst-norrby".to_owned()]
        } else {
            vec![unit.to_owned()]
        };
        let staff = NewStaff {
            staff_id: username,
            username,
            display_name: name,
            role,
            password_hash: Some(hash.clone()),
            units: &units,
        };
        match store.create_staff(&staff, now).await {
            Ok(_) | Err(StoreError::Conflict(_)) => {}
            Err(e) => return Err(e),
        }
    }
    for p in &roster.patients {
        store.enrol(&p.id, "vc-norrby", now).await?;
        if p.program.as_str() == "elderly_at_home" {
            store.enrol(&p.id, "hemtjanst-norrby", now).await?;
            store.assign("hemtjanst", &p.id, now).await?;
        }
    }
    for p in roster.patients.iter().take(crate::http::MAX_ASSIGNED) {
        store.assign("sjukskoterska", &p.id, now).await?;
    }
    Ok(())
}
