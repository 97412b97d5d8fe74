//! Administration: care units, staff and their units, enrolments of
//! patients in units, nurses' lists (assignments), and the quarantine.

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post, put};
use serde::Deserialize;

use super::auth::Caller;
use super::error::{ApiError, AppJson};
use super::{AppState, check_id};
use crate::access::{CareUnit, Role, UnitKind};
use crate::passwords;
use crate::store::{NewStaff, StaffChange, StaffMember};

/// The longest list a nurse follows (ARCHITECTURE: up to 50 patients each).
pub const MAX_ASSIGNED: usize = 50;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v1/care-units", get(units).post(create_unit))
        .route("/api/v1/staff", get(list_staff).post(create_staff))
        .route("/api/v1/staff/{id}", get(show_staff).put(change_staff))
        .route("/api/v1/staff/{id}/assignments", get(assignments))
        .route(
            "/api/v1/staff/{id}/assignments/{patient}",
            put(assign).delete(unassign),
        )
        .route("/api/v1/patients/{id}/enrolments", get(enrolments))
        .route(
            "/api/v1/patients/{id}/enrolments/{unit}",
            put(enrol).delete(unenrol),
        )
        .route("/api/v1/quarantine/{device}/discard", post(discard))
}

async fn units(
    State(state): State<AppState>,
    _caller: Caller,
) -> Result<AppJson<Vec<CareUnit>>, ApiError> {
    Ok(AppJson(state.store.care_units().await?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewUnit {
    id: String,
    name: String,
    kind: String,
}

async fn create_unit(
    State(state): State<AppState>,
    caller: Caller,
    AppJson(body): AppJson<NewUnit>,
) -> Result<(StatusCode, AppJson<CareUnit>), ApiError> {
    state.require(&caller, &[Role::Admin]).await?;
    check_id("id", &body.id)?;
    let name = bounded_text("name", &body.name, 200)?;
    if UnitKind::parse(&body.kind).is_none() {
        return Err(ApiError::BadRequest(
            "kind must be region or municipality".into(),
        ));
    }
    let unit = CareUnit {
        unit_id: body.id,
        name,
        kind: body.kind,
    };
    let unit = state
        .store
        .create_care_unit(&unit, state.clock.now())
        .await?;
    state
        .audit(&caller, "unit.create", None, Some(unit.unit_id.clone()))
        .await?;
    Ok((StatusCode::CREATED, AppJson(unit)))
}

/// Trims and bounds a text field.
fn bounded_text(what: &str, text: &str, max: usize) -> Result<String, ApiError> {
    let t = text.trim();
    if t.is_empty() || t.chars().count() > max {
        return Err(ApiError::BadRequest(format!(
            "{what} must be 1–{max} characters"
        )));
    }
    Ok(t.to_owned())
}

fn parse_role(role: &str) -> Result<Role, ApiError> {
    Role::parse(role)
        .ok_or_else(|| ApiError::BadRequest("role must be nurse, physician or admin".into()))
}

/// Hashes a new password off the async runtime (argon2 is slow on purpose).
async fn hash_password(password: String) -> Result<String, ApiError> {
    tokio::task::spawn_blocking(move || passwords::hash(&password))
        .await
        .map_err(|_| ApiError::Unavailable)?
        .map_err(|e| ApiError::BadRequest(e.to_string()))
}

async fn list_staff(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<AppJson<Vec<StaffMember>>, ApiError> {
    state.require(&caller, &[Role::Admin]).await?;
    Ok(AppJson(state.store.staff().await?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewStaffBody {
    id: Option<String>,
    username: String,
    name: String,
    role: String,
    password: Option<String>,
    #[serde(default)]
    units: Vec<String>,
}

async fn create_staff(
    State(state): State<AppState>,
    caller: Caller,
    AppJson(body): AppJson<NewStaffBody>,
) -> Result<(StatusCode, AppJson<StaffMember>), ApiError> {
    state.require(&caller, &[Role::Admin]).await?;
    let username = body.username.trim().to_lowercase();
    check_id("username", &username)?;
    let staff_id = body.id.unwrap_or_else(|| username.clone());
    check_id("id", &staff_id)?;
    let name = bounded_text("name", &body.name, 200)?;
    let role = parse_role(&body.role)?;
    let password_hash = match body.password {
        Some(p) => Some(hash_password(p).await?),
        None => None,
    };
    let member = state
        .store
        .create_staff(
            &NewStaff {
                staff_id: &staff_id,
                username: &username,
                display_name: &name,
                role,
                password_hash,
                units: &body.units,
            },
            state.clock.now(),
        )
        .await?;
    state
        .audit(&caller, "staff.create", None, Some(staff_id))
        .await?;
    Ok((StatusCode::CREATED, AppJson(member)))
}

/// Administrators see everyone; others only themselves.
async fn may_see_staff(state: &AppState, caller: &Caller, staff_id: &str) -> Result<(), ApiError> {
    if caller.role() == Role::Admin || caller.staff_id() == Some(staff_id) {
        Ok(())
    } else {
        let refusal = ApiError::Forbidden("only administrators see other staff".into());
        Err(state.refusal(caller, refusal).await)
    }
}

async fn show_staff(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<AppJson<StaffMember>, ApiError> {
    may_see_staff(&state, &caller, &id).await?;
    state
        .store
        .staff_member(&id)
        .await?
        .map(AppJson)
        .ok_or(ApiError::NotFound("staff member"))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StaffChangeBody {
    name: Option<String>,
    role: Option<String>,
    password: Option<String>,
    active: Option<bool>,
    units: Option<Vec<String>>,
}

async fn change_staff(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    AppJson(body): AppJson<StaffChangeBody>,
) -> Result<AppJson<StaffMember>, ApiError> {
    state.require(&caller, &[Role::Admin]).await?;
    let change = StaffChange {
        display_name: body
            .name
            .map(|n| bounded_text("name", &n, 200))
            .transpose()?,
        role: body.role.as_deref().map(parse_role).transpose()?,
        password_hash: match body.password {
            Some(p) => Some(hash_password(p).await?),
            None => None,
        },
        active: body.active,
        units: body.units,
    };
    let what: Vec<&str> = [
        change.display_name.as_ref().map(|_| "name"),
        change.role.map(|_| "role"),
        change.password_hash.as_ref().map(|_| "password"),
        change.active.map(|_| "active"),
        change.units.as_ref().map(|_| "units"),
    ]
    .into_iter()
    .flatten()
    .collect();
    let member = state.store.update_staff(&id, &change).await?;
    state
        .audit(
            &caller,
            "staff.change",
            None,
            Some(format!("{id}: {}", what.join(", "))),
        )
        .await?;
    Ok(AppJson(member))
}

async fn assignments(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<AppJson<Vec<String>>, ApiError> {
    may_see_staff(&state, &caller, &id).await?;
    // An unknown member of staff has no list (rather than an empty one).
    if state.store.staff_member(&id).await?.is_none() {
        return Err(ApiError::NotFound("staff member"));
    }
    Ok(AppJson(state.store.assignments(&id).await?))
}

/// Puts a patient on a nurse's list: by an administrator, or by the nurse
/// herself; either way the patient must be one the nurse may see.
async fn assign(
    State(state): State<AppState>,
    caller: Caller,
    Path((id, patient)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    may_see_staff(&state, &caller, &id).await?;
    let visible = state
        .store
        .patient_accesses(&id, Some(&patient))
        .await?
        .remove(&patient)
        .is_some_and(|a| a.sees_patient());
    if !visible {
        state
            .audit(
                &caller,
                "access.denied",
                Some(&patient),
                Some(format!("assign to {id}")),
            )
            .await?;
        return Err(ApiError::NotFound("patient"));
    }
    let list = state.store.assignments(&id).await?;
    if !list.contains(&patient) && list.len() >= MAX_ASSIGNED {
        return Err(ApiError::Conflict(format!(
            "a list holds at most {MAX_ASSIGNED} patients; take one off first"
        )));
    }
    state.store.assign(&id, &patient, state.clock.now()).await?;
    state
        .audit(&caller, "assignment.add", Some(&patient), Some(id))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn unassign(
    State(state): State<AppState>,
    caller: Caller,
    Path((id, patient)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    may_see_staff(&state, &caller, &id).await?;
    if !state.store.unassign(&id, &patient).await? {
        return Err(ApiError::NotFound("assignment"));
    }
    state
        .audit(&caller, "assignment.remove", Some(&patient), Some(id))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn enrolments(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<AppJson<Vec<CareUnit>>, ApiError> {
    state.patient_access(&caller, &id).await?;
    Ok(AppJson(state.store.enrolments(&id).await?))
}

async fn enrol(
    State(state): State<AppState>,
    caller: Caller,
    Path((id, unit)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    state.require(&caller, &[Role::Admin]).await?;
    state.store.enrol(&id, &unit, state.clock.now()).await?;
    state
        .audit(&caller, "enrolment.add", Some(&id), Some(unit))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn unenrol(
    State(state): State<AppState>,
    caller: Caller,
    Path((id, unit)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    state.require(&caller, &[Role::Admin]).await?;
    if !state.store.unenrol(&id, &unit).await? {
        return Err(ApiError::NotFound("enrolment"));
    }
    state
        .audit(&caller, "enrolment.remove", Some(&id), Some(unit))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Discard {
    reason: String,
}

/// Discards the pending quarantined messages of a device, with a reason
/// (a neighbour's scale, a test device). They stay in the table, marked.
async fn discard(
    State(state): State<AppState>,
    caller: Caller,
    Path(device): Path<String>,
    AppJson(body): AppJson<Discard>,
) -> Result<AppJson<serde_json::Value>, ApiError> {
    state.require(&caller, &[Role::Admin]).await?;
    let reason = bounded_text("reason", &body.reason, 500)?;
    let count = state
        .store
        .resolve_quarantine(
            &device,
            &format!("discarded: {reason}"),
            &caller.actor,
            state.clock.now(),
        )
        .await?;
    if count == 0 {
        return Err(ApiError::NotFound(
            "pending quarantined messages of this device",
        ));
    }
    state
        .audit(
            &caller,
            "quarantine.discard",
            None,
            Some(format!("{device}: {count} messages: {reason}")),
        )
        .await?;
    Ok(AppJson(serde_json::json!({"discarded": count})))
}
