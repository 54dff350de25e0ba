//! Conversations: stored messages, their index by (direction, other party, id), the unread
//! marks, paging, and the migration of the index to that key.
//!
//! It returns records ([`StoredMessage`]), never API views (the view module builds those).

use kith_protocol::{codec, DeliveryStatus, MessageId, UserId};
use serde::{Deserialize, Serialize};

use super::{Store, StoreError};
use crate::media::MediaId;
use kith_protocol::blob::BlobHash;

/// Which way a stored message went; with the other party and the id, what identifies it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// Received from the other party.
    Incoming,
    /// Sent by the local user to the other party.
    Outgoing,
}

impl Direction {
    /// The direction of a stored message.
    pub fn of(msg: &StoredMessage) -> Self {
        if msg.outgoing {
            Direction::Outgoing
        } else {
            Direction::Incoming
        }
    }
}

/// The key of a message in `message_ids`: `direction ‖ len(peer) ‖ peer ‖ id`.
pub(crate) fn id_key(direction: Direction, peer: &UserId, id: &MessageId) -> Vec<u8> {
    let peer = peer.to_bytes();
    let mut key = Vec::with_capacity(2 + peer.len() + 16);
    key.push(match direction {
        Direction::Incoming => 0,
        Direction::Outgoing => 1,
    });
    key.push(peer.len() as u8);
    key.extend_from_slice(&peer);
    key.extend_from_slice(id.as_bytes());
    key
}

/// A message of a conversation as stored.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StoredMessage {
    /// Its id.
    pub id: MessageId,
    /// The other user of the conversation.
    pub peer: UserId,
    /// Sent by the local user (else received from `peer`).
    pub outgoing: bool,
    /// The text.
    pub text: String,
    /// Client metadata, JSON text.
    pub client_meta: String,
    /// When the sender composed it, unix ms.
    pub sent_at_ms: u64,
    /// When this node stored it, unix ms.
    pub stored_at_ms: u64,
    /// Delivery status (outgoing), or delivered/read (incoming).
    pub status: DeliveryStatus,
    /// The media blob it carries, if any (its record is in the `media` tree).
    pub media: Option<BlobHash>,
}

// The media layer sits below the store and never names its records: the way from a stored
// message to its media id lives here, beside the message.
impl MediaId {
    /// The id of the media carried by a stored message (whether or not it carries any).
    pub fn of_message(msg: &StoredMessage) -> Self {
        MediaId {
            outgoing: msg.outgoing,
            peer: msg.peer,
            message: msg.id,
        }
    }
}

pub(crate) fn conv_prefix(peer: &UserId) -> Vec<u8> {
    let bytes = peer.to_bytes();
    let mut key = Vec::with_capacity(1 + bytes.len() + 8);
    key.push(bytes.len() as u8);
    key.extend_from_slice(&bytes);
    key
}

pub(crate) fn conv_key(peer: &UserId, seq: u64) -> Vec<u8> {
    let mut key = conv_prefix(peer);
    key.extend_from_slice(&seq.to_be_bytes());
    key
}

impl Store {
    /// Whether the message `id` exchanged with `peer` in `direction` is already stored
    /// (dedupe: for an incoming message, `peer` is its sender).
    pub fn has_message(
        &self,
        direction: Direction,
        peer: &UserId,
        id: &MessageId,
    ) -> Result<bool, StoreError> {
        Ok(self.message_ids.contains_key(id_key(direction, peer, id))?)
    }

    /// Stores a conversation message (outgoing or incoming). Returns false, writing nothing,
    /// when that message (same direction, other party and id) is already stored.
    pub fn insert_message(&self, msg: &StoredMessage) -> Result<bool, StoreError> {
        let id_key = id_key(Direction::of(msg), &msg.peer, &msg.id);
        if self.message_ids.contains_key(&id_key)? {
            return Ok(false);
        }
        let key = conv_key(&msg.peer, self.db.generate_id()?);
        let value = codec::encode(msg)?;
        let unread = !msg.outgoing && msg.status < DeliveryStatus::Read;
        // No sled transaction: in sled 0.34 one transaction anywhere in the process turns
        // every later read of every database into a shared lock that deadlocks against a
        // database being dropped (seen with several nodes in one test process). Instead the
        // writes go in an order whose every prefix is safe — the search entries, the message, its
        // unread mark, then its index entry — and what a crash can leave behind (a message without its
        // index entry, which would be stored again on redelivery) is repaired when the store
        // opens after an unclean stop ([`Store::repair_message_index`]).
        self.index_message(&key, &msg.text)?;
        self.messages.insert(key.as_slice(), value.as_slice())?;
        if unread {
            self.unread.insert(key.as_slice(), &[][..])?;
        }
        self.message_ids.insert(id_key.as_slice(), key.as_slice())?;
        Ok(true)
    }

    /// Gives every stored message whose index entry is missing (a crash between the writes
    /// of [`Store::insert_message`]) its entry; a second copy of a message already indexed
    /// (stored again before the repair) is removed. Returns how many were repaired.
    pub(crate) fn repair_message_index(&self) -> Result<usize, StoreError> {
        let mut repaired = 0;
        for item in self.messages.iter() {
            let (key, bytes) = item?;
            let Some(msg) = self.decode_message(&key, &bytes)? else {
                continue;
            };
            let id_key = id_key(Direction::of(&msg), &msg.peer, &msg.id);
            match self.message_ids.get(&id_key)? {
                Some(indexed) if indexed == key => {}
                Some(_) => {
                    self.messages.remove(&key)?;
                    self.unread.remove(&key)?;
                    repaired += 1;
                }
                None => {
                    self.message_ids.insert(id_key, key)?;
                    repaired += 1;
                }
            }
        }
        Ok(repaired)
    }

    /// The stored message `id` exchanged with `peer` in `direction`.
    pub fn message(
        &self,
        direction: Direction,
        peer: &UserId,
        id: &MessageId,
    ) -> Result<Option<StoredMessage>, StoreError> {
        let Some(key) = self.message_ids.get(id_key(direction, peer, id))? else {
            return Ok(None);
        };
        match self.messages.get(&key)? {
            None => Ok(None),
            Some(v) => self.decode_message(&key, &v),
        }
    }

    /// Moves the status of our message `id` to `peer` forward. Returns the message if it
    /// changed.
    pub fn advance_status(
        &self,
        peer: &UserId,
        id: &MessageId,
        to: DeliveryStatus,
    ) -> Result<Option<StoredMessage>, StoreError> {
        let Some(key) = self
            .message_ids
            .get(id_key(Direction::Outgoing, peer, id))?
        else {
            return Ok(None);
        };
        let Some(v) = self.messages.get(&key)? else {
            return Ok(None);
        };
        let Some(mut msg) = self.decode_message(&key, &v)? else {
            return Ok(None);
        };
        if !msg.outgoing || !msg.status.advance(to) {
            return Ok(None);
        }
        self.messages.insert(&key, codec::encode(&msg)?)?;
        Ok(Some(msg))
    }

    /// Marks every unread received message from `peer` read; returns their ids, oldest first.
    pub fn mark_read(&self, peer: &UserId) -> Result<Vec<MessageId>, StoreError> {
        let mut ids = Vec::new();
        for item in self.unread.scan_prefix(conv_prefix(peer)) {
            let (key, _) = item?;
            let stored = match self.messages.get(&key)? {
                Some(v) => self.decode_message(&key, &v)?,
                None => None,
            };
            if let Some(mut msg) = stored {
                if msg.status.advance(DeliveryStatus::Read) {
                    self.messages.insert(&key, codec::encode(&msg)?)?;
                }
                ids.push(msg.id);
            }
            self.unread.remove(&key)?;
        }
        Ok(ids)
    }

    /// How many received messages from `peer` are unread, counting at most `limit`.
    pub fn unread_count(&self, peer: &UserId, limit: usize) -> Result<usize, StoreError> {
        let mut count = 0;
        for item in self.unread.scan_prefix(conv_prefix(peer)).take(limit) {
            item?;
            count += 1;
        }
        Ok(count)
    }

    /// A page of the conversation with `peer`, newest first: skip `offset`, take `count`,
    /// only messages composed after `since_ms`. Also says whether older messages remain.
    pub fn page(
        &self,
        peer: &UserId,
        offset: usize,
        count: usize,
        since_ms: Option<u64>,
    ) -> Result<(Vec<StoredMessage>, bool), StoreError> {
        let mut out = Vec::with_capacity(count);
        let mut skipped = 0usize;
        for item in self.messages.scan_prefix(conv_prefix(peer)).rev() {
            let (k, v) = item?;
            let Some(msg) = self.decode_message(&k, &v)? else {
                continue;
            };
            if let Some(since) = since_ms {
                if msg.sent_at_ms <= since {
                    continue;
                }
            }
            if skipped < offset {
                skipped += 1;
                continue;
            }
            if out.len() == count {
                return Ok((out, true));
            }
            out.push(msg);
        }
        Ok((out, false))
    }
}

/// The leading fields of a [`StoredMessage`], the same in every format it had: enough to
/// index a message whatever its later fields are.
#[derive(Deserialize)]
struct StoredMessageHead {
    id: MessageId,
    peer: UserId,
    outgoing: bool,
}

/// Migration step: converts a node database's `message_ids` from the id-only layout to the
/// (direction, other party, id) layout. Idempotent; returns how many messages it indexed.
///
/// Expects: `messages` as it always was (`len(peer) ‖ peer ‖ seq` → [`StoredMessage`], in any
/// of its formats: only its leading fields `id`, `peer`, `outgoing` are read); `message_ids`
/// in either layout (old: message id → key in `messages`).
///
/// Produces: `message_ids` rebuilt from `messages` as `direction ‖ len(peer) ‖ peer ‖ id` →
/// key in `messages` (direction 0 incoming, 1 outgoing). A value of `messages` whose leading
/// fields do not decode is left where it is, unindexed, and logged (it cannot be looked up by
/// id, so a redelivery of it would be stored again). Messages of different senders that share
/// an id each get their own entry.
pub(crate) fn migrate_message_ids_to_sender_and_id(db: &sled::Db) -> Result<usize, StoreError> {
    let messages = db.open_tree("messages")?;
    let message_ids = db.open_tree("message_ids")?;
    message_ids.clear()?;
    let mut n = 0;
    for item in messages.iter() {
        let (key, value) = item?;
        let head: StoredMessageHead = match codec::decode_prefix(&value) {
            Ok(head) => head,
            Err(e) => {
                tracing::warn!(error = %e, "stored message does not decode; left unindexed");
                continue;
            }
        };
        let direction = if head.outgoing {
            Direction::Outgoing
        } else {
            Direction::Incoming
        };
        message_ids.insert(id_key(direction, &head.peer, &head.id), key)?;
        n += 1;
    }
    Ok(n)
}
