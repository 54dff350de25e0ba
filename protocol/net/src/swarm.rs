//! The swarm: the composed behaviour, the transports (TCP + Noise + Yamux, QUIC, DNS names,
//! relay circuits), and the one task that owns the [`Swarm`]. Shared by the desktop node and
//! `kith-bootstrap`.
//!
//! Everything else holds a [`Network`] handle: commands go to the swarm task over a bounded
//! channel and are answered on oneshot channels; what happens on the network comes back as
//! [`NetEvent`]s. Application streams themselves are opened through the `libp2p-stream`
//! [`Control`], which is safe to use outside the swarm task. This module never knows what a
//! message, a mailbox or a blob is.

use std::{collections::HashMap, time::Duration};

use futures::StreamExt;
use libp2p::{
    identity, kad, noise, swarm::SwarmEvent, tcp, yamux, Multiaddr, PeerId, Swarm, TransportError,
};
use libp2p_stream::Control;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;

/// Depth of the command queue to the swarm task.
const COMMAND_QUEUE: usize = 256;

/// Depth of the event queue from the swarm task.
const EVENT_QUEUE: usize = 1024;

pub use behaviour::{Behaviour, BehaviourEvent};
pub use conns::Connections;
pub use gate::{is_relayed, RelayedFilter};
pub use kad_stats::{KadStats, KadTotals};

mod behaviour;
mod conns;
mod gate;
mod kad_stats;
mod messages;
mod relay_limits;
mod relays;
mod task;
mod transport;

use messages::NetCommand;
pub use messages::NetEvent;
pub use relay_limits::RelayLimits;
use task::SwarmTask;
pub use transport::{memory_any_port, Links, Transport};

/// How to build and run a swarm.
#[derive(Clone, Debug)]
pub struct NetConfig {
    /// What connections run on: the network (the default), or memory inside this process
    /// (simulations of large meshes).
    pub transport: Transport,
    /// Addresses to listen on.
    pub listen: Vec<Multiaddr>,
    /// Peers to bootstrap the DHT from (with `/p2p/<id>`).
    pub bootstrap: Vec<Multiaddr>,
    /// Enable mDNS.
    pub mdns: bool,
    /// Whether to answer Kademlia queries.
    pub kad_mode: KadMode,
    /// Close a connection idle for this long.
    pub idle_timeout: Duration,
    /// Run a circuit-relay v2 server with these limits.
    pub relay: Option<RelayLimits>,
    /// Connection limits: a stranger cannot hold every socket or the process's memory.
    pub caps: ConnectionCaps,
    /// Reserve a slot on up to this many relays met (peers speaking the relay hop protocol)
    /// while no address of ours is confirmed reachable, and listen through them; 0: never.
    pub reserve_on_relays: usize,
    /// Take part in hole punching (DCUtR) over relayed connections.
    pub hole_punching: bool,
    /// Which side of AutoNAT v2 to run.
    pub autonat: AutonatRole,
    /// Ask the local router for a port mapping (UPnP IGD). It talks to the LAN's gateway:
    /// off in tests.
    pub upnp: bool,
    /// Whom to accept through relays; `None` accepts everyone (see [`RelayedFilter`]).
    pub relayed_filter: Option<RelayedFilter>,
    /// Addresses others reach us at, announced as confirmed (an operator's public address).
    /// A relay server with none announces its bound listen addresses instead: rust-libp2p's
    /// relay offers its service only once it has a confirmed external address.
    pub external_addrs: Vec<Multiaddr>,
    /// Close duplicate connections to a peer (`swarm::conns` decides which, alike at both
    /// ends), so each peer holds one socket. On by default; a stream request that went to the
    /// closed one is asked again at once ([`crate::outbound::open_stream`]), and a stream cut
    /// with it ends like any broken stream (its owner retries).
    pub close_duplicates: bool,
    /// Where the swarm task records libp2p's own series (connections, Kademlia, identify,
    /// relay, ping, hole punching); `None` records nothing.
    pub metrics: Option<SwarmMetrics>,
}

/// libp2p's own metrics (libp2p-metrics), registered in a prometheus registry the owner
/// serves; the swarm task records every event into them.
#[derive(Clone)]
pub struct SwarmMetrics(std::sync::Arc<libp2p::metrics::Metrics>);

impl SwarmMetrics {
    /// Registers libp2p's series in `registry` (libp2p-metrics prefixes them `libp2p_`).
    pub fn register(registry: &mut prometheus_client::registry::Registry) -> Self {
        SwarmMetrics(std::sync::Arc::new(libp2p::metrics::Metrics::new(registry)))
    }
}

impl std::fmt::Debug for SwarmMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SwarmMetrics")
    }
}

impl Default for NetConfig {
    /// A Kademlia client that listens nowhere, with the default caps and nothing else on.
    fn default() -> Self {
        NetConfig {
            transport: Transport::Network,
            listen: Vec::new(),
            bootstrap: Vec::new(),
            mdns: false,
            kad_mode: KadMode::Client,
            idle_timeout: Duration::from_secs(60),
            relay: None,
            caps: ConnectionCaps::default(),
            reserve_on_relays: 0,
            hole_punching: false,
            autonat: AutonatRole::Off,
            upnp: false,
            relayed_filter: None,
            external_addrs: Vec::new(),
            close_duplicates: true,
            metrics: None,
        }
    }
}

/// Whether a peer answers Kademlia queries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KadMode {
    /// Only asks: for peers others cannot dial back (behind NAT) and throwaway identities.
    Client,
    /// Asks and answers: operators' peers, and nodes told so.
    Server,
    /// Client until an address of ours is confirmed reachable from outside (AutoNAT), then
    /// server: rust-libp2p's own switch.
    Auto,
}

/// Which side of AutoNAT v2 a peer runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AutonatRole {
    /// Neither.
    Off,
    /// Asks servers whether its addresses are reachable (desktop nodes).
    Client,
    /// Answers by dialing back (operators' peers; the dial-back is AutoNAT v2's, which makes
    /// the asker pay in bytes for a dial to an address other than its own).
    Server,
}

/// How a peer is connected to us now.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Route {
    /// At least one direct connection is open.
    Direct,
    /// Only connections through a relay are open.
    Relayed,
    /// No connection is open.
    None,
}

/// How many connections a peer accepts, and while how much memory is in use.
#[derive(Clone, Debug)]
pub struct ConnectionCaps {
    /// Most inbound connections being set up at once (TCP accepted, Noise not finished).
    pub max_pending_incoming: u32,
    /// Most inbound connections established at once.
    pub max_established_incoming: u32,
    /// Most connections established at once with one peer (either direction): a peer id
    /// opening connection after connection gets no more than this.
    pub max_established_per_peer: u32,
    /// New connections are refused while the process's resident memory is above this many
    /// bytes (checked by libp2p's memory-connection-limits, at most once a second).
    pub max_process_memory_bytes: usize,
}

impl Default for ConnectionCaps {
    fn default() -> Self {
        ConnectionCaps {
            max_pending_incoming: 128,
            max_established_incoming: 2048,
            max_established_per_peer: 4,
            max_process_memory_bytes: 4 * 1024 * 1024 * 1024,
        }
    }
}

/// Why the network could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NetError {
    /// The Noise security upgrade could not be set up (no usable identity key). Boxed: it is
    /// large and rare.
    #[error("transport: {0}")]
    Noise(Box<noise::Error>),
    /// A listen address was refused by the transport.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// The address.
        addr: Multiaddr,
        /// Why.
        source: TransportError<std::io::Error>,
    },
    /// A listener failed while binding.
    #[error("cannot listen on {addr}: {source}")]
    Listener {
        /// The address (the first one asked for, when the listener does not say).
        addr: Multiaddr,
        /// Why.
        source: std::io::Error,
    },
    /// The DNS resolver could not be set up from the system's configuration.
    #[error("DNS resolver: {0}")]
    Dns(std::io::Error),
    /// The stream protocol was registered twice.
    #[error("protocol already registered")]
    AlreadyRegistered,
}

/// Cloneable handle to the swarm task.
#[derive(Clone)]
pub struct Network {
    commands: mpsc::Sender<NetCommand>,
    control: Control,
    listen_addrs: watch::Receiver<Vec<Multiaddr>>,
    local_peer: PeerId,
    remote_ips: task::RemoteIps,
    routes: conns::Routes,
    kad_stats: KadStats,
}

impl Network {
    /// A stream control to open or accept application streams.
    pub fn control(&self) -> Control {
        self.control.clone()
    }

    /// What this peer's own Kademlia queries have cost so far.
    pub fn kad_stats(&self) -> KadTotals {
        self.kad_stats.totals()
    }

    /// This peer's id.
    pub fn local_peer_id(&self) -> PeerId {
        self.local_peer
    }

    /// The IP address `peer` is connected from, while it is connected (for per-IP limits).
    pub fn remote_ip(&self, peer: &PeerId) -> Option<std::net::IpAddr> {
        self.remote_ips
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(peer)
            .copied()
    }

    /// How `peer` is connected now: directly, only through a relay, or not at all.
    pub fn route(&self, peer: &PeerId) -> Route {
        match self.connections(peer) {
            c if c.direct > 0 => Route::Direct,
            c if c.relayed > 0 => Route::Relayed,
            _ => Route::None,
        }
    }

    /// `peer`'s open connections now, by kind (all zero when it is not connected).
    pub fn connections(&self, peer: &PeerId) -> Connections {
        self.routes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(peer)
            .copied()
            .unwrap_or_default()
    }

    /// Current listen addresses (without `/p2p`).
    pub fn listen_addrs(&self) -> Vec<Multiaddr> {
        self.listen_addrs.borrow().clone()
    }

    /// Dials `peer` at `addrs` (plus whatever the swarm knows) unless already connected.
    /// Never waits: when the swarm's queue is full the dial is skipped (callers retry).
    pub fn dial(&self, peer: PeerId, addrs: Vec<Multiaddr>) {
        if self
            .commands
            .try_send(NetCommand::Dial { peer, addrs })
            .is_err()
        {
            tracing::debug!(%peer, "swarm busy; dial deferred");
        }
    }

    /// Asks the DHT for `peer`'s addresses.
    pub async fn find_peer(&self, peer: PeerId) -> Vec<Multiaddr> {
        self.ask(|reply| NetCommand::FindPeer { peer, reply }).await
    }

    /// Stores a record in the DHT (on the peers closest to its key). Never waits.
    pub fn put_record(&self, key: Vec<u8>, value: Vec<u8>) {
        if self
            .commands
            .try_send(NetCommand::PutRecord { key, value })
            .is_err()
        {
            tracing::debug!("swarm busy; record not published");
        }
    }

    /// Every value found in the DHT under `key` (unverified: callers check them).
    pub async fn get_record(&self, key: Vec<u8>) -> Vec<Vec<u8>> {
        self.ask(|reply| NetCommand::GetRecord { key, reply }).await
    }

    /// Sends the swarm task a command carrying a reply channel and waits for the answer; a
    /// stopped task answers nothing (the default).
    async fn ask<T: Default>(&self, command: impl FnOnce(oneshot::Sender<T>) -> NetCommand) -> T {
        let (reply, rx) = oneshot::channel();
        if self.commands.send(command(reply)).await.is_err() {
            return T::default();
        }
        rx.await.unwrap_or_default()
    }
}

/// Builds the swarm on the configured [`Transport`] (TCP (nodelay) + QUIC + DNS + relay
/// circuits, or in-process memory; Noise + Yamux on both), and [`Behaviour`].
pub fn build_swarm(
    keypair: identity::Keypair,
    cfg: &NetConfig,
) -> Result<Swarm<Behaviour>, NetError> {
    let noise_err = |e: noise::Error| NetError::Noise(Box::new(e));
    let idle = cfg.idle_timeout;
    let builder = libp2p::SwarmBuilder::with_existing_identity(keypair.clone()).with_tokio();
    let swarm = match &cfg.transport {
        Transport::Network => builder
            .with_tcp(
                tcp::Config::default().nodelay(true),
                noise::Config::new,
                yamux::Config::default,
            )
            .map_err(noise_err)?
            .with_quic()
            .with_dns()
            .map_err(NetError::Dns)?
            .with_relay_client(noise::Config::new, yamux::Config::default)
            .map_err(noise_err)?
            .with_behaviour(|key, relay_client| behaviour::new(key, relay_client, cfg))
            .map_err(|never: std::convert::Infallible| -> NetError { match never {} })?
            .with_swarm_config(|c| c.with_idle_connection_timeout(idle))
            .build(),
        Transport::Memory(links) => {
            let memory = transport::memory(&keypair, links.clone()).map_err(noise_err)?;
            builder
                .with_other_transport(|_| memory)
                .map_err(|never| -> NetError { match never {} })?
                .with_relay_client(noise::Config::new, yamux::Config::default)
                .map_err(noise_err)?
                .with_behaviour(|key, relay_client| behaviour::new(key, relay_client, cfg))
                .map_err(|never: std::convert::Infallible| -> NetError { match never {} })?
                .with_swarm_config(|c| c.with_idle_connection_timeout(idle))
                .build()
        }
    };
    Ok(swarm)
}

/// Starts listening, dials bootstrap peers and spawns the swarm task.
///
/// Returns the handle and the event receiver; the task stops when `cancel` fires.
pub async fn spawn(
    mut swarm: Swarm<Behaviour>,
    cfg: &NetConfig,
    cancel: CancellationToken,
) -> Result<Started, NetError> {
    for addr in &cfg.listen {
        swarm
            .listen_on(addr.clone())
            .map_err(|source| NetError::Listen {
                addr: addr.clone(),
                source,
            })?;
    }
    // Wait for the listeners to report their bound addresses, so callers (and invites) see
    // real ports rather than `/tcp/0`.
    let mut bound: Vec<Multiaddr> = Vec::new();
    let mut pending = cfg.listen.len();
    while pending > 0 {
        match swarm.select_next_some().await {
            SwarmEvent::NewListenAddr { address, .. } => {
                bound.push(address);
                // One listener on 0.0.0.0 reports one address per interface; the first one
                // proves it is bound.
                pending = pending.saturating_sub(1);
            }
            SwarmEvent::ListenerError { error, .. }
            | SwarmEvent::ListenerClosed {
                reason: Err(error), ..
            } => {
                return Err(NetError::Listener {
                    addr: cfg.listen.first().cloned().unwrap_or_else(Multiaddr::empty),
                    source: error,
                });
            }
            other => tracing::trace!(?other, "event before listening"),
        }
    }
    let announced = if cfg.external_addrs.is_empty() && cfg.relay.is_some() {
        &bound
    } else {
        &cfg.external_addrs
    };
    for addr in announced {
        swarm.add_external_address(addr.clone());
    }
    let local_peer = *swarm.local_peer_id();
    let mut bootstrap_peers = Vec::new();
    for addr in &cfg.bootstrap {
        match peer_of(addr) {
            Some(peer) => {
                swarm.behaviour_mut().kad.add_address(&peer, addr.clone());
                bootstrap_peers.push(peer);
                if let Err(e) = swarm.dial(addr.clone()) {
                    tracing::warn!(%addr, error = %e, "cannot dial bootstrap peer");
                }
            }
            None => tracing::warn!(%addr, "bootstrap address lacks /p2p/<peer id>; ignored"),
        }
    }
    if !bootstrap_peers.is_empty() {
        let _ = swarm.behaviour_mut().kad.bootstrap();
    }
    let control = swarm.behaviour().stream.new_control();
    let (cmd_tx, cmd_rx) = mpsc::channel(COMMAND_QUEUE);
    let (ev_tx, ev_rx) = mpsc::channel(EVENT_QUEUE);
    let (addr_tx, addr_rx) = watch::channel(bound);
    let remote_ips = task::RemoteIps::default();
    let routes = conns::Routes::default();
    let kad_stats = KadStats::default();
    let task = SwarmTask {
        swarm,
        commands: cmd_rx,
        events: ev_tx,
        listen_addrs: addr_tx,
        pending_find: HashMap::new(),
        pending_get: HashMap::new(),
        known_addrs: HashMap::new(),
        remote_ips: remote_ips.clone(),
        conns: conns::PeerConns::new(local_peer, routes.clone()),
        close_duplicates: cfg.close_duplicates,
        metrics: cfg.metrics.clone(),
        identify_first: Default::default(),
        identified: Default::default(),
        relays: task::Relays::new(cfg.reserve_on_relays, bootstrap_peers),
        kad_stats: kad_stats.clone(),
    };
    let handle = tokio::spawn(task.run(cancel));
    Ok((
        Network {
            commands: cmd_tx,
            control,
            listen_addrs: addr_rx,
            local_peer,
            remote_ips,
            routes,
            kad_stats,
        },
        ev_rx,
        handle,
    ))
}

/// A started network: its handle, its events, and the swarm task.
pub type Started = (
    Network,
    mpsc::Receiver<NetEvent>,
    tokio::task::JoinHandle<()>,
);

/// Peer start-up, as both node kinds do it: builds the swarm for `keypair`, listens, dials the
/// bootstrap peers and spawns the swarm task (see [`build_swarm`] and [`spawn`]).
pub async fn start(
    keypair: identity::Keypair,
    cfg: &NetConfig,
    cancel: CancellationToken,
) -> Result<Started, NetError> {
    let swarm = build_swarm(keypair, cfg)?;
    spawn(swarm, cfg, cancel).await
}

/// The `r` peers of `candidates` closest to `target` in Kademlia's XOR metric, closest first.
/// Senders and recipients that know the same candidates compute the same set.
pub fn closest_peers(
    target: &PeerId,
    candidates: impl IntoIterator<Item = PeerId>,
    r: usize,
) -> Vec<PeerId> {
    let key = kad::KBucketKey::from(*target);
    let mut all: Vec<(kad::KBucketDistance, PeerId)> = candidates
        .into_iter()
        .map(|p| (kad::KBucketKey::from(p).distance(&key), p))
        .collect();
    all.sort();
    all.dedup_by(|a, b| a.1 == b.1);
    all.into_iter().take(r).map(|(_, p)| p).collect()
}

/// The peer id at the end of a multiaddr, if any.
pub fn peer_of(addr: &Multiaddr) -> Option<PeerId> {
    addr.iter().find_map(|p| match p {
        libp2p::multiaddr::Protocol::P2p(peer) => Some(peer),
        _ => None,
    })
}
