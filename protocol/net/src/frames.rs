//! Framed stream I/O: length-prefixed [`kith_protocol::frame`]s over a libp2p stream, read in
//! batches and written in batches.
//!
//! Yamux turns every write into a frame and a flush, so batching is ours to do: a writer
//! drains its queue, encodes every waiting frame into one buffer and writes and flushes once
//! ([`write_batches`]). A reader hands over every complete frame it holds at once
//! ([`FrameReader`]). This module knows frames, never what they mean.

use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use kith_protocol::frame::{self, FrameError, LEN_PREFIX};
use libp2p::PeerId;
use serde::{de::DeserializeOwned, Serialize};
use tokio::sync::mpsc;

/// Most bytes gathered into one write before flushing.
pub const MAX_WRITE_BATCH: usize = 256 * 1024;

/// A reader's initial buffer; it grows to the largest frame in progress.
const READ_BUFFER: usize = 64 * 1024;

/// Consumed bytes at the front of the read buffer beyond which they are dropped (so the
/// buffer does not grow with everything ever read).
const COMPACT_AFTER: usize = 64 * 1024;

/// Fewest bytes asked of the stream per read (fewer reads for many small frames).
const MIN_READ: usize = 16 * 1024;

/// Why a framed stream stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StreamError {
    /// Reading or writing the stream failed (including an end of stream mid-frame).
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    /// The stream could not be opened.
    #[error("cannot open stream: {0}")]
    Open(#[from] libp2p_stream::OpenStreamError),
    /// The peer sent a frame that does not decode or is too large.
    #[error("peer sent a bad frame: {0}")]
    Frame(#[source] FrameError),
    /// One of our own frames could not be encoded (a bug of whoever built it).
    #[error("cannot encode our own frame: {0}")]
    Encode(#[source] FrameError),
    /// Whoever consumes the stream's frames has stopped.
    #[error("consumer stopped")]
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
            buf: Vec::with_capacity(READ_BUFFER),
            start: 0,
            scratch: Vec::new(),
        }
    }

    /// Every complete frame available (at least one, at most `max`), or `None` at a clean end
    /// of stream.
    pub async fn next_batch<T: DeserializeOwned>(
        &mut self,
        max: usize,
    ) -> Result<Option<Vec<T>>, StreamError> {
        loop {
            let mut out = Vec::new();
            while out.len() < max {
                match frame::decode::<T>(&self.buf[self.start..]) {
                    Ok(Some((f, used))) => {
                        self.start += used;
                        out.push(f);
                    }
                    Ok(None) => break,
                    Err(e) => return Err(StreamError::Frame(e)),
                }
            }
            if self.start > 0 && (self.start == self.buf.len() || self.start > COMPACT_AFTER) {
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
                Err(e) => return Err(StreamError::Frame(e)),
            };
            let have = self.buf.len() - self.start;
            let want = need.saturating_sub(have).max(MIN_READ);
            if self.scratch.len() < want {
                self.scratch.resize(want, 0);
            }
            let n = self.inner.read(&mut self.scratch[..want]).await?;
            self.buf.extend_from_slice(&self.scratch[..n]);
            if n == 0 {
                return if have == 0 {
                    Ok(None)
                } else {
                    Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof).into())
                };
            }
        }
    }
}

/// Encodes frames into one buffer, appending.
///
/// Fails on the first frame that cannot be encoded (the buffer then ends with the frames
/// before it). Every frame carrying a variable number of items is built through
/// [`kith_protocol::batch`], so a frame over the limit is a bug of whoever built it: callers
/// report it and close the stream, so the peer's retry logic takes over. It is never skipped
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

/// Logs a frame of ours that could not be encoded, before the stream carrying it is closed.
pub fn report_unencodable(peer: &PeerId, e: &FrameError) {
    tracing::error!(%peer, error = %e, "cannot encode an outgoing frame (a bug); closing the link so the peer retries");
}

/// Encodes `frames` and writes them to `w` in one write and one flush (nothing is written
/// when `frames` is empty). An unencodable frame is reported and fails the stream.
pub async fn write_frames<'a, T: Serialize + 'a, W: AsyncWrite + Unpin>(
    peer: &PeerId,
    frames: impl IntoIterator<Item = &'a T>,
    buf: &mut Vec<u8>,
    w: &mut W,
) -> Result<(), StreamError> {
    buf.clear();
    if let Err(e) = encode_frames(frames, buf) {
        report_unencodable(peer, &e);
        return Err(StreamError::Encode(e));
    }
    if !buf.is_empty() {
        w.write_all(buf).await?;
        w.flush().await?;
    }
    Ok(())
}

/// The batched writer: writes everything arriving on `outgoing` to `w`, gathering whatever is
/// already queued (up to [`MAX_WRITE_BATCH`] bytes) into one write and one flush. Returns
/// when `outgoing` closes, or on the first error. Does not close `w`.
pub async fn write_batches<T: Serialize, W: AsyncWrite + Unpin>(
    peer: &PeerId,
    outgoing: &mut mpsc::Receiver<T>,
    w: &mut W,
) -> Result<(), StreamError> {
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
            report_unencodable(peer, &e);
            return Err(StreamError::Encode(e));
        }
        w.write_all(&buf).await?;
        w.flush().await?;
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn encoded(frames: &[Vec<u8>]) -> Vec<u8> {
        let mut buf = Vec::new();
        encode_frames(frames.iter(), &mut buf).unwrap();
        buf
    }

    #[tokio::test]
    async fn reader_returns_every_complete_frame_then_a_clean_end() {
        let frames = vec![vec![1u8; 10], vec![2u8; 70_000], vec![3u8; 3]];
        let bytes = encoded(&frames);
        let mut reader = FrameReader::new(futures::io::Cursor::new(bytes));
        let mut got = Vec::new();
        while let Some(batch) = reader.next_batch::<Vec<u8>>(2).await.unwrap() {
            assert!(batch.len() <= 2);
            got.extend(batch);
        }
        assert_eq!(got, frames);
    }

    #[tokio::test]
    async fn reader_reports_an_end_of_stream_mid_frame() {
        let mut bytes = encoded(&[vec![7u8; 100]]);
        bytes.truncate(bytes.len() - 1);
        let mut reader = FrameReader::new(futures::io::Cursor::new(bytes));
        let err = reader.next_batch::<Vec<u8>>(8).await.unwrap_err();
        assert!(matches!(err, StreamError::Io(_)), "{err}");
    }

    #[tokio::test]
    async fn batched_writer_writes_everything_queued_in_order() {
        let (tx, mut rx) = mpsc::channel(16);
        let frames: Vec<Vec<u8>> = (0..10u8).map(|i| vec![i; 1000]).collect();
        for f in &frames {
            tx.send(f.clone()).await.unwrap();
        }
        drop(tx);
        let mut out = futures::io::Cursor::new(Vec::new());
        write_batches(&PeerId::random(), &mut rx, &mut out)
            .await
            .unwrap();
        assert_eq!(out.into_inner(), encoded(&frames));
    }
}
