//! Message requests and blocking, against real in-process nodes: a stranger's first message
//! lands in requests and makes bob neither answer with receipts, nor open a link to the
//! stranger, nor fetch the stranger's media until he accepts; a blocked sender's envelopes
//! are acknowledged and dropped (also after a restart); accepting makes a contact end to end.
//!
//! The stranger is a raw peer (`kith_tests::wire`) that listens for every stream bob could
//! open to it, so what bob does not do is observed where it would show.

#![allow(clippy::unwrap_used)]

use anyhow::{anyhow, bail, ensure, Context, Result};
use futures::StreamExt;
use kith_node::{
    invite::Invite,
    media::MediaState,
    net::{self, NetConfig, NetEvent, MSG_PROTOCOL},
    time::now_ms,
    transfer::MEDIA,
    Event,
};
use kith_protocol::{
    blob::{BlobHash, DEFAULT_CHUNK_SIZE},
    payload::{MediaRef, ReceiptKind, Text},
    seal::open_handshake,
    wire::MsgFrame,
    DeliveryStatus, Envelope, EnvelopeHeader, KeyBundle, LocalIdentity, MessageId, Payload,
    PeerSessions, Plaintext, SealedBody, SessionPolicy, UserId,
};
use kith_tests::{init_logging, wait_event, wait_for, wire::Wire, TestNode, TIMEOUT};
use rand::rngs::OsRng;
use serde_json::json;
use tokio_util::sync::CancellationToken;

/// A raw peer writing to bob by hand, and listening for any message or media stream bob
/// opens to it.
struct Stranger {
    me: LocalIdentity,
    sessions: PeerSessions,
    bob: KeyBundle,
    wire: Wire,
    /// Message streams bob opened to us (a link: he treats us as a contact).
    msg_in: libp2p_stream_incoming::Incoming,
    /// Media streams bob opened to us (a fetch of our media).
    media_in: libp2p_stream_incoming::Incoming,
    cancel: CancellationToken,
    _task: tokio::task::JoinHandle<()>,
}

/// The incoming-stream type of `libp2p_stream`, named through the control that makes it.
mod libp2p_stream_incoming {
    /// Streams of one protocol opened to us.
    pub type Incoming = std::pin::Pin<
        Box<dyn futures::Stream<Item = (libp2p::PeerId, libp2p::Stream)> + Send + 'static>,
    >;
}

impl Stranger {
    /// Connects `me` to `bob` (listening for bob's streams before the connection exists).
    async fn connect(me: LocalIdentity, bob: &TestNode) -> Result<Self> {
        let invite = Invite::decode(&bob.invite().await?)?;
        let cfg = NetConfig {
            listen: vec!["/ip4/127.0.0.1/tcp/0".parse()?],
            bootstrap: Vec::new(),
            ..NetConfig::default()
        };
        let keypair = libp2p::identity::Keypair::from(me.keypair().clone());
        let swarm = net::build_swarm(keypair, &cfg)?;
        let cancel = CancellationToken::new();
        let (network, mut events, task) = net::spawn(swarm, &cfg, cancel.clone()).await?;
        let mut control = network.control();
        let msg_in: libp2p_stream_incoming::Incoming = Box::pin(
            control
                .accept(MSG_PROTOCOL)
                .map_err(|e| anyhow!("accept msg: {e:?}"))?,
        );
        let media_in: libp2p_stream_incoming::Incoming = Box::pin(
            control
                .accept(MEDIA)
                .map_err(|e| anyhow!("accept media: {e:?}"))?,
        );
        let peer = bob.user_id().peer_id();
        network.dial(peer, invite.multiaddrs());
        tokio::time::timeout(TIMEOUT, async {
            loop {
                match events.recv().await {
                    Some(NetEvent::Connected(p)) if p == peer => return Ok(()),
                    Some(NetEvent::DialFailed(p)) if p == peer => bail!("cannot dial bob"),
                    Some(_) => {}
                    None => bail!("the stranger's network stopped"),
                }
            }
        })
        .await
        .map_err(|_| anyhow!("no connection to bob within {TIMEOUT:?}"))??;
        tokio::spawn(async move { while events.recv().await.is_some() {} });
        let stream = network
            .control()
            .open_stream(peer, MSG_PROTOCOL)
            .await
            .map_err(|e| anyhow!("opening /kith/msg/1 to bob: {e:?}"))?;
        Ok(Stranger {
            me,
            sessions: PeerSessions::default(),
            bob: invite.bundle,
            wire: Wire::from_stream(stream),
            msg_in,
            media_in,
            cancel,
            _task: task,
        })
    }

    fn user_id(&self) -> UserId {
        self.me.user_id()
    }

    /// Seals `payload` to bob (a handshake first, then session messages).
    fn seal(&mut self, payload: &Payload) -> Result<Envelope> {
        let header = EnvelopeHeader::new(
            MessageId::random(&mut OsRng),
            self.bob.user,
            now_ms() + 3_600_000,
        );
        let plaintext = Plaintext::new(payload, now_ms())?;
        let body = self.sessions.seal(
            &self.me,
            &self.bob,
            &header,
            &plaintext,
            now_ms(),
            &SessionPolicy::default(),
            &mut OsRng,
        )?;
        Ok(Envelope { header, body })
    }

    /// Sends a text to bob; fails unless bob acknowledges it. Returns its id.
    async fn text(&mut self, text: &str) -> Result<MessageId> {
        let env = self.seal(&Payload::Text(Text {
            body: text.into(),
            client_meta: "{}".into(),
        }))?;
        acked(&mut self.wire, &env).await
    }

    /// Sends bob a media message naming a blob only we could serve. Returns its id and hash.
    async fn media(&mut self, size: u64) -> Result<(MessageId, BlobHash)> {
        let hash = BlobHash(rand::random());
        let env = self.seal(&Payload::Media(MediaRef {
            hash: hash.0,
            size,
            chunk_size: DEFAULT_CHUNK_SIZE,
            mime: "image/png".into(),
            name: "look.png".into(),
            key: rand::random(),
            preview: Vec::new(),
            caption: String::new(),
        }))?;
        Ok((acked(&mut self.wire, &env).await?, hash))
    }

    /// Whether bob has opened a message or media stream to us so far.
    fn bob_reached_out(&mut self) -> (bool, bool) {
        let msg = futures::FutureExt::now_or_never(self.msg_in.next()).is_some();
        let media = futures::FutureExt::now_or_never(self.media_in.next()).is_some();
        (msg, media)
    }
}

impl Drop for Stranger {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

/// Delivers `env` and expects bob's ack (whatever he does with it). Returns its id.
async fn acked(wire: &mut Wire, env: &Envelope) -> Result<MessageId> {
    match wire.deliver(env).await? {
        MsgFrame::Ack(_) => Ok(env.id()),
        other => bail!("envelope {} not acknowledged: {other:?}", env.id()),
    }
}

/// Bob's pending requests, as `GET /v1/requests` lists them: (user id, messages).
/// Alice, who has bob's invite but is not his contact, says hello; returns once bob has
/// stored it (as a request).
async fn hello_from_a_stranger(alice: &TestNode, bob: &TestNode) -> Result<()> {
    alice
        .node()?
        .add_contact(&bob.invite().await?, None)
        .await?;
    let mut bob_events = bob.node()?.subscribe();
    let hello = alice
        .api()?
        .send_text(&bob.user_id(), "hello", json!({}))
        .await?;
    wait_event(
        &mut bob_events,
        TIMEOUT,
        "bob stores the hello",
        |e| matches!(e, Event::Message { message, .. } if message.id == hello),
    )
    .await?;
    Ok(())
}

async fn requests(bob: &TestNode) -> Result<Vec<(String, u64)>> {
    let res = bob.api()?.get("/v1/requests").await?;
    res.expect_status(200)?;
    let list = res.body["requests"]
        .as_array()
        .context("no `requests` list")?
        .iter()
        .map(|r| {
            (
                r["user_id"].as_str().unwrap_or_default().to_string(),
                r["messages"].as_u64().unwrap_or_default(),
            )
        })
        .collect();
    Ok(list)
}

fn is_contact(bob: &TestNode, user: &UserId) -> Result<bool> {
    Ok(bob
        .node()?
        .contacts()?
        .iter()
        .any(|c| c.user_id == user.to_string()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_strangers_message_lands_in_requests_without_dial_receipt_or_media_fetch() -> Result<()> {
    init_logging();
    let bob = TestNode::start("bob").await?;
    let mut mallory =
        Stranger::connect(LocalIdentity::generate(now_ms(), &mut OsRng), &bob).await?;
    let m = mallory.user_id();

    let text = mallory.text("hi bob, you don't know me").await?;
    let (media, hash) = mallory.media(1_000).await?;
    // A second text after the media: by its ack, bob has handled both before it.
    let later = mallory.text("still there?").await?;

    ensure!(requests(&bob).await? == vec![(m.to_string(), 3)]);
    ensure!(
        !is_contact(&bob, &m)?,
        "a stranger must not become a contact"
    );
    let conv = bob.conversation(&m)?;
    ensure!(
        conv.len() == 3,
        "bob keeps the request's messages: {conv:?}"
    );
    // No receipt was queued for the stranger (acks wait for what they vouch for, and
    // receipts are queued before it): not even "delivered".
    ensure!(
        bob.node()?.outbox_to(&m)? == 0,
        "bob owes a stranger nothing"
    );
    // The media waits; nothing was fetched.
    let recs = bob.node()?.media_records(&hash)?;
    ensure!(
        recs.len() == 1 && recs[0].state == MediaState::Waiting && recs[0].done_chunks == 0,
        "{recs:?}"
    );
    // Asking for it is refused while they are a request.
    let res = bob
        .api()?
        .post(&format!("/v1/media/{hash}/download"), &json!({}))
        .await?;
    res.expect_error(400, "invalid_input")?;
    // Bob opened no link and no media stream to the stranger.
    ensure!(
        mallory.bob_reached_out() == (false, false),
        "bob reached out to a stranger"
    );

    // Bob accepts: a link, the delivered receipts owed, and the media fetch follow.
    let res = bob
        .api()?
        .post(&format!("/v1/requests/{m}/accept"), &json!({}))
        .await?;
    res.expect_status(200)?;
    ensure!(res.body["user_id"] == m.to_string(), "{}", res.body);
    ensure!(is_contact(&bob, &m)? && requests(&bob).await?.is_empty());
    let (_, stream) = tokio::time::timeout(TIMEOUT, mallory.msg_in.next())
        .await
        .map_err(|_| anyhow!("bob opened no link after accepting"))?
        .context("incoming streams ended")?;
    let mut link = Wire::from_stream(stream);
    let receipt = loop {
        match link.recv().await? {
            MsgFrame::Presence(_) => continue,
            MsgFrame::Envelope(env) => break env,
            other => bail!("unexpected frame on bob's link: {other:?}"),
        }
    };
    let SealedBody::Handshake(body) = &receipt.body else {
        bail!("bob's first envelope to mallory is not a handshake");
    };
    let opened = open_handshake(&mallory.me, &receipt.header, body)?;
    let Payload::Receipt(r) = opened.plaintext.payload.decode()? else {
        bail!("bob's first envelope is not a receipt");
    };
    ensure!(r.kind == ReceiptKind::Delivered, "{r:?}");
    let mut ids = r.ids.clone();
    ids.sort();
    let mut want = vec![text, media, later];
    want.sort();
    ensure!(ids == want, "receipt for {ids:?}, expected {want:?}");
    tokio::time::timeout(TIMEOUT, mallory.media_in.next())
        .await
        .map_err(|_| anyhow!("bob did not fetch the media after accepting"))?
        .context("incoming streams ended")?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blocked_senders_messages_are_acknowledged_and_dropped_also_after_a_restart() -> Result<()>
{
    init_logging();
    let mut bob = TestNode::start("bob").await?;
    let identity = LocalIdentity::generate(now_ms(), &mut OsRng);
    let m = identity.user_id();
    let mut mallory = Stranger::connect(identity.clone(), &bob).await?;
    mallory.text("first").await?;
    ensure!(requests(&bob).await? == vec![(m.to_string(), 1)]);

    let api = bob.api()?;
    api.post(&format!("/v1/requests/{m}/block"), &json!({}))
        .await?
        .expect_status(204)?;
    ensure!(requests(&bob).await?.is_empty() && !is_contact(&bob, &m)?);
    let blocked = api.get("/v1/blocked").await?;
    blocked.expect_status(200)?;
    ensure!(
        blocked.body["blocked"][0]["user_id"] == m.to_string(),
        "{}",
        blocked.body
    );

    // A session message and a fresh handshake: acknowledged like any other, and dropped.
    mallory.text("second").await?;
    mallory.sessions = PeerSessions::default();
    mallory.text("third, in a new session").await?;
    ensure!(bob.node()?.unread(&m, 100)? == 1, "only the first was kept");
    ensure!(bob.node()?.outbox_to(&m)? == 0);
    ensure!(mallory.bob_reached_out() == (false, false));
    drop(mallory);

    // The block survives a restart.
    bob.shutdown().await?;
    bob.restart().await?;
    let api = bob.api()?;
    let blocked = api.get("/v1/blocked").await?;
    ensure!(
        blocked.body["blocked"][0]["user_id"] == m.to_string(),
        "{}",
        blocked.body
    );
    let mut mallory = Stranger::connect(identity, &bob).await?;
    mallory.text("after the restart").await?;
    ensure!(bob.node()?.unread(&m, 100)? == 1 && requests(&bob).await?.is_empty());

    // Unblocked, they are a stranger again: their next message is a request.
    api.request(reqwest::Method::DELETE, &format!("/v1/blocked/{m}"), None)
        .await?
        .expect_status(204)?;
    api.request(reqwest::Method::DELETE, &format!("/v1/blocked/{m}"), None)
        .await?
        .expect_error(404, "not_found")?;
    mallory.sessions = PeerSessions::default();
    mallory.text("may I?").await?;
    ensure!(requests(&bob).await? == vec![(m.to_string(), 2)]);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_endpoints_answer_client_mistakes_with_json_errors() -> Result<()> {
    init_logging();
    let bob = TestNode::start("bob").await?;
    let api = bob.api()?;
    let someone = LocalIdentity::generate(now_ms(), &mut OsRng).user_id();
    api.post("/v1/requests/not-a-user/accept", &json!({}))
        .await?
        .expect_error(400, "invalid_path")?;
    api.post(&format!("/v1/requests/{someone}/accept"), &json!({}))
        .await?
        .expect_error(404, "not_found")?;
    api.request(
        reqwest::Method::DELETE,
        &format!("/v1/contacts/{someone}"),
        None,
    )
    .await?
    .expect_error(404, "unknown_contact")?;
    api.post(&format!("/v1/requests/{}/block", bob.user_id()), &json!({}))
        .await?
        .expect_error(400, "invalid_input")?;
    api.request(reqwest::Method::DELETE, "/v1/blocked/x", None)
        .await?
        .expect_error(400, "invalid_path")?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_accepted_request_becomes_a_contact_and_the_sender_sees_delivered() -> Result<()> {
    init_logging();
    let alice = TestNode::start("alice").await?;
    let bob = TestNode::start("bob").await?;
    let (a, b) = (alice.user_id(), bob.user_id());
    // Only alice knows bob.
    alice
        .node()?
        .add_contact(&bob.invite().await?, Some("bob".into()))
        .await?;
    let mut alice_events = alice.node()?.subscribe();
    let mut bob_events = bob.node()?.subscribe();
    let hello = alice.api()?.send_text(&b, "hello bob", json!({})).await?;
    wait_event(
        &mut bob_events,
        TIMEOUT,
        "bob stores alice's hello",
        |e| matches!(e, Event::Message { message, .. } if message.id == hello),
    )
    .await?;
    wait_event(&mut alice_events, TIMEOUT, "alice's hello reaches ✓", |e| {
        matches!(e, Event::Status { id, status, .. } if *id == hello && *status == DeliveryStatus::Sent)
    })
    .await?;
    ensure!(requests(&bob).await? == vec![(a.to_string(), 1)]);
    ensure!(
        bob.node()?.outbox_to(&a)? == 0,
        "no receipt before accepting"
    );

    bob.api()?
        .post(&format!("/v1/requests/{a}/accept"), &json!({}))
        .await?
        .expect_status(200)?;
    wait_event(&mut alice_events, TIMEOUT, "alice's hello reaches ✓✓", |e| {
        matches!(e, Event::Status { id, status, .. } if *id == hello && *status == DeliveryStatus::Delivered)
    })
    .await?;
    ensure!(is_contact(&bob, &a)?);
    let reply = bob.api()?.send_text(&a, "hi alice", json!({})).await?;
    wait_event(
        &mut alice_events,
        TIMEOUT,
        "alice receives bob's reply",
        |e| matches!(e, Event::Message { message, .. } if message.id == reply),
    )
    .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writing_to_a_request_accepts_it() -> Result<()> {
    init_logging();
    let alice = TestNode::start("alice").await?;
    let bob = TestNode::start("bob").await?;
    let a = alice.user_id();
    hello_from_a_stranger(&alice, &bob).await?;
    ensure!(!is_contact(&bob, &a)?);
    bob.api()?.send_text(&a, "who is this?", json!({})).await?;
    ensure!(is_contact(&bob, &a)? && requests(&bob).await?.is_empty());
    wait_for(TIMEOUT, "alice gets bob's answer", || async {
        Ok((alice.conversation(&bob.user_id())?.len() == 2).then_some(()))
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_strangers_cannot_grow_requests_past_their_caps() -> Result<()> {
    init_logging();
    let bob = TestNode::start_with("bob", |c| {
        c.max_requests = 2;
        c.max_request_messages = 3;
    })
    .await?;
    let mut first = Stranger::connect(LocalIdentity::generate(now_ms(), &mut OsRng), &bob).await?;
    // One stranger writes past the per-request cap: every envelope is acknowledged, three kept.
    for i in 0..6 {
        first.text(&format!("message {i}")).await?;
    }
    ensure!(bob.node()?.unread(&first.user_id(), 100)? == 3);
    // Strangers past the cap on requests are acknowledged and dropped, leaving nothing.
    let mut second = Stranger::connect(LocalIdentity::generate(now_ms(), &mut OsRng), &bob).await?;
    second.text("hello").await?;
    let mut third = Stranger::connect(LocalIdentity::generate(now_ms(), &mut OsRng), &bob).await?;
    third.text("me too").await?;
    let listed = requests(&bob).await?;
    ensure!(
        listed.len() == 2
            && listed.contains(&(first.user_id().to_string(), 3))
            && listed.contains(&(second.user_id().to_string(), 1)),
        "{listed:?}"
    );
    ensure!(bob.node()?.unread(&third.user_id(), 100)? == 0);
    // Blocking one frees a place.
    bob.api()?
        .post(
            &format!("/v1/requests/{}/block", first.user_id()),
            &json!({}),
        )
        .await?
        .expect_status(204)?;
    third.sessions = PeerSessions::default();
    third.text("and now?").await?;
    ensure!(requests(&bob).await?.len() == 2);
    ensure!(bob.node()?.unread(&third.user_id(), 100)? == 1);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adding_a_requests_sender_by_invite_makes_a_contact_that_stays_one_after_a_restart(
) -> Result<()> {
    init_logging();
    let alice = TestNode::start("alice").await?;
    let mut bob = TestNode::start("bob").await?;
    let a = alice.user_id();
    hello_from_a_stranger(&alice, &bob).await?;
    ensure!(requests(&bob).await?.len() == 1);
    bob.node()?
        .add_contact(&alice.invite().await?, Some("alice".into()))
        .await?;
    ensure!(is_contact(&bob, &a)? && requests(&bob).await?.is_empty());
    bob.shutdown().await?;
    bob.restart().await?;
    ensure!(is_contact(&bob, &a)? && requests(&bob).await?.is_empty());
    Ok(())
}
