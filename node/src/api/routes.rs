//! The `/v1` endpoints of messaging: each turns a request into one [`crate::Node`] call and
//! its answer into JSON. No business rule lives here.

use std::{convert::Infallible, str::FromStr};

use axum::{
    extract::State,
    http::StatusCode,
    response::sse::{Event as SseEvent, KeepAlive, Sse},
    routing::{get, post},
    Json, Router,
};
use futures::{Stream, StreamExt};
use kith_protocol::{GroupId, UserId};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::broadcast::error::RecvError;

use super::{
    error::{node_error, ApiError, Input},
    extract::{ApiJson, ApiQuery, Chat, ChatPath, PeerPath},
    state::ApiState,
};
use crate::{
    error::NodeError,
    event::Event,
    view::{ContactView, Me, Page, PresenceView, Sent},
};

/// Page size of `GET /v1/conversations/{user_id}` when the client gives no `count`.
pub const DEFAULT_PAGE: usize = 50;

/// The `/v1` routes of the node (without media and the web app's; guarded by the caller).
pub(crate) fn routes() -> Router<ApiState> {
    Router::new()
        .route("/v1/me", get(me))
        .route("/v1/contacts", get(contacts).post(add_contact))
        .route("/v1/messages", post(send))
        .route("/v1/conversations/{user_id}", get(conversation))
        .route("/v1/conversations/{user_id}/read", post(mark_read))
        .route("/v1/presence/{user_id}", get(presence))
        .route("/v1/events", get(events))
        .merge(super::groups::routes())
}

async fn me(State(s): State<ApiState>) -> Result<Json<Me>, ApiError> {
    s.node
        .me()
        .await
        .map(Json)
        .map_err(|e| node_error(e, Input::Query))
}

/// `GET /v1/contacts`.
#[derive(Serialize)]
struct ContactList {
    contacts: Vec<ContactView>,
}

async fn contacts(State(s): State<ApiState>) -> Result<Json<ContactList>, ApiError> {
    s.node
        .contacts()
        .map(|contacts| Json(ContactList { contacts }))
        .map_err(|e| node_error(e, Input::Query))
}

/// `POST /v1/contacts`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AddContact {
    /// An invite string (user id, addresses and key bundle)...
    invite: Option<String>,
    /// ...or a user id alone, whose key bundle is then looked up in the DHT.
    user_id: Option<String>,
    name: Option<String>,
}

async fn add_contact(
    State(s): State<ApiState>,
    ApiJson(body): ApiJson<AddContact>,
) -> Result<(StatusCode, Json<ContactView>), ApiError> {
    let result = match (body.invite, body.user_id) {
        (Some(invite), None) => s.node.add_contact(&invite, body.name).await,
        (None, Some(user)) => {
            let user = UserId::from_str(&user).map_err(|e| {
                node_error(
                    NodeError::InvalidInput(format!("`user_id` is not a user id: {e}")),
                    Input::Body,
                )
            })?;
            s.node.add_contact_by_id(user, body.name).await
        }
        _ => Err(NodeError::InvalidInput(
            "give exactly one of `invite` or `user_id`".into(),
        )),
    };
    result
        .map(|c| (StatusCode::CREATED, Json(c)))
        .map_err(|e| node_error(e, Input::Body))
}

/// `POST /v1/messages` as the client sends it; there is deliberately no `from`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SendBody {
    to: Option<String>,
    group: Option<String>,
    text: String,
    client_meta: Option<Value>,
}

/// A send request, checked.
#[derive(Debug, PartialEq)]
pub(super) struct SendRequest {
    pub(super) to: Chat,
    pub(super) text: String,
    pub(super) client_meta: Value,
}

/// Checks a `POST /v1/messages` body: no `from`, a valid `to`, `client_meta` an object.
pub(super) fn parse_send(body: Value) -> Result<SendRequest, ApiError> {
    let Some(fields) = body.as_object() else {
        return Err(ApiError::body(
            r#"expected a JSON object {"to", "text", "client_meta"?}"#,
        ));
    };
    if fields.contains_key("from") {
        return Err(ApiError::body(
            "`from` cannot be set: messages are always sent as this node's own user",
        ));
    }
    let body: SendBody = serde_json::from_value(body).map_err(|e| ApiError::body(e.to_string()))?;
    let to = match (body.to, body.group) {
        (Some(to), None) => Chat::User(
            UserId::from_str(&to)
                .map_err(|e| ApiError::body(format!("`to` is not a user id: {e}")))?,
        ),
        (None, Some(group)) => Chat::Group(
            GroupId::from_str(&group)
                .map_err(|e| ApiError::body(format!("`group` is not a group id: {e}")))?,
        ),
        _ => return Err(ApiError::body("give exactly one of `to` or `group`")),
    };
    let client_meta = match body.client_meta {
        None | Some(Value::Null) => Value::Object(serde_json::Map::new()),
        Some(meta @ Value::Object(_)) => meta,
        Some(_) => return Err(ApiError::body("`client_meta` must be a JSON object")),
    };
    Ok(SendRequest {
        to,
        text: body.text,
        client_meta,
    })
}

async fn send(
    State(s): State<ApiState>,
    ApiJson(body): ApiJson<Value>,
) -> Result<(StatusCode, Json<Sent>), ApiError> {
    let req = parse_send(body)?;
    match req.to {
        Chat::User(to) => s.node.send_text(to, req.text, req.client_meta).await,
        Chat::Group(group) => {
            s.node
                .send_group_text(group, req.text, req.client_meta)
                .await
        }
    }
    .map(|sent| (StatusCode::CREATED, Json(sent)))
    .map_err(|e| node_error(e, Input::Body))
}

/// The query of `GET /v1/conversations/{user_id}`, as text so bad values get a clear 400.
#[derive(Debug, Default, Deserialize)]
pub(super) struct PageQuery {
    pub(super) offset: Option<String>,
    pub(super) count: Option<String>,
    pub(super) since: Option<String>,
}

/// A checked page request.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct PageRequest {
    pub(super) offset: usize,
    pub(super) count: usize,
    pub(super) since_ms: Option<u64>,
}

/// Checks the paging query: offset (default 0), count (default [`DEFAULT_PAGE`]), since
/// (RFC 3339 or unix milliseconds).
pub(super) fn parse_page(q: PageQuery) -> Result<PageRequest, ApiError> {
    let number = |name: &str, value: Option<String>, default: usize| match value {
        None => Ok(default),
        Some(v) => v
            .parse::<usize>()
            .map_err(|_| ApiError::query(format!("`{name}` must be a non-negative integer"))),
    };
    let offset = number("offset", q.offset, 0)?;
    let count = number("count", q.count, DEFAULT_PAGE)?;
    let since_ms = match q.since {
        None => None,
        Some(s) => Some(crate::time::parse_since(&s).ok_or_else(|| {
            ApiError::query("`since` must be an RFC 3339 time or unix milliseconds")
        })?),
    };
    Ok(PageRequest {
        offset,
        count,
        since_ms,
    })
}

async fn conversation(
    State(s): State<ApiState>,
    ChatPath(chat): ChatPath,
    ApiQuery(query): ApiQuery<PageQuery>,
) -> Result<Json<Page>, ApiError> {
    let page = parse_page(query)?;
    match chat {
        Chat::User(peer) => s
            .node
            .conversation(&peer, page.offset, page.count, page.since_ms),
        Chat::Group(group) => {
            s.node
                .group_conversation(&group, page.offset, page.count, page.since_ms)
        }
    }
    .map(Json)
    .map_err(|e| node_error(e, Input::Query))
}

/// `POST /v1/conversations/{user_id}/read`.
#[derive(Serialize)]
struct Marked {
    marked: usize,
}

async fn mark_read(
    State(s): State<ApiState>,
    ChatPath(chat): ChatPath,
) -> Result<Json<Marked>, ApiError> {
    match chat {
        Chat::User(peer) => s.node.mark_read(peer).await,
        Chat::Group(group) => s.node.mark_group_read(group).await,
    }
    .map(|marked| Json(Marked { marked }))
    .map_err(|e| node_error(e, Input::Query))
}

async fn presence(
    State(s): State<ApiState>,
    PeerPath(peer): PeerPath,
) -> Result<Json<PresenceView>, ApiError> {
    s.node
        .presence(peer)
        .await
        .map(Json)
        .map_err(|e| node_error(e, Input::Query))
}

/// The SSE `event:` name of an event: its JSON `type`.
fn event_name(event: &Event) -> &'static str {
    match event {
        Event::Message { .. } => "message",
        Event::Status { .. } => "status",
        Event::Presence { .. } => "presence",
        Event::MediaProgress { .. } => "media_progress",
        Event::Group { .. } => "group",
        Event::Contact { .. } => "contact",
    }
}

/// One node event as an SSE frame.
fn sse_event(event: &Event) -> SseEvent {
    match serde_json::to_string(event) {
        Ok(data) => SseEvent::default().event(event_name(event)).data(data),
        Err(e) => SseEvent::default().comment(format!("event not encodable: {e}")),
    }
}

/// The frame sent when this subscriber fell behind and `missed` events were dropped for it.
fn lagged_event(missed: u64) -> SseEvent {
    let data = serde_json::json!({ "type": "lagged", "missed": missed });
    SseEvent::default().event("lagged").data(data.to_string())
}

async fn events(
    State(s): State<ApiState>,
) -> Sse<impl Stream<Item = Result<SseEvent, Infallible>>> {
    let receiver = s.node.subscribe();
    let stream = futures::stream::unfold(receiver, |mut receiver| async move {
        let frame = match receiver.recv().await {
            Ok(event) => sse_event(&event),
            Err(RecvError::Lagged(missed)) => lagged_event(missed),
            Err(RecvError::Closed) => return None,
        };
        Some((Ok(frame), receiver))
    })
    .take_until(s.shutdown.cancelled_owned());
    Sse::new(stream).keep_alive(KeepAlive::default())
}
