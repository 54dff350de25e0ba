//! Peer links: one long-lived `/kith/msg/1` stream per peer and direction.
//!
//! Measured here, one stream per peer with batched writes carries several times more messages
//! than a request-response exchange per message. The framing, the batched writer and the
//! bounded accept loop are `kith-net`'s; this module adds what the message protocol means to
//! the messenger: [`LinkEvent`]s, and acks written back only once they are durable.
//!
//! - [`spawn_outbound`]: the writer side to one peer (envelopes and heartbeats out, acks in).
//! - [`spawn_acceptor`]: accepts inbound streams; each reader hands batches of frames to the
//!   messenger and writes back the acks it answers with, after they are durable.

use futures::AsyncReadExt;
use kith_net::{
    accept::{self, Inbound},
    frames::{write_frames, ReadTimeouts, StreamError},
    protocols::MSG,
};
use kith_protocol::wire::MsgFrame;
use libp2p::PeerId;
use libp2p_stream::Control;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

pub use kith_net::{
    frames::{encode_frames, report_unencodable, FrameReader},
    outbound::{spawn_stream_link, LinkSignal},
};

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
        MSG,
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
    let inbound = Inbound {
        protocol: MSG,
        max_streams,
        max_streams_per_peer: accept::STREAMS_PER_PEER,
    };
    accept::spawn_acceptor(&mut control, inbound, cancel, move |peer, stream| {
        serve_inbound(peer, stream, events.clone())
    })
}

async fn serve_inbound(
    peer: PeerId,
    stream: libp2p::Stream,
    events: mpsc::Sender<LinkEvent>,
) -> Result<(), StreamError> {
    let (read_half, mut write_half) = stream.split();
    // A contact's link carries a heartbeat every few seconds; a stream silent for minutes,
    // or a frame trickling in for longer than a frame should take, holds a slot for nothing.
    let mut reader = FrameReader::with_timeouts(read_half, ReadTimeouts::default());
    let mut buf = Vec::new();
    while let Some(frames) = reader.next_batch::<MsgFrame>(MAX_READ_BATCH).await? {
        let (reply, answer) = oneshot::channel();
        events
            .send(LinkEvent::Inbound {
                peer,
                frames,
                reply,
            })
            .await
            .map_err(|_| StreamError::Closed)?;
        let answers = answer.await.map_err(|_| StreamError::Closed)?;
        write_frames(&peer, answers.iter(), &mut buf, &mut write_half).await?;
    }
    Ok(())
}
