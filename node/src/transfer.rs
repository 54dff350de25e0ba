//! Moving media blobs between peers on `/kith/media/1`: a user's node serves its own blobs to
//! their recipient, uploads them to the recipient's store peers when the recipient is away,
//! and downloads the blobs it receives from every holder it knows.
//!
//! The ciphertext never touches the disk here: chunks are sealed from the plaintext file when
//! a peer asks, and opened (verified) before anything is written. A download writes each
//! verified chunk at its offset, syncs, and only then records the new verified count in sled,
//! so a crash or a cut connection resumes at the last verified chunk and never re-fetches it.
//! A chunk that fails to open is never written; the batch is asked again from the next holder.
//!
//! One task accepts inbound streams and starts transfers; each transfer is its own task, at
//! most [`TransferConfig::max_active`] at once. Memory per transfer is one batch of chunks.

use std::{
    collections::{HashMap, HashSet, VecDeque},
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use futures::{
    io::{ReadHalf, WriteHalf},
    AsyncReadExt, AsyncWriteExt, StreamExt,
};
use kith_protocol::{
    blob::{open_chunk, BlobHash, BlobLayout},
    media::{HaveState, MediaRefusal, MediaRequest, MediaResponse, MAX_CHUNKS_PER_REQUEST},
};
use libp2p::PeerId;
use libp2p_stream::Control;
use tokio::sync::{broadcast, mpsc, Semaphore};
use tokio_util::sync::CancellationToken;

use crate::{
    handle::Event,
    link::{encode_frames, FrameReader},
    media::{
        blob_hash_of, read_sealed_chunk, write_chunk, MediaError, MediaFiles, MediaId, MediaRecord,
        MediaState,
    },
    store::{Store, StoreError},
    time::now_ms,
};

/// The media protocol as a libp2p stream protocol (spelled once, in `kith-net`).
pub use kith_net::protocols::MEDIA;

/// Most frames read from a peer before answering.
const MAX_READ_BATCH: usize = 64;

/// How long one request to a holder may take before the holder is skipped.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Chunks sent to a store peer before waiting for acknowledgements.
const UPLOAD_WINDOW: u64 = 8;

/// Tuning of the transfer service.
#[derive(Clone, Debug)]
pub struct TransferConfig {
    /// Most transfers running at once (others wait their turn).
    pub max_active: usize,
    /// Most inbound media streams served at once.
    pub max_streams: usize,
    /// Store peers that must hold an upload before it counts as available (W).
    pub write_quorum: usize,
    /// First retry delay when no holder could give anything; doubles up to `max_backoff`.
    pub min_backoff: Duration,
    /// Longest retry delay.
    pub max_backoff: Duration,
    /// Largest media file accepted from the local user.
    pub max_media_bytes: u64,
}

impl Default for TransferConfig {
    fn default() -> Self {
        TransferConfig {
            max_active: 4,
            max_streams: 64,
            write_quorum: 2,
            min_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(30),
            max_media_bytes: crate::config::DEFAULT_MAX_MEDIA_BYTES,
        }
    }
}

/// Why a transfer step failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TransferError {
    /// Opening a stream to the peer failed.
    #[error("cannot open a media stream: {0}")]
    Open(String),
    /// The stream failed or ended.
    #[error("stream: {0}")]
    Stream(String),
    /// The peer did not answer in time.
    #[error("peer did not answer in time")]
    Timeout,
    /// The peer refused.
    #[error("refused: {0:?}")]
    Refused(MediaRefusal),
    /// The peer answered something that does not fit the request.
    #[error("unexpected answer")]
    Unexpected,
    /// A chunk failed verification.
    #[error("chunk {0} failed verification")]
    BadChunk(u64),
    /// The local files failed.
    #[error(transparent)]
    Media(#[from] MediaError),
    /// The local store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A frame of ours could not be encoded (a bug: every media message fits one frame).
    #[error("cannot encode a media frame: {0}")]
    Encode(#[from] kith_protocol::frame::FrameError),
}

/// A request/answer conversation with one peer on one `/kith/media/1` stream.
pub struct MediaConn {
    reader: FrameReader<ReadHalf<libp2p::Stream>>,
    writer: WriteHalf<libp2p::Stream>,
    pending: VecDeque<MediaResponse>,
    buf: Vec<u8>,
}

impl MediaConn {
    /// Opens a media stream to `peer`.
    pub async fn open(control: &mut Control, peer: PeerId) -> Result<Self, TransferError> {
        let stream = tokio::time::timeout(REQUEST_TIMEOUT, control.open_stream(peer, MEDIA))
            .await
            .map_err(|_| TransferError::Timeout)?
            .map_err(|e| TransferError::Open(e.to_string()))?;
        let (r, w) = stream.split();
        Ok(MediaConn {
            reader: FrameReader::new(r),
            writer: w,
            pending: VecDeque::new(),
            buf: Vec::new(),
        })
    }

    /// Sends requests (one write).
    pub async fn send(&mut self, requests: &[MediaRequest]) -> Result<(), TransferError> {
        self.buf.clear();
        encode_frames(requests.iter(), &mut self.buf)?;
        let write = async {
            self.writer.write_all(&self.buf).await?;
            self.writer.flush().await
        };
        tokio::time::timeout(REQUEST_TIMEOUT, write)
            .await
            .map_err(|_| TransferError::Timeout)?
            .map_err(|e| TransferError::Stream(e.to_string()))
    }

    /// The next answer.
    pub async fn recv(&mut self) -> Result<MediaResponse, TransferError> {
        if let Some(r) = self.pending.pop_front() {
            return Ok(r);
        }
        let batch = tokio::time::timeout(
            REQUEST_TIMEOUT,
            self.reader.next_batch::<MediaResponse>(MAX_READ_BATCH),
        )
        .await
        .map_err(|_| TransferError::Timeout)?
        .map_err(|e| TransferError::Stream(e.to_string()))?
        .ok_or_else(|| TransferError::Stream("stream ended".into()))?;
        self.pending.extend(batch);
        self.pending
            .pop_front()
            .ok_or_else(|| TransferError::Stream("empty batch".into()))
    }
}

/// What the transfer service shares with its tasks.
pub struct Transfers {
    store: Store,
    files: MediaFiles,
    control: Control,
    events: broadcast::Sender<Event>,
    cfg: TransferConfig,
    /// Records with a task running (by message: two records of one hash are two transfers).
    active: Mutex<HashSet<MediaId>>,
    /// The store peers of our own mailbox, as the messenger last saw them: where blobs sent
    /// to us while we were away are.
    mailbox_stores: Mutex<Vec<PeerId>>,
    slots: Arc<Semaphore>,
    cancel: CancellationToken,
    /// Chunks this node has served to peers (for tests and benchmarks).
    pub chunks_served: AtomicU64,
    /// Chunks this node has fetched and verified.
    pub chunks_fetched: AtomicU64,
    /// Chunks that failed verification.
    pub chunks_rejected: AtomicU64,
}

/// A cloneable way to start transfers.
#[derive(Clone)]
pub struct TransferHandle {
    tx: mpsc::Sender<MediaId>,
    shared: Arc<Transfers>,
}

impl TransferHandle {
    /// Asks the service to work on a message's media (its record says what to do). Never
    /// blocks: when the queue is full the record is picked up by the next periodic scan.
    pub fn start(&self, id: MediaId) {
        if self.tx.try_send(id).is_err() {
            tracing::debug!(media = %id, "transfer queue full; the next scan picks it up");
        }
    }

    /// Counters: (served, fetched, rejected) chunks.
    pub fn counters(&self) -> (u64, u64, u64) {
        (
            self.shared.chunks_served.load(Ordering::Relaxed),
            self.shared.chunks_fetched.load(Ordering::Relaxed),
            self.shared.chunks_rejected.load(Ordering::Relaxed),
        )
    }

    /// Tells the service where our mailbox is now (downloads also ask these store peers).
    pub fn set_mailbox_stores(&self, stores: Vec<PeerId>) {
        if let Ok(mut s) = self.shared.mailbox_stores.lock() {
            *s = stores;
        }
    }

    /// Largest media file accepted from the local user.
    pub fn max_media_bytes(&self) -> u64 {
        self.shared.cfg.max_media_bytes
    }

    /// The media files.
    pub fn files(&self) -> &MediaFiles {
        &self.shared.files
    }
}

/// How often unfinished transfers are looked for (covers a full queue and lost wake-ups).
const SCAN_INTERVAL: Duration = Duration::from_secs(10);

/// Starts the transfer service; returns its handle and task.
pub fn spawn(
    store: Store,
    files: MediaFiles,
    mut control: Control,
    events: broadcast::Sender<Event>,
    cfg: TransferConfig,
    cancel: CancellationToken,
) -> Result<(TransferHandle, tokio::task::JoinHandle<()>), crate::net::NetError> {
    let mut incoming = control
        .accept(MEDIA)
        .map_err(|_| crate::net::NetError::AlreadyRegistered)?;
    let (tx, mut rx) = mpsc::channel::<MediaId>(1024);
    let shared = Arc::new(Transfers {
        slots: Arc::new(Semaphore::new(cfg.max_active.max(1))),
        store,
        files,
        control,
        events,
        cfg,
        active: Mutex::new(HashSet::new()),
        mailbox_stores: Mutex::new(Vec::new()),
        cancel: cancel.clone(),
        chunks_served: AtomicU64::new(0),
        chunks_fetched: AtomicU64::new(0),
        chunks_rejected: AtomicU64::new(0),
    });
    let handle = TransferHandle {
        tx,
        shared: shared.clone(),
    };
    let task = tokio::spawn(async move {
        let streams = Arc::new(Semaphore::new(shared.cfg.max_streams.max(1)));
        let mut scan = tokio::time::interval(SCAN_INTERVAL);
        loop {
            tokio::select! {
                _ = cancel.cancelled() => break,
                next = incoming.next() => {
                    let Some((peer, stream)) = next else { break };
                    let Ok(permit) = streams.clone().try_acquire_owned() else {
                        tracing::warn!(%peer, "too many media streams; refused");
                        continue;
                    };
                    let s = shared.clone();
                    tokio::spawn(async move {
                        let _permit = permit;
                        let cancel = s.cancel.clone();
                        tokio::select! {
                            r = serve(s, peer, stream) => if let Err(e) = r {
                                tracing::debug!(%peer, error = %e, "media stream ended");
                            },
                            _ = cancel.cancelled() => {}
                        }
                    });
                }
                id = rx.recv() => {
                    let Some(id) = id else { break };
                    launch(&shared, id);
                }
                _ = scan.tick() => {
                    match shared.store.all_media() {
                        Ok(recs) => for rec in recs {
                            if matches!(rec.state, MediaState::Uploading | MediaState::Downloading) {
                                launch(&shared, rec.id());
                            }
                        },
                        Err(e) => tracing::warn!(error = %e, "cannot list media records"),
                    }
                }
            }
        }
    });
    Ok((handle, task))
}

/// Starts a task for the record `id` unless one runs.
fn launch(shared: &Arc<Transfers>, id: MediaId) {
    {
        let Ok(mut active) = shared.active.lock() else {
            return;
        };
        if !active.insert(id) {
            return;
        }
    }
    let s = shared.clone();
    tokio::spawn(async move {
        let result = match s.slots.clone().acquire_owned().await {
            Ok(_permit) => {
                let cancel = s.cancel.clone();
                tokio::select! {
                    r = run_transfer(&s, id) => r,
                    _ = cancel.cancelled() => Ok(()),
                }
            }
            Err(_) => Ok(()),
        };
        if let Err(e) = result {
            tracing::warn!(media = %id, error = %e, "transfer stopped; will resume later");
        }
        if let Ok(mut active) = s.active.lock() {
            active.remove(&id);
        }
    });
}

async fn run_transfer(s: &Arc<Transfers>, id: MediaId) -> Result<(), TransferError> {
    let Some(rec) = s.store.media(&id)? else {
        return Ok(());
    };
    if rec.expires_at_ms <= now_ms()
        && matches!(rec.state, MediaState::Uploading | MediaState::Downloading)
    {
        tracing::warn!(hash = %rec.hash, media = %id, "media expired before its transfer finished");
        let mut rec = rec;
        rec.state = MediaState::Failed;
        s.store.put_media(&rec)?;
        s.emit(&rec);
        return Ok(());
    }
    match rec.state {
        MediaState::Downloading => download(s, rec).await,
        MediaState::Uploading => upload(s, rec).await,
        _ => Ok(()),
    }
}

impl Transfers {
    fn emit(&self, rec: &MediaRecord) {
        if self.events.receiver_count() == 0 {
            return;
        }
        let view = rec.view();
        let _ = self.events.send(Event::MediaProgress {
            peer: rec.peer.to_string(),
            id: rec.message.to_string(),
            hash: view.hash,
            state: view.state,
            progress: view.progress,
        });
    }

    async fn backoff(&self, delay: &mut Duration) -> bool {
        let wait = *delay;
        *delay = (*delay * 2).min(self.cfg.max_backoff);
        tokio::select! {
            _ = tokio::time::sleep(wait) => true,
            _ = self.cancel.cancelled() => false,
        }
    }
}

/// Fetches and verifies every missing chunk, rotating over the holders batch by batch.
async fn download(s: &Arc<Transfers>, mut rec: MediaRecord) -> Result<(), TransferError> {
    let layout = rec.layout().map_err(MediaError::from)?;
    let key = rec.blob_key();
    let count = layout.chunk_count();
    let hash = rec.hash;
    let id = rec.id();
    let path = s.files.part_path(&id);
    let file = {
        let path = path.clone();
        tokio::task::spawn_blocking(move || {
            std::fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&path)
                .map_err(|source| MediaError::Io { path, source })
        })
        .await
        .map_err(|e| TransferError::Stream(e.to_string()))??
    };
    let file = Arc::new(Mutex::new(file));
    let mut conns: HashMap<PeerId, MediaConn> = HashMap::new();
    let mut turn = 0usize;
    let mut delay = s.cfg.min_backoff;
    let mut last_emit = Instant::now();
    tracing::info!(%hash, size = rec.size, from = rec.done_chunks, "downloading media");
    let mut holders = Vec::new();
    while rec.done_chunks < count {
        // The holders named when the message arrived (the sender first), then our mailbox's
        // store peers as known now: the set may have grown since.
        holders = rec.holder_peers();
        if let Ok(stores) = s.mailbox_stores.lock() {
            for p in stores.iter() {
                if !holders.contains(p) {
                    holders.push(*p);
                }
            }
        }
        if holders.is_empty() {
            if !s.backoff(&mut delay).await {
                return Ok(());
            }
            continue;
        }
        let first = rec.done_chunks;
        let want = (count - first).min(u64::from(MAX_CHUNKS_PER_REQUEST)) as u32;
        let mut got: Vec<(u64, Vec<u8>)> = Vec::new();
        for attempt in 0..holders.len() {
            let holder = holders[(turn + attempt) % holders.len()];
            match fetch(s, &mut conns, holder, hash, first, want).await {
                Ok(chunks) => {
                    let mut bad = false;
                    for (index, bytes) in chunks {
                        match open_chunk(&key, &layout, index, &bytes) {
                            Ok(plain) => got.push((index, plain)),
                            Err(_) => {
                                s.chunks_rejected.fetch_add(1, Ordering::Relaxed);
                                tracing::warn!(%hash, index, %holder, "chunk failed verification; asking another holder");
                                bad = true;
                                break;
                            }
                        }
                    }
                    if bad {
                        conns.remove(&holder);
                    }
                    if !got.is_empty() {
                        // Spread the next batch over the next holder.
                        turn = turn + attempt + 1;
                        break;
                    }
                }
                Err(e) => {
                    tracing::debug!(%hash, %holder, error = %e, "holder could not serve");
                    conns.remove(&holder);
                }
            }
        }
        if got.is_empty() {
            if !s.backoff(&mut delay).await {
                return Ok(());
            }
            continue;
        }
        delay = s.cfg.min_backoff;
        let n = got.len() as u64;
        {
            let file = file.clone();
            let path = path.clone();
            tokio::task::spawn_blocking(move || -> Result<(), MediaError> {
                let mut f = file.lock().map_err(|_| MediaError::Io {
                    path: path.clone(),
                    source: std::io::Error::other("file lock poisoned"),
                })?;
                for (index, plain) in &got {
                    write_chunk(&mut f, &path, &layout, *index, plain)?;
                }
                f.sync_data().map_err(|source| MediaError::Io {
                    path: path.clone(),
                    source,
                })
            })
            .await
            .map_err(|e| TransferError::Stream(e.to_string()))??;
        }
        s.chunks_fetched.fetch_add(n, Ordering::Relaxed);
        rec.done_chunks = first + n;
        s.store.put_media(&rec)?;
        if last_emit.elapsed() >= Duration::from_millis(200) || rec.done_chunks == count {
            last_emit = Instant::now();
            s.emit(&rec);
        }
    }
    drop(file);
    // Every chunk opened under this record's key; the blob is the sender's only if the whole
    // ciphertext also has this record's hash (someone naming another sender's hash with a key
    // of their own gets here with their own bytes, which must not count as that blob).
    let verified = {
        let files = s.files.clone();
        let (key, path) = (key.clone(), path.clone());
        tokio::task::spawn_blocking(move || -> Result<bool, MediaError> {
            if files.received_path(&id).exists() {
                // Checked and renamed before a crash cut the record's update short (the name
                // is only ever given after the check); what was fetched again is not needed.
                files.remove_part(&id)?;
                return Ok(true);
            }
            if blob_hash_of(&path, &key, &layout)? != hash {
                return Ok(false);
            }
            files.commit_part(&id)?;
            Ok(true)
        })
        .await
        .map_err(|e| TransferError::Stream(e.to_string()))??
    };
    if !verified {
        tracing::warn!(%hash, media = %id, "every chunk opened but the blob does not have its hash; failed");
        rec.state = MediaState::Failed;
        s.store.put_media(&rec)?;
        s.store.commit().await?;
        s.emit(&rec);
        // Only once the record says failed: a crash before this leaves a stray file, never a
        // download that resumes on nothing.
        let files = s.files.clone();
        let removed = tokio::task::spawn_blocking(move || files.remove_part(&id)).await;
        if let Ok(Err(e)) = removed {
            tracing::warn!(media = %id, error = %e, "cannot remove a failed download's file");
        }
        return Ok(());
    }
    rec.state = MediaState::Complete;
    s.store.put_media(&rec)?;
    s.store.commit().await?;
    s.emit(&rec);
    tracing::info!(%hash, "media complete");
    // The store peers may drop their copies now; the sender keeps its own.
    let mut control = s.control.clone();
    for holder in holders.into_iter().filter(|h| *h != rec.peer.peer_id()) {
        let delete = async {
            let mut conn = match conns.remove(&holder) {
                Some(c) => c,
                None => MediaConn::open(&mut control, holder).await?,
            };
            conn.send(&[MediaRequest::Delete { hash }]).await?;
            conn.recv().await
        };
        if let Err(e) = delete.await {
            tracing::debug!(%hash, %holder, error = %e, "could not delete from store peer; it expires there");
        }
    }
    Ok(())
}

/// Asks `holder` for chunks `[first, first + count)`; returns what it sent, in order, up to
/// the first gap.
async fn fetch(
    s: &Transfers,
    conns: &mut HashMap<PeerId, MediaConn>,
    holder: PeerId,
    hash: BlobHash,
    first: u64,
    count: u32,
) -> Result<Vec<(u64, Vec<u8>)>, TransferError> {
    let conn = match conns.entry(holder) {
        std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
        std::collections::hash_map::Entry::Vacant(v) => {
            let mut control = s.control.clone();
            v.insert(MediaConn::open(&mut control, holder).await?)
        }
    };
    conn.send(&[MediaRequest::Get { hash, first, count }])
        .await?;
    let mut out = Vec::with_capacity(count as usize);
    while out.len() < count as usize {
        match conn.recv().await? {
            MediaResponse::Chunk {
                hash: h,
                index,
                bytes,
            } if h == hash && index == first + out.len() as u64 => out.push((index, bytes)),
            MediaResponse::Refused { reason, .. } => {
                if out.is_empty() {
                    return Err(TransferError::Refused(reason));
                }
                break;
            }
            _ => return Err(TransferError::Unexpected),
        }
    }
    Ok(out)
}

/// Uploads a blob to the store peers in its record until `write_quorum` of them hold it.
async fn upload(s: &Arc<Transfers>, mut rec: MediaRecord) -> Result<(), TransferError> {
    let layout = rec.layout().map_err(MediaError::from)?;
    let hash = rec.hash;
    let stores = rec.holder_peers();
    let quorum = s.cfg.write_quorum.min(stores.len()).max(1);
    let count = layout.chunk_count();
    let mut done: HashSet<PeerId> = HashSet::new();
    let progress: Arc<Mutex<HashMap<PeerId, u64>>> = Arc::new(Mutex::new(HashMap::new()));
    let mut delay = s.cfg.min_backoff;
    tracing::info!(%hash, size = rec.size, stores = stores.len(), "uploading media to store peers");
    // What the upload tasks read; `rec` itself changes state as copies land.
    let source = rec.clone();
    while done.len() < stores.len() {
        let pending: Vec<PeerId> = stores
            .iter()
            .filter(|p| !done.contains(p))
            .copied()
            .collect();
        let mut running: futures::stream::FuturesUnordered<_> = pending
            .iter()
            .map(|store| {
                let (store, progress) = (*store, progress.clone());
                let (source, layout) = (&source, &layout);
                async move { (store, upload_to(s, source, layout, store, progress).await) }
            })
            .collect();
        // Available as soon as W store peers hold it; the remaining uploads of this round
        // still run to the end (a third copy is a bonus the state does not wait for).
        while let Some((store, r)) = running.next().await {
            match r {
                Ok(()) => {
                    done.insert(store);
                }
                Err(e) => tracing::info!(%hash, %store, error = %e, "upload to store peer failed"),
            }
            if done.len() >= quorum && rec.state == MediaState::Uploading {
                rec.state = MediaState::Available;
                rec.done_chunks = count;
                s.store.put_media(&rec)?;
                s.store.commit().await?;
                s.emit(&rec);
                tracing::info!(%hash, held = done.len(), "media held by enough store peers");
            }
        }
        let held = done.len();
        if held >= quorum {
            // Enough copies: store peers that failed this round are not tried again.
            break;
        }
        if !s.backoff(&mut delay).await {
            return Ok(());
        }
    }
    Ok(())
}

async fn upload_to(
    s: &Arc<Transfers>,
    rec: &MediaRecord,
    layout: &BlobLayout,
    store: PeerId,
    progress: Arc<Mutex<HashMap<PeerId, u64>>>,
) -> Result<(), TransferError> {
    let hash = rec.hash;
    let count = layout.chunk_count();
    let mut control = s.control.clone();
    let mut conn = MediaConn::open(&mut control, store).await?;
    conn.send(&[MediaRequest::Put {
        mailbox: rec.peer,
        hash,
        size: rec.size,
        chunk_size: rec.chunk_size,
        expires_ms: rec.expires_at_ms,
    }])
    .await?;
    let mut next = match conn.recv().await? {
        MediaResponse::PutAccepted { next_index, .. } => next_index,
        MediaResponse::Complete { .. } => return Ok(()),
        MediaResponse::Refused { reason, .. } => return Err(TransferError::Refused(reason)),
        _ => return Err(TransferError::Unexpected),
    };
    let path = s.files.sent_path(&hash);
    let file = {
        let path = path.clone();
        tokio::task::spawn_blocking(move || {
            std::fs::File::open(&path).map_err(|source| MediaError::Io { path, source })
        })
        .await
        .map_err(|e| TransferError::Stream(e.to_string()))??
    };
    let file = Arc::new(Mutex::new(file));
    let key = rec.blob_key();
    let mut last_emit = Instant::now();
    while next < count {
        let end = (next + UPLOAD_WINDOW).min(count);
        let chunks = {
            let file = file.clone();
            let path = path.clone();
            let key = key.clone();
            let layout = *layout;
            tokio::task::spawn_blocking(move || -> Result<Vec<MediaRequest>, MediaError> {
                let mut f = file.lock().map_err(|_| MediaError::Io {
                    path: path.clone(),
                    source: std::io::Error::other("file lock poisoned"),
                })?;
                (next..end)
                    .map(|index| {
                        Ok(MediaRequest::Chunk {
                            hash,
                            index,
                            bytes: read_sealed_chunk(&mut f, &path, &key, &layout, index)?,
                        })
                    })
                    .collect()
            })
            .await
            .map_err(|e| TransferError::Stream(e.to_string()))??
        };
        conn.send(&chunks).await?;
        let sent = end - next;
        for _ in 0..sent {
            match conn.recv().await? {
                MediaResponse::ChunkAck { next_index, .. } => next = next_index,
                MediaResponse::Complete { .. } => next = count,
                MediaResponse::Refused { reason, .. } => {
                    return Err(TransferError::Refused(reason))
                }
                _ => return Err(TransferError::Unexpected),
            }
        }
        if let Ok(mut p) = progress.lock() {
            p.insert(store, next);
        }
        if last_emit.elapsed() >= Duration::from_millis(200) {
            last_emit = Instant::now();
            let mut shown = rec.clone();
            if let Ok(p) = progress.lock() {
                let mut best: Vec<u64> = p.values().copied().collect();
                best.sort_unstable_by(|a, b| b.cmp(a));
                let q = s.cfg.write_quorum.max(1);
                shown.done_chunks = best.get(q - 1).or(best.last()).copied().unwrap_or(0);
            }
            s.emit(&shown);
        }
    }
    if next >= count {
        // The store peer answers `Complete` to the last chunk, possibly already consumed
        // above as the last ack; a `Have` confirms either way.
        conn.send(&[MediaRequest::Have { hash }]).await?;
        loop {
            match conn.recv().await? {
                MediaResponse::Have {
                    state: HaveState::Complete,
                    ..
                } => return Ok(()),
                MediaResponse::Have { .. } => return Err(TransferError::Unexpected),
                MediaResponse::Complete { .. } | MediaResponse::ChunkAck { .. } => continue,
                MediaResponse::Refused { reason, .. } => {
                    return Err(TransferError::Refused(reason))
                }
                _ => return Err(TransferError::Unexpected),
            }
        }
    }
    Ok(())
}

/// Serves one inbound media stream: our own blobs, to the user they were sent to.
async fn serve(
    s: Arc<Transfers>,
    peer: PeerId,
    stream: libp2p::Stream,
) -> Result<(), TransferError> {
    let (r, mut w) = stream.split();
    let mut reader = FrameReader::new(r);
    let mut buf = Vec::new();
    while let Some(requests) = reader
        .next_batch::<MediaRequest>(MAX_READ_BATCH)
        .await
        .map_err(|e| TransferError::Stream(e.to_string()))?
    {
        // One request's answers at a time: a `Get` answers up to MAX_CHUNKS_PER_REQUEST
        // chunks, each one frame, so memory stays at one request's chunks however many
        // requests arrived together.
        for req in requests {
            let s2 = s.clone();
            let answers = tokio::task::spawn_blocking(move || answer(&s2, peer, req))
                .await
                .map_err(|e| TransferError::Stream(e.to_string()))?;
            buf.clear();
            if let Err(e) = encode_frames(answers.iter(), &mut buf) {
                crate::link::report_unencodable(&peer, &e);
                return Err(e.into());
            }
            w.write_all(&buf)
                .await
                .map_err(|e| TransferError::Stream(e.to_string()))?;
        }
        w.flush()
            .await
            .map_err(|e| TransferError::Stream(e.to_string()))?;
    }
    Ok(())
}

/// The answers to one request (blocking: reads files).
fn answer(s: &Transfers, peer: PeerId, req: MediaRequest) -> Vec<MediaResponse> {
    let hash = *req.hash();
    let refuse = |reason| vec![MediaResponse::Refused { hash, reason }];
    if req.validate().is_err() {
        return refuse(MediaRefusal::Malformed);
    }
    // Only the user a blob was sent to may fetch it; anyone else learns nothing, not even
    // that it exists. Only a blob we sent is served, never one we received under that hash.
    let rec = match s.store.media_for_hash(&hash) {
        Ok(recs) => match recs
            .into_iter()
            .find(|r| r.outgoing && r.peer.peer_id() == peer)
        {
            Some(rec) => rec,
            None => return refuse(MediaRefusal::NotFound),
        },
        Err(e) => {
            tracing::warn!(error = %e, "media record unreadable");
            return refuse(MediaRefusal::NotFound);
        }
    };
    let Ok(layout) = rec.layout() else {
        return refuse(MediaRefusal::NotFound);
    };
    match req {
        MediaRequest::Have { .. } => vec![MediaResponse::Have {
            hash,
            state: HaveState::Complete,
        }],
        MediaRequest::Get { first, count, .. } => {
            let path = s.files.sent_path(&hash);
            let mut file = match std::fs::File::open(&path) {
                Ok(f) => f,
                Err(e) => {
                    tracing::warn!(%hash, error = %e, "sent media file is gone");
                    return refuse(MediaRefusal::NotFound);
                }
            };
            let key = rec.blob_key();
            let end = first
                .saturating_add(u64::from(count))
                .min(layout.chunk_count());
            if first >= end {
                return refuse(MediaRefusal::Malformed);
            }
            let mut out = Vec::with_capacity((end - first) as usize);
            for index in first..end {
                match read_sealed_chunk(&mut file, &path, &key, &layout, index) {
                    Ok(bytes) => {
                        s.chunks_served.fetch_add(1, Ordering::Relaxed);
                        out.push(MediaResponse::Chunk { hash, index, bytes });
                    }
                    Err(e) => {
                        tracing::warn!(%hash, index, error = %e, "cannot read media chunk");
                        out.push(MediaResponse::Refused {
                            hash,
                            reason: MediaRefusal::NotFound,
                        });
                        break;
                    }
                }
            }
            out
        }
        // A user's node is not a store peer.
        MediaRequest::Put { .. } | MediaRequest::Chunk { .. } | MediaRequest::Delete { .. } => {
            refuse(MediaRefusal::NotAStore)
        }
    }
}
