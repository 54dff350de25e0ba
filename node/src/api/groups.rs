//! The `/v1/groups` endpoints and `GET /v1/messages/{id}/info`: each turns a request into one
//! [`crate::Node`] call and its answer into JSON.

use std::str::FromStr;

use axum::{
    extract::{Path, State},
    http::StatusCode,
    routing::{delete, get, post},
    Json, Router,
};
use kith_protocol::{group::GroupChange, GroupId, UserId};
use serde::{Deserialize, Serialize};

use super::{
    error::{node_error, ApiError, Input},
    extract::{parse_group_id, parse_message_id, parse_user_id, ApiJson},
    state::ApiState,
};
use crate::{
    error::NodeError,
    view::{GroupView, MessageInfo},
};

/// The group routes (guarded by the caller).
pub(crate) fn routes() -> Router<ApiState> {
    Router::new()
        .route("/v1/groups", get(list).post(create))
        .route("/v1/groups/{id}", get(show).patch(rename))
        .route("/v1/groups/{id}/members", post(add))
        .route("/v1/groups/{id}/members/{user_id}", delete(remove))
        .route("/v1/groups/{id}/leave", post(leave))
        .route("/v1/messages/{id}/info", get(info))
}

/// `POST /v1/groups`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateBody {
    name: String,
    members: Vec<String>,
}

fn body_user(raw: &str) -> Result<UserId, ApiError> {
    UserId::from_str(raw).map_err(|e| {
        node_error(
            NodeError::InvalidInput(format!("`{raw}` is not a user id: {e}")),
            Input::Body,
        )
    })
}

async fn create(
    State(s): State<ApiState>,
    ApiJson(body): ApiJson<CreateBody>,
) -> Result<(StatusCode, Json<GroupView>), ApiError> {
    let members = body
        .members
        .iter()
        .map(|m| body_user(m))
        .collect::<Result<Vec<_>, _>>()?;
    s.node
        .create_group(body.name, members)
        .await
        .map(|g| (StatusCode::CREATED, Json(g)))
        .map_err(|e| node_error(e, Input::Body))
}

/// `GET /v1/groups`.
#[derive(Serialize)]
struct GroupList {
    groups: Vec<GroupView>,
}

async fn list(State(s): State<ApiState>) -> Result<Json<GroupList>, ApiError> {
    s.node
        .groups()
        .map(|groups| Json(GroupList { groups }))
        .map_err(|e| node_error(e, Input::Query))
}

async fn show(
    State(s): State<ApiState>,
    Path(id): Path<String>,
) -> Result<Json<GroupView>, ApiError> {
    let group = parse_group_id(&id)?;
    s.node
        .group(&group)
        .map(Json)
        .map_err(|e| node_error(e, Input::Query))
}

async fn change(
    s: &ApiState,
    group: GroupId,
    change: GroupChange,
) -> Result<Json<GroupView>, ApiError> {
    s.node
        .change_group(group, change)
        .await
        .map(Json)
        .map_err(|e| node_error(e, Input::Body))
}

/// `PATCH /v1/groups/{id}`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RenameBody {
    name: String,
}

async fn rename(
    State(s): State<ApiState>,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<RenameBody>,
) -> Result<Json<GroupView>, ApiError> {
    let group = parse_group_id(&id)?;
    change(&s, group, GroupChange::Rename(body.name)).await
}

/// `POST /v1/groups/{id}/members`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AddBody {
    user_id: String,
}

async fn add(
    State(s): State<ApiState>,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<AddBody>,
) -> Result<Json<GroupView>, ApiError> {
    let group = parse_group_id(&id)?;
    let user = body_user(&body.user_id)?;
    change(&s, group, GroupChange::Add(user)).await
}

async fn remove(
    State(s): State<ApiState>,
    Path((id, user)): Path<(String, String)>,
) -> Result<Json<GroupView>, ApiError> {
    let group = parse_group_id(&id)?;
    let user = parse_user_id(&user)?;
    change(&s, group, GroupChange::Remove(user)).await
}

async fn leave(
    State(s): State<ApiState>,
    Path(id): Path<String>,
) -> Result<Json<GroupView>, ApiError> {
    let group = parse_group_id(&id)?;
    change(&s, group, GroupChange::Leave).await
}

async fn info(
    State(s): State<ApiState>,
    Path(id): Path<String>,
) -> Result<Json<MessageInfo>, ApiError> {
    let id = parse_message_id(&id)?;
    s.node
        .message_info(&id)
        .map(Json)
        .map_err(|e| node_error(e, Input::Query))
}
