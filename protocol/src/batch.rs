//! Splitting a variable number of items into frames that fit.
//!
//! Several frames carry a list: a mailbox [`crate::mailbox::MailboxResponse::Deliver`], a
//! [`crate::mailbox::MailboxRequest::Replicate`], an [`crate::wire::MsgFrame::Ack`]... A count
//! cap alone does not bound such a frame (256 envelopes of 128 KiB are 32 MiB), and a frame past
//! [`MAX_FRAME_LEN`] cannot be sent at all. Whatever sends a list splits it here, by encoded
//! bytes as well as by count, so every batch fits one frame; an item that cannot fit even alone
//! is handed back to the caller instead of disappearing.
//!
//! Lengths are either measured ([`split`], with [`codec::encoded_len`]) or given
//! ([`split_sized`]) by a caller that already holds the encoded bytes (a store peer holds raw
//! envelopes: it need not encode them again to measure them). A list's bincode encoding is its
//! length followed by its items' encodings, so the sum of the items' lengths plus
//! [`LIST_FRAME_OVERHEAD`] bounds the frame body.

use serde::Serialize;

use crate::{codec, envelope::MAX_ENVELOPE_LEN, frame::MAX_FRAME_LEN};

/// Most bytes a list-carrying frame body adds around its items: the enum variant tag (one
/// varint byte for any of the first 251 variants) and the list's length (a varint, at most 9
/// bytes).
pub const LIST_FRAME_OVERHEAD: usize = 1 + 9;

/// Most encoded item bytes one list frame may carry: [`MAX_FRAME_LEN`] minus
/// [`LIST_FRAME_OVERHEAD`].
pub const MAX_LIST_BYTES: usize = MAX_FRAME_LEN - LIST_FRAME_OVERHEAD;

/// What each item of a list frame is charged beyond its encoded length.
///
/// Encoding is not the only bound a list frame must meet: decoding it must stay under
/// [`codec::MAX_DECODE_LEN`], and bincode's decode limit counts what a value takes *decoded*
/// (a varint claims its full integer width, an enum tag four bytes, a length eight), not the
/// bytes read. An envelope's fixed fields decode to a few dozen bytes more than they encode
/// to, so a frame filled to the last encoded byte was refused by its receiver
/// (`LimitExceeded`, found by the fault campaign: a store peer's mailbox could never drain).
/// 128 bytes per item is several times that difference.
pub const ITEM_DECODE_MARGIN: usize = 128;

// Any valid envelope fits a list frame on its own, so a held envelope always drains.
const _: () = assert!(MAX_ENVELOPE_LEN + ITEM_DECODE_MARGIN <= MAX_LIST_BYTES);

/// How large one batch may be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchLimit {
    /// Most items in one batch (at least one is always allowed).
    pub max_items: usize,
    /// Most encoded item bytes in one batch, each item's `item_overhead` included.
    pub max_bytes: usize,
    /// What each item is charged beyond its length.
    pub item_overhead: usize,
}

impl BatchLimit {
    /// At most `max_items` items per batch, and no more than fits one list frame.
    pub const fn frame(max_items: usize) -> Self {
        BatchLimit {
            max_items,
            max_bytes: MAX_LIST_BYTES,
            item_overhead: ITEM_DECODE_MARGIN,
        }
    }
}

/// Items split into batches.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Batches<T> {
    /// The batches, in input order; none is empty.
    pub batches: Vec<Vec<T>>,
    /// Items that fit no batch even alone (or cannot be encoded at all), in input order.
    pub oversized: Vec<T>,
}

impl<T> Default for Batches<T> {
    fn default() -> Self {
        Batches {
            batches: Vec::new(),
            oversized: Vec::new(),
        }
    }
}

/// Splits `items`, each given with its encoded length, in order into batches of at most
/// `limit.max_items` items and `limit.max_bytes` bytes (each item counted as its length plus
/// `limit.item_overhead`). A batch is closed only when the next item would not fit it. An
/// item that does not fit even alone goes to [`Batches::oversized`].
pub fn split_sized<T>(
    items: impl IntoIterator<Item = (T, usize)>,
    limit: BatchLimit,
) -> Batches<T> {
    let max_items = limit.max_items.max(1);
    let mut out = Batches::default();
    let mut current = Vec::new();
    let mut bytes = 0usize;
    for (item, len) in items {
        let len = len.saturating_add(limit.item_overhead);
        if len > limit.max_bytes {
            out.oversized.push(item);
            continue;
        }
        if !current.is_empty() && (current.len() >= max_items || bytes + len > limit.max_bytes) {
            out.batches.push(std::mem::take(&mut current));
            bytes = 0;
        }
        bytes += len;
        current.push(item);
    }
    if !current.is_empty() {
        out.batches.push(current);
    }
    out
}

/// Splits `items` like [`split_sized`], measuring each with [`codec::encoded_len`]. An item
/// that cannot be encoded goes to [`Batches::oversized`] (no frame could carry it either).
pub fn split<T: Serialize>(items: impl IntoIterator<Item = T>, limit: BatchLimit) -> Batches<T> {
    split_sized(
        items.into_iter().map(|item| {
            let len = codec::encoded_len(&item).unwrap_or(usize::MAX);
            (item, len)
        }),
        limit,
    )
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::{
        frame,
        mailbox::{MailboxRequest, MailboxResponse},
        seal::{HandshakeBody, SealedBody},
        wire::{MsgFrame, MAX_ACK_IDS},
        Envelope, EnvelopeHeader, LocalIdentity, MessageId,
    };
    use proptest::prelude::*;
    use rand_chacha::ChaCha20Rng;
    use rand_core::SeedableRng;

    /// An envelope whose encoding is exactly `len` bytes.
    fn envelope_of_len(id: u8, len: usize) -> Envelope {
        let bob = LocalIdentity::generate(0, &mut ChaCha20Rng::seed_from_u64(1));
        let make = |n: usize| Envelope {
            header: EnvelopeHeader::new(MessageId([id; 16]), bob.user_id(), 99),
            body: SealedBody::Handshake(HandshakeBody {
                prekey_id: 1,
                noise: vec![7; n],
            }),
        };
        let overhead = codec::encoded_len(&make(0)).unwrap();
        let mut n = len - overhead;
        while codec::encoded_len(&make(n)).unwrap() > len {
            n -= 1;
        }
        let env = make(n);
        assert_eq!(codec::encoded_len(&env).unwrap(), len);
        env
    }

    #[test]
    fn nine_envelopes_of_128_kib_need_two_deliver_frames() {
        // The hostile depositor of issue #11: nine maximum envelopes overflow one frame.
        let envs: Vec<Envelope> = (0..9)
            .map(|i| envelope_of_len(i, MAX_ENVELOPE_LEN))
            .collect();
        let split = split(envs.clone(), BatchLimit::frame(256));
        assert!(split.oversized.is_empty());
        assert_eq!(split.batches.len(), 2);
        assert_eq!(split.batches.concat(), envs);
        for batch in split.batches {
            assert_frames_round_trip(batch);
        }
    }

    /// Encodes `batch` as a `Deliver` and a `Replicate` frame and decodes both back: what a
    /// receiver must be able to do with every batch.
    fn assert_frames_round_trip(batch: Vec<Envelope>) {
        let deliver = MailboxResponse::Deliver(batch.clone());
        let replicate = MailboxRequest::Replicate {
            envelopes: batch,
            requests: Vec::new(),
        };
        let mut buf = Vec::new();
        frame::encode(&deliver, &mut buf).unwrap();
        let (back, used) = frame::decode::<MailboxResponse>(&buf).unwrap().unwrap();
        assert_eq!((back, used), (deliver, buf.len()));
        buf.clear();
        frame::encode(&replicate, &mut buf).unwrap();
        let (back, used) = frame::decode::<MailboxRequest>(&buf).unwrap().unwrap();
        assert_eq!((back, used), (replicate, buf.len()));
    }

    #[test]
    fn a_batch_filled_to_its_last_byte_decodes() {
        // The fault campaign's case: texts near the 48 KiB limit, and one more that fills the
        // batch to its last byte. The receiver's decode limit counts decoded sizes (a length
        // claims eight bytes, an enum tag four), a little more than the encoded bytes.
        for (n, size) in [(8, 128_000), (10, 100_000), (21, 48_000), (40, 25_000)] {
            let mut envs: Vec<Envelope> = (0..n).map(|i| envelope_of_len(i, size)).collect();
            let used = n as usize * (size + ITEM_DECODE_MARGIN);
            let last = MAX_LIST_BYTES - used - ITEM_DECODE_MARGIN;
            assert!(last <= MAX_ENVELOPE_LEN, "{n} × {size}");
            envs.push(envelope_of_len(n, last));
            let split = split(envs.clone(), BatchLimit::frame(256));
            assert_eq!(split.batches.len(), 1, "{n} × {size} + {last}");
            assert_frames_round_trip(split.batches.concat());
        }
    }

    #[test]
    fn count_cap_holds_for_small_items() {
        let ids: Vec<MessageId> = (0..10u8).map(|i| MessageId([i; 16])).collect();
        let split = split(ids.clone(), BatchLimit::frame(4));
        let sizes: Vec<usize> = split.batches.iter().map(Vec::len).collect();
        assert_eq!(sizes, [4, 4, 2]);
        assert_eq!(split.batches.concat(), ids);
    }

    #[test]
    fn an_item_too_large_for_any_frame_is_handed_back_not_dropped() {
        let room = MAX_LIST_BYTES - ITEM_DECODE_MARGIN;
        let items = vec![("a", 10), ("huge", room + 1), ("b", 10)];
        let split = split_sized(items, BatchLimit::frame(256));
        assert_eq!(split.batches, vec![vec!["a", "b"]]);
        assert_eq!(split.oversized, vec!["huge"]);
        // Exactly the limit fits, alone.
        let split = split_sized(
            vec![("x", 1), ("full", room), ("y", 1)],
            BatchLimit::frame(256),
        );
        assert_eq!(split.batches, vec![vec!["x"], vec!["full"], vec!["y"]]);
        assert!(split.oversized.is_empty());
    }

    #[test]
    fn a_zero_count_cap_still_makes_progress() {
        let split = split_sized(vec![(1, 1), (2, 1)], BatchLimit::frame(0));
        assert_eq!(split.batches, vec![vec![1], vec![2]]);
    }

    #[test]
    fn nothing_in_nothing_out() {
        let split = split_sized(Vec::<(u8, usize)>::new(), BatchLimit::frame(8));
        assert_eq!(split, Batches::default());
    }

    #[test]
    fn fixed_size_lists_fit_a_frame_by_construction() {
        // Ack lists are capped by count only: the cap must keep them under a frame.
        let acks = MsgFrame::Ack(vec![MessageId([0xff; 16]); MAX_ACK_IDS]);
        assert!(codec::encoded_len(&acks).unwrap() <= MAX_FRAME_LEN);
    }

    /// A list frame of a test protocol, to encode real frames around arbitrary items.
    #[derive(Serialize)]
    enum TestFrame {
        #[allow(dead_code)]
        Other,
        List(Vec<serde_bytes::ByteBuf>),
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

        #[test]
        fn batches_keep_order_and_respect_both_limits(
            lens in proptest::collection::vec(0usize..1200, 0..200),
            max_items in 0usize..20,
            max_bytes in 0usize..1000,
        ) {
            let limit = BatchLimit { max_items, max_bytes, item_overhead: 0 };
            // Items are their indexes in `lens`.
            let split = split_sized(lens.iter().copied().enumerate(), limit);
            // Order: batches then oversized partition the input, each in input order.
            let want_kept: Vec<usize> = (0..lens.len()).filter(|i| lens[*i] <= max_bytes).collect();
            let want_over: Vec<usize> = (0..lens.len()).filter(|i| lens[*i] > max_bytes).collect();
            prop_assert_eq!(&split.batches.concat(), &want_kept);
            prop_assert_eq!(&split.oversized, &want_over);
            for (n, batch) in split.batches.iter().enumerate() {
                prop_assert!(!batch.is_empty());
                prop_assert!(batch.len() <= max_items.max(1));
                let bytes: usize = batch.iter().map(|i| lens[*i]).sum();
                prop_assert!(bytes <= max_bytes);
                // Greedy: a batch closed only because the next item did not fit.
                if let Some(next) = split.batches.get(n + 1).and_then(|b| b.first()) {
                    prop_assert!(
                        batch.len() >= max_items.max(1) || bytes + lens[*next] > max_bytes
                    );
                }
            }
        }
    }

    proptest! {
        // Real frames of up to a few MiB each case: fewer cases.
        #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

        #[test]
        fn every_batch_encodes_as_one_frame(
            lens in proptest::collection::vec(0usize..(MAX_FRAME_LEN / 3), 0..12),
            max_items in 1usize..300,
        ) {
            let items: Vec<serde_bytes::ByteBuf> =
                lens.iter().map(|n| serde_bytes::ByteBuf::from(vec![1u8; *n])).collect();
            let split = split(items.clone(), BatchLimit::frame(max_items));
            prop_assert!(split.oversized.is_empty());
            prop_assert_eq!(&split.batches.concat(), &items);
            for batch in split.batches {
                prop_assert!(batch.len() <= max_items);
                let mut buf = Vec::new();
                prop_assert!(frame::encode(&TestFrame::List(batch), &mut buf).is_ok());
                prop_assert!(buf.len() <= frame::LEN_PREFIX + MAX_FRAME_LEN);
            }
        }
    }
}
