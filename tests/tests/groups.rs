//! Group chats between real nodes (in this process, on `127.0.0.1`, with three store peers):
//! creating a group with members who are not each other's contacts, messages and per-member
//! ticks, removal (the removed member gets nothing after it), an offline member catching up
//! through store peers on messages *and* a membership change made while it was away, two
//! admins changing the group at once (everyone converges), and a member killed mid-send
//! (nothing lost, nothing twice).
//!
//! Every wait is bounded (`kith_tests::TIMEOUT`) and names what it waited for.

use std::collections::HashSet;

use anyhow::{ensure, Context, Result};
use kith_node::handle::{GroupView, MessageView};
use kith_protocol::{group::GroupChange, DeliveryStatus, GroupId, UserId};
use kith_tests::{
    init_logging, introduce,
    mesh::{MailboxClient, Mesh},
    wait_for, TestNode, TIMEOUT,
};

/// Every message of a group conversation as `node` shows it, newest first.
fn group_messages(node: &TestNode, group: &GroupId) -> Result<Vec<MessageView>> {
    let n = node.node()?;
    let mut out = Vec::new();
    let mut offset = 0;
    loop {
        let page = n.group_conversation(group, offset, kith_node::handle::MAX_PAGE, None)?;
        out.extend(page.messages);
        match page.next_offset {
            Some(next) => offset = next,
            None => return Ok(out),
        }
    }
}

/// Waits until `node` knows `group` and `check` holds for it.
async fn wait_group(
    node: &TestNode,
    group: &GroupId,
    what: &str,
    check: impl Fn(&GroupView) -> bool,
) -> Result<GroupView> {
    wait_for(TIMEOUT, &format!("{}: {what}", node.name()), || async {
        Ok(match node.node()?.group(group) {
            Ok(g) if check(&g) => Some(g),
            _ => None,
        })
    })
    .await
}

/// Waits until `node` holds the group texts `texts` (each exactly once).
async fn wait_texts(node: &TestNode, group: &GroupId, texts: &[String]) -> Result<()> {
    let what = format!("{} holds {} group messages", node.name(), texts.len());
    wait_for(TIMEOUT, &what, || async {
        let got = group_messages(node, group)?;
        let have: Vec<&str> = got.iter().map(|m| m.text.as_str()).collect();
        Ok(texts
            .iter()
            .all(|t| have.contains(&t.as_str()))
            .then_some(()))
    })
    .await
    .with_context(|| {
        let have: Vec<String> = group_messages(node, group)
            .map(|v| v.into_iter().map(|m| m.text).collect())
            .unwrap_or_default();
        format!("{} has {have:?}", node.name())
    })?;
    let got = group_messages(node, group)?;
    let mut seen = HashSet::new();
    for m in &got {
        ensure!(
            seen.insert(m.id.clone()),
            "{}: message {} twice",
            node.name(),
            m.id
        );
    }
    Ok(())
}

async fn send(node: &TestNode, group: GroupId, text: &str) -> Result<String> {
    Ok(node
        .node()?
        .send_group_text(group, text.to_string(), serde_json::json!({}))
        .await
        .with_context(|| format!("{} sends {text:?}", node.name()))?
        .id)
}

async fn wait_status(
    node: &TestNode,
    group: &GroupId,
    id: &str,
    status: DeliveryStatus,
) -> Result<()> {
    wait_for(TIMEOUT, &format!("{id} reaches {status:?}"), || async {
        let msgs = group_messages(node, group)?;
        Ok(msgs
            .iter()
            .any(|m| m.id == id && m.status >= status)
            .then_some(()))
    })
    .await
}

struct Trio {
    mesh: Mesh,
    alice: TestNode,
    bob: TestNode,
    carol: TestNode,
}

/// alice knows bob and carol; bob and carol do not know each other.
async fn trio() -> Result<Trio> {
    let mesh = Mesh::start(3, |_| {}).await?;
    let alice = mesh.node("alice", |_| {}).await?;
    let bob = mesh.node("bob", |_| {}).await?;
    let carol = mesh.node("carol", |_| {}).await?;
    introduce(&alice, &bob).await?;
    introduce(&alice, &carol).await?;
    let mut probe = MailboxClient::random().await?;
    mesh.wait_known_by(&mut probe, &[&alice, &bob, &carol])
        .await?;
    Ok(Trio {
        mesh,
        alice,
        bob,
        carol,
    })
}

async fn create(t: &Trio) -> Result<GroupId> {
    let view = t
        .alice
        .node()?
        .create_group("friends".into(), vec![t.bob.user_id(), t.carol.user_id()])
        .await?;
    let group: GroupId = view.id.parse()?;
    for n in [&t.bob, &t.carol] {
        wait_group(n, &group, "joined the group", |g| {
            g.active && g.members.len() == 3
        })
        .await?;
    }
    Ok(group)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_messages_reach_everyone_with_per_member_ticks_and_removal_stops_them() -> Result<()>
{
    init_logging();
    let t = trio().await?;
    let group = create(&t).await?;

    let hello = send(&t.alice, group, "hello all").await?;
    wait_texts(&t.bob, &group, &["hello all".into()]).await?;
    wait_texts(&t.carol, &group, &["hello all".into()]).await?;
    // bob and carol were introduced by the group: they reach each other.
    send(&t.bob, group, "hi from bob").await?;
    wait_texts(&t.carol, &group, &["hi from bob".into()]).await?;
    wait_texts(&t.alice, &group, &["hi from bob".into()]).await?;
    let from_bob = group_messages(&t.carol, &group)?
        .into_iter()
        .find(|m| m.text == "hi from bob")
        .context("carol has bob's message")?;
    ensure!(
        from_bob.from == t.bob.user_id().to_string(),
        "sender shown is bob"
    );

    wait_status(&t.alice, &group, &hello, DeliveryStatus::Delivered).await?;
    t.bob.node()?.mark_group_read(group).await?;
    // Only bob read: the message stays delivered, bob's own tick is blue.
    let id = hello.parse()?;
    wait_for(TIMEOUT, "bob's read shows in message info", || async {
        let info = t.alice.node()?.message_info(&id)?;
        let bob = info
            .members
            .iter()
            .find(|m| m.user_id == t.bob.user_id().to_string());
        Ok(bob
            .is_some_and(|m| m.status == DeliveryStatus::Read)
            .then_some(info))
    })
    .await?;
    let info = t.alice.node()?.message_info(&id)?;
    ensure!(
        info.status == DeliveryStatus::Delivered,
        "slowest member sets the status: {info:?}"
    );
    t.carol.node()?.mark_group_read(group).await?;
    wait_status(&t.alice, &group, &hello, DeliveryStatus::Read).await?;

    // carol is removed: she learns it, and gets nothing after.
    t.alice
        .node()?
        .change_group(group, GroupChange::Remove(t.carol.user_id()))
        .await?;
    wait_group(&t.carol, &group, "sees she was removed", |g| !g.active).await?;
    wait_group(&t.bob, &group, "sees carol removed", |g| {
        g.members.len() == 2
    })
    .await?;
    let after = send(&t.alice, group, "after carol left").await?;
    wait_texts(&t.bob, &group, &["after carol left".into()]).await?;
    wait_status(&t.alice, &group, &after, DeliveryStatus::Delivered).await?;
    let carol_has = group_messages(&t.carol, &group)?;
    ensure!(
        carol_has.iter().all(|m| m.text != "after carol left"),
        "the removed member received a later message"
    );
    // A removed member cannot send to the group any more.
    let refused = t
        .carol
        .node()?
        .send_group_text(group, "still here?".into(), serde_json::json!({}))
        .await;
    ensure!(
        matches!(refused, Err(kith_node::handle::NodeError::NotMember(_))),
        "{refused:?}"
    );
    // A non-admin cannot change membership.
    let denied = t
        .bob
        .node()?
        .change_group(group, GroupChange::Add(t.carol.user_id()))
        .await;
    ensure!(
        matches!(denied, Err(kith_node::handle::NodeError::NotAdmin(_))),
        "{denied:?}"
    );
    // The same refusals over the API, as JSON with a status and a code.
    let bob_api = t.bob.api()?;
    bob_api
        .post(
            &format!("/v1/groups/{group}/members"),
            &serde_json::json!({"user_id": t.carol.user_id().to_string()}),
        )
        .await?
        .expect_error(403, "not_admin")?;
    t.carol
        .api()?
        .post(
            "/v1/messages",
            &serde_json::json!({"group": group.to_string(), "text": "hi"}),
        )
        .await?
        .expect_error(403, "not_member")?;
    bob_api
        .get(&format!("/v1/groups/{}", "0".repeat(32)))
        .await?
        .expect_error(404, "not_found")?;
    bob_api
        .get("/v1/groups/not-a-group")
        .await?
        .expect_error(400, "invalid_path")?;
    bob_api
        .post(
            "/v1/groups",
            &serde_json::json!({"name": "x", "members": ["nobody"]}),
        )
        .await?
        .expect_error(422, "invalid_input")?;
    bob_api
        .post(
            "/v1/messages",
            &serde_json::json!({"group": group.to_string(), "to": t.alice.user_id().to_string(), "text": "x"}),
        )
        .await?
        .expect_error(422, "invalid_body")?;
    drop(t.mesh);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_member_catches_up_on_messages_and_a_membership_change() -> Result<()> {
    init_logging();
    let mut t = trio().await?;
    let dave = t.mesh.node("dave", |_| {}).await?;
    introduce(&t.alice, &dave).await?;
    let group = create(&t).await?;
    send(&t.alice, group, "before").await?;
    wait_texts(&t.carol, &group, &["before".into()]).await?;

    t.carol.shutdown().await?;
    t.alice
        .node()?
        .change_group(group, GroupChange::Add(dave.user_id()))
        .await?;
    t.alice
        .node()?
        .change_group(group, GroupChange::Rename("friends+dave".into()))
        .await?;
    let texts: Vec<String> = (0..10).map(|i| format!("while away {i}")).collect();
    let mut ids = Vec::new();
    for text in &texts {
        ids.push(send(&t.alice, group, text).await?);
    }
    wait_group(&dave, &group, "is added", |g| g.active).await?;
    send(&dave, group, "dave here").await?;
    // Everything reached carol's store peers (✓ for her copies).
    for id in &ids {
        wait_status(&t.alice, &group, id, DeliveryStatus::Sent).await?;
    }
    t.carol.restart().await?;
    wait_group(&t.carol, &group, "catches up on the change", |g| {
        g.members.len() == 4 && g.name == "friends+dave"
    })
    .await?;
    let mut all = texts.clone();
    all.push("dave here".into());
    wait_texts(&t.carol, &group, &all).await?;
    for id in &ids {
        wait_status(&t.alice, &group, id, DeliveryStatus::Delivered).await?;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_admins_changing_at_once_converge() -> Result<()> {
    init_logging();
    let t = trio().await?;
    let group = create(&t).await?;
    t.alice
        .node()?
        .change_group(group, GroupChange::Promote(t.bob.user_id()))
        .await?;
    wait_group(&t.bob, &group, "is admin", |g| g.me_admin).await?;
    // Both change epoch 2 at once.
    let (a, b) = tokio::join!(
        t.alice
            .node()?
            .change_group(group, GroupChange::Rename("by alice".into())),
        t.bob
            .node()?
            .change_group(group, GroupChange::Rename("by bob".into()))
    );
    a?;
    b?;
    // The loser's change is made again on the winner: everyone ends on epoch 3, alike.
    let head = |n: &TestNode| -> Result<(u64, String)> {
        let g = n.node()?.group(&group)?;
        Ok((g.epoch, g.name))
    };
    wait_for(TIMEOUT, "all three on the same head", || async {
        let (ha, hb, hc) = (head(&t.alice)?, head(&t.bob)?, head(&t.carol)?);
        Ok((ha.0 == 3 && ha == hb && hb == hc).then_some(()))
    })
    .await?;
    // carol leaves: the others see it, and her own sends are refused from then on.
    let left = t
        .carol
        .node()?
        .change_group(group, GroupChange::Leave)
        .await?;
    ensure!(!left.active, "carol still active after leaving: {left:?}");
    for n in [&t.alice, &t.bob] {
        wait_group(n, &group, "sees carol leave", |g| g.members.len() == 2).await?;
    }
    let refused = t
        .carol
        .node()?
        .send_group_text(group, "bye?".into(), serde_json::json!({}))
        .await;
    ensure!(
        matches!(refused, Err(kith_node::handle::NodeError::NotMember(_))),
        "{refused:?}"
    );
    let after = send(&t.bob, group, "just us").await?;
    wait_texts(&t.alice, &group, &["just us".into()]).await?;
    wait_status(&t.bob, &group, &after, DeliveryStatus::Delivered).await?;
    ensure!(
        group_messages(&t.carol, &group)?
            .iter()
            .all(|m| m.text != "just us"),
        "carol got a message after she left"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn member_killed_mid_send_loses_nothing_and_gets_nothing_twice() -> Result<()> {
    init_logging();
    let mut t = trio().await?;
    let group = create(&t).await?;
    let texts: Vec<String> = (0..30).map(|i| format!("burst {i}")).collect();
    for (i, text) in texts.iter().enumerate() {
        send(&t.alice, group, text).await?;
        if i == 10 {
            t.bob.abort().await?;
        }
    }
    t.bob.restart().await?;
    wait_texts(&t.bob, &group, &texts).await?;
    wait_texts(&t.carol, &group, &texts).await?;
    let ids: Vec<String> = group_messages(&t.alice, &group)?
        .into_iter()
        .map(|m| m.id)
        .collect();
    for id in &ids {
        wait_status(&t.alice, &group, id, DeliveryStatus::Delivered).await?;
    }
    let _: UserId = t.bob.user_id();
    Ok(())
}

/// Waits until `node` has a record of `hash` complete.
async fn wait_media_complete(node: &TestNode, hash: &kith_protocol::BlobHash) -> Result<()> {
    let what = format!("{} has the group's media complete", node.name());
    wait_for(TIMEOUT * 3, &what, || async {
        let rec = node.node()?.media(hash)?;
        Ok(rec
            .filter(|r| r.state == kith_node::media::MediaState::Complete)
            .map(|_| ()))
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_media_reaches_online_and_offline_members() -> Result<()> {
    init_logging();
    let mut t = trio().await?;
    let group = create(&t).await?;
    // carol is away: the blob goes to her store peers.
    t.carol.shutdown().await?;
    let bytes: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let res = t
        .alice
        .api()?
        .raw(
            reqwest::Method::POST,
            &format!("/v1/media?group={group}&name=trail.bin&caption=look"),
            kith_tests::Auth::Token,
            Some(("application/octet-stream", bytes.clone())),
        )
        .await?;
    res.expect_status(201)?;
    let hex = res
        .body
        .get("hash")
        .and_then(serde_json::Value::as_str)
        .context("hash in the answer")?;
    let hash = kith_protocol::BlobHash::from_hex(hex).map_err(|e| anyhow::anyhow!("{e}"))?;
    wait_media_complete(&t.bob, &hash).await?;
    t.carol.restart().await?;
    wait_media_complete(&t.carol, &hash).await?;
    for n in [&t.bob, &t.carol] {
        let msgs = group_messages(n, &group)?;
        let m = msgs
            .iter()
            .find(|m| m.text == "look")
            .with_context(|| format!("{} shows the media message", n.name()))?;
        ensure!(
            m.media.is_some(),
            "{}: the message shows its media",
            n.name()
        );
        let rec = n.node()?.media(&hash)?.context("media record")?;
        let got = std::fs::read(n.node()?.media_files().path_of(&rec))?;
        ensure!(
            got == bytes,
            "{}: the file arrived byte-identical",
            n.name()
        );
    }
    // Sent to the group by a non-member: refused before the upload.
    let res = t
        .alice
        .api()?
        .raw(
            reqwest::Method::POST,
            &format!("/v1/media?group={}&name=x.bin", "ab".repeat(16)),
            kith_tests::Auth::Token,
            Some(("application/octet-stream", vec![1, 2, 3])),
        )
        .await?;
    res.expect_error(404, "not_found")?;
    Ok(())
}

/// Attack: a stranger (someone who has our invite, but whom we never added) creates a group
/// with us in it, to push messages at us. We do not join, and nothing of theirs shows in a
/// group; at most their first envelope waits as a message request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stranger_cannot_put_you_in_a_group() -> Result<()> {
    init_logging();
    let mesh = Mesh::start(3, |_| {}).await?;
    let carol = mesh.node("carol", |_| {}).await?;
    let mallory = mesh.node("mallory", |_| {}).await?;
    let mut probe = MailboxClient::random().await?;
    mesh.wait_known_by(&mut probe, &[&carol, &mallory]).await?;
    // Only mallory adds carol.
    mallory
        .node()?
        .add_contact(&carol.invite().await?, Some("carol".into()))
        .await?;
    let view = mallory
        .node()?
        .create_group("spam".into(), vec![carol.user_id()])
        .await?;
    let group: GroupId = view.id.parse()?;
    send(&mallory, group, "buy now").await?;
    wait_for(
        TIMEOUT,
        "mallory's envelope reached carol (a request)",
        || async { Ok((!carol.node()?.requests()?.is_empty()).then_some(())) },
    )
    .await?;
    ensure!(
        carol.node()?.groups()?.is_empty(),
        "carol joined a stranger's group"
    );
    ensure!(
        carol
            .node()?
            .group_conversation(&group, 0, 10, None)
            .is_err(),
        "a stranger's group conversation exists at carol"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_member_added_again_rejoins_and_reads_only_what_follows() -> Result<()> {
    init_logging();
    let t = trio().await?;
    let group = create(&t).await?;
    let alice = t.alice.node()?;
    alice
        .change_group(group, GroupChange::Remove(t.carol.user_id()))
        .await?;
    wait_group(&t.carol, &group, "removed", |g| !g.active).await?;
    alice
        .change_group(group, GroupChange::Rename("without carol".into()))
        .await?;
    let away = send(&t.alice, group, "said while carol was out").await?;
    wait_status(&t.alice, &group, &away, DeliveryStatus::Delivered).await?;
    alice
        .change_group(group, GroupChange::Add(t.carol.user_id()))
        .await?;
    wait_group(&t.carol, &group, "added again", |g| {
        g.active && g.name == "without carol" && g.members.len() == 3
    })
    .await?;
    send(&t.alice, group, "welcome back").await?;
    send(&t.bob, group, "hi again").await?;
    wait_texts(
        &t.carol,
        &group,
        &["welcome back".into(), "hi again".into()],
    )
    .await?;
    ensure!(
        group_messages(&t.carol, &group)?
            .iter()
            .all(|m| m.text != "said while carol was out"),
        "carol got a message from while she was out"
    );
    Ok(())
}
