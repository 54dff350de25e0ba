//! The one bounded accept loop: every inbound stream protocol (messages, mailboxes, media) is
//! served through [`spawn_acceptor`].
//!
//! Accepting runs in a task that does nothing else: libp2p-stream keeps at most one inbound
//! stream waiting to be accepted and drops the next one, so accepting must never wait behind a
//! service's work. Each stream is served by its own task, owned by the acceptor (a
//! [`JoinSet`]): when the acceptor ends, on cancel or abort, its streams end with it. This
//! module never looks inside a stream.

use std::{fmt::Display, future::Future};

use futures::StreamExt;
use libp2p::{PeerId, Stream, StreamProtocol};
use libp2p_stream::Control;
use tokio::task::{JoinHandle, JoinSet};
use tokio_util::sync::CancellationToken;

use crate::swarm::NetError;

/// One inbound protocol and its bound.
#[derive(Clone, Debug)]
pub struct Inbound {
    /// The protocol accepted.
    pub protocol: StreamProtocol,
    /// Most streams served at once; one more is refused (closed) at once.
    pub max_streams: usize,
}

/// Accepts `inbound.protocol` streams and serves each with `serve(peer, stream)` in its own
/// task, at most `inbound.max_streams` at once. Stops, ending every stream, when `cancel`
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
        loop {
            let next = tokio::select! {
                _ = cancel.cancelled() => break,
                Some(_) = streams.join_next(), if !streams.is_empty() => continue,
                next = incoming.next() => next,
            };
            let Some((peer, stream)) = next else { break };
            while streams.try_join_next().is_some() {}
            if streams.len() >= inbound.max_streams {
                tracing::warn!(%peer, %protocol, "too many inbound streams; refused");
                continue;
            }
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
            });
        }
        streams.shutdown().await;
    }))
}
