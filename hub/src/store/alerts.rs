//! Alerts and their history in the store.

use std::collections::HashMap;

use serde::Serialize;
use sqlx::FromRow;
use vaka_gateway::UnixMillis;

use super::{BeginWrite, DbTime, Result, Store, StoreError, on_pool};
use crate::alerts::{Alert, AlertState, Change, Span};
use crate::engine::rules::{Category, RuleId, Severity};

/// An `alerts` row as stored.
#[derive(Debug, Clone, FromRow)]
pub struct AlertRow {
    pub alert_id: i64,
    pub patient_id: Option<String>,
    pub device_id: Option<String>,
    pub measurement: Option<String>,
    pub rule: String,
    pub category: String,
    pub severity: String,
    pub state: String,
    pub confirmed: Option<bool>,
    pub plan_version: i32,
    pub explanation: String,
    pub threshold: String,
    pub readings: String,
    pub count: i32,
    pub first_reading_at: DbTime,
    pub last_reading_at: DbTime,
    pub opened_at: DbTime,
    pub updated_at: DbTime,
    pub acknowledged_at: Option<DbTime>,
    pub acknowledged_by: Option<String>,
    pub snoozed_until: Option<DbTime>,
    pub resolved_at: Option<DbTime>,
    pub resolved_by: Option<String>,
    pub outcome: Option<String>,
    pub note: Option<String>,
    pub escalation_level: i32,
    pub escalated_at: Option<DbTime>,
    pub attention_since: Option<DbTime>,
    pub snooze_reason: Option<String>,
    pub snooze_count: i32,
    pub version: i32,
}

impl TryFrom<AlertRow> for Alert {
    type Error = StoreError;

    fn try_from(r: AlertRow) -> Result<Alert> {
        let corrupt = |what: &str, v: &str| {
            StoreError::Corrupt(format!("alert {}: unknown {what} {v:?}", r.alert_id))
        };
        Ok(Alert {
            alert_id: Some(r.alert_id),
            rule: RuleId::parse(&r.rule).ok_or_else(|| corrupt("rule", &r.rule))?,
            category: Category::parse(&r.category)
                .ok_or_else(|| corrupt("category", &r.category))?,
            severity: Severity::parse(&r.severity)
                .ok_or_else(|| corrupt("severity", &r.severity))?,
            state: AlertState::parse(&r.state).ok_or_else(|| corrupt("state", &r.state))?,
            readings: serde_json::from_str(&r.readings)
                .map_err(|e| StoreError::Corrupt(format!("alert {}: readings: {e}", r.alert_id)))?,
            patient_id: r.patient_id,
            device_id: r.device_id,
            measurement: r.measurement,
            confirmed: r.confirmed,
            plan_version: r.plan_version,
            explanation: r.explanation,
            threshold: r.threshold,
            count: r.count,
            first_reading_at: r.first_reading_at.into(),
            last_reading_at: r.last_reading_at.into(),
            opened_at: r.opened_at.into(),
            updated_at: r.updated_at.into(),
            acknowledged_at: r.acknowledged_at.map(Into::into),
            acknowledged_by: r.acknowledged_by,
            snoozed_until: r.snoozed_until.map(Into::into),
            resolved_at: r.resolved_at.map(Into::into),
            resolved_by: r.resolved_by,
            outcome: r.outcome,
            note: r.note,
            escalation_level: r.escalation_level,
            escalated_at: r.escalated_at.map(Into::into),
            attention_since: r.attention_since.unwrap_or(r.opened_at).into(),
            snooze_reason: r.snooze_reason,
            snooze_count: r.snooze_count,
            version: r.version,
        })
    }
}

/// One entry of an alert's history.
#[derive(Debug, Clone, Serialize, FromRow)]
pub struct AlertHistoryRow {
    pub alert_id: i64,
    pub at: DbTime,
    pub action: String,
    pub from_state: Option<String>,
    pub to_state: String,
    pub actor: String,
    pub note: Option<String>,
}

const ALERT_COLUMNS: &str =
    "alert_id, patient_id, device_id, measurement, rule, category, severity, state, confirmed,
    plan_version, explanation, threshold, readings, count, first_reading_at, last_reading_at,
    opened_at, updated_at, acknowledged_at, acknowledged_by, snoozed_until, resolved_at,
    resolved_by, outcome, note, escalation_level, escalated_at, attention_since, snooze_reason,
    snooze_count, version";

/// Which alerts to list.
#[derive(Debug, Clone, Default)]
pub struct AlertQuery<'a> {
    pub active_only: bool,
    pub patient_id: Option<&'a str>,
    pub limit: i64,
}

fn opt(t: Option<UnixMillis>) -> Option<DbTime> {
    t.map(DbTime)
}

impl Store {
    /// Stores one change (see [`Store::save_alert_changes`]).
    pub async fn save_alert_change(&self, change: &Change) -> Result<i64> {
        let ids = self
            .save_alert_changes(std::slice::from_ref(change))
            .await?;
        ids.first()
            .copied()
            .ok_or_else(|| StoreError::Corrupt("no id for a stored alert change".into()))
    }

    /// Stores changes, in order, in one transaction: each inserts a new
    /// alert or updates one, with its history entry. Returns each change's
    /// alert id. A change to an alert opened earlier in the same call has
    /// no id yet; it is matched to that alert by patient, rule and device.
    pub async fn save_alert_changes(&self, changes: &[Change]) -> Result<Vec<i64>> {
        let mut readings = Vec::with_capacity(changes.len());
        for c in changes {
            readings.push(
                serde_json::to_string(&c.alert.readings)
                    .map_err(|e| StoreError::Corrupt(format!("readings do not serialize: {e}")))?,
            );
        }
        let mut ids = Vec::with_capacity(changes.len());
        type Key<'a> = (Option<&'a str>, RuleId, Option<&'a str>, Option<&'a str>);
        let mut opened: HashMap<Key<'_>, i64> = HashMap::new();
        on_pool!(self, pool => {
            let mut tx = pool.begin_write().await?;
            for (change, readings) in changes.iter().zip(&readings) {
            let a = &change.alert;
            let t = &change.transition;
            let key = (
                a.patient_id.as_deref(),
                a.rule,
                a.device_id.as_deref(),
                a.measurement.as_deref(),
            );
            let known = a.alert_id.or_else(|| {
                (t.action != "opened").then(|| opened.get(&key).copied()).flatten()
            });
            let id = match known {
                None => {
                    let (id,): (i64,) = sqlx::query_as(
                        "INSERT INTO alerts (patient_id, device_id, rule, category, severity, state, confirmed,
                             plan_version, explanation, threshold, readings, count, first_reading_at,
                             last_reading_at, opened_at, updated_at, version, attention_since, measurement)
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19)
                         RETURNING alert_id",
                    )
                    .bind(&a.patient_id)
                    .bind(&a.device_id)
                    .bind(a.rule.as_str())
                    .bind(a.category.as_str())
                    .bind(a.severity.as_str())
                    .bind(a.state.as_str())
                    .bind(a.confirmed)
                    .bind(a.plan_version)
                    .bind(&a.explanation)
                    .bind(&a.threshold)
                    .bind(readings)
                    .bind(a.count)
                    .bind(DbTime(a.first_reading_at))
                    .bind(DbTime(a.last_reading_at))
                    .bind(DbTime(a.opened_at))
                    .bind(DbTime(a.updated_at))
                    .bind(a.version)
                    .bind(DbTime(a.attention_since))
                    .bind(&a.measurement)
                    .fetch_one(&mut *tx)
                    .await
                    .map_err(|e| StoreError::conflict_on_unique(e, "active alert of this patient and rule"))?;
                    opened.insert(key, id);
                    id
                }
                Some(id) => {
                    sqlx::query(
                        "UPDATE alerts SET state = $2, confirmed = $3, explanation = $4, threshold = $5,
                             readings = $6, count = $7, last_reading_at = $8, updated_at = $9,
                             acknowledged_at = $10, acknowledged_by = $11, snoozed_until = $12,
                             resolved_at = $13, resolved_by = $14, outcome = $15, note = $16, version = $17,
                             escalation_level = $18, escalated_at = $19, attention_since = $20,
                             snooze_reason = $21, snooze_count = $22, first_reading_at = $23
                         WHERE alert_id = $1",
                    )
                    .bind(id)
                    .bind(a.state.as_str())
                    .bind(a.confirmed)
                    .bind(&a.explanation)
                    .bind(&a.threshold)
                    .bind(readings)
                    .bind(a.count)
                    .bind(DbTime(a.last_reading_at))
                    .bind(DbTime(a.updated_at))
                    .bind(opt(a.acknowledged_at))
                    .bind(&a.acknowledged_by)
                    .bind(opt(a.snoozed_until))
                    .bind(opt(a.resolved_at))
                    .bind(&a.resolved_by)
                    .bind(&a.outcome)
                    .bind(&a.note)
                    .bind(a.version)
                    .bind(a.escalation_level)
                    .bind(opt(a.escalated_at))
                    .bind(DbTime(a.attention_since))
                    .bind(&a.snooze_reason)
                    .bind(a.snooze_count)
                    .bind(DbTime(a.first_reading_at))
                    .execute(&mut *tx)
                    .await?;
                    id
                }
            };
            sqlx::query(
                "INSERT INTO alert_history (alert_id, at, action, from_state, to_state, actor, note)
                 VALUES ($1, $2, $3, $4, $5, $6, $7)",
            )
            .bind(id)
            .bind(DbTime(t.at))
            .bind(t.action)
            .bind(t.from_state.map(|s| s.as_str()))
            .bind(t.to_state.as_str())
            .bind(&t.actor)
            .bind(&t.note)
            .execute(&mut *tx)
            .await?;
            ids.push(id);
            }
            tx.commit().await?;
            Ok::<_, StoreError>(())
        })?;
        Ok(ids)
    }

    /// The latest alert of every patient + rule + device + measurement: what the engine
    /// needs to recognise findings it has filed before.
    pub async fn latest_alerts(&self) -> Result<Vec<Alert>> {
        let sql = sqlx::AssertSqlSafe(format!(
            "SELECT {ALERT_COLUMNS} FROM (
                 SELECT *, row_number() OVER (
                     PARTITION BY coalesce(patient_id, ''), rule, coalesce(device_id, ''),
                         coalesce(measurement, '')
                     ORDER BY last_reading_at DESC, alert_id DESC) AS rn
                 FROM alerts) latest
             WHERE rn = 1"
        ));
        let rows: Vec<AlertRow> =
            on_pool!(self, pool => sqlx::query_as(sql).fetch_all(pool).await)?;
        rows.into_iter().map(Alert::try_from).collect()
    }

    /// The data-time spans of every alert whose readings reach `since`:
    /// what a rebuild that replays from `since` must not raise again.
    pub async fn alert_spans_since(&self, since: UnixMillis) -> Result<Vec<Span>> {
        let rows: Vec<SpanRow> = on_pool!(self, pool => sqlx::query_as(
            "SELECT patient_id, rule, device_id, measurement, first_reading_at, last_reading_at
             FROM alerts WHERE last_reading_at >= $1",
        )
        .bind(DbTime(since))
        .fetch_all(pool)
        .await)?;
        rows.into_iter()
            .map(|r| {
                Ok(Span {
                    rule: RuleId::parse(&r.rule).ok_or_else(|| {
                        StoreError::Corrupt(format!("alert: unknown rule {:?}", r.rule))
                    })?,
                    patient_id: r.patient_id,
                    device_id: r.device_id,
                    measurement: r.measurement,
                    first_reading_at: r.first_reading_at.into(),
                    last_reading_at: r.last_reading_at.into(),
                })
            })
            .collect()
    }

    pub async fn alerts(&self, q: &AlertQuery<'_>) -> Result<Vec<Alert>> {
        let sql = sqlx::AssertSqlSafe(format!(
            "SELECT {ALERT_COLUMNS} FROM alerts
             WHERE ($1 = false OR state <> 'resolved') AND ($2 IS NULL OR patient_id = $2)
             ORDER BY opened_at DESC, alert_id DESC LIMIT $3"
        ));
        let rows: Vec<AlertRow> = on_pool!(self, pool => sqlx::query_as(sql)
            .bind(q.active_only)
            .bind(q.patient_id)
            .bind(q.limit)
            .fetch_all(pool)
            .await)?;
        rows.into_iter().map(Alert::try_from).collect()
    }

    pub async fn alert(&self, alert_id: i64) -> Result<Option<Alert>> {
        let sql = sqlx::AssertSqlSafe(format!(
            "SELECT {ALERT_COLUMNS} FROM alerts WHERE alert_id = $1"
        ));
        let row: Option<AlertRow> = on_pool!(self, pool => sqlx::query_as(sql)
            .bind(alert_id)
            .fetch_optional(pool)
            .await)?;
        row.map(Alert::try_from).transpose()
    }

    pub async fn alert_history(&self, alert_id: i64) -> Result<Vec<AlertHistoryRow>> {
        Ok(on_pool!(self, pool => sqlx::query_as(
            "SELECT alert_id, at, action, from_state, to_state, actor, note
             FROM alert_history WHERE alert_id = $1 ORDER BY at, history_id",
        )
        .bind(alert_id)
        .fetch_all(pool)
        .await)?)
    }

    /// What happened to a patient's alerts since `since`, with the rule of
    /// each, oldest first (the handover).
    pub async fn patient_alert_history(
        &self,
        patient_id: &str,
        since: UnixMillis,
    ) -> Result<Vec<(String, AlertHistoryRow)>> {
        let rows: Vec<PatientHistoryRow> = on_pool!(self, pool => sqlx::query_as(
            "SELECT a.rule, h.alert_id, h.at, h.action, h.from_state, h.to_state, h.actor, h.note
             FROM alert_history h JOIN alerts a ON a.alert_id = h.alert_id
             WHERE a.patient_id = $1 AND h.at >= $2 AND h.action <> 'updated'
             ORDER BY h.at, h.history_id",
        )
        .bind(patient_id)
        .bind(DbTime(since))
        .fetch_all(pool)
        .await)?;
        Ok(rows.into_iter().map(|r| (r.rule, r.history)).collect())
    }
}

#[derive(FromRow)]
struct PatientHistoryRow {
    rule: String,
    #[sqlx(flatten)]
    history: AlertHistoryRow,
}

#[derive(FromRow)]
struct SpanRow {
    patient_id: Option<String>,
    rule: String,
    device_id: Option<String>,
    measurement: Option<String>,
    first_reading_at: DbTime,
    last_reading_at: DbTime,
}
