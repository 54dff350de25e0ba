//! The swarm task: the one owner of the [`Swarm`]. It turns [`NetCommand`]s into swarm calls
//! and swarm events into [`NetEvent`]s, and remembers peers' addresses. It never blocks: a
//! full event queue drops the event (logged).

use std::collections::{HashMap, HashSet};

use futures::StreamExt;
use libp2p::{
    core::ConnectedPoint,
    identify, kad, mdns,
    swarm::{
        dial_opts::{DialOpts, PeerCondition},
        ConnectionId, SwarmEvent,
    },
    Multiaddr, PeerId, Swarm,
};
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;

use super::relays::strip_p2p;
pub(super) use super::relays::Relays;
use super::{
    behaviour::{Behaviour, BehaviourEvent},
    conns::{relayed, PeerConns},
    messages::{NetCommand, NetEvent},
};
use crate::protocols::KAD;

/// Most records one DHT lookup collects.
const MAX_RECORDS_PER_LOOKUP: usize = 16;

pub(super) struct SwarmTask {
    pub(super) swarm: Swarm<Behaviour>,
    pub(super) commands: mpsc::Receiver<NetCommand>,
    pub(super) events: mpsc::Sender<NetEvent>,
    pub(super) listen_addrs: watch::Sender<Vec<Multiaddr>>,
    pub(super) pending_find: HashMap<kad::QueryId, (PeerId, oneshot::Sender<Vec<Multiaddr>>)>,
    pub(super) pending_get: HashMap<kad::QueryId, PendingGet>,
    /// Addresses learned for peers (from dials asked for, identify and mDNS), the most
    /// recently learned first (dials try them in this order), bounded per peer
    /// ([`MAX_ADDRS_PER_PEER`]: the oldest go) and in peers ([`MAX_KNOWN_PEERS`]).
    pub(super) known_addrs: HashMap<PeerId, Vec<Multiaddr>>,
    /// The IP address of each connected peer, for per-IP limits of the services.
    pub(super) remote_ips: RemoteIps,
    /// Each connected peer's open connections: which to close so one remains, and the
    /// counts behind [`super::Network::route`].
    pub(super) conns: PeerConns,
    /// Whether the duplicates `conns` finds are closed ([`super::NetConfig::close_duplicates`]).
    pub(super) close_duplicates: bool,
    /// The relays we listen through.
    pub(super) relays: Relays,
    /// Duplicate connections to close once identify has run on them (see
    /// `close_duplicate`); bounded, like `identified`, by the connection limits (an entry
    /// goes with its connection).
    pub(super) identify_first: HashSet<ConnectionId>,
    /// Open connections identify has run on.
    pub(super) identified: HashSet<ConnectionId>,
    /// libp2p's own series, when the owner serves metrics.
    pub(super) metrics: Option<super::SwarmMetrics>,
    /// What our own Kademlia queries cost (read through [`super::Network::kad_stats`]).
    pub(super) kad_stats: super::KadStats,
}

/// Connected peers' IP addresses, written by the swarm task only and read by services
/// through [`super::Network::remote_ip`]. A lock held for one map operation, never across an
/// await; an entry goes with its peer's last connection, so the map is bounded by the
/// connection limits.
pub(super) type RemoteIps = std::sync::Arc<std::sync::Mutex<HashMap<PeerId, std::net::IpAddr>>>;

/// Most peers whose addresses are remembered: past it, a peer not connected is forgotten to
/// make room (peer ids are free, so strangers must not grow this map without end).
const MAX_KNOWN_PEERS: usize = 4096;

/// The IP address a multiaddr starts with, if any.
fn ip_of(addr: &Multiaddr) -> Option<std::net::IpAddr> {
    addr.iter().find_map(|p| match p {
        libp2p::multiaddr::Protocol::Ip4(ip) => Some(ip.into()),
        libp2p::multiaddr::Protocol::Ip6(ip) => Some(ip.into()),
        _ => None,
    })
}

/// A DHT record lookup under way: values found so far, and who waits for them.
type PendingGet = (Vec<Vec<u8>>, oneshot::Sender<Vec<Vec<u8>>>);

/// Most addresses remembered per peer.
const MAX_ADDRS_PER_PEER: usize = 16;

impl SwarmTask {
    pub(super) async fn run(mut self, cancel: CancellationToken) {
        // The swarm runs until cancelled, even when no handle is left to send commands (a
        // bootstrap peer without a store keeps none): it still serves the network.
        let mut commands_open = true;
        loop {
            tokio::select! {
                _ = cancel.cancelled() => break,
                cmd = self.commands.recv(), if commands_open => match cmd {
                    Some(cmd) => self.on_command(cmd),
                    None => commands_open = false,
                },
                event = self.swarm.select_next_some() => self.on_event(event),
            }
        }
        tracing::debug!("swarm task stopped");
    }

    fn remember(&mut self, peer: PeerId, addrs: impl IntoIterator<Item = Multiaddr>) {
        if !self.known_addrs.contains_key(&peer) && self.known_addrs.len() >= MAX_KNOWN_PEERS {
            let swarm = &self.swarm;
            let idle = self
                .known_addrs
                .keys()
                .find(|p| !swarm.is_connected(p))
                .copied();
            match idle {
                Some(p) => {
                    self.known_addrs.remove(&p);
                }
                None => return,
            }
        }
        let entry = self.known_addrs.entry(peer).or_default();
        remember_first(entry, addrs);
    }

    /// Closes `duplicate`, a surplus connection to `peer`: at once, unless it is our only
    /// direct connection of its transport to that peer and identify has not run on it yet —
    /// then once it has. The address a peer observes us at on a connection is how we learn
    /// our public address for that transport (TCP or QUIC), and hole punching needs both ends
    /// to offer the same transport: closed before identify, a QUIC (or TCP) duplicate to an
    /// operator's peer took our only candidate of its transport with it, and punching failed
    /// when one end offered only QUIC and the other only TCP. Closing at once otherwise keeps
    /// streams from starting on a connection about to go.
    fn close_duplicate(&mut self, peer: PeerId, duplicate: ConnectionId) {
        let needed = self.conns.only_direct_of_its_transport(peer, duplicate);
        if !needed || self.identified.contains(&duplicate) {
            tracing::debug!(%peer, connection = %duplicate, "duplicate connection closed");
            self.swarm.close_connection(duplicate);
        } else {
            self.identify_first.insert(duplicate);
        }
    }

    /// Identify has run (or failed) on `connection`: close it if it waited for that as a
    /// duplicate, and remember it otherwise (it may become one later).
    fn identified_on(&mut self, connection: ConnectionId) {
        if self.identify_first.remove(&connection) {
            tracing::debug!(%connection, "duplicate connection closed after identify");
            self.swarm.close_connection(connection);
        } else {
            self.identified.insert(connection);
        }
    }

    /// Forgets the addresses of `peer` a dial just failed on: a peer that moved (a restart on
    /// new ports, a new relay slot) leaves dead addresses behind, and a dial that tries them
    /// first waits out their timeouts before it reaches the live ones.
    fn forget_failed(&mut self, peer: PeerId, error: &libp2p::swarm::DialError) {
        let libp2p::swarm::DialError::Transport(failed) = error else {
            return;
        };
        if let Some(known) = self.known_addrs.get_mut(&peer) {
            known.retain(|a| {
                !failed
                    .iter()
                    .any(|(f, _)| strip_p2p(f.clone()) == strip_p2p(a.clone()))
            });
        }
    }

    fn on_command(&mut self, cmd: NetCommand) {
        match cmd {
            NetCommand::Dial { peer, addrs } => {
                if self.swarm.is_connected(&peer) {
                    let _ = self.events.try_send(NetEvent::Connected(peer));
                    return;
                }
                self.remember(peer, addrs);
                let addrs: Vec<Multiaddr> = self
                    .known_addrs
                    .get(&peer)
                    .map(|s| s.to_vec())
                    .unwrap_or_default();
                let opts = DialOpts::peer_id(peer)
                    .addresses(addrs)
                    .condition(PeerCondition::DisconnectedAndNotDialing)
                    .build();
                if let Err(e) = self.swarm.dial(opts) {
                    tracing::debug!(%peer, error = %e, "dial not started");
                    if !matches!(e, libp2p::swarm::DialError::DialPeerConditionFalse(_)) {
                        let _ = self.events.try_send(NetEvent::DialFailed(peer));
                    }
                }
            }
            NetCommand::FindPeer { peer, reply } => {
                let id = self.swarm.behaviour_mut().kad.get_closest_peers(peer);
                self.pending_find.insert(id, (peer, reply));
            }
            NetCommand::PutRecord { key, value } => {
                let record = kad::Record::new(key, value);
                if let Err(e) = self
                    .swarm
                    .behaviour_mut()
                    .kad
                    .put_record(record, kad::Quorum::One)
                {
                    tracing::debug!(error = ?e, "cannot publish record");
                }
            }
            NetCommand::GetRecord { key, reply } => {
                let id = self
                    .swarm
                    .behaviour_mut()
                    .kad
                    .get_record(kad::RecordKey::new(&key));
                self.pending_get.insert(id, (Vec::new(), reply));
            }
        }
    }

    fn on_event(&mut self, event: SwarmEvent<BehaviourEvent>) {
        if let Some(m) = &self.metrics {
            record(&m.0, &event);
        }
        if let SwarmEvent::Behaviour(BehaviourEvent::Kad(kad::Event::OutboundQueryProgressed {
            stats,
            step,
            ..
        })) = &event
        {
            if step.last {
                self.kad_stats.finished(stats, step);
            }
        }
        match event {
            SwarmEvent::NewListenAddr { address, .. } => {
                tracing::info!(%address, "listening");
                let address = self.without_own_id(address);
                self.listen_addrs.send_modify(|a| {
                    if !a.contains(&address) {
                        a.push(address)
                    }
                });
            }
            SwarmEvent::ExpiredListenAddr { address, .. } => {
                let address = self.without_own_id(address);
                self.listen_addrs
                    .send_modify(|a| a.retain(|x| x != &address));
            }
            SwarmEvent::ListenerClosed {
                listener_id,
                addresses,
                ..
            } => {
                let gone: Vec<Multiaddr> = addresses
                    .into_iter()
                    .map(|a| self.without_own_id(a))
                    .collect();
                self.listen_addrs
                    .send_modify(|a| a.retain(|x| !gone.contains(x)));
                if let Some(relay) = self.relays.on_listener_closed(listener_id) {
                    if self.swarm.is_connected(&relay) {
                        let known = &self.known_addrs;
                        self.relays.reserve_again(&mut self.swarm, relay, || {
                            known.get(&relay).cloned().unwrap_or_default()
                        });
                    }
                }
            }
            SwarmEvent::ConnectionEstablished {
                peer_id,
                connection_id,
                num_established,
                endpoint,
                ..
            } => {
                if let ConnectedPoint::Dialer { address, .. } = &endpoint {
                    self.remember(peer_id, [address.clone()]);
                }
                let through_relay = relayed(&endpoint);
                // A relayed connection's address starts with the relay's IP, not the peer's.
                if let Some(ip) = ip_of(endpoint.get_remote_address()).filter(|_| !through_relay) {
                    let mut ips = self.remote_ips.lock().unwrap_or_else(|p| p.into_inner());
                    ips.insert(peer_id, ip);
                }
                let duplicates = self.conns.established(peer_id, connection_id, &endpoint);
                if self.close_duplicates {
                    for duplicate in duplicates {
                        self.close_duplicate(peer_id, duplicate);
                    }
                }
                if num_established.get() == 1 {
                    tracing::debug!(peer = %peer_id, "connected");
                    self.emit(NetEvent::Connected(peer_id));
                }
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                connection_id,
                num_established,
                ..
            } => {
                self.conns.closed(peer_id, connection_id);
                self.identify_first.remove(&connection_id);
                self.identified.remove(&connection_id);
                if num_established == 0 {
                    self.remote_ips
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .remove(&peer_id);
                    tracing::debug!(peer = %peer_id, "disconnected");
                    self.emit(NetEvent::Disconnected(peer_id));
                }
            }
            SwarmEvent::IncomingConnectionError {
                error,
                send_back_addr,
                ..
            } => {
                tracing::debug!(from = %send_back_addr, %error, "inbound connection refused or failed");
            }
            SwarmEvent::OutgoingConnectionError {
                peer_id: Some(peer),
                error,
                ..
            } => {
                tracing::debug!(%peer, %error, "dial failed");
                self.forget_failed(peer, &error);
                if !self.swarm.is_connected(&peer) {
                    self.emit(NetEvent::DialFailed(peer));
                }
            }
            SwarmEvent::Behaviour(BehaviourEvent::Identify(identify::Event::Error {
                connection_id,
                ..
            })) => self.identified_on(connection_id),
            SwarmEvent::Behaviour(BehaviourEvent::Identify(identify::Event::Received {
                peer_id,
                connection_id,
                info,
            })) => {
                self.identified_on(connection_id);
                let speaks_kad = info.protocols.contains(&KAD);
                for addr in &info.listen_addrs {
                    if speaks_kad {
                        self.swarm
                            .behaviour_mut()
                            .kad
                            .add_address(&peer_id, addr.clone());
                    }
                }
                self.remember(peer_id, info.listen_addrs.clone());
                let known = &self.known_addrs;
                let listen = &info.listen_addrs;
                let dialed_by_us = self.conns.dialed_by_us(peer_id, connection_id);
                self.relays.on_identified(
                    &mut self.swarm,
                    peer_id,
                    dialed_by_us,
                    &info.protocols,
                    || {
                        known
                            .get(&peer_id)
                            .into_iter()
                            .flatten()
                            .chain(listen)
                            .cloned()
                            .collect()
                    },
                );
                self.emit(NetEvent::Identified {
                    peer: peer_id,
                    addrs: info.listen_addrs,
                    protocols: info.protocols.iter().map(|p| p.to_string()).collect(),
                });
            }
            SwarmEvent::Behaviour(BehaviourEvent::Mdns(mdns::Event::Discovered(found))) => {
                let mut by_peer: HashMap<PeerId, Vec<Multiaddr>> = HashMap::new();
                for (peer, addr) in found {
                    self.swarm
                        .behaviour_mut()
                        .kad
                        .add_address(&peer, addr.clone());
                    by_peer.entry(peer).or_default().push(addr);
                }
                for (peer, addrs) in by_peer {
                    self.remember(peer, addrs.clone());
                    self.emit(NetEvent::Discovered(peer, addrs));
                }
            }
            SwarmEvent::Behaviour(BehaviourEvent::Kad(kad::Event::OutboundQueryProgressed {
                id,
                result: kad::QueryResult::GetClosestPeers(result),
                step,
                ..
            })) => {
                let peers = match result {
                    Ok(ok) => ok.peers,
                    Err(kad::GetClosestPeersError::Timeout { peers, .. }) => peers,
                };
                let Some((target, _)) = self.pending_find.get(&id) else {
                    return;
                };
                let target = *target;
                let found: Vec<Multiaddr> = peers
                    .into_iter()
                    .filter(|p| p.peer_id == target)
                    .flat_map(|p| p.addrs)
                    .collect();
                if !found.is_empty() || step.last {
                    if let Some((_, reply)) = self.pending_find.remove(&id) {
                        self.remember(target, found.clone());
                        let _ = reply.send(found);
                    }
                }
            }
            SwarmEvent::Behaviour(BehaviourEvent::Kad(kad::Event::OutboundQueryProgressed {
                id,
                result: kad::QueryResult::GetRecord(result),
                step,
                ..
            })) => {
                if let Some((found, _)) = self.pending_get.get_mut(&id) {
                    if let Ok(kad::GetRecordOk::FoundRecord(r)) = result {
                        if found.len() < MAX_RECORDS_PER_LOOKUP && !found.contains(&r.record.value)
                        {
                            found.push(r.record.value);
                        }
                    }
                    if step.last {
                        if let Some((found, reply)) = self.pending_get.remove(&id) {
                            let _ = reply.send(found);
                        }
                    }
                }
            }
            SwarmEvent::Behaviour(BehaviourEvent::Dcutr(libp2p::dcutr::Event {
                remote_peer_id,
                result,
            })) => match result {
                Ok(_) => tracing::info!(peer = %remote_peer_id, "hole punching: direct connection"),
                Err(e) => {
                    tracing::info!(peer = %remote_peer_id, error = %e, "hole punching failed")
                }
            },
            SwarmEvent::Behaviour(BehaviourEvent::Autonat(e)) => {
                tracing::debug!(addr = %e.tested_addr, server = %e.server, ok = e.result.is_ok(), "AutoNAT probe");
            }
            SwarmEvent::ExternalAddrConfirmed { address } => {
                tracing::info!(%address, "external address confirmed");
                // Identify pushes only new listen addresses by itself; a confirmed external
                // one (a UPnP mapping, an AutoNAT-confirmed address) is news to the peers we
                // are connected to as well, so they dial it without reconnecting first.
                let connected: Vec<PeerId> = self.swarm.connected_peers().copied().collect();
                self.swarm.behaviour_mut().identify.push(connected);
            }
            SwarmEvent::Behaviour(event) => tracing::trace!(?event, "behaviour event"),
            other => tracing::trace!(?other, "swarm event"),
        }
    }

    /// `addr` without a trailing `/p2p/<our id>`: a relayed listen address ends in our own
    /// id, and listen addresses go out without one (their users add it).
    fn without_own_id(&self, mut addr: Multiaddr) -> Multiaddr {
        let me = *self.swarm.local_peer_id();
        if matches!(addr.iter().last(), Some(libp2p::multiaddr::Protocol::P2p(p)) if p == me) {
            addr.pop();
        }
        addr
    }

    fn emit(&self, event: NetEvent) {
        if let Err(e) = self.events.try_send(event) {
            tracing::warn!(error = %e, "network event queue full; event dropped");
        }
    }
}

/// Records `event` in libp2p's series: the swarm's own, and those of the behaviours
/// libp2p-metrics knows.
fn record(m: &libp2p::metrics::Metrics, event: &SwarmEvent<BehaviourEvent>) {
    use libp2p::metrics::Recorder;
    m.record(event);
    if let SwarmEvent::Behaviour(b) = event {
        match b {
            BehaviourEvent::Kad(e) => m.record(e),
            BehaviourEvent::Identify(e) => m.record(e),
            BehaviourEvent::Ping(e) => m.record(e),
            BehaviourEvent::Relay(e) => m.record(e),
            BehaviourEvent::Dcutr(e) => m.record(e),
            _ => {}
        }
    }
}

/// Puts `fresh` (in its order, without repeats) before the addresses `known` already holds,
/// dropping the oldest past [`MAX_ADDRS_PER_PEER`]: what a peer said last is the likeliest to
/// work, and a full list must never keep out its new addresses.
fn remember_first(known: &mut Vec<Multiaddr>, fresh: impl IntoIterator<Item = Multiaddr>) {
    let mut merged: Vec<Multiaddr> = Vec::new();
    for a in fresh {
        if !merged.contains(&a) {
            merged.push(a);
        }
    }
    known.retain(|a| !merged.contains(a));
    merged.append(known);
    merged.truncate(MAX_ADDRS_PER_PEER);
    *known = merged;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(port: u16) -> Multiaddr {
        format!("/ip4/198.18.0.2/tcp/{port}")
            .parse()
            .unwrap_or_else(|_| Multiaddr::empty())
    }

    /// Defect: once a peer's list was full, its new addresses (after a restart on new ports)
    /// were dropped, and every later dial tried only dead ones.
    #[test]
    fn new_addresses_go_first_and_push_the_oldest_out() {
        let mut known: Vec<Multiaddr> = (0..MAX_ADDRS_PER_PEER as u16).map(addr).collect();
        remember_first(&mut known, [addr(1000), addr(1001), addr(1000)]);
        assert_eq!(known.len(), MAX_ADDRS_PER_PEER);
        assert_eq!(known[..2], [addr(1000), addr(1001)]);
        assert!(!known.contains(&addr(MAX_ADDRS_PER_PEER as u16 - 1)));
        // Said again, an old address moves to the front instead of appearing twice.
        remember_first(&mut known, [addr(3)]);
        assert_eq!(known[0], addr(3));
        assert_eq!(known.iter().filter(|a| **a == addr(3)).count(), 1);
    }

    #[test]
    fn the_dialed_peer_suffix_is_ignored_when_comparing() {
        let peer = PeerId::random();
        let dialed = addr(7).with(libp2p::multiaddr::Protocol::P2p(peer));
        assert_eq!(strip_p2p(dialed), addr(7));
        assert_eq!(strip_p2p(addr(7)), addr(7));
    }
}
