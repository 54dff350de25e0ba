//! One request/answer conversation with a peer on a `/kith/media/1` stream, every step
//! bounded by [`REQUEST_TIMEOUT`]. It must never touch files or the store.

use std::collections::VecDeque;

use futures::{
    io::{ReadHalf, WriteHalf},
    AsyncReadExt, AsyncWriteExt,
};
use kith_protocol::media::{MediaRequest, MediaResponse};
use libp2p::PeerId;
use libp2p_stream::Control;

use super::{TransferError, MAX_READ_BATCH, MEDIA, REQUEST_TIMEOUT};
use crate::link::{encode_frames, FrameReader};

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
        let opened = kith_net::outbound::open_stream(control, peer, MEDIA);
        let stream = tokio::time::timeout(REQUEST_TIMEOUT, opened)
            .await
            .map_err(|_| TransferError::Timeout)??;
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
        Ok(tokio::time::timeout(REQUEST_TIMEOUT, write)
            .await
            .map_err(|_| TransferError::Timeout)??)
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
        .map_err(|_| TransferError::Timeout)??
        .ok_or(TransferError::Ended)?;
        self.pending.extend(batch);
        self.pending.pop_front().ok_or(TransferError::Ended)
    }
}
