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
//! - `requests`: user id bytes → [`Contact`]: people who wrote without being a contact, until
//!   the user accepts or blocks them (format 3). `blocked`: user id bytes → u64 unix ms when
//!   blocked (format 3).
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
//! - `peer_info`: user id bytes → [`PeerInfo`] (profile, verification, key-change links).
//! - `media` (before media records were bound to their message): blob hash → [`MediaRecord`];
//!   [`migrate_media_by_message`] moves it into the two trees above.
//! - `search_index`: word ‖ 0 ‖ tree ‖ message key → () (see [`search`]).
//! - `handled_envelopes`: envelopes opened that left no message record (see [`handled`]).
//! - the default tree: `kith_format_version` (see [`format`]); `quarantine`: values that did
//!   not decode, set aside (see [`crate::versioned`]).
//!
//! Code map: this file opens the database, keeps identity and `meta`, and runs the group
//! committer; [`messages`] (conversations, index, unread), [`contacts`], [`outbox`],
//! [`requests`], [`sessions`] and [`media`] (records, their one writer [`MediaWriter`], the migration) each
//! add the `Store` methods of their trees; [`format`] holds versions and decoding. The store
//! returns records, never API views.
//!
//! Versioned: [`Store::open`] and [`ensure_identity`] check the format version and migrate
//! an older database forward, or refuse a newer one ([`format`]). A stored value that does
//! not decode is quarantined where it is read: a page, the contact list or the outbox skips
//! it instead of failing.

mod contacts;
mod delete;
pub mod format;
pub(crate) mod groups;
mod handled;
mod media;
mod messages;
mod outbox;
mod peer_info;
mod requests;
mod search;
mod sessions;

use std::path::Path;

pub use kith_net::commit::Committer;
use kith_protocol::{codec, LocalIdentity};

use crate::versioned;

pub(crate) use contacts::migrate_contacts_to_bundle_v2;
pub use contacts::Contact;
pub use groups::{GroupRecord, GroupStoredMessage, OwnSenderKey};
pub(crate) use media::{migrate_media_by_message, MEDIA_BY_HASH, MEDIA_RECORDS};
pub use media::{MediaMigration, MediaWriter};
pub(crate) use messages::migrate_message_ids_to_sender_and_id;
#[cfg(test)]
use messages::{conv_key, id_key};
pub use messages::{Direction, StoredMessage};
pub use outbox::OutboxEntry;
pub use peer_info::PeerInfo;
pub use search::SearchHit;

/// Name of the sled database directory in the data directory.
pub const DB_DIR: &str = "db";

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
    Identity(#[source] kith_protocol::identity::IdentityError),
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

/// The sled database and the handle to its group committer.
#[derive(Clone)]
pub struct Store {
    db: sled::Db,
    /// The database's directory.
    path: std::path::PathBuf,
    meta: sled::Tree,
    contacts: sled::Tree,
    requests: sled::Tree,
    blocked: sled::Tree,
    messages: sled::Tree,
    message_ids: sled::Tree,
    unread: sled::Tree,
    outbox: sled::Tree,
    sessions: sled::Tree,
    session_index: sled::Tree,
    media: sled::Tree,
    media_by_hash: sled::Tree,
    group_trees: groups::GroupTrees,
    handled: handled::HandledEnvelopes,
    search_index: sled::Tree,
    peer_info: sled::Tree,
    committer: Committer,
}

impl Store {
    /// Opens (or creates) the database under `dir` and starts its committer task, which waits
    /// up to `commit_delay` to gather more writes into one flush. Must run inside a tokio runtime.
    /// An older format is migrated first; a newer one is refused ([`format`]).
    pub fn open(dir: &Path, commit_delay: std::time::Duration) -> Result<Self, StoreError> {
        let db = sled::Config::new()
            .path(dir)
            .mode(sled::Mode::HighThroughput)
            .flush_every_ms(Some(BACKGROUND_FLUSH_MS))
            .open()?;
        versioned::open(&db, dir, &format::NODE_SCHEMA)?;
        let committer = Committer::spawn(db.clone(), commit_delay);
        let store = Store {
            meta: db.open_tree("meta")?,
            contacts: db.open_tree("contacts")?,
            requests: db.open_tree(format::REQUESTS)?,
            blocked: db.open_tree(format::BLOCKED)?,
            messages: db.open_tree("messages")?,
            message_ids: db.open_tree("message_ids")?,
            unread: db.open_tree("unread")?,
            outbox: db.open_tree("outbox")?,
            sessions: db.open_tree("sessions")?,
            session_index: db.open_tree("session_index")?,
            media: db.open_tree(MEDIA_RECORDS)?,
            media_by_hash: db.open_tree(MEDIA_BY_HASH)?,
            group_trees: groups::GroupTrees::open(&db)?,
            handled: handled::HandledEnvelopes::open(&db, crate::time::now_ms())?,
            search_index: db.open_tree("search_index")?,
            peer_info: db.open_tree(peer_info::PEER_INFO)?,
            db,
            path: dir.to_path_buf(),
            committer,
        };
        // Set while open, cleared by a clean stop: found set, the last run stopped in the
        // middle of something, and what its writes may have left half done is repaired.
        if store.meta.insert(OPEN_MARK, &[1u8][..])?.is_some() {
            let repaired = store.repair_message_index()?;
            if repaired > 0 {
                tracing::warn!(repaired, "message index repaired after an unclean stop");
            }
        }
        store.build_search_index()?;
        Ok(store)
    }

    /// The database itself (for a backup's dump) and its directory.
    pub fn db_and_path(&self) -> (&sled::Db, &Path) {
        (&self.db, &self.path)
    }

    /// Resolves once every write made before the call is durable (group commit).
    pub fn commit(
        &self,
    ) -> impl std::future::Future<Output = Result<(), StoreError>> + Send + 'static {
        let commit = self.committer.commit();
        async move { commit.await.map_err(StoreError::from) }
    }

    /// Flushes everything now and marks the stop clean (used at shutdown).
    pub fn flush_now(&self) -> Result<(), StoreError> {
        self.db.flush()?;
        self.meta.remove(OPEN_MARK)?;
        self.db.flush()?;
        Ok(())
    }

    /// The stored identity, if any.
    pub fn identity(&self) -> Result<Option<LocalIdentity>, StoreError> {
        match self.meta.get("identity")? {
            None => Ok(None),
            Some(bytes) => LocalIdentity::from_bytes(&bytes)
                .map(Some)
                .map_err(StoreError::Identity),
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

    /// A value kept in `meta`, bincode-encoded; one that does not decode reads as absent (and
    /// is quarantined).
    pub fn meta_value<T: serde::de::DeserializeOwned>(
        &self,
        key: &str,
    ) -> Result<Option<T>, StoreError> {
        match self.meta.get(key)? {
            None => Ok(None),
            Some(v) => self.decode(&self.meta, key.as_bytes(), &v),
        }
    }

    /// Sets a bincode-encoded value in `meta`.
    pub fn set_meta_value<T: serde::Serialize>(
        &self,
        key: &str,
        value: &T,
    ) -> Result<(), StoreError> {
        self.meta
            .insert(key, kith_protocol::codec::encode(value)?)?;
        Ok(())
    }

    /// A fresh number, larger than every number handed out before (also across restarts).
    pub fn next_seq(&self) -> Result<u64, StoreError> {
        Ok(self.db.generate_id()?)
    }
}

/// How often sled flushes on its own, in ms. What the node promises (a message the API
/// answered, a receipt) is flushed by the committer before it is acknowledged; this only
/// bounds how long other writes (transfer progress, last seen) may wait for the next commit.
/// sled's default, 500 ms, woke an idle node for an fsync twice a second.
const BACKGROUND_FLUSH_MS: u64 = 10_000;

/// The `meta` key present while a store is open (see [`Store::open`]).
const OPEN_MARK: &str = "open";

/// Opens the database without the committer (for `kith init`, outside a runtime), loads or
/// creates the identity, and closes it again.
pub fn ensure_identity(dir: &Path) -> Result<LocalIdentity, StoreError> {
    let db = sled::open(dir)?;
    versioned::open(&db, dir, &format::NODE_SCHEMA)?;
    let meta = db.open_tree("meta")?;
    if let Some(bytes) = meta.get("identity")? {
        return LocalIdentity::from_bytes(&bytes).map_err(StoreError::Identity);
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
