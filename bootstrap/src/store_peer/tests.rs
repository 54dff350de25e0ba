//! The store peer actor's unit tests: held mailboxes cut into frames that fit.

use kith_protocol::{
    envelope::MAX_ENVELOPE_LEN,
    frame,
    seal::{HandshakeBody, SealedBody},
    EnvelopeHeader, LocalIdentity,
};

use super::*;
use crate::mailboxes::Limits;
use crate::store_peer::batches::held_batches;
use kith_net::frames::encode_frames;

/// The largest envelope a store peer accepts, for `to`, with id `n`.
fn max_envelope(to: UserId, n: u8) -> (Envelope, Vec<u8>) {
    let make = |len: usize| Envelope {
        header: EnvelopeHeader::new(MessageId([n; 16]), to, now_ms() + 60_000),
        body: SealedBody::Handshake(HandshakeBody {
            prekey_id: 1,
            noise: vec![n; len],
        }),
    };
    let mut len = MAX_ENVELOPE_LEN;
    while make(len).to_bytes().is_err() {
        len -= 1;
    }
    let env = make(len);
    let bytes = env.to_bytes().unwrap();
    assert!(bytes.len() > MAX_ENVELOPE_LEN - 8);
    (env, bytes)
}

#[tokio::test]
async fn mailbox_of_nine_maximum_envelopes_drains_in_frames_that_fit() {
    let dir = tempfile::tempdir().unwrap();
    let mailboxes = Mailboxes::open(&dir.path().join("mailboxes")).unwrap();
    let bob = LocalIdentity::generate(0, &mut rand::rngs::OsRng).user_id();
    let mut sent = Vec::new();
    for n in 0..9 {
        let (env, bytes) = max_envelope(bob, n);
        let r = mailboxes.deposit(&env, &bytes, &Limits::default(), Quota::Mailbox, now_ms());
        assert!(matches!(r, Ok(Ok(Deposit::Stored))));
        sent.push(env);
    }
    // One frame cannot carry them all (what issue #11 hit: it was dropped every time).
    let mut buf = Vec::new();
    assert!(encode_frames([&MailboxResponse::Deliver(sent.clone())], &mut buf).is_err());

    let batches = held_batches(&bob, mailboxes.list(&bob).unwrap());
    assert!(batches.len() >= 2);
    assert_eq!(
        batches.concat(),
        sent,
        "every envelope, once, in arrival order"
    );
    for envs in batches {
        assert!(envs.len() <= MAX_BATCH);
        let mut buf = Vec::new();
        encode_frames([&MailboxResponse::Deliver(envs.clone())], &mut buf).unwrap();
        assert!(buf.len() <= frame::LEN_PREFIX + frame::MAX_FRAME_LEN);
        let mut buf = Vec::new();
        let replicate = MailboxRequest::Replicate {
            envelopes: envs,
            requests: Vec::new(),
        };
        encode_frames([&replicate], &mut buf).unwrap();
    }
}

#[test]
fn many_small_envelopes_keep_the_count_cap() {
    let bob = LocalIdentity::generate(0, &mut rand::rngs::OsRng).user_id();
    let held: Vec<(EnvelopeRef, Vec<u8>)> = (0..600u32)
        .map(|i| {
            let mut id = [0u8; 16];
            id[..4].copy_from_slice(&i.to_be_bytes());
            let env = Envelope {
                header: EnvelopeHeader::new(MessageId(id), bob, u64::MAX),
                body: SealedBody::Handshake(HandshakeBody {
                    prekey_id: 1,
                    noise: vec![1; 100],
                }),
            };
            let r = EnvelopeRef {
                id: MessageId(id),
                digest: env.digest().unwrap(),
            };
            (r, env.to_bytes().unwrap())
        })
        .collect();
    let batches = held_batches(&bob, held);
    let sizes: Vec<usize> = batches.iter().map(Vec::len).collect();
    assert_eq!(sizes, [MAX_BATCH, MAX_BATCH, 600 - 2 * MAX_BATCH]);
}
