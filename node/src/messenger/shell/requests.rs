//! Acting on message requests and blocks: accepting makes a contact (receipts owed, media
//! fetched per policy, a link), blocking forgets a contact or request and drops what they
//! send, removing a contact stops everything this node did for them.
//! The decisions are the pure part [`crate::messenger::requests`]'s; this is the shell acting
//! on them.

use crate::messenger::requests::*;
use crate::messenger::*;

impl Messenger {
    /// Answers `reply` with a result and the outbox entries it queued: those leave, and the
    /// answer goes, once durable; an error is answered at once.
    pub(in crate::messenger) fn reply_released<T: Send + 'static>(
        &mut self,
        reply: oneshot::Sender<Result<T, NodeError>>,
        result: Result<(T, Vec<MessageId>), NodeError>,
    ) {
        match result {
            Ok((value, release)) => self.reply_after_commit(reply, value, release),
            Err(e) => {
                let _ = reply.send(Err(e));
            }
        }
    }

    /// Accept, block, unblock and remove-contact commands.
    pub(in crate::messenger) fn on_request_command(&mut self, cmd: Command) {
        match cmd {
            Command::AcceptRequest { user, reply } => {
                let result = self.accept_request(user);
                self.reply_released(reply, result);
            }
            Command::Block { user, reply } => {
                let result = self.block_user(user).map(|()| ((), Vec::new()));
                self.reply_released(reply, result);
            }
            Command::Unblock { user, reply } => {
                let result = self.unblock_user(user).map(|()| ((), Vec::new()));
                self.reply_released(reply, result);
            }
            Command::RemoveContact { user, reply } => {
                let result = self.remove_contact(user).map(|()| ((), Vec::new()));
                self.reply_released(reply, result);
            }
            _ => {}
        }
    }

    /// Sorts the sender of a just-opened handshake who is not a contact: `false` means drop
    /// their envelope (blocked, or too many requests), acknowledged so they learn nothing.
    pub(in crate::messenger) fn admit_stranger(&mut self, bundle: &KeyBundle) -> bool {
        let (verdict, write) = self.requests.admit(bundle, self.cfg.max_requests, now_ms());
        if let Some(request) = write {
            tracing::info!(user = %request.user, "message from someone who is not a contact; kept as a request");
            if let Err(e) = self.store.put_request(&request) {
                tracing::error!(error = %e, "cannot store message request");
            }
        }
        match verdict {
            Stranger::Request => true,
            Stranger::Blocked => false,
            Stranger::Full => {
                tracing::warn!(user = %bundle.user, max = self.cfg.max_requests, "too many message requests; dropped");
                false
            }
        }
    }

    /// Whether a message from `sender` (not a contact) is kept: they are a request with fewer
    /// than [`Config::max_request_messages`] unread messages.
    pub(in crate::messenger) fn request_has_room(&self, sender: &UserId) -> bool {
        if !self.requests.is_pending(sender) {
            return false;
        }
        let max = self.cfg.max_request_messages;
        match self.store.unread_count(sender, max) {
            Ok(n) => n < max,
            Err(e) => {
                tracing::error!(error = %e, "cannot count a request's messages");
                false
            }
        }
    }

    /// Makes a pending request a contact. Returns the contact and the receipts it queued
    /// (they leave once durable).
    pub(in crate::messenger) fn accept_request(
        &mut self,
        user: UserId,
    ) -> Result<(ContactView, Vec<MessageId>), NodeError> {
        let Some(contact) = self.requests.take(&user) else {
            return Err(NodeError::NotFound(format!(
                "no message request from {user}"
            )));
        };
        self.store.put_contact(&contact).map_err(store_err)?;
        self.store.remove_request(&user).map_err(store_err)?;
        let view = crate::view::contact_view(&self.store, &contact);
        self.contacts.insert(user, contact);
        let release = self.became_contact(user);
        Ok((view, release))
    }

    /// Writing to a pending request accepts it (whoever the user writes to is a contact);
    /// returns the receipts that queued (nothing for anyone else).
    pub(in crate::messenger) fn accept_if_request(
        &mut self,
        to: UserId,
    ) -> Result<Vec<MessageId>, NodeError> {
        if self.contacts.contains_key(&to) || !self.requests.is_pending(&to) {
            return Ok(Vec::new());
        }
        self.accept_request(to).map(|(_, release)| release)
    }

    /// Everything that follows from `user` becoming a contact (accepted, added by invite or
    /// user id, or written to): no longer a request, dialled and heartbeated from now on,
    /// owed delivered receipts for what they sent while a request, their waiting media
    /// fetched per policy. Returns the receipts queued (they leave once durable).
    pub(in crate::messenger) fn became_contact(&mut self, user: UserId) -> Vec<MessageId> {
        // The stored request goes whoever took it out of memory first (accept, or an invite).
        self.requests.take(&user);
        if let Err(e) = self.store.remove_request(&user) {
            tracing::error!(error = %e, "cannot remove message request");
        }
        self.dial_contact(user);
        let owed = match self.store.unread_ids(&user, self.cfg.max_request_messages) {
            Ok(ids) => ids,
            Err(e) => {
                tracing::error!(error = %e, "cannot list messages owed a receipt");
                Vec::new()
            }
        };
        let release = if owed.is_empty() {
            Vec::new()
        } else {
            self.queue_receipts(user, ReceiptKind::Delivered, &owed)
                .unwrap_or_else(|e| {
                    tracing::error!(error = %e, "cannot queue delivered receipts");
                    Vec::new()
                })
        };
        self.fetch_waiting_media(user);
        // They may deposit into our mailbox's own quota (with the key) and follow our
        // mailbox when it moves, from now on; the card leaves after the receipts.
        let mut release = release;
        release.extend(self.queue_card(user));
        release.extend(self.queue_profile_if_set(user));
        release
    }

    /// Dials a contact now, whatever the backoff said.
    pub(in crate::messenger) fn dial_contact(&mut self, user: UserId) {
        let dial_addrs = self
            .contacts
            .get(&user)
            .map(|c| c.multiaddrs())
            .unwrap_or_default();
        let state = self.peer(user);
        state.retry.allow_now();
        state.dialing_until = Some(Instant::now() + DIAL_TIMEOUT);
        self.net.dial(user.peer_id(), dial_addrs);
    }

    /// Starts the downloads of `user`'s media that waited only for them to become a contact
    /// (those over the auto-download size keep waiting for the user).
    fn fetch_waiting_media(&mut self, user: UserId) {
        let records = match self.store.all_media() {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(error = %e, "cannot list media records");
                return;
            }
        };
        for mut rec in records {
            if rec.outgoing
                || rec.peer != user
                || rec.state != MediaState::Waiting
                || !self.auto_downloads(&user, rec.size)
            {
                continue;
            }
            rec.state = MediaState::Downloading;
            match self.transfers.put_record(&rec) {
                Ok(()) => self.transfers.start(rec.id()),
                Err(e) => tracing::error!(error = %e, "cannot update media record"),
            }
        }
    }

    /// Blocks `user`: no longer a contact or a request; from now on their envelopes are
    /// acknowledged and dropped.
    pub(in crate::messenger) fn block_user(&mut self, user: UserId) -> Result<(), NodeError> {
        if user == self.user {
            return Err(NodeError::InvalidInput("you cannot block yourself".into()));
        }
        self.store.block(&user, now_ms()).map_err(store_err)?;
        self.store.remove_request(&user).map_err(store_err)?;
        self.requests.block(user);
        self.forget_contact(user)?;
        tracing::info!(%user, "user blocked");
        Ok(())
    }

    /// Unblocks `user` (they may write again, as a stranger).
    pub(in crate::messenger) fn unblock_user(&mut self, user: UserId) -> Result<(), NodeError> {
        if !self.requests.unblock(&user) {
            return Err(NodeError::NotFound(format!("{user} is not blocked")));
        }
        self.store.unblock(&user).map_err(store_err)?;
        Ok(())
    }

    /// Removes a contact: no more link, heartbeat, presence or receipts; what is still in
    /// the outbox for them is dropped. Their history stays.
    pub(in crate::messenger) fn remove_contact(&mut self, user: UserId) -> Result<(), NodeError> {
        if !self.contacts.contains_key(&user) {
            return Err(NodeError::UnknownContact(user.to_string()));
        }
        self.forget_contact(user)
    }

    /// Forgets everything kept to reach `user` as a contact (if they were one).
    fn forget_contact(&mut self, user: UserId) -> Result<(), NodeError> {
        self.store.remove_contact(&user).map_err(store_err)?;
        self.contacts.remove(&user);
        if let Some(mut state) = self.peers.remove(&user) {
            if let Some(link) = state.link.take() {
                link.task.abort();
            }
        }
        for entry in self.outbox.take_addressed_to(&user) {
            if let Err(e) = self.store.outbox_remove(&entry) {
                tracing::error!(error = %e, "cannot drop outbox entry");
            }
        }
        // Their sessions go too: a message in one is then refused as in an unknown session,
        // and they start a fresh one, which makes them a request like any stranger.
        self.sessions.forget(&user);
        self.store
            .put_sessions(&user, &PeerSessions::default())
            .map_err(store_err)?;
        Ok(())
    }
}
