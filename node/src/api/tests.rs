//! Unit tests of the API's edge: error mapping, token and origin checks, request parsing,
//! and the guard's answers over a real listener.

use std::sync::Arc;

use axum::{
    http::{
        header::{AUTHORIZATION, CONTENT_TYPE, ORIGIN},
        StatusCode,
    },
    routing::{get, post},
    Json, Router,
};
use kith_protocol::UserId;
use serde::{Deserialize, Serialize};

use super::{error::*, extract::*, guard::*, link::*, routes::*};
use crate::error::NodeError;

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
        (
            NodeError::Media(crate::media::MediaError::Io {
                path: "x".into(),
                source: std::io::Error::other("disk full"),
            }),
            Input::Query,
            500,
            "storage",
        ),
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
    let req =
        parse_send(serde_json::json!({"to": to.to_string(), "text": "hi"})).expect("valid body");
    assert_eq!(req.to, super::extract::Chat::User(to));
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
            link_key: Arc::new(link_key("sesame")),
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

#[test]
fn sse_frame_names_are_their_json_types() {
    let frames = [
        EventFrame::Lagged(Lagged::Lagged { missed: 3 }),
        EventFrame::Event(Box::new(crate::event::Event::Status {
            peer: "p".into(),
            id: "i".into(),
            status: kith_protocol::DeliveryStatus::Read,
        })),
    ];
    for frame in frames {
        let json = serde_json::to_value(&frame).unwrap();
        assert_eq!(json["type"], frame.name());
    }
    let lagged = serde_json::to_value(EventFrame::Lagged(Lagged::Lagged { missed: 3 })).unwrap();
    assert_eq!(lagged, serde_json::json!({"type": "lagged", "missed": 3}));
}
