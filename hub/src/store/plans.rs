//! Monitoring plans (versioned) and CTG session summaries in the store.

use serde::Serialize;
use sqlx::FromRow;
use vaka_gateway::UnixMillis;

use super::{DbTime, Result, Store, StoreError, on_pool};
use crate::plans::Plan;

#[derive(FromRow)]
struct PlanRow {
    patient_id: String,
    version: i32,
    plan: String,
}

/// One version of a patient's plan, with who changed it, when and why.
#[derive(Debug, Clone, Serialize, FromRow)]
pub struct PlanVersion {
    pub version: i32,
    pub plan: String,
    pub changed_by: String,
    pub changed_at: DbTime,
    pub reason: String,
    pub previous: Option<String>,
}

fn decode(row: PlanRow) -> Result<(String, Plan)> {
    let mut plan: Plan = serde_json::from_str(&row.plan).map_err(|e| {
        StoreError::Corrupt(format!("plan {} v{}: {e}", row.patient_id, row.version))
    })?;
    plan.version = row.version;
    Ok((row.patient_id, plan))
}

fn encode(plan: &Plan) -> Result<String> {
    serde_json::to_string(plan)
        .map_err(|e| StoreError::Corrupt(format!("plan does not serialize: {e}")))
}

impl Store {
    /// The current plan of every patient that has one.
    pub async fn current_plans(&self) -> Result<Vec<(String, Plan)>> {
        let rows: Vec<PlanRow> = on_pool!(self, pool => sqlx::query_as(
            "SELECT p.patient_id, p.version, p.plan FROM monitoring_plans p
             WHERE p.version = (SELECT max(version) FROM monitoring_plans q WHERE q.patient_id = p.patient_id)",
        )
        .fetch_all(pool)
        .await)?;
        rows.into_iter().map(decode).collect()
    }

    pub async fn current_plan(&self, patient_id: &str) -> Result<Option<Plan>> {
        let row: Option<PlanRow> = on_pool!(self, pool => sqlx::query_as(
            "SELECT patient_id, version, plan FROM monitoring_plans
             WHERE patient_id = $1 ORDER BY version DESC LIMIT 1",
        )
        .bind(patient_id)
        .fetch_optional(pool)
        .await)?;
        row.map(|r| decode(r).map(|(_, p)| p)).transpose()
    }

    /// Stores `plan` as the next version after `previous` (version 1 when
    /// there is none). A concurrent change of the same version is a conflict.
    pub async fn save_plan(
        &self,
        patient_id: &str,
        plan: &Plan,
        previous: Option<&Plan>,
        changed_by: &str,
        reason: &str,
        now: UnixMillis,
    ) -> Result<Plan> {
        let mut plan = plan.clone();
        plan.version = previous.map_or(1, |p| p.version + 1);
        let json = encode(&plan)?;
        let previous = previous.map(encode).transpose()?;
        on_pool!(self, pool => sqlx::query(
            "INSERT INTO monitoring_plans (patient_id, version, plan, changed_by, changed_at, reason, previous)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(patient_id)
        .bind(plan.version)
        .bind(&json)
        .bind(changed_by)
        .bind(DbTime(now))
        .bind(reason)
        .bind(&previous)
        .execute(pool)
        .await
        .map(|_| ()))
        .map_err(|e| StoreError::conflict_on_unique(e, "a newer version of this plan"))?;
        Ok(plan)
    }

    pub async fn plan_history(&self, patient_id: &str) -> Result<Vec<PlanVersion>> {
        Ok(on_pool!(self, pool => sqlx::query_as(
            "SELECT version, plan, changed_by, changed_at, reason, previous FROM monitoring_plans
             WHERE patient_id = $1 ORDER BY version DESC",
        )
        .bind(patient_id)
        .fetch_all(pool)
        .await)?)
    }

    /// Stores the summary of a finished CTG session. A session is one row
    /// per device and start: a session reopened by late data and ended
    /// again replaces its earlier summary with the new one, which covers
    /// at least as much (an older, shorter one never replaces a longer
    /// one, and another patient's row is left alone). Idempotent.
    pub async fn save_ctg_session(
        &self,
        patient_id: &str,
        device_id: &str,
        started: UnixMillis,
        ended: UnixMillis,
        summary: &serde_json::Value,
    ) -> Result<()> {
        on_pool!(self, pool => sqlx::query(
            "INSERT INTO ctg_sessions (patient_id, device_id, started_at, ended_at, summary)
             VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (device_id, started_at) DO UPDATE
             SET ended_at = excluded.ended_at, summary = excluded.summary
             WHERE ctg_sessions.patient_id = excluded.patient_id
               AND excluded.ended_at >= ctg_sessions.ended_at",
        )
        .bind(patient_id)
        .bind(device_id)
        .bind(DbTime(started))
        .bind(DbTime(ended))
        .bind(summary.to_string())
        .execute(pool)
        .await
        .map(|_| ()))?;
        Ok(())
    }

    /// The patient's CTG sessions, newest first.
    pub async fn ctg_sessions(&self, patient_id: &str, limit: i64) -> Result<Vec<CtgSessionRow>> {
        Ok(on_pool!(self, pool => sqlx::query_as(
            "SELECT device_id, started_at, ended_at, summary FROM ctg_sessions
             WHERE patient_id = $1 ORDER BY started_at DESC LIMIT $2",
        )
        .bind(patient_id)
        .bind(limit)
        .fetch_all(pool)
        .await)?)
    }
}

#[derive(Debug, Clone, Serialize, FromRow)]
pub struct CtgSessionRow {
    pub device_id: String,
    pub started_at: DbTime,
    pub ended_at: DbTime,
    pub summary: String,
}
