//! `GET /api/v1/board`: the caller's patients, worst first.

use std::collections::HashMap;

use axum::Router;
use axum::extract::State;
use axum::routing::get;
use futures::future::try_join_all;
use serde::Serialize;

use super::AppState;
use super::admin::MAX_ASSIGNED;
use super::auth::Caller;
use super::error::{ApiError, AppJson};
use crate::access::PatientAccess;
use crate::alerts::Alert;
use crate::board::{self, Row, RowInput};
use crate::store::{AlertQuery, DbTime};
use vaka_gateway::UnixMillis;

pub fn router() -> Router<AppState> {
    Router::new().route("/api/v1/board", get(show))
}

#[derive(Serialize)]
struct Board {
    generated_at: DbTime,
    rows: Vec<Row>,
}

/// The patients on the caller's board: her own list if she has one, else
/// the patients of her units (at most [`MAX_ASSIGNED`] of either); every
/// patient for the service token.
pub(super) async fn board_patients(
    state: &AppState,
    caller: &Caller,
) -> Result<Vec<(String, PatientAccess)>, ApiError> {
    let Some(mut accesses) = state.patient_accesses(caller).await? else {
        let all = state.store.patients().await?;
        return Ok(all
            .into_iter()
            .map(|p| (p.patient_id, PatientAccess::everything()))
            .collect());
    };
    let staff_id = caller.staff_id().unwrap_or_default();
    let assigned = state.store.assignments(staff_id).await?;
    let mut ids: Vec<String> = if assigned.is_empty() {
        let mut all: Vec<String> = accesses.keys().cloned().collect();
        all.sort();
        all
    } else {
        assigned
    };
    ids.truncate(MAX_ASSIGNED);
    Ok(ids
        .into_iter()
        .filter_map(|id| {
            let access = accesses.remove(&id)?;
            access.sees_patient().then_some((id, access))
        })
        .collect())
}

/// Active alerts by patient, only those the caller may see.
pub(super) async fn visible_alerts(
    state: &AppState,
    patients: &[(String, PatientAccess)],
) -> Result<HashMap<String, Vec<Alert>>, ApiError> {
    let access: HashMap<&str, &PatientAccess> =
        patients.iter().map(|(id, a)| (id.as_str(), a)).collect();
    let all = state
        .store
        .alerts(&AlertQuery {
            active_only: true,
            patient_id: None,
            limit: 100_000,
        })
        .await?;
    let mut by_patient: HashMap<String, Vec<Alert>> = HashMap::new();
    for alert in all {
        let Some(patient) = alert.patient_id.as_deref() else {
            continue;
        };
        if access.get(patient).is_some_and(|a| a.sees_rule(alert.rule)) {
            by_patient
                .entry(patient.to_owned())
                .or_default()
                .push(alert);
        }
    }
    Ok(by_patient)
}

async fn show(State(state): State<AppState>, caller: Caller) -> Result<AppJson<Board>, ApiError> {
    let now = state.clock.now();
    let patients = board_patients(&state, &caller).await?;
    let mut alerts = visible_alerts(&state, &patients).await?;
    let since = UnixMillis(now.0 - i64::from(board::DAYS) * UnixMillis::DAY);
    let inputs = try_join_all(patients.iter().map(|(id, _)| {
        let store = state.store.clone();
        async move {
            let patient = store.patient(id).await?;
            let plan = store.current_plan(id).await?;
            let (observations, doses) = store.recent_readings(id, since).await?;
            Ok::<_, ApiError>((patient, plan, observations, doses))
        }
    }))
    .await?;
    let mut rows: Vec<Row> = inputs
        .iter()
        .filter_map(|(patient, plan, observations, doses)| {
            let patient = patient.as_ref()?;
            Some(board::row(
                RowInput {
                    patient,
                    plan: plan.as_ref(),
                    alerts: alerts.remove(&patient.patient_id).unwrap_or_default(),
                    observations,
                    dose_events: doses,
                },
                now,
            ))
        })
        .collect();
    board::sort(&mut rows);
    let ids: Vec<&str> = rows.iter().map(|r| r.patient.id.as_str()).collect();
    state.audit_patients(&caller, "board.view", &ids).await?;
    Ok(AppJson(Board {
        generated_at: DbTime(now),
        rows,
    }))
}
