//! The outbox: outgoing messages and receipts, their statuses, expiry and resending.

use super::*;

/// How many times an envelope the peer refused as invalid is resealed and sent again (with a
/// fresh handshake) before it is given up.
pub(super) const MAX_INVALID_RETRIES: u32 = 3;

/// The outbox in memory: every entry not yet settled, and which of them reached ✓ and wait
/// for their delivered receipt.
///
/// Pure: it decides what expired and what is due to be sent again at the `now` it is given;
/// the shell removes entries from the store and queues them.
#[derive(Default)]
pub(super) struct Outbox {
    /// Unsettled entries by id.
    entries: HashMap<MessageId, OutboxEntry>,
    /// Our messages that reached ✓ and wait for their delivered receipt, with when they were
    /// last sent; their entries are kept until the receipt comes (see
    /// [`Config::receipt_timeout`]).
    awaiting_receipt: HashMap<MessageId, Instant>,
}

impl Outbox {
    /// Adds (or replaces) an entry.
    pub(super) fn insert(&mut self, entry: OutboxEntry) {
        self.entries.insert(entry.id, entry);
    }

    /// The entry `id`, if it is still unsettled.
    pub(super) fn get(&self, id: &MessageId) -> Option<&OutboxEntry> {
        self.entries.get(id)
    }

    /// How many entries there are.
    pub(super) fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the entry `id` is addressed to `user`: only its recipient's answers (or its
    /// deposits' store peers, on its behalf) may settle or drop it.
    pub(super) fn addressed_to(&self, id: &MessageId, user: &UserId) -> bool {
        self.get(id).is_some_and(|e| e.to == *user)
    }

    /// Takes the entry `id` out for good (settled, refused or expired).
    pub(super) fn remove(&mut self, id: &MessageId) -> Option<OutboxEntry> {
        self.awaiting_receipt.remove(id);
        self.entries.remove(id)
    }

    /// The entry `id` reached ✓ at `now`: it now waits for its delivered receipt.
    pub(super) fn await_receipt(&mut self, id: MessageId, now: Instant) {
        if self.entries.contains_key(&id) {
            self.awaiting_receipt.insert(id, now);
        }
    }

    /// Takes out the entry `id` if it expired by `now_ms`.
    pub(super) fn take_if_expired(&mut self, id: &MessageId, now_ms: u64) -> Option<OutboxEntry> {
        if !kith_net::clock::is_expired(self.get(id)?.expires_at_ms, now_ms) {
            return None;
        }
        self.remove(id)
    }

    /// Takes out every entry that expired by `now_ms`, oldest first.
    pub(super) fn take_expired(&mut self, now_ms: u64) -> Vec<OutboxEntry> {
        let mut ids: Vec<(u64, MessageId)> = self
            .entries
            .values()
            .filter(|e| kith_net::clock::is_expired(e.expires_at_ms, now_ms))
            .map(|e| (e.seq, e.id))
            .collect();
        ids.sort_unstable();
        ids.iter().filter_map(|(_, id)| self.remove(id)).collect()
    }

    /// The messages to `user` whose delivered receipt has not come within `timeout` of
    /// their last send, oldest first. They count as sent again at `now`, so they are due
    /// again only after another `timeout`.
    pub(super) fn due_for_resend(
        &mut self,
        user: &UserId,
        now: Instant,
        timeout: Duration,
    ) -> Vec<MessageId> {
        let mut due: Vec<(u64, MessageId)> = self
            .awaiting_receipt
            .iter()
            .filter(|(_, at)| now.duration_since(**at) > timeout)
            .filter_map(|(id, _)| {
                self.entries
                    .get(id)
                    .filter(|e| e.to == *user)
                    .map(|e| (e.seq, *id))
            })
            .collect();
        due.sort_unstable();
        for (_, id) in &due {
            self.awaiting_receipt.insert(*id, now);
        }
        due.into_iter().map(|(_, id)| id).collect()
    }
}

impl Messenger {
    pub(super) fn send_text(
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
    pub(super) fn queue_outgoing(
        &mut self,
        msg: StoredMessage,
        entry: OutboxEntry,
    ) -> Result<Sent, NodeError> {
        let (id, to) = (msg.id, msg.peer);
        self.store.insert_message(&msg).map_err(store_err)?;
        self.store.outbox_put(&entry).map_err(store_err)?;
        self.outbox.insert(entry);
        self.emit(|| Event::Message {
            peer: to.to_string(),
            message: crate::view::message_view(&self.store, &self.user, &msg),
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

    pub(super) fn mark_read(&mut self, peer: UserId) -> Result<(usize, Vec<MessageId>), NodeError> {
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
    pub(super) fn queue_receipts(
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
            self.outbox.insert(entry);
        }
        Ok(out)
    }

    /// Removes from the store an entry the outbox dropped as expired.
    pub(super) fn expired(&mut self, entry: &OutboxEntry) {
        tracing::info!(id = %entry.id, to = %entry.to, "message expired undelivered");
        if let Err(e) = self.store.outbox_remove(entry) {
            tracing::error!(error = %e, "cannot remove expired outbox entry");
        }
    }

    /// `user` (or W of its store peers) holds `ids`: ✓ for messages, settled for receipts.
    /// The caller moves the queue on afterwards.
    pub(super) fn on_acked(&mut self, user: UserId, ids: Vec<MessageId>) {
        for id in ids {
            if self.outbox.get(&id).is_some() && !self.outbox.addressed_to(&id, &user) {
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
                self.outbox.await_receipt(id, Instant::now());
                self.set_status(&user, &id, DeliveryStatus::Sent);
            } else {
                self.settle(&id);
            }
        }
    }

    /// Removes an outbox entry for good: its receipt came (or it was a receipt, acked).
    pub(super) fn settle(&mut self, id: &MessageId) {
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
    pub(super) fn resend_undelivered(&mut self, user: UserId, now: Instant) {
        let due = self
            .outbox
            .due_for_resend(&user, now, self.cfg.receipt_timeout);
        if due.is_empty() {
            return;
        }
        tracing::info!(%user, n = due.len(), "no delivered receipt yet; sending again");
        self.sessions.forget_outbound(&user);
        let state = self.peer(user);
        for id in due {
            if !state.in_flight.contains_key(&id) && !state.queue.contains(&id) {
                state.queue.push_back(id);
            }
        }
        self.pump(user);
    }

    /// Moves the status of our message `id` to `peer` forward.
    pub(super) fn set_status(&mut self, peer: &UserId, id: &MessageId, status: DeliveryStatus) {
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

    pub(super) fn on_rejected(&mut self, user: UserId, id: MessageId, reason: RejectReason) {
        if !self.outbox.addressed_to(&id, &user) {
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
                    self.sessions.forget_outbound(&user);
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
}

#[cfg(test)]
mod tests {
    use rand::{rngs::StdRng, SeedableRng};

    use super::*;

    const TIMEOUT: Duration = Duration::from_secs(60);

    struct Fixture {
        rng: StdRng,
        alice: UserId,
        bob: UserId,
    }

    impl Fixture {
        fn new() -> Self {
            let mut rng = StdRng::seed_from_u64(11);
            let alice = LocalIdentity::generate(0, &mut rng).user_id();
            let bob = LocalIdentity::generate(0, &mut rng).user_id();
            Fixture { rng, alice, bob }
        }

        fn entry(&mut self, seq: u64, to: UserId, expires_at_ms: u64) -> OutboxEntry {
            let payload = Payload::Text(Text {
                body: "hi".into(),
                client_meta: "{}".into(),
            });
            OutboxEntry {
                seq,
                id: MessageId::random(&mut self.rng),
                to,
                plaintext: Plaintext::new(&payload, 0).expect("plaintext"),
                expires_at_ms,
                tracked: true,
            }
        }
    }

    #[test]
    fn expired_entries_leave_oldest_first_and_live_ones_stay() {
        let mut f = Fixture::new();
        let mut o = Outbox::default();
        let (a, b, c) = (
            f.entry(2, f.alice, 1_000),
            f.entry(1, f.alice, 1_000),
            f.entry(3, f.alice, 5_000),
        );
        for e in [&a, &b, &c] {
            o.insert(e.clone());
        }
        assert!(o.take_expired(999).is_empty());
        let gone: Vec<MessageId> = o.take_expired(1_000).iter().map(|e| e.id).collect();
        assert_eq!(gone, vec![b.id, a.id]);
        assert_eq!(o.len(), 1);
        assert!(o.get(&c.id).is_some());
    }

    #[test]
    fn an_entry_is_taken_as_expired_only_once_its_time_is_reached() {
        let mut f = Fixture::new();
        let mut o = Outbox::default();
        let e = f.entry(1, f.bob, 2_000);
        o.insert(e.clone());
        assert!(o.take_if_expired(&e.id, 1_999).is_none());
        assert!(o.get(&e.id).is_some());
        assert_eq!(o.take_if_expired(&e.id, 2_000).map(|x| x.id), Some(e.id));
        assert!(o.get(&e.id).is_none());
    }

    #[test]
    fn a_message_without_its_delivered_receipt_is_resent_after_the_receipt_timeout() {
        let mut f = Fixture::new();
        let mut o = Outbox::default();
        let start = Instant::now();
        let (old, new) = (f.entry(1, f.bob, u64::MAX), f.entry(2, f.bob, u64::MAX));
        o.insert(new.clone());
        o.insert(old.clone());
        o.await_receipt(new.id, start);
        o.await_receipt(old.id, start);
        assert!(o
            .due_for_resend(&f.bob, start + TIMEOUT, TIMEOUT)
            .is_empty());
        let later = start + TIMEOUT + Duration::from_millis(1);
        assert_eq!(
            o.due_for_resend(&f.bob, later, TIMEOUT),
            vec![old.id, new.id],
            "oldest first"
        );
        assert!(
            o.due_for_resend(&f.bob, later + TIMEOUT, TIMEOUT)
                .is_empty(),
            "a resend waits a whole timeout again"
        );
        assert_eq!(
            o.due_for_resend(&f.bob, later + TIMEOUT * 2, TIMEOUT).len(),
            2
        );
    }

    #[test]
    fn resends_are_only_of_messages_to_that_peer_and_stop_once_settled() {
        let mut f = Fixture::new();
        let mut o = Outbox::default();
        let start = Instant::now();
        let (to_bob, to_alice) = (f.entry(1, f.bob, u64::MAX), f.entry(2, f.alice, u64::MAX));
        o.insert(to_bob.clone());
        o.insert(to_alice.clone());
        o.await_receipt(to_bob.id, start);
        o.await_receipt(to_alice.id, start);
        let later = start + TIMEOUT * 2;
        assert_eq!(o.due_for_resend(&f.bob, later, TIMEOUT), vec![to_bob.id]);
        o.remove(&to_alice.id);
        assert!(o.due_for_resend(&f.alice, later, TIMEOUT).is_empty());
    }

    #[test]
    fn only_the_recipient_may_settle_an_entry() {
        let mut f = Fixture::new();
        let mut o = Outbox::default();
        let e = f.entry(1, f.bob, u64::MAX);
        o.insert(e.clone());
        assert!(o.addressed_to(&e.id, &f.bob));
        assert!(!o.addressed_to(&e.id, &f.alice));
        let unknown = MessageId::random(&mut f.rng);
        assert!(!o.addressed_to(&unknown, &f.bob));
    }

    #[test]
    fn a_receipt_for_an_unknown_entry_starts_no_wait() {
        let mut f = Fixture::new();
        let mut o = Outbox::default();
        let start = Instant::now();
        let unknown = MessageId::random(&mut f.rng);
        o.await_receipt(unknown, start);
        let e = f.entry(1, f.bob, u64::MAX);
        o.insert(e);
        assert!(o
            .due_for_resend(&f.bob, start + TIMEOUT * 2, TIMEOUT)
            .is_empty());
    }
}
