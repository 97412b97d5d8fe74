//! The alert lifecycle, pure: [`AlertBook`] turns the engine's findings and
//! the nurses' actions into [`Change`]s that the engine task then stores
//! and broadcasts.
//!
//! `open → acknowledged → resolved(outcome, note)`; medium and low alerts may
//! be snoozed (with a reason, for at most 24 h, at most 3 times), high ones
//! never. An open alert nobody acknowledges escalates to the next level of
//! staff (high after 5 min, medium after 30 min, configurable), up to level
//! 2. Self-clearing alerts (technical, missing data) are resolved by the
//! system when their condition clears. At most one active alert per
//! patient + rule (+ device for technical rules): a repeat updates it
//! (`count`, last reading) instead of making noise.
//!
//! Idempotence: every alert remembers the data time of its latest triggering
//! reading. A finding whose latest reading is not newer than that of the
//! latest alert of its key has been filed already (this is how a restart's
//! replay, or a redelivery, raises nothing twice).

use std::collections::HashMap;

use serde::Serialize;
use vaka_gateway::UnixMillis;

use crate::engine::rules::{Category, Decision, Evidence, Finding, RuleId, Severity, wire_enum};

wire_enum! {
    AlertState {
        Open => "open",
        Acknowledged => "acknowledged",
        Snoozed => "snoozed",
        Resolved => "resolved",
    }
}

impl AlertState {
    pub fn is_active(self) -> bool {
        self != AlertState::Resolved
    }
}

/// One alert, as stored and as sent to the dashboard.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Alert {
    /// Assigned by the store when the alert is first saved.
    pub alert_id: Option<i64>,
    pub patient_id: Option<String>,
    pub device_id: Option<String>,
    /// For `missing_measurement`: the scheduled measurement that is absent
    /// (one alert per measurement).
    pub measurement: Option<String>,
    pub rule: RuleId,
    pub category: Category,
    pub severity: Severity,
    pub state: AlertState,
    pub confirmed: Option<bool>,
    pub plan_version: i32,
    pub explanation: String,
    pub threshold: String,
    pub readings: Vec<Evidence>,
    pub count: i32,
    #[serde(serialize_with = "ser_time")]
    pub first_reading_at: UnixMillis,
    #[serde(serialize_with = "ser_time")]
    pub last_reading_at: UnixMillis,
    #[serde(serialize_with = "ser_time")]
    pub opened_at: UnixMillis,
    #[serde(serialize_with = "ser_time")]
    pub updated_at: UnixMillis,
    #[serde(serialize_with = "ser_opt_time")]
    pub acknowledged_at: Option<UnixMillis>,
    pub acknowledged_by: Option<String>,
    #[serde(serialize_with = "ser_opt_time")]
    pub snoozed_until: Option<UnixMillis>,
    #[serde(serialize_with = "ser_opt_time")]
    pub resolved_at: Option<UnixMillis>,
    pub resolved_by: Option<String>,
    pub outcome: Option<String>,
    pub note: Option<String>,
    /// 0: the nurse responsible; 1: the nurse in charge; 2: the physician.
    pub escalation_level: i32,
    #[serde(serialize_with = "ser_opt_time")]
    pub escalated_at: Option<UnixMillis>,
    /// Since when the alert waits for someone (opened, or back from snooze).
    #[serde(serialize_with = "ser_time")]
    pub attention_since: UnixMillis,
    pub snooze_reason: Option<String>,
    pub snooze_count: i32,
    /// Bumped on every change, so a client can drop stale updates.
    pub version: i32,
}

/// RFC 3339 in UTC with milliseconds.
pub fn rfc3339(t: UnixMillis) -> String {
    chrono::DateTime::from_timestamp_millis(t.0)
        .map(|dt| dt.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_default()
}

/// Serde for a [`UnixMillis`] as an RFC 3339 string.
pub mod rfc3339 {
    use serde::{Deserialize, Deserializer, Serializer};
    use vaka_gateway::UnixMillis;

    pub fn serialize<S: Serializer>(t: &UnixMillis, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::rfc3339(*t))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<UnixMillis, D::Error> {
        let text = String::deserialize(d)?;
        chrono::DateTime::parse_from_rfc3339(&text)
            .map(|t| UnixMillis(t.timestamp_millis()))
            .map_err(serde::de::Error::custom)
    }
}

fn ser_time<S: serde::Serializer>(t: &UnixMillis, s: S) -> Result<S::Ok, S::Error> {
    rfc3339::serialize(t, s)
}

fn ser_opt_time<S: serde::Serializer>(t: &Option<UnixMillis>, s: S) -> Result<S::Ok, S::Error> {
    match t {
        Some(t) => s.serialize_str(&rfc3339(*t)),
        None => s.serialize_none(),
    }
}

/// Readings kept on one alert (the first ones and the latest ones).
const MAX_READINGS: usize = 20;

/// Who did what to an alert, for `alert_history`.
#[derive(Debug, Clone, PartialEq)]
pub struct Transition {
    pub action: &'static str,
    pub from_state: Option<AlertState>,
    pub to_state: AlertState,
    pub actor: String,
    pub note: Option<String>,
    pub at: UnixMillis,
}

/// A change to store and broadcast.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    pub alert: Alert,
    pub transition: Transition,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ActionError {
    #[error("no such alert")]
    NotFound,
    #[error("a high alert cannot be snoozed")]
    NotSnoozable,
    #[error("the alert is already resolved")]
    AlreadyResolved,
    #[error("the alert is already acknowledged")]
    AlreadyAcknowledged,
    #[error("invalid request: {0}")]
    Invalid(String),
}

/// The actor name for changes the system makes itself.
pub const SYSTEM: &str = "system";

/// How alerts escalate and how long they may be snoozed.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    pub escalate_high_after_ms: i64,
    pub escalate_medium_after_ms: i64,
    pub max_escalation_level: i32,
    pub max_snooze_ms: i64,
    pub max_snoozes: i32,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            escalate_high_after_ms: 5 * UnixMillis::MINUTE,
            escalate_medium_after_ms: 30 * UnixMillis::MINUTE,
            max_escalation_level: 2,
            max_snooze_ms: 24 * UnixMillis::HOUR,
            max_snoozes: 3,
        }
    }
}

impl Policy {
    fn escalation_interval(&self, severity: Severity) -> Option<i64> {
        match severity {
            Severity::High => Some(self.escalate_high_after_ms),
            Severity::Medium => Some(self.escalate_medium_after_ms),
            Severity::Low => None,
        }
    }

    /// When an open alert next escalates, if it does.
    fn next_escalation(&self, a: &Alert) -> Option<UnixMillis> {
        if a.state != AlertState::Open || a.escalation_level >= self.max_escalation_level {
            return None;
        }
        let every = self.escalation_interval(a.severity)?;
        Some(
            a.attention_since
                .plus_millis(every * i64::from(a.escalation_level + 1)),
        )
    }
}

/// Who an escalation level reaches, in Swedish.
fn level_name(level: i32) -> &'static str {
    match level {
        0 => "ansvarig sjuksköterska",
        1 => "arbetsledande sjuksköterska",
        _ => "jourhavande läkare",
    }
}

/// The latest alert of every patient + rule (+ device).
#[derive(Debug, Default)]
pub struct AlertBook {
    policy: Policy,
    /// patient id ("" for none) → alerts of that patient, one per (rule, device).
    by_patient: HashMap<String, Vec<Alert>>,
    /// alert id → patient id, for the nurses' actions.
    by_id: HashMap<i64, String>,
    /// patient id → the data-time spans of earlier alerts of each key (all
    /// but the latest): a finding inside one was filed before. This is
    /// what lets an older finding open an alert of its own after a later
    /// alert of its key (a missed dose uploaded late), while a rebuild's
    /// replay of an old finding raises nothing twice.
    earlier: HashMap<String, Vec<Span>>,
}

/// The data-time span of an earlier alert of a key.
#[derive(Debug, Clone, PartialEq)]
pub struct Span {
    pub patient_id: Option<String>,
    pub rule: RuleId,
    pub device_id: Option<String>,
    pub measurement: Option<String>,
    pub first_reading_at: UnixMillis,
    pub last_reading_at: UnixMillis,
}

impl Span {
    fn of(a: &Alert) -> Span {
        Span {
            patient_id: a.patient_id.clone(),
            rule: a.rule,
            device_id: a.device_id.clone(),
            measurement: a.measurement.clone(),
            first_reading_at: a.first_reading_at,
            last_reading_at: a.last_reading_at,
        }
    }

    fn key(&self) -> Key<'_> {
        Key::new(
            self.patient_id.as_deref(),
            self.rule,
            self.device_id.as_deref(),
            self.measurement.as_deref(),
        )
    }

    fn holds(&self, key: Key<'_>, t: UnixMillis) -> bool {
        self.key() == key && self.first_reading_at <= t && t <= self.last_reading_at
    }
}

/// What tells alerts apart: at most one is active per key.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Key<'a> {
    patient_id: Option<&'a str>,
    rule: RuleId,
    /// Only for per-device (technical) rules.
    device_id: Option<&'a str>,
    /// Only for `missing_measurement`.
    measurement: Option<&'a str>,
}

impl<'a> Key<'a> {
    fn new(
        patient_id: Option<&'a str>,
        rule: RuleId,
        device_id: Option<&'a str>,
        measurement: Option<&'a str>,
    ) -> Key<'a> {
        Key {
            patient_id,
            rule,
            device_id: device_id.filter(|_| rule.per_device()),
            measurement: measurement.filter(|_| rule == RuleId::MissingMeasurement),
        }
    }

    fn of(a: &'a Alert) -> Key<'a> {
        Key::new(
            a.patient_id.as_deref(),
            a.rule,
            a.device_id.as_deref(),
            a.measurement.as_deref(),
        )
    }

    /// Whether `a` is of this key (alerts are kept per patient already).
    fn is(&self, a: &Alert) -> bool {
        Key {
            patient_id: self.patient_id,
            ..Key::of(a)
        } == *self
    }
}

fn patient_key(patient_id: Option<&str>) -> &str {
    patient_id.unwrap_or("")
}

impl AlertBook {
    /// Builds the book from the latest stored alert of each key.
    pub fn load(latest: impl IntoIterator<Item = Alert>, policy: Policy) -> AlertBook {
        let mut book = AlertBook {
            policy,
            ..AlertBook::default()
        };
        for a in latest {
            book.put(a);
        }
        book
    }

    /// Remembers the spans of earlier alerts (from the store, for the
    /// window a rebuild replays).
    pub fn remember(&mut self, spans: impl IntoIterator<Item = Span>) {
        for span in spans {
            // The latest alert of its key is judged by itself.
            if self.latest(span.key()).is_some_and(|a| {
                a.first_reading_at == span.first_reading_at
                    && a.last_reading_at == span.last_reading_at
            }) {
                continue;
            }
            let patient = patient_key(span.patient_id.as_deref()).to_owned();
            let earlier = self.earlier.entry(patient).or_default();
            if !earlier.contains(&span) {
                earlier.push(span);
            }
        }
    }

    /// Whether an earlier alert of `key` spans data time `t`.
    fn filed_earlier(&self, key: Key<'_>, t: UnixMillis) -> bool {
        self.earlier
            .get(patient_key(key.patient_id))
            .is_some_and(|spans| spans.iter().any(|s| s.holds(key, t)))
    }

    fn put(&mut self, alert: Alert) {
        let key = patient_key(alert.patient_id.as_deref()).to_owned();
        if let Some(id) = alert.alert_id {
            self.by_id.insert(id, key.clone());
        }
        let alerts = self.by_patient.entry(key.clone()).or_default();
        let displaced = match alerts.iter_mut().find(|a| Key::of(&alert).is(a)) {
            Some(slot) => Some(std::mem::replace(slot, alert)),
            None => {
                alerts.push(alert);
                None
            }
        };
        if let Some(old) = displaced {
            self.earlier.entry(key).or_default().push(Span::of(&old));
        }
    }

    fn latest(&self, key: Key<'_>) -> Option<&Alert> {
        self.by_patient
            .get(patient_key(key.patient_id))?
            .iter()
            .find(|a| key.is(a))
    }

    fn latest_mut(&mut self, key: Key<'_>) -> Option<&mut Alert> {
        self.by_patient
            .get_mut(patient_key(key.patient_id))?
            .iter_mut()
            .find(|a| key.is(a))
    }

    /// Whether the patient has an active alert of `rule` (for `device`),
    /// whatever its measurement.
    pub fn is_active(
        &self,
        patient_id: Option<&str>,
        rule: RuleId,
        device_id: Option<&str>,
    ) -> bool {
        self.by_patient
            .get(patient_key(patient_id))
            .is_some_and(|alerts| {
                alerts.iter().any(|a| {
                    a.rule == rule && a.device_id.as_deref() == device_id && a.state.is_active()
                })
            })
    }

    /// Every active alert.
    pub fn active(&self) -> impl Iterator<Item = &Alert> {
        self.by_patient
            .values()
            .flatten()
            .filter(|a| a.state.is_active())
    }

    /// When (data time) the patient's active alert of `rule` began.
    pub fn active_since(&self, patient_id: &str, rule: RuleId) -> Option<UnixMillis> {
        self.latest(Key::new(Some(patient_id), rule, None, None))
            .filter(|a| a.state.is_active())
            .map(|a| a.first_reading_at)
    }

    /// The latest alert of each key of one patient, active or not.
    pub fn patient_alerts(&self, patient_id: &str) -> impl Iterator<Item = &Alert> {
        self.by_patient.get(patient_id).into_iter().flatten()
    }

    /// Records the id the store gave a newly opened alert.
    pub fn set_id(&mut self, alert: &Alert, id: i64) {
        let p = alert.patient_id.clone();
        if let Some(a) = self.latest_mut(Key::of(alert)) {
            a.alert_id = Some(id);
            self.by_id.insert(id, patient_key(p.as_deref()).to_owned());
        }
    }

    /// Applies an engine decision. `None`: nothing to change (already filed,
    /// or a withdrawal of an alert that is no longer active).
    pub fn apply(&mut self, decision: &Decision, now: UnixMillis) -> Option<Change> {
        match decision {
            Decision::Raise(f) => self.raise(f, now),
            Decision::Withdraw {
                rule,
                patient_id,
                measurement,
                trigger,
                reason,
            } => {
                let key = Key::new(Some(patient_id), *rule, None, measurement.as_deref());
                self.withdraw(key, *trigger, reason, now)
            }
            Decision::Clear {
                rule,
                patient_id,
                device_id,
                measurement,
                reason,
                at,
            } => {
                let key = Key::new(
                    Some(patient_id),
                    *rule,
                    device_id.as_deref(),
                    measurement.as_deref(),
                );
                self.clear(key, reason, *at, now)
            }
            Decision::Command { .. } | Decision::CtgSession { .. } => None,
        }
    }

    fn raise(&mut self, f: &Finding, now: UnixMillis) -> Option<Change> {
        let key = Key::new(
            f.patient_id.as_deref(),
            f.rule,
            f.device_id.as_deref(),
            f.measurement.as_deref(),
        );
        let device = key.device_id;
        if self.filed_earlier(key, f.last_reading_at) {
            return None;
        }
        let latest = self.latest(key);
        // Older than the latest alert of its key: filed already if that
        // alert spans it or is still active; otherwise (an older event
        // that arrived late) it opens an alert of its own.
        let older = latest.is_some_and(|a| {
            f.last_reading_at <= a.last_reading_at
                && (a.state.is_active() || a.first_reading_at <= f.last_reading_at)
        });
        if older {
            // Filed already, or older data that arrived late. What older
            // data may still do to an active alert: confirm it (a repeat
            // that arrived after the alert was raised), and add its
            // readings (a dangerous reading, a missed dose, that arrived
            // after a later one). Both are monotone, so this stays
            // idempotent; a rebuild's replay of readings of earlier
            // episodes stops at `filed_earlier` above.
            let a = self.latest_mut(key).filter(|a| a.state.is_active())?;
            let confirms = a.confirmed == Some(false) && f.confirmed == Some(true);
            let adds = a.readings.len() < MAX_READINGS
                && f.evidence.iter().any(|e| !a.readings.contains(e));
            if !confirms && !adds {
                return None;
            }
            if confirms {
                a.confirmed = Some(true);
                a.explanation = f.explanation.clone();
            } else {
                a.count += 1;
            }
            a.first_reading_at = a.first_reading_at.min(f.first_reading_at);
            for e in &f.evidence {
                if !a.readings.contains(e) && a.readings.len() < MAX_READINGS {
                    a.readings.push(e.clone());
                }
            }
            a.readings.sort_by_key(|e| e.time);
            a.updated_at = now;
            a.version += 1;
            return Some(Change {
                alert: a.clone(),
                transition: Transition {
                    action: if confirms { "confirmed" } else { "updated" },
                    from_state: Some(a.state),
                    to_state: a.state,
                    actor: SYSTEM.into(),
                    note: None,
                    at: now,
                },
            });
        }
        if let Some(a) = self.latest_mut(key).filter(|a| a.state.is_active()) {
            a.count += 1;
            a.first_reading_at = a.first_reading_at.min(f.first_reading_at);
            a.last_reading_at = f.last_reading_at;
            a.explanation = f.explanation.clone();
            a.threshold = f.threshold.clone();
            a.confirmed = match (a.confirmed, f.confirmed) {
                (Some(x), Some(y)) => Some(x || y),
                (x, y) => x.or(y),
            };
            for e in &f.evidence {
                if !a.readings.contains(e) {
                    if a.readings.len() >= MAX_READINGS {
                        a.readings.remove(MAX_READINGS / 2);
                    }
                    a.readings.push(e.clone());
                }
            }
            a.updated_at = now;
            a.version += 1;
            let transition = Transition {
                action: "updated",
                from_state: Some(a.state),
                to_state: a.state,
                actor: SYSTEM.into(),
                note: None,
                at: now,
            };
            return Some(Change {
                alert: a.clone(),
                transition,
            });
        }
        let alert = Alert {
            alert_id: None,
            patient_id: f.patient_id.clone(),
            device_id: device.map(str::to_owned),
            measurement: key.measurement.map(str::to_owned),
            rule: f.rule,
            category: f.rule.category(),
            severity: f.rule.severity(),
            state: AlertState::Open,
            confirmed: f.confirmed,
            plan_version: f.plan_version,
            explanation: f.explanation.clone(),
            threshold: f.threshold.clone(),
            readings: f.evidence.clone(),
            count: 1,
            first_reading_at: f.first_reading_at,
            last_reading_at: f.last_reading_at,
            opened_at: now,
            updated_at: now,
            acknowledged_at: None,
            acknowledged_by: None,
            snoozed_until: None,
            resolved_at: None,
            resolved_by: None,
            outcome: None,
            note: None,
            escalation_level: 0,
            escalated_at: None,
            attention_since: now,
            snooze_reason: None,
            snooze_count: 0,
            version: 1,
        };
        self.put(alert.clone());
        Some(Change {
            alert,
            transition: Transition {
                action: "opened",
                from_state: None,
                to_state: AlertState::Open,
                actor: SYSTEM.into(),
                note: None,
                at: now,
            },
        })
    }

    fn withdraw(
        &mut self,
        key: Key<'_>,
        trigger: UnixMillis,
        reason: &str,
        now: UnixMillis,
    ) -> Option<Change> {
        let a = self
            .latest_mut(key)
            .filter(|a| a.state.is_active())
            // Only an alert that this one reading raised alone: one that
            // later readings updated stands on those too.
            .filter(|a| a.first_reading_at == trigger && a.last_reading_at == trigger)?;
        let from = a.state;
        resolve_in_place(a, SYSTEM, "withdrawn", Some(reason), now);
        Some(Change {
            alert: a.clone(),
            transition: Transition {
                action: "withdrawn",
                from_state: Some(from),
                to_state: AlertState::Resolved,
                actor: SYSTEM.into(),
                note: Some(reason.to_owned()),
                at: now,
            },
        })
    }

    /// The condition of a self-clearing alert is gone: the system resolves it.
    fn clear(
        &mut self,
        key: Key<'_>,
        reason: &str,
        at: UnixMillis,
        now: UnixMillis,
    ) -> Option<Change> {
        // An absence names the last reading before it: only a newer one
        // ends it (a rebuild replays the named one too).
        let strict = key.rule == RuleId::MissingMeasurement;
        let a = self
            .latest_mut(key)
            .filter(|a| a.state.is_active())
            .filter(|a| a.last_reading_at < at || (!strict && a.last_reading_at == at))?;
        let from = a.state;
        resolve_in_place(a, SYSTEM, "cleared", Some(reason), now);
        Some(Change {
            alert: a.clone(),
            transition: Transition {
                action: "cleared",
                from_state: Some(from),
                to_state: AlertState::Resolved,
                actor: SYSTEM.into(),
                note: Some(reason.to_owned()),
                at: now,
            },
        })
    }

    /// A nurse puts a medium or low alert aside until `until`.
    pub fn snooze(
        &mut self,
        id: i64,
        actor: &str,
        until: UnixMillis,
        reason: &str,
        now: UnixMillis,
    ) -> Result<Change, ActionError> {
        let policy = self.policy.clone();
        if reason.trim().is_empty() {
            return Err(ActionError::Invalid(
                "a reason is required to snooze".into(),
            ));
        }
        let a = self.by_id_mut(id)?;
        if a.state == AlertState::Resolved {
            return Err(ActionError::AlreadyResolved);
        }
        if a.severity == Severity::High {
            return Err(ActionError::NotSnoozable);
        }
        if until <= now || until.millis_since(now) > policy.max_snooze_ms {
            return Err(ActionError::Invalid(format!(
                "snooze until a time within {} h from now",
                policy.max_snooze_ms / UnixMillis::HOUR
            )));
        }
        if a.snooze_count >= policy.max_snoozes {
            return Err(ActionError::Invalid(format!(
                "the alert has been snoozed {} times already; act on it",
                a.snooze_count
            )));
        }
        let from = a.state;
        a.state = AlertState::Snoozed;
        a.snoozed_until = Some(until);
        a.snooze_reason = Some(reason.to_owned());
        a.snooze_count += 1;
        a.updated_at = now;
        a.version += 1;
        Ok(Change {
            alert: a.clone(),
            transition: Transition {
                action: "snoozed",
                from_state: Some(from),
                to_state: AlertState::Snoozed,
                actor: actor.to_owned(),
                note: Some(reason.to_owned()),
                at: now,
            },
        })
    }

    /// Time-driven changes: snoozes that end, open alerts that escalate.
    pub fn tick(&mut self, now: UnixMillis) -> Vec<Change> {
        let policy = self.policy.clone();
        let mut changes = Vec::new();
        for a in self.by_patient.values_mut().flatten() {
            if a.state == AlertState::Snoozed && a.snoozed_until.is_some_and(|u| u <= now) {
                a.state = AlertState::Open;
                a.snoozed_until = None;
                a.attention_since = now;
                a.updated_at = now;
                a.version += 1;
                changes.push(Change {
                    alert: a.clone(),
                    transition: Transition {
                        action: "unsnoozed",
                        from_state: Some(AlertState::Snoozed),
                        to_state: AlertState::Open,
                        actor: SYSTEM.into(),
                        note: None,
                        at: now,
                    },
                });
            }
            while let Some(at) = policy.next_escalation(a)
                && at <= now
            {
                a.escalation_level += 1;
                a.escalated_at = Some(now);
                a.updated_at = now;
                a.version += 1;
                let note = format!(
                    "Inte kvitterat på {} min: eskalerat till {}.",
                    now.millis_since(a.attention_since) / UnixMillis::MINUTE,
                    level_name(a.escalation_level)
                );
                changes.push(Change {
                    alert: a.clone(),
                    transition: Transition {
                        action: "escalated",
                        from_state: Some(a.state),
                        to_state: a.state,
                        actor: SYSTEM.into(),
                        note: Some(note),
                        at: now,
                    },
                });
            }
        }
        // Deterministic order for storage and the websocket.
        changes.sort_by_key(|c| (c.alert.alert_id, c.alert.version));
        changes
    }

    /// When [`AlertBook::tick`] next has something to do.
    pub fn next_deadline(&self) -> Option<UnixMillis> {
        self.by_patient
            .values()
            .flatten()
            .filter_map(|a| match a.state {
                AlertState::Snoozed => a.snoozed_until,
                _ => self.policy.next_escalation(a),
            })
            .min()
    }

    fn by_id_mut(&mut self, id: i64) -> Result<&mut Alert, ActionError> {
        let patient = self.by_id.get(&id).ok_or(ActionError::NotFound)?.clone();
        self.by_patient
            .get_mut(&patient)
            .and_then(|v| v.iter_mut().find(|a| a.alert_id == Some(id)))
            // Only the latest alert of a key is in the book; older ones are
            // resolved by construction.
            .ok_or(ActionError::AlreadyResolved)
    }

    /// A nurse takes responsibility for the alert.
    pub fn acknowledge(
        &mut self,
        id: i64,
        actor: &str,
        now: UnixMillis,
    ) -> Result<Change, ActionError> {
        let a = self.by_id_mut(id)?;
        let from = a.state;
        match from {
            AlertState::Resolved => return Err(ActionError::AlreadyResolved),
            AlertState::Acknowledged => return Err(ActionError::AlreadyAcknowledged),
            AlertState::Open | AlertState::Snoozed => {}
        }
        a.state = AlertState::Acknowledged;
        a.acknowledged_at = Some(now);
        a.acknowledged_by = Some(actor.to_owned());
        a.snoozed_until = None;
        a.updated_at = now;
        a.version += 1;
        Ok(Change {
            alert: a.clone(),
            transition: Transition {
                action: "acknowledged",
                from_state: Some(from),
                to_state: AlertState::Acknowledged,
                actor: actor.to_owned(),
                note: None,
                at: now,
            },
        })
    }

    /// A nurse closes the alert with an outcome.
    pub fn resolve(
        &mut self,
        id: i64,
        actor: &str,
        outcome: &str,
        note: Option<&str>,
        now: UnixMillis,
    ) -> Result<Change, ActionError> {
        if outcome.trim().is_empty() {
            return Err(ActionError::Invalid("an outcome is required".into()));
        }
        let a = self.by_id_mut(id)?;
        let from = a.state;
        if from == AlertState::Resolved {
            return Err(ActionError::AlreadyResolved);
        }
        resolve_in_place(a, actor, outcome, note, now);
        Ok(Change {
            alert: a.clone(),
            transition: Transition {
                action: "resolved",
                from_state: Some(from),
                to_state: AlertState::Resolved,
                actor: actor.to_owned(),
                note: note.map(str::to_owned),
                at: now,
            },
        })
    }
}

fn resolve_in_place(
    a: &mut Alert,
    actor: &str,
    outcome: &str,
    note: Option<&str>,
    now: UnixMillis,
) {
    a.state = AlertState::Resolved;
    a.resolved_at = Some(now);
    a.resolved_by = Some(actor.to_owned());
    a.outcome = Some(outcome.to_owned());
    a.note = note.map(str::to_owned);
    a.snoozed_until = None;
    a.updated_at = now;
    a.version += 1;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn finding(rule: RuleId, t: i64) -> Decision {
        Decision::Raise(Finding {
            rule,
            patient_id: Some("p1".into()),
            device_id: None,
            measurement: None,
            confirmed: None,
            plan_version: 0,
            explanation: format!("at {t}"),
            threshold: "x".into(),
            evidence: vec![],
            first_reading_at: UnixMillis(t),
            last_reading_at: UnixMillis(t),
        })
    }

    fn opened(book: &mut AlertBook, d: &Decision, id: i64) -> Change {
        let c = book.apply(d, UnixMillis(1)).expect("a change");
        book.set_id(&c.alert, id);
        c
    }

    #[test]
    fn repeats_update_the_active_alert() {
        let mut book = AlertBook::default();
        let c = opened(&mut book, &finding(RuleId::Fall, 100), 1);
        assert_eq!(c.transition.action, "opened");
        let c = book
            .apply(&finding(RuleId::Fall, 200), UnixMillis(2))
            .unwrap();
        assert_eq!(
            (c.transition.action, c.alert.count, c.alert.alert_id),
            ("updated", 2, Some(1))
        );
        assert_eq!(book.active().count(), 1);
    }

    #[test]
    fn a_finding_already_filed_changes_nothing() {
        let mut book = AlertBook::default();
        opened(&mut book, &finding(RuleId::Fall, 100), 1);
        book.apply(&finding(RuleId::Fall, 200), UnixMillis(2))
            .unwrap();
        assert_eq!(book.apply(&finding(RuleId::Fall, 100), UnixMillis(3)), None);
        assert_eq!(book.apply(&finding(RuleId::Fall, 200), UnixMillis(3)), None);
        // Also after resolution: a replay must not reopen.
        book.resolve(1, "nurse", "called_patient", None, UnixMillis(4))
            .unwrap();
        assert_eq!(book.apply(&finding(RuleId::Fall, 150), UnixMillis(5)), None);
        // New data opens a new alert.
        let c = book
            .apply(&finding(RuleId::Fall, 300), UnixMillis(6))
            .unwrap();
        assert_eq!((c.transition.action, c.alert.alert_id), ("opened", None));
    }

    #[test]
    fn lifecycle_rules() {
        let mut book = AlertBook::default();
        opened(&mut book, &finding(RuleId::BpCrisis, 100), 7);
        assert_eq!(
            book.acknowledge(8, "n", UnixMillis(2)).unwrap_err(),
            ActionError::NotFound
        );
        assert_eq!(
            book.acknowledge(7, "n", UnixMillis(2)).unwrap().alert.state,
            AlertState::Acknowledged
        );
        assert_eq!(
            book.acknowledge(7, "n", UnixMillis(3)).unwrap_err(),
            ActionError::AlreadyAcknowledged
        );
        assert!(matches!(
            book.resolve(7, "n", " ", None, UnixMillis(3)),
            Err(ActionError::Invalid(_))
        ));
        let c = book
            .resolve(7, "n", "home_visit", Some("ok"), UnixMillis(4))
            .unwrap();
        assert_eq!((c.alert.state, c.alert.version), (AlertState::Resolved, 3));
        assert_eq!(
            book.resolve(7, "n", "x", None, UnixMillis(5)).unwrap_err(),
            ActionError::AlreadyResolved
        );
    }

    #[test]
    fn an_older_finding_opens_its_own_alert_once() {
        let mut book = AlertBook::default();
        // A later missed dose, raised first and then withdrawn (its dose
        // was taken in time after all) …
        opened(&mut book, &finding(RuleId::MissedDose, 500), 1);
        let w = Decision::Withdraw {
            rule: RuleId::MissedDose,
            patient_id: "p1".into(),
            measurement: None,
            trigger: UnixMillis(500),
            reason: "taken".into(),
        };
        assert!(book.apply(&w, UnixMillis(2)).is_some());
        // … does not hide an earlier dose that arrived late and was missed.
        let c = opened(&mut book, &finding(RuleId::MissedDose, 100), 2);
        assert_eq!(c.transition.action, "opened");
        // Resolved and displaced, the earlier alerts still file their own
        // findings: a rebuild's replay raises neither again.
        book.resolve(2, "nurse", "called", None, UnixMillis(3))
            .expect("resolve");
        opened(&mut book, &finding(RuleId::MissedDose, 900), 3);
        for t in [100, 500] {
            assert_eq!(
                book.apply(&finding(RuleId::MissedDose, t), UnixMillis(4)),
                None
            );
        }
        // The same holds for spans remembered from the store.
        let mut fresh = AlertBook::default();
        fresh.remember(book.earlier.values().flatten().cloned());
        opened(&mut fresh, &finding(RuleId::MissedDose, 900), 3);
        assert_eq!(
            fresh.apply(&finding(RuleId::MissedDose, 100), UnixMillis(5)),
            None
        );
    }

    #[test]
    fn withdrawal_only_of_the_alert_the_trigger_opened() {
        let mut book = AlertBook::default();
        opened(&mut book, &finding(RuleId::Fall, 100), 1);
        let w = |t| Decision::Withdraw {
            rule: RuleId::Fall,
            patient_id: "p1".into(),
            measurement: None,
            trigger: UnixMillis(t),
            reason: "cancelled".into(),
        };
        assert_eq!(book.apply(&w(50), UnixMillis(2)), None);
        let c = book.apply(&w(100), UnixMillis(2)).unwrap();
        assert_eq!(
            (c.alert.outcome.as_deref(), c.alert.state),
            (Some("withdrawn"), AlertState::Resolved)
        );
        assert_eq!(book.apply(&w(100), UnixMillis(3)), None);
    }

    fn medium(t: i64) -> Decision {
        let Decision::Raise(mut f) = finding(RuleId::WeightGain3d, t) else {
            unreachable!()
        };
        f.rule = RuleId::WeightGain3d;
        Decision::Raise(f)
    }

    const MIN: i64 = UnixMillis::MINUTE;

    #[test]
    fn unacknowledged_alerts_escalate_twice_then_stop() {
        let mut book = AlertBook::default();
        let c = book
            .apply(&finding(RuleId::Fall, 100), UnixMillis(0))
            .unwrap();
        book.set_id(&c.alert, 1);
        assert_eq!(book.next_deadline(), Some(UnixMillis(5 * MIN)));
        assert!(book.tick(UnixMillis(5 * MIN - 1)).is_empty());
        let up = book.tick(UnixMillis(5 * MIN));
        assert_eq!(up.len(), 1);
        assert_eq!(
            (up[0].transition.action, up[0].alert.escalation_level),
            ("escalated", 1)
        );
        assert!(
            up[0]
                .transition
                .note
                .as_deref()
                .unwrap_or("")
                .contains("arbetsledande sjuksköterska")
        );
        // Far later: level 2 once, never beyond.
        let up = book.tick(UnixMillis(60 * MIN));
        assert_eq!(up.len(), 1);
        assert_eq!(up[0].alert.escalation_level, 2);
        assert!(book.tick(UnixMillis(120 * MIN)).is_empty());
        assert_eq!(book.next_deadline(), None);
    }

    #[test]
    fn an_acknowledged_alert_does_not_escalate_and_low_never_does() {
        let mut book = AlertBook::default();
        let c = book
            .apply(&finding(RuleId::Fall, 100), UnixMillis(0))
            .unwrap();
        book.set_id(&c.alert, 1);
        book.acknowledge(1, "n", UnixMillis(MIN)).unwrap();
        assert!(book.tick(UnixMillis(60 * MIN)).is_empty());
        let Decision::Raise(mut low) = finding(RuleId::LowBattery, 5) else {
            unreachable!()
        };
        low.device_id = Some("d".into());
        book.apply(&Decision::Raise(low), UnixMillis(0)).unwrap();
        assert!(book.tick(UnixMillis(24 * 60 * MIN)).is_empty());
    }

    #[test]
    fn medium_escalates_after_30_minutes() {
        let mut book = AlertBook::default();
        book.apply(&medium(100), UnixMillis(0)).unwrap();
        assert!(book.tick(UnixMillis(30 * MIN - 1)).is_empty());
        assert_eq!(book.tick(UnixMillis(30 * MIN)).len(), 1);
    }

    #[test]
    fn snoozing_has_rules_and_ends_by_itself() {
        let mut book = AlertBook::default();
        let c = book
            .apply(&finding(RuleId::Fall, 100), UnixMillis(0))
            .unwrap();
        book.set_id(&c.alert, 1);
        assert_eq!(
            book.snooze(1, "n", UnixMillis(60 * MIN), "later", UnixMillis(0))
                .unwrap_err(),
            ActionError::NotSnoozable
        );
        let c = book.apply(&medium(200), UnixMillis(0)).unwrap();
        book.set_id(&c.alert, 2);
        assert!(matches!(
            book.snooze(2, "n", UnixMillis(60 * MIN), " ", UnixMillis(0)),
            Err(ActionError::Invalid(_))
        ));
        assert!(matches!(
            book.snooze(2, "n", UnixMillis(25 * 60 * MIN), "later", UnixMillis(0)),
            Err(ActionError::Invalid(_))
        ));
        let s = book
            .snooze(
                2,
                "n",
                UnixMillis(60 * MIN),
                "patienten ringer själv",
                UnixMillis(0),
            )
            .unwrap();
        assert_eq!(
            (s.alert.state, s.alert.snooze_count),
            (AlertState::Snoozed, 1)
        );
        // Snoozed: no escalation at 30 min; back to open at 60 min, and the
        // escalation clock starts again from then.
        assert!(
            book.tick(UnixMillis(59 * MIN))
                .iter()
                .all(|c| c.alert.alert_id != Some(2))
        );
        let back = book.tick(UnixMillis(60 * MIN));
        let back: Vec<_> = back
            .iter()
            .filter(|c| c.alert.alert_id == Some(2))
            .collect();
        assert_eq!(back[0].transition.action, "unsnoozed");
        assert_eq!(back[0].alert.attention_since, UnixMillis(60 * MIN));
        // At most three snoozes.
        for i in 0..2 {
            let t = UnixMillis((61 + i) * MIN);
            book.snooze(2, "n", t.plus_millis(MIN), "igen", t).unwrap();
            book.tick(t.plus_millis(MIN));
        }
        assert!(matches!(
            book.snooze(2, "n", UnixMillis(100 * MIN), "igen", UnixMillis(70 * MIN)),
            Err(ActionError::Invalid(_))
        ));
    }

    #[test]
    fn self_clearing_alerts_clear() {
        let mut book = AlertBook::default();
        let Decision::Raise(mut f) = finding(RuleId::LowBattery, 5) else {
            unreachable!()
        };
        f.device_id = Some("scale-1".into());
        book.apply(&Decision::Raise(f), UnixMillis(0)).unwrap();
        let clear = |device: &str| Decision::Clear {
            rule: RuleId::LowBattery,
            patient_id: "p1".into(),
            device_id: Some(device.into()),
            measurement: None,
            at: UnixMillis(10),
            reason: "laddat".into(),
        };
        assert_eq!(book.apply(&clear("other"), UnixMillis(1)), None);
        let c = book.apply(&clear("scale-1"), UnixMillis(1)).unwrap();
        assert_eq!(
            (c.transition.action, c.alert.outcome.as_deref()),
            ("cleared", Some("cleared"))
        );
        assert_eq!(book.apply(&clear("scale-1"), UnixMillis(2)), None);
    }
}
