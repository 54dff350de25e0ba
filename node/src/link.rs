//! Peer links: one long-lived `/kith/msg/1` stream per peer and direction.
//!
//! Measured here, one stream per peer with batched writes carries several times more messages
//! than a request-response exchange per message, and yamux turns every write into a frame and
//! a flush, so batching is ours to do: the writer drains its queue, encodes every waiting frame
//! into one buffer and writes and flushes once. Acknowledgements come back on the same stream.
//!
//! - [`spawn_outbound`]: the writer side to one peer (envelopes and heartbeats out, acks in).
//! - [`spawn_acceptor`]: accepts inbound streams; each reader hands batches of frames to the
//!   messenger and writes back the acks it answers with, after they are durable.

use std::sync::Arc;

use futures::{AsyncRead, AsyncReadExt, AsyncWriteExt, StreamExt};
use kith_protocol::{
    frame::{self, FrameError, LEN_PREFIX},
    wire::MsgFrame,
};
use libp2p::PeerId;
use libp2p_stream::Control;
use serde::{de::DeserializeOwned, Serialize};
use tokio::sync::{mpsc, oneshot, Semaphore};
use tokio_util::sync::CancellationToken;

use crate::net::MSG_PROTOCOL;

/// Most bytes gathered into one write before flushing.
const MAX_WRITE_BATCH: usize = 256 * 1024;

/// Most frames handed to the messenger in one batch.
const MAX_READ_BATCH: usize = 1024;

/// What links report to the messenger.
#[derive(Debug)]
pub enum LinkEvent {
    /// The outbound stream to `peer` is open.
    Up {
        /// The peer.
        peer: PeerId,
        /// Which link incarnation.
        generation: u64,
    },
    /// Frames the peer sent back on our outbound stream (acks and rejects).
    Answers {
        /// The peer.
        peer: PeerId,
        /// The frames.
        frames: Vec<MsgFrame>,
    },
    /// The outbound link to `peer` is gone (stream failed or closed).
    Down {
        /// The peer.
        peer: PeerId,
        /// Which link incarnation ended, so a stale report cannot tear down a newer link.
        generation: u64,
    },
    /// Frames that arrived from `peer`; the messenger answers with the frames to send back
    /// (acks, rejects) once what they acknowledge is durable.
    Inbound {
        /// The connection's (Noise-authenticated) peer.
        peer: PeerId,
        /// The frames, in arrival order.
        frames: Vec<MsgFrame>,
        /// Where to send the answer.
        reply: oneshot::Sender<Vec<MsgFrame>>,
    },
}

/// Why a link stopped.
#[derive(Debug, thiserror::Error)]
enum LinkError {
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    #[error("cannot open stream: {0}")]
    Open(String),
    #[error("peer sent a bad frame: {0}")]
    Frame(#[from] FrameError),
    #[error("cannot encode our own frame: {0}")]
    Encode(FrameError),
    #[error("messenger stopped")]
    Closed,
}

/// Reads length-prefixed frames from a byte stream without ever buffering more than one
/// maximum frame beyond what was already decoded.
///
/// `next_batch` is cancel-safe (it may be raced in a `select!`): bytes are read into a scratch
/// buffer and only then appended, so a read abandoned mid-way changes nothing.
pub struct FrameReader<R> {
    inner: R,
    buf: Vec<u8>,
    start: usize,
    scratch: Vec<u8>,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    /// Wraps a byte stream.
    pub fn new(inner: R) -> Self {
        FrameReader {
            inner,
            buf: Vec::with_capacity(64 * 1024),
            start: 0,
            scratch: Vec::new(),
        }
    }

    /// Every complete frame available (at least one, at most `max`), or `None` at a clean end
    /// of stream.
    pub async fn next_batch<T: DeserializeOwned>(
        &mut self,
        max: usize,
    ) -> Result<Option<Vec<T>>, LinkErrorPub> {
        loop {
            let mut out = Vec::new();
            while out.len() < max {
                match frame::decode::<T>(&self.buf[self.start..]) {
                    Ok(Some((f, used))) => {
                        self.start += used;
                        out.push(f);
                    }
                    Ok(None) => break,
                    Err(e) => return Err(LinkErrorPub(LinkError::Frame(e))),
                }
            }
            if self.start > 0 && (self.start == self.buf.len() || self.start > 64 * 1024) {
                self.buf.drain(..self.start);
                self.start = 0;
            }
            if !out.is_empty() {
                return Ok(Some(out));
            }
            // Make room for at least the frame in progress (its length is already checked
            // against the maximum by `peek_len`).
            let need = match frame::peek_len(&self.buf[self.start..]) {
                Ok(Some(len)) => LEN_PREFIX + len,
                Ok(None) => LEN_PREFIX,
                Err(e) => return Err(LinkErrorPub(LinkError::Frame(e))),
            };
            let have = self.buf.len() - self.start;
            let want = need.saturating_sub(have).max(16 * 1024);
            if self.scratch.len() < want {
                self.scratch.resize(want, 0);
            }
            let n = self
                .inner
                .read(&mut self.scratch[..want])
                .await
                .map_err(|e| LinkErrorPub(LinkError::Io(e)))?;
            self.buf.extend_from_slice(&self.scratch[..n]);
            if n == 0 {
                return if have == 0 {
                    Ok(None)
                } else {
                    Err(LinkErrorPub(LinkError::Io(
                        std::io::ErrorKind::UnexpectedEof.into(),
                    )))
                };
            }
        }
    }
}

/// A link error, opaque outside this module.
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct LinkErrorPub(LinkError);

/// Encodes frames into one buffer, appending.
///
/// Fails on the first frame that cannot be encoded (the buffer then ends with the frames
/// before it). Every frame carrying a variable number of items is built through
/// [`kith_protocol::batch`], so a frame over the limit is a bug of whoever built it: callers
/// report it and close the link, so the peer's retry logic takes over. It is never skipped
/// silently (a skipped `Deliver` would be rebuilt identically and skipped forever).
pub fn encode_frames<'a, T: Serialize + 'a>(
    frames: impl IntoIterator<Item = &'a T>,
    buf: &mut Vec<u8>,
) -> Result<(), FrameError> {
    for f in frames {
        frame::encode(f, buf)?;
    }
    Ok(())
}

/// Logs a frame of ours that could not be encoded, before the link carrying it is closed.
pub fn report_unencodable(peer: &PeerId, e: &FrameError) {
    tracing::error!(%peer, error = %e, "cannot encode an outgoing frame (a bug); closing the link so the peer retries");
}

/// What a generic outbound link reports.
#[derive(Debug)]
pub enum LinkSignal<In> {
    /// The stream is open.
    Up,
    /// Frames the peer sent back.
    Frames(Vec<In>),
    /// The stream is gone.
    Down,
}

/// Starts an outbound stream link to `peer` on `protocol`: opens the stream, writes whatever
/// arrives on `outgoing` in batches (one write and flush per batch), and reports what the peer
/// sends back through `wrap`. Reports [`LinkSignal::Down`] last, whatever happened.
#[allow(clippy::too_many_arguments)]
pub fn spawn_stream_link<Out, In, E>(
    peer: PeerId,
    protocol: libp2p::StreamProtocol,
    mut control: Control,
    mut outgoing: mpsc::Receiver<Out>,
    events: mpsc::Sender<E>,
    wrap: impl Fn(LinkSignal<In>) -> E + Send + Sync + 'static,
    cancel: CancellationToken,
) -> tokio::task::JoinHandle<()>
where
    Out: Serialize + Send + 'static,
    In: DeserializeOwned + Send + 'static,
    E: Send + 'static,
{
    let wrap = Arc::new(wrap);
    tokio::spawn(async move {
        let result: Result<(), LinkError> = async {
            let stream = control
                .open_stream(peer, protocol)
                .await
                .map_err(|e| LinkError::Open(format!("{e:?}")))?;
            events
                .send(wrap(LinkSignal::Up))
                .await
                .map_err(|_| LinkError::Closed)?;
            let (read_half, mut write_half) = stream.split();
            let reader_events = events.clone();
            let reader_wrap = wrap.clone();
            let reader = async move {
                let mut reader = FrameReader::new(read_half);
                while let Some(frames) = reader
                    .next_batch::<In>(MAX_READ_BATCH)
                    .await
                    .map_err(|e| e.0)?
                {
                    reader_events
                        .send(reader_wrap(LinkSignal::Frames(frames)))
                        .await
                        .map_err(|_| LinkError::Closed)?;
                }
                Ok::<(), LinkError>(())
            };
            let writer = async move {
                let mut buf = Vec::with_capacity(MAX_WRITE_BATCH);
                while let Some(first) = outgoing.recv().await {
                    buf.clear();
                    let mut encoded = encode_frames([&first], &mut buf);
                    while encoded.is_ok() && buf.len() < MAX_WRITE_BATCH {
                        match outgoing.try_recv() {
                            Ok(next) => encoded = encode_frames([&next], &mut buf),
                            Err(_) => break,
                        }
                    }
                    if let Err(e) = encoded {
                        report_unencodable(&peer, &e);
                        return Err(LinkError::Encode(e));
                    }
                    write_half.write_all(&buf).await?;
                    write_half.flush().await?;
                }
                let _ = write_half.close().await;
                Ok::<(), LinkError>(())
            };
            tokio::select! {
                r = reader => r,
                r = writer => r,
                _ = cancel.cancelled() => Ok(()),
            }
        }
        .await;
        if let Err(e) = result {
            tracing::debug!(%peer, error = %e, "outbound link ended");
        }
        let _ = events.send(wrap(LinkSignal::Down)).await;
    })
}

/// Starts the writer side of a `/kith/msg/1` link to `peer`, reporting acks and rejects.
pub fn spawn_outbound(
    peer: PeerId,
    generation: u64,
    control: Control,
    outgoing: mpsc::Receiver<MsgFrame>,
    events: mpsc::Sender<LinkEvent>,
    cancel: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    spawn_stream_link(
        peer,
        MSG_PROTOCOL,
        control,
        outgoing,
        events,
        move |signal: LinkSignal<MsgFrame>| match signal {
            LinkSignal::Up => LinkEvent::Up { peer, generation },
            LinkSignal::Down => LinkEvent::Down { peer, generation },
            LinkSignal::Frames(frames) => LinkEvent::Answers { peer, frames },
        },
        cancel,
    )
}

/// Accepts inbound `/kith/msg/1` streams (at most `max_streams` at once) and serves each.
pub fn spawn_acceptor(
    mut control: Control,
    events: mpsc::Sender<LinkEvent>,
    max_streams: usize,
    cancel: CancellationToken,
) -> Result<tokio::task::JoinHandle<()>, crate::net::NetError> {
    let mut incoming = control
        .accept(MSG_PROTOCOL)
        .map_err(|_| crate::net::NetError::AlreadyRegistered)?;
    let limit = Arc::new(Semaphore::new(max_streams));
    Ok(tokio::spawn(async move {
        loop {
            let next = tokio::select! {
                _ = cancel.cancelled() => break,
                next = incoming.next() => next,
            };
            let Some((peer, stream)) = next else { break };
            let Ok(permit) = limit.clone().try_acquire_owned() else {
                tracing::warn!(%peer, "too many inbound message streams; refused");
                continue;
            };
            let events = events.clone();
            let cancel = cancel.clone();
            tokio::spawn(async move {
                let _permit = permit;
                let serve = serve_inbound(peer, stream, events);
                let result = tokio::select! {
                    r = serve => r,
                    _ = cancel.cancelled() => Ok(()),
                };
                if let Err(e) = result {
                    tracing::debug!(%peer, error = %e, "inbound link ended");
                }
            });
        }
    }))
}

async fn serve_inbound(
    peer: PeerId,
    stream: libp2p::Stream,
    events: mpsc::Sender<LinkEvent>,
) -> Result<(), LinkError> {
    let (read_half, mut write_half) = stream.split();
    let mut reader = FrameReader::new(read_half);
    let mut buf = Vec::new();
    while let Some(frames) = reader
        .next_batch::<MsgFrame>(MAX_READ_BATCH)
        .await
        .map_err(|e| e.0)?
    {
        let (reply, answer) = oneshot::channel();
        events
            .send(LinkEvent::Inbound {
                peer,
                frames,
                reply,
            })
            .await
            .map_err(|_| LinkError::Closed)?;
        let answers = answer.await.map_err(|_| LinkError::Closed)?;
        if answers.is_empty() {
            continue;
        }
        buf.clear();
        if let Err(e) = encode_frames(answers.iter(), &mut buf) {
            report_unencodable(&peer, &e);
            return Err(LinkError::Encode(e));
        }
        write_half.write_all(&buf).await?;
        write_half.flush().await?;
    }
    Ok(())
}
