//! The REST API's answers to bad input, over HTTP against one running node: every client
//! mistake gets its documented status and a `{"error":{"code","message"}}` JSON body, and none
//! of them is a 500.

#![allow(clippy::unwrap_used)]

use anyhow::{ensure, Context, Result};
use kith_node::invite::Invite;
use kith_protocol::{
    payload::{MAX_CLIENT_META_LEN, MAX_TEXT_LEN},
    LocalIdentity, UserId,
};
use kith_tests::{init_logging, ApiResponse, Auth, TestNode};
use reqwest::Method;
use serde_json::json;

/// A valid user id nobody introduced to the node.
fn stranger() -> UserId {
    LocalIdentity::generate(0, &mut rand::rngs::OsRng).user_id()
}

/// An invite for a fresh identity with no addresses (a contact that never comes online).
fn offline_contact_invite() -> Result<(UserId, String)> {
    let id = LocalIdentity::generate(kith_node::time::now_ms(), &mut rand::rngs::OsRng);
    Ok((id.user_id(), Invite::new(id.bundle(), &[]).encode()?))
}

/// The error codes the API reference (`docs/api/openapi.json`) documents.
fn documented_codes() -> Vec<String> {
    let doc: serde_json::Value =
        serde_json::from_str(kith_node::api::openapi::json()).unwrap_or_default();
    doc["components"]["schemas"]["ErrorCode"]["enum"]
        .as_array()
        .map(|codes| {
            codes
                .iter()
                .filter_map(|c| c.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

fn check(case: &str, res: &ApiResponse, status: u16, code: &str) -> Result<()> {
    ensure!(
        documented_codes().iter().any(|c| c == code),
        "{case}: `{code}` is not in the API reference's ErrorCode"
    );
    ensure!(
        res.status != 500,
        "{case}: a client mistake answered 500: {}",
        res.body
    );
    res.expect_error(status, code)
        .with_context(|| format!("case: {case}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openapi_document_is_served_behind_the_token() -> Result<()> {
    init_logging();
    let node = TestNode::start("openapi").await?;
    let api = node.api()?;
    let res = api
        .raw(Method::GET, "/v1/openapi.json", Auth::None, None)
        .await?;
    check("openapi without token", &res, 401, "unauthorized")?;
    let res = api.get("/v1/openapi.json").await?;
    res.expect_status(200)?;
    let served = res.body;
    let built: serde_json::Value = serde_json::from_str(kith_node::api::openapi::json())?;
    ensure!(
        served == built,
        "the served document is not the generated one"
    );
    ensure!(served["paths"]["/v1/events"].is_object());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_api_input_gets_documented_errors() -> Result<()> {
    init_logging();
    let node = TestNode::start("api").await?;
    let api = node.api()?;
    let (contact, invite) = offline_contact_invite()?;
    api.post("/v1/contacts", &json!({"invite": invite, "name": "carol"}))
        .await?
        .expect_status(201)?;
    let stranger = stranger();
    let conv = format!("/v1/conversations/{contact}");
    let json_body = |v: serde_json::Value| Some(("application/json", v.to_string().into_bytes()));

    // Authentication.
    let res = api.raw(Method::GET, "/v1/me", Auth::None, None).await?;
    check("no token", &res, 401, "unauthorized")?;
    let res = api
        .raw(Method::GET, "/v1/me", Auth::Bearer("not-the-token"), None)
        .await?;
    check("wrong token", &res, 401, "unauthorized")?;
    let res = api
        .raw(
            Method::POST,
            "/v1/messages",
            Auth::None,
            json_body(json!({"to": contact.to_string(), "text": "hi"})),
        )
        .await?;
    check("send without token", &res, 401, "unauthorized")?;
    api.get("/v1/me").await?.expect_status(200)?;

    // Users the node does not know, and strings that are not user ids.
    for path in [
        format!("/v1/conversations/{stranger}"),
        format!("/v1/presence/{stranger}"),
    ] {
        check(&path, &api.get(&path).await?, 404, "unknown_contact")?;
    }
    let res = api
        .post(&format!("/v1/conversations/{stranger}/read"), &json!({}))
        .await?;
    check("read of a stranger", &res, 404, "unknown_contact")?;
    let res = api
        .post(
            "/v1/messages",
            &json!({"to": stranger.to_string(), "text": "hi"}),
        )
        .await?;
    check("send to a stranger", &res, 404, "unknown_contact")?;
    for path in [
        "/v1/conversations/not-a-user-id",
        "/v1/presence/12D3KooWnotbase58!",
        "/v1/conversations/QmYyQSo1c1Ym7orWxLYvCrM2EmxFTANf8wXmmE7DWjhx5N",
    ] {
        check(path, &api.get(path).await?, 400, "invalid_path")?;
    }
    let res = api
        .post("/v1/messages", &json!({"to": "nobody", "text": "hi"}))
        .await?;
    check("send to a malformed id", &res, 422, "invalid_body")?;

    // Message bodies.
    let to = contact.to_string();
    for text in ["", "   \n\t"] {
        let res = api
            .post("/v1/messages", &json!({"to": to, "text": text}))
            .await?;
        check(&format!("text {text:?}"), &res, 422, "invalid_input")?;
    }
    let res = api
        .post(
            "/v1/messages",
            &json!({"to": to, "text": "x".repeat(MAX_TEXT_LEN + 1)}),
        )
        .await?;
    check("text over 48 KiB", &res, 413, "too_large")?;
    // Client metadata counts as its JSON encoding, against its own limit.
    let meta = json!({ "k": "m".repeat(MAX_CLIENT_META_LEN) });
    let res = api
        .post(
            "/v1/messages",
            &json!({"to": to, "text": "hi", "client_meta": meta}),
        )
        .await?;
    check("client_meta over 4 KiB", &res, 413, "too_large")?;
    let res = api
        .post(
            "/v1/messages",
            &json!({"to": to, "text": "x".repeat(kith_node::api::BODY_LIMIT + 1)}),
        )
        .await?;
    check("body over the body limit", &res, 413, "too_large")?;
    let res = api
        .post(
            "/v1/messages",
            &json!({"to": to, "text": "hi", "from": node.user_id().to_string()}),
        )
        .await?;
    check("body with from", &res, 422, "invalid_body")?;
    for body in [
        json!({"to": to, "text": "hi", "client_meta": [1, 2]}),
        json!({"to": to, "text": "hi", "extra": true}),
        json!({"to": to}),
        json!({"to": to, "text": 5}),
        json!(["to", "text"]),
    ] {
        let res = api.post("/v1/messages", &body).await?;
        check(&body.to_string(), &res, 422, "invalid_body")?;
    }
    let res = api
        .raw(
            Method::POST,
            "/v1/messages",
            Auth::Token,
            Some(("application/json", b"{\"to\": \"x\", \"text\": ".to_vec())),
        )
        .await?;
    check("malformed JSON", &res, 400, "malformed_json")?;
    let res = api
        .raw(
            Method::POST,
            "/v1/messages",
            Auth::Token,
            Some((
                "text/plain",
                json!({"to": to, "text": "hi"}).to_string().into_bytes(),
            )),
        )
        .await?;
    check("not declared as JSON", &res, 415, "unsupported_media_type")?;

    // Paging.
    for query in ["count=0", "count=10000", "count=201"] {
        let path = format!("{conv}?{query}");
        check(&path, &api.get(&path).await?, 400, "invalid_input")?;
    }
    for query in [
        "offset=-1",
        "count=-5",
        "count=many",
        "since=garbage",
        "since=-1",
    ] {
        let path = format!("{conv}?{query}");
        check(&path, &api.get(&path).await?, 400, "invalid_query")?;
    }
    for query in [
        "",
        "?count=200",
        "?offset=5",
        "?since=2020-01-01T00:00:00Z",
        "?since=0",
    ] {
        let path = format!("{conv}{query}");
        api.get(&path)
            .await?
            .expect_status(200)
            .with_context(|| path.clone())?;
    }

    // Contacts and settings.
    for invite in ["", "kith:", "kith:0OIl", "hello", "kith:3mJr7AoUXx2Wqd"] {
        let res = api.post("/v1/contacts", &json!({"invite": invite})).await?;
        check(&format!("invite {invite:?}"), &res, 422, "bad_invite")?;
    }
    for body in [
        json!({}),
        json!({"user_id": "nobody"}),
        json!({"invite": invite, "user_id": contact.to_string()}),
    ] {
        let res = api.post("/v1/contacts", &body).await?;
        check(&format!("contact {body}"), &res, 422, "invalid_input")?;
    }
    let own = node.invite().await?;
    let res = api.post("/v1/contacts", &json!({"invite": own})).await?;
    check("own invite", &res, 422, "invalid_input")?;
    let res = api
        .put("/v1/settings", &json!({"share_last_seen": "yes"}))
        .await?;
    check("settings with a string", &res, 422, "invalid_body")?;
    let res = api.put("/v1/settings", &json!({"hide": true})).await?;
    check("settings with an unknown field", &res, 422, "invalid_body")?;

    // Routes and methods.
    check(
        "unknown route",
        &api.get("/v1/nothing").await?,
        404,
        "not_found",
    )?;
    check("no version", &api.get("/me").await?, 404, "not_found")?;
    let res = api.request(Method::DELETE, "/v1/messages", None).await?;
    check("wrong method", &res, 405, "method_not_allowed")?;

    // A web page on another origin is refused even with the token.
    let res = reqwest::Client::new()
        .get(format!("{}/v1/me", api.base()))
        .header("authorization", format!("Bearer {}", node.running()?.token))
        .header("origin", "http://evil.example")
        .send()
        .await?;
    ensure!(res.status() == 403, "foreign origin: {}", res.status());
    let body: serde_json::Value = res.json().await?;
    ensure!(
        body["error"]["code"] == "forbidden_origin",
        "foreign origin: {body}"
    );

    // None of it changed anything: the contact's conversation is still empty.
    let res = api.get(&conv).await?;
    res.expect_status(200)?;
    ensure!(
        res.body == json!({"messages": [], "next_offset": null}),
        "{}",
        res.body
    );
    Ok(())
}
