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
    sync::{atomic::Ordering, Arc},
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
    presence::PresenceTable,
    Envelope, EnvelopeDigest, MessageId, UserId, Visibility,
};
use libp2p::PeerId;
use tokio::{sync::mpsc, task::JoinHandle};
use tokio_util::sync::CancellationToken;

mod batches;
mod input;
mod replication;
mod streams;

use self::{
    batches::{held_batches, report_oversized},
    input::Input,
    streams::serve_stream,
};
use crate::{
    blobs::BlobLimits,
    mailboxes::{Deposit, Limits, Mailboxes},
    metrics::Metrics,
};

/// Depth of the queue into the store peer actor (requests from every stream, link signals,
/// commits done).
pub const ACTOR_QUEUE: usize = 4096;

/// The window `deposits_per_minute` counts deposits in.
const RATE_WINDOW: Duration = Duration::from_secs(60);

/// How a store peer behaves.
#[derive(Clone, Debug)]
pub struct StoreConfig {
    /// Quotas and lifetimes.
    pub limits: Limits,
    /// How many store peers hold each mailbox (R).
    pub replication: usize,
    /// How often to check that every held message has R copies.
    pub repair_interval: Duration,
    /// How often to delete expired messages.
    pub expiry_interval: Duration,
    /// Most users whose presence is kept.
    pub presence_capacity: usize,
    /// Most concurrent mailbox streams.
    pub max_streams: usize,
    /// Depth of each stream's answer queue.
    pub stream_queue: usize,
    /// Limits on media blobs held for offline users.
    pub blobs: BlobLimits,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            limits: Limits::default(),
            replication: 3,
            repair_interval: Duration::from_secs(30),
            expiry_interval: Duration::from_secs(60),
            presence_capacity: 100_000,
            max_streams: 1024,
            stream_queue: 1024,
            blobs: BlobLimits::default(),
        }
    }
}

struct ReplicaLink {
    generation: u64,
    tx: mpsc::Sender<MailboxRequest>,
    task: JoinHandle<()>,
}

/// The store-and-forward actor.
pub struct StorePeer {
    cfg: StoreConfig,
    local: PeerId,
    mailboxes: Mailboxes,
    net: Network,
    metrics: Arc<Metrics>,
    inputs: mpsc::Sender<Input>,
    subscribers: HashMap<UserId, Vec<(u64, mpsc::Sender<MailboxResponse>)>>,
    rate: HashMap<PeerId, (Instant, u32)>,
    presence: PresenceTable,
    stores: HashSet<PeerId>,
    replica_links: HashMap<PeerId, ReplicaLink>,
    /// What each other store peer confirmed holding (by envelope identity: the recipient is
    /// covered by the digest).
    replicated: HashMap<PeerId, HashSet<EnvelopeRef>>,
    next_generation: u64,
    cancel: CancellationToken,
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
) -> Result<tokio::task::JoinHandle<()>, kith_net::NetError> {
    let mut control = net.control();
    let (tx, mut rx) = mpsc::channel::<Input>(ACTOR_QUEUE);
    let mut actor = StorePeer {
        local: net.local_peer_id(),
        presence: PresenceTable::new(cfg.presence_capacity),
        stores: known_stores.into_iter().collect(),
        cfg,
        mailboxes,
        net,
        metrics,
        inputs: tx.clone(),
        subscribers: HashMap::new(),
        rate: HashMap::new(),
        replica_links: HashMap::new(),
        replicated: HashMap::new(),
        next_generation: 0,
        cancel: cancel.clone(),
    };
    actor.update_gauges();
    let stream_queue = actor.cfg.stream_queue;
    let inbound = Inbound {
        protocol: MAILBOX,
        max_streams: actor.cfg.max_streams,
    };
    let accept_inputs = tx.clone();
    let mut conn_ids = 0u64;
    let acceptor = accept::spawn_acceptor(
        &mut control,
        inbound,
        cancel.clone(),
        move |peer, stream| {
            conn_ids += 1;
            serve_stream(peer, conn_ids, stream, accept_inputs.clone(), stream_queue)
        },
    )?;
    Ok(tokio::spawn(async move {
        let mut repair = tokio::time::interval(actor.cfg.repair_interval);
        let mut expiry = tokio::time::interval(actor.cfg.expiry_interval);
        loop {
            tokio::select! {
                _ = cancel.cancelled() => break,
                Some(input) = rx.recv() => actor.on_input(input),
                Some(ev) = net_events.recv() => actor.on_net(ev),
                _ = repair.tick() => actor.repair(),
                _ = expiry.tick() => actor.expire(),
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
            } => self.on_requests(peer, conn, requests, out),
            Input::StreamClosed { peer, conn } => {
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
                    for f in frames {
                        if let MailboxResponse::Replicated(refs) = f {
                            self.replicated.entry(peer).or_default().extend(refs);
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
            for (_, out) in subs {
                self.deliver(out, chunk.clone());
            }
        }
    }

    /// Queues one `Deliver` to a subscriber; one that cannot take it gets it on its next
    /// subscription (the envelopes stay held until their owner deletes them).
    fn deliver(&self, out: &mpsc::Sender<MailboxResponse>, envs: Vec<Envelope>) {
        let n = envs.len() as u64;
        match out.try_send(MailboxResponse::Deliver(envs)) {
            Ok(()) => {
                self.metrics.fetched.fetch_add(n, Ordering::Relaxed);
            }
            Err(_) => tracing::debug!(
                n,
                "subscriber's queue full or closed; left for its next subscription"
            ),
        }
    }

    fn rate_ok(&mut self, peer: PeerId) -> bool {
        let now = Instant::now();
        let limit = self.cfg.limits.deposits_per_minute;
        let entry = self.rate.entry(peer).or_insert((now, 0));
        if now.duration_since(entry.0) >= RATE_WINDOW {
            *entry = (now, 0);
        }
        if entry.1 >= limit {
            return false;
        }
        entry.1 += 1;
        true
    }

    fn on_requests(
        &mut self,
        peer: PeerId,
        conn: u64,
        requests: Vec<MailboxRequest>,
        out: mpsc::Sender<MailboxResponse>,
    ) {
        let now = now_ms();
        let mut answers = Vec::new();
        let mut pushes = Vec::new();
        let mut wrote = false;
        for req in requests {
            match req {
                MailboxRequest::Deposit(env) => {
                    let id = env.id();
                    if !self.rate_ok(peer) {
                        self.metrics.reject(RefuseReason::RateLimited);
                        answers.push((
                            out.clone(),
                            MailboxResponse::Refused(id, RefuseReason::RateLimited),
                        ));
                        continue;
                    }
                    match self.store_one(&env, now).map(|(d, _)| d) {
                        Ok(Deposit::Stored) => {
                            wrote = true;
                            self.metrics.deposits.fetch_add(1, Ordering::Relaxed);
                            pushes.push((env.header.recipient, env));
                            answers.push((out.clone(), MailboxResponse::Stored(id)));
                        }
                        Ok(Deposit::Duplicate) => {
                            wrote = true;
                            answers.push((out.clone(), MailboxResponse::Stored(id)));
                        }
                        Err(reason) => {
                            self.metrics.reject(reason);
                            tracing::debug!(%peer, %id, ?reason, "deposit refused");
                            answers.push((out.clone(), MailboxResponse::Refused(id, reason)));
                        }
                    }
                }
                MailboxRequest::Replicate(envs) => {
                    if !self.stores.contains(&peer) {
                        tracing::warn!(%peer, "replicas from a peer that is not a known store peer; refused");
                        for e in &envs {
                            answers.push((
                                out.clone(),
                                MailboxResponse::Refused(e.id(), RefuseReason::NotAStore),
                            ));
                        }
                        continue;
                    }
                    let mut refs = Vec::new();
                    for env in envs {
                        match self.store_one(&env, now) {
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
                    wrote = true;
                    answers.push((out.clone(), MailboxResponse::Replicated(refs)));
                }
                MailboxRequest::Subscribe => {
                    let Ok(user) = UserId::from_peer_id(peer) else {
                        continue;
                    };
                    let list = self.subscribers.entry(user).or_default();
                    if !list.iter().any(|(c, _)| *c == conn) {
                        list.push((conn, out.clone()));
                    }
                    match self.mailboxes.list(&user) {
                        Ok(held) => {
                            tracing::debug!(%user, held = held.len(), "owner subscribed");
                            for envs in held_batches(&user, held) {
                                self.deliver(&out, envs);
                            }
                        }
                        Err(e) => tracing::error!(error = %e, "cannot list mailbox"),
                    }
                }
                MailboxRequest::Delete(refs) => {
                    // Only the mailbox's owner — the connection's authenticated peer — deletes,
                    // and only the envelopes it names by id and digest.
                    let Ok(owner) = UserId::from_peer_id(peer) else {
                        continue;
                    };
                    let until = now.saturating_add(self.cfg.limits.max_lifetime_ms);
                    match self.mailboxes.delete(&owner, &refs, until) {
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
                    if self.presence.accept_from_owner(record).is_ok() {
                        self.metrics.heartbeats.fetch_add(1, Ordering::Relaxed);
                    }
                }
                MailboxRequest::GetPresence(user) => {
                    let record = self
                        .presence
                        .get(&user)
                        .filter(|r| r.visibility == Visibility::Everyone)
                        .cloned();
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
        self.mailboxes
            .committer()
            .after_commit(move |committed| async move {
                match committed {
                    Ok(()) => {
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
        &mut self,
        env: &Envelope,
        now: u64,
    ) -> Result<(Deposit, EnvelopeDigest), RefuseReason> {
        if env.check().is_err() {
            return Err(RefuseReason::Malformed);
        }
        let bytes = env.to_bytes().map_err(|_| RefuseReason::TooLarge)?;
        let digest = EnvelopeDigest::of_bytes(&bytes);
        match self.mailboxes.deposit(env, &bytes, &self.cfg.limits, now) {
            Ok(r) => r.map(|d| (d, digest)),
            Err(e) => {
                tracing::error!(error = %e, "cannot store envelope");
                Err(RefuseReason::MailboxFull)
            }
        }
    }

    fn expire(&mut self) {
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

    fn update_gauges(&self) {
        let usage = self.mailboxes.usage();
        self.metrics
            .mailboxes
            .store(usage.len() as u64, Ordering::Relaxed);
        self.metrics
            .stored_messages
            .store(usage.iter().map(|u| u.1 as u64).sum(), Ordering::Relaxed);
        self.metrics
            .stored_bytes
            .store(usage.iter().map(|u| u.2).sum(), Ordering::Relaxed);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use kith_protocol::{
        envelope::MAX_ENVELOPE_LEN,
        frame,
        seal::{HandshakeBody, SealedBody},
        EnvelopeHeader, LocalIdentity,
    };

    use super::*;
    use kith_net::frames::encode_frames;

    /// The largest envelope a store peer accepts, for `to`, with id `n`.
    fn max_envelope(to: UserId, n: u8) -> (Envelope, Vec<u8>) {
        let make = |len: usize| Envelope {
            header: EnvelopeHeader::new(MessageId([n; 16]), to, now_ms() + 60_000),
            body: SealedBody::Handshake(HandshakeBody {
                prekey_id: 1,
                noise: vec![n; len],
            }),
        };
        let mut len = MAX_ENVELOPE_LEN;
        while make(len).to_bytes().is_err() {
            len -= 1;
        }
        let env = make(len);
        let bytes = env.to_bytes().unwrap();
        assert!(bytes.len() > MAX_ENVELOPE_LEN - 8);
        (env, bytes)
    }

    #[tokio::test]
    async fn mailbox_of_nine_maximum_envelopes_drains_in_frames_that_fit() {
        let dir = tempfile::tempdir().unwrap();
        let mailboxes = Mailboxes::open(&dir.path().join("mailboxes")).unwrap();
        let bob = LocalIdentity::generate(0, &mut rand::rngs::OsRng).user_id();
        let mut sent = Vec::new();
        for n in 0..9 {
            let (env, bytes) = max_envelope(bob, n);
            let r = mailboxes.deposit(&env, &bytes, &Limits::default(), now_ms());
            assert!(matches!(r, Ok(Ok(Deposit::Stored))));
            sent.push(env);
        }
        // One frame cannot carry them all (what issue #11 hit: it was dropped every time).
        let mut buf = Vec::new();
        assert!(encode_frames([&MailboxResponse::Deliver(sent.clone())], &mut buf).is_err());

        let batches = held_batches(&bob, mailboxes.list(&bob).unwrap());
        assert!(batches.len() >= 2);
        assert_eq!(
            batches.concat(),
            sent,
            "every envelope, once, in arrival order"
        );
        for envs in batches {
            assert!(envs.len() <= MAX_BATCH);
            let mut buf = Vec::new();
            encode_frames([&MailboxResponse::Deliver(envs.clone())], &mut buf).unwrap();
            assert!(buf.len() <= frame::LEN_PREFIX + frame::MAX_FRAME_LEN);
            let mut buf = Vec::new();
            encode_frames([&MailboxRequest::Replicate(envs)], &mut buf).unwrap();
        }
    }

    #[test]
    fn many_small_envelopes_keep_the_count_cap() {
        let bob = LocalIdentity::generate(0, &mut rand::rngs::OsRng).user_id();
        let held: Vec<(EnvelopeRef, Vec<u8>)> = (0..600u32)
            .map(|i| {
                let mut id = [0u8; 16];
                id[..4].copy_from_slice(&i.to_be_bytes());
                let env = Envelope {
                    header: EnvelopeHeader::new(MessageId(id), bob, u64::MAX),
                    body: SealedBody::Handshake(HandshakeBody {
                        prekey_id: 1,
                        noise: vec![1; 100],
                    }),
                };
                let r = EnvelopeRef {
                    id: MessageId(id),
                    digest: env.digest().unwrap(),
                };
                (r, env.to_bytes().unwrap())
            })
            .collect();
        let batches = held_batches(&bob, held);
        let sizes: Vec<usize> = batches.iter().map(Vec::len).collect();
        assert_eq!(sizes, [MAX_BATCH, MAX_BATCH, 600 - 2 * MAX_BATCH]);
    }
}
