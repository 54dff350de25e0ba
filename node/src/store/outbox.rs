//! The outbox: what must still leave this node, in the order it was queued, also across
//! restarts.

use kith_protocol::{codec, payload::Plaintext, MessageId, UserId};
use serde::{Deserialize, Serialize};

use super::{Store, StoreError};

/// Something that must still leave this node: a message or a receipt, kept as plaintext and
/// sealed at each attempt (sealing state is per process, see [`PeerSessions`]).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct OutboxEntry {
    /// Position in the outbox: entries leave in this order, also after a restart.
    pub seq: u64,
    /// The message id (also the envelope id).
    pub id: MessageId,
    /// Recipient.
    pub to: UserId,
    /// What to seal.
    pub plaintext: Plaintext,
    /// When it expires, unix ms.
    pub expires_at_ms: u64,
    /// Whether it is a conversation message (its status is tracked) or a receipt.
    pub tracked: bool,
}

impl Store {
    fn outbox_key(entry: &OutboxEntry) -> Vec<u8> {
        let mut key = entry.seq.to_be_bytes().to_vec();
        key.extend_from_slice(entry.id.as_bytes());
        key
    }

    /// Adds an outbox entry.
    pub fn outbox_put(&self, entry: &OutboxEntry) -> Result<(), StoreError> {
        self.outbox
            .insert(Self::outbox_key(entry), codec::encode(entry)?)?;
        Ok(())
    }

    /// Removes an outbox entry (it left, or expired).
    pub fn outbox_remove(&self, entry: &OutboxEntry) -> Result<(), StoreError> {
        self.outbox.remove(Self::outbox_key(entry))?;
        Ok(())
    }

    /// Every outbox entry, oldest first (one that does not decode is quarantined and left
    /// out).
    pub fn outbox_all(&self) -> Result<Vec<OutboxEntry>, StoreError> {
        self.decode_all(&self.outbox)
    }
}
