//! The engine task: the one owner of the engine and the alert book.
//!
//! It receives what the ingest committed, evaluates it, stores each alert
//! change (retrying while the database is away: a change is never dropped),
//! broadcasts it to the websocket clients, and sends device commands. The
//! nurses' actions come in on the same channel, so every change to an alert
//! is made by this one task, in order.
//!
//! On start it rebuilds: the latest alert of every patient + rule from the
//! store, then the recent readings and events through the rules. Findings
//! already filed are recognised (see `alerts`), and any that a crash lost
//! between committing a reading and storing its alert are raised now.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};
use vaka_gateway::model::{Content, Event, Metric, Observation};
use vaka_gateway::{DeviceId, GatewayHandle, UnixMillis};

use super::Engine;
use super::clock::Clock;
use super::rules::{Decision, Evidence, Finding, RuleId, local_day_hhmm};
use crate::alerts::{ActionError, Alert, AlertBook, Change, Policy};
use crate::live::Live;
use crate::metrics::Metrics;
use crate::plans::Plan;
use crate::store::{PatientEvent, PatientObservation, PatientStatus, Store, StoreError};

/// How far back the windows are rebuilt on start: weights and blood
/// pressure over the longest window a rule looks at (16 days of first
/// weights), events and status over two days (doses, heartbeats), CTG over
/// the last hour (a session in progress).
const REBUILD_OBSERVATIONS_MS: i64 = 16 * UnixMillis::DAY;
const REBUILD_EVENTS_MS: i64 = 2 * UnixMillis::DAY;
const REBUILD_CTG_MS: i64 = UnixMillis::HOUR;
/// The rebuild reads the store this much at a time.
const REBUILD_SLICE_MS: i64 = 6 * UnixMillis::HOUR;
/// The end of the last slice: 9999-12-31.
const END_OF_TIME: UnixMillis = UnixMillis(253_402_300_799_000);

/// The new records of one committed message.
#[derive(Debug, Clone)]
pub struct Ingested {
    pub patient_id: String,
    pub device_id: String,
    pub arrived: UnixMillis,
    pub content: Content,
}

/// A nurse's action on an alert.
#[derive(Debug, Clone)]
pub enum AlertAction {
    Acknowledge {
        alert_id: i64,
        actor: String,
    },
    Resolve {
        alert_id: i64,
        actor: String,
        outcome: String,
        note: Option<String>,
    },
    Snooze {
        alert_id: i64,
        actor: String,
        until: UnixMillis,
        reason: String,
    },
}

impl AlertAction {
    pub fn alert_id(&self) -> i64 {
        match self {
            AlertAction::Acknowledge { alert_id, .. }
            | AlertAction::Resolve { alert_id, .. }
            | AlertAction::Snooze { alert_id, .. } => *alert_id,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ActionFailure {
    #[error(transparent)]
    Rejected(#[from] ActionError),
    #[error("the alert could not be stored: {0}")]
    Store(#[from] StoreError),
}

pub enum EngineMsg {
    Ingested(Vec<Ingested>),
    /// A fall or help call from a device bound to nobody.
    UnboundAlarm {
        device_id: String,
        events: Vec<Event>,
    },
    /// Devices the gateway began or stopped throttling (`device_flooding`).
    DeviceLimits(Vec<vaka_gateway::LimitReport>),
    /// A patient was created or changed.
    Patient {
        patient_id: String,
        timezone: String,
    },
    /// A patient's plan changed (already stored).
    Plan {
        patient_id: String,
        plan: Arc<Plan>,
    },
    Act {
        action: AlertAction,
        reply: oneshot::Sender<Result<Alert, ActionFailure>>,
    },
}

pub struct EngineTask {
    engine: Engine,
    book: AlertBook,
    store: Store,
    clock: Arc<dyn Clock>,
    rx: mpsc::Receiver<EngineMsg>,
    live: Live,
    gateway: Option<GatewayHandle>,
    metrics: Metrics,
    /// Alert changes made and not yet stored (see `flush`).
    unsaved: Vec<Change>,
}

fn parse_tz(tz: &str) -> chrono_tz::Tz {
    tz.parse().unwrap_or(chrono_tz::Europe::Stockholm)
}

/// What the engine task works with, besides its inbox.
pub struct EngineDeps {
    pub store: Store,
    pub clock: Arc<dyn Clock>,
    pub live: Live,
    pub gateway: Option<GatewayHandle>,
    pub metrics: Metrics,
    pub policy: Policy,
}

impl EngineTask {
    /// Loads patients, plans and alerts and replays recent data through the
    /// rules.
    pub async fn start(
        deps: EngineDeps,
        rx: mpsc::Receiver<EngineMsg>,
    ) -> Result<EngineTask, StoreError> {
        let mut book = AlertBook::load(deps.store.latest_alerts().await?, deps.policy);
        let rebuilt_from = UnixMillis(deps.clock.now().0 - REBUILD_OBSERVATIONS_MS);
        book.remember(deps.store.alert_spans_since(rebuilt_from).await?);
        let mut task = EngineTask {
            engine: Engine::new(),
            book,
            store: deps.store,
            clock: deps.clock,
            rx,
            live: deps.live,
            gateway: deps.gateway,
            metrics: deps.metrics,
            unsaved: Vec::new(),
        };
        let now = task.clock.now();
        let mut plans: HashMap<String, Plan> =
            task.store.current_plans().await?.into_iter().collect();
        let mut out = Vec::new();
        for p in task.store.patients().await? {
            let plan = plans
                .remove(&p.patient_id)
                .unwrap_or_else(|| Plan::template(p.program.as_deref()));
            // Watching starts where the rebuilt history starts.
            let since = UnixMillis(now.0 - REBUILD_OBSERVATIONS_MS).max(p.created_at.into());
            task.engine.add_patient(
                &p.patient_id,
                parse_tz(&p.timezone),
                Arc::new(plan),
                since,
                &task.book,
                &mut out,
            );
        }
        task.apply(out, now, false).await;
        task.flush().await;
        task.rebuild().await?;
        task.metrics
            .engine
            .patients
            .set(task.engine.patient_count() as i64);
        Ok(task)
    }

    /// Replays the stored history through the rules, oldest first, one
    /// time slice at a time: a county's population holds millions of
    /// readings in the rebuilt window, and reading them all at once would
    /// need more memory than the engine itself. Slices partition time, so
    /// the messages run in the same order as they would all at once.
    async fn rebuild(&mut self) -> Result<(), StoreError> {
        let now = self.clock.now();
        let before = self.book.active().count();
        let mut n = 0;
        let mut from = UnixMillis(now.0 - REBUILD_OBSERVATIONS_MS);
        while from <= now {
            let last = from.0 + REBUILD_SLICE_MS > now.0;
            // The last slice also takes readings stamped ahead of our clock.
            let to = if last {
                END_OF_TIME
            } else {
                UnixMillis(from.0 + REBUILD_SLICE_MS)
            };
            let messages = history_between(&self.store, from, to, now).await?;
            n += messages.len();
            self.replay(&messages, now).await;
            from = to;
        }
        self.tick(now, false).await;
        info!(
            messages = n,
            patients = self.engine.patient_count(),
            active_alerts = self.book.active().count(),
            raised_on_rebuild = self.book.active().count().saturating_sub(before),
            "rebuilt the engine from the store"
        );
        Ok(())
    }

    /// Runs stored messages through the rules on a clock that follows the
    /// data, as they ran live: deadlines fall due between the messages they
    /// fell due between.
    async fn replay(&mut self, messages: &[Ingested], now: UnixMillis) {
        let mut out = Vec::new();
        for (i, m) in messages.iter().enumerate() {
            self.engine.replay(
                &m.patient_id,
                &m.device_id,
                &m.content,
                m.arrived,
                &self.book,
                &mut out,
            );
            self.apply(std::mem::take(&mut out), now, false).await;
            if i % 256 == 255 {
                self.flush().await;
            }
        }
        self.flush().await;
    }

    pub async fn run(mut self, shutdown: CancellationToken) {
        loop {
            let next = [self.engine.next_deadline(), self.book.next_deadline()]
                .into_iter()
                .flatten()
                .min();
            let sleep = sleep_until(next, self.clock.now());
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                msg = self.rx.recv() => match msg {
                    Some(msg) => self.handle(msg).await,
                    None => break,
                },
                _ = tokio::time::sleep(sleep) => {}
            }
            self.tick(self.clock.now(), true).await;
        }
        // What the intake committed before it stopped is still evaluated.
        while let Ok(msg) = self.rx.try_recv() {
            self.handle(msg).await;
        }
        info!("engine stopped");
    }

    /// Deadlines of the rules, then the book's (snoozes ending, escalations).
    async fn tick(&mut self, now: UnixMillis, live: bool) {
        let mut out = Vec::new();
        self.engine.tick(now, &self.book, &mut out);
        self.apply(out, now, live).await;
        self.unsaved.extend(self.book.tick(now));
        self.flush().await;
    }

    /// Handles one message; what it changed of the alerts is stored (in one
    /// transaction) and broadcast before the next.
    async fn handle(&mut self, msg: EngineMsg) {
        self.evaluate(msg).await;
        self.flush().await;
    }

    async fn evaluate(&mut self, msg: EngineMsg) {
        let now = self.clock.now();
        match msg {
            EngineMsg::Ingested(messages) => {
                for m in messages {
                    if !self.engine.has_patient(&m.patient_id) {
                        self.learn_patient(&m.patient_id, now).await;
                    }
                    self.live.readings(&m.patient_id, &m.device_id, &m.content);
                    let mut out = Vec::new();
                    self.engine.ingest(
                        &m.patient_id,
                        &m.device_id,
                        &m.content,
                        m.arrived,
                        &self.book,
                        &mut out,
                    );
                    self.apply(out, now, true).await;
                    if carries_fhr(&m.content)
                        && let Some(status) = self.engine.ctg_status(&m.patient_id)
                    {
                        self.live.ctg_status(&m.patient_id, &m.device_id, &status);
                    }
                }
            }
            EngineMsg::UnboundAlarm { device_id, events } => {
                let out = events
                    .iter()
                    .filter(|e| e.kind.is_alarm())
                    .map(|e| Decision::Raise(unbound_alarm(&device_id, e)))
                    .collect();
                self.apply(out, now, true).await;
            }
            EngineMsg::DeviceLimits(reports) => {
                let out = reports
                    .iter()
                    .map(|r| super::rules::device_limits(r, now))
                    .collect();
                self.apply(out, now, true).await;
            }
            EngineMsg::Patient {
                patient_id,
                timezone,
            } => {
                let plan = match self.store.current_plan(&patient_id).await {
                    Ok(Some(p)) => p,
                    _ => Plan::default(),
                };
                let mut out = Vec::new();
                self.engine.add_patient(
                    &patient_id,
                    parse_tz(&timezone),
                    Arc::new(plan),
                    now,
                    &self.book,
                    &mut out,
                );
                self.apply(out, now, true).await;
                self.metrics
                    .engine
                    .patients
                    .set(self.engine.patient_count() as i64);
            }
            EngineMsg::Plan { patient_id, plan } => {
                let mut out = Vec::new();
                if !self.engine.has_patient(&patient_id) {
                    self.learn_patient(&patient_id, now).await;
                }
                self.engine
                    .set_plan(&patient_id, plan, now, &self.book, &mut out);
                self.apply(out, now, true).await;
            }
            EngineMsg::Act { action, reply } => {
                let result = self.act(action, now).await;
                let _ = reply.send(result);
            }
        }
    }

    async fn learn_patient(&mut self, patient_id: &str, now: UnixMillis) {
        let (tz, plan) = match (
            self.store.patient(patient_id).await,
            self.store.current_plan(patient_id).await,
        ) {
            (Ok(Some(p)), Ok(plan)) => (
                parse_tz(&p.timezone),
                plan.unwrap_or_else(|| Plan::template(p.program.as_deref())),
            ),
            (Err(e), _) | (_, Err(e)) => {
                warn!(error = %e, "could not read the patient; watching with the default plan");
                (chrono_tz::Europe::Stockholm, Plan::default())
            }
            _ => (chrono_tz::Europe::Stockholm, Plan::default()),
        };
        let mut out = Vec::new();
        self.engine
            .add_patient(patient_id, tz, Arc::new(plan), now, &self.book, &mut out);
        self.apply(out, now, true).await;
        self.metrics
            .engine
            .patients
            .set(self.engine.patient_count() as i64);
    }

    async fn act(&mut self, action: AlertAction, now: UnixMillis) -> Result<Alert, ActionFailure> {
        let change = match &action {
            AlertAction::Acknowledge { alert_id, actor } => {
                self.book.acknowledge(*alert_id, actor, now)?
            }
            AlertAction::Resolve {
                alert_id,
                actor,
                outcome,
                note,
            } => self
                .book
                .resolve(*alert_id, actor, outcome, note.as_deref(), now)?,
            AlertAction::Snooze {
                alert_id,
                actor,
                until,
                reason,
            } => self.book.snooze(*alert_id, actor, *until, reason, now)?,
        };
        let alert = change.alert.clone();
        self.unsaved.push(change);
        self.flush().await;
        Ok(alert)
    }

    /// Applies decisions: alert changes are stored and broadcast; commands
    /// are sent only when `live` (never while rebuilding).
    async fn apply(&mut self, decisions: Vec<Decision>, now: UnixMillis, live: bool) {
        for d in decisions {
            if let Decision::Command { device_id, json } = &d {
                if live {
                    self.send_command(device_id, json);
                }
                continue;
            }
            if let Decision::CtgSession {
                patient_id,
                device_id,
                summary,
            } = &d
            {
                // A rebuild replays only the last hour of CTG: its summaries
                // would be partial, and the live ones are stored already.
                if live {
                    self.save_ctg_session(patient_id, device_id, summary).await;
                }
                continue;
            }
            if let Some(change) = self.book.apply(&d, now) {
                if change.transition.action == "opened" {
                    self.metrics.opened(change.alert.rule.as_str());
                }
                self.unsaved.push(change);
            }
        }
    }
    async fn save_ctg_session(
        &mut self,
        patient_id: &str,
        device_id: &str,
        summary: &super::ctg::CtgSummary,
    ) {
        let json = serde_json::to_value(summary).unwrap_or_default();
        if let Err(e) = self
            .store
            .save_ctg_session(patient_id, device_id, summary.start, summary.end, &json)
            .await
        {
            warn!(error = %e, "could not store a CTG session summary");
            return;
        }
        self.live.ctg_session(patient_id, device_id, &json);
    }

    fn send_command(&self, device_id: &str, json: &str) {
        let (Some(gateway), Some(device)) = (&self.gateway, DeviceId::parse(device_id)) else {
            return;
        };
        if gateway.send_command(&device, json.as_bytes().to_vec()) {
            self.metrics.engine.commands_sent.inc();
        }
    }

    /// Stores the alert changes made since the last flush, in one
    /// transaction (a batch of readings may change many alerts, and a
    /// commit per change would make the alerts lag behind the readings
    /// under load), retrying while the database is away: a change is never
    /// dropped. Then gives new alerts their ids and broadcasts every change.
    async fn flush(&mut self) {
        if self.unsaved.is_empty() {
            return;
        }
        let changes = std::mem::take(&mut self.unsaved);
        let mut backoff = Duration::from_millis(100);
        let ids = loop {
            match self.store.save_alert_changes(&changes).await {
                Ok(ids) => break ids,
                Err(StoreError::Conflict(_)) => {
                    // One change was refused; store the others one by one.
                    self.flush_one_by_one(changes).await;
                    return;
                }
                Err(e) => {
                    self.metrics.engine.alert_store_failures.inc();
                    warn!(error = %e, changes = changes.len(), retry_in_ms = backoff.as_millis() as u64,
                        "could not store alert changes; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        };
        for (change, id) in changes.into_iter().zip(ids) {
            self.stored(change.alert, id);
        }
    }

    /// Stores changes one at a time, skipping one that the store refuses.
    async fn flush_one_by_one(&mut self, changes: Vec<Change>) {
        // Alerts opened here, by key: a later change of one has no id yet.
        let mut opened: HashMap<(Option<String>, RuleId, Option<String>), i64> = HashMap::new();
        for mut change in changes {
            let a = &change.alert;
            let key = (a.patient_id.clone(), a.rule, a.device_id.clone());
            if a.alert_id.is_none() && change.transition.action != "opened" {
                change.alert.alert_id = opened.get(&key).copied();
            }
            let mut backoff = Duration::from_millis(100);
            loop {
                match self.store.save_alert_change(&change).await {
                    Ok(id) => {
                        opened.insert(key, id);
                        self.stored(change.alert, id);
                        break;
                    }
                    Err(StoreError::Conflict(what)) => {
                        error!(%what, rule = %change.alert.rule, "another writer holds this alert; not stored");
                        break;
                    }
                    Err(e) => {
                        self.metrics.engine.alert_store_failures.inc();
                        warn!(error = %e, retry_in_ms = backoff.as_millis() as u64, "could not store an alert change; retrying");
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_secs(5));
                    }
                }
            }
        }
    }

    /// A change is stored as alert `id`: remember the id, broadcast.
    fn stored(&mut self, mut alert: Alert, id: i64) {
        if alert.alert_id.is_none() {
            self.book.set_id(&alert, id);
            alert.alert_id = Some(id);
        }
        self.metrics.engine.alert_changes.inc();
        self.live.alert(&alert);
    }
}

/// The stored messages in `[from, to)` that the rebuild replays: scalar
/// readings over the whole window, events and status over the last two
/// days, CTG over the last hour.
async fn history_between(
    store: &Store,
    from: UnixMillis,
    to: UnixMillis,
    now: UnixMillis,
) -> Result<Vec<Ingested>, StoreError> {
    let scalar = [
        Metric::Weight,
        Metric::Sys,
        Metric::Dia,
        Metric::Hr,
        Metric::Spo2,
    ];
    let ctg_from = from.max(UnixMillis(now.0 - REBUILD_CTG_MS));
    let events_from = from.max(UnixMillis(now.0 - REBUILD_EVENTS_MS));
    let mut observations = store.observations_between(from, to, &scalar).await?;
    if ctg_from < to {
        observations.extend(
            store
                .observations_between(ctg_from, to, &[Metric::Fhr, Metric::Toco])
                .await?,
        );
    }
    let (events, status) = if events_from < to {
        (
            store.events_between(events_from, to).await?,
            store.status_between(events_from, to).await?,
        )
    } else {
        (Vec::new(), Vec::new())
    };
    Ok(replay_messages(observations, events, status))
}

/// Whether a message carries fetal heart rate (a CTG pack).
fn carries_fhr(content: &Content) -> bool {
    matches!(content, Content::Observations(obs) if obs.iter().any(|o| o.metric == Metric::Fhr))
}

/// How long the engine task sleeps when nothing arrives: until the next
/// deadline, and never more than a minute (so a clock that jumps, or a
/// deadline filed elsewhere, is looked at soon).
fn sleep_until(next: Option<UnixMillis>, now: UnixMillis) -> Duration {
    match next {
        Some(d) => Duration::from_millis(d.millis_since(now).clamp(0, 60_000) as u64),
        None => Duration::from_secs(60),
    }
}

/// The administrators' alarm for a fall or help call from an unbound device.
fn unbound_alarm(device_id: &str, e: &Event) -> Finding {
    let what = if e.kind == vaka_gateway::model::EventKind::Fall {
        "fall"
    } else {
        "larmknapp"
    };
    Finding {
        rule: RuleId::UnboundDeviceAlarm,
        patient_id: None,
        device_id: Some(device_id.to_owned()),
        measurement: None,
        confirmed: None,
        plan_version: 0,
        explanation: format!(
            "Larm ({what}) från enheten {device_id}, som inte är kopplad till någon patient, {}. \
             Någon kan behöva hjälp: ta reda på vem som har enheten och koppla den.",
            local_day_hhmm(e.time, chrono_tz::Europe::Stockholm)
        ),
        threshold: "larm från okopplad enhet".into(),
        evidence: vec![Evidence::event(device_id, e)],
        first_reading_at: e.time,
        last_reading_at: e.time,
    }
}

/// Groups stored rows back into messages (same patient, device and time),
/// in data-time order, the way they would have arrived.
pub fn replay_messages(
    observations: Vec<PatientObservation>,
    events: Vec<PatientEvent>,
    status: Vec<PatientStatus>,
) -> Vec<Ingested> {
    let mut out: Vec<(UnixMillis, Ingested)> = Vec::new();
    let mut last: Option<(UnixMillis, String, String)> = None;
    for o in observations {
        let key = (o.time, o.patient_id, o.device_id);
        let obs = Observation {
            time: o.time,
            metric: o.metric,
            value: o.value,
        };
        if last.as_ref() == Some(&key)
            && let Some((
                _,
                Ingested {
                    content: Content::Observations(v),
                    ..
                },
            )) = out.last_mut()
        {
            v.push(obs);
            continue;
        }
        out.push((
            key.0,
            Ingested {
                patient_id: key.1.clone(),
                device_id: key.2.clone(),
                arrived: key.0,
                content: Content::Observations(vec![obs]),
            },
        ));
        last = Some(key);
    }
    for e in events {
        out.push((
            e.time,
            Ingested {
                patient_id: e.patient_id,
                device_id: e.device_id,
                arrived: e.time,
                content: Content::Events(vec![Event {
                    time: e.time,
                    kind: e.kind,
                    text: e.text,
                }]),
            },
        ));
    }
    for s in status {
        out.push((
            s.report.time,
            Ingested {
                patient_id: s.patient_id,
                device_id: s.device_id,
                arrived: s.report.time,
                content: Content::Status(vec![s.report]),
            },
        ));
    }
    // Stable: observations of the same instant keep their grouping.
    out.sort_by_key(|(t, _)| *t);
    out.into_iter().map(|(_, m)| m).collect()
}

#[cfg(test)]
mod tests {
    //! The engine task's timing on tokio's paused clock: the same sleep
    //! computation and ticking as `EngineTask::run`, over the pure engine
    //! and book (the store's own timeouts do not run on a paused clock).
    //! Absences and escalations happen when the clock passes their
    //! deadline, not before, without the test waiting minutes.

    use std::time::Duration;

    use vaka_gateway::model::{Content, EventKind, Metric, Observation};

    use super::*;
    use crate::engine::clock::TokioClock;
    use crate::engine::rules::testing::apply;

    /// The run loop's timing: sleep until the next deadline, then tick both.
    async fn run(
        clock: TokioClock,
        mut engine: Engine,
        mut book: AlertBook,
        tx: mpsc::UnboundedSender<(String, String)>,
    ) {
        let mut next_id = 1;
        loop {
            let next = [engine.next_deadline(), book.next_deadline()]
                .into_iter()
                .flatten()
                .min();
            tokio::time::sleep(sleep_until(next, clock.now())).await;
            let now = clock.now();
            let mut out = Vec::new();
            engine.tick(now, &book, &mut out);
            apply(&mut book, &mut next_id, &out, now);
            for d in &out {
                if let Decision::Raise(f) = d {
                    let _ = tx.send((f.rule.as_str().to_owned(), "raised".into()));
                }
            }
            for change in book.tick(now) {
                let _ = tx.send((
                    change.alert.rule.as_str().to_owned(),
                    change.transition.action.into(),
                ));
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn an_unrepeated_crisis_a_missed_dose_and_escalation_on_a_paused_clock() {
        let start = UnixMillis(1_796_000_000_000);
        let clock = TokioClock::starting_at(start);
        let mut engine = Engine::new();
        let mut book = AlertBook::default();
        let mut out = Vec::new();
        engine.add_patient(
            "p1",
            chrono_tz::Europe::Stockholm,
            Arc::default(),
            start,
            &book,
            &mut out,
        );
        let bp = Content::Observations(vec![
            Observation {
                time: start,
                metric: Metric::Sys,
                value: 190.0,
            },
            Observation {
                time: start,
                metric: Metric::Dia,
                value: 100.0,
            },
        ]);
        let due = Content::Events(vec![Event {
            time: start,
            kind: EventKind::DoseDue,
            text: Some("d1".into()),
        }]);
        engine.ingest("p1", "bp-1", &bp, start, &book, &mut out);
        engine.ingest("p1", "disp-1", &due, start, &book, &mut out);
        let mut next_id = 100;
        apply(&mut book, &mut next_id, &out, start);
        assert!(
            out.iter().all(|d| !matches!(d, Decision::Raise(_))),
            "nothing raised at once"
        );

        let (tx, mut rx) = mpsc::unbounded_channel();
        let running = tokio::spawn(run(clock, engine, book, tx));
        let expect = async |rx: &mut mpsc::UnboundedReceiver<(String, String)>, after: Duration| {
            tokio::time::advance(after).await;
            tokio::task::yield_now().await;
            let mut got = Vec::new();
            while let Ok(e) = rx.try_recv() {
                got.push(e);
            }
            got
        };
        let pair = |r: &str, a: &str| (r.to_owned(), a.to_owned());
        assert_eq!(
            expect(&mut rx, Duration::from_secs(300)).await,
            [],
            "the crisis waits 5 min for its repeat"
        );
        assert_eq!(
            expect(&mut rx, Duration::from_millis(1)).await,
            [pair("bp_crisis", "raised")]
        );
        // Unacknowledged high: escalated after 5 min, then after 10.
        assert_eq!(
            expect(&mut rx, Duration::from_secs(300)).await,
            [pair("bp_crisis", "escalated")]
        );
        assert_eq!(
            expect(&mut rx, Duration::from_secs(300)).await,
            [pair("bp_crisis", "escalated")]
        );
        // The dose window (60 min) passes at +60 min.
        assert_eq!(
            expect(&mut rx, Duration::from_secs(45 * 60)).await,
            [pair("missed_dose", "raised")]
        );
        // Medium: escalated 30 min after it opened.
        assert_eq!(expect(&mut rx, Duration::from_secs(29 * 60)).await, []);
        assert_eq!(
            expect(&mut rx, Duration::from_secs(60)).await,
            [pair("missed_dose", "escalated")]
        );
        running.abort();
    }
}
