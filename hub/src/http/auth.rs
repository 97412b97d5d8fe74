//! Authentication as an extractor: a handler that takes a [`Caller`]
//! cannot forget to check. For now the API is protected by one bearer token
//! from the configuration; staff logins replace it with the dashboard.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use sha2::{Digest, Sha256};

use super::AppState;
use super::error::ApiError;

/// Who is calling, for the audit log.
#[derive(Debug, Clone)]
pub struct Caller {
    pub actor: String,
    pub source: Option<String>,
}

/// Compares without leaking, through timing, how much of a guess matched.
fn token_matches(given: &str, expected: &str) -> bool {
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
/// browser's websocket cannot set headers).
fn presented_token(parts: &Parts) -> Option<String> {
    if let Some(h) = parts.headers.get(axum::http::header::AUTHORIZATION) {
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

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let token = presented_token(parts).ok_or(ApiError::Unauthorized)?;
        if !token_matches(&token, &state.api_token) {
            return Err(ApiError::Unauthorized);
        }
        let source = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0.ip().to_string());
        Ok(Caller {
            actor: "api-token".into(),
            source,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_compare_exactly() {
        assert!(token_matches("s3cret", "s3cret"));
        assert!(!token_matches("s3cre", "s3cret"));
        assert!(!token_matches("", "s3cret"));
    }

    #[test]
    fn query_tokens() {
        assert_eq!(
            url_param("a=1&access_token=xyz", "access_token").as_deref(),
            Some("xyz")
        );
        assert_eq!(url_param("access_token", "access_token"), None);
    }
}
