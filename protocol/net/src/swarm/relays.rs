//! Reservations on relays. A peer nobody can dial (behind a NAT or a firewall) is reachable
//! only through a relay it holds a slot on; so, while no address of ours is confirmed
//! reachable from outside, we reserve on the first few relays we meet (peers whose identify
//! lists the relay hop protocol — operators' peers run with `--relay`) and listen through
//! them. The `/p2p-circuit` addresses that gives appear among our listen addresses, and so in
//! what the owner advertises. A reservation that ends (the relay went away) frees its place
//! for the next relay met.

use std::collections::HashMap;

use libp2p::{
    core::transport::ListenerId, multiaddr::Protocol, relay::HOP_PROTOCOL_NAME, Multiaddr, PeerId,
    StreamProtocol, Swarm,
};

use super::{behaviour::Behaviour, gate::is_relayed};

/// The relays we listen through, at most `max`.
pub(crate) struct Relays {
    max: usize,
    reserved: HashMap<PeerId, ListenerId>,
}

impl Relays {
    /// Reserves on at most `max` relays (0: never).
    pub(crate) fn new(max: usize) -> Self {
        Relays {
            max,
            reserved: HashMap::new(),
        }
    }

    /// `peer` identified itself, speaking `protocols`, reachable at `addrs()` (only asked for
    /// a relay we would use): reserve a slot on it if it is a relay, we have room and none of
    /// our addresses is confirmed reachable.
    pub(crate) fn on_identified(
        &mut self,
        swarm: &mut Swarm<Behaviour>,
        peer: PeerId,
        protocols: &[StreamProtocol],
        addrs: impl FnOnce() -> Vec<Multiaddr>,
    ) {
        if self.reserved.len() >= self.max
            || self.reserved.contains_key(&peer)
            || !protocols.contains(&HOP_PROTOCOL_NAME)
            || swarm.external_addresses().next().is_some()
        {
            return;
        }
        let Some(addr) = addrs().into_iter().find(|a| !is_relayed(a)) else {
            return;
        };
        let circuit = strip_p2p(addr)
            .with(Protocol::P2p(peer))
            .with(Protocol::P2pCircuit);
        match swarm.listen_on(circuit.clone()) {
            Ok(id) => {
                tracing::info!(relay = %peer, %circuit, "reserving a slot on a relay");
                self.reserved.insert(peer, id);
            }
            Err(e) => tracing::debug!(relay = %peer, error = %e, "cannot listen through relay"),
        }
    }

    /// A listener closed: if it was a relay's, its place is free again.
    pub(crate) fn on_listener_closed(&mut self, id: ListenerId) {
        self.reserved.retain(|relay, l| {
            let closed = *l == id;
            if closed {
                tracing::info!(%relay, "relay reservation ended");
            }
            !closed
        });
    }
}

/// `addr` without a trailing `/p2p/<id>` (libp2p adds one to the addresses it dials).
pub(super) fn strip_p2p(mut addr: Multiaddr) -> Multiaddr {
    if matches!(addr.iter().last(), Some(Protocol::P2p(_))) {
        addr.pop();
    }
    addr
}
