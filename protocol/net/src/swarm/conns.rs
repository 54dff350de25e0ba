//! One connection per peer. Both ends dial (each has the other's address), hole punching opens
//! direct connections beside relayed ones, and a peer may dial twice: without this module an
//! idle node held 22 sockets for 13 peers. The swarm task tells it each connection opened and
//! closed; it answers which connections to close, by a rule both ends compute alike without
//! talking, and it keeps the per-peer counts [`super::Network::connections`] reads.

use std::collections::HashMap;

use libp2p::{
    core::{ConnectedPoint, Endpoint},
    swarm::ConnectionId,
    PeerId,
};

use super::gate::is_relayed;

/// A peer's open connections, by kind (see [`super::Network::connections`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Connections {
    /// Direct connections.
    pub direct: u32,
    /// Connections through a relay.
    pub relayed: u32,
    /// Of all these, how many we dialed (so two ends can check they kept the same one).
    pub dialed: u32,
}

/// Open connections per connected peer, by kind; written by the swarm task only, read
/// through [`super::Network`]. A lock held for one map operation, never across an await; an
/// entry goes with its peer's last connection, so the map is bounded by the connection
/// limits.
pub(super) type Routes = std::sync::Arc<std::sync::Mutex<HashMap<PeerId, Connections>>>;

/// One open connection, as both ends can describe it.
#[derive(Clone, Copy, Debug)]
struct Conn {
    /// Its id in our swarm.
    id: ConnectionId,
    /// Whether we dialed it (for hole-punched connections: whether we took the dialer's role
    /// in its upgrade, which both ends agree on).
    dialed: bool,
    /// Whether it goes through a relay.
    relayed: bool,
    /// Whether it runs over QUIC (else TCP).
    quic: bool,
}

/// Whether a connection goes through a relay.
pub(super) fn relayed(endpoint: &ConnectedPoint) -> bool {
    match endpoint {
        ConnectedPoint::Dialer { address, .. } => is_relayed(address),
        ConnectedPoint::Listener {
            local_addr,
            send_back_addr,
        } => is_relayed(local_addr) || is_relayed(send_back_addr),
    }
}

/// Whether a connection runs over QUIC.
fn over_quic(endpoint: &ConnectedPoint) -> bool {
    endpoint
        .get_remote_address()
        .iter()
        .any(|p| matches!(p, libp2p::multiaddr::Protocol::QuicV1))
}

/// Whether we took the dialer's role on a connection. Hole punching makes both ends dial;
/// one of them overrides its role to listener, so this is what both ends agree on.
fn dialed_by_us(endpoint: &ConnectedPoint) -> bool {
    matches!(
        endpoint,
        ConnectedPoint::Dialer {
            role_override: Endpoint::Dialer,
            ..
        }
    )
}

/// Every peer's open connections, oldest first; owned by the swarm task.
pub(super) struct PeerConns {
    /// Our peer id: half of the rule that picks the survivor.
    local: PeerId,
    /// Open connections per peer. Bounded by the connection limits (per peer and in all),
    /// which refuse connections before they are established.
    open: HashMap<PeerId, Vec<Conn>>,
    /// The counts shared with the handles.
    routes: Routes,
}

impl PeerConns {
    /// Tracks connections for the peer `local`, publishing counts into `routes`.
    pub(super) fn new(local: PeerId, routes: Routes) -> Self {
        PeerConns {
            local,
            open: HashMap::new(),
            routes,
        }
    }

    /// Records an established connection and returns the connections to `peer` to close.
    pub(super) fn established(
        &mut self,
        peer: PeerId,
        id: ConnectionId,
        endpoint: &ConnectedPoint,
    ) -> Vec<ConnectionId> {
        let conns = self.open.entry(peer).or_default();
        conns.push(Conn {
            id,
            dialed: dialed_by_us(endpoint),
            relayed: relayed(endpoint),
            quic: over_quic(endpoint),
        });
        let surplus = surplus(self.local < peer, conns);
        self.publish(peer);
        surplus
    }

    /// Whether `id`, one of `peer`'s open connections, is the only direct one of its
    /// transport (TCP or QUIC) to that peer: identify on it is the one way to learn the
    /// address that peer sees us at over that transport.
    pub(super) fn only_direct_of_its_transport(&self, peer: PeerId, id: ConnectionId) -> bool {
        let Some(conns) = self.open.get(&peer) else {
            return false;
        };
        let Some(this) = conns.iter().find(|c| c.id == id) else {
            return false;
        };
        !this.relayed
            && !conns
                .iter()
                .any(|c| c.id != id && !c.relayed && c.quic == this.quic)
    }

    /// Whether we dialed `id`, one of `peer`'s open connections (false when unknown).
    pub(super) fn dialed_by_us(&self, peer: PeerId, id: ConnectionId) -> bool {
        self.open
            .get(&peer)
            .and_then(|conns| conns.iter().find(|c| c.id == id))
            .is_some_and(|c| c.dialed)
    }

    /// Forgets a closed connection.
    pub(super) fn closed(&mut self, peer: PeerId, id: ConnectionId) {
        if let Some(conns) = self.open.get_mut(&peer) {
            conns.retain(|c| c.id != id);
            if conns.is_empty() {
                self.open.remove(&peer);
            }
        }
        self.publish(peer);
    }

    /// Writes `peer`'s counts for the handles (none once it has no connection left).
    fn publish(&self, peer: PeerId) {
        let mut routes = self.routes.lock().unwrap_or_else(|p| p.into_inner());
        let Some(conns) = self.open.get(&peer) else {
            routes.remove(&peer);
            return;
        };
        let count = |f: fn(&Conn) -> bool| conns.iter().filter(|c| f(c)).count() as u32;
        routes.insert(
            peer,
            Connections {
                direct: count(|c| !c.relayed),
                relayed: count(|c| c.relayed),
                dialed: count(|c| c.dialed),
            },
        );
    }
}

/// The connections of one peer (oldest first) to close so that one remains, chosen so that
/// both ends close the same ones without talking:
///
/// - a direct connection wins over relayed ones (hole punching is done: the relay is spared);
/// - a direct QUIC connection wins over direct TCP ones (when both work, QUIC is preferred:
///   its streams do not block each other behind one lost packet, and all of a node's QUIC
///   connections share one UDP socket);
/// - among the rest, one dialed by the peer with the smaller id wins over one dialed by the
///   other (both ends know both ids and who dialed what); `we_are_smaller` says which we are;
/// - several dialed by the same end: that end keeps its oldest and closes the others (the
///   other end cannot tell them apart, so it leaves them to the dialer).
fn surplus(we_are_smaller: bool, conns: &[Conn]) -> Vec<ConnectionId> {
    let has_direct = conns.iter().any(|c| !c.relayed);
    let has_direct_quic = conns.iter().any(|c| !c.relayed && c.quic);
    let mut close: Vec<ConnectionId> = Vec::new();
    let candidates: Vec<&Conn> = conns
        .iter()
        .filter(|c| {
            if (has_direct && c.relayed) || (has_direct_quic && !c.relayed && !c.quic) {
                close.push(c.id);
                false
            } else {
                true
            }
        })
        .collect();
    // The smaller peer's dials win: ours if we are the smaller one.
    let winner_dialed = if candidates.iter().any(|c| c.dialed == we_are_smaller) {
        we_are_smaller
    } else {
        !we_are_smaller
    };
    let mut kept_one = false;
    for c in candidates {
        // Closed: a loser's dial, or a second dial of ours (the dialer keeps its oldest).
        if c.dialed != winner_dialed || (kept_one && c.dialed) {
            close.push(c.id);
        } else {
            kept_one = true;
        }
    }
    close
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Asserts that, with `conns` as (id, dialed by us, relayed), oldest first, we close
    /// exactly `closed`.
    fn closes(we_are_smaller: bool, conns: &[(usize, bool, bool)], closed: &[usize]) {
        let conns: Vec<Conn> = conns
            .iter()
            .map(|&(n, dialed, relayed)| Conn {
                id: ConnectionId::new_unchecked(n),
                dialed,
                relayed,
                quic: false,
            })
            .collect();
        let want: Vec<ConnectionId> = closed
            .iter()
            .map(|n| ConnectionId::new_unchecked(*n))
            .collect();
        assert_eq!(surplus(we_are_smaller, &conns), want, "{conns:?}");
    }

    /// Defect: both ends dial and both connections stay open (two sockets per peer).
    #[test]
    fn crossed_dials_both_ends_close_the_larger_peers_dial() {
        // We are the smaller peer: our dial (1) survives at our end...
        closes(true, &[(1, true, false), (2, false, false)], &[2]);
        // ...and at the other end, where the same two connections look the other way round.
        closes(false, &[(7, false, false), (8, true, false)], &[8]);
    }

    /// Defect: a peer dialing twice keeps two connections; only the dialer can tell them
    /// apart, so only the dialer closes one.
    #[test]
    fn repeated_dials_are_closed_by_the_dialer_only() {
        closes(false, &[(1, true, false), (2, true, false)], &[2]);
        closes(true, &[(1, false, false), (2, false, false)], &[]);
    }

    /// Defect: a relayed connection stays open beside the direct one hole punching made,
    /// holding a relay's circuit for nothing; and two relayed ones stay open side by side.
    #[test]
    fn a_direct_connection_closes_relayed_ones() {
        closes(true, &[(1, true, true), (2, false, false)], &[1]);
        closes(false, &[(1, true, true), (2, false, true)], &[1]);
        closes(true, &[(3, false, false)], &[]);
    }

    /// Defect: with TCP and QUIC both working, which one stayed depended on who dialed
    /// first; QUIC is preferred, at both ends alike, whoever dialed it.
    #[test]
    fn a_direct_quic_connection_closes_direct_tcp_ones_at_both_ends() {
        let conn = |n: usize, dialed: bool, relayed: bool, quic: bool| Conn {
            id: ConnectionId::new_unchecked(n),
            dialed,
            relayed,
            quic,
        };
        let ids = |v: &[usize]| -> Vec<ConnectionId> {
            v.iter().map(|n| ConnectionId::new_unchecked(*n)).collect()
        };
        // The smaller peer's TCP dial (1), the larger peer's QUIC dial (2): QUIC stays, at
        // the smaller end and at the larger one (where "dialed" reads the other way round).
        let smaller = [conn(1, true, false, false), conn(2, false, false, true)];
        assert_eq!(surplus(true, &smaller), ids(&[1]));
        let larger = [conn(1, false, false, false), conn(2, true, false, true)];
        assert_eq!(surplus(false, &larger), ids(&[1]));
        // A relayed QUIC connection (its relay spoke QUIC) does not beat a direct TCP one.
        let relayed_quic = [conn(1, true, true, true), conn(2, true, false, false)];
        assert_eq!(surplus(true, &relayed_quic), ids(&[1]));
        // Two QUIC connections: the usual rule between them, the TCP one closed.
        let both = [
            conn(1, false, false, true),
            conn(2, true, false, false),
            conn(3, true, false, true),
        ];
        assert_eq!(surplus(true, &both), ids(&[2, 1]));
    }

    /// Defect: a QUIC duplicate closed before identify ran on it took our only QUIC address
    /// candidate with it; hole punching then offered TCP at one end and QUIC at the other.
    #[test]
    fn only_the_last_direct_connection_of_a_transport_waits_for_identify() {
        let peer = PeerId::random();
        let mut conns = PeerConns::new(PeerId::random(), Routes::default());
        let dialer = |addr: &str| ConnectedPoint::Dialer {
            address: addr.parse().unwrap_or_else(|_| libp2p::Multiaddr::empty()),
            role_override: Endpoint::Dialer,
            port_use: libp2p::core::transport::PortUse::Reuse,
        };
        let (tcp, quic, tcp2) = (
            ConnectionId::new_unchecked(1),
            ConnectionId::new_unchecked(2),
            ConnectionId::new_unchecked(3),
        );
        conns.established(peer, tcp, &dialer("/ip4/198.18.0.1/tcp/4001"));
        conns.established(peer, quic, &dialer("/ip4/198.18.0.1/udp/4001/quic-v1"));
        assert!(conns.only_direct_of_its_transport(peer, quic));
        assert!(conns.only_direct_of_its_transport(peer, tcp));
        conns.established(peer, tcp2, &dialer("/ip4/198.18.0.1/tcp/4001"));
        assert!(!conns.only_direct_of_its_transport(peer, tcp2));
        assert!(conns.only_direct_of_its_transport(peer, quic));
    }
}
