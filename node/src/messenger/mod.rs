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
//!
//! # Layout
//!
//! The decisions live in pure parts that own their state, take `now` (and the RNG) as
//! arguments and return what should happen; they never touch a channel, the store or the
//! clock, and are tested synchronously:
//! - `outbox`: unsettled entries, expiry, resends after the receipt timeout (`Outbox`);
//! - `peers`: per-peer queues, in-flight window and ack timeout (`PeerState`);
//! - `retry`: dial and store-link backoff (`Retry`);
//! - `presence`: heartbeats, online grace, last seen (`Seen`);
//! - `deposits`: W-of-R counting of store-peer answers (`Deposits`);
//! - `unopened`: mailbox envelopes that cannot be opened yet (`Unopened`);
//! - `sessions`: sessions by peer and who owns each inbound one (`Sessions`);
//! - `contacts`: merging what we learn into a contact (`merged_contact`);
//! - `requests`: who may write without being a contact, and who is blocked (`Requests`).
//!
//! The actor shell is this module and [`shell`]: it owns the channels, the store handle, the
//! clock and the RNG, routes commands and events to the parts, and carries their answers out
//! to the I/O (`shell/<part>.rs` acts on `<part>`'s decisions; `shell/inbox`, `mailbox` and
//! `media` have no pure part of their own yet). Only the shell calls from one part into
//! another; a part never imports the shell (`scripts/module-cycles.py` checks). Every task it
//! starts (links, commit waits, lookups, the event `gate`) is owned by it and ended when it
//! stops.

use std::{
    collections::{HashMap, HashSet, VecDeque},
    time::{Duration, Instant},
};

use kith_protocol::{
    batch::{self, BatchLimit},
    blob::{BlobHash, BlobLayout},
    mailbox::{EnvelopeRef, MailboxRequest, MailboxResponse, RefuseReason, MAX_DELETE_IDS},
    payload::{self, MediaRef, Receipt, ReceiptKind, Text},
    seal::{open_handshake, OpenError, SessionId},
    wire::{MsgFrame, RejectReason, MAX_ACK_IDS},
    DeliveryStatus, Envelope, EnvelopeHeader, KeyBundle, LocalIdentity, MessageId, Payload,
    PeerSessions, Plaintext, PresenceRecord, SessionPolicy, UserId, Visibility,
};
use libp2p::PeerId;
use rand::{rngs::StdRng, SeedableRng};
use tokio::{
    sync::{broadcast, mpsc, oneshot},
    task::{JoinHandle, JoinSet},
};
use tokio_util::sync::CancellationToken;

mod contacts;
mod deposits;
mod gate;
mod internal;
mod mailbox_choice;
mod outbox;
mod peers;
mod presence;
mod requests;
mod retry;
mod sessions;
mod shell;
mod unopened;

pub(crate) use self::internal::{Inputs, Internal, StoreEvent};
pub(in crate::messenger) use self::shell::inbox::BatchEffects;
use self::{
    contacts::bundle_record_key,
    deposits::Deposits,
    gate::event_gate,
    mailbox_choice::MailboxChoice,
    outbox::Outbox,
    peers::{PeerState, DIAL_TIMEOUT, MAX_KNOWN_STORES},
    presence::{CONTACT_REFRESH_INTERVALS, ONLINE_GRACE_REFRESHES},
    requests::Requests,
    sessions::Sessions,
    shell::{access::DepositNet, mailbox::StoreState},
    unopened::Unopened,
};
use crate::{
    error::NodeError,
    event::Event,
    handle::Command,
    invite::Invite,
    link::{self, LinkEvent, LinkSignal},
    media::{MediaId, MediaRecord, MediaState},
    net::{NetEvent, Network},
    store::{Contact, Direction, OutboxEntry, Store, StoreError, StoredMessage},
    time::{now_ms, rfc3339},
    transfer::TransferHandle,
    view::{ContactView, Me, PresenceView, Sent},
    Config,
};

/// Most reports from the messenger's own tasks (commit waits, DHT lookups) waiting to be
/// handled.
const INTERNAL_QUEUE: usize = 1024;

/// Most store-peer link events waiting to be handled (every deposit answer is one).
const STORE_EVENT_QUEUE: usize = 4096;

/// A deposit identity's connections close after this long unused.
const DEPOSIT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// Longest the messenger waits at shutdown for its aborted tasks to end.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(1);

/// What became of one received envelope: `Ok` means "acknowledge it". Shared by the inbox
/// (which answers with it) and the unopened-envelope part (which sorts by it).
pub(crate) type Outcome = (MessageId, Result<(), RejectReason>);

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
    /// is durable (see [`event_gate`]).
    durable_events: mpsc::Sender<Event>,
    link_tx: mpsc::Sender<LinkEvent>,
    internal_tx: mpsc::Sender<Internal>,
    contacts: HashMap<UserId, Contact>,
    /// Strangers who wrote first (pending requests) and blocked users.
    requests: Requests,
    /// Every peer's sessions, loaded from the store on first use.
    sessions: Sessions,
    /// Unsettled outgoing entries, and which wait for their delivered receipt.
    outbox: Outbox,
    peers: HashMap<UserId, PeerState>,
    /// The user's settings in effect (loaded from `meta`, written by `shell/settings`).
    settings: crate::settings::Settings,
    presence_seq: u64,
    /// Heartbeats since contacts last heard a record from us (see
    /// [`CONTACT_REFRESH_INTERVALS`]).
    beats_since_contacts: u32,
    policy: SessionPolicy,
    rng: StdRng,
    cancel: CancellationToken,
    next_generation: u64,
    /// Known store-and-forward peers (they advertise `/kith/mailbox/1`).
    stores: HashMap<PeerId, StoreState>,
    store_tx: mpsc::Sender<StoreEvent>,
    store_rx: Option<mpsc::Receiver<StoreEvent>>,
    /// Deposits waiting for W store peers to hold them.
    deposits: Deposits,
    /// When our key bundle was last published in the DHT.
    last_publish: Option<Instant>,
    /// Mailbox envelopes that could not be opened yet, and when to fetch them again.
    unopened: Unopened,
    /// The tasks the messenger started that are not links (the event gate, commit waits,
    /// DHT lookups): ended with it.
    tasks: JoinSet<()>,
    /// Starts media uploads and downloads.
    transfers: TransferHandle,
    /// Our mailbox access key (given to contacts; store peers hold its verifier).
    access_key: kith_protocol::MailboxAccessKey,
    /// The store peers we named for our mailbox.
    choice: MailboxChoice,
    /// The ephemeral identity deposits go through, once started.
    deposit_net: Option<DepositNet>,
    /// A deposit identity is being started.
    deposit_net_starting: bool,
    /// Our group messages' copies still in the outbox: transport id → (group, message id).
    group_sends: HashMap<MessageId, (kith_protocol::GroupId, MessageId)>,
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
        let (internal_tx, internal_rx) = mpsc::channel(INTERNAL_QUEUE);
        let (store_tx, store_rx) = mpsc::channel(STORE_EVENT_QUEUE);
        let user = me.user_id();
        let mut tasks = JoinSet::new();
        let (durable_events, gate) = event_gate(store.clone(), events.clone());
        tasks.spawn(gate);
        let mut m = Messenger {
            user,
            me,
            net,
            events,
            durable_events,
            link_tx,
            internal_tx,
            contacts: HashMap::new(),
            requests: Requests::new(
                store.requests()?,
                store.blocked()?.into_iter().map(|(u, _)| u),
            ),
            sessions: Sessions::default(),
            outbox: Outbox::default(),
            peers: HashMap::new(),
            settings: crate::settings::Settings::defaults(&cfg),
            presence_seq: now_ms(),
            beats_since_contacts: CONTACT_REFRESH_INTERVALS,
            policy: SessionPolicy::default(),
            rng: StdRng::from_entropy(),
            cancel,
            next_generation: 0,
            stores: HashMap::new(),
            store_tx,
            store_rx: Some(store_rx),
            deposits: Deposits::default(),
            last_publish: None,
            unopened: Unopened::default(),
            tasks,
            transfers,
            access_key: kith_protocol::MailboxAccessKey([0; 32]),
            choice: MailboxChoice::default(),
            deposit_net: None,
            deposit_net_starting: false,
            group_sends: HashMap::new(),
            cfg,
            store,
        };
        m.init_access()?;
        m.load_settings()?;
        for c in m.store.contacts()? {
            m.peers
                .insert(c.user, PeerState::new(m.cfg.min_backoff, m.cfg.max_backoff));
            m.contacts.insert(c.user, c);
        }
        for entry in m.store.outbox_all()? {
            if entry.plaintext.payload.kind == payload::kind::GROUP_MESSAGE {
                if let Ok(Payload::GroupMessage(g)) = entry.plaintext.payload.decode() {
                    m.group_sends.insert(entry.id, (g.group, g.id));
                }
            }
            m.peer(entry.to).queue.push_back(entry.id);
            m.outbox.insert(entry);
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
        let (min, max) = (self.cfg.min_backoff, self.cfg.max_backoff);
        self.peers
            .entry(user)
            .or_insert_with(|| PeerState::new(min, max))
    }

    /// Runs until cancelled.
    pub(crate) async fn run(mut self, mut inputs: Inputs, mut internal: mpsc::Receiver<Internal>) {
        let mut maintenance =
            tokio::time::interval(self.cfg.maintenance_tick.max(Duration::from_millis(10)));
        maintenance.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut heartbeat = tokio::time::interval(self.cfg.heartbeat);
        heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Connect to every contact (presence, and anything left in the outbox).
        let users: Vec<UserId> = self.contacts.keys().copied().collect();
        for u in users {
            if self.ensure_link(u) {
                self.pump(u);
            }
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
                Some(done) = self.tasks.join_next(), if !self.tasks.is_empty() => {
                    if let Err(e) = done {
                        if e.is_panic() {
                            tracing::error!(error = %e, "messenger task panicked");
                        }
                    }
                }
            }
        }
        self.stop_tasks().await;
        if let Err(e) = self.store.flush_now() {
            tracing::error!(error = %e, "flush at shutdown failed");
        }
        tracing::debug!("messenger stopped");
    }

    /// Ends every task the messenger started: links (their tokens are children of the
    /// cancelled one, so they are already ending), commit waits, lookups and the event gate.
    async fn stop_tasks(&mut self) {
        let links: Vec<JoinHandle<()>> = self
            .peers
            .values_mut()
            .filter_map(|p| p.link.take().map(|l| l.task))
            .chain(
                self.stores
                    .values_mut()
                    .filter_map(|s| s.link.take().map(|l| l.task)),
            )
            .collect();
        for task in &links {
            task.abort();
        }
        self.tasks.abort_all();
        // Aborted tasks end at their next await; waiting for that is bounded so a task
        // stuck in a long poll cannot hold up the node's shutdown.
        let tasks = &mut self.tasks;
        let ended = async move {
            for task in links {
                let _ = task.await;
            }
            while tasks.join_next().await.is_some() {}
        };
        if tokio::time::timeout(SHUTDOWN_GRACE, ended).await.is_err() {
            tracing::warn!(
                "messenger tasks still ending after {SHUTDOWN_GRACE:?}; left to the runtime"
            );
        }
    }

    /// Once everything written so far is durable, reports `durable` back to the messenger
    /// and then calls `then` with the commit's result (also on failure, without the
    /// report). The wait is one of the messenger's tasks.
    fn when_durable(
        &mut self,
        then: impl FnOnce(Result<(), StoreError>) + Send + 'static,
        durable: Internal,
    ) {
        let commit = self.store.commit();
        let internal = self.internal_tx.clone();
        self.tasks.spawn(async move {
            let result = commit.await;
            if result.is_ok() {
                let _ = internal.send(durable).await;
            }
            then(result);
        });
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
                self.tasks.spawn(async move {
                    let values = net.get_record(bundle_record_key(&user)).await;
                    let bundle = contacts::newest_bundle(&values, &user);
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
                self.reply_released(reply, result);
            }
            Command::SendText {
                to,
                text,
                client_meta,
                reply,
            } => {
                let sent = self
                    .accept_if_request(to)
                    .and_then(|release| Ok((self.send_text(to, text, client_meta)?, release)));
                self.reply_released(reply, sent);
            }
            Command::SendMedia { to, media, reply } => {
                let sent = self
                    .accept_if_request(to)
                    .and_then(|release| Ok((self.send_media(to, *media)?, release)));
                self.reply_released(reply, sent);
            }
            Command::MarkRead { peer, reply } => match self.mark_read(peer) {
                Ok((n, receipts)) => self.reply_after_commit(reply, n, receipts),
                Err(e) => {
                    let _ = reply.send(Err(e));
                }
            },
            Command::Presence { peer, reply } => {
                let _ = reply.send(self.presence_view(&peer));
            }
            Command::DeleteMessage { chat, id, reply } => self.delete_for_me(chat, id, reply),
            Command::Typing {
                peer,
                typing,
                reply,
            } => {
                let _ = reply.send(self.send_typing(peer, typing));
            }
            cmd @ (Command::CreateGroup { .. }
            | Command::ChangeGroup { .. }
            | Command::SendGroupText { .. }
            | Command::SendGroupMedia { .. }
            | Command::MarkGroupRead { .. }) => self.on_group_command(cmd),
            cmd @ (Command::AcceptRequest { .. }
            | Command::Block { .. }
            | Command::Unblock { .. }
            | Command::RemoveContact { .. }) => self.on_request_command(cmd),
            cmd @ (Command::Settings { .. }
            | Command::SetSettings { .. }
            | Command::SetVerified { .. }) => self.on_settings_command(cmd),
        }
    }

    /// Answers `reply` with `value` once everything written so far is durable, then lets the
    /// outbox entries `release` leave.
    fn reply_after_commit<T: Send + 'static>(
        &mut self,
        reply: oneshot::Sender<Result<T, NodeError>>,
        value: T,
        release: Vec<MessageId>,
    ) {
        self.when_durable(
            move |result| {
                let _ = reply.send(result.map(|_| value).map_err(store_err));
            },
            Internal::Committed {
                release,
                deletes: Vec::new(),
            },
        );
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
                    self.pump(user);
                }
            }
            LinkEvent::Down { peer, generation } => {
                let Ok(user) = UserId::from_peer_id(peer) else {
                    return;
                };
                let Some(state) = self.peers.get_mut(&user) else {
                    return;
                };
                if state.link.as_ref().map(|l| l.generation) != Some(generation) {
                    return;
                }
                state.link_down(Instant::now());
                // A new stream must start with a fresh session: the peer may not have opened
                // the last messages of the old one.
                self.sessions.forget_outbound(&user);
            }
            LinkEvent::Inbound {
                peer,
                frames,
                reply,
            } => self.on_inbound(peer, frames, reply),
        }
    }

    fn on_internal(&mut self, ev: Internal) {
        match ev {
            Internal::Committed { release, deletes } => {
                self.delete_from_my_stores(deletes);
                let mut users = HashSet::new();
                for id in release {
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
                let result = self.add_contact_bundle(*bundle, Vec::new(), name);
                self.reply_released(reply, result);
            }
            Internal::Found(user, addrs) => {
                tracing::debug!(%user, n = addrs.len(), "DHT found addresses");
                if !self.contacts.contains_key(&user) {
                    // Removed or blocked while the lookup ran: nothing to dial.
                    return;
                }
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
                state.retry.allow_now();
                state.dialing_until = Some(Instant::now() + DIAL_TIMEOUT);
                self.net.dial(user.peer_id(), addrs);
            }
            Internal::BundleRefreshed { user, bundle } => {
                if let Some(bundle) = bundle {
                    self.learn_bundle(&bundle);
                    self.pump(user);
                }
            }
            ev @ (Internal::DepositNetUp { .. }
            | Internal::DepositNetFailed
            | Internal::DepositConnection { .. }) => self.on_deposit_net(ev),
        }
    }
}
