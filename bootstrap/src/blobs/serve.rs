//! Serving `/kith/media/1` streams from [`Blobs`]: the accept loop (capped in all and per
//! peer), a reader with idle and stalled-frame deadlines, rate limits per peer and per IP on
//! `Put` and `Get`, and `Get` answered one chunk at a time — read, written, then the next —
//! so a stream costs one chunk of memory however many it asked for.

use std::sync::{atomic::Ordering, Arc};

use futures::AsyncReadExt;
use kith_net::{
    accept::{self, Inbound},
    clock::now_ms,
    frames::{write_frames, FrameReader, StreamError},
    protocols::MEDIA,
    Network,
};
use std::{
    fs::File,
    io::{Read, Seek, SeekFrom},
    path::PathBuf,
};

use kith_protocol::{
    blob::{BlobHash, BlobLayout},
    media::{MediaRefusal, MediaRequest, MediaResponse, MAX_CHUNKS_PER_REQUEST},
};
use libp2p::PeerId;
use tokio_util::sync::CancellationToken;

use super::Blobs;
use crate::{metrics::Metrics, rates::PeerLimiter};

/// Most requests read from a media stream at once (answered one at a time).
const MAX_READ_BATCH: usize = 64;

/// The limiters of a media service, shared by its streams.
struct Limiters {
    puts: PeerLimiter,
    gets: PeerLimiter,
}

/// Accepts `/kith/media/1` streams and serves them from `blobs`; deletes expired blobs.
/// The task returned ends, with every stream, when `cancel` fires.
pub fn spawn(
    blobs: Arc<Blobs>,
    network: Network,
    cancel: CancellationToken,
) -> Result<tokio::task::JoinHandle<()>, kith_net::NetError> {
    let mut control = network.control();
    let limits = blobs.limits().clone();
    let inbound = Inbound {
        protocol: MEDIA,
        max_streams: limits.max_streams.max(1),
        max_streams_per_peer: limits.max_streams_per_peer.max(1),
    };
    let limiters = Arc::new(Limiters {
        puts: PeerLimiter::new(limits.put_rate),
        gets: PeerLimiter::new(limits.get_rate),
    });
    let served = blobs.clone();
    let served_limiters = limiters.clone();
    let acceptor = accept::spawn_acceptor(
        &mut control,
        inbound,
        cancel.clone(),
        move |peer, stream| {
            serve(
                served.clone(),
                served_limiters.clone(),
                network.clone(),
                peer,
                stream,
            )
        },
    )?;
    Ok(tokio::spawn(async move {
        let mut expiry = tokio::time::interval(limits.expiry_interval);
        loop {
            tokio::select! {
                _ = cancel.cancelled() => break,
                _ = expiry.tick() => {
                    limiters.puts.prune();
                    limiters.gets.prune();
                    let b = blobs.clone();
                    let n = tokio::task::spawn_blocking(move || b.expire(now_ms())).await.unwrap_or(0);
                    if n > 0 {
                        tracing::info!(n, "expired blobs deleted");
                    }
                }
            }
        }
        let _ = acceptor.await;
    }))
}

async fn serve(
    blobs: Arc<Blobs>,
    limiters: Arc<Limiters>,
    network: Network,
    peer: PeerId,
    stream: libp2p::Stream,
) -> Result<(), StreamError> {
    let (r, mut w) = stream.split();
    let mut reader = FrameReader::with_timeouts(r, blobs.limits().stream_timeouts);
    let mut buf = Vec::new();
    while let Some(requests) = reader.next_batch::<MediaRequest>(MAX_READ_BATCH).await? {
        for req in requests {
            let hash = *req.hash();
            let limiter = match req {
                MediaRequest::Put { .. } => Some(&limiters.puts),
                MediaRequest::Get { .. } => Some(&limiters.gets),
                _ => None,
            };
            if let Some(limiter) = limiter {
                if !limiter.allow(&peer, network.remote_ip(&peer)) {
                    blobs.metrics.rate_limited.fetch_add(1, Ordering::Relaxed);
                    let refused = MediaResponse::Refused {
                        hash,
                        reason: MediaRefusal::RateLimited,
                    };
                    write_frames(&peer, [&refused], &mut buf, &mut w).await?;
                    continue;
                }
            }
            if let MediaRequest::Get { first, count, .. } = req {
                if req.validate().is_ok() {
                    send_chunks(&blobs, peer, hash, first, count, &mut buf, &mut w).await?;
                    continue;
                }
            }
            let b = blobs.clone();
            let answers = tokio::task::spawn_blocking(move || b.answer(peer, req))
                .await
                .map_err(std::io::Error::other)?;
            write_frames(&peer, answers.iter(), &mut buf, &mut w).await?;
        }
    }
    Ok(())
}

/// Answers one `Get`: each chunk is read, written and flushed before the next is read.
async fn send_chunks<W: futures::AsyncWrite + Unpin>(
    blobs: &Arc<Blobs>,
    peer: PeerId,
    hash: BlobHash,
    first: u64,
    count: u32,
    buf: &mut Vec<u8>,
    w: &mut W,
) -> Result<(), StreamError> {
    let plan = match blobs.plan_get(peer, hash, first, count) {
        Ok(plan) => Arc::new(plan),
        Err(refused) => return write_frames(&peer, [&refused], buf, w).await,
    };
    for index in plan.indexes() {
        let p = plan.clone();
        let answer = tokio::task::spawn_blocking(move || p.read(index))
            .await
            .map_err(std::io::Error::other)?;
        let in_flight = match &answer {
            MediaResponse::Chunk { bytes, .. } => bytes.len() as u64,
            _ => 0,
        };
        blobs
            .metrics
            .blob_bytes_in_flight
            .fetch_add(in_flight, Ordering::Relaxed);
        let written = write_frames(&peer, [&answer], buf, w).await;
        blobs
            .metrics
            .blob_bytes_in_flight
            .fetch_sub(in_flight, Ordering::Relaxed);
        written?;
        // The write buffer held one chunk; it is not kept at that size between requests.
        buf.clear();
        buf.shrink_to(64 * 1024);
        if matches!(answer, MediaResponse::Refused { .. }) {
            break;
        }
    }
    Ok(())
}

impl Blobs {
    /// What a `Get` of `count` chunks from `first` will send, checked (owner, complete,
    /// range), without reading a chunk: the stream reads and sends them one at a time.
    pub(crate) fn plan_get(
        &self,
        peer: PeerId,
        hash: BlobHash,
        first: u64,
        count: u32,
    ) -> Result<GetPlan, MediaResponse> {
        let refuse = |reason| MediaResponse::Refused { hash, reason };
        let held = match self.get(&hash) {
            Some(h) if h.complete && h.mailbox.peer_id() == peer => h,
            // Not the owner, or not there: the same answer, so nobody probes for blobs.
            _ => return Err(refuse(MediaRefusal::NotFound)),
        };
        let Some(layout) = held.layout() else {
            return Err(refuse(MediaRefusal::NotFound));
        };
        let end = first
            .saturating_add(u64::from(count.min(MAX_CHUNKS_PER_REQUEST)))
            .min(layout.chunk_count());
        if first >= end {
            return Err(refuse(MediaRefusal::Malformed));
        }
        Ok(GetPlan {
            hash,
            path: self.complete_path(&hash),
            layout,
            first,
            end,
            metrics: self.metrics.clone(),
        })
    }
}

/// A checked `Get`: which chunks of which file to send.
pub(crate) struct GetPlan {
    hash: BlobHash,
    path: PathBuf,
    layout: BlobLayout,
    first: u64,
    end: u64,
    metrics: Arc<Metrics>,
}

impl GetPlan {
    /// The chunk indexes to send, in order.
    pub(crate) fn indexes(&self) -> std::ops::Range<u64> {
        self.first..self.end
    }

    /// Chunk `index` read from disk (blocking), or a refusal when it cannot be read (the
    /// stream then stops sending this request's chunks).
    pub(crate) fn read(&self, index: u64) -> MediaResponse {
        let hash = self.hash;
        let not_found = MediaResponse::Refused {
            hash,
            reason: MediaRefusal::NotFound,
        };
        let Ok(len) = self.layout.cipher_len(index) else {
            return not_found;
        };
        let mut bytes = vec![0u8; len];
        let read = File::open(&self.path).and_then(|mut file| {
            file.seek(SeekFrom::Start(self.layout.cipher_offset(index)))?;
            file.read_exact(&mut bytes)
        });
        if read.is_err() {
            return not_found;
        }
        self.metrics.blob_chunks_out.fetch_add(1, Ordering::Relaxed);
        MediaResponse::Chunk { hash, index, bytes }
    }
}
