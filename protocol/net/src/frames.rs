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

/// Consumed bytes at the front of the read buffer beyond which they are dropped (so the
/// buffer does not grow with everything ever read).
const COMPACT_AFTER: usize = 64 * 1024;

/// Fewest bytes asked of the stream per read (fewer reads for many small frames).
const MIN_READ: usize = 16 * 1024;

/// Most bytes asked of the stream per read. A frame's declared length is only a claim: the
/// buffer grows with the bytes that actually arrive, at most this much per read, so four
/// length bytes announcing a 1 MiB frame cost one read's worth of memory, not a megabyte.
pub const MAX_READ: usize = 64 * 1024;

/// How long a server-side reader waits for its peer. A stream that is neither sending nor
/// finishing a frame holds a slot and buffers for nothing (a slow-loris); these deadlines
/// close it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReadTimeouts {
    /// Longest wait for the first byte of the next frame after the last complete one (or the
    /// stream's opening). Long-lived streams that legitimately wait (subscriptions) need a
    /// value above their peers' keep-alive traffic.
    pub idle: std::time::Duration,
    /// Longest a frame may take from its first byte to its last, however the bytes trickle
    /// in.
    pub stalled_frame: std::time::Duration,
}

impl Default for ReadTimeouts {
    fn default() -> Self {
        ReadTimeouts {
            idle: std::time::Duration::from_secs(600),
            stalled_frame: std::time::Duration::from_secs(30),
        }
    }
}

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
    /// The peer sent nothing for too long, or did not finish a frame in time
    /// ([`ReadTimeouts`]).
    #[error("peer too slow: {0}")]
    TimedOut(&'static str),
}

/// Reads length-prefixed frames from a byte stream without ever buffering more than one
/// maximum frame beyond what was already decoded; the buffer grows with the bytes received
/// (never with a frame's declared length).
///
/// `next_batch` is cancel-safe (it may be raced in a `select!`): bytes are read into a scratch
/// buffer and only then appended, so a read abandoned mid-way changes nothing; deadlines are
/// kept as instants, so a call raced and started again does not restart them.
pub struct FrameReader<R> {
    inner: R,
    buf: Vec<u8>,
    start: usize,
    scratch: Vec<u8>,
    timeouts: Option<ReadTimeouts>,
    /// When the last complete frame was decoded (or the reader made): the idle deadline's start.
    last_frame: tokio::time::Instant,
    /// When the first byte of the frame in progress arrived, if one is in progress.
    frame_started: Option<tokio::time::Instant>,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    /// Wraps a byte stream; waits for its peer as long as it takes (a client's reader: the
    /// client closes what it no longer wants).
    pub fn new(inner: R) -> Self {
        FrameReader {
            inner,
            buf: Vec::new(),
            start: 0,
            scratch: Vec::new(),
            timeouts: None,
            last_frame: tokio::time::Instant::now(),
            frame_started: None,
        }
    }

    /// Wraps a byte stream served to a remote peer: [`Self::next_batch`] fails with
    /// [`StreamError::TimedOut`] when the peer is idle or stalls a frame past `timeouts`.
    pub fn with_timeouts(inner: R, timeouts: ReadTimeouts) -> Self {
        FrameReader {
            timeouts: Some(timeouts),
            ..FrameReader::new(inner)
        }
    }

    /// Bytes this reader holds allocated (its buffers' capacity): what one stream costs.
    pub fn buffered_capacity(&self) -> usize {
        self.buf.capacity() + self.scratch.capacity()
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
            let have = self.buf.len() - self.start;
            if !out.is_empty() {
                self.last_frame = tokio::time::Instant::now();
                self.frame_started = (have > 0).then_some(self.last_frame);
                return Ok(Some(out));
            }
            // The frame in progress is checked against the maximum (`peek_len`) but its
            // declared length is not trusted: at most MAX_READ more bytes are asked for.
            let need = match frame::peek_len(&self.buf[self.start..]) {
                Ok(Some(len)) => LEN_PREFIX + len,
                Ok(None) => LEN_PREFIX,
                Err(e) => return Err(StreamError::Frame(e)),
            };
            let want = need.saturating_sub(have).clamp(MIN_READ, MAX_READ);
            if self.scratch.len() < want {
                self.scratch.resize(want, 0);
            }
            let read = self.inner.read(&mut self.scratch[..want]);
            let n = match self.timeouts {
                None => read.await?,
                Some(t) => {
                    let (deadline, what) = match self.frame_started {
                        Some(started) => (started + t.stalled_frame, "frame not finished in time"),
                        None => (self.last_frame + t.idle, "idle for too long"),
                    };
                    tokio::time::timeout_at(deadline, read)
                        .await
                        .map_err(|_| StreamError::TimedOut(what))??
                }
            };
            self.buf.extend_from_slice(&self.scratch[..n]);
            if n == 0 {
                return if have == 0 {
                    Ok(None)
                } else {
                    Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof).into())
                };
            }
            if self.frame_started.is_none() {
                self.frame_started = Some(tokio::time::Instant::now());
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

    /// A stream that yields `bytes`, then never anything more (a peer gone silent).
    struct ThenSilence(futures::io::Cursor<Vec<u8>>);

    impl AsyncRead for ThenSilence {
        fn poll_read(
            mut self: std::pin::Pin<&mut Self>,
            cx: &mut std::task::Context<'_>,
            buf: &mut [u8],
        ) -> std::task::Poll<std::io::Result<usize>> {
            let cursor = &mut self.0;
            if cursor.position() < cursor.get_ref().len() as u64 {
                return std::pin::Pin::new(cursor).poll_read(cx, buf);
            }
            std::task::Poll::Pending
        }
    }

    #[tokio::test(start_paused = true)]
    async fn frame_header_alone_does_not_allocate_the_declared_length() {
        let declared = frame::MAX_FRAME_LEN;
        let header = u32::try_from(declared).unwrap().to_be_bytes().to_vec();
        let mut reader = FrameReader::with_timeouts(
            ThenSilence(futures::io::Cursor::new(header)),
            ReadTimeouts::default(),
        );
        let err = reader.next_batch::<Vec<u8>>(8).await.unwrap_err();
        assert!(matches!(err, StreamError::TimedOut(_)), "{err}");
        assert!(
            reader.buffered_capacity() <= 2 * MAX_READ,
            "{} bytes held for a frame announced at {declared} of which 4 arrived",
            reader.buffered_capacity()
        );
    }

    #[tokio::test(start_paused = true)]
    async fn slow_loris_frame_is_cut_by_its_deadline_however_the_bytes_trickle() {
        /// Sends one byte of a frame per `gap`, forever.
        struct Trickle {
            sent: usize,
            gap: Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
        }
        impl AsyncRead for Trickle {
            fn poll_read(
                mut self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
                buf: &mut [u8],
            ) -> std::task::Poll<std::io::Result<usize>> {
                let gap = self.gap.get_or_insert_with(|| {
                    Box::pin(tokio::time::sleep(std::time::Duration::from_secs(1)))
                });
                if gap.as_mut().poll(cx).is_pending() {
                    return std::task::Poll::Pending;
                }
                self.gap = None;
                // A frame of 1000 bytes, one byte at a time.
                let byte = match self.sent {
                    0..=3 => 1000u32.to_be_bytes()[self.sent],
                    _ => 0,
                };
                self.sent += 1;
                buf[0] = byte;
                std::task::Poll::Ready(Ok(1))
            }
        }
        use std::future::Future;
        let timeouts = ReadTimeouts::default();
        let mut reader = FrameReader::with_timeouts(Trickle { sent: 0, gap: None }, timeouts);
        let err = reader.next_batch::<Vec<u8>>(8).await.unwrap_err();
        assert!(matches!(err, StreamError::TimedOut(_)), "{err}");
    }

    #[tokio::test(start_paused = true)]
    async fn silent_stream_is_closed_by_its_idle_timeout() {
        let mut reader = FrameReader::with_timeouts(
            ThenSilence(futures::io::Cursor::new(Vec::new())),
            ReadTimeouts::default(),
        );
        let err = reader.next_batch::<Vec<u8>>(8).await.unwrap_err();
        assert!(matches!(err, StreamError::TimedOut(_)), "{err}");
    }
}
