//! Search across conversations and delete-for-me, over HTTP against real in-process nodes:
//! words are found in one-to-one and group messages (half-typed last word too), newest first
//! and paged; a deleted message leaves the conversation and the results, stays deleted across
//! a restart, and bad queries get their documented errors.

use anyhow::{ensure, Context, Result};
use kith_tests::{init_logging, introduce, wait_for, ApiResponse, TestNode, TIMEOUT};
use reqwest::Method;
use serde_json::{json, Value};

/// The texts of a page answer, in order.
fn texts(res: &ApiResponse) -> Result<Vec<String>> {
    res.expect_status(200)?;
    let msgs = res.body["messages"]
        .as_array()
        .with_context(|| format!("no messages in {}", res.body))?;
    Ok(msgs
        .iter()
        .map(|m| m["text"].as_str().unwrap_or_default().to_string())
        .collect())
}

async fn search(node: &TestNode, q: &str) -> Result<Vec<String>> {
    let path = format!("/v1/search?q={}", urlencoding(q));
    texts(&node.api()?.get(&path).await?)
}

fn urlencoding(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn search_finds_words_across_chats_and_delete_for_me_removes_one() -> Result<()> {
    init_logging();
    let alice = TestNode::start("alice").await?;
    let mut bob = TestNode::start("bob").await?;
    let carol = TestNode::start("carol").await?;
    introduce(&alice, &bob).await?;
    introduce(&bob, &carol).await?;
    let api = alice.api()?;
    let sent = [
        "Lunch at noon tomorrow?",
        "The CAFÉ on the corner has a new menu",
        "unrelated words only",
    ];
    for t in sent {
        api.send_text(&bob.user_id(), t, json!({})).await?;
    }
    // A group message from carol, in a group with bob.
    let group = carol
        .node()?
        .create_group("lunch club".into(), vec![bob.user_id()])
        .await?;
    let group_id: kith_protocol::GroupId = group.id.parse()?;
    carol
        .node()?
        .send_group_text(group_id, "café again? lunch is on me".into(), json!({}))
        .await?;
    wait_for(TIMEOUT, "bob holds all four messages", || async {
        let n = search(&bob, "caf").await?.len() + search(&bob, "unrelated").await?.len();
        Ok((n == 3).then_some(()))
    })
    .await?;

    // Half-typed, case- and accent-exact word prefix; newest first; both kinds of chat.
    let cafe = search(&bob, "Caf").await?;
    ensure!(
        cafe == [
            "café again? lunch is on me",
            "The CAFÉ on the corner has a new menu"
        ],
        "search for `Caf`: {cafe:?}"
    );
    let lunch = search(&bob, "lunch noon").await?;
    ensure!(
        lunch == ["Lunch at noon tomorrow?"],
        "every word must match: {lunch:?}"
    );
    ensure!(
        search(&bob, "zebra").await?.is_empty(),
        "no match, no results"
    );
    // The group hit says which group it is in.
    let res = bob.api()?.get("/v1/search?q=again").await?;
    ensure!(
        res.body["messages"][0]["group"] == Value::String(group.id.clone()),
        "group hit names its group: {}",
        res.body
    );

    // Paging.
    let first = bob.api()?.get("/v1/search?q=caf&count=1").await?;
    ensure!(
        texts(&first)?.len() == 1 && first.body["next_offset"] == json!(1),
        "page 1: {}",
        first.body
    );
    let second = bob.api()?.get("/v1/search?q=caf&count=1&offset=1").await?;
    ensure!(
        texts(&second)? == ["The CAFÉ on the corner has a new menu"]
            && second.body["next_offset"].is_null(),
        "page 2: {}",
        second.body
    );

    // Bad queries.
    bob.api()?
        .get("/v1/search")
        .await?
        .expect_error(400, "invalid_query")?;
    bob.api()?
        .get("/v1/search?q=%20")
        .await?
        .expect_error(400, "invalid_query")?;
    let long = "a".repeat(kith_node::handle::MAX_QUERY_LEN + 1);
    bob.api()?
        .get(&format!("/v1/search?q={long}"))
        .await?
        .expect_error(413, "too_large")?;

    // Delete for me: the one-to-one message about the café.
    let conv = bob.conversation(&alice.user_id())?;
    let victim = conv
        .iter()
        .find(|m| m.text.starts_with("The CAFÉ"))
        .context("bob has the café message")?;
    let path = format!(
        "/v1/conversations/{}/messages/{}",
        alice.user_id(),
        victim.id
    );
    let res = bob.api()?.request(Method::DELETE, &path, None).await?;
    res.expect_status(204)?;
    ensure!(
        !bob.conversation(&alice.user_id())?
            .iter()
            .any(|m| m.id == victim.id),
        "deleted message still in the conversation"
    );
    ensure!(
        search(&bob, "caf").await? == ["café again? lunch is on me"],
        "deleted message still found"
    );
    // Deleting it again: nothing there.
    bob.api()?
        .request(Method::DELETE, &path, None)
        .await?
        .expect_error(404, "not_found")?;
    // A group message is deleted through its group's conversation.
    let gmsg = bob
        .node()?
        .group_conversation(&group_id, 0, 10, None)?
        .messages
        .into_iter()
        .next()
        .context("bob has the group message")?;
    let gpath = format!("/v1/conversations/{}/messages/{}", group.id, gmsg.id);
    bob.api()?
        .request(Method::DELETE, &gpath, None)
        .await?
        .expect_status(204)?;
    ensure!(
        search(&bob, "caf").await?.is_empty(),
        "deleted group message still found"
    );

    // Still deleted after a restart; the rest is still found.
    bob.shutdown().await?;
    bob.restart().await?;
    ensure!(
        !bob.conversation(&alice.user_id())?
            .iter()
            .any(|m| m.id == victim.id),
        "deleted message back after a restart"
    );
    ensure!(
        search(&bob, "lunch").await? == ["Lunch at noon tomorrow?"],
        "index after restart"
    );
    Ok(())
}
