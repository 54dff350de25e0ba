//! Envelopes opened and handled that left no message record: receipts, contact cards, group
//! states, sender keys, group messages and group receipts.
//!
//! Why: opening an envelope in a session consumes its message key, so a second copy (from a
//! second store peer, or a retry whose ack was lost) cannot be opened again. Without a note
//! of what was handled, that copy was refused, its sender resealed it, and a store peer
//! handed the refused copy back at every re-subscription until it expired (a reseal storm
//! in large groups). Text and media need no note: their message records dedupe them.
//!
//! Layout: `handled_envelopes`: `len(sender) ‖ sender ‖ envelope id` → expiry (u64 unix ms,
//! big-endian). An envelope past its expiry is refused before it is opened, so a note is
//! dropped once its envelope expired: at open, and every [`PRUNE_EVERY`] notes.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use kith_protocol::{MessageId, UserId};

use super::{Store, StoreError};

/// Notes between two sweeps of expired notes.
pub const PRUNE_EVERY: u64 = 4096;

/// The tree of handled envelopes and the count of notes since its last sweep.
#[derive(Clone)]
pub(crate) struct HandledEnvelopes {
    tree: sled::Tree,
    since_prune: Arc<AtomicU64>,
}

impl HandledEnvelopes {
    /// Opens the tree (replacing the group-copies tree it generalises) and drops the notes
    /// already expired at `now_ms`.
    pub(crate) fn open(db: &sled::Db, now_ms: u64) -> Result<Self, StoreError> {
        db.drop_tree("group_copies")?;
        let handled = HandledEnvelopes {
            tree: db.open_tree("handled_envelopes")?,
            since_prune: Arc::new(AtomicU64::new(0)),
        };
        handled.prune(now_ms)?;
        Ok(handled)
    }

    /// Removes the notes whose envelope expired by `now_ms`; returns how many.
    fn prune(&self, now_ms: u64) -> Result<usize, StoreError> {
        let mut removed = 0;
        for item in self.tree.iter() {
            let (k, v) = item?;
            // A value that does not decode is as good as expired: the note only ever
            // saves a refusal.
            let expires = <[u8; 8]>::try_from(v.as_ref()).map_or(0, u64::from_be_bytes);
            if expires <= now_ms {
                self.tree.remove(k)?;
                removed += 1;
            }
        }
        Ok(removed)
    }
}

fn key(sender: &UserId, envelope: &MessageId) -> Vec<u8> {
    let user = sender.to_bytes();
    let mut key = Vec::with_capacity(1 + user.len() + 16);
    key.push(user.len() as u8);
    key.extend_from_slice(&user);
    key.extend_from_slice(envelope.as_bytes());
    key
}

impl Store {
    /// Notes that `sender`'s envelope `envelope`, valid until `expires_at_ms`, was opened
    /// and handled. Sweeps expired notes every [`PRUNE_EVERY`] calls.
    pub fn note_handled_envelope(
        &self,
        sender: &UserId,
        envelope: &MessageId,
        expires_at_ms: u64,
        now_ms: u64,
    ) -> Result<(), StoreError> {
        let h = &self.handled;
        h.tree
            .insert(key(sender, envelope), &expires_at_ms.to_be_bytes()[..])?;
        if h.since_prune.fetch_add(1, Ordering::Relaxed) + 1 >= PRUNE_EVERY {
            h.since_prune.store(0, Ordering::Relaxed);
            let removed = h.prune(now_ms)?;
            tracing::debug!(removed, "expired handled-envelope notes swept");
        }
        Ok(())
    }

    /// Whether `sender`'s envelope `envelope` was opened and handled before.
    pub fn was_handled(&self, sender: &UserId, envelope: &MessageId) -> Result<bool, StoreError> {
        Ok(self.handled.tree.contains_key(key(sender, envelope))?)
    }

    /// How many handled-envelope notes are kept (for tests).
    pub fn handled_notes(&self) -> usize {
        self.handled.tree.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn notes_are_swept_once_their_envelope_expired() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Store::open(dir.path(), std::time::Duration::ZERO).expect("store");
        let sender = kith_protocol::LocalIdentity::generate(0, &mut rand::rngs::OsRng).user_id();
        let old = MessageId::random(&mut rand::rngs::OsRng);
        let live = MessageId::random(&mut rand::rngs::OsRng);
        store
            .note_handled_envelope(&sender, &old, 1_000, 0)
            .expect("note");
        store
            .note_handled_envelope(&sender, &live, u64::MAX, 0)
            .expect("note");
        assert!(store.was_handled(&sender, &old).expect("read"));
        assert!(!store
            .was_handled(&sender, &MessageId::random(&mut rand::rngs::OsRng))
            .expect("read"));
        let other = kith_protocol::LocalIdentity::generate(0, &mut rand::rngs::OsRng).user_id();
        assert!(
            !store.was_handled(&other, &live).expect("read"),
            "keyed by sender too"
        );
        for _ in 0..PRUNE_EVERY {
            store
                .note_handled_envelope(&sender, &live, u64::MAX, 2_000)
                .expect("note");
        }
        assert!(
            !store.was_handled(&sender, &old).expect("read"),
            "expired note swept"
        );
        assert!(store.was_handled(&sender, &live).expect("read"));
        assert_eq!(store.handled_notes(), 1);
    }
}
