//! The HTTP API (`/api/v1`), the websocket, health and metrics.
//!
//! Each resource has its own module with a `router()`; they are merged
//! once here. Handlers get the [`AppState`] and, where they touch patient
//! data, a [`auth::Caller`], so authentication cannot be forgotten and every
//! view of a patient's data lands in the audit log.

mod admin;
pub use admin::MAX_ASSIGNED;
mod alerts;
mod audit;
pub mod auth;
mod board;
mod devices;
pub mod error;
mod handover;
mod health;
pub mod login;
mod openapi;
mod patients;
mod plans;
pub mod ws;

#[cfg(test)]
mod access_tests;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::http::StatusCode;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;

use crate::access::{PatientAccess, Role};
use crate::engine::clock::Clock;
use crate::engine::task::EngineMsg;
use crate::live::Live;
use crate::store::{AuditEntry, DbTime, Store};
use auth::Caller;

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub store: Store,
    pub api_token: Arc<str>,
    pub engine: mpsc::Sender<EngineMsg>,
    pub live: Live,
    /// Whether the gateway is connected to the broker.
    pub broker: watch::Receiver<bool>,
    pub registry: Arc<Registry>,
    pub clock: Arc<dyn Clock>,
    pub login: login::LoginPolicy,
}

impl AppState {
    /// Writes an audit entry. Failing to audit fails the request: a view of
    /// patient data that cannot be logged is not given.
    pub async fn audit(
        &self,
        caller: &Caller,
        action: &str,
        patient_id: Option<&str>,
        detail: Option<String>,
    ) -> Result<(), error::ApiError> {
        self.store
            .audit(&AuditEntry {
                at: DbTime(self.clock.now()),
                actor: caller.actor.clone(),
                action: action.to_owned(),
                patient_id: patient_id.map(str::to_owned),
                detail,
                source: caller.source.clone(),
            })
            .await?;
        Ok(())
    }

    /// Refuses callers without one of `roles`, and writes the refusal to
    /// the audit log.
    pub async fn require(&self, caller: &Caller, roles: &[Role]) -> Result<(), error::ApiError> {
        match caller.require(roles) {
            Ok(()) => Ok(()),
            Err(refusal) => Err(self.refusal(caller, refusal).await),
        }
    }

    /// Writes a refusal (403) to the audit log, as `access.forbidden` with
    /// its reason, and gives it back to be returned. Every attempt at
    /// something one may not do is logged, not only those at a patient.
    pub async fn refusal(&self, caller: &Caller, refusal: error::ApiError) -> error::ApiError {
        match self
            .audit(caller, "access.forbidden", None, Some(refusal.to_string()))
            .await
        {
            Ok(()) => refusal,
            Err(e) => e,
        }
    }

    /// One audit entry per patient, for views that show many at once.
    pub async fn audit_patients(
        &self,
        caller: &Caller,
        action: &str,
        patient_ids: &[&str],
    ) -> Result<(), error::ApiError> {
        let at = DbTime(self.clock.now());
        let entries: Vec<AuditEntry> = patient_ids
            .iter()
            .map(|id| AuditEntry {
                at,
                actor: caller.actor.clone(),
                action: action.to_owned(),
                patient_id: Some((*id).to_owned()),
                detail: None,
                source: caller.source.clone(),
            })
            .collect();
        self.store.audit_many(&entries).await?;
        Ok(())
    }

    /// The caller's access to one patient. A patient outside the caller's
    /// units does not exist for her: 404, the same answer as for an unknown
    /// id, and the attempt is in the audit log.
    pub async fn patient_access(
        &self,
        caller: &Caller,
        patient_id: &str,
    ) -> Result<PatientAccess, error::ApiError> {
        let access = match caller.staff_id() {
            None => self
                .store
                .patient(patient_id)
                .await?
                .map(|_| PatientAccess::everything()),
            Some(staff_id) => self
                .store
                .patient_accesses(staff_id, Some(patient_id))
                .await?
                .remove(patient_id),
        };
        match access {
            Some(a) if a.sees_patient() => Ok(a),
            _ => {
                self.audit(caller, "access.denied", Some(patient_id), None)
                    .await?;
                Err(error::ApiError::NotFound("patient"))
            }
        }
    }

    /// The caller's access to every patient she may see; `None` for the
    /// service token, which sees everyone.
    pub async fn patient_accesses(
        &self,
        caller: &Caller,
    ) -> Result<Option<HashMap<String, PatientAccess>>, error::ApiError> {
        match caller.staff_id() {
            None => Ok(None),
            Some(staff_id) => Ok(Some(self.store.patient_accesses(staff_id, None).await?)),
        }
    }
}

/// The whole application as a router (tests call it with `oneshot`).
pub fn router(state: AppState) -> Router {
    Router::new()
        .merge(health::router())
        .merge(login::router())
        .merge(openapi::router())
        .merge(board::router())
        .merge(admin::router())
        .merge(audit::router())
        .merge(handover::router())
        .merge(patients::router())
        .merge(devices::router())
        .merge(alerts::router())
        .merge(plans::router())
        .merge(ws::router())
        .with_state(state)
        .merge(vaka_dashboards::router())
        // Failures are logged where they happen (ApiError), with their cause.
        .layer(TraceLayer::new_for_http().on_failure(()))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::SERVICE_UNAVAILABLE,
            Duration::from_secs(30),
        ))
}

/// Serves until `shutdown`, then drains open requests.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(async move { shutdown.cancelled().await })
    .await
}

/// Parses an RFC 3339 time parameter.
fn parse_time(name: &str, value: &str) -> Result<vaka_gateway::UnixMillis, error::ApiError> {
    chrono::DateTime::parse_from_rfc3339(value)
        .map(|t| vaka_gateway::UnixMillis(t.timestamp_millis()))
        .map_err(|_| {
            error::ApiError::BadRequest(format!(
                "{name} must be an RFC 3339 time, e.g. 2026-12-01T08:00:00Z"
            ))
        })
}

/// Ids people and devices use: `[A-Za-z0-9_-]{1,64}`.
fn check_id(what: &str, id: &str) -> Result<(), error::ApiError> {
    if vaka_gateway::DeviceId::parse(id).is_some() {
        Ok(())
    } else {
        Err(error::ApiError::BadRequest(format!(
            "{what} must match [A-Za-z0-9_-]{{1,64}}"
        )))
    }
}
