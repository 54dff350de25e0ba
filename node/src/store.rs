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
//! - `media_records`: [`MediaId`] key (direction ‖ len(peer) ‖ peer ‖ message id) →
//!   [`MediaRecord`]: one record per message that carried media (the file lives under `media/`).
//! - `media_by_hash`: blob hash ‖ [`MediaId`] key → (), to find the records naming a hash.
//! - `media` (before media records were bound to their message): blob hash → [`MediaRecord`];
//!   [`migrate_media_by_message`] moves it into the two trees above.
//! - the default tree: `kith_format_version` (see [`format`]); `quarantine`: values that did
//!   not decode, set aside (see [`crate::versioned`]).
//!
//! Versioned: [`Store::open`] and [`ensure_identity`] check the format version and migrate
//! an older database forward, or refuse a newer one ([`format`]). A stored value that does
//! not decode is quarantined where it is read: a page, the contact list or the outbox skips
//! it instead of failing.

pub mod format;

use std::path::Path;

use sled::{transaction::TransactionError, Transactional};

pub use kith_net::commit::Committer;
use kith_protocol::{
    codec, identity::KeyBundle, payload::Plaintext, seal::SessionId, DeliveryStatus, LocalIdentity,
    MessageId, PeerSessions, UserId,
};
use libp2p::Multiaddr;
use serde::{Deserialize, Serialize};

use crate::{
    media::{MediaFiles, MediaId, MediaRecord, MediaState},
    versioned,
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
    /// The database's format version is not one this build can open.
    #[error(transparent)]
    Format(#[from] crate::versioned::FormatError),
    /// A media file could not be moved to its name.
    #[error("media file {path}: {source}")]
    MediaFile {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        source: std::io::Error,
    },
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
    media_by_hash: sled::Tree,
    committer: Committer,
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
    /// An older format is migrated first; a newer one is refused ([`format`]).
    pub fn open(dir: &Path, commit_delay: std::time::Duration) -> Result<Self, StoreError> {
        let db = sled::Config::new()
            .path(dir)
            .mode(sled::Mode::HighThroughput)
            .open()?;
        versioned::open(&db, dir, &format::NODE_SCHEMA)?;
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
            media: db.open_tree(MEDIA_RECORDS)?,
            media_by_hash: db.open_tree(MEDIA_BY_HASH)?,
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
        let key = user.to_bytes();
        match self.contacts.get(&key)? {
            None => Ok(None),
            Some(v) => self.decode(&self.contacts, &key, &v),
        }
    }

    /// All contacts (one that does not decode is quarantined and left out).
    pub fn contacts(&self) -> Result<Vec<Contact>, StoreError> {
        self.decode_all(&self.contacts)
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
        let value = codec::encode(msg)?;
        let unread = !msg.outgoing && msg.status < DeliveryStatus::Read;
        // One transaction: after a crash the message, its unread mark and its index entry are
        // all there or none is. (A message without its index entry — what sled's recovery of
        // separate inserts can leave — would be stored again on redelivery: the fault
        // campaign saw exactly that duplicate.)
        let stored = (&self.messages, &self.unread, &self.message_ids)
            .transaction(|(messages, unread_tree, ids)| {
                if ids.get(&id_key)?.is_some() {
                    return Ok(false);
                }
                messages.insert(key.as_slice(), value.as_slice())?;
                if unread {
                    unread_tree.insert(key.as_slice(), &[][..])?;
                }
                ids.insert(id_key.as_slice(), key.as_slice())?;
                Ok(true)
            })
            .map_err(|e: TransactionError<std::convert::Infallible>| match e {
                TransactionError::Storage(e) => StoreError::Sled(e),
                TransactionError::Abort(never) => match never {},
            })?;
        Ok(stored)
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

    /// The media record of one message.
    pub fn media(&self, id: &MediaId) -> Result<Option<MediaRecord>, StoreError> {
        match self.media.get(id.to_key())? {
            None => Ok(None),
            Some(v) => self.decode(&self.media, &id.to_key(), &v),
        }
    }

    /// The writer of the media trees. Only the transfer layer holds one
    /// ([`crate::transfer::spawn`]): it is their one writer; everyone else reads.
    pub fn media_writer(&self) -> MediaWriter {
        MediaWriter {
            media: self.media.clone(),
            media_by_hash: self.media_by_hash.clone(),
        }
    }

    /// Every record of messages that named `hash` (a record that does not decode is quarantined and left out).
    pub fn media_for_hash(&self, hash: &BlobHash) -> Result<Vec<MediaRecord>, StoreError> {
        let mut out = Vec::new();
        for item in self.media_by_hash.scan_prefix(hash.0) {
            let (key, _) = item?;
            let Some(v) = self.media.get(&key[hash.0.len()..])? else {
                continue;
            };
            match self.decode::<MediaRecord>(&self.media, &key[hash.0.len()..], &v)? {
                Some(rec) if rec.hash == *hash => out.push(rec),
                Some(_) => tracing::warn!(%hash, "media index names a record of another hash"),
                None => {}
            }
        }
        Ok(out)
    }

    /// The record the local user means by a blob hash (`GET /v1/media/{hash}`): one they sent,
    /// else a complete one, else one in progress, else any.
    pub fn media_by_hash(&self, hash: &BlobHash) -> Result<Option<MediaRecord>, StoreError> {
        let rank = |r: &MediaRecord| match (r.outgoing, r.state) {
            (true, _) => 0,
            (false, MediaState::Complete) => 1,
            (false, MediaState::Downloading) => 2,
            _ => 3,
        };
        Ok(self.media_for_hash(hash)?.into_iter().min_by_key(rank))
    }

    /// Every media record (to resume transfers at start; one that does not decode is
    /// quarantined and left out).
    pub fn all_media(&self) -> Result<Vec<MediaRecord>, StoreError> {
        self.decode_all(&self.media)
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

    /// Every outbox entry, oldest first (one that does not decode is quarantined and left
    /// out).
    pub fn outbox_all(&self) -> Result<Vec<OutboxEntry>, StoreError> {
        self.decode_all(&self.outbox)
    }

    /// The stored (inbound) sessions with `peer`.
    /// Sessions that do not decode are quarantined and read as none, so one bad value
    /// does not stop every later message from that peer being processed.
    pub fn sessions(&self, peer: &UserId) -> Result<PeerSessions, StoreError> {
        let key = peer.to_bytes();
        match self.sessions.get(&key)? {
            None => Ok(PeerSessions::default()),
            Some(v) => Ok(self.decode(&self.sessions, &key, &v)?.unwrap_or_default()),
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

/// The one writer of the media records (`media_records` and its index `media_by_hash`).
#[derive(Clone)]
pub struct MediaWriter {
    media: sled::Tree,
    media_by_hash: sled::Tree,
}

impl MediaWriter {
    /// Writes a media record under its message (and indexes it by hash).
    pub fn put(&self, rec: &MediaRecord) -> Result<(), StoreError> {
        let key = rec.id().to_key();
        // The index first: a record is never unreachable by hash.
        self.media_by_hash
            .insert(hash_index_key(&rec.hash, &key), &[])?;
        self.media.insert(key, codec::encode(rec)?)?;
        Ok(())
    }
}

/// The tree of media records keyed by [`MediaId`].
const MEDIA_RECORDS: &str = "media_records";
/// The index of media records by blob hash.
const MEDIA_BY_HASH: &str = "media_by_hash";
/// The tree of media records keyed by blob hash alone (the layout before [`MediaId`]).
const LEGACY_MEDIA: &str = "media";

/// `hash ‖ media id key`: the `media_by_hash` key of a record.
fn hash_index_key(hash: &BlobHash, media_key: &[u8]) -> Vec<u8> {
    let mut key = Vec::with_capacity(hash.0.len() + media_key.len());
    key.extend_from_slice(&hash.0);
    key.extend_from_slice(media_key);
    key
}

/// What [`migrate_media_by_message`] did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct MediaMigration {
    /// Records moved to their message's key.
    pub moved: usize,
    /// Received files renamed from `<hash>` (or `<hash>.part`) to their record's name.
    pub files_renamed: usize,
    /// Values that did not decode, left where they were in the old tree.
    pub kept_aside: usize,
}

/// Migrates media records from "keyed by blob hash" to "keyed by the message that carried
/// them" (issue #11: a second message naming a hash must not shadow the first).
///
/// Expects: tree `media` with key = 32-byte blob hash, value = a bincode [`MediaRecord`] (it
/// already names its `message`, `peer` and `outgoing`); received files at
/// `<media_dir>/<hash hex>` (complete) or `<media_dir>/<hash hex>.part` (in progress).
///
/// Produces: tree `media_records` with key = [`MediaId::to_key`] of the record, value = the
/// same record; tree `media_by_hash` with key = hash ‖ media id key, value empty; received
/// files at [`MediaFiles::received_path`] / [`MediaFiles::part_path`]. Sent files stay at
/// `<hash hex>` ([`MediaFiles::sent_path`]). Each old entry is removed once moved.
///
/// Idempotent and safe to interrupt: each entry is copied (unless its new key already holds a
/// record, which then wins), its file renamed (unless the new name exists), and only then
/// removed from `media`; running it again finishes what a crash left. A value that does not
/// decode stays in `media`, counted in [`MediaMigration::kept_aside`], never dropped. Flushes
/// before returning.
pub(crate) fn migrate_media_by_message(
    db: &sled::Db,
    media_dir: &Path,
) -> Result<MediaMigration, StoreError> {
    let old = db.open_tree(LEGACY_MEDIA)?;
    let records = db.open_tree(MEDIA_RECORDS)?;
    let by_hash = db.open_tree(MEDIA_BY_HASH)?;
    let files = MediaFiles::at(media_dir);
    let mut done = MediaMigration::default();
    for item in old.iter() {
        let (old_key, value) = item?;
        let rec: MediaRecord = match codec::decode(&value) {
            Ok(rec) => rec,
            Err(e) => {
                tracing::warn!(key = %hex::encode(&old_key), error = %e, "old media record does not decode; kept aside in tree `media`");
                done.kept_aside += 1;
                continue;
            }
        };
        let id = rec.id();
        let key = id.to_key();
        if !rec.outgoing {
            let renames = [
                (media_dir.join(rec.hash.to_hex()), files.received_path(&id)),
                (
                    media_dir.join(format!("{}.part", rec.hash.to_hex())),
                    files.part_path(&id),
                ),
            ];
            for (from, to) in renames {
                if from.exists() && !to.exists() {
                    std::fs::rename(&from, &to)
                        .map_err(|source| StoreError::MediaFile { path: from, source })?;
                    // Durable before the old entry's removal can be.
                    crate::media::sync_dir(media_dir);
                    done.files_renamed += 1;
                }
            }
        }
        by_hash.insert(hash_index_key(&rec.hash, &key), &[])?;
        if records.get(&key)?.is_none() {
            records.insert(key, value.clone())?;
        }
        // sled recovers a consistent prefix of its log: if this removal survives a crash, so
        // do the two inserts above.
        old.remove(&old_key)?;
        done.moved += 1;
    }
    db.flush()?;
    Ok(done)
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

/// Opens the database without the committer (for `kith init`, outside a runtime), loads or
/// creates the identity, and closes it again.
pub fn ensure_identity(dir: &Path) -> Result<LocalIdentity, StoreError> {
    let db = sled::open(dir)?;
    versioned::open(&db, dir, &format::NODE_SCHEMA)?;
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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod media_tests;

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod id_tests;
