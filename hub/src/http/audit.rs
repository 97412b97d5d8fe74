//! `GET /api/v1/audit`: administrators search the audit log (PDL: who
//! looked at which patient's data, when, from where).

use axum::Router;
use axum::extract::State;
use axum::routing::get;
use serde::Deserialize;

use super::auth::Caller;
use super::error::{ApiError, AppJson, AppQuery};
use super::{AppState, parse_time};
use crate::access::Role;
use crate::store::{AuditEntry, AuditFilter};

pub fn router() -> Router<AppState> {
    Router::new().route("/api/v1/audit", get(search))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SearchParams {
    actor: Option<String>,
    patient: Option<String>,
    /// An action, or its beginning (`patient.` for every patient view).
    action: Option<String>,
    from: Option<String>,
    to: Option<String>,
    limit: Option<i64>,
}

async fn search(
    State(state): State<AppState>,
    caller: Caller,
    AppQuery(p): AppQuery<SearchParams>,
) -> Result<AppJson<Vec<AuditEntry>>, ApiError> {
    state.require(&caller, &[Role::Admin]).await?;
    let from = p
        .from
        .as_deref()
        .map(|t| parse_time("from", t))
        .transpose()?;
    let to = p.to.as_deref().map(|t| parse_time("to", t)).transpose()?;
    let entries = state
        .store
        .search_audit(&AuditFilter {
            actor: p.actor.as_deref().filter(|s| !s.is_empty()),
            patient_id: p.patient.as_deref().filter(|s| !s.is_empty()),
            action: p.action.as_deref().filter(|s| !s.is_empty()),
            from,
            to,
            limit: p.limit.unwrap_or(200).clamp(1, 5_000),
        })
        .await?;
    // Searching the log is itself a look at patient data.
    state
        .audit(
            &caller,
            "audit.search",
            p.patient.as_deref(),
            Some(format!("{} entries", entries.len())),
        )
        .await?;
    Ok(AppJson(entries))
}
