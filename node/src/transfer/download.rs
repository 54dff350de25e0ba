//! Downloading a received blob: every missing chunk fetched from the holders in turn, opened
//! (verified) before it is written, synced before its count is recorded; the whole blob's
//! hash checked before the file gets its name.
//!
//! It must never write a chunk that did not open, nor name a file whose hash is not the
//! record's.

use std::{collections::HashMap, sync::atomic::Ordering, sync::Arc, time::Instant};

use kith_protocol::{
    blob::{open_chunk, BlobHash},
    media::{MediaRequest, MediaResponse, MAX_CHUNKS_PER_REQUEST},
};
use libp2p::PeerId;

use super::{MediaConn, TransferError, Transfers, PROGRESS_INTERVAL};
use crate::media::{blob_hash_of, write_chunk, MediaError, MediaRecord, MediaState};

/// Fetches and verifies every missing chunk, rotating over the holders batch by batch.
pub(super) async fn download(
    s: &Arc<Transfers>,
    mut rec: MediaRecord,
) -> Result<(), TransferError> {
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
        .await??
    };
    // The file moves to each blocking write and back: one owner at a time, no lock.
    let mut file = Some(file);
    let mut conns: HashMap<PeerId, MediaConn> = HashMap::new();
    let mut turn = 0usize;
    let mut delay = s.new_backoff();
    let mut last_emit = Instant::now();
    tracing::info!(%hash, size = rec.size, from = rec.done_chunks, "downloading media");
    let mut holders = Vec::new();
    // A download no holder serves gives up after the timeout, so bogus media cannot hold a
    // slot for ever; it fails (keeping what it has) and waits for the user to retry.
    let mut last_progress = Instant::now();
    while rec.done_chunks < count {
        if last_progress.elapsed() >= s.cfg.download_timeout {
            tracing::warn!(%hash, media = %id, timeout = ?s.cfg.download_timeout, "no holder served this media in time; failed");
            rec.state = MediaState::Failed;
            s.records.put(&rec)?;
            s.store.commit().await?;
            s.emit(&rec);
            return Ok(());
        }
        // The holders named when the message arrived (the sender first), then our mailbox's
        // store peers as known now: the set may have grown since.
        holders = rec.holder_peers();
        for p in s.mailbox_stores.borrow().iter() {
            if !holders.contains(p) {
                holders.push(*p);
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
        delay.reset();
        last_progress = Instant::now();
        let n = got.len() as u64;
        {
            let mut f = file.take().ok_or(TransferError::Unexpected)?;
            let path = path.clone();
            let (f, written) = tokio::task::spawn_blocking(move || {
                let written = (|| -> Result<(), MediaError> {
                    for (index, plain) in &got {
                        write_chunk(&mut f, &path, &layout, *index, plain)?;
                    }
                    f.sync_data().map_err(|source| MediaError::Io {
                        path: path.clone(),
                        source,
                    })
                })();
                (f, written)
            })
            .await?;
            file = Some(f);
            written?;
        }
        s.chunks_fetched.fetch_add(n, Ordering::Relaxed);
        rec.done_chunks = first + n;
        s.records.put(&rec)?;
        if last_emit.elapsed() >= PROGRESS_INTERVAL || rec.done_chunks == count {
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
        .await??
    };
    if !verified {
        tracing::warn!(%hash, media = %id, "every chunk opened but the blob does not have its hash; failed");
        rec.state = MediaState::Failed;
        s.records.put(&rec)?;
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
    s.records.put(&rec)?;
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
