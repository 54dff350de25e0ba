//! Attacks on the mailbox by store peers and strangers (issue #13), each against real nodes
//! and store peers on 127.0.0.1:
//! - a store peer that ground its id next to the recipient's gets no deposits and no repair
//!   traffic: only the store peers the recipient named in its signed bundle do;
//! - a store peer sees who a deposit is for, never who wrote it: neither in the envelope it
//!   holds nor in the peer id of the connection that handed it over;
//! - a stranger (no mailbox access key) cannot fill a mailbox past its requests allowance,
//!   while a contact still can deposit.
#![allow(missing_docs)]

use anyhow::{ensure, Context, Result};
use kith_node::time::now_ms;
use kith_protocol::{
    mailbox::{MailboxResponse, RefuseReason},
    DeliveryStatus,
};
use kith_tests::{
    init_logging, introduce,
    mesh::{
        check_exactly_once, numbered, send_all, wait_received, wait_statuses, MailboxClient, Mesh,
        Sealer, StorePeer,
    },
    TestNode,
};
use std::sync::atomic::Ordering::Relaxed;

/// Messages sent in each test.
const N: usize = 5;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_id_grinding_store_peer_gets_no_deposits_and_no_repair_traffic() -> Result<()> {
    init_logging();
    let mut mesh = Mesh::start(3, |_| {}).await?;
    let mut bob = mesh.node("bob", |_| {}).await?;
    let mut probe = MailboxClient::random().await?;
    mesh.wait_known_by(&mut probe, &[&bob]).await?;
    let b = bob.user_id();

    // Mallory grinds keys until hers is closer (XOR) to bob's id than every honest store
    // peer's: what made a peer one of bob's store peers before recipients chose them.
    let honest: Vec<libp2p::PeerId> = mesh.stores.iter().map(|s| s.peer_id()).collect();
    let key = loop {
        let key = libp2p::identity::Keypair::generate_ed25519();
        let peer = key.public().to_peer_id();
        let all = honest.iter().copied().chain([peer]);
        if kith_net::closest_peers(&b.peer_id(), all, 1) == [peer] {
            break key;
        }
    };
    let peers = mesh.bootstrap_addrs()?;
    let grinder = StorePeer::start_keyed("grinder", &peers, &key, |c| {
        c.repair_interval = kith_tests::mesh::FAST_REPAIR;
        c.record_deposits = 64;
    })
    .await?;
    mesh.stores.push(grinder);
    let g = mesh.stores.len() - 1;

    // Alice bootstraps from every store peer, the grinder included, so she knows it advertises
    // the mailbox protocol.
    let alice = mesh.node("alice", |_| {}).await?;
    introduce(&alice, &bob).await?;
    mesh.wait_known_by(&mut probe, &[&alice]).await?;
    bob.shutdown().await?;

    let texts = numbered("g", N);
    let mut events = alice.node()?.subscribe();
    let ids = send_all(&alice, b, &texts).await?;
    wait_statuses(&mut events, &ids, DeliveryStatus::Sent)
        .await
        .context("alice's messages are held by bob's store peers")?;
    // Every honest store peer gets them (deposit or repair); then the grinder still has none.
    let honest_count = mesh.stores.len() - 1;
    for i in 0..honest_count {
        let store = &mesh.stores[i];
        kith_tests::wait_for(
            kith_tests::TIMEOUT,
            "an honest store peer to hold them",
            || async { Ok((store.stored_messages()? >= N as u64).then_some(())) },
        )
        .await?;
    }
    let m = mesh.stores[g].metrics()?;
    ensure!(
        m.deposits.load(Relaxed) == 0
            && m.replicas.load(Relaxed) == 0
            && m.deposit_log.seen().is_empty()
            && mesh.stores[g].stored_messages()? == 0,
        "the grinder got {} deposits and {} replicas",
        m.deposits.load(Relaxed),
        m.replicas.load(Relaxed)
    );

    bob.restart().await?;
    let received = wait_received(&bob, &alice.user_id(), N).await?;
    check_exactly_once(&received, &ids)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_peer_learns_the_recipient_of_a_deposit_but_never_its_sender() -> Result<()> {
    init_logging();
    let mesh = Mesh::start(3, |c| c.record_deposits = 64).await?;
    let alice = mesh.node("alice", |_| {}).await?;
    let mut bob = mesh.node("bob", |_| {}).await?;
    introduce(&alice, &bob).await?;
    let mut probe = MailboxClient::random().await?;
    mesh.wait_known_by(&mut probe, &[&alice, &bob]).await?;
    let (a, b) = (alice.user_id(), bob.user_id());
    bob.shutdown().await?;

    let texts = numbered("s", N);
    let mut events = alice.node()?.subscribe();
    let ids = send_all(&alice, b, &texts).await?;
    wait_statuses(&mut events, &ids, DeliveryStatus::Sent).await?;

    // What would identify alice: her user id (also her node's peer id) and her public keys.
    let invite = kith_node::invite::Invite::decode(&alice.invite().await?)?;
    let marks: Vec<(&str, Vec<u8>)> = vec![
        ("user id", a.to_bytes()),
        ("identity key", invite.bundle.identity_key.to_vec()),
        ("static key", invite.bundle.static_key.to_vec()),
    ];
    let mut seen_any = 0;
    for store in &mesh.stores {
        for d in store.metrics()?.deposit_log.seen() {
            // Whoever deposits, the store peer must not learn who: bob's node may deposit too
            // (a receipt or his contact card for alice, when a direct link was down a moment,
            // e.g. while duplicate connections were closed), and that is checked the same way.
            ensure!(
                d.depositor != a.peer_id() && d.depositor != b.peer_id(),
                "{}: the deposit came over a connection authenticated as {}",
                store.name(),
                d.depositor
            );
            if d.recipient != b {
                continue;
            }
            seen_any += 1;
            for (what, bytes) in &marks {
                ensure!(
                    !d.envelope
                        .windows(bytes.len())
                        .any(|w| w == bytes.as_slice()),
                    "{}: a held envelope contains alice's {what}",
                    store.name()
                );
            }
        }
    }
    ensure!(
        seen_any >= 2 * N,
        "only {seen_any} deposits for bob logged; W=2 store peers should hold each of {N}"
    );
    bob.restart().await?;
    let received = wait_received(&bob, &a, N).await?;
    check_exactly_once(&received, &ids)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stranger_cannot_fill_a_mailbox_past_the_requests_allowance() -> Result<()> {
    init_logging();
    const ALLOWANCE: usize = 5;
    let store = StorePeer::start("store", &[], |c| {
        c.requests_limits.max_messages = ALLOWANCE;
    })
    .await?;
    let mut carol = TestNode::start_with("carol", |c| c.bootstrap = store.addrs()).await?;
    let c = carol.user_id();
    let (carol_key, carol_bundle) = store.wait_registered(&carol).await?;
    carol.shutdown().await?;

    // Mallory, a stranger, tries to fill carol's mailbox (she has no access key).
    let mut mallory = Sealer::new();
    let mut client = MailboxClient::as_user(&mallory.identity).await?;
    let mut stream = client.open(&store).await?;
    let hour = now_ms() + 3_600_000;
    let mut stored = 0;
    for t in numbered("spam", 4 * ALLOWANCE) {
        let env = mallory.text(&carol_bundle, &t, hour)?;
        match stream.deposit(&env, None).await? {
            MailboxResponse::Stored(_) => stored += 1,
            MailboxResponse::Refused(_, RefuseReason::MailboxFull) => {}
            other => anyhow::bail!("unexpected answer {other:?}"),
        }
    }
    ensure!(
        stored == ALLOWANCE,
        "a stranger stored {stored} messages, allowance {ALLOWANCE}"
    );
    // A contact (holding carol's key) still reaches her.
    let mut dave = Sealer::new();
    let mut dave_client = MailboxClient::as_user(&dave.identity).await?;
    let mut dave_stream = dave_client.open(&store).await?;
    let env = dave.text(&carol_bundle, "from a contact", hour)?;
    let answer = dave_stream.deposit(&env, Some(carol_key)).await?;
    ensure!(
        answer == MailboxResponse::Stored(env.id()),
        "a contact's deposit: {answer:?}"
    );
    let m = store.metrics()?;
    ensure!(
        m.requests.load(Relaxed) == ALLOWANCE as u64 && store.stored_messages()? == 6,
        "{} requests, {} held",
        m.requests.load(Relaxed),
        store.stored_messages()?
    );
    carol.restart().await?;
    // Carol's node takes them all (the stranger's land in her requests).
    kith_tests::wait_for(
        kith_tests::TIMEOUT,
        "carol to fetch her mailbox",
        || async { Ok((m.fetched.load(Relaxed) >= 6).then_some(())) },
    )
    .await?;
    let _ = c;
    Ok(())
}
