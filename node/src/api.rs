//! The node's REST API: the only way local clients (the `kith` CLI, a UI, tests) drive a node.
//!
//! It exists to turn HTTP into [`Node`] calls and back, and nothing more: every business rule
//! lives behind the handle. It owns the HTTP edge's safety: bearer-token auth compared in
//! constant time and the `Origin` check that keeps web pages out ([`guard`]), body limits
//! ([`extract`]), and the one place ([`error::node_error`]) where a [`crate::NodeError`]
//! becomes an HTTP status. Every error, including
//! axum's own extractor rejections and unknown routes, answers with the same JSON shape,
//! [`ErrorBody`].

use std::sync::Arc;

use axum::Router;
use tokio_util::sync::CancellationToken;

use crate::handle::Node;

pub mod error;
mod extract;
mod groups;
mod guard;
mod history;
mod link;
mod media;
pub mod openapi;
mod requests;
mod routes;
mod settings;
mod state;
pub mod web;

pub use error::{ErrorBody, ErrorDetail};
pub use extract::BODY_LIMIT;
pub use routes::DEFAULT_PAGE;

fn build(node: Node, token: String, port: Option<u16>, shutdown: CancellationToken) -> Router {
    let routes = routes::routes()
        .merge(media::routes())
        .merge(requests::routes())
        .merge(history::routes())
        .merge(settings::routes())
        .merge(openapi::routes())
        .with_state(state::ApiState {
            node: node.clone(),
            link_key: Arc::new(link::link_key(&token)),
            shutdown,
        })
        .merge(web::api_routes(node));
    let guard_state = guard::Guard {
        link_key: Arc::new(link::link_key(&token)),
        token: token.into(),
        port,
    };
    // The web app's assets hold no secret: they are merged outside the guard.
    guard::harden(routes, guard_state).merge(web::assets(port))
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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;
