//! A bounded load test: the simulator's load mode (1 000 devices, each its
//! own MQTT client, for about 30 s) against a real `vaka serve` on a fresh
//! PostgreSQL database, through a real Mosquitto. It asserts correctness
//! only: every message stored exactly once, every expected alert on the
//! websocket, none twice. Speed lives in the benchmark (scripts/bench.py).
//!
//! The size and rate can be changed without editing the test:
//! `VAKA_LOAD_DEVICES` (default 1000), `VAKA_LOAD_RATE` (messages a second,
//! default 1000; 0 = as fast as possible), `VAKA_LOAD_SECS` (default 30).
//!
//! It runs its own Mosquitto (see `OwnBroker`, whose queue for the gateway
//! has no limit): a stock one queues at most 1 000 messages for a
//! subscriber that is behind (`max_queued_messages`) and then drops them,
//! so a rate above what the hub commits would turn into loss that is the
//! broker's, not vaka's. This process's open-file limit is raised first (a
//! socket per device, and the broker inherits it).

use std::time::Duration;

use anyhow::Result;
use vaka_sim::load::{LoadConfig, raise_fd_limit};

use crate::support::{Backend, Hub, HubConfig, OwnBroker, TestDb, unique};

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_thousand_devices_for_thirty_seconds_lose_nothing() -> Result<()> {
    let devices: usize = env_or("VAKA_LOAD_DEVICES", 1000);
    let rate: f64 = env_or("VAKA_LOAD_RATE", 1000.0);
    let secs: f64 = env_or("VAKA_LOAD_SECS", 30.0);
    let limit = raise_fd_limit()?;
    anyhow::ensure!(
        limit as usize > devices + 200,
        "the open-file limit ({limit}) is too low for {devices} devices; raise `ulimit -Hn`"
    );

    let broker = OwnBroker::start().await?;
    let db = TestDb::new(Backend::Postgres).await?;
    // The load mode's devices each carry a share of the whole offered load,
    // far more than a real device sends: lift the per-device rate limit,
    // or at other sizes and rates the gateway would refuse the excess as
    // flooding (and this test would count it as lost).
    let mut hub_config = HubConfig::new(&db, &broker.url);
    hub_config.extra = ["--device-rate", "1000000", "--device-burst", "1000000"]
        .map(String::from)
        .to_vec();
    let hub = Hub::start(hub_config).await?;

    let mut config = LoadConfig::new(
        &broker.url,
        &hub.config.topic_root,
        &hub.base,
        &hub.token,
        &db.url,
    );
    config.devices = devices;
    config.rate = (rate > 0.0).then_some(rate);
    config.duration = Duration::from_secs_f64(secs);
    config.run_id = unique("");
    config.drain_timeout = Duration::from_secs(60);
    let report = vaka_sim::load::run(config).await?;
    println!("{report}");

    // The load was real: every device spoke, and some of them fell.
    assert!(report.sent >= devices as u64, "{report}");
    assert!(report.sent_falls > 0, "{report}");
    assert_eq!(
        report.problems(),
        Vec::<String>::new(),
        "hub log:\n{}",
        hub.log_tail()
    );
    // The database agrees with the report to the row.
    assert_eq!(report.stored_rows, report.sent_observations * 2);
    assert_eq!(report.stored_falls, report.sent_falls);
    assert_eq!(report.alerts_received, report.sent_falls);
    Ok(())
}
