//! The messenger: the one task that owns conversation state in motion — sessions, the outbox,
//! per-peer send queues, statuses and presence — and seals and opens every envelope.
//!
//! Keeping all of it in one task (mini-redis's `db` and rust-libp2p's `EventLoop` pattern)
//! means no locks: handles, links and the network talk to it over bounded channels. The task
//! never waits on I/O itself: durability waits ([`Store::commit`]) run in small spawned
//! futures that answer the caller, or report back, once the group commit has flushed.
//!
//! The life of an outgoing message: the API's send stores the message and its outbox entry,
//! queues it for the peer and answers once the write is durable; the queue is drained into
//! the peer's link (sealing each entry just before it leaves); the peer's ack removes the
//! entry (*sent*); the peer's sealed receipts move the status to *delivered* and *read*.
//! A lost link requeues what was in flight; a dial that fails is retried with backoff.

use std::{
    collections::{HashMap, HashSet, VecDeque},
    time::{Duration, Instant},
};

use kith_protocol::{
    batch::{self, BatchLimit},
    blob::{BlobHash, BlobLayout},
    mailbox::{
        EnvelopeRef, MailboxRequest, MailboxResponse, RefuseReason, MAILBOX_PROTOCOL,
        MAX_DELETE_IDS,
    },
    payload::{self, MediaRef, Receipt, ReceiptKind, Text},
    seal::{open_handshake, OpenError, SessionId},
    wire::{MsgFrame, RejectReason, MAX_ACK_IDS},
    DeliveryStatus, Envelope, EnvelopeHeader, KeyBundle, LocalIdentity, MessageId, Payload,
    PeerSessions, Plaintext, PresenceRecord, SessionPolicy, UserId, Visibility,
};
use libp2p::PeerId;
use rand::{rngs::StdRng, SeedableRng};
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::{
    handle::{ContactView, Event, Me, NodeError, PresenceView, Sent},
    invite::Invite,
    link::{self, LinkEvent, LinkSignal},
    media::{MediaId, MediaRecord, MediaState},
    net::{closest_peers, NetEvent, Network},
    store::{Contact, Direction, OutboxEntry, Store, StoreError, StoredMessage},
    time::{now_ms, rfc3339},
    transfer::TransferHandle,
    Config,
};

/// A request from a [`crate::Node`] handle.
pub(crate) enum Command {
    Me {
        reply: oneshot::Sender<Result<Me, NodeError>>,
    },
    AddContact {
        invite: String,
        name: Option<String>,
        reply: oneshot::Sender<Result<ContactView, NodeError>>,
    },
    AddContactById {
        user: UserId,
        name: Option<String>,
        reply: oneshot::Sender<Result<ContactView, NodeError>>,
    },
    SendText {
        to: UserId,
        text: String,
        client_meta: serde_json::Value,
        reply: oneshot::Sender<Result<Sent, NodeError>>,
    },
    SendMedia {
        to: UserId,
        media: Box<kith_protocol::payload::MediaRef>,
        reply: oneshot::Sender<Result<Sent, NodeError>>,
    },
    MarkRead {
        peer: UserId,
        reply: oneshot::Sender<Result<usize, NodeError>>,
    },
    Presence {
        peer: UserId,
        reply: oneshot::Sender<Result<PresenceView, NodeError>>,
    },
    SetSharePresence {
        share: bool,
        reply: oneshot::Sender<Result<(), NodeError>>,
    },
}

/// Reports from the futures the messenger spawned.
pub(crate) enum Internal {
    /// These outbox entries are durable: they may leave now.
    Committed(Vec<MessageId>),
    /// A DHT lookup of a user's key bundle finished.
    BundleFound {
        bundle: Option<Box<KeyBundle>>,
        user: UserId,
        name: Option<String>,
        reply: oneshot::Sender<Result<ContactView, NodeError>>,
    },
    /// Some mailbox envelopes could not be opened yet: fetch the mailbox again later.
    RetryMailbox(Vec<EnvelopeRef>),
    /// A DHT lookup found addresses for a contact.
    Found(UserId, Vec<libp2p::Multiaddr>),
}

/// Most events waiting for the commit that makes them true.
const EVENT_GATE_QUEUE: usize = 4096;

/// Starts the task that publishes events only once the writes they announce are durable.
///
/// sled shows a write before it is flushed, so without this a listener could see a message
/// "sent" (or received) that a `kill -9` a moment later takes back: the status would seem
/// to move backwards. Every event is queued after its write was made; the task takes every
/// queued event, waits for one group commit (which covers all their writes) and publishes
/// them in order. It ends when the messenger drops its sender.
fn spawn_event_gate(store: Store, events: broadcast::Sender<Event>) -> mpsc::Sender<Event> {
    let (tx, mut rx) = mpsc::channel::<Event>(EVENT_GATE_QUEUE);
    tokio::spawn(async move {
        let mut batch = Vec::new();
        while let Some(first) = rx.recv().await {
            batch.push(first);
            while let Ok(next) = rx.try_recv() {
                batch.push(next);
            }
            match store.commit().await {
                Ok(()) => {
                    for event in batch.drain(..) {
                        let _ = events.send(event);
                    }
                }
                Err(e) => {
                    tracing::error!(error = %e, "commit failed; events withheld");
                    batch.clear();
                }
            }
        }
    });
    tx
}

/// How many times an envelope the peer refused as invalid is resealed and sent again (with a
/// fresh handshake) before it is given up.
const MAX_INVALID_RETRIES: u32 = 3;

/// `meta` key of the user's last-seen sharing choice (1 share, 0 hide).
const SHARE_LAST_SEEN_KEY: &str = "share_last_seen";

/// How long to wait before fetching the mailbox again when part of it could not be opened
/// yet (its session's first message is likely still arriving from another store peer).
const MAILBOX_REFETCH_DELAY: Duration = Duration::from_secs(2);

/// Fetches an unopenable mailbox message gets before it is deleted as bad.
const MAX_MAILBOX_REFETCH: u32 = 3;

/// Most unopenable mailbox messages tracked at once.
const MAX_UNOPENED: usize = 10_000;

/// How often the key bundle is published in the DHT again.
const PUBLISH_INTERVAL: Duration = Duration::from_secs(600);

/// The DHT key of a user's key bundle.
fn bundle_record_key(user: &UserId) -> Vec<u8> {
    let mut key = b"/kith/bundle/".to_vec();
    key.extend_from_slice(&user.to_bytes());
    key
}

/// Least time between two DHT lookups of the same peer.
const LOOKUP_INTERVAL: Duration = Duration::from_secs(10);

/// How long a dial may stay silent before it counts as failed.
const DIAL_TIMEOUT: Duration = Duration::from_secs(20);

/// A heartbeat older than this many intervals means the contact is no longer online.
const ONLINE_GRACE_INTERVALS: u32 = 3;

/// What became of one received envelope: `Ok` means "acknowledge it".
type Outcome = (MessageId, Result<(), RejectReason>);

/// The answer frames for a link's envelopes: the acks first (at most [`MAX_ACK_IDS`] ids
/// per frame), then the rejects in order.
fn answer_frames(outcomes: Vec<Outcome>) -> Vec<MsgFrame> {
    let mut acked = Vec::new();
    let mut rejects = Vec::new();
    for (id, outcome) in outcomes {
        match outcome {
            Ok(()) => acked.push(id),
            Err(reason) => rejects.push(MsgFrame::Reject(id, reason)),
        }
    }
    // Acks first, in frames that fit (split by bytes as well as by count).
    let mut answers: Vec<MsgFrame> = batch::split(acked, BatchLimit::frame(MAX_ACK_IDS))
        .batches
        .into_iter()
        .map(MsgFrame::Ack)
        .collect();
    answers.extend(rejects);
    answers
}

struct ActiveLink {
    generation: u64,
    tx: mpsc::Sender<MsgFrame>,
}

/// What the messenger knows about one peer.
struct PeerState {
    /// Outbox ids waiting to be sent, in order.
    queue: VecDeque<MessageId>,
    /// Ids sent and not yet acknowledged, in send order (may hold ids already acked; the map
    /// is the truth).
    in_flight_order: VecDeque<MessageId>,
    in_flight: HashMap<MessageId, Instant>,
    link: Option<ActiveLink>,
    connected: bool,
    /// A dial is under way until this instant (after it, a silent dial counts as failed).
    dialing_until: Option<Instant>,
    backoff: Duration,
    retry_at: Option<Instant>,
    invalid_retries: HashMap<MessageId, u32>,
    presence: Option<PresenceRecord>,
    last_heard_ms: Option<u64>,
    online: bool,
    /// The last attempt to reach the peer directly failed: use its store peers.
    unreachable: bool,
    /// When we last asked the DHT where the peer is.
    last_lookup: Option<Instant>,
    /// Messages the store peers refused as too large: they stay queued (never ✓) and leave
    /// only on a direct link to the peer.
    direct_only: HashSet<MessageId>,
}

impl PeerState {
    fn new(min_backoff: Duration) -> Self {
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
    fn requeue_in_flight(&mut self) {
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

    fn ack(&mut self, id: &MessageId) -> bool {
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

/// The messenger task's state.
pub(crate) struct Messenger {
    me: LocalIdentity,
    user: UserId,
    store: Store,
    net: Network,
    cfg: Config,
    /// Where events are published, for counting listeners.
    events: broadcast::Sender<Event>,
    /// Events go out through this gate, which publishes them only once what they announce
    /// is durable (see [`spawn_event_gate`]).
    durable_events: mpsc::Sender<Event>,
    link_tx: mpsc::Sender<LinkEvent>,
    internal_tx: mpsc::Sender<Internal>,
    contacts: HashMap<UserId, Contact>,
    sessions: HashMap<UserId, PeerSessions>,
    session_owner: HashMap<SessionId, UserId>,
    outbox: HashMap<MessageId, OutboxEntry>,
    peers: HashMap<UserId, PeerState>,
    share_presence: bool,
    presence_seq: u64,
    policy: SessionPolicy,
    rng: StdRng,
    cancel: CancellationToken,
    next_generation: u64,
    /// Known store-and-forward peers (they advertise `/kith/mailbox/1`).
    stores: HashMap<PeerId, StoreState>,
    store_tx: mpsc::Sender<StoreEvent>,
    store_rx: Option<mpsc::Receiver<StoreEvent>>,
    /// Deposits waiting for W store peers to hold them.
    deposits: HashMap<MessageId, DepositState>,
    /// When our key bundle was last published in the DHT.
    last_publish: Option<Instant>,
    /// When to fetch our mailbox again because some of it could not be opened yet (a
    /// message whose session's first message had not arrived).
    refetch_at: Option<Instant>,
    /// Our messages that reached ✓ and wait for their delivered receipt, with when they were
    /// last sent; their outbox entries are kept until the receipt comes (see
    /// [`Config::receipt_timeout`]).
    awaiting_receipt: HashMap<MessageId, Instant>,
    /// How many fetches each unopenable mailbox message has survived.
    unopened: HashMap<EnvelopeRef, u32>,
    /// Starts media uploads and downloads.
    transfers: TransferHandle,
}

struct StoreState {
    link: Option<ActiveStoreLink>,
    /// After a lost link, the heartbeat reopens it no sooner than this.
    retry_at: Option<Instant>,
    /// The next wait after a lost link (doubles up to the configured maximum).
    backoff: Duration,
}

struct ActiveStoreLink {
    generation: u64,
    tx: mpsc::Sender<MailboxRequest>,
    /// Whether this link asked for our mailbox. A link opened to deposit for someone else
    /// has not; once the store peer is one of ours it must, or what only it holds for us
    /// (e.g. a copy a sender re-sealed after a restart) would never reach us or be deleted.
    subscribed: bool,
}

struct DepositState {
    to: UserId,
    acks: HashSet<PeerId>,
    needed: usize,
    /// How many store peers it was handed to.
    asked: usize,
    /// Store peers that refused it as too large.
    too_large: HashSet<PeerId>,
}

/// What a link to a store peer reports.
pub(crate) struct StoreEvent {
    store: PeerId,
    generation: u64,
    signal: LinkSignal<MailboxResponse>,
}

/// The channels the messenger task reads.
pub(crate) struct Inputs {
    pub(crate) commands: mpsc::Receiver<Command>,
    pub(crate) net_events: mpsc::Receiver<NetEvent>,
    pub(crate) link_events: mpsc::Receiver<LinkEvent>,
}

fn store_err(e: StoreError) -> NodeError {
    tracing::error!(error = %e, "storage failure");
    NodeError::Storage(e)
}

impl Messenger {
    /// Builds the messenger from what is stored.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        me: LocalIdentity,
        store: Store,
        net: Network,
        cfg: Config,
        events: broadcast::Sender<Event>,
        link_tx: mpsc::Sender<LinkEvent>,
        transfers: TransferHandle,
        cancel: CancellationToken,
    ) -> Result<(Self, mpsc::Receiver<Internal>), StoreError> {
        let (internal_tx, internal_rx) = mpsc::channel(1024);
        let (store_tx, store_rx) = mpsc::channel(4096);
        let user = me.user_id();
        let durable_events = spawn_event_gate(store.clone(), events.clone());
        let mut m = Messenger {
            user,
            me,
            net,
            events,
            durable_events,
            link_tx,
            internal_tx,
            contacts: HashMap::new(),
            sessions: HashMap::new(),
            session_owner: HashMap::new(),
            outbox: HashMap::new(),
            peers: HashMap::new(),
            share_presence: cfg.share_last_seen,
            presence_seq: now_ms(),
            policy: SessionPolicy::default(),
            rng: StdRng::from_entropy(),
            cancel,
            next_generation: 0,
            stores: HashMap::new(),
            store_tx,
            store_rx: Some(store_rx),
            deposits: HashMap::new(),
            last_publish: None,
            refetch_at: None,
            awaiting_receipt: HashMap::new(),
            unopened: HashMap::new(),
            transfers,
            cfg,
            store,
        };
        // Sharing needs both the configuration and the user's stored choice to allow it.
        if m.store.meta_u64(SHARE_LAST_SEEN_KEY)? == Some(0) {
            m.share_presence = false;
        }
        for c in m.store.contacts()? {
            m.peers.insert(c.user, PeerState::new(m.cfg.min_backoff));
            m.contacts.insert(c.user, c);
        }
        for entry in m.store.outbox_all()? {
            m.peer(entry.to).queue.push_back(entry.id);
            m.outbox.insert(entry.id, entry);
        }
        tracing::info!(
            user = %m.user,
            contacts = m.contacts.len(),
            outbox = m.outbox.len(),
            "messenger ready"
        );
        Ok((m, internal_rx))
    }

    fn peer(&mut self, user: UserId) -> &mut PeerState {
        let min = self.cfg.min_backoff;
        self.peers
            .entry(user)
            .or_insert_with(|| PeerState::new(min))
    }

    /// Runs until cancelled.
    pub(crate) async fn run(mut self, mut inputs: Inputs, mut internal: mpsc::Receiver<Internal>) {
        let mut maintenance = tokio::time::interval(Duration::from_millis(250));
        maintenance.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut heartbeat = tokio::time::interval(self.cfg.heartbeat);
        heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Connect to every contact (presence, and anything left in the outbox).
        let users: Vec<UserId> = self.contacts.keys().copied().collect();
        for u in users {
            self.ensure_link(u);
        }
        let mut store_rx = match self.store_rx.take() {
            Some(rx) => rx,
            None => mpsc::channel(1).1,
        };
        loop {
            tokio::select! {
                _ = self.cancel.cancelled() => break,
                Some(cmd) = inputs.commands.recv() => self.on_command(cmd),
                Some(ev) = inputs.net_events.recv() => self.on_net(ev),
                Some(ev) = inputs.link_events.recv() => self.on_link(ev),
                Some(ev) = internal.recv() => self.on_internal(ev),
                Some(ev) = store_rx.recv() => self.on_store(ev),
                _ = maintenance.tick() => self.on_maintenance(),
                _ = heartbeat.tick() => self.on_heartbeat(),
            }
        }
        if let Err(e) = self.store.flush_now() {
            tracing::error!(error = %e, "flush at shutdown failed");
        }
        tracing::debug!("messenger stopped");
    }

    /// Publishes an event; it is only built (ids rendered, views made) when someone listens,
    /// since this runs for every message.
    fn emit(&self, make: impl FnOnce() -> Event) {
        if self.events.receiver_count() > 0 && self.durable_events.try_send(make()).is_err() {
            // A listener that falls this far behind misses events, as a lagging broadcast
            // receiver does; what is stored is unaffected.
            tracing::warn!("event queue full; event dropped");
        }
    }

    // ---- commands -------------------------------------------------------------------

    fn on_command(&mut self, cmd: Command) {
        match cmd {
            Command::Me { reply } => {
                let _ = reply.send(self.me_view());
            }
            Command::AddContactById { user, name, reply } => {
                if user == self.user {
                    let _ = reply.send(Err(NodeError::InvalidInput("that is your own id".into())));
                    return;
                }
                let net = self.net.clone();
                let internal = self.internal_tx.clone();
                tokio::spawn(async move {
                    let values = net.get_record(bundle_record_key(&user)).await;
                    // Anyone can store a record under any key: keep only bundles that verify
                    // as this user's, and the newest of those.
                    let bundle = values
                        .iter()
                        .filter_map(|v| kith_protocol::codec::decode::<KeyBundle>(v).ok())
                        .filter(|b| b.verify_for(&user).is_ok())
                        .max_by_key(|b| b.created_at_ms())
                        .map(Box::new);
                    let _ = internal
                        .send(Internal::BundleFound {
                            bundle,
                            user,
                            name,
                            reply,
                        })
                        .await;
                });
            }
            Command::AddContact {
                invite,
                name,
                reply,
            } => {
                let result = self.add_contact(&invite, name);
                match result {
                    Ok(view) => self.reply_after_commit(reply, view, Vec::new()),
                    Err(e) => {
                        let _ = reply.send(Err(e));
                    }
                }
            }
            Command::SendText {
                to,
                text,
                client_meta,
                reply,
            } => match self.send_text(to, text, client_meta) {
                Ok(sent) => self.reply_after_commit(reply, sent, Vec::new()),
                Err(e) => {
                    let _ = reply.send(Err(e));
                }
            },
            Command::SendMedia { to, media, reply } => match self.send_media(to, *media) {
                Ok(sent) => self.reply_after_commit(reply, sent, Vec::new()),
                Err(e) => {
                    let _ = reply.send(Err(e));
                }
            },
            Command::MarkRead { peer, reply } => match self.mark_read(peer) {
                Ok((n, receipts)) => self.reply_after_commit(reply, n, receipts),
                Err(e) => {
                    let _ = reply.send(Err(e));
                }
            },
            Command::Presence { peer, reply } => {
                let _ = reply.send(self.presence_view(&peer));
            }
            Command::SetSharePresence { share, reply } => {
                self.share_presence = share;
                // Kept across restarts: a user who hid their last seen stays hidden.
                if let Err(e) = self
                    .store
                    .set_meta_u64(SHARE_LAST_SEEN_KEY, u64::from(share))
                {
                    let _ = reply.send(Err(store_err(e)));
                    return;
                }
                self.on_heartbeat();
                self.reply_after_commit(reply, (), Vec::new());
            }
        }
    }

    /// Answers `reply` with `value` once everything written so far is durable, then lets the
    /// outbox entries `release` leave.
    fn reply_after_commit<T: Send + 'static>(
        &self,
        reply: oneshot::Sender<Result<T, NodeError>>,
        value: T,
        release: Vec<MessageId>,
    ) {
        let commit = self.store.commit();
        let internal = self.internal_tx.clone();
        tokio::spawn(async move {
            let result = commit.await;
            if result.is_ok() && !release.is_empty() {
                let _ = internal.send(Internal::Committed(release)).await;
            }
            let _ = reply.send(result.map(|_| value).map_err(store_err));
        });
    }

    fn me_view(&self) -> Result<Me, NodeError> {
        let addrs = self.net.listen_addrs();
        let invite = Invite::new(self.me.bundle(), &addrs)
            .encode()
            .map_err(|e| NodeError::InvalidInput(e.to_string()))?;
        let peer = self.user.peer_id();
        Ok(Me {
            user_id: self.user.to_string(),
            listen_addrs: addrs
                .into_iter()
                .map(|a| a.with_p2p(peer).unwrap_or_else(|a| a).to_string())
                .collect(),
            invite,
        })
    }

    fn add_contact(
        &mut self,
        invite: &str,
        name: Option<String>,
    ) -> Result<ContactView, NodeError> {
        let invite = Invite::decode(invite).map_err(|e| NodeError::BadInvite(e.to_string()))?;
        if invite.user() == self.user {
            return Err(NodeError::InvalidInput("that invite is your own".into()));
        }
        let addrs = invite.addrs.clone();
        self.add_contact_bundle(invite.bundle, addrs, name)
    }

    /// Adds or updates a contact from a verified bundle and addresses (multiaddr bytes).
    fn add_contact_bundle(
        &mut self,
        bundle: KeyBundle,
        addrs: Vec<Vec<u8>>,
        name: Option<String>,
    ) -> Result<ContactView, NodeError> {
        let user = bundle.user;
        let contact = match self.contacts.get(&user) {
            Some(old) => {
                let mut c = old.clone();
                if bundle.created_at_ms() >= c.bundle.created_at_ms() {
                    c.bundle = bundle;
                }
                for a in &addrs {
                    if !c.addrs.contains(a) {
                        c.addrs.push(a.clone());
                    }
                }
                c.addrs.truncate(crate::invite::MAX_ADDRS);
                if let Some(n) = name {
                    c.name = n;
                }
                c
            }
            None => Contact {
                user,
                name: name.unwrap_or_default(),
                bundle,
                addrs,
                added_at_ms: now_ms(),
            },
        };
        self.store.put_contact(&contact).map_err(store_err)?;
        let view = contact.view();
        let dial_addrs = contact.multiaddrs();
        self.contacts.insert(user, contact);
        let state = self.peer(user);
        state.retry_at = None;
        state.dialing_until = Some(Instant::now() + DIAL_TIMEOUT);
        self.net.dial(user.peer_id(), dial_addrs);
        Ok(view)
    }

    fn send_text(
        &mut self,
        to: UserId,
        text: String,
        client_meta: serde_json::Value,
    ) -> Result<Sent, NodeError> {
        if !self.contacts.contains_key(&to) {
            return Err(NodeError::UnknownContact(to.to_string()));
        }
        if text.trim().is_empty() {
            return Err(NodeError::InvalidInput("text is empty".into()));
        }
        if text.len() > payload::MAX_TEXT_LEN {
            return Err(NodeError::TooLarge {
                what: "text",
                len: text.len(),
                max: payload::MAX_TEXT_LEN,
            });
        }
        if !client_meta.is_object() {
            return Err(NodeError::InvalidInput(
                "client_meta must be a JSON object".into(),
            ));
        }
        let meta = client_meta.to_string();
        if meta.len() > payload::MAX_CLIENT_META_LEN {
            return Err(NodeError::TooLarge {
                what: "client_meta",
                len: meta.len(),
                max: payload::MAX_CLIENT_META_LEN,
            });
        }
        let now = now_ms();
        let id = MessageId::random(&mut self.rng);
        let payload = Payload::Text(Text {
            body: text.clone(),
            client_meta: meta.clone(),
        });
        let plaintext =
            Plaintext::new(&payload, now).map_err(|e| NodeError::InvalidInput(e.to_string()))?;
        let msg = StoredMessage {
            id,
            peer: to,
            outgoing: true,
            text,
            client_meta: meta,
            sent_at_ms: now,
            stored_at_ms: now,
            status: DeliveryStatus::Pending,
            media: None,
        };
        let entry = OutboxEntry {
            seq: self.store.next_seq().map_err(store_err)?,
            id,
            to,
            plaintext,
            expires_at_ms: now.saturating_add(self.cfg.message_lifetime.as_millis() as u64),
            tracked: true,
        };
        self.queue_outgoing(msg, entry)
    }

    /// Stores an outgoing message and its outbox entry, tells listeners, and queues it.
    fn queue_outgoing(
        &mut self,
        msg: StoredMessage,
        entry: OutboxEntry,
    ) -> Result<Sent, NodeError> {
        let (id, to) = (msg.id, msg.peer);
        self.store.insert_message(&msg).map_err(store_err)?;
        self.store.outbox_put(&entry).map_err(store_err)?;
        self.outbox.insert(id, entry);
        self.emit(|| Event::Message {
            peer: to.to_string(),
            message: self.store.view(&self.user, &msg),
        });
        // The envelope may leave while the local write is still being flushed: the API only
        // answers after the flush, and a copy that left early is deduplicated by id.
        self.peer(to).queue.push_back(id);
        self.pump(to);
        Ok(Sent {
            id: id.to_string(),
            status: DeliveryStatus::Pending,
        })
    }

    /// Sends a media reference whose blob file is already in place under its hash. The blob
    /// goes to the recipient's store peers when the recipient is not connected now; otherwise
    /// the recipient pulls it from this node.
    fn send_media(&mut self, to: UserId, media: MediaRef) -> Result<Sent, NodeError> {
        if !self.contacts.contains_key(&to) {
            return Err(NodeError::UnknownContact(to.to_string()));
        }
        if media.caption.len() > payload::MAX_TEXT_LEN {
            return Err(NodeError::TooLarge {
                what: "caption",
                len: media.caption.len(),
                max: payload::MAX_TEXT_LEN,
            });
        }
        let now = now_ms();
        let id = MessageId::random(&mut self.rng);
        let hash = BlobHash(media.hash);
        let expires_at_ms = now.saturating_add(self.cfg.message_lifetime.as_millis() as u64);
        let online = self.peers.get(&to).is_some_and(|p| p.connected);
        let stores = if online {
            Vec::new()
        } else {
            self.store_set(&to, self.cfg.replication)
        };
        let record = MediaRecord {
            hash,
            key: media.key,
            size: media.size,
            chunk_size: media.chunk_size,
            mime: media.mime.clone(),
            name: media.name.clone(),
            preview: media.preview.clone(),
            message: id,
            peer: to,
            outgoing: true,
            state: if stores.is_empty() {
                MediaState::Available
            } else {
                MediaState::Uploading
            },
            done_chunks: 0,
            holders: stores.iter().map(|p| p.to_bytes()).collect(),
            expires_at_ms,
        };
        let caption = media.caption.clone();
        let plaintext = Plaintext::new(&Payload::Media(media), now)
            .map_err(|e| NodeError::InvalidInput(e.to_string()))?;
        let msg = StoredMessage {
            id,
            peer: to,
            outgoing: true,
            text: caption,
            client_meta: "{}".into(),
            sent_at_ms: now,
            stored_at_ms: now,
            status: DeliveryStatus::Pending,
            media: Some(hash),
        };
        let entry = OutboxEntry {
            seq: self.store.next_seq().map_err(store_err)?,
            id,
            to,
            plaintext,
            expires_at_ms,
            tracked: true,
        };
        self.store.put_media(&record).map_err(store_err)?;
        let sent = self.queue_outgoing(msg, entry)?;
        if record.state == MediaState::Uploading {
            self.transfers.start(record.id());
        }
        Ok(sent)
    }

    fn mark_read(&mut self, peer: UserId) -> Result<(usize, Vec<MessageId>), NodeError> {
        if !self.contacts.contains_key(&peer) {
            return Err(NodeError::UnknownContact(peer.to_string()));
        }
        let ids = self.store.mark_read(&peer).map_err(store_err)?;
        let receipts = self
            .queue_receipts(peer, ReceiptKind::Read, &ids)
            .map_err(store_err)?;
        Ok((ids.len(), receipts))
    }

    /// Writes receipt entries for `ids` to the outbox (not yet queued: they leave once
    /// durable, via [`Internal::Committed`]). Returns their ids.
    fn queue_receipts(
        &mut self,
        to: UserId,
        kind: ReceiptKind,
        ids: &[MessageId],
    ) -> Result<Vec<MessageId>, StoreError> {
        let mut out = Vec::new();
        let now = now_ms();
        for chunk in ids.chunks(payload::MAX_RECEIPT_IDS) {
            let payload = Payload::Receipt(Receipt {
                kind,
                ids: chunk.to_vec(),
            });
            let Ok(plaintext) = Plaintext::new(&payload, now) else {
                continue;
            };
            let entry = OutboxEntry {
                seq: self.store.next_seq()?,
                id: MessageId::random(&mut self.rng),
                to,
                plaintext,
                expires_at_ms: now.saturating_add(self.cfg.message_lifetime.as_millis() as u64),
                tracked: false,
            };
            self.store.outbox_put(&entry)?;
            out.push(entry.id);
            self.outbox.insert(entry.id, entry);
        }
        Ok(out)
    }

    fn presence_view(&self, peer: &UserId) -> Result<PresenceView, NodeError> {
        if !self.contacts.contains_key(peer) {
            return Err(NodeError::UnknownContact(peer.to_string()));
        }
        let hidden = PresenceView {
            online: false,
            last_seen: None,
            last_seen_ms: None,
        };
        // Mutual: whoever hides their own last seen sees no one else's.
        if !self.share_presence {
            return Ok(hidden);
        }
        let Some(state) = self.peers.get(peer) else {
            return Ok(hidden);
        };
        if matches!(
            state.presence.as_ref().map(|r| r.visibility),
            Some(Visibility::Nobody)
        ) {
            return Ok(hidden);
        }
        let from_record = state
            .presence
            .as_ref()
            .map(|r| r.last_seen_ms)
            .filter(|t| *t > 0);
        let last = if state.online {
            Some(now_ms())
        } else {
            state.last_heard_ms.max(from_record)
        };
        Ok(PresenceView {
            online: state.online,
            last_seen: last.map(rfc3339),
            last_seen_ms: last,
        })
    }

    fn presence_event(&self, peer: &UserId) {
        if let Ok(view) = self.presence_view(peer) {
            self.emit(|| Event::Presence {
                user: peer.to_string(),
                presence: view,
            });
        }
    }

    // ---- sending --------------------------------------------------------------------

    /// Makes sure a link to `user` exists or is being made.
    fn ensure_link(&mut self, user: UserId) {
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

    fn open_link(&mut self, user: UserId) {
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
    fn pump(&mut self, user: UserId) {
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

    /// The next queued entry for `user`, sealed: skips entries already in flight, gone from
    /// the outbox or expired. `None` when the queue is empty, or when sealing failed (the
    /// entry then stays at the front of the queue).
    fn next_sealed(
        &mut self,
        user: UserId,
        state: &mut PeerState,
        now_ms: u64,
    ) -> Option<(MessageId, Envelope)> {
        loop {
            let id = state.queue.pop_front()?;
            if state.in_flight.contains_key(&id) {
                continue;
            }
            let Some(entry) = self.outbox.get(&id).cloned() else {
                continue;
            };
            if entry.expires_at_ms <= now_ms {
                self.expire(&entry);
                continue;
            }
            return match self.seal(&entry, now_ms) {
                Ok(env) => Some((id, env)),
                Err(e) => {
                    tracing::warn!(%id, to = %user, error = %e, "cannot seal; message stays queued");
                    state.queue.push_front(id);
                    None
                }
            };
        }
    }

    fn seal(&mut self, entry: &OutboxEntry, now_ms: u64) -> Result<Envelope, String> {
        let bundle: KeyBundle = self
            .contacts
            .get(&entry.to)
            .map(|c| c.bundle.clone())
            .ok_or_else(|| "recipient is not a contact".to_string())?;
        let header = EnvelopeHeader::new(entry.id, entry.to, entry.expires_at_ms);
        self.load_sessions(entry.to);
        let sessions = self.sessions.entry(entry.to).or_default();
        let body = sessions
            .seal(
                &self.me,
                &bundle,
                &header,
                &entry.plaintext,
                now_ms,
                &self.policy,
                &mut self.rng,
            )
            .map_err(|e| e.to_string())?;
        Ok(Envelope { header, body })
    }

    fn load_sessions(&mut self, user: UserId) {
        if self.sessions.contains_key(&user) {
            return;
        }
        let s = match self.store.sessions(&user) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(%user, error = %e, "stored sessions unreadable; starting fresh");
                PeerSessions::default()
            }
        };
        for id in s.inbound_ids() {
            self.session_owner.insert(id, user);
        }
        self.sessions.insert(user, s);
    }

    fn expire(&mut self, entry: &OutboxEntry) {
        tracing::info!(id = %entry.id, to = %entry.to, "message expired undelivered");
        if let Err(e) = self.store.outbox_remove(entry) {
            tracing::error!(error = %e, "cannot remove expired outbox entry");
        }
        self.outbox.remove(&entry.id);
        self.awaiting_receipt.remove(&entry.id);
    }

    /// Whether the outbox entry `id` is addressed to `user`: only its recipient's answers
    /// (or its deposits' store peers, on its behalf) may settle or drop it.
    fn addressed_to(&self, id: &MessageId, user: &UserId) -> bool {
        self.outbox.get(id).is_some_and(|e| e.to == *user)
    }

    fn on_acked(&mut self, user: UserId, ids: Vec<MessageId>) {
        for id in ids {
            if self.outbox.contains_key(&id) && !self.addressed_to(&id, &user) {
                tracing::warn!(%id, from = %user, "ack for a message not sent to them; ignored");
                continue;
            }
            let state = self.peer(user);
            state.ack(&id);
            state.invalid_retries.remove(&id);
            state.direct_only.remove(&id);
            let Some(tracked) = self.outbox.get(&id).map(|e| e.tracked) else {
                continue;
            };
            if tracked {
                // Held by the recipient's node or its store peers: ✓. The entry stays until
                // the delivered receipt, so it can be sent again if that never comes.
                self.awaiting_receipt.insert(id, Instant::now());
                self.set_status(&user, &id, DeliveryStatus::Sent);
            } else {
                self.settle(&id);
            }
        }
        self.pump(user);
    }

    /// Removes an outbox entry for good: its receipt came (or it was a receipt, acked).
    fn settle(&mut self, id: &MessageId) {
        self.awaiting_receipt.remove(id);
        if let Some(entry) = self.outbox.remove(id) {
            if let Err(e) = self.store.outbox_remove(&entry) {
                tracing::error!(error = %e, "cannot remove settled outbox entry");
            }
        }
    }

    /// Sends again, directly and in a fresh session, the messages to `user` that reached ✓
    /// but whose delivered receipt has not come within [`Config::receipt_timeout`] although
    /// `user` is connected. The recipient dedupes by sender and id and answers a duplicate
    /// with a delivered receipt, so this ends once either copy is opened.
    fn resend_undelivered(&mut self, user: UserId, now: Instant) {
        let timeout = self.cfg.receipt_timeout;
        let mut due: Vec<(u64, MessageId)> = self
            .awaiting_receipt
            .iter()
            .filter(|(_, at)| now.duration_since(**at) > timeout)
            .filter_map(|(id, _)| {
                self.outbox
                    .get(id)
                    .filter(|e| e.to == user)
                    .map(|e| (e.seq, *id))
            })
            .collect();
        if due.is_empty() {
            return;
        }
        due.sort_unstable();
        tracing::info!(%user, n = due.len(), "no delivered receipt yet; sending again");
        if let Some(sessions) = self.sessions.get_mut(&user) {
            sessions.forget_outbound();
        }
        let state = self.peer(user);
        for (_, id) in &due {
            if !state.in_flight.contains_key(id) && !state.queue.contains(id) {
                state.queue.push_back(*id);
            }
        }
        for (_, id) in due {
            self.awaiting_receipt.insert(id, now);
        }
        self.pump(user);
    }

    /// Moves the status of our message `id` to `peer` forward.
    fn set_status(&mut self, peer: &UserId, id: &MessageId, status: DeliveryStatus) {
        match self.store.advance_status(peer, id, status) {
            Ok(Some(msg)) => self.emit(|| Event::Status {
                peer: msg.peer.to_string(),
                id: id.to_string(),
                status: msg.status,
            }),
            Ok(None) => {}
            Err(e) => tracing::error!(error = %e, "cannot update status"),
        }
    }

    fn on_rejected(&mut self, user: UserId, id: MessageId, reason: RejectReason) {
        if !self.addressed_to(&id, &user) {
            tracing::debug!(%id, from = %user, "reject for a message not sent to them; ignored");
            return;
        }
        let state = self.peer(user);
        state.ack(&id);
        match reason {
            RejectReason::Busy => {
                state.queue.push_back(id);
            }
            RejectReason::Invalid => {
                let tries = state.invalid_retries.entry(id).or_insert(0);
                *tries += 1;
                if *tries <= MAX_INVALID_RETRIES {
                    // Most likely the peer lost the session (restored an older state): start a
                    // fresh one and try again.
                    tracing::info!(%id, to = %user, "peer could not open envelope; resealing with a new handshake");
                    state.queue.push_front(id);
                    self.load_sessions(user);
                    if let Some(s) = self.sessions.get_mut(&user) {
                        s.forget_outbound();
                    }
                } else {
                    tracing::warn!(%id, to = %user, "peer keeps refusing envelope; giving up");
                    state.invalid_retries.remove(&id);
                    if let Some(entry) = self.outbox.remove(&id) {
                        let _ = self.store.outbox_remove(&entry);
                    }
                }
            }
            RejectReason::Misaddressed | RejectReason::Expired => {
                tracing::warn!(%id, to = %user, ?reason, "envelope refused; dropped");
                if let Some(entry) = self.outbox.remove(&id) {
                    let _ = self.store.outbox_remove(&entry);
                }
            }
        }
        self.pump(user);
    }

    // ---- receiving ------------------------------------------------------------------

    /// Envelopes (and presence) from a peer's link: answered with acks and rejects once
    /// what the acks vouch for is durable.
    fn on_inbound(
        &mut self,
        from: PeerId,
        frames: Vec<MsgFrame>,
        reply: oneshot::Sender<Vec<MsgFrame>>,
    ) {
        self.receive_batch(from, frames, move |outcomes| {
            let _ = reply.send(answer_frames(outcomes));
        });
    }

    /// Receives a batch of frames from `from` (a contact's link, or a store peer pushing our
    /// mailbox) and calls `done` with what became of each envelope, in order, once the acks
    /// and delivered receipts it implies are durable.
    fn receive_batch(
        &mut self,
        from: PeerId,
        frames: Vec<MsgFrame>,
        done: impl FnOnce(Vec<Outcome>) + Send + 'static,
    ) {
        let link_peer = UserId::from_peer_id(from).ok();
        let mut outcomes = Vec::new();
        let mut touched: HashSet<UserId> = HashSet::new();
        let mut delivered: HashMap<UserId, Vec<MessageId>> = HashMap::new();
        for frame in frames {
            match frame {
                MsgFrame::Envelope(env) => {
                    let id = env.id();
                    let outcome = self.receive(env, link_peer, &mut touched, &mut delivered);
                    outcomes.push((id, outcome));
                }
                MsgFrame::Presence(record) => self.on_presence(record),
                other => tracing::debug!(peer = %from, ?other, "unexpected frame on inbound link"),
            }
        }
        for user in &touched {
            if let Some(s) = self.sessions.get(user) {
                if let Err(e) = self.store.put_sessions(user, s) {
                    tracing::error!(error = %e, "cannot store sessions");
                }
            }
        }
        let mut release = Vec::new();
        for (sender, ids) in delivered {
            match self.queue_receipts(sender, ReceiptKind::Delivered, &ids) {
                Ok(r) => release.extend(r),
                Err(e) => tracing::error!(error = %e, "cannot queue delivered receipts"),
            }
        }
        if outcomes.iter().all(|(_, o)| o.is_err()) && release.is_empty() {
            done(outcomes);
            return;
        }
        // Acks and delivered receipts leave only once what they vouch for is durable.
        let commit = self.store.commit();
        let internal = self.internal_tx.clone();
        tokio::spawn(async move {
            match commit.await {
                Ok(()) => {
                    done(outcomes);
                    if !release.is_empty() {
                        let _ = internal.send(Internal::Committed(release)).await;
                    }
                }
                Err(e) => tracing::error!(error = %e, "commit failed; not acknowledging"),
            }
        });
    }

    /// Opens, deduplicates and stores one envelope. `Ok` means "acknowledge it".
    ///
    /// A message is a duplicate only if *its sender's* message with that id is stored, so
    /// that is decided once the envelope is open and the sender known: anyone can reuse an
    /// id (store peers see them all), and another sender's message under it is another
    /// message. `link_peer` is the authenticated peer the envelope came from (a contact, or
    /// a store peer), used only for an envelope in a session we no longer know.
    fn receive(
        &mut self,
        env: Envelope,
        link_peer: Option<UserId>,
        touched: &mut HashSet<UserId>,
        delivered: &mut HashMap<UserId, Vec<MessageId>>,
    ) -> Result<(), RejectReason> {
        let id = env.id();
        if env.header.recipient != self.user {
            tracing::warn!(%id, "envelope for another user; refused");
            return Err(RejectReason::Misaddressed);
        }
        if env.check().is_err() {
            return Err(RejectReason::Invalid);
        }
        let now = now_ms();
        if env.header.expires_at_ms <= now {
            return Err(RejectReason::Expired);
        }
        let already =
            |store: &Store, sender: &UserId| store.has_message(Direction::Incoming, sender, &id);
        let opened = match &env.body {
            kith_protocol::SealedBody::Handshake(body) => {
                match open_handshake(&self.me, &env.header, body) {
                    Ok(opened) => {
                        let sender = opened.sender.user;
                        if sender == self.user {
                            tracing::warn!(%id, "handshake claims to come from ourselves; dropped");
                            return Err(RejectReason::Invalid);
                        }
                        self.learn_bundle(&opened.sender);
                        self.load_sessions(sender);
                        let session_id = opened.session.id();
                        let sessions = self.sessions.entry(sender).or_default();
                        match sessions.accept(opened.session) {
                            Ok(()) => {
                                self.session_owner.insert(session_id, sender);
                                touched.insert(sender);
                            }
                            Err(OpenError::Replayed)
                                if already(&self.store, &sender).unwrap_or(false) =>
                            {
                                return Ok(())
                            }
                            Err(e) => {
                                tracing::warn!(%id, %sender, error = %e, "replayed handshake dropped");
                                return Err(RejectReason::Invalid);
                            }
                        }
                        (sender, opened.plaintext)
                    }
                    Err(e) => {
                        tracing::warn!(%id, error = %e, "cannot open first message; dropped");
                        return Err(RejectReason::Invalid);
                    }
                }
            }
            kith_protocol::SealedBody::Session(body) => {
                let owner = match self.session_owner.get(&body.session) {
                    Some(u) => Some(*u),
                    None => self.store.session_peer(&body.session).ok().flatten(),
                };
                let Some(sender) = owner else {
                    // A copy of a message whose session we dropped since: the link's peer
                    // (authenticated) sent it to us before if we hold its message with
                    // this id. An ack says only that: through a store peer it deletes just
                    // this envelope.
                    if link_peer.is_some_and(|p| already(&self.store, &p).unwrap_or(false)) {
                        return Ok(());
                    }
                    tracing::info!(%id, "message in an unknown session; asking the sender to resend");
                    return Err(RejectReason::Invalid);
                };
                self.load_sessions(sender);
                let sessions = self.sessions.entry(sender).or_default();
                match sessions.open(&env.header, body) {
                    Ok(p) => {
                        touched.insert(sender);
                        (sender, p)
                    }
                    Err(OpenError::Replayed) if already(&self.store, &sender).unwrap_or(false) => {
                        return Ok(())
                    }
                    Err(e) => {
                        tracing::warn!(%id, %sender, error = %e, "cannot open message; dropped");
                        return Err(RejectReason::Invalid);
                    }
                }
            }
        };
        let (sender, plaintext) = opened;
        match already(&self.store, &sender) {
            Ok(true) => {
                tracing::debug!(%id, %sender, "duplicate message; acknowledged again");
                // The sender sends a message again when its delivered receipt did not come:
                // answer with one again (receipts themselves are never receipted).
                let kind = plaintext.payload.kind;
                if kind == payload::kind::TEXT || kind == payload::kind::MEDIA {
                    delivered.entry(sender).or_default().push(id);
                }
                return Ok(());
            }
            Ok(false) => {}
            Err(e) => {
                tracing::error!(error = %e, "cannot look up message");
                return Err(RejectReason::Busy);
            }
        }
        match plaintext.payload.decode() {
            Ok(Payload::Text(t)) => {
                let msg = StoredMessage {
                    id,
                    peer: sender,
                    outgoing: false,
                    text: t.body,
                    client_meta: t.client_meta,
                    sent_at_ms: plaintext.sent_at_ms,
                    stored_at_ms: now,
                    status: DeliveryStatus::Delivered,
                    media: None,
                };
                match self.store.insert_message(&msg) {
                    Ok(true) => {
                        self.emit(|| Event::Message {
                            peer: sender.to_string(),
                            message: self.store.view(&self.user, &msg),
                        });
                        delivered.entry(sender).or_default().push(id);
                    }
                    Ok(false) => {}
                    Err(e) => {
                        tracing::error!(error = %e, "cannot store message");
                        return Err(RejectReason::Busy);
                    }
                }
            }
            Ok(Payload::Receipt(r)) => {
                let to = match r.kind {
                    ReceiptKind::Delivered => DeliveryStatus::Delivered,
                    ReceiptKind::Read => DeliveryStatus::Read,
                };
                for mid in r.ids {
                    // Only the conversation's peer may tick our messages to them: the lookup
                    // is of our message to the receipt's sender.
                    match self.store.message(Direction::Outgoing, &sender, &mid) {
                        Ok(Some(_)) => {
                            // A receipt proves the peer holds the message even if its ack is
                            // still on the way (another stream): settle the outbox entry now.
                            if self.addressed_to(&mid, &sender) {
                                self.on_acked(sender, vec![mid]);
                                self.settle(&mid);
                            }
                            self.set_status(&sender, &mid, to)
                        }
                        Ok(_) => {
                            tracing::debug!(%mid, %sender, "receipt for a message not sent to them; ignored")
                        }
                        Err(e) => tracing::error!(error = %e, "cannot read message for receipt"),
                    }
                }
            }
            Ok(Payload::Media(m)) => {
                if BlobLayout::new(m.size, m.chunk_size).is_err()
                    || m.caption.len() > payload::MAX_TEXT_LEN
                {
                    tracing::warn!(%id, %sender, "media reference with an invalid layout; dropped");
                    return Err(RejectReason::Invalid);
                }
                let hash = BlobHash(m.hash);
                let msg = StoredMessage {
                    id,
                    peer: sender,
                    outgoing: false,
                    text: m.caption.clone(),
                    client_meta: "{}".into(),
                    sent_at_ms: plaintext.sent_at_ms,
                    stored_at_ms: now,
                    status: DeliveryStatus::Delivered,
                    media: Some(hash),
                };
                // The sender first (it serves its own blob while online), then our store
                // peers (where it uploaded the blob if we were away).
                let mut holders = vec![sender.peer_id()];
                holders.extend(self.my_stores());
                let expires = now.saturating_add(self.cfg.message_lifetime.as_millis() as u64);
                // The record is this message's own: another message naming the same hash
                // has its own record and never touches this one.
                let record = MediaRecord::incoming(&m, id, sender, &holders, expires);
                let media_id = record.id();
                let fresh = match self.store.media(&media_id) {
                    Ok(existing) => existing.is_none(),
                    Err(e) => {
                        tracing::error!(error = %e, "cannot read media record");
                        return Err(RejectReason::Busy);
                    }
                };
                // A record already there (written before a crash cut this sequence short)
                // keeps its progress.
                if fresh {
                    if let Err(e) = self.store.put_media(&record) {
                        tracing::error!(error = %e, "cannot store media record");
                        return Err(RejectReason::Busy);
                    }
                }
                match self.store.insert_message(&msg) {
                    Ok(true) => {
                        self.emit(|| Event::Message {
                            peer: sender.to_string(),
                            message: self.store.view(&self.user, &msg),
                        });
                        delivered.entry(sender).or_default().push(id);
                        self.transfers.start(media_id);
                    }
                    Ok(false) => {}
                    Err(e) => {
                        tracing::error!(error = %e, "cannot store message");
                        return Err(RejectReason::Busy);
                    }
                }
            }
            Ok(Payload::Unknown { kind }) => {
                tracing::info!(%id, %sender, kind, "payload of an unknown kind; acknowledged, not shown");
            }
            Err(e) => {
                tracing::warn!(%id, %sender, error = %e, "invalid payload; dropped");
                return Err(RejectReason::Invalid);
            }
        }
        Ok(())
    }

    /// Takes a newer bundle for a contact, or adds the sender as a contact: the handshake
    /// authenticated them, and replies need their bundle.
    fn learn_bundle(&mut self, bundle: &KeyBundle) {
        let user = bundle.user;
        let updated = match self.contacts.get(&user) {
            Some(c) if c.bundle.created_at_ms() >= bundle.created_at_ms() => return,
            Some(c) => Contact {
                bundle: bundle.clone(),
                ..c.clone()
            },
            None => {
                tracing::info!(%user, "message from a new user; added as a contact");
                Contact {
                    user,
                    name: String::new(),
                    bundle: bundle.clone(),
                    addrs: Vec::new(),
                    added_at_ms: now_ms(),
                }
            }
        };
        if let Err(e) = self.store.put_contact(&updated) {
            tracing::error!(error = %e, "cannot store contact");
        }
        self.contacts.insert(user, updated);
        self.peer(user);
    }

    fn on_presence(&mut self, record: PresenceRecord) {
        let user = record.user;
        if !self.contacts.contains_key(&user) {
            return;
        }
        if let Err(e) = record.verify() {
            tracing::warn!(%user, error = %e, "forged presence record dropped");
            return;
        }
        let state = self.peer(user);
        if state.presence.as_ref().is_some_and(|p| p.seq >= record.seq) {
            return;
        }
        let was_online = state.online;
        state.online = record.online;
        state.last_heard_ms = Some(now_ms());
        state.presence = Some(record);
        if was_online != state.online {
            self.presence_event(&user);
        }
    }

    fn presence_record(&mut self) -> PresenceRecord {
        self.presence_seq = self.presence_seq.max(now_ms()).saturating_add(1);
        let visibility = if self.share_presence {
            Visibility::Everyone
        } else {
            Visibility::Nobody
        };
        PresenceRecord::sign(&self.me, self.presence_seq, now_ms(), true, visibility)
    }

    // ---- events ---------------------------------------------------------------------

    fn on_net(&mut self, ev: NetEvent) {
        match ev {
            NetEvent::Connected(peer) => {
                let Ok(user) = UserId::from_peer_id(peer) else {
                    return;
                };
                if !self.contacts.contains_key(&user) {
                    return;
                }
                let min = self.cfg.min_backoff;
                let state = self.peer(user);
                state.connected = true;
                state.unreachable = false;
                state.dialing_until = None;
                state.backoff = min;
                state.retry_at = None;
                if state.link.is_none() {
                    self.open_link(user);
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
                let was_online = state.online;
                state.online = false;
                // Redial after the first backoff step: a contact we lost may come back.
                state.retry_at = Some(Instant::now() + state.backoff);
                if was_online {
                    self.presence_event(&user);
                }
            }
            NetEvent::DialFailed(peer) => {
                let Ok(user) = UserId::from_peer_id(peer) else {
                    return;
                };
                let max = self.cfg.max_backoff;
                let Some(state) = self.peers.get_mut(&user) else {
                    return;
                };
                if state.connected {
                    return;
                }
                state.dialing_until = None;
                state.unreachable = true;
                state.retry_at = Some(Instant::now() + state.backoff);
                state.backoff = (state.backoff * 2).min(max);
                // The addresses we know may be stale (the peer restarted elsewhere): ask the
                // DHT, at most once per lookup interval.
                let due = state
                    .last_lookup
                    .is_none_or(|t| t.elapsed() >= LOOKUP_INTERVAL);
                if due && !self.cfg.bootstrap.is_empty() {
                    state.last_lookup = Some(Instant::now());
                    let net = self.net.clone();
                    let internal = self.internal_tx.clone();
                    tokio::spawn(async move {
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
                        retry_at: None,
                        backoff: self.cfg.min_backoff,
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

    fn on_link(&mut self, ev: LinkEvent) {
        match ev {
            LinkEvent::Up { peer, generation } => {
                tracing::debug!(%peer, generation, "link up");
            }
            LinkEvent::Answers { peer, frames } => {
                let Ok(user) = UserId::from_peer_id(peer) else {
                    return;
                };
                let mut acked = Vec::new();
                for f in frames {
                    match f {
                        MsgFrame::Ack(ids) => acked.extend(ids),
                        MsgFrame::Reject(id, reason) => self.on_rejected(user, id, reason),
                        other => {
                            tracing::debug!(%peer, ?other, "unexpected frame on outbound link")
                        }
                    }
                }
                if !acked.is_empty() {
                    self.on_acked(user, acked);
                }
            }
            LinkEvent::Down { peer, generation } => {
                let Ok(user) = UserId::from_peer_id(peer) else {
                    return;
                };
                let max = self.cfg.max_backoff;
                let Some(state) = self.peers.get_mut(&user) else {
                    return;
                };
                if state.link.as_ref().map(|l| l.generation) != Some(generation) {
                    return;
                }
                state.link = None;
                state.unreachable = !state.connected;
                state.requeue_in_flight();
                state.retry_at = Some(Instant::now() + state.backoff);
                state.backoff = (state.backoff * 2).min(max);
                // A new stream must start with a fresh session: the peer may not have opened
                // the last messages of the old one.
                if let Some(s) = self.sessions.get_mut(&user) {
                    s.forget_outbound();
                }
            }
            LinkEvent::Inbound {
                peer,
                frames,
                reply,
            } => self.on_inbound(peer, frames, reply),
        }
    }

    /// Publishes our key bundle in the DHT, so people can add us by user id alone; at most
    /// once per [`PUBLISH_INTERVAL`].
    fn maybe_publish_bundle(&mut self) {
        if self
            .last_publish
            .is_some_and(|t| t.elapsed() < PUBLISH_INTERVAL)
        {
            return;
        }
        let Ok(value) = kith_protocol::codec::encode(&self.me.bundle()) else {
            return;
        };
        self.last_publish = Some(Instant::now());
        self.net.put_record(bundle_record_key(&self.user), value);
    }

    fn on_internal(&mut self, ev: Internal) {
        match ev {
            Internal::Committed(ids) => {
                let mut users = HashSet::new();
                for id in ids {
                    if let Some(entry) = self.outbox.get(&id) {
                        let to = entry.to;
                        self.peer(to).queue.push_back(id);
                        users.insert(to);
                    }
                }
                for u in users {
                    self.pump(u);
                }
            }
            Internal::BundleFound {
                bundle,
                user,
                name,
                reply,
            } => {
                let Some(bundle) = bundle else {
                    let _ = reply.send(Err(NodeError::NotFound(format!(
                        "no key bundle for {user} in the DHT"
                    ))));
                    return;
                };
                match self.add_contact_bundle(*bundle, Vec::new(), name) {
                    Ok(view) => self.reply_after_commit(reply, view, Vec::new()),
                    Err(e) => {
                        let _ = reply.send(Err(e));
                    }
                }
            }
            Internal::RetryMailbox(ids) => {
                let mut give_up = Vec::new();
                for id in ids {
                    let tries = self.unopened.entry(id).or_insert(0);
                    *tries += 1;
                    if *tries > MAX_MAILBOX_REFETCH {
                        give_up.push(id);
                    }
                }
                if !give_up.is_empty() {
                    // Still unopenable after several fetches: not a late session, a bad
                    // envelope. Stop it from being pushed again.
                    tracing::warn!(
                        n = give_up.len(),
                        "mailbox messages that never open; deleted"
                    );
                    for id in &give_up {
                        self.unopened.remove(id);
                    }
                    let deletes =
                        batch::split(give_up.iter().copied(), BatchLimit::frame(MAX_DELETE_IDS));
                    for store in self.my_stores() {
                        if let Some(link) = self.stores.get(&store).and_then(|s| s.link.as_ref()) {
                            for ids in &deletes.batches {
                                let _ = link.tx.try_send(MailboxRequest::Delete(ids.clone()));
                            }
                        }
                    }
                }
                if self.unopened.len() > MAX_UNOPENED {
                    self.unopened.clear();
                }
                if !self.unopened.is_empty() && self.refetch_at.is_none() {
                    self.refetch_at = Some(Instant::now() + MAILBOX_REFETCH_DELAY);
                }
            }
            Internal::Found(user, addrs) => {
                tracing::debug!(%user, n = addrs.len(), "DHT found addresses");
                if let Some(c) = self.contacts.get_mut(&user) {
                    for a in &addrs {
                        let bytes = a.to_vec();
                        if !c.addrs.contains(&bytes) {
                            c.addrs.insert(0, bytes);
                        }
                    }
                    c.addrs.truncate(crate::invite::MAX_ADDRS);
                    let _ = self.store.put_contact(c);
                }
                let state = self.peer(user);
                state.retry_at = None;
                state.dialing_until = Some(Instant::now() + DIAL_TIMEOUT);
                self.net.dial(user.peer_id(), addrs);
            }
        }
    }

    fn on_maintenance(&mut self) {
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

    fn on_heartbeat(&mut self) {
        let my_stores = self.my_stores();
        self.transfers.set_mailbox_stores(my_stores.clone());
        let record = self.presence_record();
        for state in self.peers.values() {
            if let Some(link) = &state.link {
                let _ = link.tx.try_send(MsgFrame::Presence(record.clone()));
            }
        }
        // Readers ask the R store peers nearest to us for our last seen, so heartbeats go to
        // those R only; the wider 2R set we fetch our mailbox from just keeps its links.
        for (rank, store) in my_stores.into_iter().enumerate() {
            let link = self
                .stores
                .get(&store)
                .and_then(|s| s.link.as_ref())
                .filter(|l| !l.tx.is_closed());
            match link {
                Some(link) => {
                    if rank < self.cfg.replication {
                        let _ = link.tx.try_send(MailboxRequest::Presence(record.clone()));
                    }
                }
                // The link is gone (the store peer restarted, or dropped the stream on
                // arrival): open it again, which subscribes again and sends our presence.
                None => {
                    let due = self
                        .stores
                        .get(&store)
                        .is_some_and(|s| s.retry_at.is_none_or(|t| t <= Instant::now()));
                    if due {
                        self.store_link(store);
                    }
                }
            }
        }
        // Last seen of contacts we cannot hear directly comes from their store peers.
        if self.share_presence {
            let offline: Vec<UserId> = self
                .contacts
                .keys()
                .filter(|u| !self.peers.get(u).is_some_and(|s| s.connected))
                .copied()
                .collect();
            for user in offline {
                let set = self.store_set(&user, self.cfg.replication);
                let link = set
                    .iter()
                    .find_map(|p| self.stores.get(p).and_then(|s| s.link.as_ref()))
                    .map(|l| l.tx.clone());
                match link {
                    Some(tx) => {
                        let _ = tx.try_send(MailboxRequest::GetPresence(user));
                    }
                    None => {
                        if let Some(first) = set.first().copied() {
                            self.store_link(first);
                        }
                    }
                }
            }
        }
    }

    // ---- store-and-forward ------------------------------------------------------------

    /// The `r` known store peers closest to `user` (its mailbox set).
    fn store_set(&self, user: &UserId, r: usize) -> Vec<PeerId> {
        closest_peers(&user.peer_id(), self.stores.keys().copied(), r)
    }

    /// The store peers we fetch our own mailbox from: our set, and as many again beyond it,
    /// which still hold messages deposited before the set last changed.
    fn my_stores(&self) -> Vec<PeerId> {
        self.store_set(&self.user, self.cfg.replication * 2)
    }

    /// Opens links to our mailbox's store peers (each subscribes on open).
    fn subscribe_mailbox(&mut self) {
        self.transfers.set_mailbox_stores(self.my_stores());
        for store in self.my_stores() {
            self.store_link(store);
        }
    }

    /// The link to a store peer, opened if needed; a link to one of our own store peers
    /// subscribes to our mailbox and carries our heartbeats.
    fn store_link(&mut self, store: PeerId) -> Option<mpsc::Sender<MailboxRequest>> {
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
        link::spawn_stream_link(
            store,
            libp2p::StreamProtocol::new(MAILBOX_PROTOCOL),
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
            subscribed = tx.try_send(MailboxRequest::Subscribe).is_ok();
            let _ = tx.try_send(MailboxRequest::Presence(record));
        }
        let state = self.stores.get_mut(&store)?;
        state.link = Some(ActiveStoreLink {
            generation,
            tx: tx.clone(),
            subscribed,
        });
        Some(tx)
    }

    /// Seals what is queued for an unreachable `user` and deposits it on their mailbox set.
    fn deposit_queue(&mut self, user: UserId) {
        let set = self.store_set(&user, self.cfg.replication);
        // W copies, unless the whole network has fewer store peers than that (a single
        // operator's store peer): then every store peer there is.
        let needed = self
            .cfg
            .write_quorum
            .min(self.cfg.replication)
            .min(self.stores.len())
            .max(1);
        if set.len() < needed {
            tracing::debug!(%user, known = set.len(), needed, "not enough store peers known to deposit yet");
            return;
        }
        let links: Vec<mpsc::Sender<MailboxRequest>> =
            set.iter().filter_map(|p| self.store_link(*p)).collect();
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
                if l.try_send(MailboxRequest::Deposit(envelope.clone()))
                    .is_ok()
                {
                    sent += 1;
                }
            }
            if sent < needed {
                state.queue.push_front(id);
                break;
            }
            self.deposits.insert(
                id,
                DepositState {
                    to: user,
                    acks: HashSet::new(),
                    needed,
                    asked: sent,
                    too_large: HashSet::new(),
                },
            );
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

    /// A media message went to store peers: its blob must follow it there (unless it is
    /// already on its way), or the recipient could not fetch it while we are away.
    fn upload_media_of(&mut self, id: MessageId, to: UserId, stores: &[PeerId]) {
        let Ok(Some(msg)) = self.store.message(Direction::Outgoing, &to, &id) else {
            return;
        };
        let Some(hash) = msg.media else {
            return;
        };
        let media_id = MediaId::of_message(&msg);
        match self.store.media(&media_id) {
            Ok(Some(mut rec)) if rec.outgoing && rec.holders.is_empty() => {
                rec.state = MediaState::Uploading;
                rec.done_chunks = 0;
                rec.holders = stores.iter().map(|p| p.to_bytes()).collect();
                if let Err(e) = self.store.put_media(&rec) {
                    tracing::error!(error = %e, "cannot store media record");
                    return;
                }
                tracing::info!(%hash, "recipient away: uploading the media to its store peers");
                self.transfers.start(media_id);
            }
            Ok(_) => {}
            Err(e) => tracing::error!(error = %e, "cannot read media record"),
        }
    }

    fn on_store(&mut self, ev: StoreEvent) {
        let StoreEvent {
            store,
            generation,
            signal,
        } = ev;
        match signal {
            LinkSignal::Up => {
                tracing::debug!(%store, "store link up");
                let min = self.cfg.min_backoff;
                if let Some(s) = self.stores.get_mut(&store) {
                    s.backoff = min;
                    s.retry_at = None;
                }
            }
            LinkSignal::Down => {
                let max = self.cfg.max_backoff;
                if let Some(s) = self.stores.get_mut(&store) {
                    if s.link.as_ref().map(|l| l.generation) == Some(generation) {
                        s.link = None;
                        s.retry_at = Some(Instant::now() + s.backoff);
                        s.backoff = (s.backoff * 2).min(max);
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

    fn on_deposit_stored(&mut self, store: PeerId, id: MessageId) {
        let Some(d) = self.deposits.get_mut(&id) else {
            return;
        };
        d.acks.insert(store);
        if d.acks.len() >= d.needed {
            let to = d.to;
            self.deposits.remove(&id);
            tracing::debug!(%id, %to, "deposit held by W store peers");
            self.on_acked(to, vec![id]);
        }
    }

    fn on_deposit_refused(&mut self, store: PeerId, id: MessageId, reason: RefuseReason) {
        tracing::warn!(%store, %id, ?reason, "store peer refused deposit");
        match reason {
            RefuseReason::TooLarge => {
                let Some(d) = self.deposits.get_mut(&id) else {
                    return;
                };
                d.too_large.insert(store);
                if d.asked.saturating_sub(d.too_large.len()) >= d.needed {
                    // Enough of the others may still hold it.
                    return;
                }
                // Not W store peers will hold it: it must not become ✓ through them, nor be
                // dropped. It stays pending and waits for a direct link to the recipient
                // (whose node accepts any envelope up to MAX_ENVELOPE_LEN).
                let to = d.to;
                self.deposits.remove(&id);
                tracing::warn!(%id, %to, "store peers refuse this message as too large; it stays pending until the recipient is reachable directly");
                let state = self.peer(to);
                state.ack(&id);
                state.direct_only.insert(id);
                state.queue.push_back(id);
            }
            RefuseReason::Malformed | RefuseReason::Expired => {
                if let Some(d) = self.deposits.remove(&id) {
                    self.peer(d.to).ack(&id);
                    if let Some(entry) = self.outbox.remove(&id) {
                        let _ = self.store.outbox_remove(&entry);
                    }
                }
            }
            // Quota and rate refusals: the entry stays in flight and is deposited again after
            // the ack timeout.
            RefuseReason::MailboxFull | RefuseReason::RateLimited | RefuseReason::NotAStore => {}
        }
    }

    /// Envelopes from our mailbox: received like direct ones; once they are durable here,
    /// every store peer of ours is asked to delete them, each named by id and digest (so
    /// deleting one envelope never deletes another that reuses its id).
    fn on_mailbox_deliver(&mut self, store: PeerId, envs: Vec<Envelope>) {
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
        let (reply, answer) = oneshot::channel();
        self.receive_batch(store, frames, move |outcomes| {
            let _ = reply.send(outcomes);
        });
        let internal = self.internal_tx.clone();
        let links: Vec<mpsc::Sender<MailboxRequest>> = self
            .my_stores()
            .iter()
            .filter_map(|p| {
                self.stores
                    .get(p)
                    .and_then(|s| s.link.as_ref())
                    .map(|l| l.tx.clone())
            })
            .collect();
        tokio::spawn(async move {
            // The answer comes after the commit, one outcome per envelope in order. Delete
            // what is stored here (or was already), and what can never be delivered; keep
            // what could not be opened *yet* (e.g. a message whose session's first message
            // is still on its way).
            let Ok(outcomes) = answer.await else { return };
            let mut done = Vec::new();
            let mut not_yet = Vec::new();
            for (r, (_, outcome)) in refs.into_iter().zip(outcomes) {
                let Some(r) = r else { continue };
                match outcome {
                    Ok(()) | Err(RejectReason::Expired | RejectReason::Misaddressed) => {
                        done.push(r)
                    }
                    Err(_) => not_yet.push(r),
                }
            }
            if !not_yet.is_empty() {
                let _ = internal.send(Internal::RetryMailbox(not_yet)).await;
            }
            for ids in batch::split(done, BatchLimit::frame(MAX_DELETE_IDS)).batches {
                for l in &links {
                    let _ = l.send(MailboxRequest::Delete(ids.clone())).await;
                }
            }
        });
    }

    fn on_stored_presence(&mut self, record: PresenceRecord) {
        let user = record.user;
        if !self.contacts.contains_key(&user) || record.verify().is_err() {
            return;
        }
        let state = self.peer(user);
        if state.presence.as_ref().is_some_and(|p| p.seq >= record.seq) {
            return;
        }
        state.presence = Some(record);
    }
}
