//! The node's storage in sled: identity, contacts, conversations, the outbox, statuses and
//! session state, plus the group committer that makes writes durable in batches.
//!
//! Durability: a write is durable once [`Store::commit`] resolves. Commits are grouped: one
//! task drains every waiting request and flushes once, so a burst of sends costs one flush.
//! sled's flush is `sync_file_range`-based, not `fsync`: it survives `kill -9` of the process;
//! a power loss may lose the last writes the disk's volatile cache still held, and sled's log
//! recovers to a consistent prefix.
//!
//! Layout (all keys big-endian so sled's order is the logical order):
//! - `meta`: `identity` → [`LocalIdentity`]; `share_last_seen` → u64 (1 share, 0 hide).
//! - `contacts`: user id bytes → [`Contact`].
//! - `messages`: `len(peer) ‖ peer ‖ seq` → [`StoredMessage`] (seq from sled's monotonic ids,
//!   so a conversation is in arrival order).
//! - `message_ids`: `direction ‖ len(peer) ‖ peer ‖ message id` → key in `messages` (dedupe
//!   and status updates). A message is identified by who sent it: incoming ones by (sender,
//!   id), outgoing ones by (recipient, id), `direction` being 0 for incoming and 1 for
//!   outgoing. Ids are chosen by senders, so another sender reusing an id makes another
//!   message, never a duplicate of this one. (The layout before keyed by id alone;
//!   [`migrate_message_ids_to_sender_and_id`] converts it.)
//! - `unread`: key in `messages` → (), for received messages the user has not read.
//! - `outbox`: `seq ‖ message id` → [`OutboxEntry`] (what still has to leave this node).
//! - `sessions`: peer → inbound [`PeerSessions`]; `session_index`: session id → peer.
//! - `media`: blob hash → [`MediaRecord`] (the file itself lives under `media/`).

use std::path::Path;

use kith_protocol::{
    codec, identity::KeyBundle, payload::Plaintext, seal::SessionId, DeliveryStatus, LocalIdentity,
    MessageId, PeerSessions, UserId,
};
use libp2p::Multiaddr;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};

use crate::{
    handle::{ContactView, MessageView},
    media::MediaRecord,
};
use kith_protocol::blob::BlobHash;

/// Why a storage operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// sled failed (I/O, or the database is corrupt).
    #[error("database: {0}")]
    Sled(#[from] sled::Error),
    /// A stored value does not decode.
    #[error("stored value does not decode: {0}")]
    Codec(#[from] codec::CodecError),
    /// The stored identity is invalid.
    #[error("stored identity is invalid: {0}")]
    Identity(String),
}

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
fn id_key(direction: Direction, peer: &UserId, id: &MessageId) -> Vec<u8> {
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

/// A contact: someone we can message.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Contact {
    /// Their user id.
    pub user: UserId,
    /// The name the local user gave them.
    pub name: String,
    /// Their latest verified key bundle.
    pub bundle: KeyBundle,
    /// Their known addresses (multiaddr bytes).
    pub addrs: Vec<Vec<u8>>,
    /// When they were added, unix ms.
    pub added_at_ms: u64,
}

impl Contact {
    /// Known addresses, parsed.
    pub fn multiaddrs(&self) -> Vec<Multiaddr> {
        self.addrs
            .iter()
            .filter_map(|a| Multiaddr::try_from(a.clone()).ok())
            .collect()
    }

    /// The API view.
    pub fn view(&self) -> ContactView {
        ContactView {
            user_id: self.user.to_string(),
            name: self.name.clone(),
            addrs: self.multiaddrs().iter().map(|a| a.to_string()).collect(),
        }
    }
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

impl StoredMessage {
    /// The API view, given the local user.
    pub fn view(&self, me: &UserId) -> MessageView {
        let (from, to) = if self.outgoing {
            (*me, self.peer)
        } else {
            (self.peer, *me)
        };
        MessageView {
            id: self.id.to_string(),
            from: from.to_string(),
            to: to.to_string(),
            text: self.text.clone(),
            client_meta: serde_json::from_str(&self.client_meta)
                .unwrap_or_else(|_| serde_json::Value::Object(Default::default())),
            sent_at: crate::time::rfc3339(self.sent_at_ms),
            sent_at_ms: self.sent_at_ms,
            status: self.status,
            outgoing: self.outgoing,
            media: None,
        }
    }
}

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

/// The sled database and the handle to its group committer.
#[derive(Clone)]
pub struct Store {
    db: sled::Db,
    meta: sled::Tree,
    contacts: sled::Tree,
    messages: sled::Tree,
    message_ids: sled::Tree,
    unread: sled::Tree,
    outbox: sled::Tree,
    sessions: sled::Tree,
    session_index: sled::Tree,
    media: sled::Tree,
    committer: Committer,
}

/// Group commit for a sled database: [`Committer::commit`] resolves once every write made
/// before the call is flushed; one flush serves every request waiting at that moment.
#[derive(Clone)]
pub struct Committer {
    requests: mpsc::Sender<oneshot::Sender<Result<(), sled::Error>>>,
}

impl Committer {
    /// Starts the committer task for `db`; it waits up to `delay` to gather more requests.
    /// Must run inside a tokio runtime.
    pub fn spawn(db: sled::Db, delay: std::time::Duration) -> Self {
        let (requests, rx) = mpsc::channel(4096);
        tokio::spawn(run_committer(db, rx, delay));
        Committer { requests }
    }

    /// Resolves once everything written before the call is durable.
    pub fn commit(
        &self,
    ) -> impl std::future::Future<Output = Result<(), sled::Error>> + Send + 'static {
        let requests = self.requests.clone();
        async move {
            let (tx, rx) = oneshot::channel();
            let stopped = || sled::Error::ReportableBug("commit task stopped".into());
            requests.send(tx).await.map_err(|_| stopped())?;
            rx.await.map_err(|_| stopped())?
        }
    }
}

fn conv_prefix(peer: &UserId) -> Vec<u8> {
    let bytes = peer.to_bytes();
    let mut key = Vec::with_capacity(1 + bytes.len() + 8);
    key.push(bytes.len() as u8);
    key.extend_from_slice(&bytes);
    key
}

fn conv_key(peer: &UserId, seq: u64) -> Vec<u8> {
    let mut key = conv_prefix(peer);
    key.extend_from_slice(&seq.to_be_bytes());
    key
}

impl Store {
    /// Opens (or creates) the database under `dir` and starts its committer task, which waits
    /// up to `commit_delay` to gather more writes into one flush. Must run inside a tokio runtime.
    pub fn open(dir: &Path, commit_delay: std::time::Duration) -> Result<Self, StoreError> {
        let db = sled::Config::new()
            .path(dir)
            .mode(sled::Mode::HighThroughput)
            .open()?;
        let committer = Committer::spawn(db.clone(), commit_delay);
        Ok(Store {
            meta: db.open_tree("meta")?,
            contacts: db.open_tree("contacts")?,
            messages: db.open_tree("messages")?,
            message_ids: db.open_tree("message_ids")?,
            unread: db.open_tree("unread")?,
            outbox: db.open_tree("outbox")?,
            sessions: db.open_tree("sessions")?,
            session_index: db.open_tree("session_index")?,
            media: db.open_tree("media")?,
            db,
            committer,
        })
    }

    /// Resolves once every write made before the call is durable (group commit).
    pub fn commit(
        &self,
    ) -> impl std::future::Future<Output = Result<(), StoreError>> + Send + 'static {
        let commit = self.committer.commit();
        async move { commit.await.map_err(StoreError::from) }
    }

    /// Flushes everything now (used at shutdown).
    pub fn flush_now(&self) -> Result<(), StoreError> {
        self.db.flush()?;
        Ok(())
    }

    /// The stored identity, if any.
    pub fn identity(&self) -> Result<Option<LocalIdentity>, StoreError> {
        match self.meta.get("identity")? {
            None => Ok(None),
            Some(bytes) => LocalIdentity::from_bytes(&bytes)
                .map(Some)
                .map_err(|e| StoreError::Identity(e.to_string())),
        }
    }

    /// Stores the identity (flushes at once: it is written rarely and must never be lost).
    pub fn set_identity(&self, id: &LocalIdentity) -> Result<(), StoreError> {
        self.meta.insert("identity", id.to_bytes()?)?;
        self.db.flush()?;
        Ok(())
    }

    /// A u64 kept in `meta`.
    pub fn meta_u64(&self, key: &str) -> Result<Option<u64>, StoreError> {
        Ok(self.meta.get(key)?.and_then(|v| {
            let arr: [u8; 8] = v.as_ref().try_into().ok()?;
            Some(u64::from_be_bytes(arr))
        }))
    }

    /// Sets a u64 in `meta`.
    pub fn set_meta_u64(&self, key: &str, value: u64) -> Result<(), StoreError> {
        self.meta.insert(key, &value.to_be_bytes())?;
        Ok(())
    }

    /// A contact by user id.
    pub fn contact(&self, user: &UserId) -> Result<Option<Contact>, StoreError> {
        match self.contacts.get(user.to_bytes())? {
            None => Ok(None),
            Some(v) => Ok(Some(codec::decode(&v)?)),
        }
    }

    /// All contacts.
    pub fn contacts(&self) -> Result<Vec<Contact>, StoreError> {
        self.contacts
            .iter()
            .values()
            .map(|v| Ok(codec::decode(&v?)?))
            .collect()
    }

    /// Adds or replaces a contact.
    pub fn put_contact(&self, contact: &Contact) -> Result<(), StoreError> {
        self.contacts
            .insert(contact.user.to_bytes(), codec::encode(contact)?)?;
        Ok(())
    }

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
        self.messages.insert(&key, codec::encode(msg)?)?;
        if !msg.outgoing && msg.status < DeliveryStatus::Read {
            self.unread.insert(&key, &[])?;
        }
        // The id index goes last: if a crash cuts this sequence short, the message is either
        // fully indexed or will be stored again on redelivery.
        self.message_ids.insert(id_key, key)?;
        Ok(true)
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
            Some(v) => Ok(Some(codec::decode(&v)?)),
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
        let mut msg: StoredMessage = codec::decode(&v)?;
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
            if let Some(v) = self.messages.get(&key)? {
                let mut msg: StoredMessage = codec::decode(&v)?;
                if msg.status.advance(DeliveryStatus::Read) {
                    self.messages.insert(&key, codec::encode(&msg)?)?;
                }
                ids.push(msg.id);
            }
            self.unread.remove(&key)?;
        }
        Ok(ids)
    }

    /// A page of the conversation with `peer`, newest first: skip `offset`, take `count`,
    /// only messages composed after `since_ms`. Also says whether older messages remain.
    pub fn page(
        &self,
        me: &UserId,
        peer: &UserId,
        offset: usize,
        count: usize,
        since_ms: Option<u64>,
    ) -> Result<(Vec<MessageView>, bool), StoreError> {
        let mut out = Vec::with_capacity(count);
        let mut skipped = 0usize;
        for item in self.messages.scan_prefix(conv_prefix(peer)).rev() {
            let (_, v) = item?;
            let msg: StoredMessage = codec::decode(&v)?;
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
            out.push(self.view(me, &msg));
        }
        Ok((out, false))
    }

    /// The API view of a stored message, with its media's current state.
    pub fn view(&self, me: &UserId, msg: &StoredMessage) -> MessageView {
        let mut view = msg.view(me);
        if let Some(hash) = &msg.media {
            view.media = match self.media(hash) {
                Ok(Some(rec)) => Some(Box::new(rec.view())),
                Ok(None) => None,
                Err(e) => {
                    tracing::warn!(error = %e, "media record unreadable");
                    None
                }
            };
        }
        view
    }

    /// The record of a media blob.
    pub fn media(&self, hash: &BlobHash) -> Result<Option<MediaRecord>, StoreError> {
        match self.media.get(hash.0)? {
            None => Ok(None),
            Some(v) => Ok(Some(codec::decode(&v)?)),
        }
    }

    /// Writes the record of a media blob.
    pub fn put_media(&self, rec: &MediaRecord) -> Result<(), StoreError> {
        self.media.insert(rec.hash.0, codec::encode(rec)?)?;
        Ok(())
    }

    /// Every media record (to resume transfers at start).
    pub fn all_media(&self) -> Result<Vec<MediaRecord>, StoreError> {
        let mut out = Vec::new();
        for item in self.media.iter() {
            let (_, v) = item?;
            match codec::decode(&v) {
                Ok(rec) => out.push(rec),
                Err(e) => tracing::warn!(error = %e, "media record does not decode; skipped"),
            }
        }
        Ok(out)
    }

    /// A fresh number, larger than every number handed out before (also across restarts).
    pub fn next_seq(&self) -> Result<u64, StoreError> {
        Ok(self.db.generate_id()?)
    }

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

    /// Every outbox entry, oldest first.
    pub fn outbox_all(&self) -> Result<Vec<OutboxEntry>, StoreError> {
        self.outbox
            .iter()
            .values()
            .map(|v| Ok(codec::decode(&v?)?))
            .collect()
    }

    /// The stored (inbound) sessions with `peer`.
    pub fn sessions(&self, peer: &UserId) -> Result<PeerSessions, StoreError> {
        match self.sessions.get(peer.to_bytes())? {
            None => Ok(PeerSessions::default()),
            Some(v) => Ok(codec::decode(&v)?),
        }
    }

    /// Stores the sessions with `peer` and indexes their inbound session ids.
    pub fn put_sessions(&self, peer: &UserId, sessions: &PeerSessions) -> Result<(), StoreError> {
        let peer_bytes = peer.to_bytes();
        for id in sessions.inbound_ids() {
            self.session_index.insert(id.0, peer_bytes.as_slice())?;
        }
        self.sessions.insert(peer_bytes, codec::encode(sessions)?)?;
        Ok(())
    }

    /// Which peer an inbound session belongs to.
    pub fn session_peer(&self, id: &SessionId) -> Result<Option<UserId>, StoreError> {
        match self.session_index.get(id.0)? {
            None => Ok(None),
            Some(v) => Ok(UserId::from_bytes(&v).ok()),
        }
    }
}

/// The leading fields of a [`StoredMessage`], the same in every format it had: enough to
/// index a message whatever its later fields are.
#[derive(Deserialize)]
#[allow(dead_code)] // read only by the migration step above (see its note)
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
// Called by the storage migration step that upgrades this layout (wired in with the
// storage versioning); unused until then.
#[allow(dead_code)]
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

/// Opens the database without the committer (for `kith init`, outside a runtime), loads or
/// creates the identity, and closes it again.
pub fn ensure_identity(dir: &Path) -> Result<LocalIdentity, StoreError> {
    let db = sled::open(dir)?;
    let meta = db.open_tree("meta")?;
    if let Some(bytes) = meta.get("identity")? {
        return LocalIdentity::from_bytes(&bytes).map_err(|e| StoreError::Identity(e.to_string()));
    }
    let mut rng = rand::rngs::OsRng;
    let id = LocalIdentity::generate(crate::time::now_ms(), &mut rng);
    meta.insert("identity", id.to_bytes()?)?;
    db.flush()?;
    Ok(id)
}

/// The group committer: one flush for every batch of waiting commit requests.
async fn run_committer(
    db: sled::Db,
    mut rx: mpsc::Receiver<oneshot::Sender<Result<(), sled::Error>>>,
    delay: std::time::Duration,
) {
    while let Some(first) = rx.recv().await {
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        let mut waiting = vec![first];
        while let Ok(next) = rx.try_recv() {
            waiting.push(next);
        }
        let db2 = db.clone();
        let result = match tokio::task::spawn_blocking(move || db2.flush()).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(sled::Error::ReportableBug("flush task panicked".into())),
        };
        for w in waiting {
            let _ = w.send(result.clone());
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn user() -> UserId {
        LocalIdentity::generate(0, &mut rand::rngs::OsRng).user_id()
    }

    fn msg(id: MessageId, peer: UserId, outgoing: bool, text: &str) -> StoredMessage {
        StoredMessage {
            id,
            peer,
            outgoing,
            text: text.into(),
            client_meta: "{}".into(),
            sent_at_ms: 1,
            stored_at_ms: 1,
            status: if outgoing {
                DeliveryStatus::Pending
            } else {
                DeliveryStatus::Delivered
            },
            media: None,
        }
    }

    #[tokio::test]
    async fn a_message_is_identified_by_direction_other_party_and_id() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), std::time::Duration::ZERO).unwrap();
        let (alice, mallory) = (user(), user());
        let x = MessageId([1; 16]);
        assert!(store
            .insert_message(&msg(x, mallory, false, "mallory's"))
            .unwrap());
        // Alice's message under the id mallory used first is another message.
        assert!(store
            .insert_message(&msg(x, alice, false, "alice's"))
            .unwrap());
        assert!(!store
            .insert_message(&msg(x, alice, false, "again"))
            .unwrap());
        // So is our own message to alice under that id.
        assert!(store.insert_message(&msg(x, alice, true, "ours")).unwrap());
        let text = |d, p| store.message(d, p, &x).unwrap().unwrap().text;
        assert_eq!(text(Direction::Incoming, &mallory), "mallory's");
        assert_eq!(text(Direction::Incoming, &alice), "alice's");
        assert_eq!(text(Direction::Outgoing, &alice), "ours");
        assert!(!store
            .has_message(Direction::Outgoing, &mallory, &x)
            .unwrap());
        // A status moves only for our message to that peer.
        assert!(store
            .advance_status(&mallory, &x, DeliveryStatus::Sent)
            .unwrap()
            .is_none());
        let moved = store
            .advance_status(&alice, &x, DeliveryStatus::Sent)
            .unwrap()
            .unwrap();
        assert_eq!(
            (moved.text.as_str(), moved.status),
            ("ours", DeliveryStatus::Sent)
        );
    }

    #[tokio::test]
    async fn migration_rebuilds_message_ids_by_sender_and_id_and_is_idempotent() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), std::time::Duration::ZERO).unwrap();
        let (alice, mallory, bob) = (user(), user(), user());
        let (x, y) = (MessageId([1; 16]), MessageId([2; 16]));
        let stored = [
            msg(x, mallory, false, "mallory's"),
            msg(x, alice, false, "alice's"),
            msg(y, bob, true, "ours"),
        ];
        for m in &stored {
            assert!(store.insert_message(m).unwrap());
        }
        // The old layout: message id → key in `messages` (one entry per id).
        store.message_ids.clear().unwrap();
        for item in store.messages.iter() {
            let (key, value) = item.unwrap();
            let m: StoredMessage = codec::decode(&value).unwrap();
            store.message_ids.insert(m.id.as_bytes(), key).unwrap();
        }
        // A value that does not decode is skipped, not fatal.
        store
            .messages
            .insert(conv_key(&bob, u64::MAX), &[0xff][..])
            .unwrap();
        for _ in 0..2 {
            assert_eq!(migrate_message_ids_to_sender_and_id(&store.db).unwrap(), 3);
            assert_eq!(store.message_ids.len(), 3);
            for m in &stored {
                let found = store
                    .message(Direction::of(m), &m.peer, &m.id)
                    .unwrap()
                    .unwrap();
                assert_eq!(found.text, m.text);
            }
        }
        assert!(!store.insert_message(&stored[1]).unwrap());
    }
}
