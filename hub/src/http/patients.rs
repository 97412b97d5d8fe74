//! Patients and their observations.

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::get;
use serde::{Deserialize, Serialize};

use super::auth::Caller;
use super::error::{ApiError, AppJson, AppQuery};
use super::{AppState, check_id, parse_time};
use crate::access::Role;
use crate::engine::task::EngineMsg;
use crate::news2::{self, News2};
use crate::store::{
    Call, DbTime, NewCall, NewPatient, ObservationQuery, Patient, PatientDevice, StoredObservation,
};
use vaka_gateway::UnixMillis;
use vaka_gateway::model::Metric;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v1/patients", get(list).post(create))
        .route("/api/v1/patients/{id}", get(show))
        .route("/api/v1/patients/{id}/observations", get(observations))
        .route("/api/v1/patients/{id}/devices", get(devices))
        .route("/api/v1/patients/{id}/calls", get(calls).post(add_call))
}

/// The monitoring programs (templates of a monitoring plan).
const PROGRAMS: [&str; 4] = [
    "heart_failure",
    "hypertension",
    "pregnancy_diabetes",
    "elderly_at_home",
];

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreatePatient {
    /// Optional; generated when absent.
    id: Option<String>,
    name: String,
    timezone: Option<String>,
    program: Option<String>,
    /// Care units to enrol the patient in at once.
    #[serde(default)]
    units: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct PatientView {
    id: String,
    name: String,
    timezone: String,
    program: Option<String>,
    created_at: DbTime,
    /// On `GET /patients/{id}`: NEWS2 from the vital signs of the last day.
    #[serde(skip_serializing_if = "Option::is_none")]
    news2: Option<News2>,
}

impl From<Patient> for PatientView {
    fn from(p: Patient) -> Self {
        PatientView {
            id: p.patient_id,
            name: p.display_name,
            timezone: p.timezone,
            program: p.program,
            created_at: p.created_at,
            news2: None,
        }
    }
}

async fn create(
    State(state): State<AppState>,
    caller: Caller,
    AppJson(body): AppJson<CreatePatient>,
) -> Result<(StatusCode, AppJson<PatientView>), ApiError> {
    state.require(&caller, &[Role::Admin]).await?;
    let id = body
        .id
        .unwrap_or_else(|| format!("p-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]));
    check_id("id", &id)?;
    let name = body.name.trim();
    if name.is_empty() || name.chars().count() > 200 {
        return Err(ApiError::BadRequest("name must be 1–200 characters".into()));
    }
    let timezone = body.timezone.unwrap_or_else(|| "Europe/Stockholm".into());
    if timezone.parse::<chrono_tz::Tz>().is_err() {
        return Err(ApiError::BadRequest(format!(
            "unknown time zone {timezone:?} (use an IANA name such as Europe/Stockholm)"
        )));
    }
    if let Some(p) = &body.program
        && !PROGRAMS.contains(&p.as_str())
    {
        return Err(ApiError::BadRequest(format!(
            "program must be one of {}",
            PROGRAMS.join(", ")
        )));
    }
    if !body.units.is_empty() {
        let known = state.store.care_units().await?;
        if let Some(u) = body
            .units
            .iter()
            .find(|u| !known.iter().any(|k| &k.unit_id == *u))
        {
            return Err(ApiError::BadRequest(format!("no care unit {u:?}")));
        }
    }
    let patient = state
        .store
        .create_patient(
            &NewPatient {
                patient_id: id,
                display_name: name.to_owned(),
                timezone,
                program: body.program,
            },
            state.clock.now(),
        )
        .await?;
    state
        .audit(&caller, "patient.create", Some(&patient.patient_id), None)
        .await?;
    for unit in &body.units {
        state
            .store
            .enrol(&patient.patient_id, unit, state.clock.now())
            .await?;
        state
            .audit(
                &caller,
                "enrolment.add",
                Some(&patient.patient_id),
                Some(unit.clone()),
            )
            .await?;
    }
    let _ = state
        .engine
        .send(EngineMsg::Patient {
            patient_id: patient.patient_id.clone(),
            timezone: patient.timezone.clone(),
        })
        .await;
    Ok((StatusCode::CREATED, AppJson(patient.into())))
}

async fn list(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<AppJson<Vec<PatientView>>, ApiError> {
    let mut patients = state.store.patients().await?;
    if let Some(visible) = state.patient_accesses(&caller).await? {
        patients.retain(|p| visible.get(&p.patient_id).is_some_and(|a| a.sees_patient()));
    }
    let ids: Vec<&str> = patients.iter().map(|p| p.patient_id.as_str()).collect();
    state.audit_patients(&caller, "patient.list", &ids).await?;
    Ok(AppJson(patients.into_iter().map(Into::into).collect()))
}

async fn show(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<AppJson<PatientView>, ApiError> {
    state.patient_access(&caller, &id).await?;
    let patient = state
        .store
        .patient(&id)
        .await?
        .ok_or(ApiError::NotFound("patient"))?;
    let now = state.clock.now();
    let (vitals, _) = state
        .store
        .recent_readings(&id, UnixMillis(now.0 - news2::WINDOW_MS))
        .await?;
    let plan = state.store.current_plan(&id).await?;
    state
        .audit(&caller, "patient.view", Some(&id), None)
        .await?;
    let mut view = PatientView::from(patient);
    view.news2 = news2::score(&vitals, news2::scale_of_plan(plan.as_ref()), now);
    Ok(AppJson(view))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ObservationParams {
    metric: Option<String>,
    from: Option<String>,
    to: Option<String>,
    limit: Option<i64>,
}

async fn observations(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    AppQuery(params): AppQuery<ObservationParams>,
) -> Result<AppJson<Vec<StoredObservation>>, ApiError> {
    let metric = params
        .metric
        .as_deref()
        .map(|m| {
            Metric::parse(m).ok_or_else(|| ApiError::BadRequest(format!("unknown metric {m:?}")))
        })
        .transpose()?;
    let from = params
        .from
        .as_deref()
        .map(|t| parse_time("from", t))
        .transpose()?;
    let to = params
        .to
        .as_deref()
        .map(|t| parse_time("to", t))
        .transpose()?;
    let limit = params.limit.unwrap_or(1000);
    if !(1..=100_000).contains(&limit) {
        return Err(ApiError::BadRequest("limit must be 1–100000".into()));
    }
    state.patient_access(&caller, &id).await?;
    let rows = state
        .store
        .observations(&ObservationQuery {
            patient_id: &id,
            metric,
            from,
            to,
            limit,
        })
        .await?;
    state
        .audit(
            &caller,
            "observations.view",
            Some(&id),
            Some(format!("{} rows", rows.len())),
        )
        .await?;
    Ok(AppJson(rows))
}

async fn devices(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<AppJson<Vec<PatientDevice>>, ApiError> {
    state.patient_access(&caller, &id).await?;
    let devices = state.store.patient_devices(&id).await?;
    state
        .audit(&caller, "devices.view", Some(&id), None)
        .await?;
    Ok(AppJson(devices))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CallsParams {
    limit: Option<i64>,
}

async fn calls(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    AppQuery(p): AppQuery<CallsParams>,
) -> Result<AppJson<Vec<Call>>, ApiError> {
    state.patient_access(&caller, &id).await?;
    let calls = state
        .store
        .calls(&id, None, p.limit.unwrap_or(100).clamp(1, 1000))
        .await?;
    state.audit(&caller, "calls.view", Some(&id), None).await?;
    Ok(AppJson(calls))
}

/// What a call to a patient came to.
const CALL_OUTCOMES: [&str; 3] = ["reached", "no_answer", "left_message"];

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NewCallBody {
    outcome: String,
    note: String,
    alert_id: Option<i64>,
}

async fn add_call(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    AppJson(body): AppJson<NewCallBody>,
) -> Result<(StatusCode, AppJson<Call>), ApiError> {
    state.patient_access(&caller, &id).await?;
    if !CALL_OUTCOMES.contains(&body.outcome.as_str()) {
        return Err(ApiError::BadRequest(format!(
            "outcome must be one of {}",
            CALL_OUTCOMES.join(", ")
        )));
    }
    let note = body.note.trim();
    if note.chars().count() > 2000 {
        return Err(ApiError::BadRequest(
            "note must be at most 2000 characters".into(),
        ));
    }
    if let Some(alert_id) = body.alert_id {
        let alert = state.store.alert(alert_id).await?;
        if alert.and_then(|a| a.patient_id).as_deref() != Some(id.as_str()) {
            return Err(ApiError::BadRequest(
                "alert_id must be an alert of this patient".into(),
            ));
        }
    }
    let staff = caller.staff_id().unwrap_or("service");
    let call = state
        .store
        .add_call(&NewCall {
            patient_id: &id,
            alert_id: body.alert_id,
            staff_id: staff,
            at: state.clock.now(),
            outcome: &body.outcome,
            note,
        })
        .await?;
    state
        .audit(&caller, "call.add", Some(&id), Some(body.outcome))
        .await?;
    Ok((StatusCode::CREATED, AppJson(call)))
}
