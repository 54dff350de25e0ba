//! The composed behaviour; in its own module because the derive generates an undocumented
//! event enum.
#![allow(missing_docs)]

use std::time::Duration;

use libp2p::{
    autonat, connection_limits, dcutr, identify, identity, kad, mdns, memory_connection_limits,
    ping, relay,
    swarm::{behaviour::toggle::Toggle, NetworkBehaviour},
    upnp,
};

use super::{gate::RelayedGate, AutonatRole, KadMode, NetConfig};
use crate::protocols::{IDENTIFY_VERSION, KAD};

/// Longest a DHT query runs.
const KAD_QUERY_TIMEOUT: Duration = Duration::from_secs(30);

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

/// The behaviour of a peer with identity `key` configured by `cfg` (the relay client comes
/// from the swarm builder, bound to the transport).
pub(super) fn new(
    key: &identity::Keypair,
    relay_client: relay::client::Behaviour,
    cfg: &NetConfig,
) -> Behaviour {
    let peer = key.public().to_peer_id();
    let caps = &cfg.caps;
    let mut kad_cfg = kad::Config::new(KAD);
    kad_cfg.set_query_timeout(KAD_QUERY_TIMEOUT);
    if cfg.bootstrap.is_empty() {
        // Nothing to refresh from: without this, kad warns every few minutes.
        kad_cfg.set_periodic_bootstrap_interval(None);
    }
    let mut kad = kad::Behaviour::with_config(peer, kad::store::MemoryStore::new(peer), kad_cfg);
    kad.set_mode(match cfg.kad_mode {
        KadMode::Client => Some(kad::Mode::Client),
        KadMode::Server => Some(kad::Mode::Server),
        KadMode::Auto => None,
    });
    let mdns = if cfg.mdns {
        mdns::tokio::Behaviour::new(mdns::Config::default(), peer).ok()
    } else {
        None
    };
    Behaviour {
        gate: RelayedGate::new(cfg.relayed_filter.clone()),
        limits: connection_limits::Behaviour::new(
            connection_limits::ConnectionLimits::default()
                .with_max_pending_incoming(Some(caps.max_pending_incoming))
                .with_max_established_incoming(Some(caps.max_established_incoming))
                .with_max_established_per_peer(Some(caps.max_established_per_peer)),
        ),
        // A memory-transport mesh is one process holding every peer: its resident memory is
        // the sum of theirs, and a per-process cap would refuse every peer's connections at
        // once past it.
        memory: memory_connection_limits::Behaviour::with_max_bytes(if cfg.transport.is_memory() {
            usize::MAX
        } else {
            caps.max_process_memory_bytes
        }),
        identify: identify::Behaviour::new(
            identify::Config::new(IDENTIFY_VERSION.to_string(), key.public())
                .with_agent_version(format!("kith/{}", env!("CARGO_PKG_VERSION")))
                // A new listen address (a relay circuit, a new interface) reaches connected
                // peers now, not at the next identify round or reconnect.
                .with_push_listen_addr_updates(true),
        ),
        ping: ping::Behaviour::new(ping::Config::new()),
        kad,
        stream: libp2p_stream::Behaviour::new(),
        mdns: Toggle::from(mdns),
        relay: Toggle::from(
            cfg.relay
                .as_ref()
                .map(|l| relay::Behaviour::new(peer, l.to_libp2p())),
        ),
        relay_client,
        dcutr: Toggle::from(cfg.hole_punching.then(|| dcutr::Behaviour::new(peer))),
        autonat: Toggle::from(
            (cfg.autonat == AutonatRole::Client).then(autonat::v2::client::Behaviour::default),
        ),
        autonat_server: Toggle::from(
            (cfg.autonat == AutonatRole::Server).then(autonat::v2::server::Behaviour::default),
        ),
        upnp: Toggle::from(cfg.upnp.then(upnp::tokio::Behaviour::default)),
    }
}
