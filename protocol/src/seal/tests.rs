//! Tests that need the crate's internals (static private keys, raw session state, the
//! private KDF). The public-API behaviour is tested in `protocol/tests/seal.rs`.

use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

use super::crypto::{kdf, label};
use super::*;
use crate::{identity::Prekey, MessageId, Payload, Text};

fn ident(seed: u64) -> LocalIdentity {
    LocalIdentity::generate(0, &mut ChaCha20Rng::seed_from_u64(seed))
}

fn text(s: &str) -> Plaintext {
    Plaintext::new(
        &Payload::Text(Text {
            body: s.into(),
            client_meta: String::new(),
        }),
        42,
    )
    .unwrap()
}

fn header(to: &LocalIdentity, id: u8) -> EnvelopeHeader {
    EnvelopeHeader::new(MessageId([id; 16]), to.user_id(), 1_000_000)
}

/// The construction of `seal_handshake`, with every input chosen by the test (and snow's
/// default resolver): lets a test build what an attacker could build.
fn raw_handshake(
    static_private: &[u8; 32],
    prekey: &Prekey,
    prologue: &[u8],
    payload: &[u8],
) -> HandshakeBody {
    let mut hs = snow::Builder::new(NOISE_PATTERN.parse().unwrap())
        .local_private_key(static_private)
        .unwrap()
        .remote_public_key(&prekey.public)
        .unwrap()
        .prologue(prologue)
        .unwrap()
        .build_initiator()
        .unwrap();
    let mut noise = vec![0u8; payload.len() + HANDSHAKE_OVERHEAD];
    let len = hs.write_message(payload, &mut noise).unwrap();
    noise.truncate(len);
    HandshakeBody {
        prekey_id: prekey.id,
        noise,
    }
}

fn payload_bytes(sender: KeyBundle, plaintext: &Plaintext) -> Vec<u8> {
    codec::encode(&HandshakePayload {
        sender,
        chain_seed: [3; 32],
        plaintext: plaintext.clone(),
    })
    .unwrap()
}

#[test]
fn raw_construction_matches_seal() {
    // Control for the forgery tests: the test's construction is accepted when honest.
    let (mallory, bob) = (ident(1), ident(2));
    let h = header(&bob, 1);
    let body = raw_handshake(
        mallory.static_private(),
        &bob.bundle().prekey,
        &h.prologue(),
        &payload_bytes(mallory.bundle(), &text("hi")),
    );
    let opened = open_handshake(&bob, &h, &body).unwrap();
    assert_eq!(opened.sender, mallory.bundle());
    assert_eq!(opened.plaintext, text("hi"));
    assert_eq!(opened.session.id, session_id(&[3; 32]));
}

#[test]
fn forged_sender_rejected() {
    let (alice, mallory, bob) = (ident(1), ident(2), ident(3));
    let h = header(&bob, 1);
    // Mallory's Noise static, Alice's genuine signed bundle in the payload.
    let body = raw_handshake(
        mallory.static_private(),
        &bob.bundle().prekey,
        &h.prologue(),
        &payload_bytes(alice.bundle(), &text("it's alice, honest")),
    );
    assert!(matches!(
        open_handshake(&bob, &h, &body),
        Err(OpenError::ForgedSender(_))
    ));

    // Mallory's bundle relabelled as Alice's: the user id does not match the key.
    let mut relabelled = mallory.bundle();
    relabelled.user = alice.user_id();
    let body = raw_handshake(
        mallory.static_private(),
        &bob.bundle().prekey,
        &h.prologue(),
        &payload_bytes(relabelled, &text("x")),
    );
    assert!(matches!(
        open_handshake(&bob, &h, &body),
        Err(OpenError::ForgedSender(_))
    ));

    // Alice's bundle with Mallory's static key swapped in: the signature fails.
    let mut swapped = alice.bundle();
    swapped.static_key = mallory.bundle().static_key;
    let body = raw_handshake(
        mallory.static_private(),
        &bob.bundle().prekey,
        &h.prologue(),
        &payload_bytes(swapped, &text("x")),
    );
    assert!(matches!(
        open_handshake(&bob, &h, &body),
        Err(OpenError::ForgedSender(_))
    ));
}

#[test]
fn malformed_handshake_payload_rejected() {
    let (alice, bob) = (ident(1), ident(2));
    let h = header(&bob, 1);
    for payload in [&b""[..], b"not a handshake payload", &[0u8; 300]] {
        let body = raw_handshake(
            alice.static_private(),
            &bob.bundle().prekey,
            &h.prologue(),
            payload,
        );
        assert!(
            matches!(
                open_handshake(&bob, &h, &body),
                Err(OpenError::Malformed(_))
            ),
            "{payload:?}"
        );
    }
    // A valid payload with a byte more is malformed too (trailing bytes).
    let mut p = payload_bytes(alice.bundle(), &text("x"));
    p.push(0);
    let body = raw_handshake(
        alice.static_private(),
        &bob.bundle().prekey,
        &h.prologue(),
        &p,
    );
    assert!(matches!(
        open_handshake(&bob, &h, &body),
        Err(OpenError::Malformed(_))
    ));
}

#[test]
fn handshake_prologue_binds_the_recipient() {
    let (alice, bob, carol) = (ident(1), ident(2), ident(3));
    let mut rng = ChaCha20Rng::seed_from_u64(9);
    let to_bob = header(&bob, 1);
    // Sealed to Bob's prekey, but with a prologue naming Carol as the recipient.
    let to_carol = EnvelopeHeader {
        recipient: carol.user_id(),
        ..to_bob.clone()
    };
    let body = seal_handshake(
        &alice,
        &bob.bundle(),
        &to_carol,
        &text("x"),
        [1; 32],
        &mut rng,
    )
    .unwrap();
    assert!(matches!(
        open_handshake(&bob, &to_bob, &body),
        Err(OpenError::Tampered)
    ));
    // Control: the same, with the right prologue, opens.
    let body = seal_handshake(
        &alice,
        &bob.bundle(),
        &to_bob,
        &text("x"),
        [1; 32],
        &mut rng,
    )
    .unwrap();
    assert!(open_handshake(&bob, &to_bob, &body).is_ok());
}

/// Every 32-byte secret a session state holds.
fn inbound_secrets(s: &InboundSession) -> Vec<[u8; 32]> {
    let mut out = vec![s.chain_key];
    out.extend(s.skipped.values().copied());
    out
}

#[test]
fn opened_message_keys_are_forgotten() {
    let (alice, bob) = (ident(1), ident(2));
    let policy = SessionPolicy::default();
    let mut rng = ChaCha20Rng::seed_from_u64(5);
    let mut a = PeerSessions::default();
    let mut b = PeerSessions::default();
    let h0 = header(&bob, 0);
    let SealedBody::Handshake(hs) = a
        .seal(&alice, &bob.bundle(), &h0, &text("0"), 0, &policy, &mut rng)
        .unwrap()
    else {
        panic!("first message must be a handshake")
    };
    let opened = open_handshake(&bob, &h0, &hs).unwrap();
    let seed = opened.session.chain_key;
    b.accept(opened.session).unwrap();

    // The message keys of the chain, computed from the seed.
    let mut chain = seed;
    let mut keys = Vec::new();
    for _ in 0..6 {
        let (mk, next) = chain_step(&chain);
        keys.push(mk);
        chain = next;
    }

    let mut bodies = Vec::new();
    for n in 0..6u8 {
        let h = header(&bob, n + 1);
        let SealedBody::Session(s) = a
            .seal(&alice, &bob.bundle(), &h, &text("m"), 0, &policy, &mut rng)
            .unwrap()
        else {
            panic!("later messages are session messages")
        };
        assert_eq!(s.n, u64::from(n));
        // The sender keeps no key that opens what it already sent.
        let out = a.outbound.as_ref().unwrap();
        assert!(keys[..=usize::from(n)].iter().all(|k| *k != out.chain_key));
        bodies.push((h, s));
    }
    // Open 3 (skipping 0..=2), then 0, then 5.
    for i in [3usize, 0, 5] {
        let (h, s) = &bodies[i];
        b.open(h, s).unwrap();
        let state = &b.inbound[0];
        assert!(
            !inbound_secrets(state).contains(&keys[i]),
            "key {i} still held"
        );
        assert!(matches!(b.open(h, s), Err(OpenError::Replayed)));
    }
    let state = &b.inbound[0];
    // Skipped and not yet opened: 1, 2, 4. Opened: 0, 3, 5.
    assert_eq!(
        state.skipped.keys().copied().collect::<Vec<_>>(),
        vec![1, 2, 4]
    );
    assert_eq!(state.next_n, 6);
    for k in [0usize, 3, 5] {
        assert!(!inbound_secrets(state).contains(&keys[k]));
    }
    // No earlier chain key survives either: the chain key is the 6th.
    assert_eq!(state.chain_key, chain);
}

#[test]
fn failed_open_changes_nothing() {
    let (alice, bob) = (ident(1), ident(2));
    let policy = SessionPolicy::default();
    let mut rng = ChaCha20Rng::seed_from_u64(6);
    let mut a = PeerSessions::default();
    let mut b = PeerSessions::default();
    let h0 = header(&bob, 0);
    let SealedBody::Handshake(hs) = a
        .seal(&alice, &bob.bundle(), &h0, &text("0"), 0, &policy, &mut rng)
        .unwrap()
    else {
        panic!()
    };
    let opened = open_handshake(&bob, &h0, &hs).unwrap();
    let sid = opened.session.id;
    let seed = opened.session.chain_key;
    b.accept(opened.session).unwrap();

    // Authentic ciphertext (right key, right AAD) whose contents are not a Plaintext.
    let h = header(&bob, 7);
    let (mk0, _) = chain_step(&seed);
    let garbage = SessionBody {
        session: sid,
        n: 0,
        ciphertext: aead_seal(&mk0, &session_aad(&h, &sid, 0), b"\xff\xff"),
    };
    let before = codec::encode(&b).unwrap();
    assert!(matches!(b.open(&h, &garbage), Err(OpenError::Malformed(_))));
    // Forged message 10: authentication fails, no keys skipped.
    let forged = SessionBody {
        session: sid,
        n: 10,
        ciphertext: vec![0; 40],
    };
    assert!(matches!(b.open(&h, &forged), Err(OpenError::Tampered)));
    assert_eq!(
        codec::encode(&b).unwrap(),
        before,
        "state changed by failed opens"
    );

    // The genuine message 0 still opens.
    let SealedBody::Session(s) = a
        .seal(
            &alice,
            &bob.bundle(),
            &h,
            &text("real"),
            0,
            &policy,
            &mut rng,
        )
        .unwrap()
    else {
        panic!()
    };
    assert_eq!(b.open(&h, &s).unwrap(), text("real"));
}

#[test]
fn skipped_keys_are_bounded() {
    let (alice, bob) = (ident(1), ident(2));
    let policy = SessionPolicy::default();
    let mut rng = ChaCha20Rng::seed_from_u64(7);
    let mut a = PeerSessions::default();
    let mut b = PeerSessions::default();
    let h = header(&bob, 0);
    let SealedBody::Handshake(hs) = a
        .seal(&alice, &bob.bundle(), &h, &text("0"), 0, &policy, &mut rng)
        .unwrap()
    else {
        panic!()
    };
    b.accept(open_handshake(&bob, &h, &hs).unwrap().session)
        .unwrap();
    // Each open skips MAX_SKIP numbers (the most one message may): the k-th opens number
    // k * (MAX_SKIP + 1) - 1, so after `opens` of them the skipped keys pass the cap.
    let step = MAX_SKIP as usize + 1;
    let opens = MAX_SKIPPED_KEYS / MAX_SKIP as usize + 1;
    let total = opens * step;
    let mut bodies = Vec::new();
    for _ in 0..total {
        let SealedBody::Session(s) = a
            .seal(&alice, &bob.bundle(), &h, &text("m"), 0, &policy, &mut rng)
            .unwrap()
        else {
            panic!()
        };
        bodies.push(s);
    }
    for k in 1..opens {
        b.open(&h, &bodies[k * step - 1]).unwrap();
        assert_eq!(b.inbound[0].skipped.len(), k * MAX_SKIP as usize);
    }
    // One more: past the cap, the oldest skipped keys are forgotten first.
    b.open(&h, &bodies[total - 1]).unwrap();
    assert_eq!(b.inbound[0].skipped.len(), MAX_SKIPPED_KEYS);
    let forgotten = opens * MAX_SKIP as usize - MAX_SKIPPED_KEYS;
    assert!(!b.inbound[0].skipped.contains_key(&0));
    assert!(matches!(b.open(&h, &bodies[0]), Err(OpenError::Replayed)));
    assert!(matches!(
        b.open(&h, &bodies[forgotten - 1]),
        Err(OpenError::Replayed)
    ));
    assert_eq!(b.open(&h, &bodies[forgotten]).unwrap(), text("m"));
    assert_eq!(b.open(&h, &bodies[total - 2]).unwrap(), text("m"));
}

#[test]
fn kdf_is_keyed_blake2s_with_one_label_byte() {
    // Known answers from an independent BLAKE2s (Python's hashlib.blake2s(key=...)).
    let key: [u8; 32] = core::array::from_fn(|i| i as u8);
    let hex = |b: [u8; 32]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
    assert_eq!(
        hex(kdf(&key, label::SESSION_ID)),
        "40d15fee7c328830166ac3f918650f807e7e01e177258cdc0a39b11f598066f1"
    );
    assert_eq!(
        hex(kdf(&key, label::MESSAGE_KEY)),
        "09bc37a9299f3c678db55bc9964eaae34f83b16a5dca296eb36c95a6837a5924"
    );
    assert_eq!(
        hex(kdf(&key, label::CHAIN_KEY)),
        "32b9b82cd22f9b25372f0947382b5397acf5db706b17ecb1f43c782fc6b516bc"
    );
    assert_eq!(session_id(&key).0[..], kdf(&key, 0)[..16]);
    // ChaCha20-Poly1305 with the zero nonce (Python's `cryptography`).
    let ct = aead_seal(&key, b"aad", b"hello");
    assert_eq!(
        ct.iter().map(|x| format!("{x:02x}")).collect::<String>(),
        "70dd2e5dc2c6c135327908f33f5b96f2817bd0efae"
    );
    assert_eq!(aead_open(&key, b"aad", &ct).unwrap(), b"hello");
    assert!(matches!(
        aead_open(&key, b"aad!", &ct),
        Err(OpenError::Tampered)
    ));
}

#[test]
fn session_aad_layout() {
    let bob = ident(2);
    let h = header(&bob, 9);
    let sid = SessionId([0xab; 16]);
    let aad = session_aad(&h, &sid, 0x0102);
    let p = h.prologue();
    assert_eq!(&aad[..p.len()], &p[..]);
    assert_eq!(&aad[p.len()..p.len() + 16], &[0xab; 16]);
    assert_eq!(&aad[p.len() + 16..], &[0, 0, 0, 0, 0, 0, 1, 2]);
}
