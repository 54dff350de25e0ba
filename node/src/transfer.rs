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
//! One task (the service) owns the set of running transfers and every task it starts: it
//! accepts inbound streams ([`serve`]), starts transfers ([`download`], [`upload`]), at most
//! [`TransferConfig::max_active`] at once, and ends them all when it is cancelled. Memory per
//! transfer is one batch of chunks.
//!
//! The transfer layer is the only writer of the media records (the store's `media_records`
//! and `media_by_hash` trees): the messenger records a message's media through
//! [`TransferHandle::put_record`]. Nothing here may write any other tree.

mod conn;
mod download;
mod serve;
mod upload;

use std::{
    collections::{HashSet, VecDeque},
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use futures::StreamExt;
use kith_net::Backoff;
use kith_protocol::media::MediaRefusal;
use libp2p::PeerId;
use libp2p_stream::Control;
use tokio::{
    sync::{broadcast, mpsc, watch},
    task::JoinSet,
};
use tokio_util::sync::CancellationToken;

pub use conn::MediaConn;

use crate::{
    event::Event,
    media::{MediaError, MediaFiles, MediaId, MediaRecord, MediaState},
    store::{MediaWriter, Store, StoreError},
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

/// Shortest time between two progress events of one transfer (the UI needs no more).
const PROGRESS_INTERVAL: Duration = Duration::from_millis(200);

/// How often unfinished transfers are looked for (covers a full queue and lost wake-ups).
const SCAN_INTERVAL: Duration = Duration::from_secs(10);

/// Depth of the queue of transfer requests from the messenger; when it is full a request
/// waits for the next scan.
const START_QUEUE: usize = 1024;

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
    /// Longest retry delay. Short: a node that just started (or a holder that just came
    /// back) should not leave a download sleeping for long after its holders connect, and
    /// a waiting download costs one stream attempt per holder per delay.
    pub max_backoff: Duration,
    /// Largest media file accepted from the local user.
    pub max_media_bytes: u64,
    /// Longest a download goes without a verified chunk from any holder before it fails,
    /// freeing its slot (the user may retry it).
    pub download_timeout: Duration,
}

impl Default for TransferConfig {
    fn default() -> Self {
        TransferConfig {
            max_active: 4,
            max_streams: 64,
            write_quorum: 2,
            min_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(5),
            max_media_bytes: crate::config::DEFAULT_MAX_MEDIA_BYTES,
            download_timeout: crate::config::DEFAULT_DOWNLOAD_TIMEOUT,
        }
    }
}

/// Why a transfer step failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TransferError {
    /// Opening a stream to the peer failed.
    #[error("cannot open a media stream: {0}")]
    Open(#[from] libp2p_stream::OpenStreamError),
    /// Writing to the stream failed.
    #[error("stream: {0}")]
    Write(#[from] std::io::Error),
    /// Reading frames from the stream failed.
    #[error("stream: {0}")]
    Read(#[from] kith_net::frames::StreamError),
    /// The peer closed the stream.
    #[error("stream ended")]
    Ended,
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

impl From<tokio::task::JoinError> for TransferError {
    fn from(e: tokio::task::JoinError) -> Self {
        TransferError::Media(MediaError::Task(e))
    }
}

/// What every transfer task reads: fixed when the service starts, plus counters. Nothing in
/// it changes but the counters (atomics) and the mailbox stores (a watch channel the
/// messenger feeds).
pub(crate) struct Transfers {
    store: Store,
    records: MediaWriter,
    files: MediaFiles,
    control: Control,
    events: broadcast::Sender<Event>,
    cfg: TransferConfig,
    /// The store peers of our own mailbox, as the messenger last saw them: where blobs sent
    /// to us while we were away are.
    mailbox_stores: watch::Receiver<Vec<PeerId>>,
    cancel: CancellationToken,
    /// Chunks this node has served to peers (for tests and benchmarks).
    chunks_served: AtomicU64,
    /// Chunks this node has fetched and verified.
    chunks_fetched: AtomicU64,
    /// Chunks that failed verification.
    chunks_rejected: AtomicU64,
}

/// A cloneable way to start transfers and record media.
#[derive(Clone)]
pub struct TransferHandle {
    tx: mpsc::Sender<MediaId>,
    mailbox_stores: watch::Sender<Vec<PeerId>>,
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

    /// Writes a message's media record (the messenger's way into the media trees, whose only
    /// writer is this layer). Durable with the caller's next commit.
    pub fn put_record(&self, rec: &MediaRecord) -> Result<(), StoreError> {
        self.shared.records.put(rec)
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
        self.mailbox_stores.send_replace(stores);
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

/// Starts the transfer service; returns its handle and task. The task ends, with every
/// transfer and stream task it started, when `cancel` is cancelled.
pub fn spawn(
    store: Store,
    files: MediaFiles,
    mut control: Control,
    events: broadcast::Sender<Event>,
    cfg: TransferConfig,
    cancel: CancellationToken,
) -> Result<(TransferHandle, tokio::task::JoinHandle<()>), crate::net::NetError> {
    let incoming = control
        .accept(MEDIA)
        .map_err(|_| crate::net::NetError::AlreadyRegistered)?;
    let (tx, rx) = mpsc::channel::<MediaId>(START_QUEUE);
    let (stores_tx, stores_rx) = watch::channel(Vec::new());
    let shared = Arc::new(Transfers {
        records: store.media_writer(),
        store,
        files,
        control,
        events,
        cfg,
        mailbox_stores: stores_rx,
        cancel,
        chunks_served: AtomicU64::new(0),
        chunks_fetched: AtomicU64::new(0),
        chunks_rejected: AtomicU64::new(0),
    });
    let handle = TransferHandle {
        tx,
        mailbox_stores: stores_tx,
        shared: shared.clone(),
    };
    let task = tokio::spawn(Service::new(shared).run(incoming, rx));
    Ok((handle, task))
}

/// The service task's state, owned by it alone.
struct Service {
    shared: Arc<Transfers>,
    /// Records with a transfer running or waiting for a slot (by message: two records of one
    /// hash are two transfers).
    active: HashSet<MediaId>,
    /// Transfers waiting for a slot, in the order they were asked for.
    waiting: VecDeque<MediaId>,
    /// Running transfers; each answers its record's id when it ends.
    transfers: JoinSet<MediaId>,
    /// Inbound streams being served.
    streams: JoinSet<()>,
}

impl Service {
    fn new(shared: Arc<Transfers>) -> Self {
        Service {
            shared,
            active: HashSet::new(),
            waiting: VecDeque::new(),
            transfers: JoinSet::new(),
            streams: JoinSet::new(),
        }
    }

    async fn run(
        mut self,
        mut incoming: libp2p_stream::IncomingStreams,
        mut rx: mpsc::Receiver<MediaId>,
    ) {
        let cancel = self.shared.cancel.clone();
        let mut scan = tokio::time::interval(SCAN_INTERVAL);
        loop {
            tokio::select! {
                _ = cancel.cancelled() => break,
                next = incoming.next() => {
                    let Some((peer, stream)) = next else { break };
                    if self.streams.len() >= self.shared.cfg.max_streams.max(1) {
                        tracing::warn!(%peer, "too many media streams; refused");
                        continue;
                    }
                    let s = self.shared.clone();
                    self.streams.spawn(async move {
                        if let Err(e) = serve::serve(s, peer, stream).await {
                            tracing::debug!(%peer, error = %e, "media stream ended");
                        }
                    });
                }
                Some(_) = self.streams.join_next(), if !self.streams.is_empty() => {}
                Some(done) = self.transfers.join_next(), if !self.transfers.is_empty() => {
                    if let Ok(id) = done {
                        self.active.remove(&id);
                    }
                    self.start_waiting();
                }
                id = rx.recv() => {
                    let Some(id) = id else { break };
                    self.launch(id);
                }
                _ = scan.tick() => {
                    match self.shared.store.all_media() {
                        Ok(recs) => for rec in recs {
                            if matches!(rec.state, MediaState::Uploading | MediaState::Downloading) {
                                self.launch(rec.id());
                            }
                        },
                        Err(e) => tracing::warn!(error = %e, "cannot list media records"),
                    }
                }
            }
        }
        // Every task this service started ends with it.
        self.transfers.shutdown().await;
        self.streams.shutdown().await;
    }

    /// Queues a transfer for the record `id` unless one runs or waits.
    fn launch(&mut self, id: MediaId) {
        if self.active.insert(id) {
            self.waiting.push_back(id);
            self.start_waiting();
        }
    }

    /// Starts waiting transfers while slots are free.
    fn start_waiting(&mut self) {
        while self.transfers.len() < self.shared.cfg.max_active.max(1) {
            let Some(id) = self.waiting.pop_front() else {
                return;
            };
            let s = self.shared.clone();
            self.transfers.spawn(async move {
                if let Err(e) = run_transfer(&s, id).await {
                    tracing::warn!(media = %id, error = %e, "transfer stopped; will resume later");
                }
                id
            });
        }
    }
}

async fn run_transfer(s: &Arc<Transfers>, id: MediaId) -> Result<(), TransferError> {
    let Some(rec) = s.store.media(&id)? else {
        return Ok(());
    };
    if kith_net::clock::is_expired(rec.expires_at_ms, now_ms())
        && matches!(rec.state, MediaState::Uploading | MediaState::Downloading)
    {
        tracing::warn!(hash = %rec.hash, media = %id, "media expired before its transfer finished");
        let mut rec = rec;
        rec.state = MediaState::Failed;
        s.records.put(&rec)?;
        s.emit(&rec);
        return Ok(());
    }
    match rec.state {
        MediaState::Downloading => download::download(s, rec).await,
        MediaState::Uploading => upload::upload(s, rec).await,
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

    /// The retry pacing of one transfer, from the configured bounds.
    fn new_backoff(&self) -> Backoff {
        Backoff::new(self.cfg.min_backoff, self.cfg.max_backoff)
    }

    /// Waits the backoff's next delay (false if the service was cancelled meanwhile).
    async fn backoff(&self, backoff: &mut Backoff) -> bool {
        let wait = backoff.next_delay();
        tokio::select! {
            _ = tokio::time::sleep(wait) => true,
            _ = self.cancel.cancelled() => false,
        }
    }
}
