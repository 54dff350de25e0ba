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
use utoipa::{IntoParams, ToSchema};

use super::{
    error::{node_error, ApiError, ErrorBody, Input},
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

/// The local user: user id, listen addresses and invite.
#[utoipa::path(get, path = "/v1/me", operation_id = "get_me", tag = "me",
    responses((status = 200, description = "The local user", body = Me)))]
pub(super) async fn me(State(s): State<ApiState>) -> Result<Json<Me>, ApiError> {
    s.node
        .me()
        .await
        .map(Json)
        .map_err(|e| node_error(e, Input::Query))
}

/// `GET /v1/contacts`.
#[derive(Serialize, ToSchema)]
pub(super) struct ContactList {
    /// Every contact.
    contacts: Vec<ContactView>,
}

/// The contacts.
#[utoipa::path(get, path = "/v1/contacts", operation_id = "list_contacts", tag = "contacts",
    responses((status = 200, description = "Every contact", body = ContactList)))]
pub(super) async fn contacts(State(s): State<ApiState>) -> Result<Json<ContactList>, ApiError> {
    s.node
        .contacts()
        .map(|contacts| Json(ContactList { contacts }))
        .map_err(|e| node_error(e, Input::Query))
}

/// `POST /v1/contacts`: exactly one of `invite` or `user_id`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct AddContact {
    /// An invite string (user id, addresses and key bundle)...
    invite: Option<String>,
    /// ...or a user id alone, whose key bundle is then looked up in the DHT.
    user_id: Option<String>,
    /// The name to show for them.
    name: Option<String>,
}

/// Adds a contact from their invite, or by user id alone.
#[utoipa::path(post, path = "/v1/contacts", operation_id = "add_contact", tag = "contacts", request_body = AddContact,
    responses(
        (status = 201, description = "The new contact", body = ContactView),
        (status = 422, description = "`bad_invite`: the invite does not parse or verify; \
            `invalid_input`: neither or both of `invite` and `user_id`, or a bad user id; \
            `invalid_body`: wrong fields or types", body = ErrorBody),
    ))]
pub(super) async fn add_contact(
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

/// `POST /v1/messages` as the client sends it: exactly one of `to` or `group`; there is
/// deliberately no `from`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct SendBody {
    /// The contact's user id.
    to: Option<String>,
    /// Or a group id (32 hex digits).
    group: Option<String>,
    /// The text (not empty).
    text: String,
    /// Metadata stored and delivered with the message: a JSON object.
    #[schema(value_type = Option<Object>)]
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

/// Sends a text to a contact or a group; answers once the message is durably stored.
#[utoipa::path(post, path = "/v1/messages", operation_id = "send_message", tag = "messages", request_body = SendBody,
    responses(
        (status = 201, description = "Stored and queued; `status` is `pending`", body = Sent),
        (status = 403, description = "`not_member`: the local user is not in the group; \
            `forbidden_origin`", body = ErrorBody),
        (status = 404, description = "`unknown_contact`: `to` is not a contact; \
            `not_found`: no such group", body = ErrorBody),
        (status = 422, description = "`invalid_body`: `from` given, neither or both of `to` \
            and `group`, a bad id or a `client_meta` that is not an object; `invalid_input`: \
            an empty text", body = ErrorBody),
    ))]
pub(super) async fn send(
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
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct PageQuery {
    /// Skip this many newest messages (default 0; a page's `next_offset`).
    #[param(value_type = Option<u64>)]
    pub(super) offset: Option<String>,
    /// How many messages, at most 200 (default 50).
    #[param(value_type = Option<u64>)]
    pub(super) count: Option<String>,
    /// Only messages sent at or after this time: RFC 3339 or unix milliseconds.
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

/// A page of the conversation with a contact or a group, newest first.
#[utoipa::path(get, path = "/v1/conversations/{user_id}", operation_id = "get_conversation", tag = "messages",
    params(("user_id" = String, Path, description = "A user id, or a group id (32 hex digits)"),
        PageQuery),
    responses(
        (status = 200, description = "A page, newest first", body = Page),
        (status = 400, description = "`invalid_path`: not a user or group id; \
            `invalid_query`: a bad `offset`, `count` or `since`; `invalid_input`: a `count` \
            outside 1..=200", body = ErrorBody),
        (status = 404, description = "`unknown_contact`: neither a contact nor a request; \
            `not_found`: no such group", body = ErrorBody),
    ))]
pub(super) async fn conversation(
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
#[derive(Serialize, ToSchema)]
pub(super) struct Marked {
    /// How many messages were newly marked read.
    marked: usize,
}

/// Marks a conversation read (and sends read receipts).
#[utoipa::path(post, path = "/v1/conversations/{user_id}/read", operation_id = "mark_read", tag = "messages",
    params(("user_id" = String, Path, description = "A user id, or a group id (32 hex digits)")),
    responses(
        (status = 200, description = "How many were marked", body = Marked),
        (status = 400, description = "`invalid_path`: not a user or group id", body = ErrorBody),
        (status = 404, description = "`unknown_contact`: neither a contact nor a request; \
            `not_found`: no such group", body = ErrorBody),
    ))]
pub(super) async fn mark_read(
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

/// A contact's presence, as the local user may see it.
#[utoipa::path(get, path = "/v1/presence/{user_id}", operation_id = "get_presence", tag = "presence",
    params(("user_id" = String, Path, description = "The contact's user id")),
    responses(
        (status = 200, description = "Online, or when last seen", body = PresenceView),
        (status = 400, description = "`invalid_path`: not a user id", body = ErrorBody),
        (status = 404, description = "`unknown_contact`: not a contact", body = ErrorBody),
    ))]
pub(super) async fn presence(
    State(s): State<ApiState>,
    PeerPath(peer): PeerPath,
) -> Result<Json<PresenceView>, ApiError> {
    s.node
        .presence(peer)
        .await
        .map(Json)
        .map_err(|e| node_error(e, Input::Query))
}

/// What one `/v1/events` frame carries: a node event, or word that this subscriber missed
/// some. Its `type` is also the frame's SSE `event:` name.
#[derive(Serialize, ToSchema)]
#[serde(untagged)]
pub(super) enum EventFrame {
    /// Something that happened in the node.
    Event(Box<Event>),
    /// This subscriber fell behind.
    Lagged(Lagged),
}

/// The frame sent when a subscriber fell behind: events were dropped for it, so what it
/// shows should be read again.
#[derive(Serialize, ToSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub(super) enum Lagged {
    /// `{"type":"lagged","missed":N}`.
    Lagged {
        /// How many events were dropped.
        missed: u64,
    },
}

impl EventFrame {
    /// The SSE `event:` name of a frame: its JSON `type`.
    pub(super) fn name(&self) -> &'static str {
        match self {
            EventFrame::Event(event) => match **event {
                Event::Message { .. } => "message",
                Event::Status { .. } => "status",
                Event::Presence { .. } => "presence",
                Event::MediaProgress { .. } => "media_progress",
                Event::Group { .. } => "group",
                Event::Contact { .. } => "contact",
                Event::Typing { .. } => "typing",
            },
            EventFrame::Lagged(_) => "lagged",
        }
    }

    /// The frame as SSE: `event: <type>` and its JSON as `data`.
    fn sse(&self) -> SseEvent {
        match serde_json::to_string(self) {
            Ok(data) => SseEvent::default().event(self.name()).data(data),
            Err(e) => SseEvent::default().comment(format!("event not encodable: {e}")),
        }
    }
}

/// The live event stream (Server-Sent Events) until the node stops.
#[utoipa::path(get, path = "/v1/events", operation_id = "events", tag = "events",
    responses((status = 200, description = "An SSE stream. Each frame's `event:` is the \
        `type` of its JSON `data`: `message`, `status`, `presence`, `media_progress`, `group` \
        (an `Event`), or `lagged` when this subscriber fell behind; comments keep it alive.",
        content_type = "text/event-stream", body = EventFrame)))]
pub(super) async fn events(
    State(s): State<ApiState>,
) -> Sse<impl Stream<Item = Result<SseEvent, Infallible>>> {
    let receiver = s.node.subscribe();
    let stream = futures::stream::unfold(receiver, |mut receiver| async move {
        let frame = match receiver.recv().await {
            Ok(event) => EventFrame::Event(Box::new(event)).sse(),
            Err(RecvError::Lagged(missed)) => EventFrame::Lagged(Lagged::Lagged { missed }).sse(),
            Err(RecvError::Closed) => return None,
        };
        Some((Ok(frame), receiver))
    })
    .take_until(s.shutdown.cancelled_owned());
    Sse::new(stream).keep_alive(KeepAlive::default())
}
