//! Registering the roster with the hub's HTTP API, so that the hub knows the
//! patients and which device is bound to whom before the devices speak
//! (messages from unknown or unbound devices are quarantined).
//!
//! Idempotent: `409 Conflict` on a patient or device means "already there",
//! which is fine, so a second `vaka-sim run --api …` does not fail.

use std::time::Duration;

use reqwest::{Client, StatusCode};
use serde::Serialize;
use tracing::info;

use crate::roster::Roster;

#[derive(Debug, thiserror::Error)]
pub enum RegisterError {
    #[error("invalid API URL {url:?}: {reason}")]
    Url { url: String, reason: String },
    #[error("could not reach the hub API at {api}: {source}")]
    Unreachable {
        api: String,
        #[source]
        source: reqwest::Error,
    },
    #[error(
        "the hub refused the API token for {what} (HTTP {status}); check --api-token / VAKA_API_TOKEN"
    )]
    Unauthorized { what: String, status: u16 },
    #[error("the hub refused {what}: HTTP {status} {body}")]
    Refused {
        what: String,
        status: u16,
        body: String,
    },
}

/// What [`register`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RegisterReport {
    pub patients_created: usize,
    /// Already registered (409).
    pub patients_existing: usize,
    pub devices_created: usize,
    pub devices_existing: usize,
    pub bindings: usize,
}

#[derive(Serialize)]
struct NewPatient<'a> {
    id: &'a str,
    name: &'a str,
    timezone: &'a str,
    program: &'a str,
}

#[derive(Serialize)]
struct NewDevice<'a> {
    id: &'a str,
    kind: &'a str,
}

#[derive(Serialize)]
struct Binding<'a> {
    patient_id: &'a str,
}

/// Registers every patient and device of `roster` with the hub at `api`
/// (e.g. `http://127.0.0.1:8080`) and binds each device to its patient.
/// `token` is sent as `Authorization: Bearer {token}`.
pub async fn register(
    roster: &Roster,
    api: &str,
    token: Option<&str>,
) -> Result<RegisterReport, RegisterError> {
    register_in_units(roster, api, token, &[]).await
}

/// As [`register`], and enrols every patient in the care `units` (which
/// must exist), so that the staff of those units see them.
pub async fn register_in_units(
    roster: &Roster,
    api: &str,
    token: Option<&str>,
    units: &[String],
) -> Result<RegisterReport, RegisterError> {
    let base = api.trim_end_matches('/');
    match reqwest::Url::parse(base) {
        Ok(u) if matches!(u.scheme(), "http" | "https") => {}
        Ok(_) => {
            return Err(RegisterError::Url {
                url: api.to_owned(),
                reason: "the scheme must be http://".into(),
            });
        }
        Err(e) => {
            return Err(RegisterError::Url {
                url: api.to_owned(),
                reason: e.to_string(),
            });
        }
    }
    let client = Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .map_err(|source| RegisterError::Unreachable {
            api: base.to_owned(),
            source,
        })?;
    let api = Api {
        client,
        base: base.to_owned(),
        token: token.map(str::to_owned),
    };

    let mut report = RegisterReport::default();
    for p in &roster.patients {
        let body = NewPatient {
            id: &p.id,
            name: &p.name,
            timezone: &p.timezone,
            program: p.program.as_str(),
        };
        let what = format!("patient {}", p.id);
        if api.create("/api/v1/patients", &body, &what).await? {
            report.patients_created += 1;
        } else {
            report.patients_existing += 1;
        }
        for unit in units {
            let path = format!("/api/v1/patients/{}/enrolments/{unit}", p.id);
            let what = format!("enrolment of {} in {unit}", p.id);
            api.put(&path, &serde_json::json!({}), &what).await?;
        }
        for d in &p.devices {
            let body = NewDevice {
                id: &d.id,
                kind: d.kind.as_str(),
            };
            let what = format!("device {}", d.id);
            if api.create("/api/v1/devices", &body, &what).await? {
                report.devices_created += 1;
            } else {
                report.devices_existing += 1;
            }
            let path = format!("/api/v1/devices/{}/binding", d.id);
            let what = format!("binding {} to {}", d.id, p.id);
            api.put(&path, &Binding { patient_id: &p.id }, &what)
                .await?;
            report.bindings += 1;
        }
    }
    info!(?report, "roster registered with the hub");
    Ok(report)
}

struct Api {
    client: Client,
    base: String,
    token: Option<String>,
}

impl Api {
    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let r = self.client.request(method, format!("{}{path}", self.base));
        match &self.token {
            Some(t) => r.bearer_auth(t),
            None => r,
        }
    }

    /// POST; `Ok(true)` created, `Ok(false)` already there.
    async fn create<T: Serialize>(
        &self,
        path: &str,
        body: &T,
        what: &str,
    ) -> Result<bool, RegisterError> {
        let resp = self
            .send(self.request(reqwest::Method::POST, path).json(body))
            .await?;
        match resp.status() {
            s if s.is_success() => Ok(true),
            StatusCode::CONFLICT => Ok(false),
            _ => Err(refused(resp, what).await),
        }
    }

    async fn put<T: Serialize>(
        &self,
        path: &str,
        body: &T,
        what: &str,
    ) -> Result<(), RegisterError> {
        let resp = self
            .send(self.request(reqwest::Method::PUT, path).json(body))
            .await?;
        if resp.status().is_success() {
            Ok(())
        } else {
            Err(refused(resp, what).await)
        }
    }

    async fn send(&self, req: reqwest::RequestBuilder) -> Result<reqwest::Response, RegisterError> {
        req.send()
            .await
            .map_err(|source| RegisterError::Unreachable {
                api: self.base.clone(),
                source,
            })
    }
}

async fn refused(resp: reqwest::Response, what: &str) -> RegisterError {
    let status = resp.status();
    if matches!(status, StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN) {
        return RegisterError::Unauthorized {
            what: what.to_owned(),
            status: status.as_u16(),
        };
    }
    // The hub's error body says why; keep it short.
    let mut body = resp.text().await.unwrap_or_default();
    if body.len() > 300 {
        let cut = (0..=300)
            .rev()
            .find(|&i| body.is_char_boundary(i))
            .unwrap_or(0);
        body.truncate(cut);
        body.push('…');
    }
    RegisterError::Refused {
        what: what.to_owned(),
        status: status.as_u16(),
        body,
    }
}
