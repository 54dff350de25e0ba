//! The store-and-forward service: holds sealed envelopes for offline users on
//! `/kith/mailbox/1`, pushes them to their owner, keeps presence records, and repairs
//! replication when store peers come and go.
//!
//! One task (the [`StorePeer`] actor) owns the subscriptions, rate limits, presence table and
//! replication bookkeeping; each inbound stream has a reader that forwards requests to it and
//! a writer that sends its answers. Answers that promise durability (`Stored`, `Replicated`)
//! leave only after the group commit that covers them.

use std::{
    collections::{HashMap, HashSet},
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use kith_net::{
    accept::{self, Inbound},
    clock::now_ms,
    outbound::LinkSignal,
    protocols::MAILBOX,
    swarm::{NetEvent, Network},
};
use kith_protocol::{
    batch::{self, BatchLimit},
    mailbox::{EnvelopeRef, MailboxRequest, MailboxResponse, RefuseReason, MAX_BATCH},
    Envelope, EnvelopeDigest, MessageId, UserId,
};
use libp2p::PeerId;
use tokio::{sync::mpsc, task::JoinHandle};
use tokio_util::sync::CancellationToken;

mod access;
mod batches;
mod config;
mod input;
mod paging;
mod presence;
mod replication;
mod streams;

pub use self::config::StoreConfig;
use self::{
    batches::report_oversized, input::Input, paging::Paging, presence::HeldPresence,
    streams::serve_stream,
};
use crate::{
    mailboxes::{Deposit, Mailboxes, Quota},
    metrics::Metrics,
    rates::{PeerLimiter, Rate},
    registrations::Registrations,
};

/// Depth of the queue into the store peer actor (requests from every stream, link signals,
/// commits done).
pub const ACTOR_QUEUE: usize = 4096;

/// How often subscriptions still paging through a mailbox send their next page (when their
/// stream has room).
const PAGE_INTERVAL: Duration = Duration::from_millis(5);

struct ReplicaLink {
    generation: u64,
    tx: mpsc::Sender<MailboxRequest>,
    task: JoinHandle<()>,
}

/// The store-and-forward actor.
pub struct StorePeer {
    cfg: StoreConfig,
    /// This peer as a user id (what registrations name); `None` for a non-Ed25519 key, which
    /// can never be named and so holds nothing.
    local_user: Option<UserId>,
    registrations: Registrations,
    mailboxes: Mailboxes,
    net: Network,
    metrics: Arc<Metrics>,
    inputs: mpsc::Sender<Input>,
    subscribers: HashMap<UserId, Vec<(u64, mpsc::Sender<MailboxResponse>)>>,
    /// Subscriptions still being sent what their mailbox held, a page at a time (by stream).
    paging: HashMap<u64, Paging>,
    /// Envelope bytes queued and not yet written, per stream (entries go with their stream).
    queued: HashMap<u64, Arc<AtomicUsize>>,
    deposit_rate: PeerLimiter,
    subscribe_rate: PeerLimiter,
    delete_rate: PeerLimiter,
    presence: HeldPresence,
    stores: HashSet<PeerId>,
    replica_links: HashMap<PeerId, ReplicaLink>,
    /// What each other store peer confirmed holding (by envelope identity: the recipient is
    /// covered by the digest).
    replicated: HashMap<PeerId, HashSet<EnvelopeRef>>,
    next_generation: u64,
    cancel: CancellationToken,
}

/// Why the store service could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SpawnError {
    /// The mailbox protocol could not be served.
    #[error(transparent)]
    Net(#[from] kith_net::NetError),
    /// The mailbox registrations could not be read.
    #[error("mailbox registrations: {0}")]
    Registrations(#[from] sled::Error),
}

/// Starts the store service on `net`; returns its task.
pub fn spawn(
    cfg: StoreConfig,
    mailboxes: Mailboxes,
    net: Network,
    mut net_events: mpsc::Receiver<NetEvent>,
    known_stores: Vec<PeerId>,
    metrics: Arc<Metrics>,
    cancel: CancellationToken,
) -> Result<tokio::task::JoinHandle<()>, SpawnError> {
    let mut control = net.control();
    let (tx, mut rx) = mpsc::channel::<Input>(ACTOR_QUEUE);
    let registrations = Registrations::open(mailboxes.db(), cfg.max_registrations)?;
    metrics.deposit_log.keep(cfg.record_deposits);
    let mut actor = StorePeer {
        local_user: UserId::from_peer_id(net.local_peer_id()).ok(),
        registrations,
        presence: HeldPresence::new(cfg.presence_capacity, cfg.presence_ttl),
        stores: known_stores.into_iter().collect(),
        paging: HashMap::new(),
        queued: HashMap::new(),
        deposit_rate: PeerLimiter::new(Rate {
            per_peer_per_minute: cfg.limits.deposits_per_minute,
            per_ip_per_minute: cfg.limits.deposits_per_ip_per_minute,
            max_keys: cfg.rates.max_deposit_keys,
        }),
        subscribe_rate: PeerLimiter::new(cfg.rates.subscribes),
        delete_rate: PeerLimiter::new(cfg.rates.deletes),
        cfg,
        mailboxes,
        net,
        metrics,
        inputs: tx.clone(),
        subscribers: HashMap::new(),
        replica_links: HashMap::new(),
        replicated: HashMap::new(),
        next_generation: 0,
        cancel: cancel.clone(),
    };
    actor.mailboxes.budget().set_cap(actor.cfg.max_store_bytes);
    actor.update_gauges();
    let stream_queue = actor.cfg.stream_queue;
    let timeouts = actor.cfg.stream_timeouts;
    let inbound = Inbound {
        protocol: MAILBOX,
        max_streams: actor.cfg.max_streams,
        max_streams_per_peer: actor.cfg.max_streams_per_peer.max(1),
    };
    let accept_inputs = tx.clone();
    let mut conn_ids = 0u64;
    let acceptor = accept::spawn_acceptor(
        &mut control,
        inbound,
        cancel.clone(),
        move |peer, stream| {
            conn_ids += 1;
            serve_stream(
                peer,
                conn_ids,
                stream,
                accept_inputs.clone(),
                stream_queue,
                timeouts,
            )
        },
    )?;
    Ok(tokio::spawn(async move {
        let mut repair = tokio::time::interval(actor.cfg.repair_interval);
        let mut expiry = tokio::time::interval(actor.cfg.expiry_interval);
        let mut pages = tokio::time::interval(PAGE_INTERVAL);
        pages.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = cancel.cancelled() => break,
                Some(input) = rx.recv() => actor.on_input(input),
                Some(ev) = net_events.recv() => actor.on_net(ev),
                _ = repair.tick() => actor.repair(),
                _ = expiry.tick() => actor.expire(),
                _ = pages.tick(), if !actor.paging.is_empty() => actor.send_pages(),
            }
        }
        // Nothing reads the actor's queue any more: tasks still sending to it fail at once
        // instead of waiting on a full queue.
        drop(rx);
        let _ = acceptor.await;
        for (_, link) in actor.replica_links.drain() {
            let _ = link.task.await;
        }
        if let Err(e) = actor.mailboxes.flush() {
            tracing::error!(error = %e, "flush at shutdown failed");
        }
        actor.mailboxes.committer().shutdown().await;
    }))
}

impl StorePeer {
    fn on_input(&mut self, input: Input) {
        match input {
            Input::Requests {
                peer,
                conn,
                requests,
                out,
                queued,
            } => {
                self.queued.entry(conn).or_insert(queued);
                self.on_requests(peer, conn, requests, out)
            }
            Input::StreamClosed { peer, conn } => {
                self.paging.remove(&conn);
                self.queued.remove(&conn);
                if let Ok(user) = UserId::from_peer_id(peer) {
                    if let Some(list) = self.subscribers.get_mut(&user) {
                        list.retain(|(c, _)| *c != conn);
                        if list.is_empty() {
                            self.subscribers.remove(&user);
                        }
                    }
                }
            }
            Input::Replica {
                peer,
                generation,
                signal,
            } => match signal {
                LinkSignal::Up => {}
                LinkSignal::Frames(frames) => {
                    let cap = self.cfg.max_replicated_refs;
                    for f in frames {
                        if let MailboxResponse::Replicated(refs) = f {
                            // Bounded: past the cap, more copies are sent again at the next
                            // repair (and merged there as duplicates), never remembered.
                            let done = self.replicated.entry(peer).or_default();
                            let room = cap.saturating_sub(done.len());
                            done.extend(refs.into_iter().take(room));
                        }
                    }
                }
                LinkSignal::Down => {
                    if self.replica_links.get(&peer).map(|l| l.generation) == Some(generation) {
                        self.replica_links.remove(&peer);
                    }
                }
            },
            Input::Committed { answers, pushes } => {
                for (out, answer) in answers {
                    let _ = out.try_send(answer);
                }
                let mut by_user: HashMap<UserId, Vec<Envelope>> = HashMap::new();
                for (u, env) in pushes {
                    by_user.entry(u).or_default().push(env);
                }
                for (u, envs) in by_user {
                    self.push(&u, envs);
                }
            }
        }
    }

    /// Sends `envs` to every live subscriber of `user`'s mailbox, in frames that fit.
    fn push(&self, user: &UserId, envs: Vec<Envelope>) {
        let Some(subs) = self.subscribers.get(user) else {
            return;
        };
        let split = batch::split(envs, BatchLimit::frame(MAX_BATCH));
        let oversized: Vec<MessageId> = split.oversized.iter().map(Envelope::id).collect();
        report_oversized(user, &oversized);
        for chunk in split.batches {
            for (conn, out) in subs {
                self.deliver(*conn, out, chunk.clone());
            }
        }
    }

    /// Queues one `Deliver` to a subscriber; one that cannot take it gets it on its next
    /// subscription (the envelopes stay held until their owner deletes them).
    fn deliver(&self, conn: u64, out: &mpsc::Sender<MailboxResponse>, envs: Vec<Envelope>) {
        let n = envs.len() as u64;
        let frame = MailboxResponse::Deliver(envs);
        let weight = streams::deliver_weight(&frame);
        let Some(queued) = self.queued.get(&conn) else {
            return;
        };
        let fits = queued.fetch_update(Ordering::AcqRel, Ordering::Acquire, |q| {
            q.checked_add(weight)
                .filter(|total| *total <= self.cfg.stream_queue_bytes || q == 0)
        });
        if let Ok(before) = fits {
            self.metrics
                .largest_stream_queue_bytes
                .fetch_max((before + weight) as u64, Ordering::Relaxed);
        } else {
            tracing::debug!(
                n,
                "subscriber's queue holds too many bytes; left for its next subscription"
            );
            return;
        }
        match out.try_send(frame) {
            Ok(()) => {
                self.metrics.fetched.fetch_add(n, Ordering::Relaxed);
            }
            Err(_) => {
                queued.fetch_sub(weight, Ordering::AcqRel);
                tracing::debug!(
                    n,
                    "subscriber's queue full or closed; left for its next subscription"
                );
            }
        }
    }

    /// Counts one request of `peer` against `limiter` (per peer id and per IP address);
    /// false, counted in the metrics, when over its rate.
    fn allowed(&self, limiter: &PeerLimiter, peer: &PeerId) -> bool {
        if limiter.allow(peer, self.net.remote_ip(peer)) {
            return true;
        }
        self.metrics.rate_limited.fetch_add(1, Ordering::Relaxed);
        false
    }

    fn on_requests(
        &mut self,
        peer: PeerId,
        conn: u64,
        requests: Vec<MailboxRequest>,
        out: mpsc::Sender<MailboxResponse>,
    ) {
        let now = now_ms();
        let taken = Instant::now();
        // Deposits answered `Stored` (new or duplicate): each waits for this batch's commit.
        let mut deposits = 0u32;
        let mut answers = Vec::new();
        let mut pushes = Vec::new();
        let mut wrote = false;
        for req in requests {
            match req {
                MailboxRequest::Deposit(env, key) => {
                    let id = env.id();
                    if !self.allowed(&self.deposit_rate, &peer) {
                        self.metrics.reject(RefuseReason::RateLimited);
                        answers.push((
                            out.clone(),
                            MailboxResponse::Refused(id, RefuseReason::RateLimited),
                        ));
                        continue;
                    }
                    let stored = self
                        .admit_deposit(&env.header.recipient, key.as_ref())
                        .and_then(|quota| {
                            let request = matches!(quota, Quota::Requests(_));
                            self.store_one(&env, quota, now).map(|(d, _)| (d, request))
                        });
                    if matches!(stored, Ok((Deposit::Stored, _))) && self.cfg.record_deposits > 0 {
                        let bytes = env.to_bytes().unwrap_or_default();
                        self.log_deposit(peer, env.header.recipient, bytes);
                    }
                    match stored {
                        Ok((Deposit::Stored, request)) => {
                            wrote = true;
                            self.metrics.deposits.fetch_add(1, Ordering::Relaxed);
                            if request {
                                self.metrics.requests.fetch_add(1, Ordering::Relaxed);
                            }
                            pushes.push((env.header.recipient, env));
                            answers.push((out.clone(), MailboxResponse::Stored(id)));
                            deposits += 1;
                        }
                        Ok((Deposit::Duplicate, _)) => {
                            wrote = true;
                            answers.push((out.clone(), MailboxResponse::Stored(id)));
                            deposits += 1;
                        }
                        Err(reason) => {
                            self.metrics.reject(reason);
                            tracing::debug!(%peer, %id, ?reason, "deposit refused");
                            answers.push((out.clone(), MailboxResponse::Refused(id, reason)));
                        }
                    }
                }
                MailboxRequest::Replicate {
                    envelopes,
                    requests,
                } => {
                    let mut refs = Vec::new();
                    let mut admitted = false;
                    let tagged = envelopes
                        .into_iter()
                        .map(|e| (e, false))
                        .chain(requests.into_iter().map(|e| (e, true)));
                    for (env, request) in tagged {
                        if let Err(reason) = self.admit_replica(peer, &env.header.recipient) {
                            self.metrics.reject(reason);
                            answers.push((out.clone(), MailboxResponse::Refused(env.id(), reason)));
                            continue;
                        }
                        admitted = true;
                        let limits = self.cfg.requests_limits.clone();
                        let quota = if request {
                            Quota::Requests(&limits)
                        } else {
                            Quota::Mailbox
                        };
                        match self.store_one(&env, quota, now) {
                            Ok((Deposit::Stored, digest)) => {
                                self.metrics.replicas.fetch_add(1, Ordering::Relaxed);
                                refs.push(EnvelopeRef {
                                    id: env.id(),
                                    digest,
                                });
                                pushes.push((env.header.recipient, env));
                            }
                            Ok((Deposit::Duplicate, digest)) => refs.push(EnvelopeRef {
                                id: env.id(),
                                digest,
                            }),
                            Err(reason) => self.metrics.reject(reason),
                        }
                    }
                    // Nothing admitted wrote nothing: the refusals go at once.
                    wrote |= admitted;
                    answers.push((out.clone(), MailboxResponse::Replicated(refs)));
                }
                MailboxRequest::Register(reg) => {
                    if self.on_register(peer, reg) {
                        wrote = true;
                    }
                }
                MailboxRequest::Subscribe => {
                    let Ok(user) = UserId::from_peer_id(peer) else {
                        continue;
                    };
                    if !self.allowed(&self.subscribe_rate, &peer) {
                        tracing::debug!(%peer, "subscribe over its rate; ignored");
                        continue;
                    }
                    let list = self.subscribers.entry(user).or_default();
                    if !list.iter().any(|(c, _)| *c == conn) {
                        list.push((conn, out.clone()));
                    }
                    // What is held goes a page at a time, as the stream takes it: never the
                    // whole mailbox read (or queued) at once.
                    self.paging.insert(conn, Paging::new(user, out.clone()));
                    self.send_pages_of(conn);
                }
                MailboxRequest::Delete(mut refs) => {
                    // Only the mailbox's owner — the connection's authenticated peer — deletes,
                    // and only the envelopes it names by id and digest.
                    let Ok(owner) = UserId::from_peer_id(peer) else {
                        continue;
                    };
                    if !self.allowed(&self.delete_rate, &peer) {
                        tracing::debug!(%peer, "delete over its rate; ignored");
                        continue;
                    }
                    refs.truncate(self.cfg.max_delete_per_request);
                    let until = now.saturating_add(self.cfg.limits.max_lifetime_ms);
                    match self
                        .mailboxes
                        .delete(&owner, &refs, until, &self.cfg.limits)
                    {
                        Ok(n) => {
                            wrote = true;
                            self.metrics.deleted.fetch_add(n as u64, Ordering::Relaxed);
                        }
                        Err(e) => tracing::error!(error = %e, "cannot delete"),
                    }
                }
                MailboxRequest::Presence(record) => {
                    if record.user.peer_id() != peer {
                        tracing::debug!(%peer, "presence record for another user; ignored");
                        continue;
                    }
                    // The Noise session proved the sender is the record's user (checked
                    // above); readers of the record verify its signature themselves.
                    if self.keep_presence(record, now) {
                        self.metrics.heartbeats.fetch_add(1, Ordering::Relaxed);
                    }
                }
                MailboxRequest::GetPresence(user, key) => {
                    let record = self.shown_presence(&user, key.as_ref());
                    answers.push((out.clone(), MailboxResponse::Presence(user, record)));
                }
            }
        }
        self.update_gauges();
        if !wrote {
            for (o, a) in answers {
                let _ = o.try_send(a);
            }
            return;
        }
        let inputs = self.inputs.clone();
        let latency = self.metrics.latency.deposit.clone();
        self.mailboxes
            .committer()
            .after_commit(move |committed| async move {
                match committed {
                    Ok(()) => {
                        let waited = taken.elapsed().as_secs_f64();
                        for _ in 0..deposits {
                            latency.observe(waited);
                        }
                        let _ = inputs.send(Input::Committed { answers, pushes }).await;
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "commit failed; deposits not acknowledged")
                    }
                }
            });
    }

    /// Stores one envelope; on success also says its digest (of the canonical encoding held).
    fn store_one(
        &self,
        env: &Envelope,
        quota: Quota<'_>,
        now: u64,
    ) -> Result<(Deposit, EnvelopeDigest), RefuseReason> {
        if env.check().is_err() {
            return Err(RefuseReason::Malformed);
        }
        let bytes = env.to_bytes().map_err(|_| RefuseReason::TooLarge)?;
        let digest = EnvelopeDigest::of_bytes(&bytes);
        match self
            .mailboxes
            .deposit(env, &bytes, &self.cfg.limits, quota, now)
        {
            Ok(r) => r.map(|d| (d, digest)),
            Err(e) => {
                tracing::error!(error = %e, "cannot store envelope");
                Err(RefuseReason::MailboxFull)
            }
        }
    }

    fn expire(&mut self) {
        self.deposit_rate.prune();
        self.subscribe_rate.prune();
        self.delete_rate.prune();
        self.presence.expire(now_ms());
        match self.mailboxes.expire(now_ms()) {
            Ok(n) if n > 0 => {
                tracing::info!(n, "expired messages deleted");
                self.metrics.expired.fetch_add(n as u64, Ordering::Relaxed);
            }
            Ok(_) => {}
            Err(e) => tracing::error!(error = %e, "expiry failed"),
        }
        self.update_gauges();
    }

    /// Sets the gauges from the mailboxes' running totals (no per-mailbox copy).
    fn update_gauges(&self) {
        let totals = self.mailboxes.totals();
        let m = &self.metrics;
        m.mailboxes
            .store(totals.mailboxes as u64, Ordering::Relaxed);
        m.stored_messages.store(totals.messages, Ordering::Relaxed);
        m.stored_bytes.store(totals.bytes, Ordering::Relaxed);
        m.tombstones
            .store(totals.tombstones as u64, Ordering::Relaxed);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;
