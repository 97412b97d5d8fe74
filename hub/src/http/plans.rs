//! Monitoring plans: read, change (with a reason, as a new version), and
//! the history of changes. A change takes effect in the running engine at
//! once.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, State};
use axum::routing::get;
use serde::Deserialize;

use super::AppState;
use super::auth::Caller;
use super::error::{ApiError, AppJson};
use crate::access::Role;
use crate::engine::task::EngineMsg;
use crate::plans::Plan;
use crate::store::{CtgSessionRow, PlanVersion};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v1/patients/{id}/plan", get(show).put(change))
        .route("/api/v1/patients/{id}/plan/history", get(history))
        .route("/api/v1/patients/{id}/ctg-sessions", get(ctg_sessions))
}

async fn current(state: &AppState, patient_id: &str) -> Result<Plan, ApiError> {
    let patient = state
        .store
        .patient(patient_id)
        .await?
        .ok_or(ApiError::NotFound("patient"))?;
    Ok(match state.store.current_plan(patient_id).await? {
        Some(plan) => plan,
        None => Plan::template(patient.program.as_deref()),
    })
}

async fn show(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<AppJson<Plan>, ApiError> {
    state.patient_access(&caller, &id).await?;
    let plan = current(&state, &id).await?;
    state.audit(&caller, "plan.view", Some(&id), None).await?;
    Ok(AppJson(plan))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Change {
    /// A JSON merge patch on the current plan, e.g.
    /// `{"thresholds": {"spo2_low_pct": 88}}`.
    changes: serde_json::Value,
    /// Why (kept with the version), e.g. "KOL: lägre SpO2-gräns enligt läkare".
    reason: String,
    /// Who decided, for service callers; staff decide as themselves.
    by: Option<String>,
}

async fn change(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    AppJson(body): AppJson<Change>,
) -> Result<AppJson<Plan>, ApiError> {
    state
        .require(&caller, &[Role::Physician, Role::Admin])
        .await?;
    state.patient_access(&caller, &id).await?;
    if body.reason.trim().is_empty() {
        return Err(ApiError::BadRequest(
            "a reason for the change is required".into(),
        ));
    }
    if !body.changes.is_object() {
        return Err(ApiError::BadRequest(
            "changes must be a JSON object (a merge patch)".into(),
        ));
    }
    let previous = current(&state, &id).await?;
    let patched = previous
        .patched(&body.changes)
        .map_err(|e| ApiError::BadRequest(e.to_string()))?;
    // Staff change plans as themselves; a service caller names whom for.
    let by = match &caller.staff {
        Some(_) => caller.display_name(),
        None => body
            .by
            .filter(|b| !b.trim().is_empty() && b.len() <= 100)
            .unwrap_or_else(|| caller.actor.clone()),
    };
    // The stored previous version (none if the patient only had a template).
    let stored_previous = state.store.current_plan(&id).await?;
    let plan = state
        .store
        .save_plan(
            &id,
            &patched,
            stored_previous.as_ref(),
            &by,
            body.reason.trim(),
            state.clock.now(),
        )
        .await?;
    state
        .audit(
            &caller,
            "plan.change",
            Some(&id),
            Some(format!("version {}", plan.version)),
        )
        .await?;
    state
        .engine
        .send(EngineMsg::Plan {
            patient_id: id,
            plan: Arc::new(plan.clone()),
        })
        .await
        .map_err(|_| ApiError::Unavailable)?;
    Ok(AppJson(plan))
}

async fn history(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<AppJson<Vec<PlanVersion>>, ApiError> {
    state.patient_access(&caller, &id).await?;
    let versions = state.store.plan_history(&id).await?;
    state
        .audit(&caller, "plan.history", Some(&id), None)
        .await?;
    Ok(AppJson(versions))
}

async fn ctg_sessions(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<AppJson<Vec<CtgSessionRow>>, ApiError> {
    state.patient_access(&caller, &id).await?;
    let sessions = state.store.ctg_sessions(&id, 100).await?;
    state.audit(&caller, "ctg.view", Some(&id), None).await?;
    Ok(AppJson(sessions))
}
