//! Seed inputs for every target: valid encodings of each format (and a few near misses), so
//! the fuzzer starts from deep inside the decoders instead of discovering the formats byte by
//! byte. Written by `cargo run --bin kith-fuzz-seeds -- <dir>` (scripts/fuzz.sh).

use kith_protocol::{
    blob::{self, BlobLayout},
    codec, frame,
    mailbox::{EnvelopeRef, MailboxRequest, MailboxResponse, RefuseReason},
    media::{HaveState, MediaRefusal, MediaRequest, MediaResponse},
    payload::{ContactCard, MediaRef, Receipt, ReceiptKind},
    seal::{HandshakeBody, SessionBody, SessionId},
    wire::{MsgFrame, RejectReason},
    BlobHash, BlobKey, Envelope, EnvelopeHeader, KeyBundle, LocalIdentity, MailboxAccessKey,
    MailboxPeer, MailboxRegistration, MessageId, Payload, Plaintext, PresenceRecord, SealedBody,
    SessionPolicy, Visibility,
};
use rand_chacha::{rand_core::SeedableRng, ChaCha20Rng};
use serde::Serialize;

use crate::protocol::{header_for, parties, text};

fn framed<T: Serialize>(values: &[T]) -> Vec<u8> {
    let mut out = Vec::new();
    for v in values {
        frame::encode(v, &mut out).expect("a seed frames");
    }
    out
}

fn tagged(tag: u8, bytes: Vec<u8>) -> Vec<u8> {
    let mut out = vec![tag];
    out.extend(bytes);
    out
}

/// Real envelopes from alice to bob: the handshake that started their session, then session
/// messages 0..3, then a handshake to a prekey bob does not have.
fn envelopes() -> Vec<Envelope> {
    let p = parties();
    let mut alice = p.alice_sessions.clone();
    let mut rng = ChaCha20Rng::seed_from_u64(9);
    let bundle = p.bob.bundle();
    let mut out = Vec::new();
    let mut fresh = kith_protocol::PeerSessions::default();
    let header = header_for(&p.bob, 1);
    let body = fresh
        .seal(
            &p.alice,
            &bundle,
            &header,
            &text("hi"),
            2_000,
            &SessionPolicy::default(),
            &mut rng,
        )
        .expect("seals");
    out.push(Envelope { header, body });
    for id in 2..5u8 {
        let header = header_for(&p.bob, id);
        let body = alice
            .seal(
                &p.alice,
                &bundle,
                &header,
                &text("more"),
                3_000,
                &SessionPolicy::default(),
                &mut rng,
            )
            .expect("seals");
        out.push(Envelope { header, body });
    }
    out.push(Envelope {
        header: header_for(&p.alice, 9),
        body: SealedBody::Session(SessionBody {
            session: SessionId([5; 16]),
            n: 3,
            ciphertext: vec![1; 40],
        }),
    });
    out.push(Envelope {
        header: EnvelopeHeader::new(MessageId([8; 16]), p.bob.user_id(), 0),
        body: SealedBody::Handshake(HandshakeBody {
            prekey_id: 77,
            noise: vec![2; 120],
        }),
    });
    out
}

fn access_key() -> MailboxAccessKey {
    MailboxAccessKey([0x42; 32])
}

/// Bob's registration naming alice's node and a third peer as his store peers.
fn registration() -> MailboxRegistration {
    let p = parties();
    let third = LocalIdentity::generate(0, &mut ChaCha20Rng::seed_from_u64(4)).user_id();
    MailboxRegistration::new(&p.bob, vec![p.alice.user_id(), third], &access_key(), 5_000)
}

/// Bob's bundle naming two store peers with addresses.
fn bundle_with_mailboxes() -> KeyBundle {
    let p = parties();
    let mut bob = LocalIdentity::from_bytes(&p.bob.to_bytes().expect("encodes")).expect("loads");
    let peers = vec![
        MailboxPeer {
            peer: p.alice.user_id(),
            addrs: vec!["/ip4/127.0.0.1/tcp/4001".into()],
        },
        MailboxPeer {
            peer: LocalIdentity::generate(0, &mut ChaCha20Rng::seed_from_u64(4)).user_id(),
            addrs: vec![],
        },
    ];
    bob.set_mailboxes(peers, 6_000).expect("within the limits");
    bob.bundle()
}

fn presence_records() -> Vec<PresenceRecord> {
    let p = parties();
    vec![
        PresenceRecord::sign(&p.bob, 1, 5_000, true, Visibility::Everyone),
        PresenceRecord::sign(&p.alice, 7, 9_000, false, Visibility::Contacts),
        PresenceRecord::sign(&p.alice, 8, 9_000, false, Visibility::Nobody),
    ]
}

fn payloads() -> Vec<Plaintext> {
    let media = MediaRef {
        hash: [3; 32],
        size: 200_000,
        chunk_size: 65_536,
        mime: "image/png".into(),
        name: "cat.png".into(),
        key: [4; 32],
        preview: vec![9; 64],
        caption: "a cat".into(),
    };
    let receipt = Receipt {
        kind: ReceiptKind::Read,
        ids: vec![MessageId([1; 16]), MessageId([2; 16])],
    };
    let card = ContactCard {
        bundle: bundle_with_mailboxes(),
        access: access_key(),
    };
    let mut out = vec![text("hello, world")];
    for payload in [
        Payload::Media(media),
        Payload::Receipt(receipt),
        Payload::ContactCard(Box::new(card)),
    ] {
        out.push(Plaintext::new(&payload, 123).expect("valid"));
    }
    out
}

fn refs() -> Vec<EnvelopeRef> {
    envelopes()
        .iter()
        .map(|e| EnvelopeRef {
            id: e.id(),
            digest: e.digest().expect("digest"),
        })
        .collect()
}

fn media_frames() -> Vec<Vec<u8>> {
    let p = parties();
    let hash = BlobHash([6; 32]);
    let key = BlobKey([7; 32]);
    let layout = BlobLayout::new(3000, 1024).expect("layout");
    let chunk = blob::seal_chunk(&key, &layout, 0, &[5; 1024]).expect("seals");
    let requests = [
        MediaRequest::Have { hash },
        MediaRequest::Get {
            hash,
            first: 0,
            count: 16,
        },
        MediaRequest::Put {
            mailbox: p.bob.user_id(),
            hash,
            size: 3000,
            chunk_size: 1024,
            expires_ms: 9_000_000,
        },
        MediaRequest::Chunk {
            hash,
            index: 0,
            bytes: chunk.clone(),
        },
        MediaRequest::Delete { hash },
    ];
    let responses = [
        MediaResponse::Have {
            hash,
            state: HaveState::Partial { chunks: 2 },
        },
        MediaResponse::Have {
            hash,
            state: HaveState::Complete,
        },
        MediaResponse::Chunk {
            hash,
            index: 1,
            bytes: chunk.clone(),
        },
        MediaResponse::PutAccepted {
            hash,
            next_index: 1,
        },
        MediaResponse::ChunkAck {
            hash,
            next_index: 2,
        },
        MediaResponse::Complete { hash },
        MediaResponse::Deleted { hash },
        MediaResponse::Refused {
            hash,
            reason: MediaRefusal::NotFound,
        },
    ];
    let mut out: Vec<Vec<u8>> = requests
        .iter()
        .map(|r| tagged(0, framed(&[r.clone()])))
        .collect();
    out.extend(responses.iter().map(|r| tagged(1, framed(&[r.clone()]))));
    let mut blob_input = layout.cipher_size().to_le_bytes().to_vec();
    blob_input.extend(1024u32.to_le_bytes());
    blob_input.extend(0u64.to_le_bytes());
    blob_input.extend(&chunk);
    out.push(tagged(2, blob_input));
    out.push(tagged(3, hash.to_hex().into_bytes()));
    out
}

/// Every target's seeds, by target name.
pub fn seeds() -> Vec<(&'static str, Vec<Vec<u8>>)> {
    let p = parties();
    let envs = envelopes();
    let env_bytes: Vec<Vec<u8>> = envs
        .iter()
        .map(|e| e.to_bytes().expect("encodes"))
        .collect();
    let presence = presence_records();
    let msg_frames = vec![
        framed(&[MsgFrame::Envelope(envs[0].clone())]),
        framed(&[
            MsgFrame::Envelope(envs[1].clone()),
            MsgFrame::Ack(vec![MessageId([1; 16]), MessageId([2; 16])]),
        ]),
        framed(&[MsgFrame::Reject(MessageId([3; 16]), RejectReason::Busy)]),
        framed(&[MsgFrame::Presence(presence[0].clone())]),
    ];
    let requests = vec![
        MailboxRequest::Deposit(envs[0].clone(), None),
        MailboxRequest::Deposit(envs[1].clone(), Some(access_key())),
        MailboxRequest::Register(registration()),
        MailboxRequest::Subscribe,
        MailboxRequest::Delete(refs()),
        MailboxRequest::Presence(presence[1].clone()),
        MailboxRequest::GetPresence(p.alice.user_id(), None),
        MailboxRequest::GetPresence(p.alice.user_id(), Some(access_key())),
        MailboxRequest::Replicate {
            envelopes: envs[1..3].to_vec(),
            requests: envs[..1].to_vec(),
        },
    ];
    let responses = vec![
        MailboxResponse::Stored(MessageId([1; 16])),
        MailboxResponse::Refused(MessageId([2; 16]), RefuseReason::MailboxFull),
        MailboxResponse::Refused(MessageId([3; 16]), RefuseReason::NotNamed),
        MailboxResponse::Deliver(envs.clone()),
        MailboxResponse::Presence(p.bob.user_id(), Some(presence[0].clone())),
        MailboxResponse::Presence(p.bob.user_id(), None),
        MailboxResponse::Replicated(refs()),
    ];
    let mut mailbox: Vec<Vec<u8>> = requests
        .iter()
        .map(|r| tagged(0, framed(&[r.clone()])))
        .collect();
    mailbox.push(tagged(0, framed(&requests)));
    mailbox.extend(responses.iter().map(|r| tagged(1, framed(&[r.clone()]))));
    let mut seal: Vec<Vec<u8>> = env_bytes.iter().map(|b| tagged(0, b.clone())).collect();
    let handshake_payload = kith_protocol::seal::HandshakePayload {
        sender: p.alice.bundle(),
        chain_seed: [1; 32],
        plaintext: text("inside"),
    };
    seal.push(tagged(
        1,
        codec::encode(&handshake_payload).expect("encodes"),
    ));
    let key_bundle = vec![
        tagged(0, codec::encode(&p.alice.bundle()).expect("encodes")),
        tagged(0, codec::encode(&bundle_with_mailboxes()).expect("encodes")),
        tagged(2, codec::encode(&registration()).expect("encodes")),
        tagged(1, p.bob.user_id().to_bytes()),
        tagged(1, p.bob.user_id().to_string().into_bytes()),
        tagged(2, p.bob.to_bytes().expect("encodes")),
    ];
    let mut batch_seed = vec![16u8];
    batch_seed.extend((64u64 * 1024).to_le_bytes());
    batch_seed.push(128);
    for len in [100u32, 5_000, 60_000, 1_000_000, 7] {
        batch_seed.extend(&len.to_be_bytes()[1..]);
    }
    vec![
        ("msg_frame", msg_frames),
        ("mailbox", mailbox),
        ("media", media_frames()),
        ("envelope", env_bytes),
        ("seal", seal),
        (
            "payload",
            payloads()
                .iter()
                .map(|p| codec::encode(p).expect("encodes"))
                .collect(),
        ),
        (
            "presence",
            presence
                .iter()
                .map(|r| codec::encode(r).expect("encodes"))
                .collect(),
        ),
        ("key_bundle", key_bundle),
        ("batch", vec![batch_seed]),
    ]
}

/// The node targets' seeds: invites and the node's stored records.
#[cfg(feature = "node")]
pub fn node_seeds() -> Vec<(&'static str, Vec<Vec<u8>>)> {
    use kith_node::{
        invite::Invite,
        media::{MediaRecord, MediaState},
        store::{Contact, OutboxEntry, StoredMessage},
    };
    use kith_protocol::DeliveryStatus;

    let p = parties();
    let addr = "/ip4/127.0.0.1/tcp/4001".parse().expect("an address");
    let invite = Invite::new(p.alice.bundle(), &[addr]);
    let with_access = invite.clone().with_access(access_key());
    let invites = vec![
        tagged(0, invite.encode().expect("encodes").into_bytes()),
        tagged(1, codec::encode(&invite).expect("encodes")),
        tagged(1, codec::encode(&with_access).expect("encodes")),
        tagged(0, b"kith:3yZe7d".to_vec()),
    ];
    let message = StoredMessage {
        id: MessageId([1; 16]),
        peer: p.alice.user_id(),
        outgoing: false,
        text: "hello".into(),
        client_meta: "{}".into(),
        sent_at_ms: 1,
        stored_at_ms: 2,
        status: DeliveryStatus::Delivered,
        media: Some(BlobHash([3; 32])),
    };
    let contact = Contact {
        user: p.alice.user_id(),
        name: "alice".into(),
        bundle: bundle_with_mailboxes(),
        addrs: vec![vec![4, 127, 0, 0, 1]],
        added_at_ms: 5,
        access: Some(access_key()),
    };
    let outbox = OutboxEntry {
        seq: 9,
        id: MessageId([2; 16]),
        to: p.bob.user_id(),
        plaintext: text("queued"),
        expires_at_ms: 99,
        tracked: true,
    };
    let media = MediaRecord {
        hash: BlobHash([6; 32]),
        key: [7; 32],
        size: 3000,
        chunk_size: 1024,
        mime: "image/png".into(),
        name: "cat.png".into(),
        preview: vec![1, 2, 3],
        message: MessageId([1; 16]),
        peer: p.alice.user_id(),
        outgoing: false,
        state: MediaState::Downloading,
        done_chunks: 1,
        holders: vec![p.alice.user_id().to_bytes()],
        expires_at_ms: 77,
    };
    let store = vec![
        tagged(0, codec::encode(&message).expect("encodes")),
        tagged(1, codec::encode(&contact).expect("encodes")),
        tagged(2, codec::encode(&outbox).expect("encodes")),
        tagged(3, codec::encode(&media).expect("encodes")),
        tagged(4, codec::encode(&p.bob_sessions).expect("encodes")),
        tagged(5, p.bob.to_bytes().expect("encodes")),
    ];
    vec![("invite", invites), ("node_store", store)]
}
