//! What the messenger's own tasks report back to it (commit waits, DHT lookups, the
//! deposit identity's swarm): kept apart so the messenger's module stays its state and loop.

use kith_protocol::{mailbox::EnvelopeRef, KeyBundle, MessageId, UserId};
use libp2p::PeerId;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use kith_protocol::mailbox::MailboxResponse;
use tokio::sync::mpsc;

use crate::{
    error::NodeError,
    handle::Command,
    link::{LinkEvent, LinkSignal},
    net::{NetEvent, Network},
    view::ContactView,
};

/// Reports from the futures the messenger spawned.
pub(crate) enum Internal {
    /// What was written before a commit is durable: the outbox entries `release` may leave
    /// now, and our store peers may delete the mailbox envelopes `deletes`.
    Committed {
        release: Vec<MessageId>,
        deletes: Vec<EnvelopeRef>,
    },
    /// A DHT lookup of a user's key bundle finished.
    BundleFound {
        bundle: Option<Box<KeyBundle>>,
        user: UserId,
        name: Option<String>,
        reply: oneshot::Sender<Result<ContactView, NodeError>>,
    },
    /// A DHT lookup found addresses for a contact.
    Found(UserId, Vec<libp2p::Multiaddr>),
    /// A DHT lookup of a contact's newest bundle (after their store peer said `NotNamed`).
    BundleRefreshed {
        user: UserId,
        bundle: Option<Box<KeyBundle>>,
    },
    /// A deposit identity is up.
    DepositNetUp {
        net: Network,
        generation: u64,
        cancel: CancellationToken,
    },
    /// A deposit identity could not start.
    DepositNetFailed,
    /// A deposit identity connected to (or lost) a store peer.
    DepositConnection {
        generation: u64,
        peer: PeerId,
        up: bool,
    },
}

/// What a link to a store peer reports.
pub(crate) struct StoreEvent {
    pub(super) store: PeerId,
    pub(super) generation: u64,
    pub(super) signal: LinkSignal<MailboxResponse>,
}

/// The channels the messenger task reads.
pub(crate) struct Inputs {
    pub(crate) commands: mpsc::Receiver<Command>,
    pub(crate) net_events: mpsc::Receiver<NetEvent>,
    pub(crate) link_events: mpsc::Receiver<LinkEvent>,
}
