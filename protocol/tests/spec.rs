//! protocol/README.md, implemented from the text alone: decodes envelopes byte by byte, opens
//! a first message with snow, derives the session keys with BLAKE2s and opens the session
//! messages with ChaCha20-Poly1305, without calling any of Kith's sealing code.
#![allow(clippy::unwrap_used, missing_docs)]

mod common;

use blake2::{digest::Mac, Blake2sMac256};
use chacha20poly1305::{aead::Aead, aead::Payload as AeadPayload, ChaCha20Poly1305, KeyInit};
use common::{text, User};
use kith_protocol::{frame, wire::MsgFrame, Envelope, Payload, Plaintext, Text};

/// bincode 2 `standard()` as the README describes it.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> &'a [u8] {
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        a
    }
    fn u8(&mut self) -> u8 {
        self.take(1)[0]
    }
    fn varint(&mut self) -> u64 {
        match self.u8() {
            b @ 0..=250 => u64::from(b),
            251 => u64::from(u16::from_le_bytes(self.take(2).try_into().unwrap())),
            252 => u64::from(u32::from_le_bytes(self.take(4).try_into().unwrap())),
            253 => u64::from_le_bytes(self.take(8).try_into().unwrap()),
            t => panic!("varint tag {t}"),
        }
    }
    fn bytes(&mut self) -> &'a [u8] {
        let n = self.varint() as usize;
        self.take(n)
    }
    fn array<const N: usize>(&mut self) -> [u8; N] {
        self.take(N).try_into().unwrap()
    }
}

fn blake2s_keyed(key: &[u8; 32], label: u8) -> [u8; 32] {
    let mut mac = <Blake2sMac256 as Mac>::new_from_slice(key).unwrap();
    mac.update(&[label]);
    mac.finalize().into_bytes().into()
}

struct ParsedEnvelope {
    prologue: Vec<u8>,
    body: Body,
}

enum Body {
    Handshake {
        prekey_id: u32,
        noise: Vec<u8>,
    },
    Session {
        session: [u8; 16],
        n: u64,
        ciphertext: Vec<u8>,
    },
}

fn parse_envelope(bytes: &[u8]) -> ParsedEnvelope {
    let mut r = Reader(bytes);
    let version = r.u8();
    let id: [u8; 16] = r.array();
    let recipient = r.bytes().to_vec();
    let expires = r.varint();
    // Prologue: "kith-seal/1\0" ‖ version ‖ id ‖ len(recipient) ‖ recipient ‖ expires BE.
    let mut prologue = b"kith-seal/1\0".to_vec();
    prologue.push(version);
    prologue.extend_from_slice(&id);
    prologue.push(recipient.len() as u8);
    prologue.extend_from_slice(&recipient);
    prologue.extend_from_slice(&expires.to_be_bytes());
    let body = match r.varint() {
        0 => Body::Handshake {
            prekey_id: r.varint() as u32,
            noise: r.bytes().to_vec(),
        },
        1 => Body::Session {
            session: r.array(),
            n: r.varint(),
            ciphertext: r.bytes().to_vec(),
        },
        v => panic!("SealedBody variant {v}"),
    };
    assert!(r.0.is_empty(), "trailing bytes");
    ParsedEnvelope { prologue, body }
}

/// Plaintext { sent_at_ms, RawPayload { kind, body } } with a Text body → (sent_at, text, meta).
fn parse_text_plaintext(r: &mut Reader) -> (u64, String, String) {
    let sent_at = r.varint();
    assert_eq!(r.varint(), 1, "kind 1 = text");
    let body = r.bytes();
    let mut t = Reader(body);
    let text = String::from_utf8(t.bytes().to_vec()).unwrap();
    let meta = String::from_utf8(t.bytes().to_vec()).unwrap();
    assert!(t.0.is_empty());
    (sent_at, text, meta)
}

#[test]
fn readme_is_enough_to_open_a_conversation() {
    let (mut alice, bob) = (User::new(21), User::new(22));
    let texts = ["first", "second", "third", "fourth"];
    let envs: Vec<Envelope> = texts
        .iter()
        .map(|t| alice.seal(&bob.bundle(), &text(t)))
        .collect();

    // 1. The first message: a Noise X handshake to Bob's prekey.
    let first = parse_envelope(&envs[0].to_bytes().unwrap());
    assert_eq!(first.prologue, envs[0].header.prologue());
    let Body::Handshake { prekey_id, noise } = &first.body else {
        panic!("handshake first")
    };
    let prekey = bob.me.prekeys().find(*prekey_id).unwrap();
    let mut hs = snow::Builder::new("Noise_X_25519_ChaChaPoly_BLAKE2s".parse().unwrap())
        .local_private_key(&prekey.private)
        .unwrap()
        .prologue(&first.prologue)
        .unwrap()
        .build_responder()
        .unwrap();
    let mut payload = vec![0u8; noise.len()];
    let len = hs.read_message(noise, &mut payload).unwrap();
    payload.truncate(len);
    let rs = hs.get_remote_static().unwrap().to_vec();

    // HandshakePayload: KeyBundle, chain seed, Plaintext.
    let mut r = Reader(&payload);
    let user = r.bytes().to_vec();
    let identity_key: [u8; 32] = r.array();
    let static_key: [u8; 32] = r.array();
    let bundle_prekey_id = r.varint();
    let bundle_created = r.varint();
    let bundle_prekey: [u8; 32] = r.array();
    assert_eq!(r.varint(), 0, "no mailbox store peers named in this test");
    let issued_at = r.varint();
    let signature = r.bytes().to_vec();
    let seed: [u8; 32] = r.array();
    let (sent_at, body, meta) = parse_text_plaintext(&mut r);
    assert!(r.0.is_empty());
    assert_eq!((body.as_str(), meta.as_str()), ("first", ""));
    assert_eq!(sent_at, 1_700_000_000_000);
    assert_eq!(
        static_key.as_slice(),
        rs.as_slice(),
        "bundle static = Noise rs"
    );
    assert_eq!(
        user,
        [&[0x00, 0x24, 0x08, 0x01, 0x12, 0x20][..], &identity_key].concat()
    );
    assert_eq!(user, alice.id().to_bytes());
    // Bundle signature: "kith-bundle/2\0" ‖ bincode(user, identity_key, static_key, prekey,
    // mailboxes, issued_at_ms).
    let mut signed = b"kith-bundle/2\0".to_vec();
    signed.push(user.len() as u8);
    signed.extend_from_slice(&user);
    signed.extend_from_slice(&identity_key);
    signed.extend_from_slice(&static_key);
    signed.push(bundle_prekey_id as u8);
    assert!(bundle_created < 251);
    signed.push(bundle_created as u8);
    signed.extend_from_slice(&bundle_prekey);
    signed.push(0);
    assert_eq!(issued_at, bundle_created);
    signed.push(issued_at as u8);
    let key = libp2p_identity::ed25519::PublicKey::try_from_bytes(&identity_key).unwrap();
    assert!(key.verify(&signed, &signature));

    // 2. The session: id = first 16 bytes of BLAKE2s(key = seed, 0x00); chain key 0 = seed.
    let session_id = &blake2s_keyed(&seed, 0x00)[..16];
    let mut chain = seed;
    for (i, env) in envs.iter().enumerate().skip(1) {
        let parsed = parse_envelope(&env.to_bytes().unwrap());
        let Body::Session {
            session,
            n,
            ciphertext,
        } = &parsed.body
        else {
            panic!("session message")
        };
        assert_eq!(session.as_slice(), session_id);
        assert_eq!(*n, i as u64 - 1);
        let message_key = blake2s_keyed(&chain, 0x01);
        chain = blake2s_keyed(&chain, 0x02);
        let mut aad = parsed.prologue.clone();
        aad.extend_from_slice(session);
        aad.extend_from_slice(&n.to_be_bytes());
        let cipher = ChaCha20Poly1305::new((&message_key).into());
        let plain = cipher
            .decrypt(
                &[0u8; 12].into(),
                AeadPayload {
                    msg: ciphertext,
                    aad: &aad,
                },
            )
            .unwrap();
        let mut r = Reader(&plain);
        let (_, body, _) = parse_text_plaintext(&mut r);
        assert!(r.0.is_empty());
        assert_eq!(body, texts[i]);
    }
}

#[test]
fn readme_frame_layout() {
    let mut alice = User::new(23);
    let bob = User::new(24);
    let env = alice.seal(&bob.bundle(), &text("x"));
    let mut buf = Vec::new();
    frame::encode(&MsgFrame::Envelope(env.clone()), &mut buf).unwrap();
    // 4-byte big-endian length, then bincode(MsgFrame): variant 0 = Envelope, then the envelope.
    let len = u32::from_be_bytes(buf[..4].try_into().unwrap()) as usize;
    assert_eq!(len, buf.len() - 4);
    assert_eq!(buf[4], 0);
    assert_eq!(&buf[5..], env.to_bytes().unwrap().as_slice());
    let _ = parse_envelope(&buf[5..]);
}

#[test]
fn readme_plaintext_layout() {
    let pt = Plaintext::new(
        &Payload::Text(Text {
            body: "é".into(),
            client_meta: String::new(),
        }),
        70_000,
    )
    .unwrap();
    // 70,000 ≥ 2^16: tag 252 and a u32. Kind 1. Body: bincode(Text) = [2, c3 a9, 0], 4 bytes.
    let bytes = kith_protocol::codec::encode(&pt).unwrap();
    assert_eq!(
        bytes,
        [
            &[252u8][..],
            &70_000u32.to_le_bytes(),
            &[1, 4, 2, 0xc3, 0xa9, 0]
        ]
        .concat()
    );
}
