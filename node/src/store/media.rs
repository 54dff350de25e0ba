//! The media records: one per message that carried media, indexed by blob hash; their one
//! writer ([`MediaWriter`], held by the transfer layer); and the migration from the layout
//! keyed by hash alone.

use std::path::Path;

use kith_protocol::{blob::BlobHash, codec};

use super::{Store, StoreError};
use crate::media::{MediaFiles, MediaId, MediaRecord, MediaState};

impl Store {
    /// The media record of one message.
    pub fn media(&self, id: &MediaId) -> Result<Option<MediaRecord>, StoreError> {
        match self.media.get(id.to_key())? {
            None => Ok(None),
            Some(v) => self.decode(&self.media, &id.to_key(), &v),
        }
    }

    /// The writer of the media trees. Only the transfer layer holds one
    /// (its service, started by `transfer::spawn`): it is their one writer; everyone else reads.
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
pub(crate) const MEDIA_RECORDS: &str = "media_records";
/// The index of media records by blob hash.
pub(crate) const MEDIA_BY_HASH: &str = "media_by_hash";
/// The tree of media records keyed by blob hash alone (the layout before [`MediaId`]).
pub(crate) const LEGACY_MEDIA: &str = "media";

/// `hash ‖ media id key`: the `media_by_hash` key of a record.
pub(crate) fn hash_index_key(hash: &BlobHash, media_key: &[u8]) -> Vec<u8> {
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
