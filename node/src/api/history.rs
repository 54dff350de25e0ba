//! `GET /v1/search` and `DELETE /v1/conversations/{chat}/messages/{id}` (delete for me):
//! each turns a request into one [`crate::Node`] call.

use std::str::FromStr;

use axum::{
    extract::{Path, State},
    http::StatusCode,
    routing::{delete, get},
    Json, Router,
};
use kith_protocol::GroupId;
use serde::Deserialize;

use super::{
    error::{node_error, ApiError, Input},
    extract::{parse_message_id, parse_user_id, ApiQuery},
    routes::{parse_page, PageQuery},
    state::ApiState,
};
use crate::{handle::ChatId, view::Page};

/// The search and delete routes (guarded by the caller).
pub(crate) fn routes() -> Router<ApiState> {
    Router::new()
        .route("/v1/search", get(search))
        .route("/v1/conversations/{chat}/messages/{id}", delete(remove))
}

/// The query of `GET /v1/search`: `q` and the paging of a conversation.
#[derive(Debug, Default, Deserialize)]
struct SearchQuery {
    q: Option<String>,
    offset: Option<String>,
    count: Option<String>,
}

async fn search(
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

async fn remove(
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
