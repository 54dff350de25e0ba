//! Micro-benchmarks of length-prefixed framing ([`kith_protocol::frame`]) on the frames the
//! hot paths carry: a session envelope of a 160-byte text on `/kith/msg/1`, an ack of 32 ids,
//! a presence heartbeat, a mailbox deposit, and a full `Deliver` batch of 256 envelopes. Each
//! frame is encoded and decoded separately (throughput in bytes of frame), and a buffer of 64
//! envelope frames is decoded the way a reader drains a socket read.
#![allow(missing_docs, clippy::unwrap_used)]

use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use kith_protocol::{
    frame,
    mailbox::{MailboxRequest, MailboxResponse, MAX_BATCH},
    seal::SessionPolicy,
    wire::MsgFrame,
    Envelope, EnvelopeHeader, LocalIdentity, MessageId, Payload, PeerSessions, Plaintext,
    PresenceRecord, SealedBody, Text, Visibility,
};
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;
use serde::{de::DeserializeOwned, Serialize};

/// A session envelope (not the first, handshake, message) of a 160-byte text.
fn session_envelope() -> Envelope {
    let mut rng = ChaCha20Rng::seed_from_u64(2);
    let alice = LocalIdentity::generate(0, &mut rng);
    let bob = LocalIdentity::generate(0, &mut rng);
    let bundle = bob.bundle();
    let header = EnvelopeHeader::new(MessageId([9; 16]), bob.user_id(), u64::MAX);
    let pt = Plaintext::new(
        &Payload::Text(Text {
            body: "x".repeat(160),
            client_meta: "{}".to_string(),
        }),
        1_700_000_000_000,
    )
    .unwrap();
    let mut sessions = PeerSessions::default();
    let policy = SessionPolicy::default();
    // The first seal is the handshake; the second rides the session.
    sessions
        .seal(&alice, &bundle, &header, &pt, 0, &policy, &mut rng)
        .unwrap();
    let body = sessions
        .seal(&alice, &bundle, &header, &pt, 0, &policy, &mut rng)
        .unwrap();
    assert!(matches!(body, SealedBody::Session(_)));
    Envelope { header, body }
}

fn bench_one<T: Serialize + DeserializeOwned>(c: &mut Criterion, name: &str, value: &T) {
    let mut buf = Vec::with_capacity(1 << 20);
    frame::encode(value, &mut buf).unwrap();
    let len = buf.len();
    let mut group = c.benchmark_group("frame");
    group.throughput(Throughput::Bytes(len as u64));
    group.bench_with_input(BenchmarkId::new("encode", name), value, |b, v| {
        b.iter(|| {
            buf.clear();
            frame::encode(black_box(v), &mut buf).unwrap();
            black_box(buf.len())
        })
    });
    let encoded = buf.clone();
    group.bench_with_input(BenchmarkId::new("decode", name), &encoded, |b, e| {
        b.iter(|| black_box(frame::decode::<T>(black_box(e)).unwrap().unwrap()))
    });
    group.finish();
}

fn benches(c: &mut Criterion) {
    let env = session_envelope();
    bench_one(
        c,
        "msg envelope (160-byte text)",
        &MsgFrame::Envelope(env.clone()),
    );
    let ids: Vec<MessageId> = (0..32u8).map(|i| MessageId([i; 16])).collect();
    bench_one(c, "msg ack (32 ids)", &MsgFrame::Ack(ids));
    let me = LocalIdentity::generate(0, &mut ChaCha20Rng::seed_from_u64(3));
    let record = PresenceRecord::sign(&me, 1, 1_700_000_000_000, true, Visibility::Everyone);
    bench_one(c, "mailbox presence", &MailboxRequest::Presence(record));
    bench_one(
        c,
        "mailbox deposit",
        &MailboxRequest::Deposit(env.clone(), None),
    );
    bench_one(
        c,
        "mailbox deliver (256 envelopes)",
        &MailboxResponse::Deliver(vec![env.clone(); MAX_BATCH]),
    );

    // A socket read's worth of frames: 64 envelope frames back to back, decoded in a loop.
    let mut stream = Vec::new();
    for _ in 0..64 {
        frame::encode(&MsgFrame::Envelope(env.clone()), &mut stream).unwrap();
    }
    let mut group = c.benchmark_group("frame stream");
    group.throughput(Throughput::Elements(64));
    group.bench_function("decode 64 envelope frames", |b| {
        b.iter(|| {
            let mut at = 0;
            let mut n = 0;
            while let Some((f, used)) = frame::decode::<MsgFrame>(&stream[at..]).unwrap() {
                black_box(f);
                at += used;
                n += 1;
            }
            black_box(n)
        })
    });
    group.finish();
}

criterion_group!(framing, benches);
criterion_main!(framing);
