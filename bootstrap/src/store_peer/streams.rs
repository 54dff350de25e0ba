//! One inbound `/kith/mailbox/1` stream: a reader that forwards requests to the
//! [`StorePeer`](super::StorePeer) actor and the batched writer that sends its answers. The
//! stream side never touches the mailboxes.

use std::sync::{
    atomic::{AtomicUsize, Ordering},
    Arc,
};

use futures::AsyncReadExt;
use kith_net::frames::{write_frames, FrameReader, ReadTimeouts, StreamError, MAX_WRITE_BATCH};
use kith_protocol::{
    codec,
    mailbox::{MailboxRequest, MailboxResponse, MAX_BATCH},
};
use libp2p::PeerId;
use tokio::sync::mpsc;

use super::input::Input;

/// Reads requests from one inbound stream and writes the actor's answers back (through the
/// batched writer); tells the actor when the stream is gone. A peer idle past `timeouts`, or
/// slow to finish a frame, has its stream closed.
pub(super) async fn serve_stream(
    peer: PeerId,
    conn: u64,
    stream: libp2p::Stream,
    inputs: mpsc::Sender<Input>,
    queue: usize,
    timeouts: ReadTimeouts,
) -> Result<(), std::convert::Infallible> {
    let (out_tx, mut out_rx) = mpsc::channel::<MailboxResponse>(queue);
    let queued = Arc::new(AtomicUsize::new(0));
    let writer_queued = queued.clone();
    let (read_half, mut write_half) = stream.split();
    let reader_inputs = inputs.clone();
    let reader = async move {
        let mut reader = FrameReader::with_timeouts(read_half, timeouts);
        loop {
            match reader.next_batch::<MailboxRequest>(MAX_BATCH).await {
                Ok(Some(requests)) => {
                    let input = Input::Requests {
                        peer,
                        conn,
                        requests,
                        out: out_tx.clone(),
                        queued: queued.clone(),
                    };
                    if reader_inputs.send(input).await.is_err() {
                        break;
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    tracing::debug!(%peer, error = %e, "mailbox stream: bad input; closing");
                    break;
                }
            }
        }
    };
    // Closing the stream on a write error makes the node subscribe (or re-deposit) again.
    let writer = write_answers(&peer, &mut out_rx, &mut write_half, &writer_queued);
    tokio::select! {
        _ = reader => {},
        _ = writer => {},
    }
    let _ = inputs.send(Input::StreamClosed { peer, conn }).await;
    Ok(())
}

/// The weight a `Deliver` frame counts for in its stream's queue (its envelopes' encoded
/// size; other answers are small and count nothing). The actor adds it when queueing, the
/// writer takes it off when written: both compute it the same way.
pub(super) fn deliver_weight(frame: &MailboxResponse) -> usize {
    match frame {
        MailboxResponse::Deliver(envs) => codec::encoded_len(envs).unwrap_or(0),
        _ => 0,
    }
}

/// The stream's writer: writes what arrives on `outgoing`, gathering what is already queued
/// (up to [`MAX_WRITE_BATCH`] bytes) into one write, and takes each written `Deliver` off
/// `queued`.
async fn write_answers<W: futures::AsyncWrite + Unpin>(
    peer: &PeerId,
    outgoing: &mut mpsc::Receiver<MailboxResponse>,
    w: &mut W,
    queued: &AtomicUsize,
) -> Result<(), StreamError> {
    let mut buf = Vec::new();
    let mut frames = Vec::new();
    while let Some(first) = outgoing.recv().await {
        frames.clear();
        let mut weight = deliver_weight(&first);
        let mut bytes = weight.max(1);
        frames.push(first);
        while bytes < MAX_WRITE_BATCH {
            match outgoing.try_recv() {
                Ok(next) => {
                    let each = deliver_weight(&next);
                    weight += each;
                    bytes += each.max(1);
                    frames.push(next);
                }
                Err(_) => break,
            }
        }
        let written = write_frames(peer, frames.iter(), &mut buf, w).await;
        let _ = queued.fetch_update(Ordering::AcqRel, Ordering::Acquire, |q| {
            Some(q.saturating_sub(weight))
        });
        written?;
        // One large batch does not keep its buffer for the stream's life.
        buf.clear();
        buf.shrink_to(MAX_WRITE_BATCH);
    }
    Ok(())
}
