//! The fuzz targets of kith-protocol's decoders: what each does with hostile bytes, and the
//! invariants it checks on what decodes.
//!
//! Shared by the fuzz engine (tests/fuzz, one binary that runs any target) and the corpus
//! replay test (tests/tests/fuzz_corpora.rs), so CI feeds every committed corpus entry to the
//! same checks without the engine. A target panics only when an invariant breaks: a decoder
//! that panics, a value that does not survive decode → encode → decode, or a stated limit that
//! a decoded value exceeds. Errors are the expected answer to most inputs.

use std::sync::OnceLock;

use kith_protocol::{
    access::{check_peers, MAX_MAILBOX_PEERS},
    batch::{self, BatchLimit},
    blob::{self, MAX_CIPHER_CHUNK_LEN},
    codec,
    envelope::MAX_ENVELOPE_LEN,
    frame::{self, LEN_PREFIX, MAX_FRAME_LEN},
    mailbox::{MailboxRequest, MailboxResponse},
    media::{MediaRequest, MediaResponse, MAX_CHUNKS_PER_REQUEST},
    payload::{MAX_CLIENT_META_LEN, MAX_RECEIPT_IDS, MAX_TEXT_LEN},
    seal::{open_handshake, HandshakePayload, MAX_SKIP},
    wire::MsgFrame,
    BlobHash, BlobKey, BlobLayout, Envelope, EnvelopeHeader, KeyBundle, LocalIdentity,
    MailboxRegistration, MessageId, Payload, PeerSessions, Plaintext, PresenceRecord,
    PresenceTable, SealedBody, SessionPolicy, Text, UserId,
};
use rand_chacha::{rand_core::SeedableRng, ChaCha20Rng};
use serde::{de::DeserializeOwned, Serialize};

/// A fuzz target: takes any bytes, panics only when an invariant breaks.
pub type Target = fn(&[u8]);

/// Every protocol target by name (the name is its corpus directory, tests/fuzz/corpus/<name>).
pub const TARGETS: &[(&str, Target)] = &[
    ("msg_frame", msg_frame),
    ("mailbox", mailbox),
    ("media", media),
    ("envelope", envelope),
    ("seal", seal),
    ("payload", payload),
    ("presence", presence),
    ("key_bundle", key_bundle),
    ("batch", batch),
];

/// Decodes `bytes` as `T`; when that works, the value must encode and decode back to itself.
fn round_trip<T>(bytes: &[u8]) -> Option<T>
where
    T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug,
{
    let value: T = codec::decode(bytes).ok()?;
    let again = codec::encode(&value).expect("a decoded value encodes");
    let back: T = codec::decode(&again).expect("an encoded value decodes");
    assert_eq!(back, value, "decode → encode → decode changed the value");
    Some(value)
}

/// Reads every complete frame of `T` from `bytes` as a stream reader does, checking each one
/// round-trips through the framing; returns the frames read.
fn frames<T>(bytes: &[u8]) -> Vec<T>
where
    T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug,
{
    let mut out = Vec::new();
    let mut at = 0;
    while let Ok(Some((value, used))) = frame::decode::<T>(&bytes[at..]) {
        assert!(used > LEN_PREFIX && used <= LEN_PREFIX + MAX_FRAME_LEN);
        assert!(
            at + used <= bytes.len(),
            "a frame claims bytes it does not have"
        );
        at += used;
        let mut again = Vec::new();
        frame::encode(&value, &mut again).expect("a decoded frame encodes");
        let (back, n) = frame::decode::<T>(&again)
            .expect("an encoded frame decodes")
            .expect("an encoded frame is complete");
        assert_eq!(n, again.len());
        assert_eq!(
            back, value,
            "a frame changed through decode → encode → decode"
        );
        out.push(value);
    }
    out
}

/// The same bytes read in two pieces, as a stream delivers them, decode to the same frames.
fn check_split_stream<T>(bytes: &[u8], whole: &[T])
where
    T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug,
{
    let cut = bytes
        .first()
        .map_or(0, |b| usize::from(*b))
        .min(bytes.len());
    if let Some(Ok(Some((first, _)))) = bytes
        .get(..cut)
        .map(|head| frame::decode::<T>(head).map_err(|_| ()))
    {
        // A prefix can only hold a frame that the whole buffer also starts with.
        assert_eq!(Some(&first), whole.first());
    }
}

/// `/kith/msg/1` frames ([`MsgFrame`]), several in a row as a stream carries them; every
/// envelope inside is checked as the node checks it.
pub fn msg_frame(data: &[u8]) {
    let got = frames::<MsgFrame>(data);
    for f in &got {
        if let MsgFrame::Envelope(e) = f {
            check_envelope(e);
        }
        if let MsgFrame::Presence(p) = f {
            let _ = p.verify();
        }
    }
    check_split_stream(data, &got);
}

/// `/kith/mailbox/1` frames: the first byte picks requests (even) or responses (odd).
pub fn mailbox(data: &[u8]) {
    let Some((&which, rest)) = data.split_first() else {
        return;
    };
    if which % 2 == 0 {
        for req in frames::<MailboxRequest>(rest) {
            match req {
                MailboxRequest::Deposit(e, _) => check_envelope(&e),
                MailboxRequest::Register(r) => check_registration(&r),
                MailboxRequest::Replicate {
                    envelopes,
                    requests,
                } => envelopes.iter().chain(&requests).for_each(check_envelope),
                MailboxRequest::Presence(p) => {
                    let _ = p.verify();
                }
                _ => {}
            }
        }
    } else {
        for resp in frames::<MailboxResponse>(rest) {
            if let MailboxResponse::Deliver(list) = resp {
                list.iter().for_each(check_envelope);
            }
        }
    }
}

/// A registration that verifies names at most [`MAX_MAILBOX_PEERS`] store peers, each once.
fn check_registration(r: &MailboxRegistration) {
    if r.verify().is_ok() {
        assert!(r.peers.len() <= MAX_MAILBOX_PEERS);
        for (i, p) in r.peers.iter().enumerate() {
            assert!(!r.peers[..i].contains(p), "a peer named twice");
            assert!(r.names(p));
        }
    }
}

/// An envelope that arrived inside a frame: checking it never panics, and one that passes the
/// check encodes within [`MAX_ENVELOPE_LEN`] and reads back through [`Envelope::from_bytes`].
fn check_envelope(e: &Envelope) {
    if e.check().is_ok() {
        let bytes = e
            .to_bytes()
            .expect("a checked envelope encodes within its limit");
        assert!(bytes.len() <= MAX_ENVELOPE_LEN);
        assert_eq!(&Envelope::from_bytes(&bytes).expect("re-reads"), e);
        e.digest().expect("a checked envelope has a digest");
    }
}

/// `/kith/media/1` frames and the blob layout arithmetic they drive. The first byte picks:
/// 0 requests, 1 responses, 2 a blob layout and one chunk opened with a fixed key, 3 a blob
/// hash in hex (as the REST API reads it).
pub fn media(data: &[u8]) {
    let Some((&which, rest)) = data.split_first() else {
        return;
    };
    match which % 4 {
        0 => {
            if let Ok(Some((req, used))) = MediaRequest::decode_frame(rest) {
                assert!(used <= rest.len());
                if let MediaRequest::Get { count, .. } = req {
                    assert!((1..=MAX_CHUNKS_PER_REQUEST).contains(&count));
                }
                if let MediaRequest::Chunk { bytes, .. } = &req {
                    assert!(bytes.len() <= MAX_CIPHER_CHUNK_LEN);
                }
                if let Some(layout) = req.put_layout() {
                    check_layout(&layout.expect("a validated put has a layout"));
                }
                let mut again = Vec::new();
                req.encode_frame(&mut again)
                    .expect("a validated request encodes");
                let (back, _) = MediaRequest::decode_frame(&again)
                    .expect("decodes")
                    .expect("complete");
                assert_eq!(back, req);
            }
        }
        1 => {
            if let Ok(Some((resp, used))) = MediaResponse::decode_frame(rest) {
                assert!(used <= rest.len());
                let mut again = Vec::new();
                resp.encode_frame(&mut again)
                    .expect("a validated answer encodes");
                let (back, _) = MediaResponse::decode_frame(&again)
                    .expect("decodes")
                    .expect("complete");
                assert_eq!(back, resp);
            }
        }
        2 => blob_chunk(rest),
        _ => {
            if let Ok(s) = std::str::from_utf8(rest) {
                if let Ok(h) = BlobHash::from_hex(s) {
                    assert_eq!(BlobHash::from_hex(&h.to_hex()).expect("re-reads"), h);
                }
            }
        }
    }
}

fn u64_at(bytes: &[u8], at: usize) -> u64 {
    let mut b = [0u8; 8];
    for (i, v) in bytes.iter().skip(at).take(8).enumerate() {
        b[i] = *v;
    }
    u64::from_le_bytes(b)
}

/// A layout's arithmetic agrees with itself: chunk lengths and offsets add up to the sizes,
/// and the ciphertext size gives the same layout back.
fn check_layout(layout: &BlobLayout) {
    let count = layout.chunk_count();
    assert!(count >= 1);
    let last = count - 1;
    let last_plain = layout.plain_len(last).expect("the last chunk exists") as u64;
    assert_eq!(layout.plain_offset(last) + last_plain, layout.size);
    assert_eq!(
        layout.cipher_offset(last) + layout.cipher_len(last).expect("exists") as u64,
        layout.cipher_size()
    );
    assert!(layout.plain_len(count).is_err());
    assert_eq!(
        BlobLayout::from_cipher_size(layout.cipher_size(), layout.chunk_size).ok(),
        Some(*layout)
    );
    assert_eq!(layout.chunks_in_cipher_prefix(layout.cipher_size()), count);
    assert_eq!(layout.chunks_in_plain_prefix(layout.size), count);
    assert_eq!(layout.chunk_of_plain_offset(u64::MAX), last);
}

/// Bytes 0..8 a (ciphertext) size, 8..12 a chunk size, 12..20 an index, the rest a chunk.
fn blob_chunk(data: &[u8]) {
    let cipher_size = u64_at(data, 0) % (blob::MAX_BLOB_SIZE * 2);
    let chunk_size = u64_at(data, 8) as u32;
    let index = u64_at(data, 12);
    let chunk = data.get(20..).unwrap_or_default();
    if let Ok(layout) = BlobLayout::from_cipher_size(cipher_size, chunk_size) {
        assert_eq!(layout.cipher_size(), cipher_size);
        check_layout(&layout);
        let _ = layout.chunks_in_cipher_prefix(index);
        let _ = layout.chunks_in_plain_prefix(index);
        let _ = blob::open_chunk(&BlobKey([7; 32]), &layout, index, chunk);
    }
    if let Ok(layout) = BlobLayout::new(cipher_size, chunk_size) {
        check_layout(&layout);
        let _ = blob::open_chunk(&BlobKey([7; 32]), &layout, index, chunk);
    }
}

/// An envelope as a store peer or node reads one from the network or its database.
pub fn envelope(data: &[u8]) {
    if let Ok(e) = Envelope::from_bytes(data) {
        check_envelope(&e);
    }
    let _ = round_trip::<Envelope>(data);
}

/// The fixed parties of the seal target: bob opens what alice sealed to him.
pub struct Parties {
    /// The recipient whose identity opens handshakes.
    pub bob: LocalIdentity,
    /// The sender.
    pub alice: LocalIdentity,
    /// Bob's sessions with alice after one handshake from her.
    pub bob_sessions: PeerSessions,
    /// Alice's sessions with bob after that handshake.
    pub alice_sessions: PeerSessions,
}

/// The envelope header alice seals message `id` under.
pub fn header_for(to: &LocalIdentity, id: u8) -> EnvelopeHeader {
    EnvelopeHeader::new(MessageId([id; 16]), to.user_id(), 4_000_000_000_000)
}

/// A short text plaintext.
pub fn text(body: &str) -> Plaintext {
    Plaintext::new(
        &Payload::Text(Text {
            body: body.into(),
            client_meta: String::new(),
        }),
        1_700_000_000_000,
    )
    .expect("a short text is valid")
}

/// Alice and bob, made once from fixed seeds (deterministic across runs and processes), with
/// one session established from alice to bob.
pub fn parties() -> &'static Parties {
    static PARTIES: OnceLock<Parties> = OnceLock::new();
    PARTIES.get_or_init(|| {
        let bob = LocalIdentity::generate(1_000, &mut ChaCha20Rng::seed_from_u64(1));
        let alice = LocalIdentity::generate(1_000, &mut ChaCha20Rng::seed_from_u64(2));
        let mut alice_sessions = PeerSessions::default();
        let mut rng = ChaCha20Rng::seed_from_u64(3);
        let header = header_for(&bob, 1);
        let body = alice_sessions
            .seal(
                &alice,
                &bob.bundle(),
                &header,
                &text("hello"),
                2_000,
                &SessionPolicy::default(),
                &mut rng,
            )
            .expect("seals");
        let SealedBody::Handshake(hs) = body else {
            panic!("the first message is a handshake")
        };
        let opened = open_handshake(&bob, &header, &hs).expect("opens");
        let mut bob_sessions = PeerSessions::default();
        bob_sessions.accept(opened.session).expect("accepts");
        Parties {
            bob,
            alice,
            bob_sessions,
            alice_sessions,
        }
    })
}

/// Opening sealed bodies as bob: the first byte picks an envelope (even: its handshake or
/// session body opened against bob's fixed identity and a copy of his session with alice) or
/// a handshake payload as the Noise message carries it (odd).
pub fn seal(data: &[u8]) {
    let Some((&which, rest)) = data.split_first() else {
        return;
    };
    let p = parties();
    if which % 2 == 0 {
        let Ok(e) = codec::decode::<Envelope>(rest) else {
            return;
        };
        let mut sessions = p.bob_sessions.clone();
        match &e.body {
            SealedBody::Handshake(hs) => {
                if let Ok(opened) = open_handshake(&p.bob, &e.header, hs) {
                    opened
                        .sender
                        .verify()
                        .expect("an opened sender is verified");
                    assert_eq!(e.header.recipient, p.bob.user_id());
                    let _ = opened.plaintext.payload.decode();
                    let _ = sessions.accept(opened.session);
                }
            }
            SealedBody::Session(s) => {
                let before = sessions.inbound_ids();
                let steps = sessions.chain_steps();
                let opened = sessions.open(&e.header, s);
                // However far ahead a message claims to be, opening it costs O(1).
                assert!(sessions.chain_steps() - steps <= MAX_SKIP + 1);
                if let Ok(plain) = opened {
                    let _ = plain.payload.decode();
                    // A message opens once: the same body again is a replay.
                    assert!(sessions.open(&e.header, s).is_err());
                }
                assert_eq!(sessions.inbound_ids(), before);
            }
        }
    } else if let Ok(inner) = codec::decode::<HandshakePayload>(rest) {
        let again = codec::encode(&inner).expect("a decoded payload encodes");
        let back: HandshakePayload = codec::decode(&again).expect("and decodes");
        assert_eq!(codec::encode(&back).expect("encodes"), again);
        assert_eq!(back.sender, inner.sender);
        let _ = inner.sender.verify();
        let _ = inner.plaintext.payload.decode();
    }
}

/// What the seal protects ([`Plaintext`]) and the payload inside it, as a node reads them after
/// opening a message (and from its database).
pub fn payload(data: &[u8]) {
    let Some(plain) = round_trip::<Plaintext>(data) else {
        return;
    };
    let Ok(payload) = plain.payload.decode() else {
        return;
    };
    if let Payload::Unknown { .. } = payload {
        return;
    }
    if let Payload::Text(t) = &payload {
        assert!(!t.body.is_empty() && t.body.len() <= MAX_TEXT_LEN);
        assert!(t.client_meta.len() <= MAX_CLIENT_META_LEN);
    }
    if let Payload::Receipt(r) = &payload {
        assert!(!r.ids.is_empty() && r.ids.len() <= MAX_RECEIPT_IDS);
    }
    if let Payload::Media(m) = &payload {
        let _ = m.layout();
    }
    if let Payload::ContactCard(c) = &payload {
        check_bundle(&c.bundle);
        c.bundle
            .verify()
            .expect("a valid contact card's bundle verifies");
    }
    let raw = payload.to_raw().expect("a validated payload encodes");
    assert_eq!(raw.decode().expect("and decodes"), payload);
}

/// Signed presence records as store peers and nodes receive them, through a small table.
pub fn presence(data: &[u8]) {
    let Some(record) = round_trip::<PresenceRecord>(data) else {
        return;
    };
    let mut table = PresenceTable::new(1);
    match table.accept(record.clone()) {
        Ok(()) => {
            record.verify().expect("an accepted record verifies");
            assert!(
                table.accept(record.clone()).is_err(),
                "the same seq is stale"
            );
            assert_eq!(table.get(&record.user), Some(&record));
        }
        Err(_) => assert!(table.is_empty()),
    }
    let mut owner = PresenceTable::new(1);
    let _ = owner.accept_from_owner(record);
    assert!(owner.len() <= 1);
}

/// A bundle that verifies keeps its stated limits: at most [`MAX_MAILBOX_PEERS`] named store
/// peers within their address limits, issued no earlier than its prekey.
fn check_bundle(bundle: &KeyBundle) {
    if bundle.verify().is_ok() {
        bundle
            .verify_for(&bundle.user)
            .expect("verifies for its own user");
        assert!(bundle.mailboxes.len() <= MAX_MAILBOX_PEERS);
        assert!(check_peers(&bundle.mailboxes).is_ok());
        assert!(bundle.issued_at_ms >= bundle.prekey.created_at_ms);
    }
}

/// Key bundles (in invites, handshakes, contact cards and the contacts database), user ids,
/// mailbox registrations and the node's stored identity: the first byte picks which.
pub fn key_bundle(data: &[u8]) {
    let Some((&which, rest)) = data.split_first() else {
        return;
    };
    match which % 4 {
        0 => {
            if let Some(bundle) = round_trip::<KeyBundle>(rest) {
                check_bundle(&bundle);
            }
        }
        1 => {
            if let Ok(id) = UserId::from_bytes(rest) {
                assert_eq!(UserId::from_bytes(&id.to_bytes()).expect("re-reads"), id);
                let _ = id.public_key();
                let text = id.to_string();
                assert_eq!(text.parse::<UserId>().expect("parses its own text"), id);
            }
            if let Ok(s) = std::str::from_utf8(rest) {
                let _ = s.parse::<UserId>();
                let _ = s.parse::<MessageId>();
            }
        }
        2 => {
            if let Some(r) = round_trip::<MailboxRegistration>(rest) {
                check_registration(&r);
            }
        }
        _ => {
            if let Ok(me) = LocalIdentity::from_bytes(rest) {
                // A loaded identity publishes a bundle that verifies, for itself.
                me.bundle()
                    .verify_for(&me.user_id())
                    .expect("a loaded identity's bundle verifies");
                let again = me.to_bytes().expect("encodes");
                let back = LocalIdentity::from_bytes(&again).expect("re-reads");
                assert_eq!(back.user_id(), me.user_id());
            }
        }
    }
}

/// Batch splitting: each 3-byte group is one item's encoded length; the first bytes choose the
/// limit. Every batch fits its limit, none is empty, and no item is lost or reordered.
pub fn batch(data: &[u8]) {
    let max_items = usize::from(data.first().copied().unwrap_or(1));
    let max_bytes = (u64_at(data, 1) % (MAX_FRAME_LEN as u64 * 2)) as usize;
    let overhead = usize::from(data.get(9).copied().unwrap_or(0));
    let limit = BatchLimit {
        max_items,
        max_bytes,
        item_overhead: overhead,
    };
    let items: Vec<(usize, usize)> = data
        .get(10..)
        .unwrap_or_default()
        .chunks(3)
        .enumerate()
        .map(|(i, c)| {
            let len = c.iter().fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
            (i, len * 4)
        })
        .collect();
    let lens: Vec<usize> = items.iter().map(|(_, l)| *l).collect();
    let out = batch::split_sized(items.clone(), limit);
    let mut seen: Vec<usize> = Vec::new();
    for b in &out.batches {
        assert!(!b.is_empty());
        assert!(b.len() <= max_items.max(1));
        let bytes: usize = b.iter().map(|i| lens[*i] + overhead).sum();
        assert!(bytes <= max_bytes);
        seen.extend(b);
    }
    for i in &out.oversized {
        assert!(lens[*i] + overhead > max_bytes);
    }
    seen.extend(&out.oversized);
    seen.sort_unstable();
    assert_eq!(seen, (0..items.len()).collect::<Vec<_>>());
    let frame_limit = BatchLimit::frame(max_items);
    let measured = batch::split(
        lens.iter().take(64).map(|l| vec![0u8; *l % 4096]),
        frame_limit,
    );
    assert!(measured.oversized.is_empty());
}
