//! Test vectors for the first (handshake) message: `tests/vectors/sealed.json`.
//!
//! Regenerate with
//! `KITH_WRITE_VECTORS=1 cargo test -p kith-protocol --test vectors -- --ignored generate_vectors`.
//! `vectors_open` checks every vector with snow alone (no Kith code on the crypto path);
//! `open_vectors.py` checks them with an independent Noise library.
#![allow(clippy::unwrap_used, missing_docs)]

use std::path::PathBuf;

use kith_protocol::{
    codec,
    identity::PrekeyPolicy,
    seal::{open_handshake, HandshakePayload, NOISE_PATTERN},
    EnvelopeHeader, LocalIdentity, MediaRef, MessageId, Payload, PeerSessions, Plaintext, Receipt,
    ReceiptKind, SealedBody, SessionPolicy, Text,
};
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;
use serde::{Deserialize, Serialize};

#[derive(Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Vector {
    pattern: String,
    prologue_hex: String,
    recipient_static_private_hex: String,
    sealed_body_hex: String,
    payload_hex: String,
}

fn path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/vectors/sealed.json")
}

fn identity(secret_byte: u8, rng_seed: u64, now_ms: u64) -> LocalIdentity {
    LocalIdentity::from_ed25519_secret(
        [secret_byte; 32],
        now_ms,
        &mut ChaCha20Rng::seed_from_u64(rng_seed),
    )
}

fn text(body: String, client_meta: &str) -> Payload {
    Payload::Text(Text {
        body,
        client_meta: client_meta.into(),
    })
}

/// Opens a Noise X message as the responder with snow and nothing else.
fn snow_open(prologue: &[u8], private: &[u8], noise: &[u8]) -> (Vec<u8>, Vec<u8>) {
    let mut hs = snow::Builder::new(NOISE_PATTERN.parse().unwrap())
        .local_private_key(private)
        .unwrap()
        .prologue(prologue)
        .unwrap()
        .build_responder()
        .unwrap();
    let mut payload = vec![0u8; noise.len()];
    let len = hs.read_message(noise, &mut payload).unwrap();
    payload.truncate(len);
    (payload, hs.get_remote_static().unwrap().to_vec())
}

/// Seals one first message from `sender` to `recipient_bundle` and records the vector.
#[allow(clippy::too_many_arguments)]
fn vector(
    sender: &LocalIdentity,
    recipient: &LocalIdentity,
    recipient_bundle: &kith_protocol::KeyBundle,
    id: [u8; 16],
    expires_at_ms: u64,
    payload: &Payload,
    sent_at_ms: u64,
    seal_seed: u64,
) -> Vector {
    let header = EnvelopeHeader::new(MessageId(id), recipient.user_id(), expires_at_ms);
    let plaintext = Plaintext::new(payload, sent_at_ms).unwrap();
    let mut rng = ChaCha20Rng::seed_from_u64(seal_seed);
    let body = PeerSessions::default()
        .seal(
            sender,
            recipient_bundle,
            &header,
            &plaintext,
            sent_at_ms,
            &SessionPolicy::default(),
            &mut rng,
        )
        .unwrap();
    let SealedBody::Handshake(hs) = body else {
        panic!("a first message is a handshake")
    };
    let prekey = recipient.prekeys().find(hs.prekey_id).unwrap();
    let prologue = header.prologue();
    let (payload_bytes, remote_static) = snow_open(&prologue, &prekey.private, &hs.noise);
    // What is inside is exactly the documented payload.
    let inner: HandshakePayload = codec::decode(&payload_bytes).unwrap();
    assert_eq!(inner.sender, sender.bundle());
    assert_eq!(inner.plaintext, plaintext);
    assert_eq!(remote_static, sender.bundle().static_key);
    // And Kith opens it.
    let opened = open_handshake(recipient, &header, &hs).unwrap();
    assert_eq!(opened.plaintext, plaintext);
    Vector {
        pattern: NOISE_PATTERN.into(),
        prologue_hex: hex::encode(&prologue),
        recipient_static_private_hex: hex::encode(prekey.private),
        sealed_body_hex: hex::encode(&hs.noise),
        payload_hex: hex::encode(&payload_bytes),
    }
}

fn generate() -> Vec<Vector> {
    const T0: u64 = 1_767_225_600_000; // 2026-01-01T00:00:00Z
    const DAY: u64 = 86_400_000;
    let alice = identity(0xa1, 1, T0);
    let mut bob = identity(0xb0, 2, T0);
    let carol = identity(0xc0, 3, T0);
    let dave = identity(0xd0, 4, T0);
    let erin = identity(0xe0, 5, T0);

    let mut out = Vec::new();
    // 1. A short text, to the recipient's current prekey.
    out.push(vector(
        &alice,
        &bob,
        &bob.bundle(),
        [0x01; 16],
        T0 + 30 * DAY,
        &text("hello bob".into(), ""),
        T0,
        10,
    ));
    // 2. Another sender, a 2,000-byte text with client metadata.
    out.push(vector(
        &carol,
        &bob,
        &bob.bundle(),
        *b"vector-2-msg-id!",
        T0 + 30 * DAY + 1,
        &text(
            "0123456789".repeat(200),
            r#"{"device":"phone","quote":"abc"}"#,
        ),
        T0 + 5,
        20,
    ));
    // 3. Another recipient, a read receipt.
    out.push(vector(
        &alice,
        &dave,
        &dave.bundle(),
        [0xff; 16],
        u64::MAX,
        &Payload::Receipt(Receipt {
            kind: ReceiptKind::Read,
            ids: vec![MessageId([1; 16]), MessageId([2; 16]), MessageId([3; 16])],
        }),
        T0 + 6,
        30,
    ));
    // 4. Sealed to Bob's prekey 1, opened after Bob rotated: the retired prekey's private key.
    let old_bundle = bob.bundle();
    assert!(bob.maintain_prekeys(
        T0 + 7 * DAY,
        &PrekeyPolicy::default(),
        &mut ChaCha20Rng::seed_from_u64(6)
    ));
    assert_eq!(bob.prekeys().retired_ids(), vec![old_bundle.prekey.id]);
    assert_ne!(bob.bundle().prekey.id, old_bundle.prekey.id);
    out.push(vector(
        &erin,
        &bob,
        &old_bundle,
        [0x04; 16],
        T0 + 37 * DAY,
        &Payload::Media(MediaRef {
            hash: [0x11; 32],
            size: 1_234_567,
            chunk_size: 65_536,
            mime: "image/jpeg".into(),
            name: "holiday.jpg".into(),
            key: [0x22; 32],
            preview: (0..=255).collect(),
            caption: "the beach".into(),
        }),
        T0 + 7 * DAY + 1,
        40,
    ));
    // 5. Bob's new (current) prekey, a 16 KiB text.
    out.push(vector(
        &dave,
        &bob,
        &bob.bundle(),
        [0x05; 16],
        T0 + 40 * DAY,
        &text("ü".repeat(8 * 1024), ""),
        T0 + 8 * DAY,
        50,
    ));
    out
}

#[test]
#[ignore = "writes tests/vectors/sealed.json; run with KITH_WRITE_VECTORS=1"]
fn generate_vectors() {
    let vectors = generate();
    let json = serde_json::to_string_pretty(&vectors).unwrap() + "\n";
    if std::env::var_os("KITH_WRITE_VECTORS").is_some() {
        std::fs::write(path(), json).unwrap();
        eprintln!("wrote {} vectors to {}", vectors.len(), path().display());
    } else {
        eprintln!("set KITH_WRITE_VECTORS=1 to write {}", path().display());
    }
}

fn load() -> Vec<Vector> {
    let text = std::fs::read_to_string(path()).unwrap();
    serde_json::from_str(&text).unwrap()
}

#[test]
fn vectors_open() {
    let vectors = load();
    assert!(vectors.len() >= 4);
    for (i, v) in vectors.iter().enumerate() {
        assert_eq!(v.pattern, "Noise_X_25519_ChaChaPoly_BLAKE2s");
        let prologue = hex::decode(&v.prologue_hex).unwrap();
        let private = hex::decode(&v.recipient_static_private_hex).unwrap();
        let noise = hex::decode(&v.sealed_body_hex).unwrap();
        let expected = hex::decode(&v.payload_hex).unwrap();

        // (a) snow alone opens it to exactly payload_hex.
        let mut hs = snow::Builder::new(v.pattern.parse().unwrap())
            .local_private_key(&private)
            .unwrap()
            .prologue(&prologue)
            .unwrap()
            .build_responder()
            .unwrap();
        let mut payload = vec![0u8; noise.len()];
        let len = hs.read_message(&noise, &mut payload).unwrap();
        payload.truncate(len);
        assert_eq!(payload, expected, "vector {i}");
        assert_eq!(
            noise.len(),
            expected.len() + 96,
            "vector {i}: e + enc(s) + tag + payload + tag"
        );

        // (b) it is a HandshakePayload whose bundle verifies and names the Noise static key.
        let inner: HandshakePayload = codec::decode(&payload).unwrap();
        inner.sender.verify().unwrap();
        assert_eq!(
            inner.sender.static_key.as_slice(),
            hs.get_remote_static().unwrap(),
            "vector {i}"
        );
        inner.plaintext.payload.decode().unwrap();

        // The prologue is a Kith prologue naming a recipient.
        assert!(prologue.starts_with(b"kith-seal/1\0\x01"));
        assert_eq!(
            prologue.len(),
            12 + 1 + 16 + 1 + usize::from(prologue[29]) + 8
        );

        // Any change to the prologue, the key or the body makes it fail.
        let mut bad_prologue = prologue.clone();
        bad_prologue[20] ^= 1;
        let mut hs = snow::Builder::new(v.pattern.parse().unwrap())
            .local_private_key(&private)
            .unwrap()
            .prologue(&bad_prologue)
            .unwrap()
            .build_responder()
            .unwrap();
        assert!(hs
            .read_message(&noise, &mut vec![0u8; noise.len()])
            .is_err());
    }
}

#[test]
fn vectors_are_reproducible() {
    // The file is what the generator produces: sealing is deterministic under seeded RNGs.
    assert_eq!(
        load(),
        generate(),
        "regenerate with KITH_WRITE_VECTORS=1 … generate_vectors"
    );
}

#[test]
fn vectors_cover_a_retired_prekey() {
    // Vector 4 was sealed to Bob's prekey 1 and carries that (by then retired) private key.
    let vectors = load();
    let payload: HandshakePayload =
        codec::decode(&hex::decode(&vectors[0].payload_hex).unwrap()).unwrap();
    let bob_prologue_0 = &vectors[0].prologue_hex;
    let retired = &vectors[3];
    let current = &vectors[4];
    // Same recipient (the prologue's recipient bytes), different prekeys.
    let recipient = |hex_prologue: &str| hex::decode(hex_prologue).unwrap()[29..29 + 39].to_vec();
    assert_eq!(recipient(bob_prologue_0), recipient(&retired.prologue_hex));
    assert_eq!(
        recipient(&retired.prologue_hex),
        recipient(&current.prologue_hex)
    );
    assert_eq!(
        retired.recipient_static_private_hex,
        vectors[0].recipient_static_private_hex
    );
    assert_ne!(
        retired.recipient_static_private_hex,
        current.recipient_static_private_hex
    );
    assert!(payload.sender.verify().is_ok());
}
