//! The API reference: an OpenAPI 3 document generated from the handlers' `#[utoipa::path]`
//! annotations and the view types' `ToSchema` derives, so it cannot drift from the code
//! unnoticed. `GET /v1/openapi.json` serves it, `kith openapi` prints it, and a test keeps the
//! checked-in copy, `docs/api/openapi.json`, equal to it.
//!
//! What every route shares (the bearer token, the `Origin` check, errors of the guard and the
//! JSON body extractor) is added to each operation here, in one place, by [`Shared`].

use std::sync::LazyLock;

use axum::{http::header::CONTENT_TYPE, response::IntoResponse, routing::get, Router};
use utoipa::{
    openapi::{
        header::HeaderBuilder,
        path::Operation,
        security::{HttpAuthScheme, HttpBuilder, SecurityScheme},
        ContentBuilder, Ref, RefOr, Response, ResponseBuilder,
    },
    Modify, OpenApi, PartialSchema,
};

use super::{groups, history, media, requests, routes, settings, web};

/// The document's description: what holds for every endpoint.
const DESCRIPTION: &str = "\
The REST API of a Kith node, served on loopback (default `http://127.0.0.1:7878`).

**Auth.** Every `/v1` endpoint needs `Authorization: Bearer <token>` (`kith token` prints it). \
`GET /v1/media/{hash}` and `/preview` also take a media link (`POST /v1/media/{hash}/link`) \
in place of the token.

**Origin.** A request carrying an `Origin` header other than this API's own loopback origin \
is refused (403 `forbidden_origin`), so web pages cannot call the node.

**Errors.** Every error answers `{\"error\":{\"code\",\"message\"}}` (the `Error` schema); \
`code` is one of `ErrorCode` and is stable. An unknown route answers 404 `not_found`, a known \
route with a method it does not take 405 `method_not_allowed`.

**Events.** `GET /v1/events` is a Server-Sent Events stream: each frame's `event:` is its \
JSON `type` (`EventFrame`).";

/// The OpenAPI document of the node's API.
#[derive(OpenApi)]
#[openapi(
    info(title = "Kith node API", description = DESCRIPTION),
    servers((url = "http://127.0.0.1:7878", description = "A node on its default API address")),
    paths(
        routes::me,
        routes::contacts,
        routes::add_contact,
        routes::send,
        routes::conversation,
        routes::mark_read,
        routes::presence,
        routes::events,
        settings::settings,
        settings::change,
        settings::safety_number,
        settings::safety_qr,
        settings::verify,
        settings::unverify,
        history::search,
        history::remove,
        history::backup,
        history::typing,
        serve,
        groups::list,
        groups::create,
        groups::show,
        groups::rename,
        groups::add,
        groups::remove,
        groups::leave,
        groups::info,
        requests::requests,
        requests::accept,
        requests::block,
        requests::remove_contact,
        requests::blocked,
        requests::unblock,
        media::upload,
        media::download,
        media::preview,
        media::link,
        media::fetch,
        web::chats,
        web::invite_qr,
    ),
    components(schemas(
        super::ErrorBody,
        super::ErrorDetail,
        super::error::ErrorCode,
        crate::event::Event,
        routes::EventFrame,
        routes::Lagged,
    )),
    modifiers(&Shared),
    security(("token" = [])),
    tags(
        (name = "me", description = "The local user"),
        (name = "contacts", description = "Contacts"),
        (name = "messages", description = "Sending, reading and paging conversations"),
        (name = "groups", description = "Group chats"),
        (name = "requests", description = "Message requests from strangers, and blocking"),
        (name = "media", description = "Images, videos and files"),
        (name = "presence", description = "Online and last seen"),
        (name = "events", description = "The live event stream"),
        (name = "app", description = "Calls the web app needs"),
        (name = "docs", description = "This document"),
    )
)]
pub struct ApiDoc;

/// The document as pretty JSON with a final newline: what `GET /v1/openapi.json` serves,
/// `kith openapi` prints and `docs/api/openapi.json` holds.
pub fn json() -> &'static str {
    static JSON: LazyLock<String> = LazyLock::new(|| match ApiDoc::openapi().to_pretty_json() {
        Ok(json) => json + "\n",
        // Serialising a document of plain maps and strings cannot fail; never reached.
        Err(e) => format!("{{\"error\":\"{e}\"}}\n"),
    });
    &JSON
}

/// `GET /v1/openapi.json` (guarded by the caller, like every `/v1` route).
pub(crate) fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new().route("/v1/openapi.json", get(serve))
}

/// This API's OpenAPI 3 document (the same as `docs/api/openapi.json`).
#[utoipa::path(get, path = "/v1/openapi.json", operation_id = "get_openapi", tag = "docs",
    responses((status = 200, description = "The OpenAPI document", content_type = "application/json",
        body = Object)))]
async fn serve() -> impl IntoResponse {
    ([(CONTENT_TYPE, "application/json")], json())
}

/// Adds what every operation shares: the bearer-token scheme, the guard's and the node's
/// error answers, and the JSON body extractor's for operations that take a JSON body.
struct Shared;

/// A shared error answer: status, component name and what its codes mean.
struct Common {
    /// The HTTP status.
    status: &'static str,
    /// Its name under `components.responses`.
    name: &'static str,
    /// Which codes it carries, and when.
    description: &'static str,
    /// A header it always carries, and what it says.
    header: Option<(&'static str, &'static str)>,
}

/// The answers any guarded route can give.
const EVERY_ROUTE: [Common; 4] = [
    Common {
        status: "401",
        name: "Unauthorized",
        description:
            "`unauthorized`: no API token, a wrong one, or an invalid or expired media link",
        header: Some(("WWW-Authenticate", "`Bearer`")),
    },
    Common {
        status: "403",
        name: "Forbidden",
        description: "`forbidden_origin`: the request came from a web page on another origin",
        header: None,
    },
    Common {
        status: "500",
        name: "Internal",
        description: "`storage`: the node's storage failed; `internal`: anything else",
        header: None,
    },
    Common {
        status: "503",
        name: "Unavailable",
        description: "`busy`: the node is overloaded (retry after `Retry-After` seconds); \
                      `stopped`: it is shutting down",
        header: Some(("Retry-After", "Seconds to wait before asking again (`1`)")),
    },
];

/// The answers of routes that take a JSON body (the body extractor's).
const JSON_BODY: [Common; 4] = [
    Common {
        status: "400",
        name: "MalformedJson",
        description: "`malformed_json`: the body is not JSON",
        header: None,
    },
    Common {
        status: "413",
        name: "BodyTooLarge",
        description: "`too_large`: the body is over the 256 KiB limit, or a text over its own",
        header: None,
    },
    Common {
        status: "415",
        name: "NotJson",
        description: "`unsupported_media_type`: no `Content-Type: application/json`",
        header: None,
    },
    Common {
        status: "422",
        name: "InvalidBody",
        description: "`invalid_body`: wrong fields or types; `invalid_input`: a value the \
                      node refused (an empty text, a bad user id...)",
        header: None,
    },
];

/// A shared error answer, its body the `Error` schema.
fn error_response(common: &Common) -> Response {
    let mut response = ResponseBuilder::new()
        .description(common.description)
        .content(
            "application/json",
            ContentBuilder::new()
                .schema(Some(Ref::from_schema_name("Error")))
                .build(),
        );
    if let Some((name, description)) = common.header {
        let header = HeaderBuilder::new()
            .schema(String::schema())
            .description(Some(description))
            .build();
        response = response.header(name, header);
    }
    response.build()
}

/// The operations of a path item.
fn operations(item: &mut utoipa::openapi::PathItem) -> impl Iterator<Item = &mut Operation> {
    [
        &mut item.get,
        &mut item.put,
        &mut item.post,
        &mut item.delete,
        &mut item.patch,
        &mut item.head,
    ]
    .into_iter()
    .filter_map(Option::as_mut)
}

impl Modify for Shared {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "token",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("The node's API token (`kith token`)"))
                    .build(),
            ),
        );
        for common in EVERY_ROUTE.iter().chain(&JSON_BODY) {
            components
                .responses
                .insert(common.name.into(), error_response(common).into());
        }
        for item in doc.paths.paths.values_mut() {
            for op in operations(item) {
                let json_body = op
                    .request_body
                    .as_ref()
                    .is_some_and(|b| b.content.contains_key("application/json"));
                let shared = EVERY_ROUTE
                    .iter()
                    .chain(JSON_BODY.iter().filter(|_| json_body));
                for common in shared {
                    op.responses
                        .responses
                        .entry(common.status.into())
                        .or_insert_with(|| RefOr::Ref(Ref::from_response_name(common.name)));
                }
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;
