//! The one place where the node's errors become HTTP answers: [`ErrorBody`], the JSON shape of
//! every error answer, [`ApiError`], and [`node_error`], the mapping from [`NodeError`] to a
//! status and a stable code.
//!
//! It sits below the API's routes and the web app's, which both answer with it, so neither
//! imports the other for it. It must never call the node.

use axum::{
    http::{
        header::{ALLOW, CONTENT_TYPE, RETRY_AFTER, WWW_AUTHENTICATE},
        HeaderValue, StatusCode,
    },
    response::{IntoResponse, Response},
    Json,
};
use serde::{Deserialize, Serialize};

use crate::error::NodeError;

/// The body of every error answer: `{"error":{"code","message"}}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorDetail,
}

/// What went wrong, for programs (`code`) and for people (`message`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorDetail {
    /// A stable, snake_case code (`unknown_contact`, `invalid_input`, ...).
    pub code: String,
    /// A sentence saying what to fix.
    pub message: String,
}

/// An error answer: status, stable code and message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ApiError {
    pub(crate) status: StatusCode,
    pub(crate) code: &'static str,
    pub(crate) message: String,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }

    /// A 422 for a body that parses as JSON but does not say something acceptable.
    pub(crate) fn body(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_body", message)
    }

    /// A 400 for a malformed query string value.
    pub(crate) fn query(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, "invalid_query", message)
    }

    /// A 401 with a hint on where the token comes from.
    pub(crate) fn unauthorized(message: &str) -> Self {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            format!("{message}; send `Authorization: Bearer <token>` (`kith token` prints it)"),
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code.to_string(),
                message: self.message,
            },
        };
        let mut response = (self.status, Json(body)).into_response();
        let headers = response.headers_mut();
        if self.status == StatusCode::UNAUTHORIZED {
            headers.insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            headers.insert(RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response
    }
}

/// Where the input a node call rejected came from; decides 400 versus 422 for
/// [`NodeError::InvalidInput`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Input {
    /// A JSON body that parsed but is semantically wrong (empty text...): 422.
    Body,
    /// A query or path value: 400.
    Query,
}

/// The one mapping from node errors to HTTP answers.
pub(crate) fn node_error(err: NodeError, input: Input) -> ApiError {
    let message = err.to_string();
    let (status, code) = match &err {
        NodeError::UnknownContact(_) => (StatusCode::NOT_FOUND, "unknown_contact"),
        NodeError::InvalidInput(_) => match input {
            Input::Body => (StatusCode::UNPROCESSABLE_ENTITY, "invalid_input"),
            Input::Query => (StatusCode::BAD_REQUEST, "invalid_input"),
        },
        NodeError::TooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "too_large"),
        NodeError::BadInvite(_) => (StatusCode::UNPROCESSABLE_ENTITY, "bad_invite"),
        NodeError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
        NodeError::NotAdmin(_) => (StatusCode::FORBIDDEN, "not_admin"),
        NodeError::NotMember(_) => (StatusCode::FORBIDDEN, "not_member"),
        NodeError::Busy => (StatusCode::SERVICE_UNAVAILABLE, "busy"),
        NodeError::Stopped => (StatusCode::SERVICE_UNAVAILABLE, "stopped"),
        NodeError::Storage(_) => {
            tracing::error!(error = %err, "storage failure answering an API call");
            (StatusCode::INTERNAL_SERVER_ERROR, "storage")
        }
        NodeError::Media(_) => {
            tracing::error!(error = %err, "media file I/O failed");
            (StatusCode::INTERNAL_SERVER_ERROR, "storage")
        }
    };
    ApiError::new(status, code, message)
}

/// A stable code for an error status we did not produce ourselves.
pub(crate) fn code_for(status: StatusCode) -> &'static str {
    match status {
        StatusCode::BAD_REQUEST => "bad_request",
        StatusCode::UNAUTHORIZED => "unauthorized",
        StatusCode::FORBIDDEN => "forbidden",
        StatusCode::NOT_FOUND => "not_found",
        StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
        StatusCode::PAYLOAD_TOO_LARGE => "too_large",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
        StatusCode::UNPROCESSABLE_ENTITY => "invalid_body",
        StatusCode::SERVICE_UNAVAILABLE => "unavailable",
        s if s.is_client_error() => "bad_request",
        _ => "internal",
    }
}

/// Turns any error answer that is not already JSON (axum's defaults) into the API's shape.
pub(crate) async fn json_errors(response: Response) -> Response {
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    let is_json = response
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if is_json {
        return response;
    }
    let allow = response.headers().get(ALLOW).cloned();
    let reason = status.canonical_reason().unwrap_or("error").to_lowercase();
    let mut replaced = ApiError::new(status, code_for(status), reason).into_response();
    if let Some(allow) = allow {
        replaced.headers_mut().insert(ALLOW, allow);
    }
    replaced
}

/// The answer to an unknown route.
pub(crate) async fn not_found() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        "no such endpoint; see /v1/...",
    )
}

/// The answer to a known route called with a method it does not take.
pub(crate) async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this endpoint does not take that method",
    )
}
