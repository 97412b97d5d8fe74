//! Patients and their observations.

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::get;
use serde::{Deserialize, Serialize};

use super::auth::Caller;
use super::error::{ApiError, AppJson, AppQuery};
use super::{AppState, check_id, parse_time};
use crate::engine::task::EngineMsg;
use crate::store::{DbTime, NewPatient, ObservationQuery, Patient, StoredObservation};
use vaka_gateway::model::Metric;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v1/patients", get(list).post(create))
        .route("/api/v1/patients/{id}", get(show))
        .route("/api/v1/patients/{id}/observations", get(observations))
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
}

#[derive(Debug, Serialize)]
pub struct PatientView {
    id: String,
    name: String,
    timezone: String,
    program: Option<String>,
    created_at: DbTime,
}

impl From<Patient> for PatientView {
    fn from(p: Patient) -> Self {
        PatientView {
            id: p.patient_id,
            name: p.display_name,
            timezone: p.timezone,
            program: p.program,
            created_at: p.created_at,
        }
    }
}

async fn create(
    State(state): State<AppState>,
    caller: Caller,
    AppJson(body): AppJson<CreatePatient>,
) -> Result<(StatusCode, AppJson<PatientView>), ApiError> {
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
    let patients = state.store.patients().await?;
    state
        .audit(
            &caller,
            "patient.list",
            None,
            Some(format!("{} patients", patients.len())),
        )
        .await?;
    Ok(AppJson(patients.into_iter().map(Into::into).collect()))
}

async fn show(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<AppJson<PatientView>, ApiError> {
    let patient = state
        .store
        .patient(&id)
        .await?
        .ok_or(ApiError::NotFound("patient"))?;
    state
        .audit(&caller, "patient.view", Some(&id), None)
        .await?;
    Ok(AppJson(patient.into()))
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
    if state.store.patient(&id).await?.is_none() {
        return Err(ApiError::NotFound("patient"));
    }
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
