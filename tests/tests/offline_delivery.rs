//! Offline delivery through store-and-forward peers: a node that cannot reach a contact
//! deposits the sealed envelopes on the contact's R=3 store peers (sent once W=2 hold them);
//! the contact fetches them when it comes back, exactly once and in order, and the store
//! peers let go of them. Store peers that crash, come back or join fresh are repaired; a
//! third party can neither fetch nor delete someone else's mailbox; a store peer's limits
//! refuse what they must and lose nothing else; and store peers serve the last seen of
//! users who are offline, unless they stopped sharing it.
//!
//! Everything runs in this process on `127.0.0.1` (port 0) with temporary directories; every
//! wait is bounded (see `kith_tests::TIMEOUT`) and fails naming what it waited for.

use std::{sync::atomic::Ordering::Relaxed, time::Duration};

use anyhow::{anyhow, ensure, Context, Result};
use kith_node::{invite::Invite, time::now_ms};
use kith_protocol::{
    mailbox::{EnvelopeRef, MailboxRequest, MailboxResponse, RefuseReason},
    DeliveryStatus, Envelope, EnvelopeDigest, LocalIdentity, MailboxAccessKey, MailboxRegistration,
    MessageId, UserId, Visibility,
};
use kith_tests::{
    init_logging, introduce,
    mesh::{
        check_exactly_once, check_exactly_once_in_order, numbered, received_from, send_all,
        wait_conversation_statuses, wait_received, wait_statuses, MailboxClient, MailboxStream,
        Mesh, Sealer, StorePeer,
    },
    wait_for, TestNode, TIMEOUT,
};

/// Messages sent to the offline recipient in the main scenarios.
const N: usize = 100;

/// Starts alice and bob on `mesh`, introduces them and waits until both have found every
/// store peer (each holds both users' presence).
async fn alice_and_bob(
    mesh: &Mesh,
    tweak: impl Fn(&mut kith_node::Config),
) -> Result<(TestNode, TestNode)> {
    let alice = mesh.node("alice", &tweak).await?;
    let bob = mesh.node("bob", &tweak).await?;
    introduce(&alice, &bob).await?;
    let mut probe = MailboxClient::random().await?;
    mesh.wait_known_by(&mut probe, &[&alice, &bob]).await?;
    Ok((alice, bob))
}

/// Alice sends `texts` to the offline bob and waits until each is `sent` (held by W store
/// peers).
async fn send_while_offline(
    alice: &TestNode,
    bob: UserId,
    texts: &[String],
) -> Result<Vec<MessageId>> {
    let mut events = alice.node()?.subscribe();
    let ids = send_all(alice, bob, texts).await?;
    wait_statuses(&mut events, &ids, DeliveryStatus::Sent)
        .await
        .context("alice's messages to the offline bob reach `sent`")?;
    Ok(ids)
}

/// After bob fetched everything: the store peers let go of it (bob deleted it everywhere)
/// and nothing reached bob twice meanwhile.
async fn settle(mesh: &Mesh, bob: &TestNode, alice: UserId, ids: &[MessageId]) -> Result<()> {
    mesh.wait_all_hold(0, "bob deleted what he fetched").await?;
    check_exactly_once(&received_from(bob, &alice)?, ids)
        .context("bob's conversation once the store peers are empty")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_recipient_gets_all_messages_once_in_order() -> Result<()> {
    init_logging();
    let mesh = Mesh::start(3, |_| {}).await?;
    let (alice, mut bob) = alice_and_bob(&mesh, |_| {}).await?;
    let (a, b) = (alice.user_id(), bob.user_id());
    bob.shutdown().await?;

    let texts = numbered("m", N);
    let ids = send_while_offline(&alice, b, &texts).await?;
    // Sent means W=2 hold them; the third deposit was made too.
    mesh.wait_all_hold(N as u64, "alice deposited on all three")
        .await?;

    bob.restart().await?;
    let received = wait_received(&bob, &a, N).await?;
    check_exactly_once_in_order(&received, &ids, &texts)?;
    wait_conversation_statuses(&alice, &b, &ids, DeliveryStatus::Delivered).await?;
    settle(&mesh, &bob, a, &ids).await?;
    check_exactly_once_in_order(&received_from(&bob, &a)?, &ids, &texts)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_peer_loss_after_deposit_loses_nothing() -> Result<()> {
    init_logging();
    let mut mesh = Mesh::start(3, |_| {}).await?;
    let (alice, mut bob) = alice_and_bob(&mesh, |_| {}).await?;
    let (a, b) = (alice.user_id(), bob.user_id());
    let bob_set = mesh.mailbox_set(&bob).await?;
    bob.shutdown().await?;

    let texts = numbered("m", N);
    let ids = send_while_offline(&alice, b, &texts).await?;
    mesh.wait_all_hold(N as u64, "alice deposited on all three")
        .await?;
    // One of bob's store peers crashes with everything it held.
    let lost = bob_set[0];
    mesh.stores[lost].abort().await?;

    bob.restart().await?;
    let received = wait_received(&bob, &a, N).await?;
    check_exactly_once_in_order(&received, &ids, &texts)?;
    wait_conversation_statuses(&alice, &b, &ids, DeliveryStatus::Delivered).await?;
    settle(&mesh, &bob, a, &ids).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarted_store_peer_is_repaired_and_recipient_sees_no_duplicates() -> Result<()> {
    init_logging();
    let mut mesh = Mesh::start(3, |_| {}).await?;
    let (alice, mut bob) = alice_and_bob(&mesh, |_| {}).await?;
    let (a, b) = (alice.user_id(), bob.user_id());
    let bob_set = mesh.mailbox_set(&bob).await?;
    bob.shutdown().await?;
    let half = N / 2;

    // The first half reaches all three store peers.
    let first = numbered("a", half);
    let mut ids = send_while_offline(&alice, b, &first).await?;
    mesh.wait_all_hold(half as u64, "the first half on all three")
        .await?;

    // One crashes; the second half reaches only the other two (W=2 is still met).
    let victim = bob_set[0];
    mesh.stores[victim].abort().await?;
    let second = numbered("b", N - half);
    ids.extend(send_while_offline(&alice, b, &second).await?);
    mesh.wait_all_hold(N as u64, "both halves on the two running store peers")
        .await?;

    // It comes back from its data directory and is repaired: all three hold everything.
    let peers = mesh.addrs_except(victim);
    mesh.stores[victim].restart(&peers).await?;
    mesh.wait_all_hold(N as u64, "the restarted store peer repaired")
        .await?;
    let replicas = mesh.stores[victim].metrics()?.replicas.load(Relaxed);
    ensure!(
        replicas >= (N - half) as u64,
        "the second half reached the restarted store peer by repair: {replicas} replicas"
    );

    bob.restart().await?;
    let received = wait_received(&bob, &a, N).await?;
    check_exactly_once(&received, &ids)?;
    wait_conversation_statuses(&alice, &b, &ids, DeliveryStatus::Delivered).await?;
    settle(&mesh, &bob, a, &ids).await
}

/// A store peer that was down during alice's deposits of `texts` to the offline bob starts
/// with empty mailboxes, gets every message by repair, and then alone serves bob all of them.
async fn fresh_store_peer_repaired_then_serving_alone(texts: &[String]) -> Result<()> {
    let n = texts.len();
    // Bob names all three store peers; the third goes down before the deposits and comes
    // back with its disk lost (no mailboxes, no registrations).
    let mut mesh = Mesh::start(3, |_| {}).await?;
    let (alice, mut bob) = alice_and_bob(&mesh, |_| {}).await?;
    let late = 2;
    mesh.stores[late].shutdown().await?;
    let (a, b) = (alice.user_id(), bob.user_id());
    bob.shutdown().await?;

    let ids = send_while_offline(&alice, b, texts).await?;
    mesh.wait_all_hold(n as u64, "alice deposited on the two running store peers")
        .await?;

    // The late store peer starts with empty mailboxes and gets bob's registration and then
    // copies by repair (it takes replicas only for a mailbox registered with it).
    std::fs::remove_dir_all(mesh.stores[late].data_dir().join("mailboxes"))
        .context("emptying the late store peer's mailboxes")?;
    let peers = mesh.addrs_except(late);
    mesh.stores[late].restart(&peers).await?;
    mesh.wait_all_hold(n as u64, "the fresh store peer repaired")
        .await?;
    let m = mesh.stores[late].metrics()?;
    ensure!(
        m.replicas.load(Relaxed) == n as u64 && m.deposits.load(Relaxed) == 0,
        "the fresh store peer holds replicas only: {} replicas, {} deposits",
        m.replicas.load(Relaxed),
        m.deposits.load(Relaxed)
    );

    // Both store peers that took the deposits crash: the fresh one alone serves bob.
    for i in 0..mesh.stores.len() {
        if i != late {
            mesh.stores[i].abort().await?;
        }
    }
    bob.restart().await?;
    let received = wait_received(&bob, &a, n).await?;
    check_exactly_once_in_order(&received, &ids, texts)?;
    wait_conversation_statuses(&alice, &b, &ids, DeliveryStatus::Delivered).await?;
    settle(&mesh, &bob, a, &ids).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fresh_store_peer_gets_copies_by_repair_and_serves_them_alone() -> Result<()> {
    init_logging();
    fresh_store_peer_repaired_then_serving_alone(&numbered("m", N)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fresh_store_peer_gets_a_mailbox_larger_than_a_frame_by_repair() -> Result<()> {
    init_logging();
    // Repair used to send the whole mailbox as one `Replicate` past the frame limit, which was
    // dropped at every repair round.
    fresh_store_peer_repaired_then_serving_alone(&big_texts("r")).await
}

/// Texts in the backlog tests: 40 texts of 40 KB (1.6 MB in all, well past one 1 MiB frame).
const BIG_N: usize = 40;
/// Length of each backlog text, in bytes.
const BIG_LEN: usize = 40_000;

/// `BIG_N` distinct texts of `BIG_LEN` bytes.
fn big_texts(prefix: &str) -> Vec<String> {
    numbered(prefix, BIG_N)
        .into_iter()
        .map(|t| {
            let fill = BIG_LEN - t.len();
            t + &"x".repeat(fill)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backlog_larger_than_a_frame_drains_completely() -> Result<()> {
    init_logging();
    let mesh = Mesh::start(3, |_| {}).await?;
    let (alice, mut bob) = alice_and_bob(&mesh, |_| {}).await?;
    let (a, b) = (alice.user_id(), bob.user_id());
    bob.shutdown().await?;

    let texts = big_texts("m");
    let ids = send_while_offline(&alice, b, &texts).await?;
    mesh.wait_all_hold(BIG_N as u64, "alice deposited on all three")
        .await?;

    // The store peers used to put the whole backlog in one `Deliver` past the frame limit,
    // drop it, and rebuild the same one at every subscription: bob received nothing, ever.
    bob.restart().await?;
    let received = wait_received(&bob, &a, BIG_N).await?;
    check_exactly_once_in_order(&received, &ids, &texts)?;
    wait_conversation_statuses(&alice, &b, &ids, DeliveryStatus::Delivered).await?;
    settle(&mesh, &bob, a, &ids).await?;
    check_exactly_once_in_order(&received_from(&bob, &a)?, &ids, &texts)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn message_store_peers_refuse_as_too_large_stays_pending_then_goes_direct() -> Result<()> {
    init_logging();
    // Operators may accept smaller envelopes than a node sends.
    const MAX_BYTES: usize = 4096;
    let mesh = Mesh::start(3, |c| c.limits.max_envelope_bytes = MAX_BYTES).await?;
    let (alice, mut bob) = alice_and_bob(&mesh, |_| {}).await?;
    let (a, b) = (alice.user_id(), bob.user_id());
    bob.shutdown().await?;

    let texts = vec!["small".to_string(), "x".repeat(3 * MAX_BYTES)];
    let ids = send_all(&alice, b, &texts).await?;
    wait_conversation_statuses(&alice, &b, &ids[..1], DeliveryStatus::Sent).await?;
    wait_for(
        TIMEOUT,
        "two store peers to refuse the large one",
        || async {
            let mut refused = 0;
            for s in &mesh.stores {
                refused += s.metrics()?.rejected(RefuseReason::TooLarge);
            }
            Ok((refused >= 2).then_some(()))
        },
    )
    .await?;
    // Never ✓ through store peers that do not hold it.
    let big = ids[1].to_string();
    let status = alice
        .conversation(&b)?
        .into_iter()
        .find(|m| m.id == big)
        .map(|m| m.status);
    ensure!(
        status == Some(DeliveryStatus::Pending),
        "the refused message shows {status:?}"
    );

    // Bob comes back: the small one from his store peers, the large one directly.
    bob.restart().await?;
    let received = wait_received(&bob, &a, 2).await?;
    check_exactly_once(&received, &ids)?;
    wait_conversation_statuses(&alice, &b, &ids, DeliveryStatus::Delivered).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mallory_cannot_fetch_or_delete_bobs_mailbox() -> Result<()> {
    init_logging();
    let mesh = Mesh::start(3, |_| {}).await?;
    let (alice, mut bob) = alice_and_bob(&mesh, |_| {}).await?;
    let (a, b) = (alice.user_id(), bob.user_id());
    let bob_bundle = Invite::decode(&bob.invite().await?)?.bundle;
    bob.shutdown().await?;

    let n = 20;
    let texts = numbered("m", n);
    let mut ids = send_while_offline(&alice, b, &texts).await?;
    mesh.wait_all_hold(n as u64, "alice deposited on all three")
        .await?;

    // Mallory, on a raw mailbox stream to each store peer: subscribes (she may only get her
    // own, empty, mailbox), asks to delete bob's messages, and offers "replicas" for bob
    // (only the store peers bob named may replicate).
    let mut mallory_id = Sealer::new();
    let forged = mallory_id.text(&bob_bundle, "from mallory", now_ms() + 3_600_000)?;
    let mut mallory = MailboxClient::as_user(&mallory_id.identity).await?;
    let mut streams: Vec<MailboxStream> = Vec::new();
    for store in &mesh.stores {
        let mut s = mallory.open(store).await?;
        // She sees bob's ids (every store peer does) but not his envelopes: she names the
        // ids with made-up digests here, and a known envelope exactly below (carol's).
        let guessed: Vec<EnvelopeRef> = ids
            .iter()
            .map(|id| EnvelopeRef {
                id: *id,
                digest: EnvelopeDigest([0; 16]),
            })
            .collect();
        s.send(&[MailboxRequest::Subscribe, MailboxRequest::Delete(guessed)])
            .await?;
        let (before, _) = s.barrier(&b).await?;
        ensure!(
            before.is_empty(),
            "{}: mallory's subscription carried {before:?}",
            store.name()
        );
        s.send(&[MailboxRequest::Replicate {
            envelopes: vec![forged.clone()],
            requests: Vec::new(),
        }])
        .await?;
        let (before, answer) = s.barrier(&b).await?;
        let expected = vec![
            MailboxResponse::Refused(forged.id(), RefuseReason::NotNamed),
            MailboxResponse::Replicated(Vec::new()),
        ];
        ensure!(
            before == expected,
            "{}: mallory's replica got {before:?} (then {answer:?}), expected {expected:?}",
            store.name()
        );
        streams.push(s);
    }
    for store in &mesh.stores {
        let m = store.metrics()?;
        ensure!(
            store.stored_messages()? == n as u64
                && m.deleted.load(Relaxed) == 0
                && m.fetched.load(Relaxed) == 0,
            "{}: mallory changed or fetched bob's mailbox: {} held, {} deleted, {} fetched",
            store.name(),
            store.stored_messages()?,
            m.deleted.load(Relaxed),
            m.fetched.load(Relaxed)
        );
    }

    // A new deposit for bob is not pushed to mallory's subscriptions either.
    let late = numbered("late", 1);
    ids.extend(send_while_offline(&alice, b, &late).await?);
    mesh.wait_all_hold(n as u64 + 1, "the late message on all three")
        .await?;
    for s in &mut streams {
        let (before, _) = s.barrier(&b).await?;
        ensure!(
            before.is_empty(),
            "mallory's subscription to {} carried {before:?}",
            s.peer()
        );
    }

    // Mallory "deletes ahead" the id of a message still on its way to bob (say she saw it
    // pass elsewhere): the store peers still take it when it arrives.
    let mut carol = Sealer::new();
    let ahead = carol.text(&bob_bundle, "ahead", now_ms() + 3_600_000)?;
    for s in &mut streams {
        let exact = EnvelopeRef {
            id: ahead.id(),
            digest: ahead.digest()?,
        };
        s.send(&[MailboxRequest::Delete(vec![exact])]).await?;
        s.barrier(&b).await?;
    }
    let mut carol_client = MailboxClient::as_user(&carol.identity).await?;
    for store in &mesh.stores {
        let mut s = carol_client.open(store).await?;
        let answer = deposit(&mut s, &ahead).await?;
        ensure!(
            answer == MailboxResponse::Stored(ahead.id()),
            "{}: {answer:?}",
            store.name()
        );
    }
    mesh.wait_all_hold(n as u64 + 2, "carol's message held despite mallory")
        .await?;

    bob.restart().await?;
    let from_carol = wait_received(&bob, &carol.user_id(), 1).await?;
    ensure!(
        from_carol.len() == 1 && from_carol[0].text == "ahead",
        "bob got {from_carol:?} from carol"
    );
    let received = wait_received(&bob, &a, n + 1).await?;
    let mut all_texts = texts;
    all_texts.extend(late);
    check_exactly_once_in_order(&received, &ids, &all_texts)?;
    ensure!(
        bob.node()?
            .contacts()?
            .iter()
            .all(|c| c.user_id != mallory_id.user_id().to_string())
            && bob
                .node()?
                .requests()?
                .iter()
                .all(|r| r.user_id != mallory_id.user_id().to_string()),
        "mallory's forged replica reached bob"
    );
    // Bob deletes all n + 2 everywhere (count deletions: his delivered receipt to carol, who
    // runs no node, waits in her mailbox on the same store peers).
    let total = n as u64 + 2;
    let what = format!("bob to delete his {total} messages on every store peer");
    wait_for(TIMEOUT, &what, || async {
        let deleted = mesh
            .stores
            .iter()
            .map(|s| Ok(s.metrics()?.deleted.load(Relaxed)))
            .collect::<Result<Vec<u64>>>()?;
        Ok(deleted.iter().all(|d| *d >= total).then_some(()))
    })
    .await?;
    for store in &mesh.stores {
        let deleted = store.metrics()?.deleted.load(Relaxed);
        ensure!(deleted == total, "{}: {deleted} deleted", store.name());
    }
    check_exactly_once(&received_from(&bob, &a)?, &ids)
}

/// Sends one deposit without an access key (as a stranger) and returns the answer.
async fn deposit(stream: &mut MailboxStream, env: &Envelope) -> Result<MailboxResponse> {
    stream.deposit(env, None).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_limit_and_oversized_deposits_are_refused_and_nothing_else_is_lost() -> Result<()> {
    init_logging();
    const MAX_BYTES: usize = 4096;
    let store = StorePeer::start("store", &[], |c| {
        c.limits.max_messages_per_mailbox = 5;
        c.limits.deposits_per_minute = 10;
        c.limits.max_envelope_bytes = MAX_BYTES;
        c.limits.max_lifetime_ms = 24 * 3600 * 1000;
    })
    .await?;
    // Carol's node names the store peer for her mailbox; she goes offline before anything is
    // deposited.
    let mut carol = TestNode::start_with("carol", |c| c.bootstrap = store.addrs()).await?;
    let (carol_key, carol_bundle) = store.wait_registered(&carol).await?;
    carol.shutdown().await?;

    let mut sender = Sealer::new();
    let mut client = MailboxClient::as_user(&sender.identity).await?;
    let mut stream = client.open(&store).await?;
    let hour = now_ms() + 3_600_000;
    // Dave (no node) registers his mailbox there by hand; the sender is a stranger to him.
    let dave_id = LocalIdentity::generate(now_ms(), &mut rand::rngs::OsRng);
    let dave = dave_id.bundle();
    let store_user = UserId::from_peer_id(store.peer_id())?;
    let dave_key = MailboxAccessKey::generate(&mut rand::rngs::OsRng);
    stream
        .send(&[MailboxRequest::Register(MailboxRegistration::new(
            &dave_id,
            vec![store_user],
            &dave_key,
            now_ms(),
        ))])
        .await?;

    // Five fit in carol's mailbox; the sixth does not.
    let texts = numbered("c", 6);
    let mut accepted = Vec::new();
    for t in &texts[..5] {
        let env = sender.text(&carol_bundle, t, hour)?;
        let len = env.to_bytes()?.len();
        ensure!(len <= MAX_BYTES, "an ordinary envelope is {len} bytes");
        let answer = stream.deposit(&env, Some(carol_key)).await?;
        ensure!(
            answer == MailboxResponse::Stored(env.id()),
            "{t}: {answer:?}"
        );
        accepted.push(env.id());
    }
    let refusals = [
        (
            sender.text(&carol_bundle, &texts[5], hour)?,
            RefuseReason::MailboxFull,
        ),
        (
            sender.text(&dave, &"x".repeat(2 * MAX_BYTES), hour)?,
            RefuseReason::TooLarge,
        ),
        (
            sender.text(&dave, "too late", now_ms() - 1_000)?,
            RefuseReason::Expired,
        ),
        (
            sender.text(&dave, "too far", now_ms() + 7 * 24 * 3_600_000)?,
            RefuseReason::Expired,
        ),
    ];
    for (i, (env, reason)) in refusals.iter().enumerate() {
        let key = (i == 0).then_some(carol_key);
        let answer = stream.deposit(env, key).await?;
        ensure!(
            answer == MailboxResponse::Refused(env.id(), *reason),
            "expected {reason:?}, got {answer:?}"
        );
    }
    // Nine deposits so far; the tenth is within the rate, the eleventh is not.
    let tenth = sender.text(&dave, "tenth", hour)?;
    ensure!(deposit(&mut stream, &tenth).await? == MailboxResponse::Stored(tenth.id()));
    let eleventh = sender.text(&dave, "eleventh", hour)?;
    let answer = deposit(&mut stream, &eleventh).await?;
    ensure!(
        answer == MailboxResponse::Refused(eleventh.id(), RefuseReason::RateLimited),
        "the eleventh deposit in a minute: {answer:?}"
    );
    // The rate is per depositor: someone else may still deposit.
    let mut other = Sealer::new();
    let mut other_client = MailboxClient::as_user(&other.identity).await?;
    let mut other_stream = other_client.open(&store).await?;
    let env = other.text(&dave, "from someone else", hour)?;
    let answer = deposit(&mut other_stream, &env).await?;
    ensure!(answer == MailboxResponse::Stored(env.id()), "{answer:?}");

    let m = store.metrics()?;
    let counts = [
        (RefuseReason::TooLarge, 1),
        (RefuseReason::MailboxFull, 1),
        (RefuseReason::RateLimited, 1),
        (RefuseReason::Expired, 2),
        (RefuseReason::Malformed, 0),
        (RefuseReason::NotAStore, 0),
        (RefuseReason::NotNamed, 0),
    ];
    for (reason, n) in counts {
        ensure!(
            m.rejected(reason) == n,
            "{reason:?} refusals: {}, expected {n}",
            m.rejected(reason)
        );
    }
    ensure!(
        m.deposits.load(Relaxed) == 7 && store.stored_messages()? == 7,
        "{} deposits, {} held; expected 7 and 7",
        m.deposits.load(Relaxed),
        store.stored_messages()?
    );

    // Carol comes back and gets exactly the five accepted ones, in order.
    carol.restart().await?;
    let received = wait_received(&carol, &sender.user_id(), 5).await?;
    check_exactly_once_in_order(&received, &accepted, &texts[..5])?;
    // She deletes them (carol's receipts to the sender may land in the sender's mailbox
    // meanwhile, so count deletions rather than what is held).
    wait_for(TIMEOUT, "carol to delete her five messages", || async {
        Ok((m.deleted.load(Relaxed) >= 5).then_some(()))
    })
    .await?;
    ensure!(
        m.deleted.load(Relaxed) == 5,
        "{} deleted",
        m.deleted.load(Relaxed)
    );
    ensure!(
        store.stored_messages()? >= 2,
        "dave's two messages are still held"
    );
    ensure!(received_from(&carol, &sender.user_id())?.len() == 5);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn last_seen_of_offline_user_is_served_by_store_peers() -> Result<()> {
    init_logging();
    const HEARTBEAT: Duration = Duration::from_millis(200);
    let fast = |c: &mut kith_node::Config| c.heartbeat = HEARTBEAT;
    let mesh = Mesh::start(3, |_| {}).await?;
    let before_bob_ms = now_ms();
    let (mut alice, mut bob) = alice_and_bob(&mesh, fast).await?;
    let b = bob.user_id();
    let (_, bob_key) = bob.mailbox().await?;
    let mut carol = mesh.node("carol", fast).await?;
    introduce(&alice, &carol).await?;
    let mut probe = MailboxClient::random().await?;
    mesh.wait_known_by(&mut probe, &[&carol]).await?;

    wait_for(TIMEOUT, "alice to see bob online", || async {
        Ok(alice.node()?.presence(b).await?.online.then_some(()))
    })
    .await?;
    bob.shutdown().await?;
    let after_bob_ms = now_ms();
    carol.shutdown().await?;

    // Alice restarts: what she heard from bob directly is gone, she cannot reach him, and
    // his last seen can only come from his store peers.
    alice.shutdown().await?;
    alice.restart().await?;
    let seen = wait_for(TIMEOUT, "alice to see bob's last seen", || async {
        let p = alice.node()?.presence(b).await?;
        Ok(p.last_seen_ms.is_some().then_some(p))
    })
    .await?;
    ensure!(!seen.online, "bob is offline: {seen:?}");
    let last = seen.last_seen_ms.ok_or_else(|| anyhow!("no last seen"))?;
    ensure!(
        (before_bob_ms..=after_bob_ms).contains(&last),
        "bob's last seen {last} is not within his run {before_bob_ms}..={after_bob_ms}"
    );
    // Each store peer serves a record signed by bob; alice shows the time of one of them.
    let mut held = Vec::new();
    for store in &mesh.stores {
        let mut s = probe.open(store).await?;
        // A stranger (no access key) cannot track bob's presence; a contact can.
        let stranger = s.get_presence(&b).await?;
        ensure!(
            stranger.is_none(),
            "{} shows bob's presence to a stranger: {stranger:?}",
            store.name()
        );
        let record = s
            .get_presence_with(&b, Some(bob_key))
            .await?
            .ok_or_else(|| anyhow!("{} holds no presence of bob", store.name()))?;
        record
            .verify()
            .with_context(|| format!("{}'s record of bob", store.name()))?;
        ensure!(
            record.user == b && record.visibility == Visibility::Contacts,
            "{record:?}"
        );
        held.push(record.last_seen_ms);
    }
    ensure!(
        held.contains(&last),
        "alice's last seen of bob {last} is none of the store peers' {held:?}"
    );

    // Bob comes back, stops sharing his last seen, and leaves again.
    bob.restart().await?;
    bob.node()?.set_share_presence(false).await?;
    for store in &mesh.stores {
        let mut s = probe.open(store).await?;
        let what = format!("{} to stop serving bob's presence", store.name());
        let deadline = tokio::time::Instant::now() + TIMEOUT;
        while s.get_presence_with(&b, Some(bob_key)).await?.is_some() {
            ensure!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting for {what}"
            );
            tokio::time::sleep(kith_tests::POLL_INTERVAL).await;
        }
    }
    bob.shutdown().await?;

    // Alice, restarted again, learns carol's last seen from the store peers (so she has been
    // asking them), but none of bob's.
    alice.shutdown().await?;
    alice.restart().await?;
    let c = carol.user_id();
    wait_for(TIMEOUT, "alice to see carol's last seen", || async {
        Ok(alice.node()?.presence(c).await?.last_seen_ms.map(|_| ()))
    })
    .await?;
    let seen = alice.node()?.presence(b).await?;
    ensure!(
        !seen.online && seen.last_seen.is_none() && seen.last_seen_ms.is_none(),
        "bob stopped sharing, yet alice sees {seen:?}"
    );
    for store in &mesh.stores {
        let mut s = probe.open(store).await?;
        let record = s.get_presence_with(&b, Some(bob_key)).await?;
        ensure!(
            record.is_none(),
            "{} serves bob's presence: {record:?}",
            store.name()
        );
    }
    Ok(())
}

/// An envelope that can never be opened (here: a session message in a session that does not
/// exist) is kept for a few fetches — it could be a late session message whose first message
/// is still arriving — then deleted from the store peers, instead of being pushed again on
/// every reconnection until it expires.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unopenable_mailbox_messages_are_deleted_after_a_few_fetches() -> Result<()> {
    init_logging();
    let mesh = Mesh::start(3, |_| {}).await?;
    let (_alice, bob) = alice_and_bob(&mesh, |_| {}).await?;
    let junk = Envelope {
        header: kith_protocol::EnvelopeHeader::new(
            MessageId([0x5a; 16]),
            bob.user_id(),
            now_ms() + 3_600_000,
        ),
        body: kith_protocol::SealedBody::Session(kith_protocol::seal::SessionBody {
            session: kith_protocol::seal::SessionId([0x77; 16]),
            n: 0,
            ciphertext: vec![0u8; 48],
        }),
    };
    let mut mallory = MailboxClient::random().await?;
    for store in &mesh.stores {
        let mut s = mallory.open(store).await?;
        let answer = deposit(&mut s, &junk).await?;
        ensure!(
            answer == MailboxResponse::Stored(junk.id()),
            "{}: junk deposit answered {answer:?}",
            store.name()
        );
    }
    // Bob is online and subscribed: the stores push it, bob cannot open it, fetches again a
    // few times, then asks every store peer to delete it.
    wait_for(
        Duration::from_secs(60),
        "the unopenable message to be deleted from every store peer",
        || async {
            let held: u64 = mesh
                .stores
                .iter()
                .map(|s| s.stored_messages().unwrap_or(u64::MAX))
                .sum();
            Ok((held == 0).then_some(()))
        },
    )
    .await?;
    let contacts = bob.node()?.contacts()?;
    ensure!(
        contacts.len() == 1,
        "the junk made bob learn a contact: {contacts:?}"
    );
    Ok(())
}
