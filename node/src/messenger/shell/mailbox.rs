//! The mailbox client: store peers, W-of-R deposits, subscriptions and deletes.

use crate::messenger::{
    deposits::Refusal,
    retry::Retry,
    unopened::{sort_outcomes, Sorted},
    *,
};

/// What the messenger knows about one store peer.
pub(in crate::messenger) struct StoreState {
    /// The link under our own identity: our mailbox (subscription, deletes, heartbeats).
    pub(in crate::messenger) link: Option<ActiveStoreLink>,
    /// The link under the current ephemeral deposit identity: deposits and presence
    /// questions about others.
    pub(in crate::messenger) deposit_link: Option<ActiveStoreLink>,
    /// After a lost link, when the heartbeat may reopen it (the wait doubles up to the
    /// configured maximum).
    pub(in crate::messenger) retry: Retry,
    /// Where it listens (from identify, or from the bundle that named it).
    pub(in crate::messenger) addrs: Vec<libp2p::Multiaddr>,
    /// It told us itself that it speaks `/kith/mailbox/1` (only such peers are ever chosen
    /// for our own mailbox).
    pub(in crate::messenger) advertised: bool,
    /// Since when our link to it has been down (cleared when it comes back up).
    pub(in crate::messenger) down_since: Option<Instant>,
}

impl StoreState {
    /// A store peer we know nothing more about yet.
    pub(in crate::messenger) fn new(
        min_backoff: std::time::Duration,
        max_backoff: std::time::Duration,
    ) -> Self {
        StoreState {
            link: None,
            deposit_link: None,
            retry: Retry::new(min_backoff, max_backoff),
            addrs: Vec::new(),
            advertised: false,
            down_since: None,
        }
    }
}

/// An open link to a store peer.
pub(in crate::messenger) struct ActiveStoreLink {
    /// Tells this link's events from those of an older one to the same store peer.
    pub(in crate::messenger) generation: u64,
    /// Where requests to the store peer are queued.
    pub(in crate::messenger) tx: mpsc::Sender<MailboxRequest>,
    /// The link's task, ended when the messenger stops.
    pub(in crate::messenger) task: JoinHandle<()>,
    /// Whether this link asked for our mailbox. A link opened to deposit for someone else
    /// has not; once the store peer is one of ours it must, or what only it holds for us
    /// (e.g. a copy a sender re-sealed after a restart) would never reach us or be deleted.
    pub(in crate::messenger) subscribed: bool,
}

impl Messenger {
    /// The store peers `user` named for its mailbox (for us: our own choice). Senders
    /// deposit there and nowhere else, whatever other peers advertise or how close their ids.
    pub(in crate::messenger) fn store_set(&mut self, user: &UserId) -> Vec<PeerId> {
        if *user == self.user {
            return self.named_stores();
        }
        self.learn_named_stores(user)
    }

    /// The store peers we fetch our own mailbox from: the ones we named, and those named
    /// before, which may still hold messages deposited before the choice changed.
    pub(in crate::messenger) fn my_stores(&self) -> Vec<PeerId> {
        let mut out = self.named_stores();
        out.extend(
            self.choice
                .previous
                .iter()
                .map(UserId::peer_id)
                .filter(|p| self.stores.contains_key(p)),
        );
        out
    }

    /// Opens links to our mailbox's store peers (each subscribes on open).
    pub(in crate::messenger) fn subscribe_mailbox(&mut self) {
        self.transfers.set_mailbox_stores(self.my_stores());
        for store in self.my_stores() {
            self.store_link(store);
        }
    }

    /// The link to a store peer, opened if needed; a link to one of our own store peers
    /// subscribes to our mailbox and carries our heartbeats.
    pub(in crate::messenger) fn store_link(
        &mut self,
        store: PeerId,
    ) -> Option<mpsc::Sender<MailboxRequest>> {
        let ours = self.my_stores().contains(&store);
        let open = self
            .stores
            .get(&store)?
            .link
            .as_ref()
            .filter(|l| !l.tx.is_closed())
            .map(|l| (l.tx.clone(), l.subscribed));
        if let Some((tx, subscribed)) = open {
            if ours && !subscribed {
                let _ = tx.try_send(MailboxRequest::Register(self.registration()));
                let now_subscribed = tx.try_send(MailboxRequest::Subscribe).is_ok();
                let record = self.presence_record();
                let _ = tx.try_send(MailboxRequest::Presence(record));
                if let Some(link) = self.stores.get_mut(&store).and_then(|s| s.link.as_mut()) {
                    link.subscribed = now_subscribed;
                }
            }
            return Some(tx);
        }
        let record = ours.then(|| self.presence_record());
        self.next_generation += 1;
        let generation = self.next_generation;
        let (tx, rx) = mpsc::channel(self.cfg.link_queue);
        let task = link::spawn_stream_link(
            store,
            kith_net::protocols::MAILBOX,
            self.net.control(),
            rx,
            self.store_tx.clone(),
            move |signal: LinkSignal<MailboxResponse>| StoreEvent {
                store,
                generation,
                signal,
            },
            self.cancel.child_token(),
        );
        let mut subscribed = false;
        if let Some(record) = record {
            // The store peer holds our mailbox only once it has our registration.
            let _ = tx.try_send(MailboxRequest::Register(self.registration()));
            subscribed = tx.try_send(MailboxRequest::Subscribe).is_ok();
            let _ = tx.try_send(MailboxRequest::Presence(record));
        }
        let state = self.stores.get_mut(&store)?;
        state.link = Some(ActiveStoreLink {
            generation,
            tx: tx.clone(),
            task,
            subscribed,
        });
        Some(tx)
    }

    /// Seals what is queued for an unreachable `user` and deposits it on the store peers
    /// they named, through the ephemeral deposit identity, with their access key if they gave
    /// us one.
    pub(in crate::messenger) fn deposit_queue(&mut self, user: UserId) {
        let set = self.store_set(&user);
        if set.is_empty() {
            // Their bundle names no store peer (an old bundle): look for a newer one.
            tracing::debug!(%user, "recipient names no store peers yet");
            self.refresh_bundle(user);
            return;
        }
        // W copies, unless the recipient named fewer store peers than that.
        let needed = self.cfg.write_quorum.min(set.len()).max(1);
        let links: Vec<mpsc::Sender<MailboxRequest>> =
            set.iter().filter_map(|p| self.deposit_link(*p)).collect();
        let waiting = set.iter().filter(|p| self.deposit_pending(p)).count();
        if links.len() < needed || (links.len() < set.len() && waiting > 0) {
            tracing::debug!(%user, open = links.len(), needed, waiting, "deposit links not ready yet");
            return;
        }
        let key = self.access_key_of(&user);
        let Some(mut state) = self.peers.remove(&user) else {
            return;
        };
        let now = now_ms();
        let mut media = Vec::new();
        let mut held_back = Vec::new();
        while state.in_flight.len() < self.cfg.max_in_flight {
            // What the store peers refused as too large waits for a direct link.
            while let Some(id) = state.queue.front().copied() {
                if !state.direct_only.contains(&id) {
                    break;
                }
                state.queue.pop_front();
                held_back.push(id);
            }
            let Some((id, envelope)) = self.next_sealed(user, &mut state, now) else {
                break;
            };
            let mut sent = 0;
            for l in &links {
                if l.try_send(MailboxRequest::Deposit(envelope.clone(), key))
                    .is_ok()
                {
                    sent += 1;
                }
            }
            if sent < needed {
                state.queue.push_front(id);
                break;
            }
            self.deposits.start(id, user, needed, sent);
            state.in_flight.insert(id, Instant::now());
            state.in_flight_order.push_back(id);
            if self
                .outbox
                .get(&id)
                .is_some_and(|e| e.plaintext.payload.kind == payload::kind::MEDIA)
            {
                media.push(id);
            }
        }
        for id in held_back.into_iter().rev() {
            state.queue.push_front(id);
        }
        self.peers.insert(user, state);
        for id in media {
            self.upload_media_of(id, user, &set);
        }
    }

    pub(in crate::messenger) fn on_store(&mut self, ev: StoreEvent) {
        let StoreEvent {
            store,
            generation,
            signal,
        } = ev;
        match signal {
            LinkSignal::Up => {
                tracing::debug!(%store, "store link up");
                if let Some(s) = self.stores.get_mut(&store) {
                    if s.link.as_ref().map(|l| l.generation) == Some(generation) {
                        s.retry.succeeded();
                        s.down_since = None;
                    }
                }
            }
            LinkSignal::Down => {
                if let Some(s) = self.stores.get_mut(&store) {
                    if s.link.as_ref().map(|l| l.generation) == Some(generation) {
                        s.link = None;
                        s.retry.failed(Instant::now());
                        s.down_since.get_or_insert_with(Instant::now);
                    }
                    if s.deposit_link.as_ref().map(|l| l.generation) == Some(generation) {
                        s.deposit_link = None;
                    }
                }
            }
            LinkSignal::Frames(frames) => {
                for f in frames {
                    match f {
                        MailboxResponse::Stored(id) => self.on_deposit_stored(store, id),
                        MailboxResponse::Refused(id, reason) => {
                            self.on_deposit_refused(store, id, reason)
                        }
                        MailboxResponse::Deliver(envs) => self.on_mailbox_deliver(store, envs),
                        MailboxResponse::Presence(user, Some(record)) if record.user == user => {
                            self.on_stored_presence(record)
                        }
                        MailboxResponse::Presence(..) | MailboxResponse::Replicated(_) => {}
                    }
                }
            }
        }
    }

    pub(in crate::messenger) fn on_deposit_stored(&mut self, store: PeerId, id: MessageId) {
        if let Some(to) = self.deposits.stored(store, id) {
            tracing::debug!(%id, %to, "deposit held by W store peers");
            self.on_acked(to, vec![id]);
            self.pump(to);
        }
    }

    pub(in crate::messenger) fn on_deposit_refused(
        &mut self,
        store: PeerId,
        id: MessageId,
        reason: RefuseReason,
    ) {
        tracing::warn!(%store, %id, ?reason, "store peer refused deposit");
        if reason == RefuseReason::NotNamed {
            // The recipient moved its mailbox: find where to.
            if let Some(to) = self.outbox.get(&id).map(|e| e.to) {
                self.refresh_bundle(to);
            }
        }
        match self.deposits.refused(store, id, reason) {
            // Enough of the others may still hold it, or the refusal passes (quota, rate):
            // the entry stays in flight and is deposited again after the ack timeout.
            Refusal::Wait => {}
            Refusal::DirectOnly { to } => {
                // It must not become ✓ through store peers, nor be dropped: it stays pending
                // and waits for a direct link to the recipient (whose node accepts any
                // envelope up to MAX_ENVELOPE_LEN).
                tracing::warn!(%id, %to, "store peers refuse this message as too large; it stays pending until the recipient is reachable directly");
                let state = self.peer(to);
                state.ack(&id);
                state.direct_only.insert(id);
                state.queue.push_back(id);
            }
            Refusal::Drop { to } => {
                self.peer(to).ack(&id);
                if let Some(entry) = self.outbox.remove(&id) {
                    let _ = self.store.outbox_remove(&entry);
                }
            }
        }
    }

    /// Envelopes from our mailbox: received like direct ones; once they are durable here,
    /// every store peer of ours is asked to delete them, each named by id and digest (so
    /// deleting one envelope never deletes another that reuses its id). What could not be
    /// opened *yet* stays there and is fetched again after a delay; what never opens is
    /// deleted as bad.
    pub(in crate::messenger) fn on_mailbox_deliver(&mut self, store: PeerId, envs: Vec<Envelope>) {
        // The digest of each envelope as the store peers compute it (of the canonical
        // encoding of the decoded value); `None` for one that does not encode, which no
        // store peer holds either.
        let refs: Vec<Option<EnvelopeRef>> = envs
            .iter()
            .map(|e| {
                e.digest()
                    .ok()
                    .map(|digest| EnvelopeRef { id: e.id(), digest })
            })
            .collect();
        let frames = envs.into_iter().map(MsgFrame::Envelope).collect();
        let received = self.receive_batch(store, frames);
        let Sorted { delete, not_yet } = sort_outcomes(refs, &received.outcomes);
        if !not_yet.is_empty() {
            let give_up = self.unopened.failed(not_yet, Instant::now());
            if !give_up.is_empty() {
                // Still unopenable after several fetches: not a late session, a bad
                // envelope. Stop it from being pushed again.
                tracing::warn!(
                    n = give_up.len(),
                    "mailbox messages that never open; deleted"
                );
                self.delete_from_my_stores(give_up);
            }
        }
        if received.needs_commit {
            self.when_durable(
                |_| {},
                Internal::Committed {
                    release: received.release,
                    deletes: delete,
                },
            );
        } else {
            self.delete_from_my_stores(delete);
        }
    }

    /// Asks every store peer of ours to delete `refs`.
    pub(in crate::messenger) fn delete_from_my_stores(&self, refs: Vec<EnvelopeRef>) {
        if refs.is_empty() {
            return;
        }
        let deletes = batch::split(refs, BatchLimit::frame(MAX_DELETE_IDS));
        for store in self.my_stores() {
            if let Some(link) = self.stores.get(&store).and_then(|s| s.link.as_ref()) {
                for ids in &deletes.batches {
                    if link
                        .tx
                        .try_send(MailboxRequest::Delete(ids.clone()))
                        .is_err()
                    {
                        // The envelope stays there and is pushed again on the next fetch,
                        // where it is recognised and deleted then.
                        tracing::debug!(%store, "store link busy; delete deferred");
                    }
                }
            }
        }
    }
}
