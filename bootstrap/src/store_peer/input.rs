//! What the [`StorePeer`](super::StorePeer) actor is told by its streams, its replica links
//! and its commits. Below all of them, so none depends on the actor for it.

use std::sync::{atomic::AtomicUsize, Arc};

use kith_net::outbound::LinkSignal;
use kith_protocol::{
    mailbox::{MailboxRequest, MailboxResponse},
    Envelope, UserId,
};
use libp2p::PeerId;
use tokio::sync::mpsc;

/// One input of the actor.
pub(super) enum Input {
    /// Requests read from an inbound stream.
    Requests {
        peer: PeerId,
        conn: u64,
        requests: Vec<MailboxRequest>,
        out: mpsc::Sender<MailboxResponse>,
        /// Bytes of `Deliver` frames queued on `out` and not yet written (the stream's
        /// writer takes off what it wrote).
        queued: Arc<AtomicUsize>,
    },
    /// An inbound stream is gone.
    StreamClosed { peer: PeerId, conn: u64 },
    /// What a replica link to another store peer reports.
    Replica {
        peer: PeerId,
        generation: u64,
        signal: LinkSignal<MailboxResponse>,
    },
    /// Writes are durable: send these answers and pushes.
    Committed {
        answers: Vec<(mpsc::Sender<MailboxResponse>, MailboxResponse)>,
        pushes: Vec<(UserId, Envelope)>,
    },
}
