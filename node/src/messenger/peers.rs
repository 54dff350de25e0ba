//! Per-peer queues, links and flow control: dialing, backoff, in-flight windows.

use super::{presence::Seen, retry::Retry, *};

/// Least time between two DHT lookups of the same peer.
pub(super) const LOOKUP_INTERVAL: Duration = Duration::from_secs(10);

/// How long a dial may stay silent before it counts as failed.
pub(super) const DIAL_TIMEOUT: Duration = Duration::from_secs(20);

/// An open outbound link to a peer.
pub(super) struct ActiveLink {
    /// Tells this link's events from those of an older one to the same peer.
    pub(super) generation: u64,
    /// Where frames to the peer are queued.
    pub(super) tx: mpsc::Sender<MsgFrame>,
    /// The link's task, ended when the messenger stops.
    pub(super) task: JoinHandle<()>,
}

/// What the messenger knows about one peer.
///
/// The methods are pure (the caller passes `now`): they decide what to send again and when,
/// and never touch the link or the store.
pub(super) struct PeerState {
    /// Outbox ids waiting to be sent, in order.
    pub(super) queue: VecDeque<MessageId>,
    /// Ids sent and not yet acknowledged, in send order (may hold ids already acked; the map
    /// is the truth).
    pub(super) in_flight_order: VecDeque<MessageId>,
    /// Ids sent and not yet acknowledged, with when they left (for the ack timeout).
    pub(super) in_flight: HashMap<MessageId, Instant>,
    /// The outbound link, while one is open.
    pub(super) link: Option<ActiveLink>,
    /// Whether the network reports a connection to the peer.
    pub(super) connected: bool,
    /// A dial is under way until this instant (after it, a silent dial counts as failed).
    pub(super) dialing_until: Option<Instant>,
    /// When the next dial may start.
    pub(super) retry: Retry,
    /// How often each envelope the peer refused as invalid was resealed.
    pub(super) invalid_retries: HashMap<MessageId, u32>,
    /// The peer's presence as we last heard it.
    pub(super) seen: Seen,
    /// The last attempt to reach the peer directly failed: use its store peers.
    pub(super) unreachable: bool,
    /// When we last asked the DHT where the peer is.
    pub(super) last_lookup: Option<Instant>,
    /// Messages the store peers refused as too large: they stay queued (never ✓) and leave
    /// only on a direct link to the peer.
    pub(super) direct_only: HashSet<MessageId>,
}

impl PeerState {
    /// A peer we know nothing about yet; dials are paced between `min_backoff` and
    /// `max_backoff`.
    pub(super) fn new(min_backoff: Duration, max_backoff: Duration) -> Self {
        PeerState {
            queue: VecDeque::new(),
            in_flight_order: VecDeque::new(),
            in_flight: HashMap::new(),
            link: None,
            connected: false,
            dialing_until: None,
            retry: Retry::new(min_backoff, max_backoff),
            invalid_retries: HashMap::new(),
            seen: Seen::default(),
            unreachable: false,
            last_lookup: None,
            direct_only: HashSet::new(),
        }
    }

    /// Records that `id` left at `now` and waits for its ack.
    pub(super) fn sent(&mut self, id: MessageId, now: Instant) {
        self.in_flight.insert(id, now);
        self.in_flight_order.push_back(id);
    }

    /// Puts everything in flight back at the front of the queue, in send order.
    pub(super) fn requeue_in_flight(&mut self) {
        let mut back: Vec<MessageId> = Vec::new();
        for id in self.in_flight_order.drain(..) {
            if self.in_flight.remove(&id).is_some() {
                back.push(id);
            }
        }
        for id in back.into_iter().rev() {
            self.queue.push_front(id);
        }
    }

    /// Puts what has waited longer than `timeout` for its ack back at the front of the
    /// queue, in send order, to be sent again (the peer dedupes). Returns whether any was.
    pub(super) fn requeue_stale(&mut self, now: Instant, timeout: Duration) -> bool {
        let stale: Vec<MessageId> = self
            .in_flight_order
            .iter()
            .filter(|id| {
                self.in_flight
                    .get(id)
                    .is_some_and(|t| now.duration_since(*t) > timeout)
            })
            .copied()
            .collect();
        for id in stale.iter().rev() {
            self.ack(id);
            self.queue.push_front(*id);
        }
        !stale.is_empty()
    }

    /// Takes `id` out of flight; `false` (and nothing changes) when it was not in flight.
    pub(super) fn ack(&mut self, id: &MessageId) -> bool {
        let was = self.in_flight.remove(id).is_some();
        while let Some(front) = self.in_flight_order.front() {
            if self.in_flight.contains_key(front) {
                break;
            }
            self.in_flight_order.pop_front();
        }
        was
    }

    /// Whether a dial may start at `now`: none is under way and the backoff has passed.
    pub(super) fn may_dial(&self, now: Instant) -> bool {
        self.dialing_until.is_none_or(|t| t <= now) && self.retry.is_due(now)
    }

    /// A dial failed at `now`: back off, and send through the store peers meanwhile.
    pub(super) fn dial_failed(&mut self, now: Instant) {
        self.dialing_until = None;
        self.unreachable = true;
        self.retry.failed(now);
    }

    /// The network connected to the peer: it is reachable again and the backoff resets.
    pub(super) fn connected(&mut self) {
        self.connected = true;
        self.unreachable = false;
        self.dialing_until = None;
        self.retry.succeeded();
    }

    /// The outbound link ended at `now`: what was in flight is sent again on the next one.
    pub(super) fn link_down(&mut self, now: Instant) {
        self.link = None;
        self.unreachable = !self.connected;
        self.requeue_in_flight();
        self.retry.failed(now);
    }
}

impl Messenger {
    /// Makes sure a link to `user` exists or is being made: opens one at once when the
    /// peer is connected (returns `true` then: the caller moves the queue on), else dials
    /// unless a dial is under way or backing off.
    pub(super) fn ensure_link(&mut self, user: UserId) -> bool {
        let addrs = self
            .contacts
            .get(&user)
            .map(|c| c.multiaddrs())
            .unwrap_or_default();
        let now = Instant::now();
        let state = self.peer(user);
        if state.link.is_some() {
            return false;
        }
        if state.connected {
            self.open_link(user);
            return true;
        }
        if !state.may_dial(now) {
            return false;
        }
        state.dialing_until = Some(now + DIAL_TIMEOUT);
        self.net.dial(user.peer_id(), addrs);
        false
    }

    /// Opens the outbound link to a connected peer; it starts with our presence. The caller
    /// pumps the queue into it.
    pub(super) fn open_link(&mut self, user: UserId) {
        self.next_generation += 1;
        let generation = self.next_generation;
        let (tx, rx) = mpsc::channel(self.cfg.link_queue);
        let task = link::spawn_outbound(
            user.peer_id(),
            generation,
            self.net.control(),
            rx,
            self.link_tx.clone(),
            self.cancel.child_token(),
        );
        let record = self.presence_record();
        let _ = tx.try_send(MsgFrame::Presence(record));
        self.peer(user).link = Some(ActiveLink {
            generation,
            tx,
            task,
        });
    }

    /// Sends as much of `user`'s queue as the link and the in-flight window allow; without
    /// a link, deposits it on the store peers when the peer is unreachable and makes sure a
    /// link is on its way.
    pub(super) fn pump(&mut self, user: UserId) {
        let Some(state) = self.peers.get(&user) else {
            return;
        };
        if state.link.is_none() {
            if state.unreachable && !state.queue.is_empty() {
                self.deposit_queue(user);
            }
            let waiting = self.peers.get(&user).is_some_and(|s| !s.queue.is_empty());
            if !waiting || !self.ensure_link(user) {
                return;
            }
        }
        let Some(mut state) = self.peers.remove(&user) else {
            return;
        };
        let now_ms = now_ms();
        while state.in_flight.len() < self.cfg.max_in_flight {
            let Some((id, envelope)) = self.next_sealed(user, &mut state, now_ms) else {
                break;
            };
            let Some(link) = state.link.as_ref() else {
                break;
            };
            match link.tx.try_send(MsgFrame::Envelope(envelope)) {
                Ok(()) => state.sent(id, Instant::now()),
                Err(_) => {
                    // Link queue full (it drains and we pump again on acks) or link closing
                    // (its Down event requeues).
                    state.queue.push_front(id);
                    break;
                }
            }
        }
        self.peers.insert(user, state);
    }

    /// Follows the network: connections, failed dials, store peers found, addresses
    /// learned.
    pub(super) fn on_net(&mut self, ev: NetEvent) {
        match ev {
            NetEvent::Connected(peer) => {
                let Ok(user) = UserId::from_peer_id(peer) else {
                    return;
                };
                if !self.contacts.contains_key(&user) {
                    return;
                }
                let state = self.peer(user);
                state.connected();
                if state.link.is_none() {
                    self.open_link(user);
                    self.pump(user);
                }
            }
            NetEvent::Disconnected(peer) => {
                let Ok(user) = UserId::from_peer_id(peer) else {
                    return;
                };
                let Some(state) = self.peers.get_mut(&user) else {
                    return;
                };
                state.connected = false;
                let was_online = state.seen.disconnected();
                // Redial after the current backoff: a contact we lost may come back.
                state.retry.lost(Instant::now());
                if was_online {
                    self.presence_event(&user);
                }
            }
            NetEvent::DialFailed(peer) => {
                let Ok(user) = UserId::from_peer_id(peer) else {
                    return;
                };
                let Some(state) = self.peers.get_mut(&user) else {
                    return;
                };
                if state.connected {
                    return;
                }
                state.dial_failed(Instant::now());
                // The addresses we know may be stale (the peer restarted elsewhere): ask the
                // DHT, at most once per lookup interval.
                let due = state
                    .last_lookup
                    .is_none_or(|t| t.elapsed() >= LOOKUP_INTERVAL);
                if due && !self.cfg.bootstrap.is_empty() {
                    state.last_lookup = Some(Instant::now());
                    let net = self.net.clone();
                    let internal = self.internal_tx.clone();
                    self.tasks.spawn(async move {
                        let addrs = net.find_peer(peer).await;
                        if !addrs.is_empty() {
                            let _ = internal.send(Internal::Found(user, addrs)).await;
                        }
                    });
                }
                self.pump(user);
            }
            NetEvent::Identified {
                peer, protocols, ..
            } if protocols.iter().any(|p| p == MAILBOX_PROTOCOL) => {
                if let std::collections::hash_map::Entry::Vacant(slot) = self.stores.entry(peer) {
                    tracing::info!(store = %peer, "store peer found");
                    slot.insert(StoreState {
                        link: None,
                        retry: Retry::new(self.cfg.min_backoff, self.cfg.max_backoff),
                    });
                    self.subscribe_mailbox();
                    // Anything waiting for an unreachable contact may now be deposited.
                    let waiting: Vec<UserId> = self
                        .peers
                        .iter()
                        .filter(|(_, s)| s.unreachable && !s.queue.is_empty())
                        .map(|(u, _)| *u)
                        .collect();
                    for u in waiting {
                        self.pump(u);
                    }
                }
            }
            NetEvent::Discovered(peer, addrs) | NetEvent::Identified { peer, addrs, .. } => {
                self.maybe_publish_bundle();
                let Ok(user) = UserId::from_peer_id(peer) else {
                    return;
                };
                if let Some(c) = self.contacts.get_mut(&user) {
                    let mut changed = false;
                    for a in addrs.iter().take(crate::invite::MAX_ADDRS) {
                        let bytes = a.to_vec();
                        if !c.addrs.contains(&bytes) && c.addrs.len() < crate::invite::MAX_ADDRS {
                            c.addrs.push(bytes);
                            changed = true;
                        }
                    }
                    if changed {
                        let _ = self.store.put_contact(c);
                    }
                }
            }
        }
    }

    pub(super) fn on_maintenance(&mut self) {
        let now = Instant::now();
        if self.unopened.refetch_due(now) {
            // Subscribing again makes each store peer push everything it still holds; what
            // is already here is recognised by sender and id.
            for store in self.my_stores() {
                if let Some(link) = self.stores.get(&store).and_then(|s| s.link.as_ref()) {
                    let _ = link.tx.try_send(MailboxRequest::Subscribe);
                }
            }
        }
        let now_wall = now_ms();
        let timeout = self.cfg.ack_timeout;
        let grace = self.cfg.heartbeat * ONLINE_GRACE_INTERVALS;
        let users: Vec<UserId> = self.peers.keys().copied().collect();
        for user in users {
            let Some(state) = self.peers.get_mut(&user) else {
                continue;
            };
            // Envelopes unacknowledged for too long are sent again (the peer dedupes).
            let stale = state.requeue_stale(now, timeout);
            if state.seen.expire(now_wall, grace) {
                self.presence_event(&user);
            }
            let Some(state) = self.peers.get(&user) else {
                continue;
            };
            let wants_link = !state.queue.is_empty() || self.contacts.contains_key(&user);
            if state.link.is_none() && wants_link && state.retry.is_due(now) {
                if let Some(s) = self.peers.get_mut(&user) {
                    s.retry.allow_now();
                }
                if self.ensure_link(user) {
                    self.pump(user);
                }
            }
            if stale {
                self.pump(user);
            }
            if self.peers.get(&user).is_some_and(|s| s.link.is_some()) {
                self.resend_undelivered(user, now);
            }
        }
        for e in self.outbox.take_expired(now_wall) {
            self.expired(&e);
        }
    }
}

#[cfg(test)]
mod tests {
    use rand::{rngs::StdRng, SeedableRng};

    use super::*;

    const MIN: Duration = Duration::from_millis(500);
    const MAX: Duration = Duration::from_secs(8);

    fn ids(n: usize) -> Vec<MessageId> {
        let mut rng = StdRng::seed_from_u64(7);
        (0..n).map(|_| MessageId::random(&mut rng)).collect()
    }

    #[test]
    fn ack_of_an_unknown_id_is_ignored() {
        let now = Instant::now();
        let mut p = PeerState::new(MIN, MAX);
        let id = ids(2);
        p.sent(id[0], now);
        assert!(!p.ack(&id[1]));
        assert_eq!(p.in_flight.len(), 1);
        assert_eq!(p.in_flight_order.iter().collect::<Vec<_>>(), vec![&id[0]]);
        assert!(p.ack(&id[0]));
        assert!(
            !p.ack(&id[0]),
            "a second ack of the same id changes nothing"
        );
        assert!(p.in_flight.is_empty() && p.in_flight_order.is_empty());
    }

    #[test]
    fn a_lost_link_requeues_in_flight_in_send_order_ahead_of_the_queue() {
        let now = Instant::now();
        let mut p = PeerState::new(MIN, MAX);
        let id = ids(4);
        for i in &id[..3] {
            p.sent(*i, now);
        }
        p.queue.push_back(id[3]);
        // The middle one was acked: only the others go again.
        p.ack(&id[1]);
        p.link_down(now);
        assert_eq!(
            p.queue.iter().copied().collect::<Vec<_>>(),
            vec![id[0], id[2], id[3]]
        );
        assert!(p.in_flight.is_empty());
        assert!(p.unreachable, "not connected: deposit through store peers");
        assert!(!p.may_dial(now), "the link loss backs off");
    }

    #[test]
    fn envelopes_unacked_past_the_ack_timeout_are_sent_again_in_order() {
        let start = Instant::now();
        let timeout = Duration::from_secs(10);
        let mut p = PeerState::new(MIN, MAX);
        let id = ids(3);
        p.sent(id[0], start);
        p.sent(id[1], start + Duration::from_secs(1));
        p.sent(id[2], start + Duration::from_secs(20));
        assert!(!p.requeue_stale(start + timeout, timeout), "not yet past");
        assert!(p.requeue_stale(start + Duration::from_secs(12), timeout));
        assert_eq!(
            p.queue.iter().copied().collect::<Vec<_>>(),
            vec![id[0], id[1]]
        );
        assert_eq!(p.in_flight.keys().copied().collect::<Vec<_>>(), vec![id[2]]);
    }

    #[test]
    fn failed_dials_back_off_doubling_and_a_connection_resets_it() {
        let now = Instant::now();
        let mut p = PeerState::new(MIN, MAX);
        assert!(p.may_dial(now));
        p.dialing_until = Some(now + Duration::from_secs(20));
        assert!(!p.may_dial(now), "a dial is under way");
        p.dial_failed(now);
        assert!(p.unreachable);
        assert!(!p.may_dial(now));
        assert!(p.may_dial(now + MIN));
        p.dial_failed(now);
        assert!(
            !p.may_dial(now + MIN),
            "the second failure waits twice as long"
        );
        assert!(p.may_dial(now + MIN * 2));
        p.connected();
        assert!(!p.unreachable);
        p.connected = false;
        p.dial_failed(now);
        assert!(p.may_dial(now + MIN), "back to the shortest wait");
    }
}
