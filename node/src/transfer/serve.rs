//! Serving one inbound media stream: our own blobs, sealed chunk by chunk from the sent file,
//! to the user they were sent to and nobody else.
//!
//! It must never write anything, and never reveal to anyone else that a blob exists.

use std::sync::{atomic::Ordering, Arc};

use futures::{AsyncReadExt, AsyncWriteExt};
use kith_net::frames::ReadTimeouts;
use kith_protocol::media::{HaveState, MediaRefusal, MediaRequest, MediaResponse};
use libp2p::PeerId;

use super::{TransferError, Transfers, MAX_READ_BATCH};
use crate::{
    link::{encode_frames, FrameReader},
    media::read_sealed_chunk,
};

/// Serves one inbound media stream: our own blobs, to the user they were sent to.
pub(super) async fn serve(
    s: Arc<Transfers>,
    peer: PeerId,
    stream: libp2p::Stream,
) -> Result<(), TransferError> {
    let (r, mut w) = stream.split();
    // Deadlines: a silent or trickling requester does not hold a media slot.
    let mut reader = FrameReader::with_timeouts(r, ReadTimeouts::default());
    let mut buf = Vec::new();
    while let Some(requests) = reader.next_batch::<MediaRequest>(MAX_READ_BATCH).await? {
        // One request's answers at a time: a `Get` answers up to MAX_CHUNKS_PER_REQUEST
        // chunks, each one frame, so memory stays at one request's chunks however many
        // requests arrived together.
        for req in requests {
            let s2 = s.clone();
            let answers = tokio::task::spawn_blocking(move || answer(&s2, peer, req)).await?;
            buf.clear();
            if let Err(e) = encode_frames(answers.iter(), &mut buf) {
                crate::link::report_unencodable(&peer, &e);
                return Err(e.into());
            }
            w.write_all(&buf).await?;
        }
        w.flush().await?;
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
