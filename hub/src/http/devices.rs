//! Device registration and binding to patients, and the quarantine list.

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, put};
use serde::Deserialize;
use vaka_gateway::model::DeviceKind;

use super::auth::Caller;
use super::error::{ApiError, AppJson, AppQuery};
use super::{AppState, check_id, parse_time};
use crate::access::Role;
use crate::store::{Binding, Device, QuarantineEntry};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v1/devices", get(list).post(register))
        .route("/api/v1/devices/{id}", get(show))
        .route("/api/v1/devices/{id}/binding", put(bind).delete(unbind))
        .route("/api/v1/quarantine", get(quarantine))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RegisterDevice {
    id: String,
    kind: String,
}

async fn register(
    State(state): State<AppState>,
    caller: Caller,
    AppJson(body): AppJson<RegisterDevice>,
) -> Result<(StatusCode, AppJson<Device>), ApiError> {
    state.require(&caller, &[Role::Admin]).await?;
    check_id("id", &body.id)?;
    let kind = DeviceKind::parse(&body.kind).ok_or_else(|| {
        let kinds: Vec<_> = DeviceKind::ALL.iter().map(|k| k.as_str()).collect();
        ApiError::BadRequest(format!("kind must be one of {}", kinds.join(", ")))
    })?;
    let device = state
        .store
        .register_device(&body.id, kind, state.clock.now())
        .await?;
    state
        .audit(&caller, "device.register", None, Some(body.id))
        .await?;
    Ok((StatusCode::CREATED, AppJson(device)))
}

async fn list(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<AppJson<Vec<Device>>, ApiError> {
    state.require(&caller, &[Role::Admin]).await?;
    let devices = state.store.devices().await?;
    state
        .audit(
            &caller,
            "devices.view",
            None,
            Some(format!("{} devices", devices.len())),
        )
        .await?;
    Ok(AppJson(devices))
}

async fn show(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<AppJson<Device>, ApiError> {
    state.require(&caller, &[Role::Admin]).await?;
    let device = state
        .store
        .device(&id)
        .await?
        .ok_or(ApiError::NotFound("device"))?;
    state
        .audit(
            &caller,
            "device.view",
            device.patient_id.as_deref(),
            Some(id),
        )
        .await?;
    Ok(AppJson(device))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Bind {
    patient_id: String,
    /// RFC 3339; default: all of the device's past for its first binding,
    /// now for a rebinding.
    from: Option<String>,
}

async fn bind(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    AppJson(body): AppJson<Bind>,
) -> Result<AppJson<Binding>, ApiError> {
    state.require(&caller, &[Role::Admin]).await?;
    let from = body
        .from
        .as_deref()
        .map(|t| parse_time("from", t))
        .transpose()?;
    let binding = state
        .store
        .bind_device(&id, &body.patient_id, from, state.clock.now())
        .await?;
    state
        .audit(&caller, "device.bind", Some(&body.patient_id), Some(id))
        .await?;
    Ok(AppJson(binding))
}

async fn unbind(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    state.require(&caller, &[Role::Admin]).await?;
    if !state.store.unbind_device(&id, state.clock.now()).await? {
        return Err(ApiError::NotFound("open binding of this device"));
    }
    state
        .audit(&caller, "device.unbind", None, Some(id))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Limit {
    limit: Option<i64>,
}

async fn quarantine(
    State(state): State<AppState>,
    caller: Caller,
    AppQuery(q): AppQuery<Limit>,
) -> Result<AppJson<Vec<QuarantineEntry>>, ApiError> {
    state.require(&caller, &[Role::Admin]).await?;
    let rows = state
        .store
        .quarantine(q.limit.unwrap_or(100).clamp(1, 10_000))
        .await?;
    state.audit(&caller, "quarantine.view", None, None).await?;
    Ok(AppJson(rows))
}
