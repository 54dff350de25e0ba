//! Micro-benchmarks of the hot paths: a first message (Noise X handshake) sealed and opened, a
//! session message of a 160-byte text sealed and opened, and an envelope framed and unframed.
#![allow(missing_docs, clippy::unwrap_used)]

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use kith_protocol::{
    frame,
    seal::{open_handshake, SessionPolicy},
    wire::MsgFrame,
    Envelope, EnvelopeHeader, LocalIdentity, MessageId, Payload, PeerSessions, Plaintext,
    SealedBody, Text,
};
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

fn text(len: usize) -> Plaintext {
    Plaintext::new(
        &Payload::Text(Text {
            body: "x".repeat(len),
            client_meta: String::new(),
        }),
        1_700_000_000_000,
    )
    .unwrap()
}

fn benches(c: &mut Criterion) {
    let mut rng = ChaCha20Rng::seed_from_u64(1);
    let alice = LocalIdentity::generate(0, &mut rng);
    let bob = LocalIdentity::generate(0, &mut rng);
    let bob_bundle = bob.bundle();
    let policy = SessionPolicy {
        max_messages: u64::MAX,
        ..SessionPolicy::default()
    };
    let header = EnvelopeHeader::new(MessageId([7; 16]), bob.user_id(), u64::MAX);
    let pt = text(160);

    c.bench_function("handshake seal+open (160-byte text)", |b| {
        b.iter(|| {
            let mut out = PeerSessions::default();
            let body = out
                .seal(&alice, &bob_bundle, &header, &pt, 0, &policy, &mut rng)
                .unwrap();
            let SealedBody::Handshake(h) = body else {
                unreachable!()
            };
            black_box(open_handshake(&bob, &header, &h).unwrap())
        })
    });

    // One long session; each iteration seals the next message and opens it.
    let mut out = PeerSessions::default();
    let mut inb = PeerSessions::default();
    let SealedBody::Handshake(h) = out
        .seal(&alice, &bob_bundle, &header, &pt, 0, &policy, &mut rng)
        .unwrap()
    else {
        unreachable!()
    };
    inb.accept(open_handshake(&bob, &header, &h).unwrap().session)
        .unwrap();
    c.bench_function("session seal+open (160-byte text)", |b| {
        b.iter(|| {
            let SealedBody::Session(s) = out
                .seal(&alice, &bob_bundle, &header, &pt, 0, &policy, &mut rng)
                .unwrap()
            else {
                unreachable!()
            };
            black_box(inb.open(&header, &s).unwrap())
        })
    });

    let SealedBody::Session(s) = out
        .seal(&alice, &bob_bundle, &header, &pt, 0, &policy, &mut rng)
        .unwrap()
    else {
        unreachable!()
    };
    let frame_value = MsgFrame::Envelope(Envelope {
        header: header.clone(),
        body: SealedBody::Session(s),
    });
    let mut buf = Vec::with_capacity(1024);
    c.bench_function("frame encode+decode (session envelope)", |b| {
        b.iter(|| {
            buf.clear();
            frame::encode(black_box(&frame_value), &mut buf).unwrap();
            black_box(frame::decode::<MsgFrame>(&buf).unwrap().unwrap())
        })
    });
}

criterion_group!(seal, benches);
criterion_main!(seal);
