//! Front-running a message id: message ids are chosen by senders and every store peer sees
//! them, so anyone may seal their own valid message to bob under the id of alice's message
//! and get it to bob first. That must not take alice's message over: bob keeps both (a
//! message is identified by its sender and id), alice's reaches ✓✓, and store peers, which
//! know an envelope by recipient, id and digest, hold, push and delete each on its own.
//!
//! To make "mallory's arrives first" certain rather than likely, alice is stopped with her
//! message still in her outbox (nothing of it in flight) while mallory's is delivered, and
//! only then started again. Everything runs in this process on `127.0.0.1` (port 0); every
//! wait is bounded (see `kith_tests::TIMEOUT`).

#![allow(clippy::unwrap_used)]

use anyhow::{ensure, Context, Result};
use kith_node::{invite::Invite, time::now_ms};
use kith_protocol::{
    mailbox::{EnvelopeRef, MailboxRequest, MailboxResponse},
    wire::MsgFrame,
    DeliveryStatus, KeyBundle, MessageId, UserId,
};
use kith_tests::{
    init_logging, introduce,
    mesh::{
        received_from, send_all, wait_conversation_statuses, wait_received, MailboxClient, Mesh,
        Sealer,
    },
    wire, TestNode,
};
use tokio_util::sync::CancellationToken;

/// Bound on taking what store peers still hold for mallory at the end of a test.
const CLEANUP_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

const ALICES_TEXT: &str = "hello bob, it's alice";
const MALLORYS_TEXT: &str = "hello bob, it's 'alice' (really mallory)";

/// An hour from now: the expiry of mallory's envelope.
fn in_an_hour() -> u64 {
    now_ms() + 3_600_000
}

/// Bob adds mallory as a contact (she is someone bob knows, not a stranger).
async fn bob_knows_mallory(bob: &TestNode, mallory: &Sealer) -> Result<()> {
    let invite = Invite::new(mallory.identity.bundle(), &[]).encode()?;
    bob.node()?
        .add_contact(&invite, Some("mallory".into()))
        .await
        .context("bob adds mallory")?;
    Ok(())
}

/// Alice sends her text to the unreachable bob and stops with it still in her outbox.
async fn alice_sends_and_stops(alice: &mut TestNode, bob: UserId) -> Result<MessageId> {
    let ids = send_all(alice, bob, &[ALICES_TEXT.to_string()]).await?;
    let conv = alice.conversation(&bob)?;
    ensure!(
        conv.iter()
            .any(|m| m.id == ids[0].to_string() && m.status == DeliveryStatus::Pending),
        "alice's message is still pending: {conv:?}"
    );
    alice.shutdown().await?;
    Ok(ids[0])
}

/// Bob holds exactly one message from each of alice and mallory, both under `id`, each with
/// its sender's text.
fn both_kept(bob: &TestNode, alice: &UserId, mallory: &UserId, id: MessageId) -> Result<()> {
    let from_alice = received_from(bob, alice)?;
    ensure!(
        from_alice.len() == 1
            && from_alice[0].id == id.to_string()
            && from_alice[0].text == ALICES_TEXT,
        "bob's conversation with alice: {from_alice:#?}"
    );
    let from_mallory = received_from(bob, mallory)?;
    ensure!(
        from_mallory.len() == 1
            && from_mallory[0].id == id.to_string()
            && from_mallory[0].text == MALLORYS_TEXT,
        "bob's conversation with mallory: {from_mallory:#?}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn front_running_a_message_id_directly_does_not_take_over_the_message() -> Result<()> {
    init_logging();
    let mut alice = TestNode::start("alice").await?;
    let mut bob = TestNode::start("bob").await?;
    introduce(&alice, &bob).await?;
    let (a, b) = (alice.user_id(), bob.user_id());
    let mut mallory = Sealer::new();
    let m = mallory.user_id();
    bob_knows_mallory(&bob, &mallory).await?;

    // Alice's message to bob waits in her outbox, id known.
    bob.shutdown().await?;
    let id = alice_sends_and_stops(&mut alice, b).await?;

    // Bob is back; mallory delivers her own valid message under alice's id first.
    bob.restart().await?;
    let bob_invite = Invite::decode(&bob.invite().await?)?;
    let bob_bundle: KeyBundle = bob_invite.bundle.clone();
    let forged = mallory.text_with_id(&bob_bundle, id, MALLORYS_TEXT, in_an_hour())?;
    let cancel = CancellationToken::new();
    let (mut wire, _network, task) = wire::connect(
        &mallory.identity,
        b.peer_id(),
        bob_invite.multiaddrs(),
        cancel.clone(),
    )
    .await?;
    let answer = wire.deliver(&forged).await?;
    ensure!(
        answer == MsgFrame::Ack(vec![id]),
        "mallory's message is hers to deliver: {answer:?}"
    );
    wait_received(&bob, &m, 1).await?;

    // Alice comes back and delivers hers: it is a different message, stored and ticked.
    alice.restart().await?;
    introduce(&alice, &bob).await?;
    wait_received(&bob, &a, 1).await?;
    wait_conversation_statuses(&alice, &b, &[id], DeliveryStatus::Delivered)
        .await
        .context("alice's message reaches ✓✓")?;
    both_kept(&bob, &a, &m, id)?;
    cancel.cancel();
    task.abort();
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn front_running_a_message_id_through_a_store_peer_does_not_take_over_the_message(
) -> Result<()> {
    init_logging();
    let mut mesh = Mesh::start(3, |_| {}).await?;
    let mut alice = mesh.node("alice", |_| {}).await?;
    let mut bob = mesh.node("bob", |_| {}).await?;
    introduce(&alice, &bob).await?;
    let (a, b) = (alice.user_id(), bob.user_id());
    let mut probe = MailboxClient::random().await?;
    mesh.wait_known_by(&mut probe, &[&alice, &bob]).await?;
    let bob_bundle = Invite::decode(&bob.invite().await?)?.bundle;
    let mut mallory = Sealer::new();
    let m = mallory.user_id();
    bob_knows_mallory(&bob, &mallory).await?;
    bob.shutdown().await?;

    // Alice's message to the offline bob waits in her outbox: with every store peer down she
    // cannot deposit it, and she stops before they come back.
    for store in &mut mesh.stores {
        store.shutdown().await?;
    }
    let id = alice_sends_and_stops(&mut alice, b).await?;
    for i in 0..mesh.stores.len() {
        let peers = mesh.addrs_except(i);
        mesh.stores[i].restart(&peers).await?;
    }

    // Mallory deposits her own valid message to bob under alice's id on every store peer.
    let forged = mallory.text_with_id(&bob_bundle, id, MALLORYS_TEXT, in_an_hour())?;
    let mut depositor = MailboxClient::as_user(&mallory.identity).await?;
    for store in &mesh.stores {
        let mut s = depositor.open(store).await?;
        s.send(&[MailboxRequest::Deposit(forged.clone(), None)])
            .await?;
        let (before, answer) = s
            .recv_until("the answer to mallory's deposit", |r| {
                matches!(r, MailboxResponse::Stored(i) | MailboxResponse::Refused(i, _) if *i == id)
            })
            .await?;
        ensure!(
            before.is_empty() && answer == MailboxResponse::Stored(id),
            "{}: {before:?} then {answer:?}",
            store.name()
        );
    }
    mesh.wait_all_hold(1, "mallory's envelope on every store peer")
        .await?;

    // Alice comes back and deposits hers under the same id: held beside mallory's.
    alice.restart().await?;
    wait_conversation_statuses(&alice, &b, &[id], DeliveryStatus::Sent)
        .await
        .context("alice's deposit is held despite mallory's")?;
    mesh.wait_all_hold(2, "both envelopes on every store peer")
        .await?;

    // Bob comes back: both are pushed to him (mallory's first), both kept, alice gets ✓✓.
    bob.restart().await?;
    wait_received(&bob, &m, 1).await?;
    wait_received(&bob, &a, 1).await?;
    wait_conversation_statuses(&alice, &b, &[id], DeliveryStatus::Delivered)
        .await
        .context("alice's message reaches ✓✓")?;
    both_kept(&bob, &a, &m, id)?;
    // Bob deleted both envelopes, each by its digest. What is left is bob's delivered
    // receipt(s) for mallory, deposited in *her* mailbox (she is offline to him), on as many
    // store peers as had a link up then, and copied by repair: she takes them from every
    // store peer that still holds anything, until none does (bounded by `CLEANUP_TIMEOUT`).
    let deadline = tokio::time::Instant::now() + CLEANUP_TIMEOUT;
    loop {
        let mut held = false;
        for store in &mesh.stores {
            if store.stored_messages()? == 0 {
                continue;
            }
            held = true;
            let mut s = depositor.open(store).await?;
            s.send(&[MailboxRequest::Subscribe]).await?;
            // A gauge may lag a delete: a store peer with nothing for mallory answers nothing.
            let Ok((_, deliver)) = s
                .recv_until(
                    "mallory's mailbox",
                    |r| matches!(r, MailboxResponse::Deliver(envs) if !envs.is_empty()),
                )
                .await
            else {
                continue;
            };
            let MailboxResponse::Deliver(envs) = deliver else {
                unreachable!("recv_until returns what matched")
            };
            ensure!(
                envs.iter().all(|e| e.header.recipient == m),
                "{}: mallory was pushed someone else's envelopes: {envs:?}",
                store.name()
            );
            let refs = envs
                .iter()
                .map(|e| {
                    Ok(EnvelopeRef {
                        id: e.id(),
                        digest: e.digest()?,
                    })
                })
                .collect::<Result<Vec<_>>>()?;
            s.send(&[MailboxRequest::Delete(refs)]).await?;
        }
        if !held {
            break;
        }
        ensure!(
            tokio::time::Instant::now() < deadline,
            "store peers still hold messages: {:?}",
            mesh.holdings()
        );
    }
    mesh.wait_all_hold(0, "store peers hold nothing for bob (nor anyone)")
        .await?;
    both_kept(&bob, &a, &m, id)
}
