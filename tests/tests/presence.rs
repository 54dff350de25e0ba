//! Presence between two in-process nodes with a short heartbeat: online while connected,
//! offline with a last-seen time once the contact goes away, and the mutual last-seen privacy
//! setting.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use anyhow::{ensure, Context, Result};
use kith_node::{
    handle::{ContactRoute, PresenceView},
    time::now_ms,
    Event,
};
use kith_protocol::UserId;
use kith_tests::{init_logging, introduce, wait_event, wait_for, ApiClient, TestNode, TIMEOUT};
use serde_json::json;
use tokio::sync::broadcast::Receiver;

const HEARTBEAT: Duration = Duration::from_millis(200);

async fn start(name: &str) -> Result<TestNode> {
    TestNode::start_with(name, |c| c.heartbeat = HEARTBEAT).await
}

async fn presence(api: &ApiClient, user: &UserId) -> Result<PresenceView> {
    let res = api.get(&format!("/v1/presence/{user}")).await?;
    res.expect_status(200)?;
    Ok(serde_json::from_value(res.body.clone())?)
}

async fn wait_online(events: &mut Receiver<Event>, user: &UserId, online: bool) -> Result<()> {
    let who = user.to_string();
    wait_event(
        events,
        TIMEOUT,
        &format!("{who} to be seen online={online}"),
        |e| matches!(e, Event::Presence { user, presence } if user == &who && presence.online == online),
    )
    .await?;
    Ok(())
}

/// Whether the view shows nothing of the contact's presence (the route is ours, not theirs:
/// it is shown either way).
fn is_hidden(view: &PresenceView) -> bool {
    !view.online && view.last_seen.is_none() && view.last_seen_ms.is_none()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_goes_online_then_offline() -> Result<()> {
    init_logging();
    let started_ms = now_ms();
    let alice = start("alice").await?;
    let mut bob = start("bob").await?;
    let mut alice_events = alice.node()?.subscribe();
    introduce(&alice, &bob).await?;
    let b = bob.user_id();
    let api = alice.api()?;

    wait_online(&mut alice_events, &b, true).await?;
    // The API shows it too (polled: a heartbeat missed under load may flap it briefly).
    let seen = wait_for(TIMEOUT, "the API to show bob online", || {
        let api = api.clone();
        async move {
            let seen = presence(&api, &b).await?;
            Ok(seen.online.then_some(seen))
        }
    })
    .await?;
    ensure!(seen.last_seen.is_some(), "online has a last seen: {seen:?}");
    ensure!(
        seen.route == ContactRoute::Direct,
        "heartbeats come over a direct connection: {seen:?}"
    );

    bob.shutdown().await?;
    wait_online(&mut alice_events, &b, false).await?;
    let seen = presence(&api, &b).await?;
    ensure!(!seen.online, "bob is offline: {seen:?}");
    // The connection may outlive the last heartbeat by a moment: wait for it to close.
    wait_for(TIMEOUT, "the route to bob to fall back to store peers", || {
        let api = api.clone();
        async move {
            Ok((presence(&api, &b).await?.route == ContactRoute::Store).then_some(()))
        }
    })
    .await?;
    let last_seen = seen
        .last_seen
        .as_deref()
        .context("offline keeps a last seen")?;
    let last_seen_ms = seen.last_seen_ms.context("last_seen_ms")?;
    ensure!(
        last_seen.ends_with('Z') && last_seen.contains('T'),
        "last_seen is RFC 3339 UTC: {last_seen}"
    );
    ensure!(
        (started_ms..=now_ms()).contains(&last_seen_ms),
        "last seen {last_seen_ms} is within the test"
    );
    // The presence of a stranger is not known at all.
    let stranger = UserId::from_peer_id(libp2p_peer()).context("stranger id")?;
    let res = api.get(&format!("/v1/presence/{stranger}")).await?;
    res.expect_error(404, "unknown_contact")?;
    Ok(())
}

fn libp2p_peer() -> libp2p::PeerId {
    libp2p::identity::Keypair::generate_ed25519()
        .public()
        .to_peer_id()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hiding_last_seen_is_mutual() -> Result<()> {
    init_logging();
    let alice = start("alice").await?;
    let bob = start("bob").await?;
    let mut alice_events = alice.node()?.subscribe();
    let mut bob_events = bob.node()?.subscribe();
    introduce(&alice, &bob).await?;
    let (a, b) = (alice.user_id(), bob.user_id());
    let (alice_api, bob_api) = (alice.api()?, bob.api()?);
    wait_online(&mut alice_events, &b, true).await?;
    wait_online(&mut bob_events, &a, true).await?;

    let res = alice_api
        .put("/v1/settings", &json!({"share_last_seen": false}))
        .await?;
    res.expect_status(204)?;

    // Alice, who hides hers, sees nobody's.
    let seen = presence(&alice_api, &b).await?;
    ensure!(is_hidden(&seen), "alice must see bob hidden: {seen:?}");
    // Bob sees hers hidden once her next record (sent at once on the change) arrives; no event
    // announces a change of visibility, so poll.
    wait_for(TIMEOUT, "bob to see alice's presence hidden", || {
        let bob_api = bob_api.clone();
        async move { Ok(is_hidden(&presence(&bob_api, &a).await?).then_some(())) }
    })
    .await?;

    // Sharing again shows both sides again.
    let res = alice_api
        .put("/v1/settings", &json!({"share_last_seen": true}))
        .await?;
    res.expect_status(204)?;
    wait_for(TIMEOUT, "alice to see bob online again", || {
        let api = alice_api.clone();
        async move { Ok(presence(&api, &b).await?.online.then_some(())) }
    })
    .await?;
    wait_for(TIMEOUT, "bob to see alice online again", || {
        let api = bob_api.clone();
        async move { Ok(presence(&api, &a).await?.online.then_some(())) }
    })
    .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hidden_last_seen_stays_hidden_after_restart() -> Result<()> {
    init_logging();
    let mut alice = start("alice").await?;
    let bob = start("bob").await?;
    let mut bob_events = bob.node()?.subscribe();
    introduce(&alice, &bob).await?;
    let a = alice.user_id();
    wait_online(&mut bob_events, &a, true).await?;

    alice
        .api()?
        .put("/v1/settings", &json!({"share_last_seen": false}))
        .await?
        .expect_status(204)?;
    alice.shutdown().await?;
    alice.restart().await?;
    // Bob did not move, so the restarted alice finds him at the address she holds. On a new
    // link her presence record goes first, then the message: once bob holds the message he
    // has her record from after the restart.
    let sent = alice
        .node()?
        .send_text(bob.user_id(), "back again".into(), json!({}))
        .await?;
    wait_event(
        &mut bob_events,
        TIMEOUT,
        "bob to receive alice's message",
        |e| matches!(e, Event::Message { message, .. } if message.id == sent.id),
    )
    .await?;
    let seen = presence(&bob.api()?, &a).await?;
    ensure!(
        is_hidden(&seen),
        "alice chose to hide her last seen before restarting, yet bob sees {seen:?}"
    );
    Ok(())
}
