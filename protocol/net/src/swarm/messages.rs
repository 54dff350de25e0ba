//! What goes between a [`Network`](super::Network) handle and the swarm task: commands in,
//! [`NetEvent`]s out. Below both, so neither depends on the other for them.

use libp2p::{Multiaddr, PeerId};
use tokio::sync::oneshot;

/// What the swarm task reports.
#[derive(Clone, Debug)]
pub enum NetEvent {
    /// The first connection to a peer is up.
    Connected(PeerId),
    /// The last connection to a peer closed.
    Disconnected(PeerId),
    /// Dialing a peer failed.
    DialFailed(PeerId),
    /// A peer was found on the local network (mDNS) at these addresses.
    Discovered(PeerId, Vec<Multiaddr>),
    /// A connected peer told us (identify) where it listens and which protocols it speaks.
    Identified {
        /// The peer.
        peer: PeerId,
        /// Its listen addresses.
        addrs: Vec<Multiaddr>,
        /// The protocols it supports.
        protocols: Vec<String>,
    },
}

/// Commands to the swarm task.
#[derive(Debug)]
pub(crate) enum NetCommand {
    Dial {
        peer: PeerId,
        addrs: Vec<Multiaddr>,
    },
    FindPeer {
        peer: PeerId,
        reply: oneshot::Sender<Vec<Multiaddr>>,
    },
    PutRecord {
        key: Vec<u8>,
        value: Vec<u8>,
    },
    GetRecord {
        key: Vec<u8>,
        reply: oneshot::Sender<Vec<Vec<u8>>>,
    },
}
