//! `GET /api/v1/handover`: the shift summary. Per patient of the caller's
//! board: what happened since the last shift (alerts opened, acted on,
//! resolved; calls; plan changes) and what is still open.

use axum::Router;
use axum::extract::State;
use axum::routing::get;
use serde::{Deserialize, Serialize};

use super::auth::Caller;
use super::board::{board_patients, visible_alerts};
use super::error::{ApiError, AppJson, AppQuery};
use super::patients::PatientView;
use super::{AppState, parse_time};
use crate::alerts::Alert;
use crate::engine::rules::RuleId;
use crate::store::DbTime;
use vaka_gateway::UnixMillis;

pub fn router() -> Router<AppState> {
    Router::new().route("/api/v1/handover", get(show))
}

/// A shift, when the caller does not say when hers began.
const SHIFT_MS: i64 = 12 * 3_600_000;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Params {
    since: Option<String>,
}

#[derive(Serialize)]
struct Handover {
    since: DbTime,
    until: DbTime,
    patients: Vec<PatientHandover>,
}

#[derive(Serialize)]
struct PatientHandover {
    patient: PatientView,
    open_alerts: Vec<Alert>,
    events: Vec<Happening>,
}

/// One thing that happened, oldest first.
#[derive(Serialize)]
struct Happening {
    at: DbTime,
    /// `alert`, `call` or `plan`.
    kind: &'static str,
    /// What it was (`opened`, `acknowledged`, `reached`, …).
    action: String,
    /// The alert's rule, for alert events.
    rule: Option<String>,
    actor: String,
    note: Option<String>,
}

async fn show(
    State(state): State<AppState>,
    caller: Caller,
    AppQuery(p): AppQuery<Params>,
) -> Result<AppJson<Handover>, ApiError> {
    let now = state.clock.now();
    let since = match p.since.as_deref() {
        Some(t) => parse_time("since", t)?,
        None => UnixMillis(now.0 - SHIFT_MS),
    };
    let patients = board_patients(&state, &caller).await?;
    let mut open = visible_alerts(&state, &patients).await?;
    let mut out = Vec::with_capacity(patients.len());
    for (id, access) in &patients {
        let Some(patient) = state.store.patient(id).await? else {
            continue;
        };
        let mut events: Vec<Happening> = state
            .store
            .patient_alert_history(id, since)
            .await?
            .into_iter()
            .filter(|(rule, _)| RuleId::parse(rule).is_some_and(|r| access.sees_rule(r)))
            .map(|(rule, h)| Happening {
                at: h.at,
                kind: "alert",
                action: h.action,
                rule: Some(rule),
                actor: h.actor,
                note: h.note,
            })
            .collect();
        events.extend(
            state
                .store
                .calls(id, Some(since), 200)
                .await?
                .into_iter()
                .map(|c| Happening {
                    at: c.at,
                    kind: "call",
                    action: c.outcome,
                    rule: None,
                    actor: c.staff_id,
                    note: Some(c.note),
                }),
        );
        events.extend(
            state
                .store
                .plan_history(id)
                .await?
                .into_iter()
                .filter(|v| v.changed_at.0 >= since)
                .map(|v| Happening {
                    at: v.changed_at,
                    kind: "plan",
                    action: format!("version {}", v.version),
                    rule: None,
                    actor: v.changed_by,
                    note: Some(v.reason),
                }),
        );
        events.sort_by_key(|e| e.at.0);
        out.push(PatientHandover {
            patient: patient.into(),
            open_alerts: open.remove(id).unwrap_or_default(),
            events,
        });
    }
    let ids: Vec<&str> = patients.iter().map(|(id, _)| id.as_str()).collect();
    state.audit_patients(&caller, "handover.view", &ids).await?;
    Ok(AppJson(Handover {
        since: DbTime(since),
        until: DbTime(now),
        patients: out,
    }))
}
