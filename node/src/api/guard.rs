//! The API's door: the `Origin` check that keeps web pages out, the bearer token (compared in
//! constant time) or a media link standing in for it, the body limit, and the JSON answer for
//! unknown routes. Every guarded route goes through [`harden`].
//!
//! It must never call the node: it only lets requests in or answers them with an error.

use std::sync::Arc;

use axum::{
    extract::{DefaultBodyLimit, Request, State},
    http::{
        header::{AUTHORIZATION, HOST, ORIGIN},
        HeaderMap, StatusCode,
    },
    middleware::{self, Next},
    response::{IntoResponse, Response},
    Router,
};

use super::{
    error::{json_errors, method_not_allowed, not_found, ApiError, ErrorCode},
    extract::BODY_LIMIT,
    link::{self, constant_time_eq},
};

/// What the auth and origin guard needs to know.
#[derive(Clone)]
pub(crate) struct Guard {
    /// The API token every request must present.
    pub(crate) token: Arc<str>,
    /// The port the API listens on, when known; otherwise the `Host` header's port is used.
    pub(crate) port: Option<u16>,
    /// Key of media links (see [`link::link_key`]).
    pub(crate) link_key: Arc<[u8; 32]>,
}

/// The token of an `Authorization: Bearer <token>` header value (scheme case-insensitive).
pub(super) fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// Whether `origin` is this API's own loopback origin on `port`.
pub(super) fn origin_allowed(origin: &str, port: u16) -> bool {
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
pub(crate) async fn guard(State(guard): State<Guard>, req: Request, next: Next) -> Response {
    if let Some(origin) = req.headers().get(ORIGIN) {
        let port = guard.port.or_else(|| host_port(req.headers()));
        let allowed = match (origin.to_str(), port) {
            (Ok(origin), Some(port)) => origin_allowed(origin, port),
            _ => false,
        };
        if !allowed {
            return ApiError::new(
                StatusCode::FORBIDDEN,
                ErrorCode::ForbiddenOrigin,
                "requests from web pages on other origins are refused; \
                 only http://127.0.0.1:<port> and http://localhost:<port> of this API may call it",
            )
            .into_response();
        }
    }
    // A media link stands in for the token on exactly one media path until it expires, so
    // that `<video src>` can stream with Range requests (elements cannot send headers).
    if req.headers().get(AUTHORIZATION).is_none() {
        match link::check_link(&guard.link_key, req.method(), req.uri()) {
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

/// Adds what every route shares: JSON 404/405, the body limit, the guard and the JSON error
/// safety net (outermost).
pub(crate) fn harden(routes: Router, guard_state: Guard) -> Router {
    routes
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(middleware::from_fn_with_state(guard_state, guard))
        .layer(middleware::map_response(json_errors))
}
