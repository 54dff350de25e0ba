//! Media blobs held by a store peer for offline users, on `/kith/media/1`.
//!
//! The store peer holds ciphertext only (it never has a blob's key). Anyone may upload a blob
//! into a user's mailbox, within a per-blob size cap and a per-mailbox byte quota, for at most
//! the mailbox lifetime; only the mailbox owner (the Noise-authenticated peer of the user id)
//! may fetch or delete it. Uploads arrive in order and resume at the first missing chunk;
//! when the last chunk arrives the whole file is hashed and must match the blob's name, or it
//! is thrown away. Files live under `blobs/` (`<hash>.part` while arriving, `<hash>` when
//! complete); the index is a tree of the mailboxes' (versioned) database. An index entry that
//! does not decode is quarantined (see [`kith_net::versioned`]), never deleted.

use std::{
    collections::HashMap,
    fs::File,
    io::{Read, Seek, SeekFrom, Write},
    path::{Path, PathBuf},
    sync::{atomic::Ordering, Arc, Mutex},
    time::Duration,
};

use kith_protocol::{
    blob::{BlobHash, BlobHasher, BlobLayout},
    codec,
    media::{HaveState, MediaRefusal, MediaRequest, MediaResponse},
    UserId,
};
use libp2p::PeerId;
use serde::{Deserialize, Serialize};

use crate::{budget::DiskBudget, metrics::Metrics, rates::Rate};
use kith_net::{
    clock::{expiry, is_expired, now_ms},
    frames::ReadTimeouts,
    private_file::sync_dir,
    versioned,
};

mod serve;

pub use serve::spawn;

/// Limits on the blobs a store peer holds.
#[derive(Clone, Debug)]
pub struct BlobLimits {
    /// Largest blob accepted (ciphertext bytes).
    pub max_blob_bytes: u64,
    /// Most blob bytes held per mailbox.
    pub max_bytes_per_mailbox: u64,
    /// Longest lifetime accepted, in milliseconds (a later expiry is cut to this).
    pub max_lifetime_ms: u64,
    /// Most concurrent media streams.
    pub max_streams: usize,
    /// Most concurrent media streams of one peer.
    pub max_streams_per_peer: usize,
    /// How long a media stream may idle, or take over one request.
    pub stream_timeouts: ReadTimeouts,
    /// Most uploads under way (started, not complete) per mailbox: an upload is charged only
    /// for the bytes it delivered, so the number of them is what is capped.
    pub max_uploads_per_mailbox: usize,
    /// Most uploads under way in all.
    pub max_uploads: usize,
    /// Uploads started (`Put`), per peer and per IP.
    pub put_rate: Rate,
    /// Downloads (`Get`), per peer and per IP.
    pub get_rate: Rate,
    /// How often expired blobs are deleted.
    pub expiry_interval: Duration,
}

impl Default for BlobLimits {
    fn default() -> Self {
        BlobLimits {
            max_blob_bytes: 300 * 1024 * 1024,
            max_bytes_per_mailbox: 1024 * 1024 * 1024,
            max_lifetime_ms: 31 * 24 * 3600 * 1000,
            max_streams: 256,
            max_streams_per_peer: 8,
            stream_timeouts: ReadTimeouts {
                idle: Duration::from_secs(120),
                stalled_frame: Duration::from_secs(30),
            },
            max_uploads_per_mailbox: 16,
            max_uploads: 4096,
            put_rate: Rate::per_minute(120),
            get_rate: Rate::per_minute(6_000),
            expiry_interval: Duration::from_secs(60),
        }
    }
}

/// Why the blob store could not open.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BlobsError {
    /// sled failed.
    #[error("blob index: {0}")]
    Sled(#[from] sled::Error),
    /// A directory could not be made.
    #[error("{path}: {source}")]
    Io {
        /// Which.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct HeldBlob {
    mailbox: UserId,
    size: u64,
    chunk_size: u32,
    expires_ms: u64,
    /// Chunks received, in order.
    received: u64,
    complete: bool,
}

impl HeldBlob {
    fn layout(&self) -> Option<BlobLayout> {
        BlobLayout::new(self.size, self.chunk_size).ok()
    }

    /// Bytes this blob is charged for: what it received (the whole ciphertext once
    /// complete), never what its `Put` announced.
    fn charged(&self) -> u64 {
        match self.layout() {
            Some(l) if self.complete => l.cipher_size(),
            Some(l) => l.cipher_offset(self.received.min(l.chunk_count())),
            None => 0,
        }
    }
}

/// What the blobs hold, per mailbox.
#[derive(Default)]
struct Held {
    /// Bytes charged per mailbox.
    bytes: HashMap<UserId, u64>,
    /// Uploads under way per mailbox.
    uploads: HashMap<UserId, usize>,
    /// Uploads under way in all.
    uploads_total: usize,
}

impl Held {
    fn upload_started(&mut self, mailbox: UserId) {
        *self.uploads.entry(mailbox).or_default() += 1;
        self.uploads_total += 1;
    }

    fn upload_ended(&mut self, mailbox: &UserId) {
        if let Some(n) = self.uploads.get_mut(mailbox) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.uploads.remove(mailbox);
            }
            self.uploads_total = self.uploads_total.saturating_sub(1);
        }
    }

    fn uncharge(&mut self, mailbox: &UserId, n: u64) {
        if let Some(u) = self.bytes.get_mut(mailbox) {
            *u = u.saturating_sub(n);
            if *u == 0 {
                self.bytes.remove(mailbox);
            }
        }
    }
}

/// The blobs a store peer holds.
pub struct Blobs {
    dir: PathBuf,
    /// The database `index` lives in (for its quarantine tree).
    db: sled::Db,
    index: sled::Tree,
    /// Bytes charged and uploads under way per mailbox; the lock also serialises index
    /// updates and appends.
    usage: Mutex<Held>,
    limits: BlobLimits,
    metrics: Arc<Metrics>,
    /// The store peer's disk cap (shared with the mailboxes once [`Blobs::share_budget`]).
    budget: Arc<DiskBudget>,
}

impl Blobs {
    /// Opens (or creates) the blob store: files under `dir`, index in `db` (the mailboxes'
    /// database); rebuilds per-mailbox usage.
    pub fn open(
        dir: &Path,
        db: &sled::Db,
        limits: BlobLimits,
        metrics: Arc<Metrics>,
    ) -> Result<Self, BlobsError> {
        std::fs::create_dir_all(dir).map_err(|source| BlobsError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        let index = db.open_tree("blobs")?;
        let mut usage = Held::default();
        let mut count = 0u64;
        for item in index.iter() {
            let (k, v) = item?;
            let Some(held) = versioned::decode_or_quarantine::<HeldBlob>(db, &index, &k, &v)?
            else {
                continue;
            };
            *usage.bytes.entry(held.mailbox).or_default() += held.charged();
            if !held.complete {
                usage.upload_started(held.mailbox);
            }
            count += 1;
        }
        let total: u64 = usage.bytes.values().sum();
        metrics.blobs.store(count, Ordering::Relaxed);
        metrics.blob_bytes.store(total, Ordering::Relaxed);
        let budget = Arc::new(DiskBudget::new(u64::MAX));
        budget.charge(total);
        Ok(Blobs {
            dir: dir.to_path_buf(),
            db: db.clone(),
            index,
            usage: Mutex::new(usage),
            limits,
            metrics,
            budget,
        })
    }

    /// Charges the blobs to `budget` (the store peer's, shared with its mailboxes) from now
    /// on, with what they hold already.
    pub fn share_budget(mut self, budget: Arc<DiskBudget>) -> Self {
        let held = self.budget.held();
        budget.charge(held);
        self.budget = budget;
        self
    }

    /// The limits these blobs are served with.
    pub fn limits(&self) -> &BlobLimits {
        &self.limits
    }

    fn part_path(&self, hash: &BlobHash) -> PathBuf {
        self.dir.join(format!("{}.part", hash.to_hex()))
    }

    /// The file of a complete blob (tests corrupt it to check that owners notice).
    pub fn complete_path(&self, hash: &BlobHash) -> PathBuf {
        self.dir.join(hash.to_hex())
    }

    fn get(&self, hash: &BlobHash) -> Option<HeldBlob> {
        let v = self.index.get(hash.0).ok()??;
        match versioned::decode_or_quarantine(&self.db, &self.index, &hash.0, &v) {
            Ok(held) => held,
            Err(e) => {
                tracing::error!(error = %e, "cannot quarantine a blob index entry");
                None
            }
        }
    }

    fn put(&self, hash: &BlobHash, held: &HeldBlob) -> bool {
        match codec::encode(held) {
            Ok(v) => self.index.insert(hash.0, v).is_ok(),
            Err(_) => false,
        }
    }

    fn remove(&self, usage: &mut Held, hash: &BlobHash, held: &HeldBlob) {
        let _ = self.index.remove(hash.0);
        let _ = std::fs::remove_file(self.part_path(hash));
        let _ = std::fs::remove_file(self.complete_path(hash));
        usage.uncharge(&held.mailbox, held.charged());
        self.budget.release(held.charged());
        if !held.complete {
            usage.upload_ended(&held.mailbox);
        }
        let _ = self
            .metrics
            .blobs
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| {
                Some(v.saturating_sub(1))
            });
        let _ = self
            .metrics
            .blob_bytes
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| {
                Some(v.saturating_sub(held.charged()))
            });
    }

    /// Deletes expired blobs; returns how many.
    pub fn expire(&self, now: u64) -> usize {
        let Ok(mut usage) = self.usage.lock() else {
            return 0;
        };
        let mut expired = Vec::new();
        for (k, v) in self.index.iter().flatten() {
            if let (Ok(hash), Ok(held)) = (
                <[u8; 32]>::try_from(k.as_ref()),
                codec::decode::<HeldBlob>(&v),
            ) {
                if is_expired(held.expires_ms, now) {
                    expired.push((BlobHash(hash), held));
                }
            }
        }
        for (hash, held) in &expired {
            self.remove(&mut usage, hash, held);
        }
        expired.len()
    }

    /// The answers to one request from `peer` (blocking: file I/O).
    pub fn answer(&self, peer: PeerId, req: MediaRequest) -> Vec<MediaResponse> {
        let hash = *req.hash();
        let refuse = |reason| vec![MediaResponse::Refused { hash, reason }];
        if req.validate().is_err() {
            return refuse(MediaRefusal::Malformed);
        }
        match req {
            MediaRequest::Put {
                mailbox,
                size,
                chunk_size,
                expires_ms,
                ..
            } => self.on_put(hash, mailbox, size, chunk_size, expires_ms),
            MediaRequest::Chunk { index, bytes, .. } => self.on_chunk(hash, index, &bytes),
            MediaRequest::Have { .. } => {
                let state = match self.get(&hash) {
                    // Only the owner and uploaders learn about a blob; an uploader already
                    // knows its hash, so answering it reveals nothing new.
                    Some(h) if h.complete => HaveState::Complete,
                    Some(h) => HaveState::Partial { chunks: h.received },
                    None => HaveState::Missing,
                };
                vec![MediaResponse::Have { hash, state }]
            }
            MediaRequest::Get { first, count, .. } => self.on_get(peer, hash, first, count),
            MediaRequest::Delete { .. } => {
                let Ok(mut usage) = self.usage.lock() else {
                    return refuse(MediaRefusal::NotFound);
                };
                match self.get(&hash) {
                    Some(held) if held.mailbox.peer_id() == peer => {
                        self.remove(&mut usage, &hash, &held);
                        vec![MediaResponse::Deleted { hash }]
                    }
                    Some(_) => refuse(MediaRefusal::NotOwner),
                    None => vec![MediaResponse::Deleted { hash }],
                }
            }
        }
    }

    fn on_put(
        &self,
        hash: BlobHash,
        mailbox: UserId,
        size: u64,
        chunk_size: u32,
        expires_ms: u64,
    ) -> Vec<MediaResponse> {
        let refuse = |reason| vec![MediaResponse::Refused { hash, reason }];
        let Ok(layout) = BlobLayout::new(size, chunk_size) else {
            return refuse(MediaRefusal::Malformed);
        };
        let now = now_ms();
        if is_expired(expires_ms, now) {
            return refuse(MediaRefusal::Expired);
        }
        let expires_ms = expires_ms.min(expiry(now, self.limits.max_lifetime_ms));
        let cipher = layout.cipher_size();
        if cipher > self.limits.max_blob_bytes {
            return refuse(MediaRefusal::TooLarge);
        }
        let Ok(mut usage) = self.usage.lock() else {
            return refuse(MediaRefusal::Malformed);
        };
        if let Some(held) = self.get(&hash) {
            if held.mailbox != mailbox || held.size != size || held.chunk_size != chunk_size {
                return refuse(MediaRefusal::Malformed);
            }
            if held.complete {
                return vec![MediaResponse::Complete { hash }];
            }
            return vec![MediaResponse::PutAccepted {
                hash,
                next_index: held.received,
            }];
        }
        // Nothing is reserved for what the upload announces: its chunks are charged as they
        // arrive. What a `Put` costs before then is one index entry and one empty file, so
        // the uploads under way are capped, per mailbox and in all.
        let used = usage.bytes.get(&mailbox).copied().unwrap_or(0);
        if used >= self.limits.max_bytes_per_mailbox {
            return refuse(MediaRefusal::QuotaExceeded);
        }
        if usage.uploads.get(&mailbox).copied().unwrap_or(0) >= self.limits.max_uploads_per_mailbox
            || usage.uploads_total >= self.limits.max_uploads
        {
            return refuse(MediaRefusal::QuotaExceeded);
        }
        if let Err(e) = File::create(self.part_path(&hash)) {
            tracing::error!(%hash, error = %e, "cannot create blob file");
            return refuse(MediaRefusal::QuotaExceeded);
        }
        let held = HeldBlob {
            mailbox,
            size,
            chunk_size,
            expires_ms,
            received: 0,
            complete: false,
        };
        if !self.put(&hash, &held) {
            return refuse(MediaRefusal::Malformed);
        }
        usage.upload_started(mailbox);
        self.metrics.blobs.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(%hash, %mailbox, cipher, "blob upload accepted");
        vec![MediaResponse::PutAccepted {
            hash,
            next_index: 0,
        }]
    }

    fn on_chunk(&self, hash: BlobHash, index: u64, bytes: &[u8]) -> Vec<MediaResponse> {
        let refuse = |reason| vec![MediaResponse::Refused { hash, reason }];
        let Ok(mut usage) = self.usage.lock() else {
            return refuse(MediaRefusal::Malformed);
        };
        let Some(mut held) = self.get(&hash) else {
            return refuse(MediaRefusal::NotFound);
        };
        if held.complete {
            return vec![MediaResponse::Complete { hash }];
        }
        let Some(layout) = held.layout() else {
            return refuse(MediaRefusal::Malformed);
        };
        if index != held.received {
            // A resend of something we have, or a gap: tell the uploader where we are.
            return vec![MediaResponse::ChunkAck {
                hash,
                next_index: held.received,
            }];
        }
        if layout.cipher_len(index).ok() != Some(bytes.len()) {
            return refuse(MediaRefusal::BadChunk);
        }
        // Charged for the bytes that arrived, against the mailbox's quota and the store
        // peer's disk cap.
        let len = bytes.len() as u64;
        let used = usage.bytes.get(&held.mailbox).copied().unwrap_or(0);
        if used.saturating_add(len) > self.limits.max_bytes_per_mailbox {
            return refuse(MediaRefusal::QuotaExceeded);
        }
        if !self.budget.try_charge(len) {
            tracing::warn!(%hash, "store peer at its disk cap; blob chunk refused");
            return refuse(MediaRefusal::QuotaExceeded);
        }
        let path = self.part_path(&hash);
        let write = || -> std::io::Result<()> {
            let mut f = std::fs::OpenOptions::new().write(true).open(&path)?;
            f.seek(SeekFrom::Start(layout.cipher_offset(index)))?;
            f.write_all(bytes)?;
            if layout.is_last(index) {
                f.sync_all()?;
            }
            Ok(())
        };
        if let Err(e) = write() {
            self.budget.release(len);
            tracing::error!(%hash, error = %e, "cannot write blob chunk");
            return refuse(MediaRefusal::NotFound);
        }
        *usage.bytes.entry(held.mailbox).or_default() += len;
        self.metrics.blob_bytes.fetch_add(len, Ordering::Relaxed);
        self.metrics.blob_chunks_in.fetch_add(1, Ordering::Relaxed);
        held.received += 1;
        if held.received < layout.chunk_count() {
            self.put(&hash, &held);
            return vec![MediaResponse::ChunkAck {
                hash,
                next_index: held.received,
            }];
        }
        // The last chunk: the whole ciphertext must be the blob its name says.
        match hash_file(&path) {
            Ok(h) if h == hash => {
                let done = self.complete_path(&hash);
                if std::fs::rename(&path, &done).is_err() {
                    self.remove(&mut usage, &hash, &held);
                    return refuse(MediaRefusal::NotFound);
                }
                // Best effort: the index entry below is what marks the blob complete.
                let _ = sync_dir(&self.dir);
                held.complete = true;
                usage.upload_ended(&held.mailbox);
                self.put(&hash, &held);
                let _ = self.index.flush();
                tracing::info!(%hash, mailbox = %held.mailbox, "blob complete");
                vec![MediaResponse::Complete { hash }]
            }
            Ok(_) => {
                tracing::warn!(%hash, "uploaded blob does not match its hash; dropped");
                self.remove(&mut usage, &hash, &held);
                refuse(MediaRefusal::BadHash)
            }
            Err(e) => {
                tracing::error!(%hash, error = %e, "cannot hash blob");
                self.remove(&mut usage, &hash, &held);
                refuse(MediaRefusal::BadHash)
            }
        }
    }

    fn on_get(&self, peer: PeerId, hash: BlobHash, first: u64, count: u32) -> Vec<MediaResponse> {
        match self.plan_get(peer, hash, first, count) {
            Ok(plan) => {
                let mut out = Vec::new();
                for index in plan.indexes() {
                    let answer = plan.read(index);
                    let stop = matches!(answer, MediaResponse::Refused { .. });
                    out.push(answer);
                    if stop {
                        break;
                    }
                }
                out
            }
            Err(refused) => vec![refused],
        }
    }
}

/// Bytes read at a time when hashing a complete blob.
const HASH_READ: usize = 256 * 1024;

fn hash_file(path: &Path) -> std::io::Result<BlobHash> {
    let mut f = File::open(path)?;
    let mut hasher = BlobHasher::new();
    let mut buf = vec![0u8; HASH_READ];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hasher.finish())
}
