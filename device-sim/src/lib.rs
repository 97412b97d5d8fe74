//! # vaka-sim
//!
//! Simulated home-monitoring devices for vaka: N patients with seeded,
//! reproducible physiology, each device its own MQTT client speaking the
//! protocol of ARCHITECTURE §2. `vaka demo` runs it in-process; the
//! `vaka-sim` binary runs it against any broker.
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! let roster = vaka_sim::roster(42, 50);
//! let shutdown = tokio_util::sync::CancellationToken::new();
//! let config = vaka_sim::SimConfig::default(); // mqtt://127.0.0.1:1883, vaka/v1
//! let report = vaka_sim::run(&roster, config, shutdown.clone()).await?;
//! println!("published {}", report.published);
//! # Ok(()) }
//! ```
//!
//! Payloads are generated apart from MQTT, purely, so they can be tested and
//! replayed: [`history`] gives the days before a run, [`Schedule`] the live
//! messages after its start, both as [`Message`]s; the same seed gives the
//! same bytes.
//!
//! ## Layout
//!
//! - [`roster`](mod@roster): who is simulated: [`Program`], [`SimPatient`],
//!   [`SimDevice`], the scripted [`Episode`]s, invented names.
//! - `physiology`: bodies and habits: daily weights with fluid retention, BP
//!   with white-coat spikes and a crisis, doses taken, missed and refilled.
//! - [`ctg`]: real CTU-UHB recordings (embedded) replayed as 4 Hz sessions.
//! - [`devices`]: what each device says, as SenML built with the gateway's
//!   `PackBuilder`; the commands a device understands and its answers.
//! - [`schedule`]: per-device tracks merged into one time-ordered schedule;
//!   the history before a run.
//! - `mqtt`: one MQTT client per device, the backfill, the live loop,
//!   `remeasure` replies, clean shutdown.
//! - [`register`]: registering the roster with the hub's HTTP API.
//! - [`load`]: load mode: thousands of devices at a target rate, and an
//!   exact count of what was stored and alerted, with latency percentiles.
//! - [`baseline`]: the raw broker and raw database figures that the load
//!   benchmark compares vaka with.
//! - `random`, `localtime`: derived seeded generators; local calendar days.

mod localtime;
mod mqtt;
mod physiology;
mod random;

pub mod baseline;
pub mod ctg;
pub mod devices;
pub mod load;
pub mod register;
pub mod roster;
pub mod schedule;

use std::collections::BTreeMap;
use std::time::Duration;

pub use devices::{Command, Message};
pub use mqtt::{Error, run_with};
pub use roster::{Episode, Program, Roster, SimDevice, SimPatient, roster};
pub use schedule::{Schedule, history};
pub use vaka_gateway::model::DeviceKind;

/// Where and how a run connects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimConfig {
    /// `mqtt://host:port` (or `tcp://`), optionally with `user:password@`.
    /// Plain TCP only; a `?client_id=…` is ignored, every device has its own.
    pub mqtt_url: String,
    /// The topic root, e.g. `vaka/v1`.
    pub topic_root: String,
    /// The run's seed, mixed into what the run itself draws (the readings
    /// taken in answer to commands). Everything scheduled follows the roster,
    /// which carries the seed it was made with: pass the same seed to
    /// [`roster()`].
    pub seed: u64,
    /// Days of past readings to publish at the start.
    pub history_days: u32,
    /// MQTT client ids are `{client_prefix}-{device id}`.
    pub client_prefix: String,
    /// Per-device passwords (device id → password): a device listed here
    /// logs in as itself (username = device id), as a real device with its
    /// own credentials (`vaka device provision`) does; the others use the
    /// URL's `user:password`, if any.
    pub credentials: std::collections::HashMap<String, String>,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            mqtt_url: "mqtt://127.0.0.1:1883".into(),
            topic_root: "vaka/v1".into(),
            seed: 42,
            history_days: 14,
            client_prefix: "vaka-sim".into(),
            credentials: Default::default(),
        }
    }
}

/// Pacing of a run. [`run`] uses the defaults; tests shorten them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Timing {
    /// How long after a `remeasure` the cuff publishes the new reading
    /// (a person re-seating the cuff and sitting still: about a minute).
    pub remeasure_delay: Duration,
    /// How long to wait for every device's first connection.
    pub connect_timeout: Duration,
    /// At most this many history messages a second (0: no limit). The
    /// broker acknowledges far faster than the hub commits (ARCHITECTURE §1:
    /// ~2.4k msg/s per transaction, more with group commit), and what the
    /// broker cannot hand on it queues for the gateway only up to its
    /// `max_queued_messages` (1000 by default in Mosquitto), then drops.
    pub history_rate: u32,
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            remeasure_delay: Duration::from_secs(60),
            connect_timeout: Duration::from_secs(15),
            history_rate: 1000,
        }
    }
}

/// What a run published.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SimReport {
    /// Messages handed to the MQTT clients (history, live, replies, status).
    pub published: u64,
    /// Of those, acknowledged by the broker (QoS 1 PUBACK).
    pub acked: u64,
    /// Messages of the history backfill.
    pub history: u64,
    /// Readings sent in answer to `remeasure`.
    pub replies: u64,
    /// Messages published, by device kind.
    pub by_kind: BTreeMap<DeviceKind, u64>,
}

/// Connects every device of `roster` (each its own MQTT client with its own
/// client id and a retained last will on its status topic), publishes each
/// one's retained online status, backfills `history_days` of history, then
/// runs live until `shutdown` is cancelled, and disconnects cleanly.
///
/// Fails if the URL or topic root is invalid or a device cannot connect.
pub async fn run(
    roster: &Roster,
    config: SimConfig,
    shutdown: tokio_util::sync::CancellationToken,
) -> anyhow::Result<SimReport> {
    Ok(run_with(roster, config, Timing::default(), shutdown).await?)
}
