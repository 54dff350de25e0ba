//! Held envelopes cut into frames that fit (`Deliver`, `Replicate`). Pure: no I/O.

use kith_protocol::{
    batch::{self, BatchLimit},
    mailbox::{EnvelopeRef, MAX_BATCH},
    Envelope, MessageId, UserId,
};

/// Splits envelopes held for `user` (raw bytes, as stored) into batches that each fit one
/// `Deliver` or `Replicate` frame, and decodes them. Sizes come from the stored bytes: an
/// envelope's stored bytes are its encoding, so nothing is encoded again to measure it.
pub(super) fn held_batches(user: &UserId, held: Vec<(EnvelopeRef, Vec<u8>)>) -> Vec<Vec<Envelope>> {
    let split = batch::split_sized(
        held.into_iter().map(|(id, bytes)| {
            let len = bytes.len();
            ((id, bytes), len)
        }),
        BatchLimit::frame(MAX_BATCH),
    );
    let oversized: Vec<MessageId> = split.oversized.iter().map(|(r, _)| r.id).collect();
    report_oversized(user, &oversized);
    split
        .batches
        .into_iter()
        .map(|b| {
            b.into_iter()
                .filter_map(|(r, bytes)| match Envelope::from_bytes(&bytes) {
                    Ok(env) => Some(env),
                    Err(e) => {
                        tracing::error!(%user, id = %r.id, error = %e, "held envelope does not decode; not sent");
                        None
                    }
                })
                .collect::<Vec<_>>()
        })
        .filter(|b| !b.is_empty())
        .collect()
}

/// Logs envelopes that fit no frame. Deposits are refused past
/// [`kith_protocol::envelope::MAX_ENVELOPE_LEN`], which fits one, so this is a bug: it is
/// reported, never skipped in silence.
pub(super) fn report_oversized(user: &UserId, ids: &[MessageId]) {
    if !ids.is_empty() {
        tracing::error!(%user, n = ids.len(), ?ids, "held envelopes too large for any frame (a bug); not sent");
    }
}
