//! # vaka-hub
//!
//! The hot path of vaka and the `vaka` binary: one process that runs the
//! gateway (MQTT intake), the rules engine and the HTTP API.
//!
//! ## Layout
//!
//! - [`store`]: PostgreSQL (TimescaleDB when present) and SQLite behind one
//!   API; migrations in `migrations/{pg,sqlite}`.
//! - [`ingest`]: the gateway's sink: file messages under patients or in
//!   quarantine, commit, pass new records to the engine.
//! - [`engine`]: per-patient windows and rules (pure), and the engine task
//!   that owns them; [`alerts`]: the alert lifecycle (pure).
//! - [`http`]: the API, websocket, health and metrics.
//! - [`demo`]: `vaka demo`, with an embedded broker and the simulator.
//! - [`run`]: wires the tasks together and shuts them down in order.

pub mod access;
pub mod alerts;
pub mod board;
pub mod consistency;
pub mod credentials;
pub mod demo;
pub mod engine;
pub mod guard;
pub mod http;
pub mod ingest;
pub mod live;
pub mod metrics;
pub mod news2;
pub mod passwords;
pub mod plans;
pub mod replay;
pub mod store;
pub mod tls;

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{error, info, warn};
use vaka_gateway::validate::Limits;
use vaka_gateway::{BatchConfig, Gateway, GatewayConfig, MqttConfig, TopicRoot};

use engine::clock::{Clock, SystemClock};
use engine::task::{EngineDeps, EngineTask};
use store::{Store, StoreError};

/// How the hub runs.
#[derive(Debug, Clone)]
pub struct HubConfig {
    pub mqtt: MqttConfig,
    pub topic_root: TopicRoot,
    pub api_token: String,
    pub limits: Limits,
    pub batch: BatchConfig,
    /// Per-device message rate (the gateway's token buckets).
    pub rate: vaka_gateway::RateLimit,
    /// Serve HTTPS with this configuration instead of plain HTTP.
    pub https: Option<Arc<rustls::ServerConfig>>,
    /// Escalation and snooze limits of alerts.
    pub policy: alerts::Policy,
    /// Staff logins: lockout, session length, cookie flags.
    pub login: http::login::LoginPolicy,
}

#[derive(Debug, thiserror::Error)]
pub enum HubError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Gateway(#[from] vaka_gateway::Error),
    #[error("HTTP server: {0}")]
    Http(#[from] std::io::Error),
}

/// Runs gateway, engine and HTTP until `shutdown` is cancelled, then stops
/// them in order: HTTP and MQTT intake first (the batch in hand is
/// committed and acknowledged), then the engine (it evaluates what was
/// committed), then the database pool.
pub async fn run(
    config: HubConfig,
    store: Store,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> Result<(), HubError> {
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let metrics = metrics::Metrics::default();
    let registry = Arc::new(metrics.registry());

    let mut gateway_config = GatewayConfig::new(config.mqtt.clone(), config.topic_root.clone());
    gateway_config.limits = config.limits.clone();
    gateway_config.batch = config.batch.clone();
    gateway_config.rate = config.rate.clone();
    let (gateway, gateway_handle) = Gateway::new(gateway_config, metrics.gateway.clone())?;

    let (engine_tx, engine_rx) = mpsc::channel(1024);
    let live = live::Live::default();
    let engine = EngineTask::start(
        EngineDeps {
            store: store.clone(),
            clock: clock.clone(),
            live: live.clone(),
            gateway: Some(gateway_handle.clone()),
            metrics: metrics.clone(),
            policy: config.policy.clone(),
        },
        engine_rx,
    )
    .await?;

    let app = http::router(http::AppState {
        store: store.clone(),
        api_token: config.api_token.clone().into(),
        engine: engine_tx.clone(),
        live,
        broker: gateway_handle.connection(),
        registry,
        clock,
        login: config.login.clone(),
    });

    let intake_stop = CancellationToken::new();
    let engine_stop = CancellationToken::new();
    let intake = TaskTracker::new();
    let ingest = ingest::Ingest::new(store.clone(), engine_tx, config.topic_root.clone());
    intake.spawn(gateway.run(ingest, intake_stop.clone()));
    let http_stop = intake_stop.clone();
    let https = config.https.clone();
    let http = intake.spawn(async move {
        match https {
            Some(tls) => tls::serve(listener, tls, app, http_stop).await,
            None => http::serve(listener, app, http_stop).await,
        }
    });
    intake.spawn(maintain(
        store.clone(),
        metrics.clone(),
        intake_stop.clone(),
    ));
    intake.close();
    let engine_task = tokio::spawn(engine.run(engine_stop.clone()));

    info!(topic_root = %config.topic_root.as_str(), backend = store.backend(), "vaka is running");
    tokio::select! {
        _ = shutdown.cancelled() => info!("shutting down"),
        result = http_failed(http) => {
            error!("the HTTP server stopped unexpectedly");
            intake_stop.cancel();
            intake.wait().await;
            engine_stop.cancel();
            let _ = engine_task.await;
            store.close().await;
            return result;
        }
    }
    intake_stop.cancel();
    intake.wait().await;
    engine_stop.cancel();
    if engine_task.await.is_err() {
        warn!("the engine task ended abnormally");
    }
    store.close().await;
    info!("stopped");
    Ok(())
}

async fn http_failed(handle: tokio::task::JoinHandle<std::io::Result<()>>) -> Result<(), HubError> {
    match handle.await {
        Ok(Ok(())) => std::future::pending().await,
        Ok(Err(e)) => Err(HubError::Http(e)),
        Err(_) => Err(HubError::Http(std::io::Error::other("HTTP task panicked"))),
    }
}

/// Hourly upkeep: monthly partitions ahead of time, and a look at
/// TimescaleDB's background jobs.
async fn maintain(store: Store, metrics: metrics::Metrics, stop: CancellationToken) {
    loop {
        if let Err(e) = store.maintain().await {
            warn!(error = %e, "database upkeep failed; retrying in an hour");
        }
        match store.failed_timescale_jobs().await {
            Ok(failed) => {
                let failed = failed.unwrap_or(-1);
                if failed > 0 {
                    warn!(
                        failed,
                        "TimescaleDB jobs failed; see timescaledb_information.job_stats"
                    );
                }
                metrics.engine.timescale_failed_jobs.set(failed);
            }
            Err(e) => warn!(error = %e, "could not read TimescaleDB job stats"),
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(3600)) => {}
        }
    }
}
