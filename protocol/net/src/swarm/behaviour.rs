//! The composed behaviour; in its own module because the derive generates an undocumented
//! event enum.
#![allow(missing_docs)]

use libp2p::{
    autonat, connection_limits, dcutr, identify, kad, mdns, memory_connection_limits, ping, relay,
    swarm::{behaviour::toggle::Toggle, NetworkBehaviour},
    upnp,
};

use super::gate::RelayedGate;

/// The behaviours every Kith peer runs, composed in one struct. The gate comes first: a
/// connection it refuses is refused before any other behaviour (hole punching above all)
/// acts on it.
#[derive(NetworkBehaviour)]
pub struct Behaviour {
    /// Refuses relayed connections from peers the owner does not accept (see `gate`).
    pub gate: RelayedGate,
    /// Refuses connections past the configured counts (in all, pending, per peer).
    pub limits: connection_limits::Behaviour,
    /// Refuses new connections while the process uses more memory than configured.
    pub memory: memory_connection_limits::Behaviour,
    /// Tells peers who we are, what we speak and where we listen.
    pub identify: identify::Behaviour,
    /// Keeps connections alive and measures round trips; others expect it to answer.
    pub ping: ping::Behaviour,
    /// The DHT: peer routing and bootstrap (`/kith/kad/1.0.0`).
    pub kad: kad::Behaviour<kad::store::MemoryStore>,
    /// Long-lived application streams (messages, mailboxes, media).
    pub stream: libp2p_stream::Behaviour,
    /// Local-network discovery, when enabled.
    pub mdns: Toggle<mdns::tokio::Behaviour>,
    /// A circuit-relay v2 server, on operators' peers that enable it.
    pub relay: Toggle<relay::Behaviour>,
    /// The circuit-relay v2 client: reservations on relays, and dialing `/p2p-circuit`
    /// addresses.
    pub relay_client: relay::client::Behaviour,
    /// Hole punching: upgrades a relayed connection to a direct one.
    pub dcutr: Toggle<dcutr::Behaviour>,
    /// AutoNAT v2 client: asks servers whether our addresses are reachable from outside.
    pub autonat: Toggle<autonat::v2::client::Behaviour>,
    /// AutoNAT v2 server, on operators' peers: answers those questions by dialing back.
    pub autonat_server: Toggle<autonat::v2::server::Behaviour>,
    /// Port mapping on the local router (UPnP IGD), when enabled.
    pub upnp: Toggle<upnp::tokio::Behaviour>,
}
