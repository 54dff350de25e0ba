//! Test vectors for group chats: `tests/vectors/group.json` (README §20, "Groups").
//!
//! Regenerate with
//! `KITH_WRITE_VECTORS=1 cargo test -p kith-protocol --test group_vectors -- --ignored generate_group_vectors`.
//! `group_vectors_check_independently` recomputes every vector from the README with the
//! `blake2`, `chacha20poly1305` and `libp2p_identity::ed25519` crates and a hand-written
//! encoder (no Kith code on that path); `group_vectors_match_kith` checks that Kith's own
//! functions give the same bytes and accept them; `open_group_vectors.py` checks them with
//! Python's `cryptography` and `hashlib`.
#![allow(clippy::unwrap_used, missing_docs)]

use std::path::PathBuf;

use blake2::{Blake2s256, Digest};
use chacha20poly1305::{aead::Aead, aead::Payload as AeadPayload, ChaCha20Poly1305, KeyInit};
use kith_protocol::{
    codec,
    group::{
        transport_id, GroupChain, GroupChange, GroupId, GroupMessage, GroupState,
        ReceivedSenderKeys, SenderKey, SenderKeyDistribution, SignedGroupState,
    },
    LocalIdentity, MessageId, Payload, Plaintext, Text, UserId,
};
use libp2p_identity::ed25519;
use rand_chacha::ChaCha20Rng;
use rand_core::{RngCore, SeedableRng};
use serde::{Deserialize, Serialize};

#[derive(Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Vectors {
    identities: Vec<Identity>,
    states: Vec<StateVector>,
    sender_key: SenderKeyVector,
    messages: Vec<MessageVector>,
}

#[derive(Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Identity {
    name: String,
    /// The 32-byte Ed25519 secret key (RFC 8032 seed).
    ed25519_secret_hex: String,
    /// The UserId's binary form (38 bytes).
    user_id_hex: String,
}

#[derive(Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StateVector {
    description: String,
    author: String,
    /// bincode(GroupState).
    state_hex: String,
    /// Ed25519 over "kith-group-state/1" ‖ state.
    signature_hex: String,
    /// bincode(SignedGroupState) = state ‖ 0x40 ‖ signature.
    signed_state_hex: String,
    /// BLAKE2s-256("kith-group-digest/1" ‖ signed state).
    digest_hex: String,
}

#[derive(Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SenderKeyVector {
    sender: String,
    group_hex: String,
    key_id: u32,
    iteration: u32,
    chain_key_hex: String,
    /// The chain's Ed25519 secret key (never sent; here so signatures can be reproduced).
    signing_secret_hex: String,
    signing_key_hex: String,
    /// bincode(SenderKeyDistribution).
    distribution_hex: String,
}

#[derive(Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct MessageVector {
    id_hex: String,
    epoch: u64,
    key_id: u32,
    iteration: u32,
    chain_key_hex: String,
    message_key_hex: String,
    next_chain_key_hex: String,
    nonce_hex: String,
    /// bincode(header): the AEAD's AAD, and what the signature covers after the context.
    header_hex: String,
    /// bincode(Plaintext).
    plaintext_hex: String,
    ciphertext_hex: String,
    signature_hex: String,
    /// bincode(GroupMessage): the body of a kind-7 payload.
    message_hex: String,
    transport_ids: Vec<TransportId>,
}

#[derive(Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct TransportId {
    member: String,
    id_hex: String,
}

fn path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/vectors/group.json")
}

const T0: u64 = 1_767_225_600_000; // 2026-01-01T00:00:00Z
const GROUP: [u8; 16] = *b"kith-group-vec-1";
const SENDER_KEY_SEED: u64 = 100;

fn people() -> Vec<(&'static str, [u8; 32], LocalIdentity)> {
    [
        ("alice", 0xa1u8),
        ("bob", 0xb0),
        ("carol", 0xc0),
        ("dave", 0xd0),
    ]
    .into_iter()
    .enumerate()
    .map(|(i, (name, byte))| {
        let rng = &mut ChaCha20Rng::seed_from_u64(i as u64 + 1);
        (
            name,
            [byte; 32],
            LocalIdentity::from_ed25519_secret([byte; 32], T0, rng),
        )
    })
    .collect()
}

fn state_vector(description: &str, author: &str, s: &SignedGroupState) -> StateVector {
    StateVector {
        description: description.into(),
        author: author.into(),
        state_hex: hex::encode(codec::encode(&s.state).unwrap()),
        signature_hex: hex::encode(&s.signature),
        signed_state_hex: hex::encode(codec::encode(s).unwrap()),
        digest_hex: hex::encode(s.digest()),
    }
}

fn plaintext(body: &str, client_meta: &str, sent_at_ms: u64) -> Vec<u8> {
    let payload = Payload::Text(Text {
        body: body.into(),
        client_meta: client_meta.into(),
    });
    codec::encode(&Plaintext::new(&payload, sent_at_ms).unwrap()).unwrap()
}

fn generate() -> Vectors {
    let people = people();
    let (alice, bob) = (&people[0].2, &people[1].2);
    let (carol, dave) = (&people[2].2, &people[3].2);
    let genesis = GroupState::genesis(
        GroupId(GROUP),
        alice.user_id(),
        "friends",
        vec![bob.user_id(), carol.user_id()],
    )
    .unwrap()
    .sign(alice)
    .unwrap();
    let add = genesis
        .state
        .successor(
            genesis.digest(),
            alice.user_id(),
            GroupChange::Add(dave.user_id()),
        )
        .unwrap()
        .sign(alice)
        .unwrap();
    genesis.check_successor(&add).unwrap();

    // Bob's chain 1: 32 bytes of chain key, then 32 bytes of signing secret, from the RNG.
    let mut rng = ChaCha20Rng::seed_from_u64(SENDER_KEY_SEED);
    let (mut chain_key, mut signing_secret) = ([0u8; 32], [0u8; 32]);
    rng.fill_bytes(&mut chain_key);
    rng.fill_bytes(&mut signing_secret);
    let mut key = SenderKey::generate(
        GroupId(GROUP),
        1,
        &mut ChaCha20Rng::seed_from_u64(SENDER_KEY_SEED),
    );
    let d = key.distribution();
    assert_eq!(d.chain_key, chain_key);
    let sender_key = SenderKeyVector {
        sender: "bob".into(),
        group_hex: hex::encode(GROUP),
        key_id: d.key_id,
        iteration: d.iteration,
        chain_key_hex: hex::encode(d.chain_key),
        signing_secret_hex: hex::encode(signing_secret),
        signing_key_hex: hex::encode(d.signing_key),
        distribution_hex: hex::encode(codec::encode(&d).unwrap()),
    };

    let texts = [
        ([0x11u8; 16], plaintext("hello group", "", T0 + 1_000)),
        (
            *b"group-message-2!",
            plaintext(
                "zweite Nachricht: grüße",
                r#"{"reply_to":"11"}"#,
                T0 + 2_000,
            ),
        ),
    ];
    let mut messages = Vec::new();
    let mut chain = d.chain_key;
    for (id, plain) in texts {
        let iteration = key.iteration;
        let m = key
            .seal(&bob.user_id(), MessageId(id), add.epoch(), &plain)
            .unwrap();
        let mut signed_header = m.signed_bytes(&bob.user_id()).unwrap();
        signed_header.truncate(signed_header.len() - m.ciphertext.len());
        let header = signed_header[b"kith-group-msg/1".len()..].to_vec();
        let mut nonce = [0u8; 12];
        nonce[..4].copy_from_slice(&iteration.to_le_bytes());
        let transport_ids = [("alice", alice), ("carol", carol), ("dave", dave)]
            .into_iter()
            .map(|(name, who)| TransportId {
                member: name.into(),
                id_hex: hex::encode(transport_id(&m.id, &who.user_id()).0),
            })
            .collect();
        messages.push(MessageVector {
            id_hex: hex::encode(id),
            epoch: m.epoch,
            key_id: m.key_id,
            iteration: m.iteration,
            chain_key_hex: hex::encode(chain),
            message_key_hex: hex::encode(kdf(b"kith-sk-message/1", &chain)),
            next_chain_key_hex: hex::encode(kdf(b"kith-sk-chain/1", &chain)),
            nonce_hex: hex::encode(nonce),
            header_hex: hex::encode(header),
            plaintext_hex: hex::encode(&plain),
            ciphertext_hex: hex::encode(&m.ciphertext),
            signature_hex: hex::encode(&m.signature),
            message_hex: hex::encode(codec::encode(&m).unwrap()),
            transport_ids,
        });
        chain = kdf(b"kith-sk-chain/1", &chain);
    }

    Vectors {
        identities: people
            .iter()
            .map(|(name, secret, me)| Identity {
                name: (*name).into(),
                ed25519_secret_hex: hex::encode(secret),
                user_id_hex: hex::encode(me.user_id().to_bytes()),
            })
            .collect(),
        states: vec![
            state_vector(
                "genesis: alice creates \"friends\" with bob and carol",
                "alice",
                &genesis,
            ),
            state_vector("epoch 1: alice adds dave", "alice", &add),
        ],
        sender_key,
        messages,
    }
}

#[test]
#[ignore = "writes tests/vectors/group.json; run with KITH_WRITE_VECTORS=1"]
fn generate_group_vectors() {
    let json = serde_json::to_string_pretty(&generate()).unwrap() + "\n";
    if std::env::var_os("KITH_WRITE_VECTORS").is_some() {
        std::fs::write(path(), json).unwrap();
        eprintln!("wrote {}", path().display());
    } else {
        eprintln!("set KITH_WRITE_VECTORS=1 to write {}", path().display());
    }
}

fn load() -> Vectors {
    serde_json::from_str(&std::fs::read_to_string(path()).unwrap()).unwrap()
}

fn unhex(s: &str) -> Vec<u8> {
    hex::decode(s).unwrap()
}

fn unhex32(s: &str) -> [u8; 32] {
    unhex(s).try_into().unwrap()
}

// ---- Independent code: the README's rules, with the primitives' crates only ----

/// BLAKE2s-256(label ‖ input), unkeyed.
fn kdf(label: &[u8], input: &[u8]) -> [u8; 32] {
    let mut h = Blake2s256::new();
    h.update(label);
    h.update(input);
    h.finalize().into()
}

/// bincode 2 `standard()` varint (README §1).
fn varint(n: u64, out: &mut Vec<u8>) {
    match n {
        0..=250 => out.push(n as u8),
        251..=0xffff => {
            out.push(251);
            out.extend_from_slice(&(n as u16).to_le_bytes());
        }
        0x1_0000..=0xffff_ffff => {
            out.push(252);
            out.extend_from_slice(&(n as u32).to_le_bytes());
        }
        _ => {
            out.push(253);
            out.extend_from_slice(&n.to_le_bytes());
        }
    }
}

/// A byte string or `String`: varint length ‖ bytes.
fn bytes(b: &[u8], out: &mut Vec<u8>) {
    varint(b.len() as u64, out);
    out.extend_from_slice(b);
}

struct People(Vec<(String, [u8; 32], Vec<u8>)>);

impl People {
    fn id(&self, name: &str) -> Vec<u8> {
        self.0.iter().find(|p| p.0 == name).unwrap().2.clone()
    }
    /// The Ed25519 public key inside a UserId's binary form (README §2).
    fn public(&self, name: &str) -> ed25519::PublicKey {
        let id = self.id(name);
        assert_eq!(id.len(), 38);
        assert_eq!(id[..6], [0x00, 0x24, 0x08, 0x01, 0x12, 0x20]);
        ed25519::PublicKey::try_from_bytes(&id[6..]).unwrap()
    }
}

fn public_of(secret: [u8; 32]) -> [u8; 32] {
    let mut s = secret;
    let pair = ed25519::Keypair::from(ed25519::SecretKey::try_from_bytes(&mut s).unwrap());
    pair.public().to_bytes()
}

/// bincode(GroupState) built by hand: group [16] ‖ epoch ‖ parent [32] ‖ author ‖ change
/// (variant ‖ field) ‖ name ‖ members ‖ admins.
fn state_bytes(
    epoch: u64,
    parent: &[u8; 32],
    author: &[u8],
    change: &[u8],
    name: &str,
    members: &[Vec<u8>],
    admins: &[Vec<u8>],
) -> Vec<u8> {
    let mut out = GROUP.to_vec();
    varint(epoch, &mut out);
    out.extend_from_slice(parent);
    bytes(author, &mut out);
    out.extend_from_slice(change);
    bytes(name.as_bytes(), &mut out);
    for list in [members, admins] {
        let mut sorted = list.to_vec();
        sorted.sort();
        varint(sorted.len() as u64, &mut out);
        for id in &sorted {
            bytes(id, &mut out);
        }
    }
    out
}

#[test]
fn group_vectors_check_independently() {
    let v = load();
    let people = People(
        v.identities
            .iter()
            .map(|i| {
                (
                    i.name.clone(),
                    unhex32(&i.ed25519_secret_hex),
                    unhex(&i.user_id_hex),
                )
            })
            .collect(),
    );
    for (name, secret, id) in &people.0 {
        assert_eq!(
            id[6..],
            public_of(*secret),
            "{name}'s user id names its key"
        );
    }
    let [alice, bob, carol, dave] = ["alice", "bob", "carol", "dave"].map(|n| people.id(n));

    // The states: layout, signature by the author's identity key, digest, parent link.
    assert_eq!(v.states.len(), 2);
    let mut add_dave = vec![1u8]; // GroupChange::Add = variant 1
    bytes(&dave, &mut add_dave);
    let expected = [
        state_bytes(
            0,
            &[0; 32],
            &alice,
            &[0], // Create = variant 0
            "friends",
            &[alice.clone(), bob.clone(), carol.clone()],
            std::slice::from_ref(&alice),
        ),
        state_bytes(
            1,
            &unhex32(&v.states[0].digest_hex),
            &alice,
            &add_dave,
            "friends",
            &[alice.clone(), bob.clone(), carol.clone(), dave.clone()],
            std::slice::from_ref(&alice),
        ),
    ];
    for (s, expected) in v.states.iter().zip(expected) {
        let state = unhex(&s.state_hex);
        assert_eq!(state, expected, "{}", s.description);
        let signature = unhex(&s.signature_hex);
        let signed_input = [b"kith-group-state/1".as_slice(), &state].concat();
        assert!(people.public(&s.author).verify(&signed_input, &signature));
        let mut flipped = signed_input.clone();
        flipped[20] ^= 1;
        assert!(!people.public(&s.author).verify(&flipped, &signature));
        let mut signed = state.clone();
        bytes(&signature, &mut signed);
        assert_eq!(signed, unhex(&s.signed_state_hex));
        assert_eq!(kdf(b"kith-group-digest/1", &signed), unhex32(&s.digest_hex));
    }

    // The sender key: a signing key made from its secret, a distribution laid out as stated.
    let k = &v.sender_key;
    let signing_key = public_of(unhex32(&k.signing_secret_hex));
    assert_eq!(hex::encode(signing_key), k.signing_key_hex);
    let mut distribution = unhex(&k.group_hex);
    varint(k.key_id.into(), &mut distribution);
    varint(k.iteration.into(), &mut distribution);
    distribution.extend_from_slice(&unhex(&k.chain_key_hex));
    distribution.extend_from_slice(&signing_key);
    assert_eq!(distribution, unhex(&k.distribution_hex));

    // The messages: chain, keys, nonce, header, AEAD, signature, layout, transport ids.
    assert_eq!(v.messages.len(), 2);
    let mut chain = unhex32(&k.chain_key_hex);
    let signer = ed25519::PublicKey::try_from_bytes(&signing_key).unwrap();
    for (i, m) in v.messages.iter().enumerate() {
        assert_eq!(m.iteration, k.iteration + i as u32);
        assert_eq!(hex::encode(chain), m.chain_key_hex, "message {i}");
        let key = kdf(b"kith-sk-message/1", &chain);
        assert_eq!(hex::encode(key), m.message_key_hex);
        chain = kdf(b"kith-sk-chain/1", &chain);
        assert_eq!(hex::encode(chain), m.next_chain_key_hex);
        let mut nonce = m.iteration.to_le_bytes().to_vec();
        nonce.extend_from_slice(&[0; 8]);
        assert_eq!(hex::encode(&nonce), m.nonce_hex);

        let id = unhex(&m.id_hex);
        let mut header = unhex(&k.group_hex);
        header.extend_from_slice(&id);
        varint(m.epoch, &mut header);
        varint(m.key_id.into(), &mut header);
        varint(m.iteration.into(), &mut header);
        bytes(&bob, &mut header);
        assert_eq!(hex::encode(&header), m.header_hex, "message {i}");

        let ciphertext = unhex(&m.ciphertext_hex);
        let plain = ChaCha20Poly1305::new((&key).into())
            .decrypt(
                nonce.as_slice().into(),
                AeadPayload {
                    msg: &ciphertext,
                    aad: &header,
                },
            )
            .unwrap();
        assert_eq!(plain, unhex(&m.plaintext_hex));
        let signature = unhex(&m.signature_hex);
        let signed = [b"kith-group-msg/1".as_slice(), &header, &ciphertext].concat();
        assert!(signer.verify(&signed, &signature), "message {i}");
        // Another sender's id in the header breaks both the signature and the AEAD.
        let mut as_carol = header[..header.len() - 39].to_vec();
        bytes(&carol, &mut as_carol);
        let forged = [b"kith-group-msg/1".as_slice(), &as_carol, &ciphertext].concat();
        assert!(!signer.verify(&forged, &signature));

        let mut message = header[..header.len() - 39].to_vec();
        bytes(&ciphertext, &mut message);
        bytes(&signature, &mut message);
        assert_eq!(message, unhex(&m.message_hex));

        for t in &m.transport_ids {
            let full = kdf(
                b"kith-group-transport/1",
                &[id.clone(), people.id(&t.member)].concat(),
            );
            assert_eq!(hex::encode(&full[..16]), t.id_hex);
        }
    }
}

#[test]
fn group_vectors_match_kith() {
    let v = load();
    let ids: Vec<UserId> = v
        .identities
        .iter()
        .map(|i| UserId::from_bytes(&unhex(&i.user_id_hex)).unwrap())
        .collect();
    let (bob, dave) = (ids[1], ids[3]);

    let states: Vec<SignedGroupState> = v
        .states
        .iter()
        .map(|s| codec::decode(&unhex(&s.signed_state_hex)).unwrap())
        .collect();
    for (s, signed) in v.states.iter().zip(&states) {
        signed.verify().unwrap();
        assert_eq!(
            hex::encode(codec::encode(&signed.state).unwrap()),
            s.state_hex
        );
        assert_eq!(hex::encode(signed.digest()), s.digest_hex);
    }
    states[0].verify_standalone(&bob).unwrap();
    states[1].verify_standalone(&dave).unwrap();
    let mut chain = GroupChain::new(states[0].clone());
    chain.offer(states[1].clone()).unwrap();
    assert_eq!(chain.head(), &states[1]);

    let d: SenderKeyDistribution = codec::decode(&unhex(&v.sender_key.distribution_hex)).unwrap();
    let mine = SenderKey::generate(
        GroupId(GROUP),
        1,
        &mut ChaCha20Rng::seed_from_u64(SENDER_KEY_SEED),
    );
    assert_eq!(mine.distribution(), d);
    let mut at_dave = ReceivedSenderKeys::default();
    at_dave.learn(&d);
    for m in &v.messages {
        let msg: GroupMessage = codec::decode(&unhex(&m.message_hex)).unwrap();
        assert_eq!(hex::encode(&msg.ciphertext), m.ciphertext_hex);
        assert_eq!(at_dave.open(&bob, &msg).unwrap(), unhex(&m.plaintext_hex));
        let plain: Plaintext = codec::decode(&unhex(&m.plaintext_hex)).unwrap();
        assert!(matches!(plain.payload.decode().unwrap(), Payload::Text(_)));
        let raw = Payload::GroupMessage(Box::new(msg.clone()))
            .to_raw()
            .unwrap();
        assert_eq!(
            (raw.kind, hex::encode(&raw.body)),
            (7, m.message_hex.clone())
        );
        for t in &m.transport_ids {
            let member = ids[v
                .identities
                .iter()
                .position(|i| i.name == t.member)
                .unwrap()];
            assert_eq!(hex::encode(transport_id(&msg.id, &member).0), t.id_hex);
        }
    }
}

#[test]
fn group_vectors_are_reproducible() {
    assert_eq!(
        load(),
        generate(),
        "regenerate with KITH_WRITE_VECTORS=1 … generate_group_vectors"
    );
}
