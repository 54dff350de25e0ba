//! Uploading a blob the local user sent to the recipient's store peers (when the recipient
//! is away): `available` once `write_quorum` of them hold it, then on to the others for a few
//! rounds more; chunks are sealed from the plaintext file as they are sent.
//!
//! It must never change a record other than the one it uploads.

use std::{
    collections::HashSet,
    sync::atomic::{AtomicU64, Ordering},
    sync::Arc,
    time::Instant,
};

use futures::StreamExt;
use kith_protocol::{
    blob::BlobLayout,
    media::{HaveState, MediaRequest, MediaResponse},
};
use libp2p::PeerId;

use super::{MediaConn, TransferError, Transfers, PROGRESS_INTERVAL, UPLOAD_WINDOW};
use crate::media::{read_sealed_chunk, MediaError, MediaRecord, MediaState};

/// Rounds (with the transfer backoff between them) in which store peers that failed are
/// tried again once `write_quorum` of them hold the blob.
const EXTRA_COPY_ROUNDS: u32 = 3;

/// Uploads a blob to the store peers in its record until `write_quorum` of them hold it,
/// then tries the others for [`EXTRA_COPY_ROUNDS`] more rounds.
pub(super) async fn upload(s: &Arc<Transfers>, mut rec: MediaRecord) -> Result<(), TransferError> {
    let layout = rec.layout().map_err(MediaError::from)?;
    let hash = rec.hash;
    let stores = rec.holder_peers();
    let quorum = s.cfg.write_quorum.min(stores.len()).max(1);
    let count = layout.chunk_count();
    let mut done: HashSet<PeerId> = HashSet::new();
    // Chunks each store peer acknowledged: one counter per store, written only by its own
    // upload, read by all of them to show the W-th best.
    let progress: Vec<AtomicU64> = stores.iter().map(|_| AtomicU64::new(0)).collect();
    let mut delay = s.new_backoff();
    let mut rounds_after_quorum = 0;
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
                let store = *store;
                let slot = stores.iter().position(|p| *p == store).unwrap_or(0);
                let (source, layout, progress) = (&source, &layout, &progress[..]);
                async move {
                    let r = upload_to(s, source, layout, store, progress, slot).await;
                    (store, r)
                }
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
                s.records.put(&rec)?;
                s.store.commit().await?;
                s.emit(&rec);
                tracing::info!(%hash, held = done.len(), "media held by enough store peers");
            }
        }
        if done.len() >= quorum {
            // Enough copies for `available`; a store peer that failed (its stream cut, or
            // away for a moment) is tried a few rounds more, since every copy is one more
            // failure the blob survives, and then left.
            rounds_after_quorum += 1;
            if rounds_after_quorum > EXTRA_COPY_ROUNDS {
                tracing::info!(%hash, held = done.len(), of = stores.len(), "upload left with fewer copies than store peers");
                break;
            }
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
    progress: &[AtomicU64],
    slot: usize,
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
        .await??
    };
    // The file moves to each blocking read and back: one owner at a time, no lock.
    let mut file = Some(file);
    let key = rec.blob_key();
    let mut last_emit = Instant::now();
    while next < count {
        let end = (next + UPLOAD_WINDOW).min(count);
        let chunks = {
            let mut f = file.take().ok_or(TransferError::Unexpected)?;
            let path = path.clone();
            let key = key.clone();
            let layout = *layout;
            let (f, chunks) = tokio::task::spawn_blocking(move || {
                let chunks = (next..end)
                    .map(|index| {
                        Ok(MediaRequest::Chunk {
                            hash,
                            index,
                            bytes: read_sealed_chunk(&mut f, &path, &key, &layout, index)?,
                        })
                    })
                    .collect::<Result<Vec<_>, MediaError>>();
                (f, chunks)
            })
            .await?;
            file = Some(f);
            chunks?
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
        if let Some(mine) = progress.get(slot) {
            mine.store(next, Ordering::Relaxed);
        }
        if last_emit.elapsed() >= PROGRESS_INTERVAL {
            last_emit = Instant::now();
            let mut shown = rec.clone();
            let mut best: Vec<u64> = progress.iter().map(|p| p.load(Ordering::Relaxed)).collect();
            best.sort_unstable_by(|a, b| b.cmp(a));
            let q = s.cfg.write_quorum.max(1);
            shown.done_chunks = best.get(q - 1).or(best.last()).copied().unwrap_or(0);
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
