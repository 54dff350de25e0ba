//! The node's REST API: the only way local clients (the `kith` CLI, a UI, tests) drive a node.
//!
//! It exists to turn HTTP into [`Node`] calls and back, and nothing more: every business rule
//! lives behind the handle. This file owns the HTTP edge's safety: bearer-token auth compared
//! in constant time, the `Origin` check that keeps web pages out, body limits, and the one
//! place ([`node_error`]) where a [`NodeError`] becomes an HTTP status. Every error, including
//! axum's own extractor rejections and unknown routes, answers with the same JSON shape,
//! [`ErrorBody`].

use std::{convert::Infallible, str::FromStr, sync::Arc};

use axum::{
    extract::{
        rejection::{JsonRejection, QueryRejection},
        DefaultBodyLimit, FromRequest, FromRequestParts, Path, Query, Request, State,
    },
    http::{
        header::{ALLOW, AUTHORIZATION, CONTENT_TYPE, HOST, ORIGIN, RETRY_AFTER, WWW_AUTHENTICATE},
        request::Parts,
        HeaderMap, HeaderValue, StatusCode,
    },
    middleware::{self, Next},
    response::{
        sse::{Event as SseEvent, KeepAlive, Sse},
        IntoResponse, Response,
    },
    routing::{get, post, put},
    Json, Router,
};
use futures::{Stream, StreamExt};
use kith_protocol::UserId;
use serde::{de::DeserializeOwned, Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;

use crate::handle::{ContactView, Event, Me, Node, NodeError, PresenceView, Sent};

mod media;

/// Largest JSON request body, in bytes: a message text plus its metadata fits many times over,
/// and a client cannot make the node buffer more than this per request.
pub const BODY_LIMIT: usize = 256 * 1024;

/// Page size of `GET /v1/conversations/{user_id}` when the client gives no `count`.
pub const DEFAULT_PAGE: usize = 50;

/// The body of every error answer: `{"error":{"code","message"}}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorDetail,
}

/// What went wrong, for programs (`code`) and for people (`message`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorDetail {
    /// A stable, snake_case code (`unknown_contact`, `invalid_input`, ...).
    pub code: String,
    /// A sentence saying what to fix.
    pub message: String,
}

/// An error answer: status, stable code and message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }

    /// A 422 for a body that parses as JSON but does not say something acceptable.
    fn body(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_body", message)
    }

    /// A 400 for a malformed query string value.
    fn query(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, "invalid_query", message)
    }

    /// A 401 with a hint on where the token comes from.
    fn unauthorized(message: &str) -> Self {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            format!("{message}; send `Authorization: Bearer <token>` (`kith token` prints it)"),
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code.to_string(),
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
        NodeError::UnknownContact(_) => (StatusCode::NOT_FOUND, "unknown_contact"),
        NodeError::InvalidInput(_) => match input {
            Input::Body => (StatusCode::UNPROCESSABLE_ENTITY, "invalid_input"),
            Input::Query => (StatusCode::BAD_REQUEST, "invalid_input"),
        },
        NodeError::TooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "too_large"),
        NodeError::BadInvite(_) => (StatusCode::UNPROCESSABLE_ENTITY, "bad_invite"),
        NodeError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
        NodeError::Busy => (StatusCode::SERVICE_UNAVAILABLE, "busy"),
        NodeError::Stopped => (StatusCode::SERVICE_UNAVAILABLE, "stopped"),
        NodeError::Storage(_) => {
            tracing::error!(error = %err, "storage failure answering an API call");
            (StatusCode::INTERNAL_SERVER_ERROR, "storage")
        }
    };
    ApiError::new(status, code, message)
}

/// A stable code for an error status we did not produce ourselves.
fn code_for(status: StatusCode) -> &'static str {
    match status {
        StatusCode::BAD_REQUEST => "bad_request",
        StatusCode::UNAUTHORIZED => "unauthorized",
        StatusCode::FORBIDDEN => "forbidden",
        StatusCode::NOT_FOUND => "not_found",
        StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
        StatusCode::PAYLOAD_TOO_LARGE => "too_large",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
        StatusCode::UNPROCESSABLE_ENTITY => "invalid_body",
        StatusCode::SERVICE_UNAVAILABLE => "unavailable",
        s if s.is_client_error() => "bad_request",
        _ => "internal",
    }
}

/// Maps axum's JSON body rejections to the API's error shape.
fn json_rejection(rejection: JsonRejection) -> ApiError {
    match rejection {
        JsonRejection::JsonDataError(e) => ApiError::body(e.body_text()),
        JsonRejection::JsonSyntaxError(e) => {
            ApiError::new(StatusCode::BAD_REQUEST, "malformed_json", e.body_text())
        }
        JsonRejection::MissingJsonContentType(_) => ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "expected `Content-Type: application/json`",
        ),
        JsonRejection::BytesRejection(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too_large",
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
struct ApiJson<T>(T);

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
struct ApiQuery<T>(T);

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
struct PeerPath(UserId);

impl<S: Send + Sync> FromRequestParts<S> for PeerPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let Path(raw) = Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|e| {
                let status = e.status();
                let code = if status.is_client_error() {
                    "invalid_path"
                } else {
                    "internal"
                };
                ApiError::new(status, code, e.body_text())
            })?;
        parse_user_id(&raw).map(PeerPath)
    }
}

/// Parses a user id from a path segment.
fn parse_user_id(raw: &str) -> Result<UserId, ApiError> {
    UserId::from_str(raw).map_err(|e| {
        let shown: String = raw.chars().take(80).collect();
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_path",
            format!("`{shown}` is not a user id: {e}"),
        )
    })
}

/// What the auth and origin guard needs to know.
#[derive(Clone)]
struct Guard {
    /// The API token every request must present.
    token: Arc<str>,
    /// The port the API listens on, when known; otherwise the `Host` header's port is used.
    port: Option<u16>,
    /// Key of media links (see [`media::link_key`]).
    link_key: Arc<[u8; 32]>,
}

/// Everything handlers need.
#[derive(Clone)]
struct ApiState {
    /// The node the API drives.
    node: Node,
    /// Key of the media links handed to `<video>` and `<img>` elements (from the token).
    link_key: Arc<[u8; 32]>,
    /// Ends `/v1/events` streams so graceful shutdown does not wait for them forever.
    shutdown: CancellationToken,
}

/// Compares two byte strings in time that depends only on their lengths.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

/// The token of an `Authorization: Bearer <token>` header value (scheme case-insensitive).
fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// Whether `origin` is this API's own loopback origin on `port`.
fn origin_allowed(origin: &str, port: u16) -> bool {
    ["127.0.0.1", "localhost", "[::1]"]
        .iter()
        .any(|host| origin == format!("http://{host}:{port}"))
}

/// The port named in the `Host` header, if any.
fn host_port(headers: &HeaderMap) -> Option<u16> {
    let host = headers.get(HOST)?.to_str().ok()?;
    host.rsplit_once(':')?.1.parse().ok()
}

/// Checks the `Origin` header (403) and the bearer token (401) before any handler runs.
async fn guard(State(guard): State<Guard>, req: Request, next: Next) -> Response {
    if let Some(origin) = req.headers().get(ORIGIN) {
        let port = guard.port.or_else(|| host_port(req.headers()));
        let allowed = match (origin.to_str(), port) {
            (Ok(origin), Some(port)) => origin_allowed(origin, port),
            _ => false,
        };
        if !allowed {
            return ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden_origin",
                "requests from web pages on other origins are refused; \
                 only http://127.0.0.1:<port> and http://localhost:<port> of this API may call it",
            )
            .into_response();
        }
    }
    // A media link stands in for the token on exactly one media path until it expires, so
    // that `<video src>` can stream with Range requests (elements cannot send headers).
    if req.headers().get(AUTHORIZATION).is_none() {
        match media::check_link(&guard.link_key, req.method(), req.uri()) {
            Some(true) => return next.run(req).await,
            Some(false) => {
                return ApiError::unauthorized("media link is invalid or expired").into_response()
            }
            None => {}
        }
    }
    let presented = match req.headers().get(AUTHORIZATION) {
        None => return ApiError::unauthorized("missing API token").into_response(),
        Some(value) => value.to_str().ok().and_then(bearer_token),
    };
    match presented {
        Some(token) if constant_time_eq(token.as_bytes(), guard.token.as_bytes()) => {
            next.run(req).await
        }
        _ => ApiError::unauthorized("wrong API token").into_response(),
    }
}

/// Turns any error answer that is not already JSON (axum's defaults) into the API's shape.
async fn json_errors(response: Response) -> Response {
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

async fn not_found() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        "no such endpoint; see /v1/...",
    )
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this endpoint does not take that method",
    )
}

/// Adds what every route shares: JSON 404/405, the body limit, the guard and the JSON error
/// safety net (outermost).
fn harden(routes: Router, guard_state: Guard) -> Router {
    routes
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(middleware::from_fn_with_state(guard_state, guard))
        .layer(middleware::map_response(json_errors))
}

fn build(node: Node, token: String, port: Option<u16>, shutdown: CancellationToken) -> Router {
    let routes = Router::new()
        .route("/v1/me", get(me))
        .route("/v1/contacts", get(contacts).post(add_contact))
        .route("/v1/messages", post(send))
        .route("/v1/conversations/{user_id}", get(conversation))
        .route("/v1/conversations/{user_id}/read", post(mark_read))
        .route("/v1/presence/{user_id}", get(presence))
        .route("/v1/events", get(events))
        .route("/v1/settings", put(settings))
        .merge(media::routes())
        .with_state(ApiState {
            node: node.clone(),
            link_key: Arc::new(media::link_key(&token)),
            shutdown,
        })
        .merge(crate::web::api_routes(node));
    let guard_state = Guard {
        link_key: Arc::new(media::link_key(&token)),
        token: token.into(),
        port,
    };
    // The web app's assets hold no secret: they are merged outside the guard.
    harden(routes, guard_state).merge(crate::web::assets(port))
}

/// The API's routes for `node`, guarded by `token`.
///
/// The `Origin` check compares against the port in the request's `Host` header; [`serve`]
/// pins it to the listener's port instead.
pub fn router(node: Node, token: String) -> Router {
    build(node, token, None, CancellationToken::new())
}

/// Serves the API on `listener` until `shutdown` is cancelled, then finishes in-flight
/// requests and ends event streams.
pub async fn serve(
    listener: tokio::net::TcpListener,
    node: Node,
    token: String,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let port = listener.local_addr()?.port();
    let app = build(node, token, Some(port), shutdown.clone());
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
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
    to: String,
    text: String,
    client_meta: Option<Value>,
}

/// A send request, checked.
#[derive(Debug, PartialEq)]
struct SendRequest {
    to: UserId,
    text: String,
    client_meta: Value,
}

/// Checks a `POST /v1/messages` body: no `from`, a valid `to`, `client_meta` an object.
fn parse_send(body: Value) -> Result<SendRequest, ApiError> {
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
    let to = UserId::from_str(&body.to)
        .map_err(|e| ApiError::body(format!("`to` is not a user id: {e}")))?;
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
    s.node
        .send_text(req.to, req.text, req.client_meta)
        .await
        .map(|sent| (StatusCode::CREATED, Json(sent)))
        .map_err(|e| node_error(e, Input::Body))
}

/// The query of `GET /v1/conversations/{user_id}`, as text so bad values get a clear 400.
#[derive(Debug, Default, Deserialize)]
struct PageQuery {
    offset: Option<String>,
    count: Option<String>,
    since: Option<String>,
}

/// A checked page request.
#[derive(Debug, PartialEq, Eq)]
struct PageRequest {
    offset: usize,
    count: usize,
    since_ms: Option<u64>,
}

/// Checks the paging query: offset (default 0), count (default [`DEFAULT_PAGE`]), since
/// (RFC 3339 or unix milliseconds).
fn parse_page(q: PageQuery) -> Result<PageRequest, ApiError> {
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
    PeerPath(peer): PeerPath,
    ApiQuery(query): ApiQuery<PageQuery>,
) -> Result<Json<crate::handle::Page>, ApiError> {
    let page = parse_page(query)?;
    s.node
        .conversation(&peer, page.offset, page.count, page.since_ms)
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
    PeerPath(peer): PeerPath,
) -> Result<Json<Marked>, ApiError> {
    s.node
        .mark_read(peer)
        .await
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

/// `PUT /v1/settings`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    share_last_seen: bool,
}

async fn settings(
    State(s): State<ApiState>,
    ApiJson(body): ApiJson<Settings>,
) -> Result<StatusCode, ApiError> {
    s.node
        .set_share_presence(body.share_last_seen)
        .await
        .map(|()| StatusCode::NO_CONTENT)
        .map_err(|e| node_error(e, Input::Body))
}

/// The SSE `event:` name of an event: its JSON `type`.
fn event_name(event: &Event) -> &'static str {
    match event {
        Event::Message { .. } => "message",
        Event::Status { .. } => "status",
        Event::Presence { .. } => "presence",
        Event::MediaProgress { .. } => "media_progress",
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

#[cfg(test)]
mod tests {
    use super::*;

    fn user() -> UserId {
        let key = libp2p::identity::Keypair::generate_ed25519();
        UserId::from_peer_id(key.public().to_peer_id()).expect("ed25519 peer id")
    }

    #[test]
    fn node_errors_map_to_documented_statuses() {
        let cases = [
            (
                NodeError::UnknownContact("x".into()),
                Input::Query,
                404,
                "unknown_contact",
            ),
            (
                NodeError::InvalidInput("x".into()),
                Input::Body,
                422,
                "invalid_input",
            ),
            (
                NodeError::InvalidInput("x".into()),
                Input::Query,
                400,
                "invalid_input",
            ),
            (
                NodeError::TooLarge {
                    what: "text",
                    len: 2,
                    max: 1,
                },
                Input::Body,
                413,
                "too_large",
            ),
            (
                NodeError::BadInvite("x".into()),
                Input::Body,
                422,
                "bad_invite",
            ),
            (NodeError::Busy, Input::Body, 503, "busy"),
            (NodeError::Stopped, Input::Body, 503, "stopped"),
        ];
        for (err, input, status, code) in cases {
            let mapped = node_error(err, input);
            assert_eq!(mapped.status.as_u16(), status, "{code}");
            assert_eq!(mapped.code, code);
            assert!(!mapped.message.is_empty());
        }
    }

    #[test]
    fn bearer_parsing_accepts_only_bearer_scheme() {
        assert_eq!(bearer_token("Bearer abc"), Some("abc"));
        assert_eq!(bearer_token("bearer  abc "), Some("abc"));
        assert_eq!(bearer_token("Basic abc"), None);
        assert_eq!(bearer_token("Bearer"), None);
        assert_eq!(bearer_token("Bearer   "), None);
        assert_eq!(bearer_token("abc"), None);
    }

    #[test]
    fn token_comparison_is_exact() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secret2"));
        assert!(!constant_time_eq(b"", b"x"));
    }

    #[test]
    fn only_loopback_origins_of_this_port_pass() {
        assert!(origin_allowed("http://127.0.0.1:7878", 7878));
        assert!(origin_allowed("http://localhost:7878", 7878));
        assert!(origin_allowed("http://[::1]:7878", 7878));
        assert!(!origin_allowed("http://127.0.0.1:7879", 7878));
        assert!(!origin_allowed("https://127.0.0.1:7878", 7878));
        assert!(!origin_allowed("http://evil.example:7878", 7878));
        assert!(!origin_allowed("null", 7878));
    }

    #[test]
    fn send_rejects_from_and_non_object_meta() {
        let to = user().to_string();
        let err = parse_send(serde_json::json!({"to": to, "text": "hi", "from": to}));
        let err = err.expect_err("from must be refused");
        assert_eq!(err.status, StatusCode::UNPROCESSABLE_ENTITY);
        assert!(err.message.contains("`from`"), "{}", err.message);

        let err = parse_send(serde_json::json!({"to": to, "text": "hi", "client_meta": [1]}));
        assert_eq!(
            err.expect_err("array meta").status,
            StatusCode::UNPROCESSABLE_ENTITY
        );

        let err = parse_send(serde_json::json!({"to": to, "text": "hi", "extra": 1}));
        assert_eq!(
            err.expect_err("unknown field").status,
            StatusCode::UNPROCESSABLE_ENTITY
        );

        let err = parse_send(serde_json::json!({"to": "nobody", "text": "hi"}));
        assert_eq!(
            err.expect_err("bad to").status,
            StatusCode::UNPROCESSABLE_ENTITY
        );

        let err = parse_send(serde_json::json!(["to"]));
        assert_eq!(
            err.expect_err("not object").status,
            StatusCode::UNPROCESSABLE_ENTITY
        );
    }

    #[test]
    fn send_defaults_meta_to_empty_object() {
        let to = user();
        let req = parse_send(serde_json::json!({"to": to.to_string(), "text": "hi"}))
            .expect("valid body");
        assert_eq!(req.to, to);
        assert_eq!(req.client_meta, serde_json::json!({}));
        let req = parse_send(
            serde_json::json!({"to": to.to_string(), "text": "hi", "client_meta": {"k": 1}}),
        )
        .expect("valid body");
        assert_eq!(req.client_meta, serde_json::json!({"k": 1}));
    }

    #[test]
    fn page_query_defaults_and_rejects_bad_values() {
        let page = parse_page(PageQuery::default()).expect("defaults");
        assert_eq!(
            page,
            PageRequest {
                offset: 0,
                count: DEFAULT_PAGE,
                since_ms: None
            }
        );
        let page = parse_page(PageQuery {
            offset: Some("10".into()),
            count: Some("5".into()),
            since: Some("1970-01-01T00:00:01Z".into()),
        })
        .expect("valid");
        assert_eq!(
            page,
            PageRequest {
                offset: 10,
                count: 5,
                since_ms: Some(1000)
            }
        );
        for bad in [
            PageQuery {
                offset: Some("-1".into()),
                ..Default::default()
            },
            PageQuery {
                count: Some("many".into()),
                ..Default::default()
            },
            PageQuery {
                since: Some("yesterday".into()),
                ..Default::default()
            },
        ] {
            let err = parse_page(bad).expect_err("bad query");
            assert_eq!(err.status, StatusCode::BAD_REQUEST);
            assert_eq!(err.code, "invalid_query");
        }
    }

    #[test]
    fn bad_user_ids_are_400() {
        let err = parse_user_id("not-a-user").expect_err("garbage");
        assert_eq!(err.status, StatusCode::BAD_REQUEST);
        assert_eq!(err.code, "invalid_path");
        assert!(parse_user_id(&user().to_string()).is_ok());
    }

    /// A router with the real guard, extractors and fallbacks, but no node behind it.
    async fn guarded_echo() -> (String, tokio::task::JoinHandle<()>) {
        #[derive(Deserialize, Serialize)]
        #[serde(deny_unknown_fields)]
        struct Echo {
            text: String,
        }
        async fn echo(ApiJson(body): ApiJson<Echo>) -> Json<Echo> {
            Json(body)
        }
        async fn peer(PeerPath(peer): PeerPath) -> String {
            peer.to_string()
        }
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind loopback");
        let addr = listener.local_addr().expect("local addr");
        let routes = Router::new()
            .route("/echo", post(echo))
            .route("/peer/{user_id}", get(peer));
        let app = harden(
            routes,
            Guard {
                token: "sesame".into(),
                port: Some(addr.port()),
                link_key: Arc::new(media::link_key("sesame")),
            },
        );
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        (format!("http://{addr}"), task)
    }

    async fn error_of(res: reqwest::Response) -> (u16, String) {
        let status = res.status().as_u16();
        let body: ErrorBody = res.json().await.expect("JSON error body");
        (status, body.error.code)
    }

    #[tokio::test]
    async fn edge_errors_answer_in_json() {
        let (base, task) = guarded_echo().await;
        let http = reqwest::Client::new();
        let auth = "Bearer sesame";

        let res = http
            .post(format!("{base}/echo"))
            .json(&serde_json::json!({"text": "a"}));
        assert_eq!(
            error_of(res.send().await.expect("send")).await,
            (401, "unauthorized".into())
        );

        let res = http
            .post(format!("{base}/echo"))
            .header(AUTHORIZATION, "Bearer wrong")
            .json(&serde_json::json!({"text": "a"}));
        assert_eq!(
            error_of(res.send().await.expect("send")).await,
            (401, "unauthorized".into())
        );

        let res = http
            .post(format!("{base}/echo"))
            .header(AUTHORIZATION, auth)
            .header(ORIGIN, "http://evil.example")
            .json(&serde_json::json!({"text": "a"}));
        assert_eq!(
            error_of(res.send().await.expect("send")).await,
            (403, "forbidden_origin".into())
        );

        let res = http
            .post(format!("{base}/echo"))
            .header(AUTHORIZATION, auth)
            .header(ORIGIN, base.replace("127.0.0.1", "localhost"))
            .json(&serde_json::json!({"text": "a"}))
            .send()
            .await
            .expect("send");
        assert_eq!(res.status(), 200);

        let res = http
            .post(format!("{base}/echo"))
            .header(AUTHORIZATION, auth)
            .header(CONTENT_TYPE, "application/json")
            .body("{not json");
        assert_eq!(
            error_of(res.send().await.expect("send")).await,
            (400, "malformed_json".into())
        );

        let res = http
            .post(format!("{base}/echo"))
            .header(AUTHORIZATION, auth)
            .body(r#"{"text":"a"}"#);
        assert_eq!(
            error_of(res.send().await.expect("send")).await,
            (415, "unsupported_media_type".into())
        );

        let res = http
            .post(format!("{base}/echo"))
            .header(AUTHORIZATION, auth)
            .json(&serde_json::json!({"text": "a", "from": "me"}));
        assert_eq!(
            error_of(res.send().await.expect("send")).await,
            (422, "invalid_body".into())
        );

        let big = "x".repeat(BODY_LIMIT + 1);
        let res = http
            .post(format!("{base}/echo"))
            .header(AUTHORIZATION, auth)
            .json(&serde_json::json!({ "text": big }));
        assert_eq!(
            error_of(res.send().await.expect("send")).await,
            (413, "too_large".into())
        );

        let res = http
            .get(format!("{base}/peer/nobody"))
            .header(AUTHORIZATION, auth);
        assert_eq!(
            error_of(res.send().await.expect("send")).await,
            (400, "invalid_path".into())
        );

        let res = http
            .get(format!("{base}/nowhere"))
            .header(AUTHORIZATION, auth);
        assert_eq!(
            error_of(res.send().await.expect("send")).await,
            (404, "not_found".into())
        );

        let res = http.get(format!("{base}/echo")).header(AUTHORIZATION, auth);
        assert_eq!(
            error_of(res.send().await.expect("send")).await,
            (405, "method_not_allowed".into())
        );

        task.abort();
    }
}
