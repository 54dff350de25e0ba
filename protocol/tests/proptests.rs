//! Property tests: framing and payload round trips, seal/open under arbitrary texts and
//! delivery orders, and every decoder fed arbitrary bytes.
#![allow(clippy::unwrap_used, missing_docs)]

mod common;

use std::sync::OnceLock;

use common::text;
use kith_protocol::{
    codec, frame,
    payload::{kind, RawPayload},
    seal::{open_handshake, HandshakeBody, HandshakePayload, OpenError, SessionBody, SessionId},
    wire::{MsgFrame, RejectReason},
    Envelope, EnvelopeHeader, KeyBundle, LocalIdentity, MediaRef, MessageId, Payload, PeerSessions,
    Plaintext, PresenceRecord, Receipt, ReceiptKind, SealedBody, SessionPolicy, Text, UserId,
    Visibility, PROTOCOL_VERSION,
};
use proptest::prelude::*;
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

/// A few identities, made once (key generation is the slow part of a case).
fn users() -> &'static [(LocalIdentity, KeyBundle)] {
    static USERS: OnceLock<Vec<(LocalIdentity, KeyBundle)>> = OnceLock::new();
    USERS.get_or_init(|| {
        (0..4u64)
            .map(|i| {
                let me = LocalIdentity::generate(0, &mut ChaCha20Rng::seed_from_u64(1000 + i));
                let bundle = me.bundle();
                (me, bundle)
            })
            .collect()
    })
}

fn message_id() -> impl Strategy<Value = MessageId> {
    any::<[u8; 16]>().prop_map(MessageId)
}

fn user_id() -> impl Strategy<Value = UserId> {
    (0..4usize).prop_map(|i| users()[i].0.user_id())
}

fn header() -> impl Strategy<Value = EnvelopeHeader> {
    (message_id(), user_id(), any::<u64>())
        .prop_map(|(id, to, exp)| EnvelopeHeader::new(id, to, exp))
}

fn sealed_body() -> impl Strategy<Value = SealedBody> {
    prop_oneof![
        (any::<u32>(), proptest::collection::vec(any::<u8>(), 0..400)).prop_map(
            |(prekey_id, noise)| SealedBody::Handshake(HandshakeBody { prekey_id, noise })
        ),
        (
            any::<[u8; 16]>(),
            any::<u64>(),
            proptest::collection::vec(any::<u8>(), 0..400)
        )
            .prop_map(|(s, n, ciphertext)| SealedBody::Session(SessionBody {
                session: SessionId(s),
                n,
                ciphertext
            })),
    ]
}

fn envelope() -> impl Strategy<Value = Envelope> {
    (header(), sealed_body()).prop_map(|(header, body)| Envelope { header, body })
}

fn visibility() -> impl Strategy<Value = Visibility> {
    prop_oneof![
        Just(Visibility::Everyone),
        Just(Visibility::Contacts),
        Just(Visibility::Nobody)
    ]
}

fn presence() -> impl Strategy<Value = PresenceRecord> {
    (
        0..4usize,
        any::<u64>(),
        any::<u64>(),
        any::<bool>(),
        visibility(),
    )
        .prop_map(|(i, seq, seen, online, v)| {
            PresenceRecord::sign(&users()[i].0, seq, seen, online, v)
        })
}

fn reject_reason() -> impl Strategy<Value = RejectReason> {
    prop_oneof![
        Just(RejectReason::Misaddressed),
        Just(RejectReason::Expired),
        Just(RejectReason::Invalid),
        Just(RejectReason::Busy),
    ]
}

fn msg_frame() -> impl Strategy<Value = MsgFrame> {
    prop_oneof![
        envelope().prop_map(MsgFrame::Envelope),
        proptest::collection::vec(message_id(), 0..40).prop_map(MsgFrame::Ack),
        (message_id(), reject_reason()).prop_map(|(id, r)| MsgFrame::Reject(id, r)),
        presence().prop_map(MsgFrame::Presence),
    ]
}

fn payload() -> impl Strategy<Value = Payload> {
    let text = ("\\PC{1,300}", "\\PC{0,60}")
        .prop_map(|(body, client_meta)| Payload::Text(Text { body, client_meta }));
    let media = (
        any::<[u8; 32]>(),
        any::<u64>(),
        any::<u32>(),
        "[a-z]{1,10}/[a-z0-9.+-]{1,20}",
        "\\PC{0,60}",
        any::<[u8; 32]>(),
        proptest::collection::vec(any::<u8>(), 0..500),
        "\\PC{0,100}",
    )
        .prop_map(
            |(hash, size, chunk_size, mime, name, key, preview, caption)| {
                Payload::Media(MediaRef {
                    hash,
                    size,
                    chunk_size,
                    mime,
                    name,
                    key,
                    preview,
                    caption,
                })
            },
        );
    let receipt = (
        any::<bool>(),
        proptest::collection::vec(message_id(), 1..50),
    )
        .prop_map(|(read, ids)| {
            Payload::Receipt(Receipt {
                kind: if read {
                    ReceiptKind::Read
                } else {
                    ReceiptKind::Delivered
                },
                ids,
            })
        });
    prop_oneof![text, media, receipt]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn frames_round_trip_in_any_chunking(
        frames in proptest::collection::vec(msg_frame(), 1..6),
        chunks in proptest::collection::vec(1usize..200, 1..50),
    ) {
        let mut wire = Vec::new();
        for f in &frames {
            frame::encode(f, &mut wire).unwrap();
        }
        // Feed the bytes as a stream reader would see them, in arbitrary chunk sizes.
        let mut buf = Vec::new();
        let mut got = Vec::new();
        let mut at = 0;
        let mut chunk = chunks.iter().cycle();
        while at < wire.len() {
            let take = (*chunk.next().unwrap()).min(wire.len() - at);
            buf.extend_from_slice(&wire[at..at + take]);
            at += take;
            while let Some((f, used)) = frame::decode::<MsgFrame>(&buf).unwrap() {
                got.push(f);
                buf.drain(..used);
            }
        }
        prop_assert!(buf.is_empty());
        prop_assert_eq!(got, frames);
    }

    #[test]
    fn envelopes_round_trip(mut env in envelope()) {
        env.header.version = PROTOCOL_VERSION;
        let bytes = env.to_bytes().unwrap();
        prop_assert_eq!(codec::encoded_len(&env).unwrap(), bytes.len());
        prop_assert_eq!(Envelope::from_bytes(&bytes).unwrap(), env);
    }

    #[test]
    fn payloads_round_trip(p in payload(), sent_at_ms in any::<u64>()) {
        let pt = Plaintext::new(&p, sent_at_ms).unwrap();
        let back: Plaintext = codec::decode(&codec::encode(&pt).unwrap()).unwrap();
        prop_assert_eq!(&back, &pt);
        prop_assert_eq!(back.payload.decode().unwrap(), p);
    }

    // Past the highest kind this build knows (a test pinned to a number went stale once).
    #[test]
    fn unknown_kinds_are_unknown(k in (kind::TYPING + 1).., body in proptest::collection::vec(any::<u8>(), 0..50)) {
        prop_assert_eq!(RawPayload { kind: k, body }.decode().unwrap(), Payload::Unknown { kind: k });
    }
}

/// Opens `env` as `me`, the node way (handshake → accept, session → open).
fn open(
    me: &LocalIdentity,
    sessions: &mut PeerSessions,
    env: &Envelope,
) -> Result<Plaintext, OpenError> {
    match &env.body {
        SealedBody::Handshake(h) => {
            let opened = open_handshake(me, &env.header, h)?;
            sessions.accept(opened.session)?;
            Ok(opened.plaintext)
        }
        SealedBody::Session(s) => sessions.open(&env.header, s),
    }
}

fn seal_all(texts: &[String], seed: u64) -> Vec<Envelope> {
    let (alice, _) = &users()[0];
    let (_, bob_bundle) = &users()[1];
    let mut rng = ChaCha20Rng::seed_from_u64(seed);
    let mut out = PeerSessions::default();
    texts
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let header = EnvelopeHeader::new(MessageId([i as u8; 16]), bob_bundle.user, u64::MAX);
            let body = out
                .seal(
                    alice,
                    bob_bundle,
                    &header,
                    &text(t),
                    0,
                    &SessionPolicy::default(),
                    &mut rng,
                )
                .unwrap();
            Envelope { header, body }
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn seal_open_round_trip(texts in proptest::collection::vec("\\PC{1,400}", 1..6), seed in any::<u64>()) {
        let envs = seal_all(&texts, seed);
        prop_assert!(matches!(envs[0].body, SealedBody::Handshake(_)));
        let bob = &users()[1].0;
        let mut sessions = PeerSessions::default();
        for (env, t) in envs.iter().zip(&texts) {
            let wire = Envelope::from_bytes(&env.to_bytes().unwrap()).unwrap();
            prop_assert_eq!(open(bob, &mut sessions, &wire).unwrap(), text(t));
        }
    }

    #[test]
    fn any_delivery_order_opens_each_exactly_once(
        order in (1usize..14).prop_flat_map(|n| Just((0..n).collect::<Vec<_>>()).prop_shuffle()),
        seed in any::<u64>(),
    ) {
        let texts: Vec<String> = (0..order.len()).map(|i| format!("message {i}")).collect();
        let envs = seal_all(&texts, seed);
        let bob = &users()[1].0;
        let mut sessions = PeerSessions::default();
        let mut opened = vec![0u32; envs.len()];
        // Session messages that arrive before the handshake wait for it (as a node retries).
        let mut waiting: Vec<usize> = Vec::new();
        for &i in &order {
            match open(bob, &mut sessions, &envs[i]) {
                Ok(pt) => {
                    prop_assert_eq!(pt, text(&texts[i]));
                    opened[i] += 1;
                    if i == 0 {
                        for j in waiting.drain(..) {
                            let pt = open(bob, &mut sessions, &envs[j]).unwrap();
                            prop_assert_eq!(pt, text(&texts[j]));
                            opened[j] += 1;
                        }
                    }
                }
                Err(OpenError::UnknownSession) if opened[0] == 0 => waiting.push(i),
                Err(e) => prop_assert!(false, "message {} failed: {}", i, e),
            }
        }
        prop_assert!(opened.iter().all(|&c| c == 1), "{:?}", opened);
        // Every second delivery is refused as a replay.
        for env in &envs {
            prop_assert!(matches!(open(bob, &mut sessions, env), Err(OpenError::Replayed)));
        }
    }

    #[test]
    fn mutated_envelopes_never_open_as_something_else(
        which in 0usize..3,
        edits in edits(),
    ) {
        // A genuine handshake and session message from Alice to Bob, mutated at random.
        let envs = seal_all(&["first".into(), "second".into(), "third".into()], 7);
        let bob = &users()[1].0;
        let mut sessions = PeerSessions::default();
        open(bob, &mut sessions, &envs[0]).unwrap();
        let original = &envs[which];
        let mut bytes = codec::encode(original).unwrap();
        mutate(&mut bytes, &edits);
        let Ok(env) = codec::decode::<Envelope>(&bytes) else { return Ok(()) };
        let mut s = sessions.clone();
        let result = match &env.body {
            SealedBody::Handshake(h) => open_handshake(bob, &env.header, h).map(|o| o.plaintext),
            SealedBody::Session(b) => s.open(&env.header, b),
        };
        if env == *original {
            // Only an encoding-level no-op may still open (and then to the same plaintext).
            if which != 0 {
                prop_assert_eq!(result.unwrap(), text(["first", "second", "third"][which]));
            }
        } else {
            prop_assert!(result.is_err(), "a changed envelope opened: {:?}", env.header);
        }
    }
}

/// Applies byte edits (flip, insert, delete) to an encoding.
fn mutate(bytes: &mut Vec<u8>, edits: &[(prop::sample::Index, u8, u8)]) {
    for (at, byte, op) in edits {
        match op {
            0 if !bytes.is_empty() => {
                let i = at.index(bytes.len());
                bytes[i] ^= byte | 1;
            }
            1 => {
                let i = at.index(bytes.len() + 1);
                bytes.insert(i, *byte);
            }
            _ if !bytes.is_empty() => {
                let i = at.index(bytes.len());
                bytes.remove(i);
            }
            _ => {}
        }
    }
}

fn edits() -> impl Strategy<Value = Vec<(prop::sample::Index, u8, u8)>> {
    proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0u8..3), 1..4)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// A signed bundle or presence record, changed in any way that still decodes, never
    /// verifies as something else; a changed stored identity never loads with mismatched keys.
    #[test]
    fn mutated_signed_records_never_verify(which in 0usize..4, edits in edits()) {
        let (me, bundle) = &users()[which];
        let mut bytes = codec::encode(bundle).unwrap();
        mutate(&mut bytes, &edits);
        if let Ok(b) = codec::decode::<KeyBundle>(&bytes) {
            prop_assert_eq!(b.verify().is_ok(), b == *bundle);
        }
        let record = PresenceRecord::sign(me, 7, 1_000, true, Visibility::Contacts);
        let mut bytes = codec::encode(&record).unwrap();
        mutate(&mut bytes, &edits);
        if let Ok(r) = codec::decode::<PresenceRecord>(&bytes) {
            prop_assert_eq!(r.verify().is_ok(), r == record);
        }
        let mut bytes = me.to_bytes().unwrap();
        mutate(&mut bytes, &edits);
        if let Ok(loaded) = LocalIdentity::from_bytes(&bytes) {
            // Whatever loads is internally consistent: its bundle verifies and names the
            // public halves of the private keys it holds.
            let bundle = loaded.bundle();
            prop_assert!(bundle.verify().is_ok());
            let public = |k: [u8; 32]| x25519_dalek::x25519(k, x25519_dalek::X25519_BASEPOINT_BYTES);
            prop_assert_eq!(bundle.prekey.public, public(loaded.prekeys().current().private));
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// No decoder panics, whatever the bytes.
    #[test]
    fn decoders_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600), k in 0u16..5) {
        let _ = codec::decode::<Envelope>(&bytes);
        let _ = codec::decode::<SealedBody>(&bytes);
        let _ = codec::decode::<MsgFrame>(&bytes);
        let _ = codec::decode::<Plaintext>(&bytes);
        let _ = codec::decode::<RawPayload>(&bytes);
        let _ = codec::decode::<PresenceRecord>(&bytes);
        let _ = codec::decode::<KeyBundle>(&bytes);
        let _ = codec::decode::<HandshakePayload>(&bytes);
        let _ = codec::decode::<PeerSessions>(&bytes);
        let _ = codec::decode::<UserId>(&bytes);
        let _ = UserId::from_bytes(&bytes);
        let _ = Envelope::from_bytes(&bytes);
        let _ = LocalIdentity::from_bytes(&bytes);
        let _ = frame::decode::<MsgFrame>(&bytes);
        let _ = frame::decode::<Envelope>(&bytes);
        let _ = RawPayload { kind: k, body: bytes.clone() }.decode();
        if let Ok(p) = codec::decode::<PresenceRecord>(&bytes) {
            let _ = p.verify();
        }
        if let Ok(b) = codec::decode::<KeyBundle>(&bytes) {
            let _ = b.verify();
        }
        if let Ok(text) = std::str::from_utf8(&bytes) {
            let _ = text.parse::<UserId>();
            let _ = text.parse::<MessageId>();
        }
    }

    /// The same, with a length prefix that fits, so frame decoding reaches the body decoder.
    #[test]
    fn framed_garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        let mut buf = (bytes.len() as u32).to_be_bytes().to_vec();
        buf.extend_from_slice(&bytes);
        let _ = frame::decode::<MsgFrame>(&buf);
        // Anything else in the frame is a codec error, never a panic or a partial read.
        if let Ok(Some((_, used))) = frame::decode::<MsgFrame>(&buf) {
            prop_assert_eq!(used, buf.len());
        }
    }

    /// Each decoder's body types, behind a valid-looking prefix (kind 1 text, etc.).
    #[test]
    fn payload_kinds_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        for k in [kind::TEXT, kind::MEDIA, kind::RECEIPT] {
            let _ = RawPayload { kind: k, body: bytes.clone() }.decode();
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Random noise bytes never open a handshake (and never panic), whatever the prekey id.
    #[test]
    fn random_handshakes_never_open(
        noise in proptest::collection::vec(any::<u8>(), 0..400),
        prekey_id in prop_oneof![Just(1u32), any::<u32>()],
        id in message_id(),
    ) {
        let bob = &users()[1].0;
        let header = EnvelopeHeader::new(id, bob.user_id(), u64::MAX);
        let body = HandshakeBody { prekey_id, noise };
        prop_assert!(open_handshake(bob, &header, &body).is_err());
    }

    /// Random ciphertexts never open in a real session (and never panic or change state).
    #[test]
    fn random_session_messages_never_open(
        ciphertext in proptest::collection::vec(any::<u8>(), 0..300),
        n in prop_oneof![0u64..4, 0u64..3000, any::<u64>()],
    ) {
        let envs = seal_all(&["a".into(), "b".into()], 11);
        let bob = &users()[1].0;
        let mut sessions = PeerSessions::default();
        open(bob, &mut sessions, &envs[0]).unwrap();
        let SealedBody::Session(real) = &envs[1].body else { unreachable!() };
        let fake = SessionBody { session: real.session, n, ciphertext };
        prop_assert!(sessions.open(&envs[1].header, &fake).is_err());
        // The genuine message still opens afterwards.
        prop_assert_eq!(sessions.open(&envs[1].header, real).unwrap(), text("b"));
    }
}
