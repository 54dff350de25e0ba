//! The receive path against a hostile peer: mallory, a bare libp2p client built from the
//! node's own network pieces, opens a raw `/kith/msg/1` stream to bob's node and writes
//! hand-made envelopes (with `kith_tests::wire`). Forged senders, tampered, re-numbered, misaddressed and expired
//! envelopes are refused and store nothing; a valid envelope sent again (the same bytes, or
//! resealed under the same id) is acknowledged every time and stored once.

#![allow(clippy::unwrap_used)]

use anyhow::{bail, ensure, Context, Result};
use kith_node::{invite::Invite, time::now_ms, Event};
use kith_protocol::{
    codec,
    identity::Prekey,
    seal::{HandshakeBody, HandshakePayload, HANDSHAKE_OVERHEAD, NOISE_PATTERN},
    wire::{MsgFrame, RejectReason},
    Envelope, EnvelopeHeader, KeyBundle, LocalIdentity, MessageId, Payload, PeerSessions,
    Plaintext, Receipt, ReceiptKind, SealedBody, SessionPolicy, Text, UserId,
};
use kith_tests::{init_logging, TestNode};
use libp2p::identity::ed25519;
use rand::{rngs::OsRng, RngCore};
use tokio_util::sync::CancellationToken;

/// A header to bob that expires in an hour.
fn header_to(recipient: UserId) -> EnvelopeHeader {
    EnvelopeHeader::new(
        MessageId::random(&mut OsRng),
        recipient,
        now_ms() + 3_600_000,
    )
}

fn text(body: &str) -> Result<Plaintext> {
    Ok(Plaintext::new(
        &Payload::Text(Text {
            body: body.into(),
            client_meta: "{}".into(),
        }),
        now_ms(),
    )?)
}

/// A Noise X first message built by hand as `protocol/README.md` specifies it: initiator
/// static `static_private`, responder static = the recipient's prekey, prologue = the header's,
/// payload = `HandshakePayload { sender, chain_seed, plaintext }`.
fn handshake(
    static_private: &[u8],
    sender: &KeyBundle,
    to: &KeyBundle,
    header: &EnvelopeHeader,
    body: &str,
) -> Result<SealedBody> {
    handshake_carrying(static_private, sender, to, header, text(body)?)
}

/// [`handshake`] carrying any plaintext.
fn handshake_carrying(
    static_private: &[u8],
    sender: &KeyBundle,
    to: &KeyBundle,
    header: &EnvelopeHeader,
    plaintext: Plaintext,
) -> Result<SealedBody> {
    let mut chain_seed = [0u8; 32];
    OsRng.fill_bytes(&mut chain_seed);
    let payload = codec::encode(&HandshakePayload {
        sender: sender.clone(),
        chain_seed,
        plaintext,
    })?;
    let prologue = header.prologue();
    let mut hs = snow::Builder::new(NOISE_PATTERN.parse()?)
        .local_private_key(static_private)?
        .remote_public_key(&to.prekey.public)?
        .prologue(&prologue)?
        .build_initiator()?;
    let mut noise = vec![0u8; payload.len() + HANDSHAKE_OVERHEAD];
    let len = hs.write_message(&payload, &mut noise)?;
    noise.truncate(len);
    Ok(SealedBody::Handshake(HandshakeBody {
        prekey_id: to.prekey.id,
        noise,
    }))
}

/// A fresh X25519 key pair (private, public).
fn x25519() -> Result<([u8; 32], [u8; 32])> {
    let kp = snow::Builder::new(NOISE_PATTERN.parse()?).generate_keypair()?;
    Ok((
        kp.private.as_slice().try_into()?,
        kp.public.as_slice().try_into()?,
    ))
}

/// A user whose bundle is made and signed here (as `KeyBundle`'s documentation specifies the
/// signature), so the test knows the static private key: carol proves the hand-made handshake
/// is right, so that the forged one is refused for its forgery and nothing else.
fn self_made_user() -> Result<(KeyBundle, [u8; 32])> {
    let key = ed25519::Keypair::generate();
    let user = UserId::from_public_key(&key.public());
    let (static_private, static_key) = x25519()?;
    let (_, prekey_public) = x25519()?;
    let identity_key = key.public().to_bytes();
    let prekey = Prekey {
        id: 1,
        created_at_ms: now_ms(),
        public: prekey_public,
    };
    let mailboxes: Vec<kith_protocol::MailboxPeer> = Vec::new();
    let issued_at_ms = prekey.created_at_ms;
    let mut signed = b"kith-bundle/2\0".to_vec();
    signed.extend(codec::encode(&(
        user,
        identity_key,
        static_key,
        prekey,
        &mailboxes,
        issued_at_ms,
    ))?);
    let bundle = KeyBundle {
        user,
        identity_key,
        static_key,
        prekey,
        mailboxes,
        issued_at_ms,
        signature: key.sign(&signed),
    };
    bundle
        .verify()
        .context("the hand-made bundle must verify")?;
    Ok((bundle, static_private))
}

/// Makes the user of `bundle` one of `node`'s contacts, named `name`, by an address-less
/// invite.
async fn make_contact(node: &kith_node::Node, bundle: KeyBundle, name: &str) -> Result<()> {
    node.add_contact(&Invite::new(bundle, &[]).encode()?, Some(name.into()))
        .await?;
    Ok(())
}

fn invalid(answer: &MsgFrame, env: &Envelope, reason: RejectReason) -> Result<()> {
    ensure!(
        answer == &MsgFrame::Reject(env.id(), reason),
        "expected {reason:?} for {}, got {answer:?}",
        env.id()
    );
    Ok(())
}

fn acked(answer: &MsgFrame, env: &Envelope) -> Result<()> {
    ensure!(
        answer == &MsgFrame::Ack(vec![env.id()]),
        "expected an ack for {}, got {answer:?}",
        env.id()
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_or_replayed_envelopes_are_dropped() -> Result<()> {
    init_logging();
    let bob = TestNode::start("bob").await?;
    let node = bob.node()?;
    let b = bob.user_id();
    let bob_invite = Invite::decode(&bob.invite().await?)?;
    let bob_bundle = bob_invite.bundle.clone();
    ensure!(bob_bundle.user == b, "bob's invite is bob's");

    // Alice is one of bob's contacts; her node plays no part.
    let alice = LocalIdentity::generate(now_ms(), &mut OsRng);
    let a = alice.user_id();
    make_contact(node, alice.bundle(), "alice").await?;
    let mallory = LocalIdentity::generate(now_ms(), &mut OsRng);
    let m = mallory.user_id();
    let mut events = node.subscribe();

    let cancel = CancellationToken::new();
    let (mut wire, _network, task) = kith_tests::wire::connect(
        &mallory,
        b.peer_id(),
        bob_invite.multiaddrs(),
        cancel.clone(),
    )
    .await?;

    // Control: a hand-made handshake whose static key matches the bundle inside is accepted.
    let (carol, carol_static) = self_made_user()?;
    let header = header_to(b);
    let control = Envelope {
        body: handshake(
            &carol_static,
            &carol,
            &bob_bundle,
            &header,
            "hello from carol",
        )?,
        header,
    };
    acked(&wire.deliver(&control).await?, &control).context("hand-made handshake")?;
    let carol_conv = bob.conversation(&carol.user)?;
    ensure!(
        carol_conv.len() == 1 && carol_conv[0].text == "hello from carol",
        "{carol_conv:?}"
    );

    // (a) The same construction carrying alice's bundle, sealed with mallory's own static
    // key: a forged sender.
    let (mallory_static, _) = x25519()?;
    let header = header_to(b);
    let forged = Envelope {
        body: handshake(
            &mallory_static,
            &alice.bundle(),
            &bob_bundle,
            &header,
            "I am alice",
        )?,
        header,
    };
    invalid(
        &wire.deliver(&forged).await?,
        &forged,
        RejectReason::Invalid,
    )
    .context("forged sender")?;
    // A replay of the forgery is refused again.
    invalid(
        &wire.deliver(&forged).await?,
        &forged,
        RejectReason::Invalid,
    )
    .context("forged sender, again")?;

    // (b) A valid message from mallory, sent twice as the same bytes, then resealed under the
    // same id (a session message this time): acknowledged each time, stored once.
    let mut sessions = PeerSessions::default();
    let header = header_to(b);
    let plaintext = text("hi bob, it's mallory")?;
    let policy = SessionPolicy::default();
    let seal = |sessions: &mut PeerSessions,
                to: &KeyBundle,
                header: &EnvelopeHeader|
     -> Result<Envelope> {
        Ok(Envelope {
            header: header.clone(),
            body: sessions.seal(
                &mallory,
                to,
                header,
                &plaintext,
                now_ms(),
                &policy,
                &mut OsRng,
            )?,
        })
    };
    let valid = seal(&mut sessions, &bob_bundle, &header)?;
    ensure!(
        matches!(valid.body, SealedBody::Handshake(_)),
        "first is a handshake"
    );
    for attempt in 1..=2 {
        acked(&wire.deliver(&valid).await?, &valid)
            .with_context(|| format!("valid message, attempt {attempt}"))?;
    }
    let resealed = seal(&mut sessions, &bob_bundle, &header)?;
    ensure!(
        matches!(resealed.body, SealedBody::Session(_)),
        "then a session message"
    );
    acked(&wire.deliver(&resealed).await?, &resealed).context("resealed under the same id")?;
    let mallory_conv = bob.conversation(&m)?;
    ensure!(
        mallory_conv.len() == 1
            && mallory_conv[0].id == valid.id().to_string()
            && mallory_conv[0].text == "hi bob, it's mallory",
        "stored once: {mallory_conv:#?}"
    );

    // A valid body moved under another id (the id is bound into the seal).
    let mut renumbered = valid.clone();
    renumbered.header.id = MessageId::random(&mut OsRng);
    invalid(
        &wire.deliver(&renumbered).await?,
        &renumbered,
        RejectReason::Invalid,
    )
    .context("renumbered")?;

    // A tampered body.
    let mut tampered = seal(&mut PeerSessions::default(), &bob_bundle, &header_to(b))?;
    let SealedBody::Handshake(body) = &mut tampered.body else {
        bail!("a fresh session starts with a handshake")
    };
    let last = body.noise.len() - 1;
    body.noise[last] ^= 1;
    invalid(
        &wire.deliver(&tampered).await?,
        &tampered,
        RejectReason::Invalid,
    )
    .context("tampered")?;

    // An envelope for someone else, and an expired one.
    let misaddressed = seal(&mut PeerSessions::default(), &alice.bundle(), &header_to(a))?;
    let answer = wire.deliver(&misaddressed).await?;
    invalid(&answer, &misaddressed, RejectReason::Misaddressed).context("misaddressed")?;
    let mut old = header_to(b);
    old.expires_at_ms = now_ms() - 1;
    let expired = seal(&mut PeerSessions::default(), &bob_bundle, &old)?;
    invalid(
        &wire.deliver(&expired).await?,
        &expired,
        RejectReason::Expired,
    )
    .context("expired")?;

    // Nothing of it reached a conversation: one message from carol, one from mallory, none
    // from alice, and exactly those two message events.
    ensure!(
        bob.conversation(&a)?.is_empty(),
        "alice's conversation must stay empty"
    );
    ensure!(
        bob.conversation(&m)?.len() == 1,
        "mallory's holds one message"
    );
    let mut stored = Vec::new();
    while let Ok(event) = events.try_recv() {
        if let Event::Message { peer, message } = event {
            stored.push((peer, message.id));
        }
    }
    let expected = vec![
        (carol.user.to_string(), control.id().to_string()),
        (m.to_string(), valid.id().to_string()),
    ];
    ensure!(
        stored == expected,
        "message events {stored:?}, expected {expected:?}"
    );

    cancel.cancel();
    let _ = task.await;
    Ok(())
}

/// Defect: a receipt that opened a session (a handshake) was refused as "replayed" when it
/// came again — its copy on a store peer comes back at every re-subscription, and a sender
/// whose link dropped before the ack sends it again — so it was never acknowledged: pushed
/// every 30 s until it expired, a warning each time. A replayed receipt is applied again
/// (receipts only move forward) and acknowledged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_receipt_handshake_is_acknowledged_every_time() -> Result<()> {
    init_logging();
    let bob = TestNode::start("bob").await?;
    let node = bob.node()?;
    let b = bob.user_id();
    let bob_invite = Invite::decode(&bob.invite().await?)?;
    let (carol, carol_static) = self_made_user()?;
    make_contact(node, carol.clone(), "carol").await?;
    let cancel = CancellationToken::new();
    let (mut wire, _network, task) = kith_tests::wire::connect(
        &LocalIdentity::generate(now_ms(), &mut OsRng),
        b.peer_id(),
        bob_invite.multiaddrs(),
        cancel.clone(),
    )
    .await?;
    let receipt = Plaintext::new(
        &Payload::Receipt(Receipt {
            kind: ReceiptKind::Delivered,
            ids: vec![MessageId::random(&mut OsRng)],
        }),
        now_ms(),
    )?;
    let header = header_to(b);
    let env = Envelope {
        body: handshake_carrying(&carol_static, &carol, &bob_invite.bundle, &header, receipt)?,
        header,
    };
    acked(&wire.deliver(&env).await?, &env).context("the receipt")?;
    acked(&wire.deliver(&env).await?, &env).context("the same receipt again")?;
    acked(&wire.deliver(&env).await?, &env).context("and a third time")?;
    cancel.cancel();
    let _ = task.await;
    Ok(())
}
