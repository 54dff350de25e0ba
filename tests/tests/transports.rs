//! Whole nodes on the transports other than TCP: two nodes that listen only on QUIC exchange
//! messages with their ticks, and the presence view reports the direct route.

use anyhow::{ensure, Result};
use kith_node::{
    handle::{ContactRoute, PresenceView},
    Event,
};
use kith_protocol::DeliveryStatus;
use kith_tests::{init_logging, introduce, wait_event, wait_for, TestNode, TIMEOUT};

const QUIC_ONLY: &str = "/ip4/127.0.0.1/udp/0/quic-v1";

async fn quic_node(name: &str) -> Result<TestNode> {
    TestNode::start_with(name, |c| {
        c.listen = vec![QUIC_ONLY.parse().expect("a QUIC address")]
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_listening_only_on_quic_exchange_messages_directly() -> Result<()> {
    init_logging();
    let alice = quic_node("alice").await?;
    let bob = quic_node("bob").await?;
    let addrs = alice.node()?.me().await?.listen_addrs;
    ensure!(
        !addrs.is_empty() && addrs.iter().all(|a| a.contains("/quic-v1")),
        "alice listens on QUIC only: {addrs:?}"
    );
    introduce(&alice, &bob).await?;
    let (a, b) = (alice.node()?, bob.node()?);
    let mut alice_events = a.subscribe();
    let mut bob_events = b.subscribe();

    let sent = a
        .send_text(bob.user_id(), "over QUIC".into(), serde_json::json!({}))
        .await?;
    wait_event(
        &mut bob_events,
        TIMEOUT,
        "bob to receive",
        |e| matches!(e, Event::Message { message, .. } if message.id == sent.id),
    )
    .await?;
    wait_event(&mut alice_events, TIMEOUT, "the delivered tick", |e| {
        matches!(e, Event::Status { id, status, .. }
            if *id == sent.id && *status >= DeliveryStatus::Delivered)
    })
    .await?;
    let reply = b
        .send_text(alice.user_id(), "and back".into(), serde_json::json!({}))
        .await?;
    wait_event(
        &mut alice_events,
        TIMEOUT,
        "alice to receive the reply",
        |e| matches!(e, Event::Message { message, .. } if message.id == reply.id),
    )
    .await?;

    let bob_id = bob.user_id();
    let seen: PresenceView = wait_for(TIMEOUT, "alice to see bob's direct route", || {
        let a = a.clone();
        async move {
            let p = a.presence(bob_id).await?;
            Ok((p.route == ContactRoute::Direct).then_some(p))
        }
    })
    .await?;
    ensure!(seen.route == ContactRoute::Direct, "{seen:?}");
    Ok(())
}
