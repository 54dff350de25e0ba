//! Outbound stream links: one long-lived stream to a peer on one protocol, written through the
//! batched writer and read through the [`FrameReader`], reported as [`LinkSignal`]s. Used for
//! direct messages and for links between store peers. Never interprets the frames.

use std::sync::Arc;

use futures::{AsyncReadExt, AsyncWriteExt};
use libp2p::{PeerId, Stream, StreamProtocol};
use libp2p_stream::{Control, OpenStreamError};
use serde::{de::DeserializeOwned, Serialize};
use tokio::{sync::mpsc, task::JoinHandle};
use tokio_util::sync::CancellationToken;

use crate::frames::{write_batches, FrameReader, StreamError};

/// Most frames the peer sent back that one [`LinkSignal::Frames`] carries.
pub const MAX_READ_BATCH: usize = 1024;

/// Most times [`open_stream`] asks for one stream.
const OPEN_ATTEMPTS: u32 = 3;

/// Pause before asking again: the swarm task forgets a closed connection on its next turn.
const REOPEN_PAUSE: std::time::Duration = std::time::Duration::from_millis(20);

/// Opens a `protocol` stream to `peer` (dialing it if not connected), asking again, up to
/// [`OPEN_ATTEMPTS`] times, when the connection libp2p-stream picked closed under the
/// request. With two connections to a peer (crossed dials, a hole punch beside a relay
/// circuit) the swarm closes one as a duplicate; a request that went to that one fails while
/// the peer is still connected through the other, and must not count as the peer's failure.
pub async fn open_stream(
    control: &mut Control,
    peer: PeerId,
    protocol: StreamProtocol,
) -> Result<Stream, OpenStreamError> {
    let mut attempt = 1;
    loop {
        match control.open_stream(peer, protocol.clone()).await {
            Err(OpenStreamError::Io(e)) if lost_with_connection(&e) && attempt < OPEN_ATTEMPTS => {
                tracing::debug!(%peer, %protocol, error = %e, "stream request lost with its connection; asking again");
                attempt += 1;
                tokio::time::sleep(REOPEN_PAUSE).await;
            }
            other => return other,
        }
    }
}

/// Whether a stream request failed because its connection went away (libp2p-stream reports
/// a request dropped with its connection as `ConnectionReset`; yamux a closed connection as
/// `WriteZero`), rather than because the peer refused or cannot be reached.
fn lost_with_connection(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        e.kind(),
        ConnectionReset | ConnectionAborted | BrokenPipe | WriteZero | UnexpectedEof
    )
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
/// sends back (at most [`MAX_READ_BATCH`] frames per report) through `wrap`. Reports
/// [`LinkSignal::Down`] last, whatever happened.
#[allow(clippy::too_many_arguments)]
pub fn spawn_stream_link<Out, In, E>(
    peer: PeerId,
    protocol: StreamProtocol,
    mut control: Control,
    mut outgoing: mpsc::Receiver<Out>,
    events: mpsc::Sender<E>,
    wrap: impl Fn(LinkSignal<In>) -> E + Send + Sync + 'static,
    cancel: CancellationToken,
) -> JoinHandle<()>
where
    Out: Serialize + Send + 'static,
    In: DeserializeOwned + Send + 'static,
    E: Send + 'static,
{
    let wrap = Arc::new(wrap);
    tokio::spawn(async move {
        let result: Result<(), StreamError> = async {
            let stream = open_stream(&mut control, peer, protocol).await?;
            events
                .send(wrap(LinkSignal::Up))
                .await
                .map_err(|_| StreamError::Closed)?;
            let (read_half, mut write_half) = stream.split();
            let reader_events = events.clone();
            let reader_wrap = wrap.clone();
            let reader = async move {
                let mut reader = FrameReader::new(read_half);
                while let Some(frames) = reader.next_batch::<In>(MAX_READ_BATCH).await? {
                    reader_events
                        .send(reader_wrap(LinkSignal::Frames(frames)))
                        .await
                        .map_err(|_| StreamError::Closed)?;
                }
                Ok::<(), StreamError>(())
            };
            let writer = async move {
                write_batches(&peer, &mut outgoing, &mut write_half).await?;
                let _ = write_half.close().await;
                Ok::<(), StreamError>(())
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
