//! Who may reach this peer through a relay.
//!
//! A relayed connection is where hole punching starts, and in DCUtR the peer that *received*
//! the relayed connection dials the other's addresses. Without a gate a stranger could make a
//! desktop node dial anything just by connecting to it through a relay. The owner (the node)
//! says whom it accepts — its contacts — and every other relayed connection is refused before
//! any behaviour sees it. Direct connections are not affected: they cost the receiver no dial.

use std::{
    sync::Arc,
    task::{Context, Poll},
};

use libp2p::{
    core::{transport::PortUse, Endpoint},
    multiaddr::Protocol,
    swarm::{
        dummy, ConnectionDenied, ConnectionId, FromSwarm, NetworkBehaviour, THandler,
        THandlerInEvent, THandlerOutEvent, ToSwarm,
    },
    Multiaddr, PeerId,
};

/// Whether a peer may connect to us through a relay (the owner's rule, e.g. "a contact").
#[derive(Clone)]
pub struct RelayedFilter(pub Arc<dyn Fn(&PeerId) -> bool + Send + Sync>);

impl std::fmt::Debug for RelayedFilter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RelayedFilter")
    }
}

/// Refuses inbound relayed connections from peers the filter rejects; without a filter,
/// accepts them all (operators' peers and test clients).
pub struct RelayedGate {
    filter: Option<RelayedFilter>,
}

impl RelayedGate {
    /// A gate applying `filter` (none: everyone is accepted).
    pub fn new(filter: Option<RelayedFilter>) -> Self {
        RelayedGate { filter }
    }
}

/// Why a relayed connection was refused.
#[derive(Debug, thiserror::Error)]
#[error("relayed connection from {0}, who is not accepted through relays")]
pub struct NotAccepted(PeerId);

/// Whether an address goes through a relay.
pub fn is_relayed(addr: &Multiaddr) -> bool {
    addr.iter().any(|p| matches!(p, Protocol::P2pCircuit))
}

impl NetworkBehaviour for RelayedGate {
    type ConnectionHandler = dummy::ConnectionHandler;
    type ToSwarm = std::convert::Infallible;

    fn handle_established_inbound_connection(
        &mut self,
        _connection_id: ConnectionId,
        peer: PeerId,
        local_addr: &Multiaddr,
        remote_addr: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        let relayed = is_relayed(local_addr) || is_relayed(remote_addr);
        match &self.filter {
            Some(accepts) if relayed && !(accepts.0)(&peer) => {
                tracing::debug!(%peer, "relayed connection refused: not accepted");
                Err(ConnectionDenied::new(NotAccepted(peer)))
            }
            _ => Ok(dummy::ConnectionHandler),
        }
    }

    fn handle_established_outbound_connection(
        &mut self,
        _connection_id: ConnectionId,
        _peer: PeerId,
        _addr: &Multiaddr,
        _role_override: Endpoint,
        _port_use: PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        Ok(dummy::ConnectionHandler)
    }

    fn on_swarm_event(&mut self, _event: FromSwarm) {}

    fn on_connection_handler_event(
        &mut self,
        _peer_id: PeerId,
        _connection_id: ConnectionId,
        event: THandlerOutEvent<Self>,
    ) {
        match event {}
    }

    fn poll(
        &mut self,
        _cx: &mut Context<'_>,
    ) -> Poll<ToSwarm<Self::ToSwarm, THandlerInEvent<Self>>> {
        Poll::Pending
    }
}
