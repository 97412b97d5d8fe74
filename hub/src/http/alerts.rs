//! Alerts: list, show with history, acknowledge, resolve. Actions go to the
//! engine task, the one owner of alert state, and come back once stored.

use axum::Router;
use axum::extract::State;
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

use super::AppState;
use super::auth::Caller;
use super::error::{ApiError, AppJson, AppPath, AppQuery};
use crate::access::Role;
use crate::alerts::Alert;
use crate::engine::task::{AlertAction, EngineMsg};
use crate::store::{AlertHistoryRow, AlertQuery};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v1/alerts", get(list))
        .route("/api/v1/alerts/{id}", get(show))
        .route("/api/v1/alerts/{id}/acknowledge", post(acknowledge))
        .route("/api/v1/alerts/{id}/resolve", post(resolve))
        .route("/api/v1/alerts/{id}/snooze", post(snooze))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ListParams {
    /// `active` (default) or `all`.
    state: Option<String>,
    patient: Option<String>,
    limit: Option<i64>,
}

async fn list(
    State(state): State<AppState>,
    caller: Caller,
    AppQuery(p): AppQuery<ListParams>,
) -> Result<AppJson<Vec<Alert>>, ApiError> {
    let active_only = match p.state.as_deref() {
        None | Some("active") => true,
        Some("all") => false,
        Some(other) => {
            return Err(ApiError::BadRequest(format!(
                "state must be active or all, not {other:?}"
            )));
        }
    };
    if let Some(patient) = p.patient.as_deref() {
        state.patient_access(&caller, patient).await?;
    }
    let mut alerts = state
        .store
        .alerts(&AlertQuery {
            active_only,
            patient_id: p.patient.as_deref(),
            limit: p.limit.unwrap_or(500).clamp(1, 10_000),
        })
        .await?;
    if let Some(visible) = state.patient_accesses(&caller).await? {
        let admin = caller.role() == Role::Admin;
        alerts.retain(|a| match a.patient_id.as_deref() {
            Some(p) => visible.get(p).is_some_and(|x| x.sees_rule(a.rule)),
            // Alarms from unbound devices are the administrators'.
            None => admin,
        });
    }
    state
        .audit(
            &caller,
            "alerts.view",
            p.patient.as_deref(),
            Some(format!("{} alerts", alerts.len())),
        )
        .await?;
    Ok(AppJson(alerts))
}

#[derive(Debug, Serialize)]
struct AlertWithHistory {
    alert: Alert,
    history: Vec<AlertHistoryRow>,
}

async fn show(
    State(state): State<AppState>,
    caller: Caller,
    AppPath(id): AppPath<i64>,
) -> Result<AppJson<AlertWithHistory>, ApiError> {
    let alert = visible_alert(&state, &caller, id).await?;
    let history = state.store.alert_history(id).await?;
    state
        .audit(
            &caller,
            "alert.view",
            alert.patient_id.as_deref(),
            Some(format!("alert {id}")),
        )
        .await?;
    Ok(AppJson(AlertWithHistory { alert, history }))
}

/// An alert the caller may see, or 404 (audited when it exists).
async fn visible_alert(state: &AppState, caller: &Caller, id: i64) -> Result<Alert, ApiError> {
    let alert = state
        .store
        .alert(id)
        .await?
        .ok_or(ApiError::NotFound("alert"))?;
    let visible = match alert.patient_id.as_deref() {
        _ if caller.staff_id().is_none() => true,
        Some(patient) => state
            .store
            .patient_accesses(caller.staff_id().unwrap_or_default(), Some(patient))
            .await?
            .get(patient)
            .is_some_and(|a| a.sees_rule(alert.rule)),
        None => caller.role() == Role::Admin,
    };
    if !visible {
        state
            .audit(
                caller,
                "access.denied",
                alert.patient_id.as_deref(),
                Some(format!("alert {id}")),
            )
            .await?;
        return Err(ApiError::NotFound("alert"));
    }
    Ok(alert)
}

/// Has the engine task carry out `action`, then audits it as `audited`.
async fn act(
    state: &AppState,
    caller: &Caller,
    action: AlertAction,
    audited: &str,
) -> Result<Alert, ApiError> {
    visible_alert(state, caller, action.alert_id()).await?;
    refuse_nul(&action)?;
    let (reply, rx) = oneshot::channel();
    state
        .engine
        .send(EngineMsg::Act { action, reply })
        .await
        .map_err(|_| ApiError::Unavailable)?;
    let alert = rx.await.map_err(|_| ApiError::Unavailable)??;
    let detail = alert.alert_id.map(|id| format!("alert {id}"));
    state
        .audit(caller, audited, alert.patient_id.as_deref(), detail)
        .await?;
    Ok(alert)
}

/// The engine stores an alert change until the database takes it, retrying;
/// PostgreSQL never takes a NUL character in text, so one in a note would
/// hold the engine, and with it every patient's alerts, for ever. Refused
/// before it gets there.
fn refuse_nul(action: &AlertAction) -> Result<(), ApiError> {
    let texts: [Option<&String>; 3] = match action {
        AlertAction::Acknowledge { actor, .. } => [Some(actor), None, None],
        AlertAction::Resolve {
            actor,
            outcome,
            note,
            ..
        } => [Some(actor), Some(outcome), note.as_ref()],
        AlertAction::Snooze { actor, reason, .. } => [Some(actor), Some(reason), None],
    };
    if texts.into_iter().flatten().any(|t| t.contains('\0')) {
        return Err(ApiError::BadRequest(
            "text must not contain NUL (\\u0000) characters".into(),
        ));
    }
    Ok(())
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Acknowledge {
    /// Who acknowledges, for service callers acting for someone; staff act
    /// as themselves.
    by: Option<String>,
}

/// The name an action is filed under: a member of staff's own name (she
/// cannot act as someone else), or for a service caller, whom it names.
fn actor(caller: &Caller, by: Option<String>) -> String {
    if caller.staff.is_some() {
        return caller.display_name();
    }
    by.filter(|b| !b.trim().is_empty() && b.len() <= 100)
        .unwrap_or_else(|| caller.actor.clone())
}

async fn acknowledge(
    State(state): State<AppState>,
    caller: Caller,
    AppPath(id): AppPath<i64>,
    body: axum::body::Bytes,
) -> Result<AppJson<Alert>, ApiError> {
    // The body is optional: empty, or {"by": "…"}.
    let by = if body.iter().all(u8::is_ascii_whitespace) {
        None
    } else {
        serde_json::from_slice::<Acknowledge>(&body)
            .map_err(|e| ApiError::BadRequest(format!("invalid request body: {e}")))?
            .by
    };
    let alert = act(
        &state,
        &caller,
        AlertAction::Acknowledge {
            alert_id: id,
            actor: actor(&caller, by),
        },
        "alert.acknowledge",
    )
    .await?;
    Ok(AppJson(alert))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Resolve {
    /// e.g. called_patient, home_visit, medication_changed, no_action, false_alarm
    outcome: String,
    note: Option<String>,
    by: Option<String>,
}

async fn resolve(
    State(state): State<AppState>,
    caller: Caller,
    AppPath(id): AppPath<i64>,
    AppJson(body): AppJson<Resolve>,
) -> Result<AppJson<Alert>, ApiError> {
    if body.note.as_ref().is_some_and(|n| n.len() > 4000) {
        return Err(ApiError::BadRequest(
            "note must be at most 4000 bytes".into(),
        ));
    }
    let alert = act(
        &state,
        &caller,
        AlertAction::Resolve {
            alert_id: id,
            actor: actor(&caller, body.by),
            outcome: body.outcome,
            note: body.note,
        },
        "alert.resolve",
    )
    .await?;
    Ok(AppJson(alert))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Snooze {
    /// RFC 3339, or …
    until: Option<String>,
    /// … minutes from now.
    minutes: Option<i64>,
    reason: String,
    by: Option<String>,
}

async fn snooze(
    State(state): State<AppState>,
    caller: Caller,
    AppPath(id): AppPath<i64>,
    AppJson(body): AppJson<Snooze>,
) -> Result<AppJson<Alert>, ApiError> {
    let now = state.clock.now();
    let until = match (body.until.as_deref(), body.minutes) {
        (Some(t), None) => super::parse_time("until", t)?,
        // Saturating: an absurd number of minutes is refused as too long
        // (by the alert book), not an overflow.
        (None, Some(m)) if m > 0 => {
            now.plus_millis(m.saturating_mul(vaka_gateway::UnixMillis::MINUTE))
        }
        _ => {
            return Err(ApiError::BadRequest(
                "give either until (RFC 3339) or minutes (> 0)".into(),
            ));
        }
    };
    let alert = act(
        &state,
        &caller,
        AlertAction::Snooze {
            alert_id: id,
            actor: actor(&caller, body.by),
            until,
            reason: body.reason,
        },
        "alert.snooze",
    )
    .await?;
    Ok(AppJson(alert))
}
