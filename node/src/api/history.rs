//! `GET /v1/search`, `DELETE /v1/conversations/{chat}/messages/{id}` (delete for me) and
//! `GET /v1/backup` (the node's data for `kith backup create`): each turns a request into
//! one [`crate::Node`] call.

use std::str::FromStr;

use axum::{
    extract::{Path, State},
    http::StatusCode,
    routing::{delete, get, post},
    Json, Router,
};
use kith_protocol::GroupId;
use serde::Deserialize;

use super::{
    error::{node_error, ApiError, ErrorBody, Input},
    extract::{parse_message_id, parse_user_id, ApiJson, ApiQuery, PeerPath},
    routes::{parse_page, PageQuery},
    state::ApiState,
};
use crate::{handle::ChatId, view::Page};

/// The search and delete routes (guarded by the caller).
pub(crate) fn routes() -> Router<ApiState> {
    Router::new()
        .route("/v1/search", get(search))
        .route("/v1/conversations/{chat}/messages/{id}", delete(remove))
        .route("/v1/backup", get(backup))
        .route("/v1/conversations/{user_id}/typing", post(typing))
}

/// `POST /v1/conversations/{user}/typing`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct TypingBody {
    /// `true` while the user types, `false` when they stopped without sending.
    typing: bool,
}

/// What `POST /v1/conversations/{user}/typing` answers.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub(super) struct TypingSent {
    /// Whether it left: only over a direct link that is up (never through store peers).
    sent: bool,
}

/// Tells a contact the user is typing: ephemeral, sent only over a direct link that is up,
/// never queued, deposited or stored; the contact's page shows "typing…" for a few seconds.
#[utoipa::path(post, path = "/v1/conversations/{user_id}/typing", operation_id = "typing", tag = "messages",
    params(("user_id" = String, Path, description = "The contact's user id")), request_body = TypingBody,
    responses((status = 200, description = "Whether it left", body = TypingSent),
        (status = 400, description = "`invalid_path`: not a user id", body = ErrorBody),
        (status = 404, description = "`unknown_contact`: not a contact", body = ErrorBody)))]
pub(super) async fn typing(
    State(s): State<ApiState>,
    PeerPath(peer): PeerPath,
    ApiJson(body): ApiJson<TypingBody>,
) -> Result<Json<TypingSent>, ApiError> {
    s.node
        .typing(peer, body.typing)
        .await
        .map(|sent| Json(TypingSent { sent }))
        .map_err(|e| node_error(e, Input::Body))
}

/// The query of `GET /v1/backup`.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct BackupQuery {
    /// Include the media files (`true`; default `false`).
    media: Option<bool>,
}

/// Everything the node holds, unencrypted, for `kith backup create` to seal under the user's
/// passphrase on this machine: every tree of its database and, with `media=true`, its media
/// files (format: `kith_node::backup::BackupContents`, bincode). Guarded by the token like
/// every call; it never leaves loopback.
#[utoipa::path(get, path = "/v1/backup", operation_id = "backup", tag = "me", params(BackupQuery),
    responses((status = 200, description = "The node's data", content_type = "application/octet-stream", body = Vec<u8>),
        (status = 400, description = "`invalid_query`: `media` is not true or false", body = ErrorBody)))]
pub(super) async fn backup(
    State(s): State<ApiState>,
    ApiQuery(query): ApiQuery<BackupQuery>,
) -> Result<impl axum::response::IntoResponse, ApiError> {
    let bytes = s
        .node
        .backup_contents(query.media.unwrap_or(false))
        .await
        .map_err(|e| {
            tracing::error!(error = %e, "backup dump failed");
            ApiError::new(
                axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                super::error::ErrorCode::Storage,
                format!("cannot dump the node's data: {e}"),
            )
        })?;
    Ok((
        [
            (axum::http::header::CONTENT_TYPE, "application/octet-stream"),
            (axum::http::header::CACHE_CONTROL, "no-store"),
        ],
        bytes,
    ))
}

/// The query of `GET /v1/search`: `q` and the paging of a conversation.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct SearchQuery {
    /// The words to find (each must begin a word of the message; at most 256 bytes).
    q: Option<String>,
    /// How many results to skip (default 0).
    offset: Option<String>,
    /// At most this many results (default 50, at most 500).
    count: Option<String>,
}

/// Messages of every conversation (one-to-one and group) whose text or caption holds every
/// word of `q` (the last may be half typed), newest first, paged like a conversation.
#[utoipa::path(get, path = "/v1/search", operation_id = "search", tag = "messages", params(SearchQuery),
    responses((status = 200, description = "The matching messages", body = Page),
        (status = 400, description = "`invalid_query`: `q` missing or empty, or a bad offset or \
            count", body = ErrorBody),
        (status = 413, description = "`too_large`: `q` longer than 256 bytes", body = ErrorBody)))]
pub(super) async fn search(
    State(s): State<ApiState>,
    ApiQuery(query): ApiQuery<SearchQuery>,
) -> Result<Json<Page>, ApiError> {
    let q = query
        .q
        .filter(|q| !q.trim().is_empty())
        .ok_or_else(|| ApiError::query("`q` (the words to search for) is required"))?;
    let page = parse_page(PageQuery {
        offset: query.offset,
        count: query.count,
        since: None,
    })?;
    s.node
        .search(&q, page.offset, page.count)
        .map(Json)
        .map_err(|e| node_error(e, Input::Query))
}

/// Deletes a message from this node only ("delete for me"); nothing is sent to anyone.
#[utoipa::path(delete, path = "/v1/conversations/{chat}/messages/{id}", operation_id = "delete_message", tag = "messages",
    params(("chat" = String, Path, description = "A contact's user id or a group id"),
        ("id" = String, Path, description = "The message id (32 hex digits)")),
    responses((status = 204, description = "Deleted"),
        (status = 400, description = "`invalid_path`: not a user, group or message id", body = ErrorBody),
        (status = 404, description = "`not_found`: no such message in that conversation", body = ErrorBody)))]
pub(super) async fn remove(
    State(s): State<ApiState>,
    Path((chat, id)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let chat = match GroupId::from_str(&chat) {
        Ok(group) => ChatId::Group(group),
        Err(_) => ChatId::User(parse_user_id(&chat)?),
    };
    let id = parse_message_id(&id)?;
    s.node
        .delete_message(chat, id)
        .await
        .map(|()| StatusCode::NO_CONTENT)
        .map_err(|e| node_error(e, Input::Query))
}
