//! The inbox: receiving envelopes, storing messages and answering with acks and receipts.

use crate::messenger::*;
use kith_protocol::payload::kind;

/// The answer frames for a link's envelopes: the acks first (at most [`MAX_ACK_IDS`] ids
/// per frame), then the rejects in order.
pub(in crate::messenger) fn answer_frames(outcomes: Vec<Outcome>) -> Vec<MsgFrame> {
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

/// Whether a payload kind is one of the group payloads.
fn is_group_kind(k: u16) -> bool {
    matches!(
        k,
        kind::GROUP_UPDATE | kind::SENDER_KEY | kind::GROUP_MESSAGE | kind::GROUP_RECEIPT
    )
}

/// What a received batch came to.
pub(in crate::messenger) struct Received {
    /// What became of each envelope, in order.
    pub(in crate::messenger) outcomes: Vec<Outcome>,
    /// The delivered receipts it queued: they leave once durable.
    pub(in crate::messenger) release: Vec<MessageId>,
    /// Whether acks or receipts vouch for writes that must be durable before they leave.
    pub(in crate::messenger) needs_commit: bool,
}

/// What receiving one envelope of a batch leaves for the end of the batch.
#[derive(Default)]
pub(in crate::messenger) struct BatchEffects {
    /// Senders whose sessions changed (stored once per batch).
    touched: HashSet<UserId>,
    /// Messages to answer with a delivered receipt, by sender.
    delivered: HashMap<UserId, Vec<MessageId>>,
    /// Peers whose receipts settled some of our messages: their queues move on afterwards.
    pub(in crate::messenger) settled: HashSet<UserId>,
    /// Outbox entries queued while receiving (contact cards of group members): they leave
    /// once durable.
    pub(in crate::messenger) release: Vec<MessageId>,
    /// Group messages to answer with a delivered receipt, by sender and group.
    pub(in crate::messenger) group_delivered:
        HashMap<(UserId, kith_protocol::GroupId), Vec<MessageId>>,
}

impl Messenger {
    /// Envelopes (and presence) from a peer's link: answered with acks and rejects once
    /// what the acks vouch for is durable.
    pub(in crate::messenger) fn on_inbound(
        &mut self,
        from: PeerId,
        frames: Vec<MsgFrame>,
        reply: oneshot::Sender<Vec<MsgFrame>>,
    ) {
        let received = self.receive_batch(from, frames);
        let answers = answer_frames(received.outcomes);
        if !received.needs_commit {
            let _ = reply.send(answers);
            return;
        }
        // Acks and delivered receipts leave only once what they vouch for is durable.
        self.when_durable(
            move |result| match result {
                Ok(()) => {
                    let _ = reply.send(answers);
                }
                Err(e) => tracing::error!(error = %e, "commit failed; not acknowledging"),
            },
            Internal::Committed {
                release: received.release,
                deletes: Vec::new(),
            },
        );
    }

    /// Receives a batch of frames from `from` (a contact's link, or a store peer pushing our
    /// mailbox): what became of each envelope, in order, and the delivered receipts it
    /// queued. Nothing it implies may leave before the next commit when `needs_commit`.
    pub(in crate::messenger) fn receive_batch(
        &mut self,
        from: PeerId,
        frames: Vec<MsgFrame>,
    ) -> Received {
        let link_peer = UserId::from_peer_id(from).ok();
        let mut outcomes = Vec::new();
        let mut batch = BatchEffects::default();
        for frame in frames {
            match frame {
                MsgFrame::Envelope(env) => {
                    let id = env.id();
                    let outcome = self.receive(env, link_peer, &mut batch);
                    outcomes.push((id, outcome));
                }
                MsgFrame::Presence(record) => self.on_presence(record),
                other => tracing::debug!(peer = %from, ?other, "unexpected frame on inbound link"),
            }
        }
        for user in &batch.touched {
            if let Some(s) = self.sessions.get(user) {
                if let Err(e) = self.store.put_sessions(user, s) {
                    tracing::error!(error = %e, "cannot store sessions");
                }
            }
        }
        let mut release = std::mem::take(&mut batch.release);
        for ((sender, group), ids) in std::mem::take(&mut batch.group_delivered) {
            release.extend(self.queue_group_receipts(sender, group, ReceiptKind::Delivered, &ids));
        }
        for (sender, ids) in batch.delivered {
            match self.queue_receipts(sender, ReceiptKind::Delivered, &ids) {
                Ok(r) => release.extend(r),
                Err(e) => tracing::error!(error = %e, "cannot queue delivered receipts"),
            }
        }
        // Receipts settled some of our messages: their queues move on after the batch, not
        // in the middle of it.
        for user in batch.settled {
            self.pump(user);
        }
        let needs_commit = outcomes.iter().any(|(_, o)| o.is_ok()) || !release.is_empty();
        Received {
            outcomes,
            release,
            needs_commit,
        }
    }

    /// Opens one envelope: the authenticated sender and the plaintext, or (as `Err`) the
    /// answer to give at once — `Ok` for a replay of a message we hold, a reject otherwise.
    /// A handshake starts a session (and may teach us the sender's bundle).
    fn open_envelope(
        &mut self,
        env: &Envelope,
        link_peer: Option<UserId>,
        batch: &mut BatchEffects,
    ) -> Result<(UserId, Plaintext), Result<(), RejectReason>> {
        let id = env.id();
        // An envelope that left no message record (a receipt, a card, a group payload)
        // counts too once it was handled: its copy can no longer be opened.
        let already = |store: &Store, sender: &UserId| {
            Ok::<_, StoreError>(
                store.has_message(Direction::Incoming, sender, &id)?
                    || store.was_handled(sender, &id)?,
            )
        };
        match &env.body {
            kith_protocol::SealedBody::Handshake(body) => {
                match open_handshake(&self.me, &env.header, body) {
                    Ok(opened) => {
                        let sender = opened.sender.user;
                        if sender == self.user {
                            tracing::warn!(%id, "handshake claims to come from ourselves; dropped");
                            return Err(Err(RejectReason::Invalid));
                        }
                        // Someone who is not a contact is blocked, a request, or one too many:
                        // the dropped ones are acknowledged (they learn nothing) and leave no
                        // session behind.
                        if !self.contacts.contains_key(&sender)
                            && !self.admit_group_member(&opened.sender, &opened.plaintext, batch)
                            && !self.admit_stranger(&opened.sender)
                        {
                            return Err(Ok(()));
                        }
                        self.learn_bundle(&opened.sender);
                        self.load_sessions(sender);
                        match self.sessions.accept(sender, opened.session) {
                            Ok(()) => {
                                batch.touched.insert(sender);
                            }
                            Err(OpenError::Replayed)
                                if already(&self.store, &sender).unwrap_or(false) =>
                            {
                                return Err(Ok(()))
                            }
                            // A receipt is applied again (statuses only move forward) and
                            // acknowledged; a contact card only acknowledged (applied when
                            // first opened; applying an old one again could bring back an
                            // access key since replaced). Refused, the copy on a store peer
                            // came back at every re-subscription until it expired, and a
                            // sender resealed it again and again.
                            Err(OpenError::Replayed)
                                if opened.plaintext.payload.kind == kind::RECEIPT =>
                            {
                                tracing::debug!(%id, %sender, "replayed receipt applied again");
                            }
                            Err(OpenError::Replayed)
                                if matches!(
                                    opened.plaintext.payload.kind,
                                    kind::CONTACT_CARD | kind::PROFILE
                                ) =>
                            {
                                return Err(Ok(()));
                            }
                            Err(e) => {
                                tracing::warn!(%id, %sender, error = %e, "replayed handshake dropped");
                                return Err(Err(RejectReason::Invalid));
                            }
                        }
                        Ok((sender, opened.plaintext))
                    }
                    Err(e) => {
                        tracing::warn!(%id, error = %e, "cannot open first message; dropped");
                        Err(Err(RejectReason::Invalid))
                    }
                }
            }
            kith_protocol::SealedBody::Session(body) => {
                let owner = match self.sessions.owner(&body.session) {
                    Some(u) => Some(u),
                    None => self.store.session_peer(&body.session).ok().flatten(),
                };
                let Some(sender) = owner else {
                    // A copy of a message whose session we dropped since: the link's peer
                    // (authenticated) sent it to us before if we hold its message with
                    // this id. An ack says only that: through a store peer it deletes just
                    // this envelope.
                    if link_peer.is_some_and(|p| already(&self.store, &p).unwrap_or(false)) {
                        return Err(Ok(()));
                    }
                    tracing::info!(%id, "message in an unknown session; asking the sender to resend");
                    return Err(Err(RejectReason::Invalid));
                };
                if self.requests.is_blocked(&sender) {
                    // Before any chain work: a blocked user's envelope is acknowledged and
                    // dropped.
                    return Err(Ok(()));
                }
                self.load_sessions(sender);
                match self.sessions.open(sender, &env.header, body) {
                    Ok(p) => {
                        batch.touched.insert(sender);
                        Ok((sender, p))
                    }
                    Err(OpenError::Replayed) if already(&self.store, &sender).unwrap_or(false) => {
                        Err(Ok(()))
                    }
                    Err(e) => {
                        tracing::warn!(%id, %sender, error = %e, "cannot open message; dropped");
                        Err(Err(RejectReason::Invalid))
                    }
                }
            }
        }
    }

    /// Opens, deduplicates and stores one envelope. `Ok` means "acknowledge it".
    ///
    /// A message is a duplicate only if *its sender's* message with that id is stored, so
    /// that is decided once the envelope is open and the sender known: anyone can reuse an
    /// id (store peers see them all), and another sender's message under it is another
    /// message. `link_peer` is the authenticated peer the envelope came from (a contact, or
    /// a store peer), used only for an envelope in a session we no longer know.
    pub(in crate::messenger) fn receive(
        &mut self,
        env: Envelope,
        link_peer: Option<UserId>,
        batch: &mut BatchEffects,
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
        if kith_net::clock::is_expired(env.header.expires_at_ms, now) {
            return Err(RejectReason::Expired);
        }
        let (sender, plaintext) = match self.open_envelope(&env, link_peer, batch) {
            Ok(opened) => opened,
            Err(answer) => return answer,
        };
        // Only a contact hears more than the ack: a request's sender gets no receipt, no
        // dial and no fetch of their media until the user accepts them.
        let mut contact = self.contacts.contains_key(&sender);
        if !contact && self.requests.is_pending(&sender) && is_group_kind(plaintext.payload.kind) {
            // A group member we were not introduced to yet (their contact card came first,
            // so they are a request): their group payload may show they are one.
            contact = self.admit_pending_group_member(sender, &plaintext, batch);
        }
        if !contact && !self.requests.is_pending(&sender) {
            tracing::debug!(%id, %sender, "message from a blocked or removed user; dropped");
            return Ok(());
        }
        let already =
            |store: &Store, sender: &UserId| store.has_message(Direction::Incoming, sender, &id);
        match already(&self.store, &sender) {
            Ok(true) => {
                tracing::debug!(%id, %sender, "duplicate message; acknowledged again");
                // The sender sends a message again when its delivered receipt did not come:
                // answer with one again (receipts themselves are never receipted).
                let kind = plaintext.payload.kind;
                if contact && (kind == payload::kind::TEXT || kind == payload::kind::MEDIA) {
                    batch.delivered.entry(sender).or_default().push(id);
                }
                return Ok(());
            }
            Ok(false) => {}
            Err(e) => {
                tracing::error!(error = %e, "cannot look up message");
                return Err(RejectReason::Busy);
            }
        }
        if !contact && !self.request_has_room(&sender) {
            tracing::info!(%id, %sender, "request already holds its most messages; dropped");
            return Ok(());
        }
        let kind = plaintext.payload.kind;
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
                self.store_received(&msg, batch)?;
            }
            Ok(Payload::Receipt(r)) => {
                let to = self.receipt_status(r.kind);
                for mid in r.ids {
                    // Only the conversation's peer may tick our messages to them: both the
                    // outbox entry and the stored message are looked up as ours to the
                    // receipt's sender.
                    if self.outbox.addressed_to(&mid, &sender) {
                        // A receipt proves the peer holds the message even if its ack is
                        // still on the way (another stream): settle the outbox entry now,
                        // without writing the ✓ it implies on the way to this status.
                        self.peer(sender).acked_by_receipt(&mid);
                        self.settle(&mid);
                        batch.settled.insert(sender);
                    }
                    // One read-modify-write, and none when the status would not move.
                    self.set_status(&sender, &mid, to);
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
                // Auto-download only from contacts and up to the size limit; the rest waits
                // for the user (or, for a request, for them to be accepted).
                let mut record = record;
                let auto = contact && self.auto_downloads(&sender, m.size);
                if !auto {
                    record.state = MediaState::Waiting;
                }
                if fresh {
                    if let Err(e) = self.transfers.put_record(&record) {
                        tracing::error!(error = %e, "cannot store media record");
                        return Err(RejectReason::Busy);
                    }
                }
                if self.store_received(&msg, batch)? && auto {
                    self.transfers.start(media_id);
                }
            }
            Ok(Payload::ContactCard(card)) => self.on_card(sender, *card),
            Ok(Payload::Profile(p)) => self.on_profile(sender, p, plaintext.sent_at_ms),
            // Ephemeral: shown, never stored or receipted; a request's sender shows nothing.
            Ok(Payload::Typing(t)) => {
                if contact {
                    self.emit(|| Event::Typing {
                        peer: sender.to_string(),
                        typing: t.typing,
                    });
                }
            }
            Ok(Payload::GroupUpdate(update)) if contact => {
                let update = *update;
                if update.state.state.author == sender {
                    self.receive_group_state(sender, update.state, update.bundles, batch);
                } else {
                    tracing::info!(%id, %sender, "group state relayed by someone not its author; dropped");
                }
            }
            Ok(Payload::SenderKey(gift)) if contact => {
                self.receive_sender_key(sender, *gift, batch)
            }
            Ok(Payload::GroupMessage(m)) if contact => self.open_group_message(sender, *m, batch),
            Ok(Payload::GroupReceipt(r)) if contact => self.on_group_receipt(sender, r, batch),
            // A group message from a pending request in a group we are in: it waits for
            // its sender key, whose state will show whether they are a member.
            Ok(Payload::GroupMessage(m)) if self.is_active_group(&m.group) => {
                match self.store.hold_group_message(&sender, &m) {
                    Ok(true) => tracing::debug!(%id, %sender, "group message from a request held"),
                    Ok(false) => {
                        tracing::warn!(%id, %sender, "too many held group messages; dropped")
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "cannot hold group message");
                        return Err(RejectReason::Busy);
                    }
                }
            }
            Ok(
                Payload::GroupUpdate(_)
                | Payload::SenderKey(_)
                | Payload::GroupMessage(_)
                | Payload::GroupReceipt(_),
            ) => {
                tracing::info!(%id, %sender, "group payload from someone who is not a contact; dropped");
            }
            Ok(Payload::Unknown { kind }) => {
                tracing::info!(%id, %sender, kind, "payload of an unknown kind; acknowledged, not shown");
            }
            Err(e) => {
                tracing::warn!(%id, %sender, error = %e, "invalid payload; dropped");
                return Err(RejectReason::Invalid);
            }
        }
        // Handled: a second copy of it is acknowledged, not refused (see `store::handled`).
        if kind != payload::kind::TEXT && kind != payload::kind::MEDIA {
            let expires = env.header.expires_at_ms;
            if let Err(e) = self.store.note_handled_envelope(&sender, &id, expires, now) {
                tracing::error!(error = %e, "cannot note handled envelope");
            }
        }
        Ok(())
    }

    /// Stores a received message, tells listeners and owes its sender a delivered receipt.
    /// `Ok(false)` when it was already stored; `Busy` when the store failed (the sender
    /// tries again).
    fn store_received(
        &mut self,
        msg: &StoredMessage,
        batch: &mut BatchEffects,
    ) -> Result<bool, RejectReason> {
        match self.store.insert_message(msg) {
            Ok(true) => {
                self.emit(|| Event::Message {
                    peer: msg.peer.to_string(),
                    message: crate::view::message_view(&self.store, &self.user, msg),
                });
                // A request's sender is owed its receipts only once accepted.
                if self.contacts.contains_key(&msg.peer) {
                    batch.delivered.entry(msg.peer).or_default().push(msg.id);
                }
                Ok(true)
            }
            Ok(false) => Ok(false),
            Err(e) => {
                tracing::error!(error = %e, "cannot store message");
                Err(RejectReason::Busy)
            }
        }
    }
}
