//! Per-peer queues, links and flow control: dialing, backoff, in-flight windows.

use super::{presence::Seen, retry::Retry, *};

/// Least time between two DHT lookups of the same peer. Lookups follow failed dials, which
/// the redial backoff already spaces out; this only keeps a burst of failures from asking
/// again at once. Short, because when both ends moved (restarted on new ports and relay
/// slots) the first lookup often finds the old addresses still published.
pub(super) const LOOKUP_INTERVAL: Duration = Duration::from_secs(3);

/// Most store peers the messenger keeps track of (every peer advertising the mailbox
/// protocol); later ones are ignored.
pub(super) const MAX_KNOWN_STORES: usize = 1024;

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
    /// When we last asked the DHT for the peer's bundle (its mailbox moved).
    pub(super) last_bundle_lookup: Option<Instant>,
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
            last_bundle_lookup: None,
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

    /// The peer's receipt for `id` came before (or instead of) its ack: the message is no
    /// longer in flight, and nothing about it is retried.
    pub(super) fn acked_by_receipt(&mut self, id: &MessageId) {
        self.ack(id);
        self.invalid_retries.remove(id);
        self.direct_only.remove(id);
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
