//! The node database's format version and its migrations (the machinery is in
//! [`crate::versioned`]).
//!
//! Versions:
//! - 1 (no version key): the layouts before format versions, including [`StoredMessage`]s
//!   written before media messages existed (without the `media` field).
//! - 2: every [`StoredMessage`] has the `media` field; media records are keyed by the message
//!   that carried them ([`super::migrate_media_by_message`]); `message_ids` is keyed by
//!   (direction, other party, id) ([`super::migrate_message_ids_to_sender_and_id`]).
//! - 3: the `requests` and `blocked` trees exist (message requests and blocking); nothing
//!   else changes, and an older build cannot know to keep strangers out of `contacts`.
//! - 4: contacts hold version 2 key bundles (the store peers the contact named) and the
//!   contact's mailbox access key ([`super::migrate_contacts_to_bundle_v2`]).
//!
//! To change the format: raise [`NODE_VERSION`] and append the steps that bring a database of
//! the previous version to it to [`NODE_STEPS`] (each idempotent, see [`Step`]).
//!
//! Also here: how [`super::Store`] decodes what it reads (quarantining what does not decode,
//! and reading a message in either layout).

use std::path::Path;

use kith_protocol::{codec, DeliveryStatus, MessageId, UserId};
use serde::{Deserialize, Serialize};

use super::{StoreError, StoredMessage};
use crate::versioned::{self, Schema, Step};

/// The format version this build reads and writes.
pub const NODE_VERSION: u32 = 4;

/// The tree of pending message requests (format 3).
pub const REQUESTS: &str = "requests";

/// The tree of blocked users (format 3).
pub const BLOCKED: &str = "blocked";

/// Every migration step of the node's database, oldest first.
pub const NODE_STEPS: &[Step<StoreError>] = &[
    Step {
        to: 2,
        name: "stored messages gain the media field",
        run: add_media_field,
    },
    Step {
        to: 2,
        name: "media records keyed by the message that carried them",
        run: media_by_message,
    },
    Step {
        to: 2,
        name: "message ids keyed by direction, other party and id",
        run: message_ids_by_sender,
    },
    Step {
        to: 3,
        name: "message requests and blocked users get their trees",
        run: request_trees,
    },
    Step {
        to: 4,
        name: "contacts hold version 2 bundles and an access key",
        run: contacts_bundle_v2,
    },
];

/// The node database's schema, checked by [`super::Store::open`] and
/// [`super::ensure_identity`].
pub const NODE_SCHEMA: Schema<StoreError> = Schema {
    what: "node",
    current: NODE_VERSION,
    steps: NODE_STEPS,
};

/// A [`StoredMessage`] as version 1 wrote it: the same fields, without `media`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct StoredMessageV1 {
    id: MessageId,
    peer: UserId,
    outgoing: bool,
    text: String,
    client_meta: String,
    sent_at_ms: u64,
    stored_at_ms: u64,
    status: DeliveryStatus,
}

impl From<StoredMessageV1> for StoredMessage {
    fn from(m: StoredMessageV1) -> Self {
        StoredMessage {
            id: m.id,
            peer: m.peer,
            outgoing: m.outgoing,
            text: m.text,
            client_meta: m.client_meta,
            sent_at_ms: m.sent_at_ms,
            stored_at_ms: m.stored_at_ms,
            status: m.status,
            media: None,
        }
    }
}

/// Decodes a stored message in the current layout or, failing that, in version 1's (a
/// message written by an older build after this database was migrated, e.g. after a
/// downgrade and upgrade). The error is the current layout's.
pub fn decode_message(bytes: &[u8]) -> Result<StoredMessage, codec::CodecError> {
    codec::decode::<StoredMessage>(bytes).or_else(|e| {
        codec::decode::<StoredMessageV1>(bytes)
            .map(StoredMessage::from)
            .map_err(|_| e)
    })
}

/// Decoding with quarantine: how [`super::Store`] reads every value, so one that does not
/// decode is set aside instead of failing the read.
impl super::Store {
    /// Decodes `bytes`, the value of `key` in `tree`; one that does not decode is quarantined
    /// (logged and set aside, see [`versioned::quarantine`]) and read as absent.
    pub(super) fn decode<T: serde::de::DeserializeOwned>(
        &self,
        tree: &sled::Tree,
        key: &[u8],
        bytes: &[u8],
    ) -> Result<Option<T>, StoreError> {
        Ok(versioned::decode_or_quarantine(&self.db, tree, key, bytes)?)
    }

    /// Decodes a stored message (`key` in `messages`), also one in version 1's layout;
    /// quarantines one that decodes as neither and reads it as absent.
    pub(super) fn decode_message(
        &self,
        key: &[u8],
        bytes: &[u8],
    ) -> Result<Option<StoredMessage>, StoreError> {
        match decode_message(bytes) {
            Ok(msg) => Ok(Some(msg)),
            Err(e) => {
                versioned::quarantine(&self.db, &self.messages, key, bytes, &e)?;
                Ok(None)
            }
        }
    }

    /// Every value of `tree` in key order, without those that do not decode (quarantined).
    pub(super) fn decode_all<T: serde::de::DeserializeOwned>(
        &self,
        tree: &sled::Tree,
    ) -> Result<Vec<T>, StoreError> {
        let mut out = Vec::new();
        for item in tree.iter() {
            let (k, v) = item?;
            out.extend(self.decode(tree, &k, &v)?);
        }
        Ok(out)
    }
}

/// Version 1 → 2: rewrites every message that decodes only as [`StoredMessageV1`] with
/// `media: None`. Messages that already decode are left alone (so a rerun is harmless);
/// ones that decode as neither are quarantined.
fn add_media_field(db: &sled::Db, _: &Path) -> Result<(), StoreError> {
    let messages = db.open_tree("messages")?;
    let mut converted = 0u64;
    for item in messages.iter() {
        let (key, bytes) = item?;
        if codec::decode::<StoredMessage>(&bytes).is_ok() {
            continue;
        }
        match decode_message(&bytes) {
            Ok(new) => {
                let new = codec::encode(&new)?;
                // Only if unchanged: nothing else runs during open, but never overwrite blindly.
                let _ = messages.compare_and_swap(&key, Some(&bytes), Some(new))?;
                converted += 1;
            }
            Err(e) => versioned::quarantine(db, &messages, &key, &bytes, &e)?,
        }
    }
    tracing::info!(converted, "stored messages given the media field");
    Ok(())
}

/// Version 1 → 2: media records move from "keyed by blob hash" to "keyed by their message"
/// (their files live in the data directory's media directory, beside the database).
fn media_by_message(db: &sled::Db, dir: &Path) -> Result<(), StoreError> {
    let data_dir = dir.parent().unwrap_or(dir);
    let done = super::migrate_media_by_message(db, &data_dir.join(crate::media::MEDIA_DIR))?;
    tracing::info!(?done, "media records migrated");
    Ok(())
}

/// Version 1 → 2: a message is identified by who sent it, not by its id alone.
fn message_ids_by_sender(db: &sled::Db, _: &Path) -> Result<(), StoreError> {
    let n = super::migrate_message_ids_to_sender_and_id(db)?;
    tracing::info!(n, "message ids re-indexed by sender");
    Ok(())
}

/// Version 2 → 3: creates the `requests` and `blocked` trees (idempotent: opening an
/// existing tree changes nothing). Contacts made by a first message under version 2 stay
/// contacts: the user saw them as such.
fn request_trees(db: &sled::Db, _: &Path) -> Result<(), StoreError> {
    db.open_tree(REQUESTS)?;
    db.open_tree(BLOCKED)?;
    Ok(())
}

/// Version 3 → 4: contacts' bundles name mailboxes; contacts carry an access key.
fn contacts_bundle_v2(db: &sled::Db, _: &Path) -> Result<(), StoreError> {
    let n = super::migrate_contacts_to_bundle_v2(db)?;
    tracing::info!(n, "contacts given version 2 bundles");
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn legacy(n: u8) -> StoredMessageV1 {
        StoredMessageV1 {
            id: MessageId([n; 16]),
            peer: kith_protocol::LocalIdentity::generate(0, &mut rand::rngs::OsRng).user_id(),
            outgoing: n.is_multiple_of(2),
            text: format!("text {n}"),
            client_meta: "{}".into(),
            sent_at_ms: 1_000 + n as u64,
            stored_at_ms: 2_000 + n as u64,
            status: DeliveryStatus::Delivered,
        }
    }

    #[test]
    fn legacy_messages_gain_the_media_field_and_a_rerun_changes_nothing() {
        let db = sled::Config::new().temporary(true).open().unwrap();
        let messages = db.open_tree("messages").unwrap();
        messages
            .insert("a", codec::encode(&legacy(1)).unwrap())
            .unwrap();
        let current = StoredMessage::from(legacy(2));
        messages
            .insert("b", codec::encode(&current).unwrap())
            .unwrap();
        messages.insert("c", &[0xff, 0xff, 0xff]).unwrap();
        add_media_field(&db, Path::new("unused")).unwrap();
        let after: Vec<_> = messages.iter().map(|i| i.unwrap()).collect();
        add_media_field(&db, Path::new("unused")).unwrap();
        let again: Vec<_> = messages.iter().map(|i| i.unwrap()).collect();
        assert_eq!(after, again);
        assert_eq!(after.len(), 2);
        let a: StoredMessage = codec::decode(&after[0].1).unwrap();
        assert_eq!(a.text, "text 1");
        assert_eq!(a.sent_at_ms, 1_001);
        assert!(a.media.is_none());
        let b: StoredMessage = codec::decode(&after[1].1).unwrap();
        assert_eq!(b.text, "text 2");
        let q = versioned::quarantined(&db).unwrap();
        assert_eq!(q.len(), 1);
        assert_eq!(
            (q[0].tree.as_str(), q[0].key.as_slice()),
            ("messages", &b"c"[..])
        );
    }

    #[tokio::test]
    async fn a_version_1_message_written_after_the_migration_still_pages() {
        // E.g. an older build ran on the migrated database, then this one again.
        let dir = tempfile::tempdir().unwrap();
        let store = super::super::Store::open(dir.path(), std::time::Duration::ZERO).unwrap();
        let old = legacy(1);
        let peer = old.peer;
        store
            .messages
            .insert(
                super::super::conv_key(&peer, 1),
                codec::encode(&old).unwrap(),
            )
            .unwrap();
        let (page, _) = store.page(&peer, 0, 10, None).unwrap();
        assert_eq!(page.len(), 1);
        assert_eq!(page[0].text, "text 1");
        assert!(versioned::quarantined(&store.db).unwrap().is_empty());
    }

    #[test]
    fn version_2_gains_the_request_trees_and_a_rerun_changes_nothing() {
        let db = sled::Config::new().temporary(true).open().unwrap();
        db.open_tree("contacts")
            .unwrap()
            .insert("c", "kept")
            .unwrap();
        assert!(!db
            .tree_names()
            .iter()
            .any(|n| n.as_ref() == REQUESTS.as_bytes()));
        request_trees(&db, Path::new("unused")).unwrap();
        db.open_tree(BLOCKED).unwrap().insert("b", "x").unwrap();
        request_trees(&db, Path::new("unused")).unwrap();
        let names = db.tree_names();
        for tree in [REQUESTS, BLOCKED] {
            assert!(
                names.iter().any(|n| n.as_ref() == tree.as_bytes()),
                "{tree}"
            );
        }
        assert_eq!(
            db.open_tree(BLOCKED).unwrap().len(),
            1,
            "a rerun keeps what is there"
        );
        assert_eq!(db.open_tree("contacts").unwrap().len(), 1);
    }

    #[test]
    fn steps_are_in_version_order_and_reach_the_current_version() {
        let mut last = 0;
        for step in NODE_STEPS {
            assert!(step.to >= last && step.to <= NODE_VERSION, "{}", step.name);
            last = step.to;
        }
    }
}
