//! Per-peer queues, links and flow control: dialing, backoff, in-flight windows.

use super::*;

/// Least time between two DHT lookups of the same peer.
pub(super) const LOOKUP_INTERVAL: Duration = Duration::from_secs(10);

/// How long a dial may stay silent before it counts as failed.
pub(super) const DIAL_TIMEOUT: Duration = Duration::from_secs(20);

pub(super) struct ActiveLink {
    pub(super) generation: u64,
    pub(super) tx: mpsc::Sender<MsgFrame>,
}

/// What the messenger knows about one peer.
pub(super) struct PeerState {
    /// Outbox ids waiting to be sent, in order.
    pub(super) queue: VecDeque<MessageId>,
    /// Ids sent and not yet acknowledged, in send order (may hold ids already acked; the map
    /// is the truth).
    pub(super) in_flight_order: VecDeque<MessageId>,
    pub(super) in_flight: HashMap<MessageId, Instant>,
    pub(super) link: Option<ActiveLink>,
    pub(super) connected: bool,
    /// A dial is under way until this instant (after it, a silent dial counts as failed).
    pub(super) dialing_until: Option<Instant>,
    pub(super) backoff: Duration,
    pub(super) retry_at: Option<Instant>,
    pub(super) invalid_retries: HashMap<MessageId, u32>,
    pub(super) presence: Option<PresenceRecord>,
    pub(super) last_heard_ms: Option<u64>,
    pub(super) online: bool,
    /// The last attempt to reach the peer directly failed: use its store peers.
    pub(super) unreachable: bool,
    /// When we last asked the DHT where the peer is.
    pub(super) last_lookup: Option<Instant>,
    /// Messages the store peers refused as too large: they stay queued (never ✓) and leave
    /// only on a direct link to the peer.
    pub(super) direct_only: HashSet<MessageId>,
}

impl PeerState {
    pub(super) fn new(min_backoff: Duration) -> Self {
        PeerState {
            queue: VecDeque::new(),
            in_flight_order: VecDeque::new(),
            in_flight: HashMap::new(),
            link: None,
            connected: false,
            dialing_until: None,
            backoff: min_backoff,
            retry_at: None,
            invalid_retries: HashMap::new(),
            presence: None,
            last_heard_ms: None,
            online: false,
            unreachable: false,
            last_lookup: None,
            direct_only: HashSet::new(),
        }
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
}

impl Messenger {
    /// Makes sure a link to `user` exists or is being made.
    pub(super) fn ensure_link(&mut self, user: UserId) {
        let addrs = self
            .contacts
            .get(&user)
            .map(|c| c.multiaddrs())
            .unwrap_or_default();
        let now = Instant::now();
        let state = self.peer(user);
        if state.link.is_some() {
            return;
        }
        if state.connected {
            self.open_link(user);
            return;
        }
        if state.dialing_until.is_some_and(|t| t > now) || state.retry_at.is_some_and(|t| t > now) {
            return;
        }
        state.dialing_until = Some(now + DIAL_TIMEOUT);
        self.net.dial(user.peer_id(), addrs);
    }

    pub(super) fn open_link(&mut self, user: UserId) {
        self.next_generation += 1;
        let generation = self.next_generation;
        let (tx, rx) = mpsc::channel(self.cfg.link_queue);
        link::spawn_outbound(
            user.peer_id(),
            generation,
            self.net.control(),
            rx,
            self.link_tx.clone(),
            self.cancel.child_token(),
        );
        let record = self.presence_record();
        let _ = tx.try_send(MsgFrame::Presence(record));
        self.peer(user).link = Some(ActiveLink { generation, tx });
        self.pump(user);
    }

    /// Sends as much of `user`'s queue as the link and the in-flight window allow.
    pub(super) fn pump(&mut self, user: UserId) {
        let Some(mut state) = self.peers.remove(&user) else {
            return;
        };
        if state.link.is_none() {
            let deposit = state.unreachable && !state.queue.is_empty();
            self.peers.insert(user, state);
            if deposit {
                self.deposit_queue(user);
            }
            if self.peers.get(&user).is_some_and(|s| !s.queue.is_empty()) {
                self.ensure_link(user);
            }
            return;
        }
        let now_ms = now_ms();
        while state.in_flight.len() < self.cfg.max_in_flight {
            let Some((id, envelope)) = self.next_sealed(user, &mut state, now_ms) else {
                break;
            };
            let Some(link) = state.link.as_ref() else {
                break;
            };
            match link.tx.try_send(MsgFrame::Envelope(envelope)) {
                Ok(()) => {
                    state.in_flight.insert(id, Instant::now());
                    state.in_flight_order.push_back(id);
                }
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

    pub(super) fn on_maintenance(&mut self) {
        let now = Instant::now();
        if self.refetch_at.is_some_and(|t| t <= now) {
            self.refetch_at = None;
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
            let stale: Vec<MessageId> = state
                .in_flight
                .iter()
                .filter(|(_, t)| now.duration_since(**t) > timeout)
                .map(|(id, _)| *id)
                .collect();
            for id in stale.iter().rev() {
                state.ack(id);
                state.queue.push_front(*id);
            }
            if state.online
                && state
                    .last_heard_ms
                    .is_some_and(|t| now_wall.saturating_sub(t) > grace.as_millis() as u64)
            {
                state.online = false;
                self.presence_event(&user);
            }
            let Some(state) = self.peers.get(&user) else {
                continue;
            };
            let wants_link = !state.queue.is_empty() || self.contacts.contains_key(&user);
            if state.link.is_none() && wants_link && state.retry_at.is_none_or(|t| t <= now) {
                if let Some(s) = self.peers.get_mut(&user) {
                    s.retry_at = None;
                }
                self.ensure_link(user);
            }
            if !stale.is_empty() {
                self.pump(user);
            }
            if self.peers.get(&user).is_some_and(|s| s.link.is_some()) {
                self.resend_undelivered(user, now);
            }
        }
        let expired: Vec<OutboxEntry> = self
            .outbox
            .values()
            .filter(|e| e.expires_at_ms <= now_wall)
            .cloned()
            .collect();
        for e in expired {
            self.expire(&e);
        }
    }
}
