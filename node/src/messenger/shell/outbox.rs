//! Acting on the outbox's decisions: sending, queueing receipts, settling, resending, expiring.
//! The decisions are the pure part [`crate::messenger::outbox`]'s; this is the shell acting on them.

use crate::messenger::outbox::*;
use crate::messenger::*;

impl Messenger {
    pub(in crate::messenger) fn send_text(
        &mut self,
        to: UserId,
        text: String,
        client_meta: serde_json::Value,
    ) -> Result<Sent, NodeError> {
        if !self.contacts.contains_key(&to) {
            return Err(NodeError::UnknownContact(to.to_string()));
        }
        let meta = self.check_text(&text, &client_meta)?;
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

    /// Checks a text and its client metadata against the limits; the metadata as text.
    pub(in crate::messenger) fn check_text(
        &self,
        text: &str,
        client_meta: &serde_json::Value,
    ) -> Result<String, NodeError> {
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
        Ok(meta)
    }

    /// Stores an outgoing message and its outbox entry, tells listeners, and queues it.
    pub(in crate::messenger) fn queue_outgoing(
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

    pub(in crate::messenger) fn mark_read(
        &mut self,
        peer: UserId,
    ) -> Result<(usize, Vec<MessageId>), NodeError> {
        if !self.contacts.contains_key(&peer) {
            return Err(NodeError::UnknownContact(peer.to_string()));
        }
        let ids = self.store.mark_read(&peer).map_err(store_err)?;
        // Read receipts are mutual: none goes out when either side turned them off.
        let receipts = if self.sends_read_receipts(&peer) {
            self.queue_receipts(peer, ReceiptKind::Read, &ids)
                .map_err(store_err)?
        } else {
            Vec::new()
        };
        Ok((ids.len(), receipts))
    }

    /// Writes receipt entries for `ids` to the outbox (not yet queued: they leave once
    /// durable, via [`Internal::Committed`]). Returns their ids.
    pub(in crate::messenger) fn queue_receipts(
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
    pub(in crate::messenger) fn expired(&mut self, entry: &OutboxEntry) {
        tracing::info!(id = %entry.id, to = %entry.to, "message expired undelivered");
        if let Err(e) = self.store.outbox_remove(entry) {
            tracing::error!(error = %e, "cannot remove expired outbox entry");
        }
    }

    /// `user` (or W of its store peers) holds `ids`: ✓ for messages, settled for receipts.
    /// The caller moves the queue on afterwards.
    pub(in crate::messenger) fn on_acked(&mut self, user: UserId, ids: Vec<MessageId>) {
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
    pub(in crate::messenger) fn settle(&mut self, id: &MessageId) {
        self.group_sends.remove(id);
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
    pub(in crate::messenger) fn resend_undelivered(&mut self, user: UserId, now: Instant) {
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
    pub(in crate::messenger) fn set_status(
        &mut self,
        peer: &UserId,
        id: &MessageId,
        status: DeliveryStatus,
    ) {
        if let Some((_, message)) = self.group_sends.get(id).copied() {
            self.set_member_status(peer, &message, status);
            return;
        }
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

    pub(in crate::messenger) fn on_rejected(
        &mut self,
        user: UserId,
        id: MessageId,
        reason: RejectReason,
    ) {
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
