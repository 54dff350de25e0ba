//! Reservations on relays. A peer nobody can dial (behind a NAT or a firewall) is reachable
//! only through a relay it holds a slot on; so, while no address of ours is confirmed
//! reachable from outside, we reserve on the first few relays we meet (peers whose identify
//! lists the relay hop protocol — operators' peers run with `--relay`) and listen through
//! them. The `/p2p-circuit` addresses that gives appear among our listen addresses, and so in
//! what the owner advertises. A reservation that ends frees its place: taken again at once
//! when the relay is still connected (the reservation lived on a connection that closed, a
//! duplicate say: until identify ran again, minutes later, we were unreachable through that
//! relay), otherwise by the next relay met.

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use libp2p::{
    core::transport::ListenerId, multiaddr::Protocol, relay::HOP_PROTOCOL_NAME, Multiaddr, PeerId,
    StreamProtocol, Swarm,
};

use super::{behaviour::Behaviour, gate::is_relayed};

/// A reservation that ends sooner than this after it was asked for counts as refused.
const SHORT_LIVED: Duration = Duration::from_secs(10);

/// Reservations on one relay refused (or ended short-lived) in a row before we stop asking
/// it again; the next identify of that relay starts over.
const MAX_REFUSALS: u32 = 3;

/// Most relays whose refusals are remembered (peer ids are free: a stranger's many relays
/// must not grow the map).
const MAX_REMEMBERED: usize = 64;

/// A reservation asked for on one relay.
struct Reservation {
    /// The listener that holds it.
    listener: ListenerId,
    /// When it was asked for.
    since: Instant,
}

/// The relays we listen through, at most `max`.
///
/// Whom we listen through sees who tries to reach us and can drop it, so a relay is never a
/// peer that merely connected to us and claimed to be one: only relays we dialed count (our
/// bootstrap peers, peers the DHT led us to). And one place is kept for the operators' relays
/// we were configured with: relays met otherwise take at most `max - 1` places (one when
/// `max` is 1) while any bootstrap peer is configured.
pub(crate) struct Relays {
    max: usize,
    /// The bootstrap peers we were configured with.
    configured: Vec<PeerId>,
    reserved: HashMap<PeerId, Reservation>,
    /// Short-lived reservations in a row, per relay.
    refusals: HashMap<PeerId, u32>,
}

impl Relays {
    /// Reserves on at most `max` relays (0: never), keeping a place for the `configured`
    /// bootstrap peers.
    pub(crate) fn new(max: usize, configured: Vec<PeerId>) -> Self {
        Relays {
            max,
            configured,
            reserved: HashMap::new(),
            refusals: HashMap::new(),
        }
    }

    /// `peer` identified itself, speaking `protocols`, on a connection we dialed or not
    /// (`dialed_by_us`), reachable at `addrs()` (only asked for a relay we would use):
    /// reserve a slot on it if it is a relay we chose, we have room and none of our addresses
    /// is confirmed reachable.
    pub(crate) fn on_identified(
        &mut self,
        swarm: &mut Swarm<Behaviour>,
        peer: PeerId,
        dialed_by_us: bool,
        protocols: &[StreamProtocol],
        addrs: impl FnOnce() -> Vec<Multiaddr>,
    ) {
        if !protocols.contains(&HOP_PROTOCOL_NAME) {
            return;
        }
        if !self.chosen(&peer, dialed_by_us) {
            tracing::debug!(relay = %peer, "a peer that dialed us offers to relay; not used");
            return;
        }
        // A relay identifying itself again (a new connection) gets a fresh chance.
        self.refusals.remove(&peer);
        self.reserve(swarm, peer, addrs);
    }

    /// A reservation on `relay` ended while we are still connected to it: ask it again,
    /// unless it refused us [`MAX_REFUSALS`] times in a row.
    pub(crate) fn reserve_again(
        &mut self,
        swarm: &mut Swarm<Behaviour>,
        relay: PeerId,
        addrs: impl FnOnce() -> Vec<Multiaddr>,
    ) {
        if !self.may_ask_again(&relay) {
            tracing::debug!(%relay, "relay refused our reservations; not asking again");
            return;
        }
        self.reserve(swarm, relay, addrs);
    }

    fn reserve(
        &mut self,
        swarm: &mut Swarm<Behaviour>,
        peer: PeerId,
        addrs: impl FnOnce() -> Vec<Multiaddr>,
    ) {
        if !self.has_room_for(&peer)
            || self.reserved.contains_key(&peer)
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
                self.reserved.insert(
                    peer,
                    Reservation {
                        listener: id,
                        since: Instant::now(),
                    },
                );
            }
            Err(e) => tracing::debug!(relay = %peer, error = %e, "cannot listen through relay"),
        }
    }

    /// Whether `relay` has not refused us [`MAX_REFUSALS`] times in a row.
    fn may_ask_again(&self, relay: &PeerId) -> bool {
        self.refusals.get(relay).copied().unwrap_or(0) < MAX_REFUSALS
    }

    /// Whether `relay` is one we chose: a configured bootstrap peer, or one we dialed.
    fn chosen(&self, relay: &PeerId, dialed_by_us: bool) -> bool {
        dialed_by_us || self.configured.contains(relay)
    }

    /// Whether a reservation on `relay` fits: fewer than `max` in all, and a relay that is
    /// not a configured bootstrap peer leaves one place for those (unless there is only one).
    fn has_room_for(&self, relay: &PeerId) -> bool {
        if self.reserved.len() >= self.max {
            return false;
        }
        if self.configured.is_empty() || self.configured.contains(relay) {
            return true;
        }
        let others = self
            .reserved
            .keys()
            .filter(|p| !self.configured.contains(p))
            .count();
        others < self.max.saturating_sub(1).max(1)
    }

    /// A listener closed: if it was a relay's, its place is free again, and that relay is
    /// returned (the caller asks it again if still connected).
    pub(crate) fn on_listener_closed(&mut self, id: ListenerId) -> Option<PeerId> {
        let relay = self
            .reserved
            .iter()
            .find(|(_, r)| r.listener == id)
            .map(|(p, _)| *p)?;
        let reservation = self.reserved.remove(&relay)?;
        tracing::info!(%relay, "relay reservation ended");
        if reservation.since.elapsed() < SHORT_LIVED {
            if self.refusals.len() >= MAX_REMEMBERED && !self.refusals.contains_key(&relay) {
                self.refusals.clear();
            }
            *self.refusals.entry(relay).or_default() += 1;
        } else {
            self.refusals.remove(&relay);
        }
        Some(relay)
    }
}

/// `addr` without a trailing `/p2p/<id>` (libp2p adds one to the addresses it dials).
pub(super) fn strip_p2p(mut addr: Multiaddr) -> Multiaddr {
    if matches!(addr.iter().last(), Some(Protocol::P2p(_))) {
        addr.pop();
    }
    addr
}

#[cfg(test)]
mod tests {
    use super::*;

    fn holding(relays: &mut Relays, relay: PeerId) {
        relays.reserved.insert(
            relay,
            Reservation {
                listener: ListenerId::next(),
                since: Instant::now(),
            },
        );
    }

    /// Attack: a stranger connects to us and claims the relay hop protocol, so that we listen
    /// through it: it would see everyone who tries to reach us, and could drop them.
    #[test]
    fn a_stranger_that_dialed_us_is_never_our_relay() {
        let boot = PeerId::random();
        let relays = Relays::new(2, vec![boot]);
        let stranger = PeerId::random();
        assert!(!relays.chosen(&stranger, false));
        assert!(
            relays.chosen(&stranger, true),
            "a relay we dialed is ours to choose"
        );
        assert!(
            relays.chosen(&boot, false),
            "a configured one, whoever dialed"
        );
    }

    /// Attack: relays met through the DHT take every place before the operators' relays we
    /// were configured with are identified.
    #[test]
    fn relays_met_leave_a_place_for_configured_ones() {
        let boot = PeerId::random();
        let mut relays = Relays::new(2, vec![boot]);
        let (met1, met2) = (PeerId::random(), PeerId::random());
        assert!(relays.has_room_for(&met1));
        holding(&mut relays, met1);
        assert!(!relays.has_room_for(&met2), "the last place is kept");
        assert!(relays.has_room_for(&boot));
        holding(&mut relays, boot);
        assert!(!relays.has_room_for(&PeerId::random()), "full");
        // With one place only, a relay met may take it (the configured ones may not relay).
        assert!(Relays::new(1, vec![boot]).has_room_for(&met1));
        // Without configured bootstrap peers (a LAN found by mDNS), all places are open.
        let mut open = Relays::new(2, Vec::new());
        holding(&mut open, met1);
        assert!(open.has_room_for(&met2));
    }

    /// Defect: a reservation that ended while its relay stayed connected (it lived on a
    /// duplicate connection that closed) was asked for again only at the relay's next
    /// identify, minutes later; a relay that keeps refusing is not asked again and again.
    #[test]
    fn an_ended_reservation_is_asked_again_unless_refused_in_a_row() {
        let relay = PeerId::random();
        let mut relays = Relays::new(2, vec![relay]);
        for _ in 0..MAX_REFUSALS {
            assert!(relays.may_ask_again(&relay));
            holding(&mut relays, relay);
            let id = relays.reserved[&relay].listener;
            assert_eq!(relays.on_listener_closed(id), Some(relay));
        }
        assert!(
            !relays.may_ask_again(&relay),
            "refused {MAX_REFUSALS} times in a row"
        );
        // One that lived long resets the count.
        relays.reserved.insert(
            relay,
            Reservation {
                listener: ListenerId::next(),
                since: Instant::now() - SHORT_LIVED * 2,
            },
        );
        let id = relays.reserved[&relay].listener;
        assert_eq!(relays.on_listener_closed(id), Some(relay));
        assert!(relays.may_ask_again(&relay));
        assert_eq!(relays.on_listener_closed(ListenerId::next()), None);
        assert!(relays.reserved.is_empty());
    }
}
