//! Staff login, logout and "who am I".
//!
//! Password login is one way to start a session; an OIDC login would be
//! another route that ends in [`start_session`] the same way.

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum_extra::extract::cookie::{Cookie, CookieJar, SameSite};
use serde::{Deserialize, Serialize};

use super::AppState;
use super::auth::{Caller, ClientAddress, SESSION_COOKIE};
use super::error::{ApiError, AppJson};
use crate::passwords::{self, random_token, token_digest};
use crate::store::{AuditEntry, DbTime, StaffMember};
use vaka_gateway::UnixMillis;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v1/auth/login", post(login))
        .route("/api/v1/auth/logout", post(logout))
        .route("/api/v1/auth/me", get(me))
}

/// How logins and sessions behave.
#[derive(Debug, Clone)]
pub struct LoginPolicy {
    /// Failed logins in a row before the account is locked.
    pub max_failures: i32,
    pub lockout_ms: i64,
    /// A session lasts this long (a shift, with margin), then one logs in again.
    pub session_ms: i64,
    /// Mark the cookie `Secure` (sent over HTTPS only; browsers also send it
    /// to http://localhost). Turn off only behind a TLS-terminating proxy
    /// that speaks plain HTTP to vaka on another host.
    pub secure_cookies: bool,
}

impl Default for LoginPolicy {
    fn default() -> Self {
        LoginPolicy {
            max_failures: 5,
            lockout_ms: 15 * 60_000,
            session_ms: 12 * 3_600_000,
            secure_cookies: true,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LoginBody {
    username: String,
    password: String,
}

#[derive(Serialize)]
struct SessionView {
    staff: Option<StaffMember>,
    csrf_token: Option<String>,
}

async fn login(
    State(state): State<AppState>,
    ClientAddress(source): ClientAddress,
    AppJson(body): AppJson<LoginBody>,
) -> Result<Response, ApiError> {
    let now = state.clock.now();
    let username = body.username.trim().to_lowercase();
    if username.is_empty() || username.len() > 64 || body.password.len() > 1024 {
        return Err(ApiError::BadCredentials);
    }
    let audit = |action: &'static str, detail: Option<String>| AuditEntry {
        at: DbTime(now),
        actor: format!("login:{username}"),
        action: action.to_owned(),
        patient_id: None,
        detail,
        source: source.clone(),
    };
    let credentials = state.store.credentials(&username).await?;
    if let Some(c) = &credentials
        && let Some(until) = c.locked_until
        && until.0 > now
    {
        state.store.audit(&audit("auth.login_locked", None)).await?;
        return Err(locked(until.0));
    }
    let stored = credentials.as_ref().and_then(|c| c.password_hash.clone());
    // Kept for counting a failure: the check below consumes `credentials`.
    let known = credentials.as_ref().map(|c| c.staff_id.clone());
    let password = body.password;
    let verified =
        tokio::task::spawn_blocking(move || passwords::verify(&password, stored.as_deref()))
            .await
            .unwrap_or(false);
    let Some(credentials) = credentials.filter(|c| verified && c.active) else {
        let mut detail = None;
        let mut locked_now = None;
        if let Some(staff_id) = &known {
            let until = UnixMillis(now.0 + state.login.lockout_ms);
            let failures = state
                .store
                .login_failed(staff_id, state.login.max_failures, until)
                .await?;
            detail = Some(format!("failure {failures} in a row"));
            if failures >= state.login.max_failures {
                locked_now = Some(until);
            }
        }
        state
            .store
            .audit(&audit("auth.login_failed", detail))
            .await?;
        return Err(locked_now.map_or(ApiError::BadCredentials, locked));
    };
    let token = random_token();
    let csrf = random_token();
    state
        .store
        .start_session(
            &credentials.staff_id,
            &token_digest(&token),
            &csrf,
            now,
            UnixMillis(now.0 + state.login.session_ms),
            source.as_deref(),
        )
        .await?;
    let staff = state.store.staff_member(&credentials.staff_id).await?;
    state.store.audit(&audit("auth.login", None)).await?;
    let cookie = Cookie::build((SESSION_COOKIE, token))
        .http_only(true)
        .secure(state.login.secure_cookies)
        .same_site(SameSite::Strict)
        .path("/")
        .max_age(time_duration(state.login.session_ms))
        .build();
    Ok((
        CookieJar::new().add(cookie),
        AppJson(SessionView {
            staff,
            csrf_token: Some(csrf),
        }),
    )
        .into_response())
}

fn locked(until: UnixMillis) -> ApiError {
    let local = chrono::DateTime::from_timestamp_millis(until.0)
        .map(|t| {
            t.with_timezone(&chrono_tz::Europe::Stockholm)
                .format("%H:%M")
                .to_string()
        })
        .unwrap_or_default();
    ApiError::Locked(format!(
        "too many failed logins: the account is locked until {local}; an administrator can unlock it by setting a new password"
    ))
}

fn time_duration(ms: i64) -> time::Duration {
    time::Duration::milliseconds(ms)
}

async fn logout(
    State(state): State<AppState>,
    caller: Caller,
    jar: CookieJar,
) -> Result<Response, ApiError> {
    if let Some(cookie) = jar.get(SESSION_COOKIE) {
        state
            .store
            .end_session(&token_digest(cookie.value()))
            .await?;
    }
    state.audit(&caller, "auth.logout", None, None).await?;
    let gone = Cookie::build((SESSION_COOKIE, ""))
        .http_only(true)
        .secure(state.login.secure_cookies)
        .same_site(SameSite::Strict)
        .path("/")
        .max_age(time_duration(0))
        .build();
    Ok((StatusCode::NO_CONTENT, jar.add(gone)).into_response())
}

async fn me(
    State(state): State<AppState>,
    caller: Caller,
    jar: CookieJar,
) -> Result<Response, ApiError> {
    let csrf_token = match jar.get(SESSION_COOKIE) {
        Some(cookie) if caller.staff.is_some() => state
            .store
            .session(&token_digest(cookie.value()), state.clock.now())
            .await?
            .map(|s| s.csrf_token),
        _ => None,
    };
    Ok((
        [(header::CACHE_CONTROL, "no-store")],
        AppJson(SessionView {
            staff: caller.staff,
            csrf_token,
        }),
    )
        .into_response())
}
