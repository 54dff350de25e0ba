//! The one bounded accept loop: every inbound stream protocol (messages, mailboxes, media) is
//! served through [`spawn_acceptor`].
//!
//! Accepting runs in a task that does nothing else: libp2p-stream keeps at most one inbound
//! stream waiting to be accepted and drops the next one, so accepting must never wait behind a
//! service's work. Each stream is served by its own task, owned by the acceptor (a
//! [`JoinSet`]): when the acceptor ends, on cancel or abort, its streams end with it. Streams
//! are capped in all and per peer, so one peer cannot take every slot. This module never looks
//! inside a stream.

use std::{collections::HashMap, fmt::Display, future::Future};

use futures::StreamExt;
use libp2p::{PeerId, Stream, StreamProtocol};
use libp2p_stream::Control;
use tokio::task::{JoinHandle, JoinSet};
use tokio_util::sync::CancellationToken;

use crate::swarm::NetError;

/// A per-peer stream cap for protocols whose peers keep one or a few long-lived streams: room
/// for a reconnect that overlaps the stream it replaces, and little more.
pub const STREAMS_PER_PEER: usize = 8;

/// One inbound protocol and its bound.
#[derive(Clone, Debug)]
pub struct Inbound {
    /// The protocol accepted.
    pub protocol: StreamProtocol,
    /// Most streams served at once; one more is refused (closed) at once.
    pub max_streams: usize,
    /// Most streams served at once for one peer; one more from it is refused (closed) at
    /// once, whatever room is left for others.
    pub max_streams_per_peer: usize,
}

/// Accepts `inbound.protocol` streams and serves each with `serve(peer, stream)` in its own
/// task, at most `inbound.max_streams` at once and `inbound.max_streams_per_peer` for one peer.
/// Stops, ending every stream, when `cancel`
/// fires; a stream's error is logged, never returned.
pub fn spawn_acceptor<S, F, E>(
    control: &mut Control,
    inbound: Inbound,
    cancel: CancellationToken,
    mut serve: S,
) -> Result<JoinHandle<()>, NetError>
where
    S: FnMut(PeerId, Stream) -> F + Send + 'static,
    F: Future<Output = Result<(), E>> + Send + 'static,
    E: Display,
{
    let mut incoming = control
        .accept(inbound.protocol.clone())
        .map_err(|_| NetError::AlreadyRegistered)?;
    Ok(tokio::spawn(async move {
        let protocol = inbound.protocol;
        let mut streams = JoinSet::new();
        // Streams being served per peer; a peer's entry goes when its last stream ends, so
        // the map never holds more than `max_streams` peers.
        let mut per_peer: HashMap<PeerId, usize> = HashMap::new();
        let ended = |per_peer: &mut HashMap<PeerId, usize>, peer: PeerId| {
            if let Some(n) = per_peer.get_mut(&peer) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    per_peer.remove(&peer);
                }
            }
        };
        loop {
            let next = tokio::select! {
                _ = cancel.cancelled() => break,
                Some(done) = streams.join_next(), if !streams.is_empty() => {
                    if let Ok(peer) = done {
                        ended(&mut per_peer, peer);
                    }
                    continue;
                }
                next = incoming.next() => next,
            };
            let Some((peer, stream)) = next else { break };
            while let Some(done) = streams.try_join_next() {
                if let Ok(peer) = done {
                    ended(&mut per_peer, peer);
                }
            }
            if streams.len() >= inbound.max_streams {
                tracing::warn!(%peer, %protocol, "too many inbound streams; refused");
                continue;
            }
            let mine = per_peer.get(&peer).copied().unwrap_or(0);
            if mine >= inbound.max_streams_per_peer {
                tracing::debug!(%peer, %protocol, streams = mine, "too many inbound streams from one peer; refused");
                continue;
            }
            per_peer.insert(peer, mine + 1);
            let served = serve(peer, stream);
            let cancel = cancel.clone();
            let protocol = protocol.clone();
            streams.spawn(async move {
                tokio::select! {
                    r = served => if let Err(e) = r {
                        tracing::debug!(%peer, %protocol, error = %e, "inbound stream ended");
                    },
                    _ = cancel.cancelled() => {}
                }
                peer
            });
        }
        streams.shutdown().await;
    }))
}
