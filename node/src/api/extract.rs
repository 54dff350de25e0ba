//! Request extractors whose rejections answer in the API's error shape: JSON bodies (with the
//! body limit), query strings and the `{user_id}` path segment.
//!
//! Shared by the API's routes and the web app's; it must never call the node.

use std::str::FromStr;

use axum::{
    extract::{
        rejection::{JsonRejection, QueryRejection},
        FromRequest, FromRequestParts, Path, Query, Request,
    },
    http::{request::Parts, StatusCode},
    Json,
};
use kith_protocol::UserId;
use serde::de::DeserializeOwned;

use super::error::{code_for, ApiError, ErrorCode};

/// Largest JSON request body, in bytes: a message text plus its metadata fits many times over,
/// and a client cannot make the node buffer more than this per request.
pub const BODY_LIMIT: usize = 256 * 1024;

/// Maps axum's JSON body rejections to the API's error shape.
pub(crate) fn json_rejection(rejection: JsonRejection) -> ApiError {
    match rejection {
        JsonRejection::JsonDataError(e) => ApiError::body(e.body_text()),
        JsonRejection::JsonSyntaxError(e) => ApiError::new(
            StatusCode::BAD_REQUEST,
            ErrorCode::MalformedJson,
            e.body_text(),
        ),
        JsonRejection::MissingJsonContentType(_) => ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ErrorCode::UnsupportedMediaType,
            "expected `Content-Type: application/json`",
        ),
        JsonRejection::BytesRejection(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                ErrorCode::TooLarge,
                format!("request body is over the {BODY_LIMIT}-byte limit"),
            )
        }
        other => {
            let status = other.status();
            ApiError::new(status, code_for(status), other.body_text())
        }
    }
}

/// A JSON body whose rejections answer in the API's error shape.
pub(crate) struct ApiJson<T>(pub(crate) T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        Json::<T>::from_request(req, state)
            .await
            .map(|Json(value)| ApiJson(value))
            .map_err(json_rejection)
    }
}

/// A query string whose rejections answer in the API's error shape (400).
pub(crate) struct ApiQuery<T>(pub(crate) T);

impl<S, T> FromRequestParts<S> for ApiQuery<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        Query::<T>::from_request_parts(parts, state)
            .await
            .map(|Query(value)| ApiQuery(value))
            .map_err(|e: QueryRejection| ApiError::query(e.body_text()))
    }
}

/// The `{user_id}` path segment, parsed as a [`UserId`] (400 if it is not one).
pub(crate) struct PeerPath(pub(crate) UserId);

impl<S: Send + Sync> FromRequestParts<S> for PeerPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let Path(raw) = Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|e| {
                let status = e.status();
                let code = if status.is_client_error() {
                    ErrorCode::InvalidPath
                } else {
                    ErrorCode::Internal
                };
                ApiError::new(status, code, e.body_text())
            })?;
        parse_user_id(&raw).map(PeerPath)
    }
}

/// Whose conversation a path or body names: a contact's or a group's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Chat {
    /// A one-to-one conversation.
    User(UserId),
    /// A group chat.
    Group(kith_protocol::GroupId),
}

/// The `{user_id}` path segment of a conversation: a group id (32 hex digits) or a user id.
pub(crate) struct ChatPath(pub(crate) Chat);

impl<S: Send + Sync> FromRequestParts<S> for ChatPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let Path(raw) = Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|e| ApiError::new(e.status(), ErrorCode::InvalidPath, e.body_text()))?;
        if let Ok(group) = kith_protocol::GroupId::from_str(&raw) {
            return Ok(ChatPath(Chat::Group(group)));
        }
        parse_user_id(&raw).map(|u| ChatPath(Chat::User(u)))
    }
}

/// Parses a group id from a path segment.
pub(crate) fn parse_group_id(raw: &str) -> Result<kith_protocol::GroupId, ApiError> {
    kith_protocol::GroupId::from_str(raw).map_err(|_| {
        let shown: String = raw.chars().take(80).collect();
        ApiError::new(
            StatusCode::BAD_REQUEST,
            ErrorCode::InvalidPath,
            format!("`{shown}` is not a group id (32 hex digits)"),
        )
    })
}

/// Parses a user id from a path segment.
pub(crate) fn parse_user_id(raw: &str) -> Result<UserId, ApiError> {
    UserId::from_str(raw).map_err(|e| {
        let shown: String = raw.chars().take(80).collect();
        ApiError::new(
            StatusCode::BAD_REQUEST,
            ErrorCode::InvalidPath,
            format!("`{shown}` is not a user id: {e}"),
        )
    })
}

/// Parses a message id (32 hex digits) from a path segment.
pub(crate) fn parse_message_id(raw: &str) -> Result<kith_protocol::MessageId, ApiError> {
    kith_protocol::MessageId::from_str(raw).map_err(|_| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            ErrorCode::InvalidPath,
            "a message id is 32 hex digits",
        )
    })
}
