//! The one place where the node's errors become HTTP answers: [`ErrorBody`], the JSON shape of
//! every error answer, [`ErrorCode`], every code it can carry, [`ApiError`], and
//! [`node_error`], the mapping from [`NodeError`] to a status and a stable code.
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
use utoipa::ToSchema;

use crate::error::NodeError;

/// The body of every error answer: `{"error":{"code","message"}}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[schema(as = Error)]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorDetail,
}

/// What went wrong, for programs (`code`) and for people (`message`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ErrorDetail {
    /// A stable, snake_case code (`unknown_contact`, `invalid_input`, ...).
    #[schema(value_type = ErrorCode)]
    pub code: String,
    /// A sentence saying what to fix.
    pub message: String,
}

/// Every code an error answer can carry: the API's contract with programs, spelled once (the
/// OpenAPI document lists exactly these).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// 422: an invite that does not parse or verify.
    BadInvite,
    /// 400: a malformed request axum refused before any handler ran.
    BadRequest,
    /// 400: an upload whose body was cut.
    BodyError,
    /// 503: the node is overloaded; try again (`Retry-After`).
    Busy,
    /// 403: refused by the server.
    Forbidden,
    /// 403: the web app asked for under a `Host` other than this node's loopback address.
    ForbiddenHost,
    /// 403: a request from a web page on another origin.
    ForbiddenOrigin,
    /// 500: an unexpected failure.
    Internal,
    /// 422: a JSON body with the wrong fields or types.
    InvalidBody,
    /// 400 (query, path) or 422 (body): a value the node refused.
    InvalidInput,
    /// 400: a path segment that is not a user id, group id, message id or media hash.
    InvalidPath,
    /// 400: a query string value that does not parse.
    InvalidQuery,
    /// 400: a body that is not JSON.
    MalformedJson,
    /// 410: the media download failed; `POST /v1/media/{hash}/download` tries again.
    MediaFailed,
    /// 409: the media is not (yet) on disk as far as asked.
    MediaIncomplete,
    /// 405: a known route called with a method it does not take.
    MethodNotAllowed,
    /// 404: the media has no preview.
    NoPreview,
    /// 403: only a group's admins may do this.
    NotAdmin,
    /// 404: no such route, group, message or media.
    NotFound,
    /// 403: the local user is not a member of the group.
    NotMember,
    /// 416: a `Range` outside the file.
    RangeNotSatisfiable,
    /// 503: the node is shutting down.
    Stopped,
    /// 500: the node's storage failed.
    Storage,
    /// 413 (or 422 for a QR code): a body, text or file over its limit.
    TooLarge,
    /// 401: no API token, a wrong one, or an invalid or expired media link.
    Unauthorized,
    /// 503: the service is unavailable.
    Unavailable,
    /// 404: the user is not a contact.
    UnknownContact,
    /// 415: a JSON body without `Content-Type: application/json`.
    UnsupportedMediaType,
}

impl ErrorCode {
    /// The code as it travels in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadInvite => "bad_invite",
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::BodyError => "body_error",
            ErrorCode::Busy => "busy",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::ForbiddenHost => "forbidden_host",
            ErrorCode::ForbiddenOrigin => "forbidden_origin",
            ErrorCode::Internal => "internal",
            ErrorCode::InvalidBody => "invalid_body",
            ErrorCode::InvalidInput => "invalid_input",
            ErrorCode::InvalidPath => "invalid_path",
            ErrorCode::InvalidQuery => "invalid_query",
            ErrorCode::MalformedJson => "malformed_json",
            ErrorCode::MediaFailed => "media_failed",
            ErrorCode::MediaIncomplete => "media_incomplete",
            ErrorCode::MethodNotAllowed => "method_not_allowed",
            ErrorCode::NoPreview => "no_preview",
            ErrorCode::NotAdmin => "not_admin",
            ErrorCode::NotFound => "not_found",
            ErrorCode::NotMember => "not_member",
            ErrorCode::RangeNotSatisfiable => "range_not_satisfiable",
            ErrorCode::Stopped => "stopped",
            ErrorCode::Storage => "storage",
            ErrorCode::TooLarge => "too_large",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::UnknownContact => "unknown_contact",
            ErrorCode::UnsupportedMediaType => "unsupported_media_type",
        }
    }
}

impl PartialEq<&str> for ErrorCode {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

/// An error answer: status, stable code and message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ApiError {
    pub(crate) status: StatusCode,
    pub(crate) code: ErrorCode,
    pub(crate) message: String,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, code: ErrorCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }

    /// A 422 for a body that parses as JSON but does not say something acceptable.
    pub(crate) fn body(message: impl Into<String>) -> Self {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            ErrorCode::InvalidBody,
            message,
        )
    }

    /// A 400 for a malformed query string value.
    pub(crate) fn query(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, ErrorCode::InvalidQuery, message)
    }

    /// A 401 with a hint on where the token comes from.
    pub(crate) fn unauthorized(message: &str) -> Self {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            ErrorCode::Unauthorized,
            format!("{message}; send `Authorization: Bearer <token>` (`kith token` prints it)"),
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code.as_str().to_string(),
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
        NodeError::UnknownContact(_) => (StatusCode::NOT_FOUND, ErrorCode::UnknownContact),
        NodeError::InvalidInput(_) => match input {
            Input::Body => (StatusCode::UNPROCESSABLE_ENTITY, ErrorCode::InvalidInput),
            Input::Query => (StatusCode::BAD_REQUEST, ErrorCode::InvalidInput),
        },
        NodeError::TooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, ErrorCode::TooLarge),
        NodeError::BadInvite(_) => (StatusCode::UNPROCESSABLE_ENTITY, ErrorCode::BadInvite),
        NodeError::NotFound(_) => (StatusCode::NOT_FOUND, ErrorCode::NotFound),
        NodeError::NotAdmin(_) => (StatusCode::FORBIDDEN, ErrorCode::NotAdmin),
        NodeError::NotMember(_) => (StatusCode::FORBIDDEN, ErrorCode::NotMember),
        NodeError::Busy => (StatusCode::SERVICE_UNAVAILABLE, ErrorCode::Busy),
        NodeError::Stopped => (StatusCode::SERVICE_UNAVAILABLE, ErrorCode::Stopped),
        NodeError::Storage(_) => {
            tracing::error!(error = %err, "storage failure answering an API call");
            (StatusCode::INTERNAL_SERVER_ERROR, ErrorCode::Storage)
        }
        NodeError::Media(_) => {
            tracing::error!(error = %err, "media file I/O failed");
            (StatusCode::INTERNAL_SERVER_ERROR, ErrorCode::Storage)
        }
    };
    ApiError::new(status, code, message)
}

/// A stable code for an error status we did not produce ourselves.
pub(crate) fn code_for(status: StatusCode) -> ErrorCode {
    match status {
        StatusCode::BAD_REQUEST => ErrorCode::BadRequest,
        StatusCode::UNAUTHORIZED => ErrorCode::Unauthorized,
        StatusCode::FORBIDDEN => ErrorCode::Forbidden,
        StatusCode::NOT_FOUND => ErrorCode::NotFound,
        StatusCode::METHOD_NOT_ALLOWED => ErrorCode::MethodNotAllowed,
        StatusCode::PAYLOAD_TOO_LARGE => ErrorCode::TooLarge,
        StatusCode::UNSUPPORTED_MEDIA_TYPE => ErrorCode::UnsupportedMediaType,
        StatusCode::UNPROCESSABLE_ENTITY => ErrorCode::InvalidBody,
        StatusCode::SERVICE_UNAVAILABLE => ErrorCode::Unavailable,
        s if s.is_client_error() => ErrorCode::BadRequest,
        _ => ErrorCode::Internal,
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
        ErrorCode::NotFound,
        "no such endpoint; see /v1/...",
    )
}

/// The answer to a known route called with a method it does not take.
pub(crate) async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        ErrorCode::MethodNotAllowed,
        "this endpoint does not take that method",
    )
}
