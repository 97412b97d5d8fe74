//! The one place that decides HTTP statuses. Internals are logged, never
//! sent: a client sees a code and a sentence, not a SQL error.

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::json;

use crate::alerts::ActionError;
use crate::engine::task::ActionFailure;
use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("log in first (or present a valid bearer token)")]
    Unauthorized,
    #[error("wrong user name or password")]
    BadCredentials,
    #[error("{0}")]
    Locked(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("the X-CSRF-Token header is missing or does not match the session")]
    Csrf,
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error("{0}")]
    Conflict(String),
    #[error("the service is shutting down or not ready")]
    Unavailable,
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl ApiError {
    fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            ApiError::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad_request"),
            ApiError::Unauthorized => (StatusCode::UNAUTHORIZED, "unauthorized"),
            ApiError::BadCredentials => (StatusCode::UNAUTHORIZED, "bad_credentials"),
            ApiError::Locked(_) => (StatusCode::LOCKED, "locked"),
            ApiError::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden"),
            ApiError::Csrf => (StatusCode::FORBIDDEN, "csrf"),
            ApiError::NotFound(_) | ApiError::Store(StoreError::NotFound(_)) => {
                (StatusCode::NOT_FOUND, "not_found")
            }
            ApiError::Conflict(_) | ApiError::Store(StoreError::Conflict(_)) => {
                (StatusCode::CONFLICT, "conflict")
            }
            ApiError::Unavailable => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            ApiError::Store(e) if is_nul_in_text(e) => (StatusCode::BAD_REQUEST, "bad_request"),
            ApiError::Store(StoreError::Db(sqlx::Error::PoolTimedOut | sqlx::Error::Io(_))) => {
                (StatusCode::SERVICE_UNAVAILABLE, "database_unavailable")
            }
            ApiError::Store(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        }
    }
}

/// PostgreSQL cannot store a NUL character in text (SQLSTATE 22021,
/// `character_not_in_repertoire`) nor `\u0000` in jsonb (22P05,
/// `untranslatable_character`); SQLite can. Any id, name or note a client
/// sends may hold one, so it is the client's mistake, not ours: 400
/// instead of 500, on every route at once.
fn is_nul_in_text(e: &StoreError) -> bool {
    matches!(e, StoreError::Db(sqlx::Error::Database(db))
        if matches!(db.code().as_deref(), Some("22021" | "22P05")))
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        let detail = if status.is_server_error() {
            tracing::error!(error = %self, "request failed");
            match status {
                StatusCode::SERVICE_UNAVAILABLE => {
                    "the database is not reachable; try again shortly".to_owned()
                }
                _ => "internal error; it has been logged".to_owned(),
            }
        } else if matches!(&self, ApiError::Store(e) if is_nul_in_text(e)) {
            "text must not contain NUL (\\u0000) characters".to_owned()
        } else {
            self.to_string()
        };
        let mut response =
            (status, axum::Json(json!({"error": code, "detail": detail}))).into_response();
        if matches!(self, ApiError::Unauthorized) {
            response.headers_mut().insert(
                "www-authenticate",
                axum::http::HeaderValue::from_static("Bearer"),
            );
        }
        response
    }
}

impl From<ActionFailure> for ApiError {
    fn from(e: ActionFailure) -> Self {
        match e {
            ActionFailure::Rejected(ActionError::NotFound) => ApiError::NotFound("alert"),
            ActionFailure::Rejected(ActionError::Invalid(m)) => ApiError::BadRequest(m),
            ActionFailure::Rejected(ActionError::NotSnoozable) => {
                ApiError::BadRequest("a high alert cannot be snoozed".into())
            }
            ActionFailure::Rejected(e) => ApiError::Conflict(e.to_string()),
            ActionFailure::Store(e) => ApiError::Store(e),
        }
    }
}

/// `Json` that answers malformed bodies with the API's own error body.
pub struct AppJson<T>(pub T);

impl<S: Send + Sync, T: serde::de::DeserializeOwned> FromRequest<S> for AppJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: axum::extract::Request, state: &S) -> Result<Self, ApiError> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(v)) => Ok(AppJson(v)),
            Err(e) => Err(ApiError::BadRequest(json_rejection(e))),
        }
    }
}

impl<T: Serialize> IntoResponse for AppJson<T> {
    fn into_response(self) -> Response {
        axum::Json(self.0).into_response()
    }
}

fn json_rejection(e: JsonRejection) -> String {
    match e {
        JsonRejection::JsonDataError(e) => format!("invalid request body: {}", e.body_text()),
        JsonRejection::JsonSyntaxError(_) => "the request body is not valid JSON".into(),
        JsonRejection::MissingJsonContentType(_) => {
            "expected Content-Type: application/json".into()
        }
        other => other.body_text(),
    }
}

/// `Query` that answers bad parameters with the API's own error body.
pub struct AppQuery<T>(pub T);

impl<S: Send + Sync, T: serde::de::DeserializeOwned> FromRequestParts<S> for AppQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, ApiError> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(v)) => Ok(AppQuery(v)),
            Err(e) => Err(ApiError::BadRequest(query_rejection(e))),
        }
    }
}

fn query_rejection(e: QueryRejection) -> String {
    format!("invalid query: {}", e.body_text())
}

/// `Path` that answers a bad path parameter (an alert id that is not an
/// integer) with the API's own JSON error body, not axum's plain text.
pub struct AppPath<T>(pub T);

impl<S: Send + Sync, T: serde::de::DeserializeOwned + Send> FromRequestParts<S> for AppPath<T> {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, ApiError> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(v)) => Ok(AppPath(v)),
            Err(e) => Err(ApiError::BadRequest(path_rejection(e))),
        }
    }
}

fn path_rejection(e: PathRejection) -> String {
    format!("invalid path: {}", e.body_text())
}
