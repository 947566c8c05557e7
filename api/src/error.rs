//! The one error type of the API and its mapping to HTTP.
//!
//! Every failure a handler or an extractor can meet becomes an [`ApiError`], answered as
//! `{"code": "...", "message": "...", "details": ...}` with the matching status. Client
//! mistakes get a message that names what to fix; server faults (5xx) answer a vague
//! message and log the detail instead, so storage internals never leak to a client.

use axum::Json;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use fleetpulse_domain::store::StoreError;
use serde::Serialize;
use serde_json::{Value, json};

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// A query or path parameter is missing its expected form (400).
    #[error("{message}")]
    InvalidParameter {
        /// The parameter as the client spelled it (`limit`, `from`, `serial`, …).
        parameter: &'static str,
        message: String,
    },
    /// The query string could not be read at all, e.g. an unknown parameter (400).
    #[error("{0}")]
    InvalidQuery(String),
    /// A path segment could not be read (400).
    #[error("{0}")]
    InvalidPath(String),
    /// The request body is not JSON, or not JSON of the expected shape (400, 413, 415, 422).
    #[error("{message}")]
    InvalidBody { status: StatusCode, message: String },
    /// The body is well-formed but names something that does not exist, e.g. a model that
    /// is not in the catalog (422).
    #[error("{message}")]
    Unprocessable {
        code: &'static str,
        message: String,
        details: Option<Value>,
    },
    /// The resource does not exist (404).
    #[error("{0}")]
    NotFound(String),
    /// No route matches the path (404).
    #[error("no route for {method} {path}")]
    NoRoute { method: String, path: String },
    /// The route exists but not for this method (405).
    #[error("{method} is not allowed on {path}")]
    MethodNotAllowed { method: String, path: String },
    /// The resource exists already (409).
    #[error("{0}")]
    Conflict(String),
    /// No credentials, or credentials that are not valid (401).
    #[error("{0}")]
    Unauthorized(String),
    /// Valid credentials whose role may not do this (403).
    #[error("{message}")]
    Forbidden { message: String, details: Value },
    /// A refusal with its own status and code, e.g. an illegal transition (409), a stale
    /// `If-Match` (412) or a missing one (428).
    #[error("{message}")]
    Refused {
        status: StatusCode,
        code: &'static str,
        message: String,
        details: Option<Value>,
    },
    /// The store cannot answer right now; retrying later may help (503). Logged, not shown.
    #[error("storage unavailable: {0}")]
    Unavailable(String),
    /// A fault on our side (500). Logged, not shown.
    #[error("internal error: {0}")]
    Internal(String),
}

/// The JSON body of every error answer.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorBody<'a> {
    /// Stable machine-readable code, e.g. `invalid_parameter`, `illegal_transition`.
    pub code: &'a str,
    /// A sentence for a person: what is wrong and how to fix it.
    pub message: String,
    /// Structured detail (the parameter, the allowed next states, …) or null.
    pub details: Option<Value>,
}

impl ApiError {
    /// A parameter that is present but malformed or out of range.
    pub fn parameter(parameter: &'static str, message: impl Into<String>) -> Self {
        ApiError::InvalidParameter {
            parameter,
            message: message.into(),
        }
    }

    /// The HTTP status this error answers with.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::InvalidParameter { .. }
            | ApiError::InvalidQuery(_)
            | ApiError::InvalidPath(_) => StatusCode::BAD_REQUEST,
            ApiError::InvalidBody { status, .. } => *status,
            ApiError::Unprocessable { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::NotFound(_) | ApiError::NoRoute { .. } => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden { .. } => StatusCode::FORBIDDEN,
            ApiError::Refused { status, .. } => *status,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The stable machine-readable code of the answer.
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::InvalidParameter { .. } => "invalid_parameter",
            ApiError::InvalidQuery(_) => "invalid_query",
            ApiError::InvalidPath(_) => "invalid_path",
            ApiError::InvalidBody { status, .. } => match *status {
                StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
                StatusCode::PAYLOAD_TOO_LARGE => "payload_too_large",
                StatusCode::UNPROCESSABLE_ENTITY => "invalid_body",
                _ => "malformed_body",
            },
            ApiError::Unprocessable { code, .. } => code,
            ApiError::NotFound(_) | ApiError::NoRoute { .. } => "not_found",
            ApiError::MethodNotAllowed { .. } => "method_not_allowed",
            ApiError::Conflict(_) => "conflict",
            ApiError::Unauthorized(_) => "unauthorized",
            ApiError::Forbidden { .. } => "forbidden",
            ApiError::Refused { code, .. } => code,
            ApiError::Unavailable(_) => "unavailable",
            ApiError::Internal(_) => "internal",
        }
    }

    /// The structured detail of the answer (the parameter, the field, …), if any.
    pub fn details(&self) -> Option<Value> {
        match self {
            ApiError::InvalidParameter { parameter, .. } => Some(json!({ "parameter": parameter })),
            ApiError::Unprocessable { details, .. } | ApiError::Refused { details, .. } => {
                details.clone()
            }
            ApiError::Forbidden { details, .. } => Some(details.clone()),
            _ => None,
        }
    }

    /// What the client is told. Server faults stay vague; their detail goes to the log.
    fn public_message(&self) -> String {
        match self {
            ApiError::Unavailable(_) => {
                "service temporarily unavailable; try again later".to_owned()
            }
            ApiError::Internal(_) => "internal error".to_owned(),
            other => other.to_string(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match &self {
            ApiError::Internal(detail) => tracing::error!(error = %detail, "request failed"),
            ApiError::Unavailable(detail) => {
                tracing::warn!(error = %detail, "request failed: store unavailable")
            }
            _ => {}
        }
        let body = ErrorBody {
            code: self.code(),
            message: self.public_message(),
            details: self.details(),
        };
        let mut response = (self.status(), Json(body)).into_response();
        if matches!(self, ApiError::Unauthorized(_)) {
            response.headers_mut().insert(
                axum::http::header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Bearer realm=\"fleetpulse\""),
            );
        }
        response
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound(what) => ApiError::NotFound(format!("{what} not found")),
            StoreError::Conflict(msg) => ApiError::Conflict(msg),
            StoreError::Invalid(msg) => ApiError::Unprocessable {
                code: "invalid",
                message: msg,
                details: None,
            },
            StoreError::Unavailable(msg) => ApiError::Unavailable(msg),
            StoreError::Internal(msg) => ApiError::Internal(msg),
        }
    }
}

impl From<QueryRejection> for ApiError {
    fn from(r: QueryRejection) -> Self {
        // serde speaks of fields; the client sent parameters
        let text = r.body_text();
        let detail = text
            .strip_prefix("Failed to deserialize query string: ")
            .unwrap_or(&text);
        ApiError::InvalidQuery(format!(
            "query string: {}",
            detail
                .replace("unknown field", "unknown parameter")
                .replace("duplicate field", "repeated parameter")
        ))
    }
}

/// What axum puts before serde's own words in a [`JsonRejection::JsonDataError`].
const JSON_DATA_PREFIX: &str = "Failed to deserialize the JSON body into the target type: ";

impl From<JsonRejection> for ApiError {
    fn from(r: JsonRejection) -> Self {
        let message = match &r {
            JsonRejection::MissingJsonContentType(_) => {
                "send the body as JSON with the header `Content-Type: application/json`".to_owned()
            }
            // names the field: "colour: unknown field `colour`, expected one of …"
            JsonRejection::JsonDataError(e) => {
                let text = e.body_text();
                format!(
                    "request body: {}",
                    text.strip_prefix(JSON_DATA_PREFIX).unwrap_or(&text)
                )
            }
            _ => r.body_text(),
        };
        let status = r.status();
        if status.is_server_error() {
            return ApiError::Internal(message);
        }
        ApiError::InvalidBody { status, message }
    }
}

impl From<PathRejection> for ApiError {
    fn from(r: PathRejection) -> Self {
        let status = r.status();
        if status.is_server_error() {
            return ApiError::Internal(r.body_text());
        }
        ApiError::InvalidPath(r.body_text())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_errors_map_to_their_status() {
        let cases = [
            (
                StoreError::NotFound("order 7".into()),
                StatusCode::NOT_FOUND,
            ),
            (StoreError::Conflict("exists".into()), StatusCode::CONFLICT),
            (
                StoreError::Invalid("bad model".into()),
                StatusCode::UNPROCESSABLE_ENTITY,
            ),
            (
                StoreError::Unavailable("locked".into()),
                StatusCode::SERVICE_UNAVAILABLE,
            ),
            (
                StoreError::Internal("disk".into()),
                StatusCode::INTERNAL_SERVER_ERROR,
            ),
        ];
        for (e, status) in cases {
            assert_eq!(ApiError::from(e).status(), status);
        }
    }

    #[test]
    fn server_faults_do_not_leak_their_detail() {
        let e = ApiError::Internal("table readings is corrupt at page 7".into());
        assert_eq!(e.public_message(), "internal error");
        let e = ApiError::Unavailable("database is locked".into());
        assert!(!e.public_message().contains("locked"));
    }
}
