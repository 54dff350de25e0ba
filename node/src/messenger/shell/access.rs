//! Acting on mailbox access (issue #13): our choice of store peers, its registration and
//! publication, contact cards, and the ephemeral identity deposits are made with.
//!
//! Our mailbox lives on the store peers we name ([`super::super::mailbox_choice`]); we
//! register the choice with each of them and tell our contacts (a [`ContactCard`] inside the
//! end-to-end channel carries our bundle and our mailbox access key). Senders deposit only on
//! the peers the recipient named, over a second libp2p swarm whose identity is random and
//! replaced every `deposit_identity_lifetime`: the store peer sees a stranger hand over an
//! envelope for the recipient, never who wrote it. The same ephemeral links ask for a
//! contact's presence, so a store peer cannot tell who is watching whom either.

use kith_protocol::{
    access::{MailboxPeer, MailboxRegistration, MAX_ADDR_LEN, MAX_PEER_ADDRS},
    payload::ContactCard,
    MailboxAccessKey,
};
use libp2p::Multiaddr;

use crate::messenger::mailbox_choice::*;
use crate::messenger::shell::mailbox::ActiveStoreLink;
use crate::messenger::*;

/// The second swarm deposits go through, under a random identity.
pub(in crate::messenger) struct DepositNet {
    pub(in crate::messenger) net: Network,
    /// Tells its events from those of an older deposit identity.
    pub(in crate::messenger) generation: u64,
    pub(in crate::messenger) started: Instant,
    /// Store peers this identity is connected to.
    pub(in crate::messenger) connected: HashSet<PeerId>,
    /// Store peers this identity failed to reach, and when.
    pub(in crate::messenger) failed: HashMap<PeerId, Instant>,
    pub(in crate::messenger) cancel: CancellationToken,
}

/// How long a bundle lookup after a `NotNamed` refusal waits before the next one for the same
/// user.
const REFRESH_INTERVAL: Duration = Duration::from_secs(30);

/// The addresses of a store peer as a bundle names them (within the protocol's limits).
fn bundle_addrs(addrs: &[Multiaddr]) -> Vec<String> {
    addrs
        .iter()
        .map(ToString::to_string)
        .filter(|a| a.len() <= MAX_ADDR_LEN)
        .take(MAX_PEER_ADDRS)
        .collect()
}

impl Messenger {
    /// Loads (or makes) our access key and our stored mailbox choice, and names the chosen
    /// peers in our bundle. Runs once, when the messenger is built.
    pub(in crate::messenger) fn init_access(&mut self) -> Result<(), StoreError> {
        self.access_key = match self.store.meta_value::<MailboxAccessKey>(ACCESS_KEY_KEY)? {
            Some(key) => key,
            None => {
                let key = MailboxAccessKey::generate(&mut self.rng);
                self.store.set_meta_value(ACCESS_KEY_KEY, &key)?;
                key
            }
        };
        if let Some(choice) = self.store.meta_value::<MailboxChoice>(MAILBOX_CHOICE_KEY)? {
            if let Err(e) = self
                .me
                .set_mailboxes(choice.named.clone(), choice.chosen_at_ms)
            {
                tracing::warn!(error = %e, "stored mailbox choice is invalid; choosing again");
            } else {
                self.choice = choice;
            }
        }
        Ok(())
    }

    /// Our registration for our named store peers.
    pub(in crate::messenger) fn registration(&self) -> MailboxRegistration {
        MailboxRegistration::new(
            &self.me,
            self.choice.named_ids(),
            &self.access_key,
            self.choice.chosen_at_ms,
        )
    }

    /// The store peers we named (deposits for us go there).
    pub(in crate::messenger) fn named_stores(&self) -> Vec<PeerId> {
        self.choice.named.iter().map(|p| p.peer.peer_id()).collect()
    }

    /// Chooses our store peers again when fewer than R are named or one stayed unreachable
    /// past `mailbox_reselect_after`; a new choice is stored, signed into our bundle,
    /// registered with every named peer, published and sent to every contact.
    pub(in crate::messenger) fn maybe_rechoose_mailboxes(&mut self) {
        let now = Instant::now();
        let reselect_after = self.cfg.mailbox_reselect_after;
        let known: Vec<UserId> = self
            .stores
            .iter()
            .filter(|(_, s)| s.advertised)
            .filter_map(|(p, _)| UserId::from_peer_id(*p).ok())
            .collect();
        let preferred: Vec<UserId> = self
            .cfg
            .bootstrap
            .iter()
            .filter_map(kith_net::peer_of)
            .filter_map(|p| UserId::from_peer_id(p).ok())
            .collect();
        let stores = &self.stores;
        let usable = |u: &UserId| {
            stores.get(&u.peer_id()).is_none_or(|s| {
                s.down_since
                    .is_none_or(|t| now.duration_since(t) < reselect_after)
            })
        };
        let current = self.choice.named_ids();
        let Some(chosen) = mailbox_choice::choose(
            &current,
            usable,
            &preferred,
            &known,
            self.cfg.replication,
            &mut self.rng,
        ) else {
            return;
        };
        let named: Vec<MailboxPeer> = chosen
            .iter()
            .map(|u| MailboxPeer {
                peer: *u,
                addrs: self
                    .stores
                    .get(&u.peer_id())
                    .map(|s| bundle_addrs(&s.addrs))
                    .unwrap_or_default(),
            })
            .collect();
        let mut choice = self.choice.clone();
        // Never date a choice before the one it replaces (the newest registration wins).
        choice.replace(named, now_ms().max(self.choice.chosen_at_ms + 1));
        if let Err(e) = self
            .me
            .set_mailboxes(choice.named.clone(), choice.chosen_at_ms)
        {
            tracing::error!(error = %e, "cannot name the chosen store peers");
            return;
        }
        if let Err(e) = self.store.set_meta_value(MAILBOX_CHOICE_KEY, &choice) {
            tracing::error!(error = %e, "cannot store the mailbox choice");
        }
        tracing::info!(stores = ?chosen, "mailbox store peers chosen");
        self.choice = choice;
        let registration = self.registration();
        for store in self.named_stores() {
            if let Some(tx) = self.store_link(store) {
                let _ = tx.try_send(MailboxRequest::Register(registration.clone()));
            }
        }
        self.subscribe_mailbox();
        self.last_publish = None;
        self.maybe_publish_bundle();
        let contacts: Vec<UserId> = self.contacts.keys().copied().collect();
        for c in contacts {
            self.send_card(c);
        }
    }

    /// Queues our contact card (bundle and access key) for `to`, like a receipt: sealed,
    /// acknowledged, never shown. It leaves once durable.
    pub(in crate::messenger) fn send_card(&mut self, to: UserId) {
        if let Some(id) = self.queue_card(to) {
            self.when_durable(
                |_| {},
                Internal::Committed {
                    release: vec![id],
                    deletes: Vec::new(),
                },
            );
        }
    }

    /// Writes our contact card for `to` to the outbox without queueing it; returns its id for
    /// the caller to release once durable.
    pub(in crate::messenger) fn queue_card(&mut self, to: UserId) -> Option<MessageId> {
        let card = Payload::ContactCard(Box::new(ContactCard {
            bundle: self.me.bundle(),
            access: self.access_key,
        }));
        let now = now_ms();
        let plaintext = Plaintext::new(&card, now).ok()?;
        let seq = match self.store.next_seq() {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, "cannot queue contact card");
                return None;
            }
        };
        let entry = OutboxEntry {
            seq,
            id: MessageId::random(&mut self.rng),
            to,
            plaintext,
            expires_at_ms: now.saturating_add(self.cfg.message_lifetime.as_millis() as u64),
            tracked: false,
        };
        if let Err(e) = self.store.outbox_put(&entry) {
            tracing::error!(error = %e, "cannot queue contact card");
            return None;
        }
        let id = entry.id;
        self.outbox.insert(entry);
        Some(id)
    }

    /// A contact's card: their newer bundle (only their own) and their access key.
    pub(in crate::messenger) fn on_card(&mut self, sender: UserId, card: ContactCard) {
        if card.bundle.user != sender {
            tracing::warn!(%sender, "contact card carrying someone else's bundle; ignored");
            return;
        }
        let Some(mut contact) = self.contacts.get(&sender).cloned() else {
            return;
        };
        if card.bundle.created_at_ms() >= contact.bundle.created_at_ms() {
            contact.bundle = card.bundle;
        }
        contact.access = Some(card.access);
        if let Err(e) = self.store.put_contact(&contact) {
            tracing::error!(error = %e, "cannot store contact card");
        }
        self.contacts.insert(sender, contact);
        // Their mailbox may have moved: what waits for them can be deposited there now.
        self.pump(sender);
    }

    /// The access key `user` gave us, if any.
    pub(in crate::messenger) fn access_key_of(&self, user: &UserId) -> Option<MailboxAccessKey> {
        self.contacts.get(user).and_then(|c| c.access)
    }

    /// Looks up `user`'s newest bundle in the DHT (their mailbox moved), at most once per
    /// [`REFRESH_INTERVAL`].
    pub(in crate::messenger) fn refresh_bundle(&mut self, user: UserId) {
        let now = Instant::now();
        let state = self.peer(user);
        if state
            .last_bundle_lookup
            .is_some_and(|t| now.duration_since(t) < REFRESH_INTERVAL)
        {
            return;
        }
        state.last_bundle_lookup = Some(now);
        let net = self.net.clone();
        let internal = self.internal_tx.clone();
        self.tasks.spawn(async move {
            let values = net.get_record(contacts::bundle_record_key(&user)).await;
            let bundle = contacts::newest_bundle(&values, &user);
            let _ = internal
                .send(Internal::BundleRefreshed { user, bundle })
                .await;
        });
    }

    /// The link to `store` through the current deposit identity: open when that identity is
    /// connected to it; otherwise a dial (or the identity itself) is started and `None`
    /// returned (the caller tries again when it connects).
    pub(in crate::messenger) fn deposit_link(
        &mut self,
        store: PeerId,
    ) -> Option<mpsc::Sender<MailboxRequest>> {
        let Some(dn) = self.deposit_net.as_ref() else {
            self.start_deposit_net();
            return None;
        };
        let (generation, connected, net) =
            (dn.generation, dn.connected.contains(&store), dn.net.clone());
        let state = self.stores.get(&store)?;
        if let Some(l) = state.deposit_link.as_ref().filter(|l| !l.tx.is_closed()) {
            return Some(l.tx.clone());
        }
        if !connected {
            net.dial(store, state.addrs.clone());
            return None;
        }
        self.next_generation += 1;
        let link_generation = self.next_generation;
        let (tx, rx) = mpsc::channel(self.cfg.link_queue);
        let task = link::spawn_stream_link(
            store,
            kith_net::protocols::MAILBOX,
            net.control(),
            rx,
            self.store_tx.clone(),
            move |signal: LinkSignal<MailboxResponse>| StoreEvent {
                store,
                generation: link_generation,
                signal,
            },
            self.cancel.child_token(),
        );
        tracing::debug!(%store, deposit_identity = generation, "deposit link opened");
        let state = self.stores.get_mut(&store)?;
        state.deposit_link = Some(ActiveStoreLink {
            generation: link_generation,
            tx: tx.clone(),
            task,
            subscribed: false,
        });
        Some(tx)
    }

    /// Whether a deposit to `store` should wait for its deposit connection: it is being made
    /// and has not failed in the last [`REFRESH_INTERVAL`]. Waiting keeps every named peer's
    /// copy of a mailbox in the same order.
    pub(in crate::messenger) fn deposit_pending(&self, store: &PeerId) -> bool {
        let Some(dn) = self.deposit_net.as_ref() else {
            return true;
        };
        if dn.connected.contains(store) {
            return false;
        }
        dn.failed
            .get(store)
            .is_none_or(|t| t.elapsed() >= REFRESH_INTERVAL)
    }

    /// Starts a deposit identity (a swarm with a random key, listening nowhere); it reports
    /// back as [`Internal::DepositNetUp`].
    fn start_deposit_net(&mut self) {
        if self.deposit_net_starting {
            return;
        }
        self.deposit_net_starting = true;
        self.next_generation += 1;
        let generation = self.next_generation;
        let cancel = self.cancel.child_token();
        let internal = self.internal_tx.clone();
        let transport = self.cfg.transport.clone();
        self.tasks.spawn(async move {
            let cfg = kith_net::NetConfig {
                idle_timeout: DEPOSIT_IDLE_TIMEOUT,
                transport: transport.clone(),
                ..Default::default()
            };
            let keypair = libp2p::identity::Keypair::generate_ed25519();
            match kith_net::swarm::start(keypair, &cfg, cancel.clone()).await {
                Ok((net, mut events, _task)) => {
                    let _ = internal
                        .send(Internal::DepositNetUp {
                            net,
                            generation,
                            cancel,
                        })
                        .await;
                    // Only whom the identity is connected to matters to the messenger.
                    while let Some(ev) = events.recv().await {
                        let report = match ev {
                            NetEvent::Connected(peer) => Some((peer, true)),
                            NetEvent::Disconnected(peer) | NetEvent::DialFailed(peer) => {
                                Some((peer, false))
                            }
                            _ => None,
                        };
                        if let Some((peer, up)) = report {
                            let msg = Internal::DepositConnection {
                                generation,
                                peer,
                                up,
                            };
                            if internal.send(msg).await.is_err() {
                                break;
                            }
                        }
                    }
                }
                Err(e) => {
                    tracing::error!(error = %e, "cannot start a deposit identity");
                    let _ = internal.send(Internal::DepositNetFailed).await;
                }
            }
        });
    }

    /// Replaces the deposit identity once it is older than `deposit_identity_lifetime` and
    /// no deposit waits for an answer over it.
    pub(in crate::messenger) fn maybe_rotate_deposit_identity(&mut self) {
        let due = self
            .deposit_net
            .as_ref()
            .is_some_and(|dn| dn.started.elapsed() >= self.cfg.deposit_identity_lifetime);
        if !due || !self.deposits.is_empty() {
            return;
        }
        if let Some(dn) = self.deposit_net.take() {
            tracing::debug!(generation = dn.generation, "deposit identity retired");
            dn.cancel.cancel();
        }
        for s in self.stores.values_mut() {
            if let Some(l) = s.deposit_link.take() {
                l.task.abort();
            }
        }
    }

    /// What the deposit identity's task reports.
    pub(in crate::messenger) fn on_deposit_net(&mut self, ev: Internal) {
        match ev {
            Internal::DepositNetUp {
                net,
                generation,
                cancel,
            } => {
                self.deposit_net_starting = false;
                tracing::debug!(peer = %net.local_peer_id(), "deposit identity started");
                self.deposit_net = Some(DepositNet {
                    net,
                    generation,
                    started: Instant::now(),
                    connected: HashSet::new(),
                    failed: HashMap::new(),
                    cancel,
                });
                self.pump_waiting();
            }
            Internal::DepositNetFailed => self.deposit_net_starting = false,
            Internal::DepositConnection {
                generation,
                peer,
                up,
            } => {
                let Some(dn) = self
                    .deposit_net
                    .as_mut()
                    .filter(|d| d.generation == generation)
                else {
                    return;
                };
                if up {
                    dn.connected.insert(peer);
                    dn.failed.remove(&peer);
                } else {
                    dn.connected.remove(&peer);
                    if dn.failed.len() < MAX_KNOWN_STORES {
                        dn.failed.insert(peer, Instant::now());
                    }
                }
                // Deposits waiting for this connection go on (without it, if it failed).
                self.pump_waiting();
            }
            _ => {}
        }
    }

    /// Moves on every queue waiting for an unreachable contact (a store peer or a deposit
    /// connection became available).
    pub(in crate::messenger) fn pump_waiting(&mut self) {
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

    /// Makes the store peers `user` named known (with the addresses the bundle gives), so
    /// deposits can reach them. At most [`MAX_KNOWN_STORES`] are kept.
    pub(in crate::messenger) fn learn_named_stores(&mut self, user: &UserId) -> Vec<PeerId> {
        let Some(named) = self.contacts.get(user).map(|c| c.bundle.mailboxes.clone()) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for p in named {
            let peer = p.peer.peer_id();
            let addrs: Vec<Multiaddr> = p.addrs.iter().filter_map(|a| a.parse().ok()).collect();
            if !self.stores.contains_key(&peer) && self.stores.len() >= MAX_KNOWN_STORES {
                continue;
            }
            let (min, max) = (self.cfg.min_backoff, self.cfg.max_backoff);
            let state = self
                .stores
                .entry(peer)
                .or_insert_with(|| StoreState::new(min, max));
            for a in addrs {
                if !state.addrs.contains(&a) && state.addrs.len() < MAX_PEER_ADDRS * 2 {
                    state.addrs.push(a);
                }
            }
            out.push(peer);
        }
        out
    }
}
