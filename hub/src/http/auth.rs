//! Authentication as an extractor: a handler that takes a [`Caller`]
//! cannot forget to check.
//!
//! Two kinds of callers:
//! - **staff**, logged in through `/api/v1/auth/login` (see `login.rs`),
//!   with a session cookie (HttpOnly, SameSite=Strict) and, on every
//!   request that changes something, the session's CSRF token in the
//!   `X-CSRF-Token` header;
//! - **services** (the simulator, scripts, monitoring) with the configured
//!   bearer token, which acts as an administrator of every unit.
//!
//! The login itself is the only place that knows about passwords: an OIDC
//! login (SITHS, a region's identity provider) would verify its identity
//! token there and start the same kind of session, and everything below
//! would stay as it is.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{Method, header};
use axum_extra::extract::cookie::CookieJar;
use sha2::{Digest, Sha256};

use super::AppState;
use super::error::ApiError;
use crate::access::Role;
use crate::passwords::token_digest;
use crate::store::StaffMember;

/// The session cookie.
pub const SESSION_COOKIE: &str = "vaka_session";
/// The header that carries the CSRF token of the session.
pub const CSRF_HEADER: &str = "x-csrf-token";

/// Who is calling, for access checks and the audit log.
#[derive(Debug, Clone)]
pub struct Caller {
    /// As written in the audit log: `staff:{id}` or `service`.
    pub actor: String,
    /// The member of staff; `None` for the service token.
    pub staff: Option<StaffMember>,
    /// The client's address, for the audit log.
    pub source: Option<String>,
}

impl Caller {
    pub fn role(&self) -> Role {
        self.staff.as_ref().map_or(Role::Admin, |s| s.role)
    }

    pub fn staff_id(&self) -> Option<&str> {
        self.staff.as_ref().map(|s| s.staff_id.as_str())
    }

    /// The name shown on alert actions and calls.
    pub fn display_name(&self) -> String {
        self.staff
            .as_ref()
            .map_or_else(|| "service".to_owned(), |s| s.display_name.clone())
    }

    /// Refuses callers without one of `roles`.
    pub fn require(&self, roles: &[Role]) -> Result<(), ApiError> {
        if roles.contains(&self.role()) {
            Ok(())
        } else {
            Err(ApiError::Forbidden(format!(
                "this needs the role {}",
                roles
                    .iter()
                    .map(|r| r.as_str())
                    .collect::<Vec<_>>()
                    .join(" or ")
            )))
        }
    }
}

/// Compares without leaking, through timing, how much of a guess matched.
pub(crate) fn secrets_match(given: &str, expected: &str) -> bool {
    let (a, b) = (
        Sha256::digest(given.as_bytes()),
        Sha256::digest(expected.as_bytes()),
    );
    a.iter()
        .zip(b.iter())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y))
        == 0
}

/// The token of `Authorization: Bearer …`, or of `?access_token=…` (a
/// script's websocket client cannot always set headers).
fn bearer_token(parts: &Parts) -> Option<String> {
    if let Some(h) = parts.headers.get(header::AUTHORIZATION) {
        return h
            .to_str()
            .ok()
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(|t| t.trim().to_owned());
    }
    let query = parts.uri.query()?;
    url_param(query, "access_token")
}

fn url_param(query: &str, name: &str) -> Option<String> {
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=')?;
        (k == name).then(|| v.to_owned())
    })
}

/// Requests that only read need no CSRF token.
fn changes_something(method: &Method) -> bool {
    !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

fn client_address(parts: &Parts) -> Option<String> {
    parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip().to_string())
}

/// The client's IP address, for the audit log of requests without a
/// [`Caller`] (the login).
pub struct ClientAddress(pub Option<String>);

impl<S: Send + Sync> FromRequestParts<S> for ClientAddress {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(ClientAddress(client_address(parts)))
    }
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let source = client_address(parts);
        if let Some(token) = bearer_token(parts) {
            if !secrets_match(&token, &state.api_token) {
                return Err(ApiError::Unauthorized);
            }
            return Ok(Caller {
                actor: "service".into(),
                staff: None,
                source,
            });
        }
        let jar = CookieJar::from_headers(&parts.headers);
        let cookie = jar.get(SESSION_COOKIE).ok_or(ApiError::Unauthorized)?;
        let session = state
            .store
            .session(&token_digest(cookie.value()), state.clock.now())
            .await?
            .ok_or(ApiError::Unauthorized)?;
        if changes_something(&parts.method) {
            let given = parts
                .headers
                .get(CSRF_HEADER)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            if !secrets_match(given, &session.csrf_token) {
                return Err(ApiError::Csrf);
            }
        }
        let staff = state
            .store
            .staff_member(&session.staff_id)
            .await?
            .ok_or(ApiError::Unauthorized)?;
        Ok(Caller {
            actor: format!("staff:{}", staff.staff_id),
            staff: Some(staff),
            source,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_compare_exactly() {
        assert!(secrets_match("s3cret", "s3cret"));
        assert!(!secrets_match("s3cre", "s3cret"));
        assert!(!secrets_match("", "s3cret"));
    }

    #[test]
    fn query_tokens() {
        assert_eq!(
            url_param("a=1&access_token=xyz", "access_token").as_deref(),
            Some("xyz")
        );
        assert_eq!(url_param("access_token", "access_token"), None);
    }

    #[test]
    fn only_reads_go_without_a_csrf_token() {
        assert!(!changes_something(&Method::GET));
        assert!(changes_something(&Method::POST));
        assert!(changes_something(&Method::PUT));
        assert!(changes_something(&Method::DELETE));
    }
}
