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

use super::{
    error::{node_error, ApiError, Input},
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
#[derive(Serialize)]
struct RequestList {
    requests: Vec<RequestView>,
}

async fn requests(State(s): State<ApiState>) -> Result<Json<RequestList>, ApiError> {
    s.node
        .requests()
        .map(|requests| Json(RequestList { requests }))
        .map_err(|e| node_error(e, Input::Query))
}

async fn accept(
    State(s): State<ApiState>,
    PeerPath(user): PeerPath,
) -> Result<Json<ContactView>, ApiError> {
    s.node
        .accept_request(user)
        .await
        .map(Json)
        .map_err(|e| node_error(e, Input::Query))
}

async fn block(
    State(s): State<ApiState>,
    PeerPath(user): PeerPath,
) -> Result<StatusCode, ApiError> {
    s.node
        .block(user)
        .await
        .map(|()| StatusCode::NO_CONTENT)
        .map_err(|e| node_error(e, Input::Query))
}

async fn remove_contact(
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
#[derive(Serialize)]
struct BlockedList {
    blocked: Vec<BlockedView>,
}

async fn blocked(State(s): State<ApiState>) -> Result<Json<BlockedList>, ApiError> {
    s.node
        .blocked()
        .map(|blocked| Json(BlockedList { blocked }))
        .map_err(|e| node_error(e, Input::Query))
}

async fn unblock(
    State(s): State<ApiState>,
    PeerPath(user): PeerPath,
) -> Result<StatusCode, ApiError> {
    s.node
        .unblock(user)
        .await
        .map(|()| StatusCode::NO_CONTENT)
        .map_err(|e| node_error(e, Input::Query))
}
