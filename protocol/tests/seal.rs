//! End-to-end sealing through the public API: every rule and every rejection.
#![allow(clippy::unwrap_used, missing_docs)]

mod common;

use common::{is_handshake, text, User, EXPIRES};
use kith_protocol::{
    codec,
    envelope::MAX_ENVELOPE_LEN,
    frame,
    identity::BundleError,
    payload::{
        MAX_CLIENT_META_LEN, MAX_MEDIA_NAME_LEN, MAX_PREVIEW_LEN, MAX_RECEIPT_IDS, MAX_TEXT_LEN,
    },
    seal::{
        open_handshake, HandshakeBody, OpenError, SealError, SessionBody, HANDSHAKE_OVERHEAD,
        MAX_INBOUND_SESSIONS, MAX_NOISE_MESSAGE_LEN, MAX_SKIP,
    },
    wire::MsgFrame,
    Envelope, MediaRef, MessageId, Payload, PeerSessions, Plaintext, PrekeyPolicy, Receipt,
    ReceiptKind, SealedBody, SessionPolicy, Text,
};

fn handshake_body(env: &Envelope) -> &HandshakeBody {
    match &env.body {
        SealedBody::Handshake(h) => h,
        SealedBody::Session(_) => panic!("expected a handshake"),
    }
}

fn session_body(env: &Envelope) -> &SessionBody {
    match &env.body {
        SealedBody::Session(s) => s,
        SealedBody::Handshake(_) => panic!("expected a session message"),
    }
}

fn with_body(env: &Envelope, f: impl FnOnce(&mut SealedBody)) -> Envelope {
    let mut e = env.clone();
    f(&mut e.body);
    e
}

#[test]
fn handshake_round_trip() {
    let (mut alice, mut bob) = (User::new(1), User::new(2));
    let env = alice.seal(&bob.bundle(), &text("hello bob"));
    assert!(is_handshake(&env));
    assert_eq!(handshake_body(&env).prekey_id, bob.bundle().prekey.id);

    let opened = open_handshake(&bob.me, &env.header, handshake_body(&env)).unwrap();
    assert_eq!(opened.sender, alice.bundle());
    assert_eq!(opened.plaintext, text("hello bob"));
    assert_eq!(
        opened.plaintext.payload.decode().unwrap(),
        text("hello bob").payload.decode().unwrap()
    );

    // The sender learns nothing and keeps nothing to receive with: sealing is one-way.
    let a = &alice.sessions[&bob.id()];
    assert!(a.inbound_ids().is_empty());
    // …and cannot open its own message (it is not the recipient).
    assert!(matches!(alice.open(&env), Err(OpenError::Misaddressed(to)) if to == bob.id()));

    let (from, pt) = bob.open(&env).unwrap();
    assert_eq!(from, alice.id());
    assert_eq!(pt, text("hello bob"));
    assert_eq!(
        bob.sessions[&alice.id()].inbound_ids(),
        vec![opened.session.id()]
    );
}

#[test]
fn session_messages_round_trip() {
    let (mut alice, mut bob) = (User::new(1), User::new(2));
    let first = alice.seal(&bob.bundle(), &text("0"));
    bob.open(&first).unwrap();
    let mut sid = None;
    for i in 1..20 {
        let msg = format!("message {i}");
        let env = alice.seal(&bob.bundle(), &text(&msg));
        let body = session_body(&env);
        assert_eq!(body.n, i - 1);
        assert_eq!(
            *sid.get_or_insert(body.session),
            body.session,
            "same session"
        );
        // AEAD: ciphertext = plaintext + 16-byte tag.
        assert_eq!(
            body.ciphertext.len(),
            codec::encode(&text(&msg)).unwrap().len() + 16
        );
        assert_eq!(bob.open(&env).unwrap(), (alice.id(), text(&msg)));
    }
    assert_eq!(Some(bob.sessions[&alice.id()].inbound_ids()[0]), sid);
}

#[test]
fn both_directions() {
    let (mut alice, mut bob) = (User::new(1), User::new(2));
    for round in 0..5 {
        let a = alice.seal_at(&bob.bundle(), &text(&format!("a{round}")), round * 10_000);
        assert_eq!(bob.open(&a).unwrap().1, text(&format!("a{round}")));
        let b = bob.seal_at(
            &alice.bundle(),
            &text(&format!("b{round}")),
            round * 10_000 + 5_000,
        );
        assert_eq!(alice.open(&b).unwrap().1, text(&format!("b{round}")));
    }
}

#[test]
fn out_of_order_session_messages_open() {
    let (mut alice, mut bob) = (User::new(1), User::new(2));
    let first = alice.seal(&bob.bundle(), &text("0"));
    bob.open(&first).unwrap();
    let envs: Vec<_> = (0..8)
        .map(|i| alice.seal(&bob.bundle(), &text(&i.to_string())))
        .collect();
    for i in [5usize, 0, 7, 1, 6, 2, 4, 3] {
        assert_eq!(
            bob.open(&envs[i]).unwrap().1,
            text(&i.to_string()),
            "message {i}"
        );
    }
    for env in &envs {
        assert!(matches!(bob.open(env), Err(OpenError::Replayed)));
    }
}

#[test]
fn handshake_after_session_messages_is_unknown_session_until_it_arrives() {
    let (mut alice, mut bob) = (User::new(1), User::new(2));
    let first = alice.seal(&bob.bundle(), &text("0"));
    let second = alice.seal(&bob.bundle(), &text("1"));
    assert!(matches!(bob.open(&second), Err(OpenError::UnknownSession)));
    bob.open(&first).unwrap();
    assert_eq!(bob.open(&second).unwrap().1, text("1"));
}

#[test]
fn duplicate_session_message_is_replayed_and_session_survives() {
    let (mut alice, mut bob) = (User::new(1), User::new(2));
    bob.open(&alice.seal(&bob.bundle(), &text("0"))).unwrap();
    let m1 = alice.seal(&bob.bundle(), &text("1"));
    bob.open(&m1).unwrap();
    assert!(matches!(bob.open(&m1), Err(OpenError::Replayed)));
    assert!(matches!(bob.open(&m1), Err(OpenError::Replayed)));
    let m2 = alice.seal(&bob.bundle(), &text("2"));
    assert_eq!(bob.open(&m2).unwrap().1, text("2"));
}

#[test]
fn handshake_accepted_twice_is_replayed() {
    let (mut alice, mut bob) = (User::new(1), User::new(2));
    let env = alice.seal(&bob.bundle(), &text("once"));
    bob.open(&env).unwrap();
    // open_handshake itself is pure: it opens again, and accept catches the replay.
    let again = open_handshake(&bob.me, &env.header, handshake_body(&env)).unwrap();
    let sessions = bob.sessions.get_mut(&alice.id()).unwrap();
    assert!(matches!(
        sessions.accept(again.session),
        Err(OpenError::Replayed)
    ));
    assert_eq!(sessions.inbound_ids().len(), 1);
    assert!(matches!(bob.open(&env), Err(OpenError::Replayed)));
    // The session still works.
    let m = alice.seal(&bob.bundle(), &text("next"));
    assert_eq!(bob.open(&m).unwrap().1, text("next"));
}

#[test]
fn dropped_sessions_are_unknown_and_their_handshakes_replays() {
    let (mut alice, mut bob) = (User::new(1), User::new(2));
    let mut handshakes = Vec::new();
    let mut lates = Vec::new();
    // renew_on_reply is about Alice seeing Bob's sessions; force a new session per round
    // with a message budget of one.
    alice.policy = SessionPolicy {
        max_messages: 1,
        ..SessionPolicy::default()
    };
    for i in 0..=MAX_INBOUND_SESSIONS {
        let h = alice.seal(&bob.bundle(), &text(&format!("h{i}")));
        assert!(is_handshake(&h));
        let late = alice.seal(&bob.bundle(), &text(&format!("late{i}")));
        assert!(!is_handshake(&late));
        bob.open(&h).unwrap();
        handshakes.push(h);
        lates.push(late);
    }
    assert_eq!(
        bob.sessions[&alice.id()].inbound_ids().len(),
        MAX_INBOUND_SESSIONS
    );
    // The oldest session was dropped: its late message no longer opens…
    assert!(matches!(
        bob.open(&lates[0]),
        Err(OpenError::UnknownSession)
    ));
    // …and its handshake is still recognised as a replay.
    assert!(matches!(bob.open(&handshakes[0]), Err(OpenError::Replayed)));
    for (i, late) in lates.iter().enumerate().skip(1) {
        assert_eq!(bob.open(late).unwrap().1, text(&format!("late{i}")));
    }
}

#[test]
fn tampered_handshake_rejected() {
    let (mut alice, mut bob) = (User::new(1), User::new(2));
    let env = alice.seal(&bob.bundle(), &text("a message of some length"));
    let len = handshake_body(&env).noise.len();
    // e, encrypted s, its tag, the encrypted payload, the final tag.
    for at in [0, 31, 32, 63, 64, 79, 80, 90, len - 17, len - 16, len - 1] {
        let bad = with_body(&env, |b| {
            if let SealedBody::Handshake(h) = b {
                h.noise[at] ^= 0x01;
            }
        });
        assert!(
            matches!(bob.open(&bad), Err(OpenError::Tampered)),
            "byte {at}"
        );
    }
    // Extra bytes appended are part of the payload ciphertext: the tag fails.
    let longer = with_body(&env, |b| {
        if let SealedBody::Handshake(h) = b {
            h.noise.push(0);
        }
    });
    assert!(matches!(bob.open(&longer), Err(OpenError::Tampered)));
    // Nothing was accepted by the failures: the genuine one opens.
    assert_eq!(bob.open(&env).unwrap().1, text("a message of some length"));
}

#[test]
fn tampered_session_message_rejected() {
    let (mut alice, mut bob) = (User::new(1), User::new(2));
    bob.open(&alice.seal(&bob.bundle(), &text("0"))).unwrap();
    let env = alice.seal(&bob.bundle(), &text("session"));
    let len = session_body(&env).ciphertext.len();
    for at in [0, len / 2, len - 16, len - 1] {
        let bad = with_body(&env, |b| {
            if let SealedBody::Session(s) = b {
                s.ciphertext[at] ^= 0x80;
            }
        });
        assert!(
            matches!(bob.open(&bad), Err(OpenError::Tampered)),
            "byte {at}"
        );
    }
    // A changed number: another key and another AAD.
    let renumbered = with_body(&env, |b| {
        if let SealedBody::Session(s) = b {
            s.n = 1;
        }
    });
    assert!(matches!(bob.open(&renumbered), Err(OpenError::Tampered)));
    // A changed session id names no session.
    let other = with_body(&env, |b| {
        if let SealedBody::Session(s) = b {
            s.session.0[0] ^= 1;
        }
    });
    assert!(matches!(bob.open(&other), Err(OpenError::UnknownSession)));
    assert_eq!(bob.open(&env).unwrap().1, text("session"));
}

#[test]
fn truncated_bodies_rejected() {
    let (mut alice, mut bob) = (User::new(1), User::new(2));
    let env = alice.seal(&bob.bundle(), &text("0"));
    for keep in [0, 1, 32, 80, HANDSHAKE_OVERHEAD - 1] {
        let bad = with_body(&env, |b| {
            if let SealedBody::Handshake(h) = b {
                h.noise.truncate(keep);
            }
        });
        assert!(
            matches!(bob.open(&bad), Err(OpenError::Truncated)),
            "kept {keep}"
        );
    }
    // Truncated, but not below the fixed overhead: the tag no longer verifies.
    let len = handshake_body(&env).noise.len();
    let cut = with_body(&env, |b| {
        if let SealedBody::Handshake(h) = b {
            h.noise.truncate(len - 1);
        }
    });
    assert!(matches!(bob.open(&cut), Err(OpenError::Tampered)));
    bob.open(&env).unwrap();

    let s = alice.seal(&bob.bundle(), &text("1"));
    for keep in [0, 1, 15] {
        let bad = with_body(&s, |b| {
            if let SealedBody::Session(s) = b {
                s.ciphertext.truncate(keep);
            }
        });
        assert!(
            matches!(bob.open(&bad), Err(OpenError::Truncated)),
            "kept {keep}"
        );
    }
    let bad = with_body(&s, |b| {
        if let SealedBody::Session(s) = b {
            s.ciphertext.truncate(16);
        }
    });
    assert!(matches!(bob.open(&bad), Err(OpenError::Tampered)));
    assert_eq!(bob.open(&s).unwrap().1, text("1"));
}

#[test]
fn oversized_noise_message_rejected() {
    let (mut alice, bob) = (User::new(1), User::new(2));
    let env = alice.seal(&bob.bundle(), &text("0"));
    let mut h = handshake_body(&env).clone();
    h.noise.resize(MAX_NOISE_MESSAGE_LEN + 1, 0);
    assert!(matches!(
        open_handshake(&bob.me, &env.header, &h),
        Err(OpenError::Tampered)
    ));
}

#[test]
fn misaddressed_and_readdressed() {
    let (mut alice, mut bob, mut carol) = (User::new(1), User::new(2), User::new(3));
    // Both Bob and Carol have a prekey numbered 1: a re-addressed body finds a key to try.
    assert_eq!(bob.bundle().prekey.id, carol.bundle().prekey.id);
    let env = alice.seal(&bob.bundle(), &text("for bob"));

    // A node that is not the recipient refuses it.
    assert!(matches!(carol.open(&env), Err(OpenError::Misaddressed(to)) if to == bob.id()));

    // A store peer re-addresses it to Carol: Carol cannot open it…
    let mut readdressed = env.clone();
    readdressed.header.recipient = carol.id();
    assert!(matches!(carol.open(&readdressed), Err(OpenError::Tampered)));
    // …and Bob refuses it as not his.
    assert!(matches!(bob.open(&readdressed), Err(OpenError::Misaddressed(to)) if to == carol.id()));

    // The session messages that follow, likewise.
    bob.open(&env).unwrap();
    let s = alice.seal(&bob.bundle(), &text("also for bob"));
    assert!(matches!(carol.open(&s), Err(OpenError::UnknownSession)));
    let mut readdressed = s.clone();
    readdressed.header.recipient = carol.id();
    // Bob holds the session, but the AAD names Carol: authentication fails.
    let body = session_body(&readdressed);
    let sessions = bob.sessions.get_mut(&alice.id()).unwrap();
    assert!(matches!(
        sessions.open(&readdressed.header, body),
        Err(OpenError::Tampered)
    ));
    assert_eq!(bob.open(&s).unwrap().1, text("also for bob"));
}

#[test]
fn every_routing_field_is_bound() {
    let (mut alice, mut bob) = (User::new(1), User::new(2));
    let hs = alice.seal(&bob.bundle(), &text("0"));
    let s0 = alice.seal(&bob.bundle(), &text("1"));
    type Change = (&'static str, fn(&mut Envelope));
    let changes: [Change; 4] = [
        ("id", |e| e.header.id.0[15] ^= 1),
        ("expires_at_ms", |e| e.header.expires_at_ms += 1),
        ("expires_at_ms (earlier)", |e| {
            e.header.expires_at_ms -= 86_400_000
        }),
        ("version", |e| e.header.version = 2),
    ];
    for (field, change) in changes {
        let mut bad = hs.clone();
        change(&mut bad);
        assert!(
            matches!(bob.open(&bad), Err(OpenError::Tampered)),
            "handshake {field}"
        );
    }
    bob.open(&hs).unwrap();
    for (field, change) in changes {
        let mut bad = s0.clone();
        change(&mut bad);
        assert!(
            matches!(bob.open(&bad), Err(OpenError::Tampered)),
            "session {field}"
        );
    }
    // The recipient: for a session message the real recipient gets Tampered (above:
    // misaddressed_and_readdressed); for a handshake see seal.rs's
    // handshake_prologue_binds_the_recipient. Here: the untouched ones open.
    assert_eq!(bob.open(&s0).unwrap().1, text("1"));
    assert_eq!(s0.header.expires_at_ms, EXPIRES);
}

#[test]
fn unknown_prekey() {
    let (mut alice, bob) = (User::new(1), User::new(2));
    let env = alice.seal(&bob.bundle(), &text("0"));
    let mut h = handshake_body(&env).clone();
    h.prekey_id = 99;
    assert!(matches!(
        open_handshake(&bob.me, &env.header, &h),
        Err(OpenError::UnknownPrekey(99))
    ));
}

#[test]
fn retired_prekey_opens_within_grace_then_unknown() {
    let (mut alice, mut bob) = (User::new(1), User::new(2));
    let old_bundle = bob.bundle();
    let policy = PrekeyPolicy::default();
    let day = 24 * 3600 * 1000;
    let env = alice.seal(&old_bundle, &text("sealed to prekey 1"));
    // Bob rotates a week later, and 34 days after that still opens it.
    assert!(bob.me.maintain_prekeys(7 * day, &policy, &mut bob.rng));
    assert_eq!(bob.bundle().prekey.id, 2);
    bob.me.maintain_prekeys(
        7 * day + 34 * day,
        &PrekeyPolicy {
            rotation_ms: u64::MAX,
            ..policy
        },
        &mut bob.rng,
    );
    let opened = open_handshake(&bob.me, &env.header, handshake_body(&env)).unwrap();
    assert_eq!(opened.plaintext, text("sealed to prekey 1"));
    // At 35 days the private key is deleted: the message can never be opened again.
    bob.me.maintain_prekeys(
        7 * day + 35 * day,
        &PrekeyPolicy {
            rotation_ms: u64::MAX,
            ..policy
        },
        &mut bob.rng,
    );
    assert!(bob.me.prekeys().find(1).is_none());
    assert!(matches!(bob.open(&env), Err(OpenError::UnknownPrekey(1))));
}

#[test]
fn too_far_ahead() {
    let (mut alice, mut bob) = (User::new(1), User::new(2));
    bob.open(&alice.seal(&bob.bundle(), &text("0"))).unwrap();
    let env = alice.seal(&bob.bundle(), &text("1"));
    let sessions = bob.sessions.get_mut(&alice.id()).unwrap();
    let mut body = session_body(&env).clone();
    for n in [MAX_SKIP + 1, MAX_SKIP + 2, u64::MAX] {
        body.n = n;
        assert!(
            matches!(sessions.open(&env.header, &body), Err(OpenError::TooFarAhead { n: got, next: 0 }) if got == n),
            "n = {n}"
        );
    }
    // Exactly MAX_SKIP ahead is allowed: skip 0..MAX_SKIP and open that one.
    let envs: Vec<_> = (0..=MAX_SKIP)
        .map(|_| alice.seal(&bob.bundle(), &text("m")))
        .collect();
    let last = envs.last().unwrap();
    assert_eq!(session_body(last).n, MAX_SKIP + 1);
    // env (n = 0) is still unopened; message MAX_SKIP + 1 is MAX_SKIP + 1 ahead: refused.
    assert!(matches!(bob.open(last), Err(OpenError::TooFarAhead { .. })));
    let at_limit = &envs[envs.len() - 2];
    assert_eq!(session_body(at_limit).n, MAX_SKIP);
    assert_eq!(bob.open(at_limit).unwrap().1, text("m"));
    // The skipped ones open afterwards.
    assert_eq!(bob.open(&env).unwrap().1, text("1"));
    assert_eq!(bob.open(last).unwrap().1, text("m"));
    assert_eq!(bob.open(&envs[0]).unwrap().1, text("m"));
}

/// The attack: a session message numbered far ahead (or replayed at will) made the receiver
/// walk the chain up to the old 2,000-step limit before its MAC failed. Now the number is
/// checked before any key is derived.
#[test]
fn a_far_ahead_or_replayed_session_message_costs_o1_chain_steps() {
    let (mut alice, mut bob) = (User::new(1), User::new(2));
    bob.open(&alice.seal(&bob.bundle(), &text("0"))).unwrap();
    let env = alice.seal(&bob.bundle(), &text("1"));
    let sessions = bob.sessions.get_mut(&alice.id()).unwrap();
    let mut body = session_body(&env).clone();
    let before = sessions.chain_steps();
    for n in [MAX_SKIP + 1, 1_000_000, u64::MAX] {
        body.n = n;
        for _ in 0..100 {
            assert!(sessions.open(&env.header, &body).is_err());
        }
    }
    assert_eq!(
        sessions.chain_steps(),
        before,
        "far ahead: no chain step at all"
    );
    // Within reach but forged (its MAC fails): at most MAX_SKIP + 1 steps per try, however
    // often it is replayed, and nothing is kept.
    body.n = MAX_SKIP;
    let tries = 10;
    for _ in 0..tries {
        assert!(matches!(
            sessions.open(&env.header, &body),
            Err(OpenError::Tampered)
        ));
    }
    assert!(sessions.chain_steps() - before <= tries * (MAX_SKIP + 1));
    // The honest message still opens.
    assert_eq!(bob.open(&env).unwrap().1, text("1"));
}

#[test]
fn unknown_session() {
    let (mut alice, bob) = (User::new(1), User::new(2));
    let _ = alice.seal(&bob.bundle(), &text("0"));
    let env = alice.seal(&bob.bundle(), &text("1"));
    let mut fresh = PeerSessions::default();
    assert!(matches!(
        fresh.open(&env.header, session_body(&env)),
        Err(OpenError::UnknownSession)
    ));
}

#[test]
fn renew_after_reply_and_min_interval() {
    let (mut alice, mut bob) = (User::new(1), User::new(2));
    let policy = alice.policy;
    let min = policy.min_renew_interval_ms;
    let a0 = alice.seal_at(&bob.bundle(), &text("a0"), 0);
    assert!(is_handshake(&a0));
    bob.open(&a0).unwrap();
    // Without a reply Alice stays in her session, however long it has been.
    assert!(!alice.sessions[&bob.id()].needs_handshake(&bob.bundle(), 100 * min, &policy));
    // Bob replies: his first message is a handshake, which Alice accepts.
    let b0 = bob.seal_at(&alice.bundle(), &text("b0"), 10);
    assert!(is_handshake(&b0));
    alice.open(&b0).unwrap();
    // Within min_renew_interval of the start of Alice's session: no new handshake yet.
    assert!(!alice.sessions[&bob.id()].needs_handshake(&bob.bundle(), min - 1, &policy));
    let a1 = alice.seal_at(&bob.bundle(), &text("a1"), min - 1);
    assert!(!is_handshake(&a1));
    // Once it has elapsed, the next message starts a new session…
    assert!(alice.sessions[&bob.id()].needs_handshake(&bob.bundle(), min, &policy));
    let a2 = alice.seal_at(&bob.bundle(), &text("a2"), min);
    assert!(is_handshake(&a2));
    // …and Alice stays in it until Bob replies again.
    let a3 = alice.seal_at(&bob.bundle(), &text("a3"), 10 * min);
    assert!(!is_handshake(&a3));
    for (e, t) in [(&a1, "a1"), (&a2, "a2"), (&a3, "a3")] {
        assert_eq!(bob.open(e).unwrap().1, text(t));
    }
}

#[test]
fn no_renew_on_reply_when_disabled() {
    let (mut alice, mut bob) = (User::new(1), User::new(2));
    alice.policy.renew_on_reply = false;
    let first = alice.seal_at(&bob.bundle(), &text("a0"), 0);
    bob.open(&first).unwrap();
    let reply = bob.seal_at(&alice.bundle(), &text("b0"), 10);
    alice.open(&reply).unwrap();
    let a1 = alice.seal_at(&bob.bundle(), &text("a1"), 1_000_000);
    assert!(!is_handshake(&a1));
    assert_eq!(bob.open(&a1).unwrap().1, text("a1"));
}

#[test]
fn renew_after_max_messages() {
    let (mut alice, mut bob) = (User::new(1), User::new(2));
    alice.policy.max_messages = 3;
    let mut kinds = Vec::new();
    for i in 0..9 {
        let env = alice.seal(&bob.bundle(), &text(&i.to_string()));
        kinds.push(is_handshake(&env));
        assert_eq!(bob.open(&env).unwrap().1, text(&i.to_string()));
    }
    // A handshake, then max_messages session messages, then a new handshake.
    assert_eq!(
        kinds,
        [true, false, false, false, true, false, false, false, true]
    );
}

#[test]
fn renew_after_prekey_change() {
    let (mut alice, mut bob) = (User::new(1), User::new(2));
    let e0 = alice.seal(&bob.bundle(), &text("0"));
    let e1 = alice.seal(&bob.bundle(), &text("1"));
    assert!(!is_handshake(&e1));
    let week = PrekeyPolicy::default().rotation_ms;
    assert!(bob
        .me
        .maintain_prekeys(week, &PrekeyPolicy::default(), &mut bob.rng));
    let new_bundle = bob.bundle();
    assert!(alice.sessions[&bob.id()].needs_handshake(&new_bundle, 0, &alice.policy));
    let e2 = alice.seal(&new_bundle, &text("2"));
    assert!(is_handshake(&e2));
    assert_eq!(handshake_body(&e2).prekey_id, 2);
    // Everything opens, the old session's messages included.
    for (e, t) in [(&e0, "0"), (&e1, "1"), (&e2, "2")] {
        assert_eq!(bob.open(e).unwrap().1, text(t));
    }
    assert_eq!(bob.sessions[&alice.id()].inbound_ids().len(), 2);
}

#[test]
fn seal_rejects_bad_recipient_bundles() {
    let (mut alice, bob, carol) = (User::new(1), User::new(2), User::new(3));
    let mut sessions = PeerSessions::default();
    let policy = SessionPolicy::default();
    // Header addressed to Bob, Carol's bundle.
    let header = alice.header_to(bob.id());
    let r = sessions.seal(
        &alice.me,
        &carol.bundle(),
        &header,
        &text("x"),
        0,
        &policy,
        &mut alice.rng,
    );
    assert!(matches!(
        r,
        Err(SealError::BadBundle(BundleError::WrongUser))
    ));
    // Bob's bundle with a broken signature.
    let mut forged = bob.bundle();
    forged.prekey.public = carol.bundle().prekey.public;
    let r = sessions.seal(
        &alice.me,
        &forged,
        &header,
        &text("x"),
        0,
        &policy,
        &mut alice.rng,
    );
    assert!(matches!(
        r,
        Err(SealError::BadBundle(BundleError::BadSignature))
    ));
    // Nothing was started.
    assert!(sessions.needs_handshake(&bob.bundle(), 0, &policy));
}

#[test]
fn seal_rejects_what_does_not_fit_one_noise_message() {
    let (mut alice, bob) = (User::new(1), User::new(2));
    let pt = Plaintext {
        sent_at_ms: 0,
        payload: kith_protocol::payload::RawPayload {
            kind: 1,
            body: vec![b'a'; MAX_NOISE_MESSAGE_LEN],
        },
    };
    let header = alice.header_to(bob.id());
    let mut sessions = PeerSessions::default();
    let r = sessions.seal(
        &alice.me,
        &bob.bundle(),
        &header,
        &pt,
        0,
        &SessionPolicy::default(),
        &mut alice.rng,
    );
    assert!(
        matches!(r, Err(SealError::TooLarge { max, .. }) if max == MAX_NOISE_MESSAGE_LEN - HANDSHAKE_OVERHEAD)
    );
}

#[test]
fn largest_payloads_fit_a_handshake_an_envelope_and_a_frame() {
    let (mut alice, mut bob) = (User::new(1), User::new(2));
    let big_text = Payload::Text(Text {
        body: "é".repeat(MAX_TEXT_LEN / 2),
        client_meta: "m".repeat(MAX_CLIENT_META_LEN),
    });
    let big_media = Payload::Media(MediaRef {
        hash: [1; 32],
        size: u64::MAX,
        chunk_size: u32::MAX,
        mime: "m".repeat(MAX_MEDIA_NAME_LEN),
        name: "n".repeat(MAX_MEDIA_NAME_LEN),
        key: [2; 32],
        preview: vec![3; MAX_PREVIEW_LEN],
        caption: "c".repeat(MAX_TEXT_LEN),
    });
    // The node sends delivered and read receipts for up to this many messages at once.
    let big_receipt = Payload::Receipt(Receipt {
        kind: ReceiptKind::Read,
        ids: vec![MessageId([0xff; 16]); MAX_RECEIPT_IDS],
    });
    for payload in [big_text, big_media, big_receipt] {
        let pt = Plaintext::new(&payload, u64::MAX).unwrap();
        let env = alice.seal(&bob.bundle(), &pt);
        assert!(is_handshake(&env));
        assert!(handshake_body(&env).noise.len() <= MAX_NOISE_MESSAGE_LEN);
        let bytes = env.to_bytes().unwrap();
        assert!(bytes.len() <= MAX_ENVELOPE_LEN);
        let mut framed = Vec::new();
        frame::encode(&MsgFrame::Envelope(env.clone()), &mut framed).unwrap();
        let (back, _) = frame::decode::<MsgFrame>(&framed).unwrap().unwrap();
        assert_eq!(back, MsgFrame::Envelope(env.clone()));
        assert_eq!(
            bob.open(&Envelope::from_bytes(&bytes).unwrap()).unwrap().1,
            pt
        );
        // Then as a session message too.
        let s = alice.seal(&bob.bundle(), &pt);
        assert!(!is_handshake(&s));
        assert!(s.to_bytes().unwrap().len() <= MAX_ENVELOPE_LEN);
        assert_eq!(bob.open(&s).unwrap().1, pt);
        alice.sessions.clear();
    }
}

#[test]
fn session_state_survives_storage() {
    let (mut alice, mut bob) = (User::new(1), User::new(2));
    bob.open(&alice.seal(&bob.bundle(), &text("0"))).unwrap();
    let skipped = alice.seal(&bob.bundle(), &text("skipped"));
    let m = alice.seal(&bob.bundle(), &text("1"));
    bob.open(&m).unwrap();
    // Both sides store and reload their state (as the node does).
    for u in [&mut alice, &mut bob] {
        for s in u.sessions.values_mut() {
            *s = codec::decode(&codec::encode(s).unwrap()).unwrap();
        }
        u.me = kith_protocol::LocalIdentity::from_bytes(&u.me.to_bytes().unwrap()).unwrap();
    }
    // The receiving side is intact: replays still refused, skipped keys still there.
    assert!(matches!(bob.open(&m), Err(OpenError::Replayed)));
    assert_eq!(bob.open(&skipped).unwrap().1, text("skipped"));
    // The sending side is never stored: after a reload the sender starts a new session, so
    // it can never reuse a message key it used before a crash.
    assert!(alice.sessions[&bob.id()].needs_handshake(&bob.bundle(), 0, &alice.policy));
    let m2 = alice.seal(&bob.bundle(), &text("2"));
    assert!(is_handshake(&m2));
    assert_eq!(bob.open(&m2).unwrap().1, text("2"));
    let m3 = alice.seal(&bob.bundle(), &text("3"));
    assert!(!is_handshake(&m3));
    assert_eq!(bob.open(&m3).unwrap().1, text("3"));
    assert_eq!(bob.sessions[&alice.id()].inbound_ids().len(), 2);
}

#[test]
fn forget_outbound_starts_a_new_session() {
    let (mut alice, mut bob) = (User::new(1), User::new(2));
    bob.open(&alice.seal(&bob.bundle(), &text("0"))).unwrap();
    let m1 = alice.seal(&bob.bundle(), &text("1"));
    assert!(!is_handshake(&m1));
    alice.sessions.get_mut(&bob.id()).unwrap().forget_outbound();
    let m2 = alice.seal(&bob.bundle(), &text("2"));
    assert!(is_handshake(&m2));
    // The old session's message still opens, and so does the new one.
    assert_eq!(bob.open(&m2).unwrap().1, text("2"));
    assert_eq!(bob.open(&m1).unwrap().1, text("1"));
}

#[test]
fn sealing_is_deterministic_under_a_seeded_rng() {
    let run = || {
        let (mut alice, bob) = (User::new(1), User::new(2));
        let a = alice.seal(&bob.bundle(), &text("x"));
        let b = alice.seal(&bob.bundle(), &text("y"));
        (a.to_bytes().unwrap(), b.to_bytes().unwrap())
    };
    assert_eq!(run(), run());
    // Different randomness gives a different handshake (fresh ephemeral key and seed).
    let (mut alice, bob) = (User::new(1), User::new(2));
    let a1 = alice.seal(&bob.bundle(), &text("x"));
    alice.sessions.clear();
    let a2 = alice.seal(&bob.bundle(), &text("x"));
    assert_ne!(
        handshake_body(&a1).noise[..32],
        handshake_body(&a2).noise[..32]
    );
}
