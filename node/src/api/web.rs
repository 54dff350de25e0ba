//! The desktop chat in the browser: the web app `kith run` serves at `http://127.0.0.1:7878/`.
//!
//! It exists so a person can use Kith without a terminal, offline, with nothing to install:
//! the page, its scripts and styles are compiled into the binary ([`ASSETS`]) and served here
//! without the API token, because they hold no secret. Everything the page shows comes from
//! the `/v1` API, which stays behind the bearer token and the `Origin` check in the API's guard.
//! The page gets the token once, from the address `kith open` prints
//! (`http://127.0.0.1:7878/#token=…`; a fragment never reaches a server or its logs), keeps it
//! in the tab's session storage, and sends it as `Authorization: Bearer` on every call,
//! including the `/v1/events` stream, which it reads with `fetch` rather than `EventSource`
//! (which cannot send headers) so the token never travels in a URL.
//!
//! Two rules keep other web pages out: asset responses carry a strict Content Security Policy
//! and are served only to a loopback `Host` (so a DNS-rebinding name cannot pose as this
//! origin), and nothing here sends CORS headers, so a page from another origin can neither
//! read these answers nor call the API.
//!
//! Besides the assets, this module adds two guarded calls the page needs and the core API has
//! no reason to carry: [`chats`] (`GET /v1/chats`, the conversation list with last message,
//! unread count and presence in one answer) and [`invite_qr`] (`GET /v1/me/qr.svg`).

use std::net::SocketAddr;

use axum::{
    extract::{Request, State},
    http::{
        header::{
            CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, HOST, REFERRER_POLICY,
            X_CONTENT_TYPE_OPTIONS, X_FRAME_OPTIONS,
        },
        HeaderMap, HeaderName, HeaderValue, StatusCode,
    },
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::get,
    Json, Router,
};
use serde::{Deserialize, Serialize};

use crate::{
    api::error::{node_error, ApiError, ErrorCode, Input},
    handle::{MessageView, Node, NodeError, PresenceView},
};

/// The policy every asset answers with: scripts, styles and connections only from this
/// origin; images and videos also from `blob:` URLs, which is how the page shows media it
/// fetched with the token; no plugins, no framing, no form posts elsewhere.
pub const CONTENT_SECURITY_POLICY_VALUE: &str = "default-src 'self'; script-src 'self'; \
     style-src 'self'; img-src 'self' blob:; media-src 'self' blob:; connect-src 'self'; \
     object-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// Most received-but-unread messages [`chats`] counts per conversation; the page shows
/// more as "999+". Bounds the work of one call on a conversation never opened.
pub const UNREAD_SCAN_LIMIT: usize = 1000;

/// The address that opens the web app of the node whose API listens on `api` and hands it
/// `token` (in the fragment, which the browser never sends). `label` names the window (the
/// demo's `alice`, `bob`); only letters, digits, `-` and `_` are kept.
///
/// An API on an unspecified address (`0.0.0.0`) is opened through `127.0.0.1`: the page only
/// works on a loopback origin.
pub fn url(api: SocketAddr, token: &str, label: Option<&str>) -> String {
    let host = match api.ip() {
        ip if ip.is_unspecified() => SocketAddr::from(([127, 0, 0, 1], api.port())),
        _ => api,
    };
    let label: String = label
        .unwrap_or_default()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
        .collect();
    if label.is_empty() {
        format!("http://{host}/#token={token}")
    } else {
        format!("http://{host}/#token={token}&label={label}")
    }
}

/// One file of the web app, compiled into the binary.
struct Asset {
    /// The URL path it is served at.
    path: &'static str,
    /// Its `Content-Type`.
    content_type: &'static str,
    /// Its bytes.
    body: &'static [u8],
}

/// The web app: `node/web/`, embedded at compile time so the binary serves it offline.
const ASSETS: &[Asset] = &[
    Asset {
        path: "/",
        content_type: "text/html; charset=utf-8",
        body: include_bytes!("../../web/index.html"),
    },
    Asset {
        path: "/app.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../../web/app.js"),
    },
    Asset {
        path: "/groups.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../../web/groups.js"),
    },
    Asset {
        path: "/settings.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../../web/settings.js"),
    },
    Asset {
        path: "/search.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../../web/search.js"),
    },
    Asset {
        path: "/actions.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../../web/actions.js"),
    },
    Asset {
        path: "/notify.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../../web/notify.js"),
    },
    Asset {
        path: "/drop.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../../web/drop.js"),
    },
    Asset {
        path: "/reply.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../../web/reply.js"),
    },
    Asset {
        path: "/typing.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../../web/typing.js"),
    },
    Asset {
        path: "/api.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../../web/api.js"),
    },
    Asset {
        path: "/style.css",
        content_type: "text/css; charset=utf-8",
        body: include_bytes!("../../web/style.css"),
    },
    Asset {
        path: "/favicon.svg",
        content_type: "image/svg+xml",
        body: include_bytes!("../../web/favicon.svg"),
    },
];

/// The asset routes: served without the API token, only to loopback `Host`s.
///
/// `port`, when known, is the port the API listens on; a `Host` naming another port is
/// refused like a foreign name.
pub(crate) fn assets(port: Option<u16>) -> Router {
    let mut router = Router::new();
    for asset in ASSETS {
        router = router.route(asset.path, get(move || async move { serve(asset) }));
    }
    router.layer(middleware::from_fn_with_state(port, loopback_host))
}

/// The guarded routes the web app adds to `/v1`; the API merges them inside its guard.
pub(crate) fn api_routes(node: Node) -> Router {
    Router::new()
        .route("/v1/chats", get(chats))
        .route("/v1/me/qr.svg", get(invite_qr))
        .with_state(node)
}

/// One asset with its content type and the security headers.
fn serve(asset: &Asset) -> Response {
    let mut response = asset.body.into_response();
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(asset.content_type));
    headers.insert(
        CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY_VALUE),
    );
    headers.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    headers.insert(
        HeaderName::from_static("cross-origin-opener-policy"),
        HeaderValue::from_static("same-origin"),
    );
    headers.insert(
        HeaderName::from_static("cross-origin-resource-policy"),
        HeaderValue::from_static("same-origin"),
    );
    // Revalidate every time: a new binary must not run yesterday's scripts.
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

/// Whether a `Host` header names this machine's loopback interface (on `port`, when known).
fn host_allowed(host: &str, port: Option<u16>) -> bool {
    let (name, host_port) = match host.rsplit_once(':') {
        // `[::1]` alone has colons but no port after the bracket.
        Some((name, p)) if !p.ends_with(']') => (name, p.parse::<u16>().ok()),
        _ => (host, None),
    };
    let loopback = matches!(name, "127.0.0.1" | "localhost" | "[::1]");
    let port_ok = match (port, host_port) {
        (Some(want), Some(got)) => want == got,
        (Some(_), None) => false,
        (None, _) => true,
    };
    loopback && port_ok
}

/// Refuses asset requests whose `Host` is not this loopback address: a page on another name
/// that resolves to 127.0.0.1 (DNS rebinding) must not be able to pose as the web app.
async fn loopback_host(State(port): State<Option<u16>>, req: Request, next: Next) -> Response {
    let host = host_header(req.headers());
    if host.is_some_and(|h| host_allowed(h, port)) {
        return next.run(req).await;
    }
    ApiError::new(
        StatusCode::FORBIDDEN,
        ErrorCode::ForbiddenHost,
        "the web app is served only at http://127.0.0.1:<port>/ (or localhost) of this node",
    )
    .into_response()
}

fn host_header(headers: &HeaderMap) -> Option<&str> {
    headers.get(HOST)?.to_str().ok()
}

/// One conversation of `GET /v1/chats`.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ChatView {
    /// The contact's user id, or the group's id (32 hex digits) for a group.
    pub user_id: String,
    /// The name to show: the one the local user gave them, else their profile name (may
    /// be empty); or the group's name.
    pub name: String,
    /// `contact` or `group`.
    #[serde(default)]
    pub kind: ChatKind,
    /// A group's members, the local user included (0 for a contact).
    #[serde(default)]
    pub members: usize,
    /// The newest message of the conversation, if any.
    pub last_message: Option<MessageView>,
    /// Received messages not read yet (at most [`UNREAD_SCAN_LIMIT`]).
    pub unread: usize,
    /// The contact's presence, as the local user may see it (absent if it could not be asked).
    pub presence: Option<PresenceView>,
    /// The contact itself (profile name, verified mark, key change); absent for a group.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contact: Option<Box<crate::view::ContactView>>,
}

/// Whose conversation a chat row is.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ChatKind {
    /// A one-to-one conversation with a contact.
    #[default]
    Contact,
    /// A group chat.
    Group,
}

/// `GET /v1/chats`: every contact's conversation, the most recently active first.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ChatList {
    /// The conversations.
    pub chats: Vec<ChatView>,
}

/// `GET /v1/chats`: the conversation list the page's sidebar shows, in one call.
#[utoipa::path(get, path = "/v1/chats", operation_id = "list_chats", tag = "app",
    responses((status = 200, description = "Every conversation, the most recent first", body = ChatList)))]
pub(super) async fn chats(State(node): State<Node>) -> Result<Json<ChatList>, ApiError> {
    let contacts = node.contacts().map_err(|e| node_error(e, Input::Query))?;
    let mut chats = Vec::with_capacity(contacts.len());
    for contact in contacts {
        let peer = contact
            .user_id
            .parse()
            .map_err(|e| node_error(NodeError::InvalidInput(format!("{e}")), Input::Query))?;
        let first = node
            .conversation(&peer, 0, 1, None)
            .map_err(|e| node_error(e, Input::Query))?;
        let unread = node
            .unread(&peer, UNREAD_SCAN_LIMIT)
            .map_err(|e| node_error(e, Input::Query))?;
        let presence = node.presence(peer).await.ok();
        chats.push(ChatView {
            user_id: contact.user_id.clone(),
            name: contact.display_name.clone(),
            kind: ChatKind::Contact,
            members: 0,
            last_message: first.messages.into_iter().next(),
            unread,
            presence,
            contact: Some(Box::new(contact)),
        });
    }
    for group in node.groups().map_err(|e| node_error(e, Input::Query))? {
        let id: kith_protocol::GroupId = group
            .id
            .parse()
            .map_err(|e| node_error(NodeError::InvalidInput(format!("{e}")), Input::Query))?;
        let first = node
            .group_conversation(&id, 0, 1, None)
            .map_err(|e| node_error(e, Input::Query))?;
        let unread = node
            .group_unread(&id, UNREAD_SCAN_LIMIT)
            .map_err(|e| node_error(e, Input::Query))?;
        chats.push(ChatView {
            user_id: group.id,
            name: group.name,
            kind: ChatKind::Group,
            members: group.members.len(),
            last_message: first.messages.into_iter().next(),
            unread,
            presence: None,
            contact: None,
        });
    }
    chats.sort_by(|a, b| {
        let time = |c: &ChatView| c.last_message.as_ref().map(|m| m.sent_at_ms);
        time(b)
            .cmp(&time(a))
            .then_with(|| a.name.to_lowercase().cmp(&b.name.to_lowercase()))
    });
    Ok(Json(ChatList { chats }))
}

/// `GET /v1/me/qr.svg`: the local user's invite as a QR code, for a phone or another
/// machine's camera.
#[utoipa::path(get, path = "/v1/me/qr.svg", operation_id = "invite_qr", tag = "app",
    responses(
        (status = 200, description = "The invite as an SVG QR code", body = String, content_type = "image/svg+xml"),
        (status = 422, description = "`too_large`: the invite does not fit in a QR code", body = crate::api::ErrorBody),
    ))]
pub(super) async fn invite_qr(State(node): State<Node>) -> Result<Response, ApiError> {
    let me = node.me().await.map_err(|e| node_error(e, Input::Query))?;
    let svg = qr_svg(&me.invite).map_err(|e| {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            ErrorCode::TooLarge,
            format!("the invite does not fit in a QR code ({e}); share it as text"),
        )
    })?;
    Ok(svg_response(svg))
}

/// An SVG image as an answer: never cached (it carries keys or invites), never sniffed.
pub(crate) fn svg_response(svg: String) -> Response {
    let mut response = svg.into_response();
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("image/svg+xml"));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    response
}

/// Smallest side of the invite's QR code, in SVG pixels: readable by a phone's camera.
const QR_MIN_SIDE: u32 = 256;

/// `text` as an SVG QR code (low error correction: the code is shown on a screen, so size
/// matters more than damage tolerance, and invites are long).
pub(crate) fn qr_svg(text: &str) -> Result<String, qrcode::types::QrError> {
    let code = qrcode::QrCode::with_error_correction_level(text, qrcode::EcLevel::L)?;
    Ok(code
        .render::<qrcode::render::svg::Color>()
        .min_dimensions(QR_MIN_SIDE, QR_MIN_SIDE)
        .quiet_zone(true)
        .build())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_hosts_on_our_port_pass() {
        assert!(host_allowed("127.0.0.1:7878", Some(7878)));
        assert!(host_allowed("localhost:7878", Some(7878)));
        assert!(host_allowed("[::1]:7878", Some(7878)));
        assert!(host_allowed("127.0.0.1:7878", None));
        assert!(!host_allowed("127.0.0.1:7879", Some(7878)));
        assert!(!host_allowed("127.0.0.1", Some(7878)));
        assert!(!host_allowed("evil.example:7878", Some(7878)));
        assert!(!host_allowed("evil.example", None));
        assert!(!host_allowed("[::1]", Some(7878)));
    }

    #[test]
    fn every_asset_has_a_type_and_a_body() {
        for asset in ASSETS {
            assert!(!asset.body.is_empty(), "{}", asset.path);
            assert!(asset.path.starts_with('/'), "{}", asset.path);
            assert!(!asset.content_type.is_empty(), "{}", asset.path);
        }
        let index = ASSETS.iter().find(|a| a.path == "/").expect("index");
        let html = String::from_utf8_lossy(index.body);
        for asset in ASSETS.iter().filter(|a| a.path.ends_with(".css")) {
            assert!(html.contains(asset.path), "index.html links {}", asset.path);
        }
        assert!(html.contains("/app.js"));
        // app.js imports the others: preloading them saves a round trip per module
        for asset in ASSETS
            .iter()
            .filter(|a| a.path.ends_with(".js") && a.path != "/app.js")
        {
            let preload = format!("<link rel=\"modulepreload\" href=\"{}\">", asset.path);
            assert!(
                html.contains(&preload),
                "index.html preloads {}",
                asset.path
            );
        }
    }

    #[test]
    fn urls_carry_the_token_in_the_fragment() {
        let api: SocketAddr = "127.0.0.1:7878".parse().expect("addr");
        assert_eq!(url(api, "abc", None), "http://127.0.0.1:7878/#token=abc");
        assert_eq!(
            url(api, "abc", Some("alice")),
            "http://127.0.0.1:7878/#token=abc&label=alice"
        );
        assert_eq!(
            url(api, "abc", Some("<b>&")),
            "http://127.0.0.1:7878/#token=abc&label=b"
        );
        let any: SocketAddr = "0.0.0.0:9000".parse().expect("addr");
        assert_eq!(url(any, "t", None), "http://127.0.0.1:9000/#token=t");
        let v6: SocketAddr = "[::1]:9000".parse().expect("addr");
        assert_eq!(url(v6, "t", None), "http://[::1]:9000/#token=t");
    }

    #[test]
    fn qr_codes_are_svg() {
        let svg = qr_svg("kith:abc").expect("fits");
        assert!(svg.contains("<svg"), "{svg}");
        assert!(qr_svg(&"x".repeat(4000)).is_err());
    }

    #[tokio::test]
    async fn assets_answer_with_type_and_policy_without_token() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind loopback");
        let addr = listener.local_addr().expect("local addr");
        let app = assets(Some(addr.port()));
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        let http = reqwest::Client::new();
        for asset in ASSETS {
            let res = http
                .get(format!("http://{addr}{}", asset.path))
                .send()
                .await
                .expect("get");
            assert_eq!(res.status(), 200, "{}", asset.path);
            let header = |name: HeaderName| {
                res.headers()
                    .get(name)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string)
            };
            assert_eq!(
                header(CONTENT_TYPE).as_deref(),
                Some(asset.content_type),
                "{}",
                asset.path
            );
            assert_eq!(
                header(CONTENT_SECURITY_POLICY).as_deref(),
                Some(CONTENT_SECURITY_POLICY_VALUE)
            );
            assert!(header(HeaderName::from_static("access-control-allow-origin")).is_none());
        }
        let res = http
            .get(format!("http://{addr}/"))
            .header(HOST, format!("rebound.example:{}", addr.port()))
            .send()
            .await
            .expect("get");
        assert_eq!(res.status(), 403);
        task.abort();
    }
}
