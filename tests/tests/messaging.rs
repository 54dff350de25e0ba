//! Online one-to-one messaging between two in-process nodes: delivery both ways, the ticks,
//! and the outbox surviving a crash and restart of the sender and of the recipient.

#![allow(clippy::unwrap_used)]

use std::collections::{HashMap, HashSet};

use anyhow::{bail, ensure, Context, Result};
use kith_node::{handle::MessageView, Event};
use kith_protocol::DeliveryStatus;
use kith_tests::{init_logging, introduce, wait_event, wait_for, ApiClient, TestNode, TIMEOUT};
use serde_json::{json, Value};

/// The conversation with `peer` as the REST API shows it (newest first).
async fn conversation(api: &ApiClient, peer: &impl ToString) -> Result<Vec<MessageView>> {
    let res = api
        .get(&format!(
            "/v1/conversations/{}?offset=0&count=200",
            peer.to_string()
        ))
        .await?;
    res.expect_status(200)?;
    let messages = res
        .body
        .get("messages")
        .cloned()
        .context("conversation answer lacks `messages`")?;
    Ok(serde_json::from_value(messages)?)
}

fn is_message(event: &Event, id: &str) -> bool {
    matches!(event, Event::Message { message, .. } if message.id == id)
}

fn check_message(
    m: &MessageView,
    id: &str,
    from: &impl ToString,
    to: &impl ToString,
    text: &str,
    meta: &Value,
    outgoing: bool,
) -> Result<()> {
    ensure!(m.id == id, "expected message {id}, found {m:?}");
    ensure!(m.from == from.to_string(), "wrong `from` in {m:?}");
    ensure!(m.to == to.to_string(), "wrong `to` in {m:?}");
    ensure!(m.text == text, "wrong text in {m:?}");
    ensure!(&m.client_meta == meta, "wrong client_meta in {m:?}");
    ensure!(m.outgoing == outgoing, "wrong `outgoing` in {m:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_exchange_messages_both_ways() -> Result<()> {
    init_logging();
    let alice = TestNode::start("alice").await?;
    let bob = TestNode::start("bob").await?;
    introduce(&alice, &bob).await?;
    let (a, b) = (alice.user_id(), bob.user_id());
    let (alice_api, bob_api) = (alice.api()?, bob.api()?);
    let mut alice_events = alice.node()?.subscribe();
    let mut bob_events = bob.node()?.subscribe();

    let hello_meta = json!({"device": "alice-laptop", "n": 1});
    let hello = alice_api
        .send_text(&b, "hello bob", hello_meta.clone())
        .await?;
    wait_event(&mut bob_events, TIMEOUT, "bob receives hello", |e| {
        is_message(e, &hello)
    })
    .await?;

    let reply_meta = json!({"device": "bob-phone", "reply_to": hello});
    let reply = bob_api
        .send_text(&a, "hi alice 👋\nsecond line", reply_meta.clone())
        .await?;
    wait_event(
        &mut alice_events,
        TIMEOUT,
        "alice receives the reply",
        |e| is_message(e, &reply),
    )
    .await?;

    for (who, api, peer, mine) in [("alice", &alice_api, b, true), ("bob", &bob_api, a, false)] {
        let conv = conversation(api, &peer)
            .await
            .with_context(|| format!("{who}'s conversation"))?;
        ensure!(conv.len() == 2, "{who} should see 2 messages: {conv:#?}");
        // Newest first: the reply, then the hello.
        check_message(
            &conv[0],
            &reply,
            &b,
            &a,
            "hi alice 👋\nsecond line",
            &reply_meta,
            !mine,
        )
        .with_context(|| format!("{who}: newest"))?;
        check_message(&conv[1], &hello, &a, &b, "hello bob", &hello_meta, mine)
            .with_context(|| format!("{who}: oldest"))?;
    }
    Ok(())
}

/// Watches `alice`'s status events for message `id` until it reaches `until`, checking that
/// each event moves the status strictly forward. Returns the statuses seen.
async fn statuses_until(
    events: &mut tokio::sync::broadcast::Receiver<Event>,
    id: &str,
    seen: &mut Vec<DeliveryStatus>,
    until: DeliveryStatus,
) -> Result<()> {
    while seen.last() != Some(&until) {
        let what = format!("message {id} to reach {until:?} (seen {seen:?})");
        let event = wait_event(
            events,
            TIMEOUT,
            &what,
            |e| matches!(e, Event::Status { id: i, .. } if i == id),
        )
        .await?;
        let Event::Status { status, .. } = event else {
            unreachable!("filtered above")
        };
        if let Some(last) = seen.last() {
            ensure!(
                status > *last,
                "status went from {last:?} to {status:?} (seen {seen:?})"
            );
        }
        seen.push(status);
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statuses_reach_sent_delivered_read() -> Result<()> {
    init_logging();
    let alice = TestNode::start("alice").await?;
    let bob = TestNode::start("bob").await?;
    introduce(&alice, &bob).await?;
    let (a, b) = (alice.user_id(), bob.user_id());
    let (alice_api, bob_api) = (alice.api()?, bob.api()?);
    let mut alice_events = alice.node()?.subscribe();
    let mut bob_events = bob.node()?.subscribe();

    let res = alice_api
        .post(
            "/v1/messages",
            &json!({"to": b.to_string(), "text": "tick tock"}),
        )
        .await?;
    res.expect_status(201)?;
    ensure!(
        res.body["status"] == "pending",
        "a send answers pending: {}",
        res.body
    );
    let id = res.body["id"]
        .as_str()
        .context("send answer id")?
        .to_string();

    // The stored message starts pending.
    let stored = wait_event(
        &mut alice_events,
        TIMEOUT,
        "alice stores her message",
        |e| is_message(e, &id),
    )
    .await?;
    let Event::Message { message, .. } = stored else {
        unreachable!()
    };
    ensure!(message.status == DeliveryStatus::Pending, "{message:?}");

    let mut seen = vec![DeliveryStatus::Pending];
    statuses_until(&mut alice_events, &id, &mut seen, DeliveryStatus::Delivered).await?;

    wait_event(&mut bob_events, TIMEOUT, "bob receives the message", |e| {
        is_message(e, &id)
    })
    .await?;
    let bob_conv = conversation(&bob_api, &a).await?;
    ensure!(
        bob_conv.len() == 1 && bob_conv[0].status == DeliveryStatus::Delivered,
        "{bob_conv:?}"
    );

    let res = bob_api
        .post(&format!("/v1/conversations/{a}/read"), &json!({}))
        .await?;
    res.expect_status(200)?;
    ensure!(res.body == json!({"marked": 1}), "mark read: {}", res.body);
    let bob_conv = conversation(&bob_api, &a).await?;
    ensure!(
        bob_conv[0].status == DeliveryStatus::Read,
        "bob's copy is read: {bob_conv:?}"
    );

    statuses_until(&mut alice_events, &id, &mut seen, DeliveryStatus::Read).await?;
    // The ack (sent) and the delivered receipt travel on different streams, so the sent tick
    // may be overtaken by the delivered one; when it is seen it comes before delivered, which
    // the strictly-increasing check above already enforces.
    ensure!(
        seen.starts_with(&[DeliveryStatus::Pending])
            && seen.ends_with(&[DeliveryStatus::Delivered, DeliveryStatus::Read]),
        "unexpected status sequence {seen:?}"
    );

    let alice_conv = conversation(&alice_api, &b).await?;
    ensure!(
        alice_conv.len() == 1 && alice_conv[0].status == DeliveryStatus::Read,
        "{alice_conv:?}"
    );
    // Nothing moved backwards after the fact either.
    while let Ok(event) = alice_events.try_recv() {
        if let Event::Status { id: i, status, .. } = &event {
            if i == &id {
                bail!("status event after read: {status:?}");
            }
        }
    }
    // A second mark-read has nothing left to mark.
    let res = bob_api
        .post(&format!("/v1/conversations/{a}/read"), &json!({}))
        .await?;
    ensure!(
        res.body == json!({"marked": 0}),
        "second mark read: {}",
        res.body
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarted_node_resends_outbox_and_recipient_stores_once() -> Result<()> {
    const N: usize = 20;
    init_logging();
    let mut alice = TestNode::start("alice").await?;
    let mut bob = TestNode::start("bob").await?;
    introduce(&alice, &bob).await?;
    let (a, b) = (alice.user_id(), bob.user_id());

    bob.shutdown().await?;

    let alice_api = alice.api()?;
    let mut sent: HashMap<String, String> = HashMap::new();
    for i in 0..N {
        let text = format!("offline message {i}");
        let res = alice_api
            .post(
                "/v1/messages",
                &json!({"to": b.to_string(), "text": text, "client_meta": {"i": i}}),
            )
            .await?;
        res.expect_status(201)?;
        ensure!(res.body["status"] == "pending", "{}", res.body);
        let id = res.body["id"].as_str().context("id")?.to_string();
        ensure!(sent.insert(id, text).is_none(), "duplicate id from send");
    }

    // A crash: nothing flushed beyond what each 201 already promised.
    alice.abort().await?;
    alice.restart().await?;
    bob.restart().await?;
    let mut alice_events = alice.node()?.subscribe();
    let mut bob_events = bob.node()?.subscribe();

    // After the restart the pending messages are still there, still pending.
    let before = alice.conversation(&b)?;
    ensure!(
        before.len() == N,
        "alice lost messages in the crash: {before:#?}"
    );
    ensure!(
        before.iter().all(|m| m.status == DeliveryStatus::Pending),
        "{before:#?}"
    );

    // Both restarted on new ports and the invites they hold carry the old ones. Without
    // bootstrap peers (DHT) or mDNS a node cannot find a peer that moved: introduce again.
    introduce(&alice, &bob).await?;

    let mut received = HashSet::new();
    while received.len() < N {
        let what = format!("bob to receive {N} messages (has {})", received.len());
        let event = wait_event(
            &mut bob_events,
            TIMEOUT,
            &what,
            |e| matches!(e, Event::Message { peer, .. } if peer == &a.to_string()),
        )
        .await?;
        if let Event::Message { message, .. } = event {
            ensure!(
                received.insert(message.id.clone()),
                "bob stored {} twice",
                message.id
            );
        }
    }

    let mut delivered = HashSet::new();
    while delivered.len() < N {
        let what = format!("{N} delivered ticks on alice (has {})", delivered.len());
        let event = wait_event(
            &mut alice_events,
            TIMEOUT,
            &what,
            |e| matches!(e, Event::Status { status, .. } if *status >= DeliveryStatus::Delivered),
        )
        .await?;
        if let Event::Status { id, .. } = event {
            ensure!(sent.contains_key(&id), "status for an unknown message {id}");
            delivered.insert(id);
        }
    }

    let bob_conv = bob.conversation(&a)?;
    ensure!(bob_conv.len() == N, "bob has {} messages", bob_conv.len());
    let ids: HashSet<&str> = bob_conv.iter().map(|m| m.id.as_str()).collect();
    ensure!(ids.len() == N, "duplicate ids at bob: {bob_conv:#?}");
    for m in &bob_conv {
        let Some(text) = sent.get(&m.id) else {
            bail!("bob has a message alice did not send: {m:?}");
        };
        ensure!(&m.text == text, "text changed: {m:?}");
        ensure!(m.from == a.to_string() && !m.outgoing, "{m:?}");
    }
    let alice_conv = alice.conversation(&b)?;
    ensure!(
        alice_conv.len() == N,
        "alice has {} messages",
        alice_conv.len()
    );
    ensure!(
        alice_conv
            .iter()
            .all(|m| m.status >= DeliveryStatus::Delivered),
        "{alice_conv:#?}"
    );
    Ok(())
}

/// `GET /v1/chats` counts a conversation's received, unread messages (from the store's unread
/// marks) until the user reads it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chats_count_unread_messages_until_read() -> Result<()> {
    init_logging();
    let alice = TestNode::start("alice").await?;
    let bob = TestNode::start("bob").await?;
    introduce(&alice, &bob).await?;
    for n in 0..3 {
        alice
            .node()?
            .send_text(bob.user_id(), format!("m{n}"), json!({}))
            .await?;
    }
    wait_for(TIMEOUT, "bob holds alice's three messages", || async {
        Ok((bob.conversation(&alice.user_id())?.len() == 3).then_some(()))
    })
    .await?;
    let api = bob.api()?;
    let unread = |body: &Value| body["chats"][0]["unread"].as_u64();
    let res = api.get("/v1/chats").await?;
    res.expect_status(200)?;
    ensure!(unread(&res.body) == Some(3), "chats: {}", res.body);
    api.post(
        &format!("/v1/conversations/{}/read", alice.user_id()),
        &json!({}),
    )
    .await?
    .expect_status(200)?;
    let res = api.get("/v1/chats").await?;
    ensure!(
        unread(&res.body) == Some(0),
        "chats after reading: {}",
        res.body
    );
    Ok(())
}
