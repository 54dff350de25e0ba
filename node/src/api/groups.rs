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
use utoipa::ToSchema;

use super::{
    error::{node_error, ApiError, ErrorBody, Input},
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
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct CreateBody {
    /// The group's name (1 to 100 bytes).
    name: String,
    /// The contacts' user ids (the local user joins as admin).
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

/// Creates a group with some contacts; the local user is its admin.
#[utoipa::path(post, path = "/v1/groups", operation_id = "create_group", tag = "groups", request_body = CreateBody,
    responses(
        (status = 201, description = "The new group", body = GroupView),
        (status = 404, description = "`unknown_contact`: a member is not a contact", body = ErrorBody),
        (status = 422, description = "`invalid_input`: a bad name or user id, or too many \
            members; `invalid_body`", body = ErrorBody),
    ))]
pub(super) async fn create(
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
#[derive(Serialize, ToSchema)]
pub(super) struct GroupList {
    /// The groups, those left included.
    groups: Vec<GroupView>,
}

/// The local user's groups (and those it left).
#[utoipa::path(get, path = "/v1/groups", operation_id = "list_groups", tag = "groups",
    responses((status = 200, description = "Every group", body = GroupList)))]
pub(super) async fn list(State(s): State<ApiState>) -> Result<Json<GroupList>, ApiError> {
    s.node
        .groups()
        .map(|groups| Json(GroupList { groups }))
        .map_err(|e| node_error(e, Input::Query))
}

/// A group: name, epoch, members and admins.
#[utoipa::path(get, path = "/v1/groups/{id}", operation_id = "get_group", tag = "groups", params(("id" = String, Path, description = "The group id (32 hex digits)")),
    responses(
        (status = 200, description = "The group", body = GroupView),
        (status = 400, description = "`invalid_path`: not a group id", body = ErrorBody),
        (status = 404, description = "`not_found`: no such group", body = ErrorBody),
    ))]
pub(super) async fn show(
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
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct RenameBody {
    /// The new name (1 to 100 bytes).
    name: String,
}

/// Renames a group (admins only).
#[utoipa::path(patch, path = "/v1/groups/{id}", operation_id = "rename_group", tag = "groups", params(("id" = String, Path, description = "The group id (32 hex digits)")),
    request_body = RenameBody,
    responses(
        (status = 200, description = "The group as it is now", body = GroupView),
        (status = 400, description = "`invalid_path`: not a group id; `malformed_json`", body = ErrorBody),
        (status = 403, description = "`not_admin`: only admins may do this; `not_member`: \
            the local user is not a member; `forbidden_origin`", body = ErrorBody),
        (status = 404, description = "`not_found`: no such group", body = ErrorBody),
    ))]
pub(super) async fn rename(
    State(s): State<ApiState>,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<RenameBody>,
) -> Result<Json<GroupView>, ApiError> {
    let group = parse_group_id(&id)?;
    change(&s, group, GroupChange::Rename(body.name)).await
}

/// `POST /v1/groups/{id}/members`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct AddBody {
    /// The contact to add.
    user_id: String,
}

/// Adds a contact to a group (admins only).
#[utoipa::path(post, path = "/v1/groups/{id}/members", operation_id = "add_member", tag = "groups", params(("id" = String, Path, description = "The group id (32 hex digits)")),
    request_body = AddBody,
    responses(
        (status = 200, description = "The group as it is now", body = GroupView),
        (status = 400, description = "`invalid_path`: not a group id; `malformed_json`", body = ErrorBody),
        (status = 403, description = "`not_admin`: only admins may do this; `not_member`: \
            the local user is not a member; `forbidden_origin`", body = ErrorBody),
        (status = 404, description = "`not_found`: no such group; `unknown_contact`: the user \
            is not a contact", body = ErrorBody),
    ))]
pub(super) async fn add(
    State(s): State<ApiState>,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<AddBody>,
) -> Result<Json<GroupView>, ApiError> {
    let group = parse_group_id(&id)?;
    let user = body_user(&body.user_id)?;
    change(&s, group, GroupChange::Add(user)).await
}

/// Removes a member (admins only); they cannot read what follows.
#[utoipa::path(delete, path = "/v1/groups/{id}/members/{user_id}", operation_id = "remove_member", tag = "groups",
    params(("id" = String, Path, description = "The group id (32 hex digits)"), ("user_id" = String, Path, description = "The member's user id")),
    responses(
        (status = 200, description = "The group as it is now", body = GroupView),
        (status = 400, description = "`invalid_path`: not a group or user id", body = ErrorBody),
        (status = 403, description = "`not_admin`: only admins may do this; `not_member`: \
            the local user is not a member; `forbidden_origin`", body = ErrorBody),
        (status = 404, description = "`not_found`: no such group", body = ErrorBody),
        (status = 422, description = "`invalid_input`: the user is not a member", body = ErrorBody),
    ))]
pub(super) async fn remove(
    State(s): State<ApiState>,
    Path((id, user)): Path<(String, String)>,
) -> Result<Json<GroupView>, ApiError> {
    let group = parse_group_id(&id)?;
    let user = parse_user_id(&user)?;
    change(&s, group, GroupChange::Remove(user)).await
}

/// Leaves a group.
#[utoipa::path(post, path = "/v1/groups/{id}/leave", operation_id = "leave_group", tag = "groups", params(("id" = String, Path, description = "The group id (32 hex digits)")),
    responses(
        (status = 200, description = "The group as it is now (`active` false)", body = GroupView),
        (status = 400, description = "`invalid_path`: not a group id", body = ErrorBody),
        (status = 403, description = "`not_member`: the local user is not a member; \
            `forbidden_origin`", body = ErrorBody),
        (status = 404, description = "`not_found`: no such group", body = ErrorBody),
    ))]
pub(super) async fn leave(
    State(s): State<ApiState>,
    Path(id): Path<String>,
) -> Result<Json<GroupView>, ApiError> {
    let group = parse_group_id(&id)?;
    change(&s, group, GroupChange::Leave).await
}

/// A sent group message's status per member (the message's own is the slowest member's).
#[utoipa::path(get, path = "/v1/messages/{id}/info", operation_id = "message_info", tag = "groups",
    params(("id" = String, Path, description = "The message id (32 hex digits)")),
    responses(
        (status = 200, description = "Each member's status", body = MessageInfo),
        (status = 400, description = "`invalid_path`: not a message id", body = ErrorBody),
        (status = 404, description = "`not_found`: no such sent group message", body = ErrorBody),
    ))]
pub(super) async fn info(
    State(s): State<ApiState>,
    Path(id): Path<String>,
) -> Result<Json<MessageInfo>, ApiError> {
    let id = parse_message_id(&id)?;
    s.node
        .message_info(&id)
        .map(Json)
        .map_err(|e| node_error(e, Input::Query))
}
