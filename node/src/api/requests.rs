//! The `/v1` endpoints of message requests and blocking: listing who wrote without being a
//! contact, accepting or blocking them, removing contacts, and the blocked list. Each turns a
//! request into one [`crate::Node`] call; no rule lives here.

use axum::{
    extract::State,
    http::StatusCode,
    routing::{delete, get, post},
    Json, Router,
};
use serde::Serialize;
use utoipa::ToSchema;

use super::{
    error::{node_error, ApiError, ErrorBody, Input},
    extract::PeerPath,
    state::ApiState,
};
use crate::view::{BlockedView, ContactView, RequestView};

/// The routes (guarded by the caller).
pub(crate) fn routes() -> Router<ApiState> {
    Router::new()
        .route("/v1/requests", get(requests))
        .route("/v1/requests/{user_id}/accept", post(accept))
        .route("/v1/requests/{user_id}/block", post(block))
        .route("/v1/contacts/{user_id}", delete(remove_contact))
        .route("/v1/blocked", get(blocked))
        .route("/v1/blocked/{user_id}", delete(unblock))
}

/// `GET /v1/requests`.
#[derive(Serialize, ToSchema)]
pub(super) struct RequestList {
    /// The pending requests.
    requests: Vec<RequestView>,
}

/// Message requests: people who wrote without being a contact (their messages:
/// `GET /v1/conversations/{user_id}`). Nothing is sent to them until accepted.
#[utoipa::path(get, path = "/v1/requests", operation_id = "list_requests", tag = "requests",
    responses((status = 200, description = "The pending requests", body = RequestList)))]
pub(super) async fn requests(State(s): State<ApiState>) -> Result<Json<RequestList>, ApiError> {
    s.node
        .requests()
        .map(|requests| Json(RequestList { requests }))
        .map_err(|e| node_error(e, Input::Query))
}

/// Accepts a request: its sender becomes a contact.
#[utoipa::path(post, path = "/v1/requests/{user_id}/accept", operation_id = "accept_request", tag = "requests", params(("user_id" = String, Path, description = "Their user id")),
    responses(
        (status = 200, description = "The new contact", body = ContactView),
        (status = 400, description = "`invalid_path`: not a user id", body = ErrorBody),
        (status = 404, description = "`not_found`: no request from them", body = ErrorBody),
    ))]
pub(super) async fn accept(
    State(s): State<ApiState>,
    PeerPath(user): PeerPath,
) -> Result<Json<ContactView>, ApiError> {
    s.node
        .accept_request(user)
        .await
        .map(Json)
        .map_err(|e| node_error(e, Input::Query))
}

/// Blocks a user (a request or a contact): what they send is dropped; they are not told.
#[utoipa::path(post, path = "/v1/requests/{user_id}/block", operation_id = "block_user", tag = "requests", params(("user_id" = String, Path, description = "Their user id")),
    responses((status = 204, description = "Blocked"), (status = 400, description = "`invalid_path`: not a user id", body = ErrorBody)))]
pub(super) async fn block(
    State(s): State<ApiState>,
    PeerPath(user): PeerPath,
) -> Result<StatusCode, ApiError> {
    s.node
        .block(user)
        .await
        .map(|()| StatusCode::NO_CONTENT)
        .map_err(|e| node_error(e, Input::Query))
}

/// Removes a contact (their history stays; what was still to be sent to them is dropped).
#[utoipa::path(delete, path = "/v1/contacts/{user_id}", operation_id = "remove_contact", tag = "contacts", params(("user_id" = String, Path, description = "Their user id")),
    responses(
        (status = 204, description = "Removed"),
        (status = 400, description = "`invalid_path`: not a user id", body = ErrorBody),
        (status = 404, description = "`unknown_contact`: not a contact", body = ErrorBody),
    ))]
pub(super) async fn remove_contact(
    State(s): State<ApiState>,
    PeerPath(user): PeerPath,
) -> Result<StatusCode, ApiError> {
    s.node
        .remove_contact(user)
        .await
        .map(|()| StatusCode::NO_CONTENT)
        .map_err(|e| node_error(e, Input::Query))
}

/// `GET /v1/blocked`.
#[derive(Serialize, ToSchema)]
pub(super) struct BlockedList {
    /// The blocked users.
    blocked: Vec<BlockedView>,
}

/// The blocked users.
#[utoipa::path(get, path = "/v1/blocked", operation_id = "list_blocked", tag = "requests",
    responses((status = 200, description = "The blocked users", body = BlockedList)))]
pub(super) async fn blocked(State(s): State<ApiState>) -> Result<Json<BlockedList>, ApiError> {
    s.node
        .blocked()
        .map(|blocked| Json(BlockedList { blocked }))
        .map_err(|e| node_error(e, Input::Query))
}

/// Unblocks a user.
#[utoipa::path(delete, path = "/v1/blocked/{user_id}", operation_id = "unblock_user", tag = "requests", params(("user_id" = String, Path, description = "Their user id")),
    responses(
        (status = 204, description = "Unblocked"),
        (status = 400, description = "`invalid_path`: not a user id", body = ErrorBody),
        (status = 404, description = "`not_found`: they are not blocked", body = ErrorBody),
    ))]
pub(super) async fn unblock(
    State(s): State<ApiState>,
    PeerPath(user): PeerPath,
) -> Result<StatusCode, ApiError> {
    s.node
        .unblock(user)
        .await
        .map(|()| StatusCode::NO_CONTENT)
        .map_err(|e| node_error(e, Input::Query))
}
