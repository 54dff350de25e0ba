//! Acting on per-peer state: opening links, pumping queues, dialling, network events.
//! The decisions are the pure part [`crate::messenger::peers`]'s; this is the shell acting on them.

use crate::messenger::peers::*;
use crate::messenger::*;

impl Messenger {
    /// Makes sure a link to `user` exists or is being made: opens one at once when the
    /// peer is connected (returns `true` then: the caller moves the queue on), else dials
    /// unless a dial is under way or backing off.
    pub(in crate::messenger) fn ensure_link(&mut self, user: UserId) -> bool {
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
    pub(in crate::messenger) fn open_link(&mut self, user: UserId) {
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
    pub(in crate::messenger) fn pump(&mut self, user: UserId) {
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
    pub(in crate::messenger) fn on_net(&mut self, ev: NetEvent) {
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
                let was_online = state.seen.disconnected(now_ms());
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
                peer,
                protocols,
                addrs,
            } if kith_net::protocols::speaks(&protocols, &kith_net::protocols::MAILBOX) => {
                if self.stores.len() >= MAX_KNOWN_STORES && !self.stores.contains_key(&peer) {
                    // Anyone can advertise the mailbox protocol: a flood of them must not
                    // grow this map without bound.
                    tracing::debug!(store = %peer, "too many store peers known; not kept");
                    return;
                }
                let (min, max) = (self.cfg.min_backoff, self.cfg.max_backoff);
                let state = self
                    .stores
                    .entry(peer)
                    .or_insert_with(|| StoreState::new(min, max));
                let first = !state.advertised;
                state.advertised = true;
                state.addrs = addrs.into_iter().take(crate::invite::MAX_ADDRS).collect();
                if first {
                    tracing::info!(store = %peer, "store peer found");
                    self.maybe_rechoose_mailboxes();
                    self.subscribe_mailbox();
                    // Anything waiting for an unreachable contact may now be deposited.
                    self.pump_waiting();
                }
            }
            NetEvent::Discovered(peer, addrs) | NetEvent::Identified { peer, addrs, .. } => {
                self.maybe_publish_bundle();
                let Ok(user) = UserId::from_peer_id(peer) else {
                    return;
                };
                if let Some(c) = self.contacts.get_mut(&user) {
                    // What the contact says now goes first, pushing the oldest out: a full
                    // list must not keep its new addresses (after a move) out.
                    let fresh: Vec<Vec<u8>> = addrs
                        .iter()
                        .take(crate::invite::MAX_ADDRS)
                        .map(|a| a.to_vec())
                        .collect();
                    let mut merged = fresh.clone();
                    merged.extend(c.addrs.iter().filter(|a| !fresh.contains(a)).cloned());
                    merged.truncate(crate::invite::MAX_ADDRS);
                    if merged != c.addrs {
                        c.addrs = merged;
                        let _ = self.store.put_contact(c);
                    }
                }
            }
        }
    }

    pub(in crate::messenger) fn on_maintenance(&mut self) {
        let now = Instant::now();
        self.maybe_rechoose_mailboxes();
        self.maybe_rotate_deposit_identity();
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
        let grace = self.cfg.heartbeat * CONTACT_REFRESH_INTERVALS * ONLINE_GRACE_REFRESHES;
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
