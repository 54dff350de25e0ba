//! Group messages: sealed once with our sender key and queued as one envelope per member
//! (each its own outbox entry, with the same retries and durability as a one-to-one
//! message); received, opened with the sender's key (or held until it arrives), stored and
//! receipted; and each member's ✓, ✓✓ and blue tick folded into the slowest member's.

use kith_protocol::group::{transport_id, GroupMessage, SenderKey, SenderKeyGift};
use kith_protocol::payload::GroupReceipt;
use kith_protocol::GroupId;

use crate::messenger::*;
use crate::store::{GroupStoredMessage, OwnSenderKey};
use kith_protocol::payload::MediaRef;

impl Messenger {
    /// Sends a text to a group: our sender key (new, or handed to members who lack it)
    /// first, then the message, once sealed, to every other member.
    pub(in crate::messenger) fn send_group_text(
        &mut self,
        group: GroupId,
        text: String,
        client_meta: serde_json::Value,
    ) -> Result<(Sent, Vec<MessageId>), NodeError> {
        let meta = self.check_text(&text, &client_meta)?;
        let payload = Payload::Text(Text {
            body: text.clone(),
            client_meta: meta.clone(),
        });
        self.send_group_payload(group, payload, text, meta, None)
    }

    /// Sends a media message to a group: one blob, prepared once; each member's copy has its
    /// own media record (each member fetches from us, or from its store peers where we upload
    /// it while it is away).
    pub(in crate::messenger) fn send_group_media(
        &mut self,
        group: GroupId,
        media: MediaRef,
    ) -> Result<(Sent, Vec<MessageId>), NodeError> {
        if media.caption.len() > payload::MAX_TEXT_LEN {
            return Err(NodeError::TooLarge {
                what: "caption",
                len: media.caption.len(),
                max: payload::MAX_TEXT_LEN,
            });
        }
        let caption = media.caption.clone();
        self.send_group_payload(
            group,
            Payload::Media(media.clone()),
            caption,
            "{}".into(),
            Some(media),
        )
    }

    /// Seals `payload` once for `group` and queues a copy for every other member.
    fn send_group_payload(
        &mut self,
        group: GroupId,
        payload: Payload,
        text: String,
        meta: String,
        media: Option<MediaRef>,
    ) -> Result<(Sent, Vec<MessageId>), NodeError> {
        let record = match self.store.group(&group).map_err(store_err)? {
            Some(r) => r,
            None => return Err(NodeError::NotFound(format!("no group {group}"))),
        };
        let head = record.chain.head().clone();
        if !record.active || !head.state.is_member(&self.user) {
            return Err(NodeError::NotMember(group.to_string()));
        }
        let members: Vec<UserId> = head
            .state
            .members
            .iter()
            .copied()
            .filter(|u| *u != self.user)
            .collect();
        let now = now_ms();
        let id = MessageId::random(&mut self.rng);
        let mut own = match self.store.own_sender_key(&group).map_err(store_err)? {
            Some(k) => k,
            None => {
                let key_id = self.next_key_id(&group);
                OwnSenderKey {
                    key: SenderKey::generate(group, key_id, &mut self.rng),
                    given_to: Vec::new(),
                }
            }
        };
        let mut release = Vec::new();
        // Members without our current chain get it, from this message on, before it.
        for m in &members {
            if own.given_to.contains(m) {
                continue;
            }
            let gift = Payload::SenderKey(Box::new(SenderKeyGift {
                distribution: own.key.distribution(),
                state: head.clone(),
            }));
            release.push(self.queue_control(*m, &gift)?);
            own.given_to.push(*m);
        }
        let inner = Plaintext::new(&payload, now)
            .and_then(|p| Ok(kith_protocol::codec::encode(&p)?))
            .map_err(|e| NodeError::InvalidInput(e.to_string()))?;
        let sealed = own
            .key
            .seal(&self.user, id, head.epoch(), &inner)
            .map_err(|e| NodeError::InvalidInput(e.to_string()))?;
        self.store
            .put_own_sender_key(&group, Some(&own))
            .map_err(store_err)?;
        let raw = Payload::GroupMessage(Box::new(sealed))
            .to_raw()
            .map_err(|e| NodeError::InvalidInput(e.to_string()))?;
        let msg = GroupStoredMessage {
            id,
            group,
            sender: self.user,
            outgoing: true,
            text,
            client_meta: meta,
            sent_at_ms: now,
            stored_at_ms: now,
            status: if members.is_empty() {
                DeliveryStatus::Read
            } else {
                DeliveryStatus::Pending
            },
            media: media.as_ref().map(|m| BlobHash(m.hash)),
            counts: [members.len() as u32, 0, 0, 0],
        };
        self.store
            .insert_group_message(&msg, &members)
            .map_err(store_err)?;
        for m in &members {
            let entry = OutboxEntry {
                seq: self.store.next_seq().map_err(store_err)?,
                id: transport_id(&id, m),
                to: *m,
                plaintext: Plaintext {
                    sent_at_ms: now,
                    payload: raw.clone(),
                },
                expires_at_ms: now.saturating_add(self.cfg.message_lifetime.as_millis() as u64),
                tracked: true,
            };
            self.store.outbox_put(&entry).map_err(store_err)?;
            if let Some(m) = &media {
                self.put_group_media_record(m, entry.id, entry.to, entry.expires_at_ms)?;
            }
            self.group_sends.insert(entry.id, (group, id));
            release.push(entry.id);
            self.outbox.insert(entry);
        }
        self.emit(|| Event::Message {
            peer: group.to_string(),
            message: crate::view::group_message_view(&self.store, &self.user, &msg),
        });
        Ok((
            Sent {
                id: id.to_string(),
                status: msg.status,
            },
            release,
        ))
    }

    /// The media record of our copy `copy` (of a group media message) to `member`: the blob
    /// is served to them from here, or uploaded to their store peers while they are away.
    fn put_group_media_record(
        &mut self,
        m: &MediaRef,
        copy: MessageId,
        member: UserId,
        expires_at_ms: u64,
    ) -> Result<(), NodeError> {
        let online = self.peers.get(&member).is_some_and(|p| p.connected);
        let stores = if online {
            Vec::new()
        } else {
            self.store_set(&member)
        };
        let record = MediaRecord {
            hash: BlobHash(m.hash),
            key: m.key,
            size: m.size,
            chunk_size: m.chunk_size,
            mime: m.mime.clone(),
            name: m.name.clone(),
            preview: m.preview.clone(),
            message: copy,
            peer: member,
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
        self.transfers.put_record(&record).map_err(store_err)?;
        if record.state == MediaState::Uploading {
            self.transfers.start(record.id());
        }
        Ok(())
    }

    /// The id of our next sender chain in `group`: one more than any we used (the chain
    /// ids a member holds of ours must grow, or it keeps the old chain).
    fn next_key_id(&mut self, group: &GroupId) -> u32 {
        let key = format!("group_key_id/{group}");
        let next = self
            .store
            .meta_u64(&key)
            .ok()
            .flatten()
            .unwrap_or(0)
            .saturating_add(1);
        if let Err(e) = self.store.set_meta_u64(&key, next) {
            tracing::error!(error = %e, "cannot store sender key id");
        }
        u32::try_from(next).unwrap_or(u32::MAX)
    }

    /// A group message from `sender`: stored and receipted if it opens; held until the
    /// sender's key comes if not yet; dropped if it never can.
    pub(in crate::messenger) fn open_group_message(
        &mut self,
        sender: UserId,
        msg: GroupMessage,
        batch: &mut BatchEffects,
    ) {
        let group = msg.group;
        match self.store.has_group_message(&group, &sender, &msg.id) {
            Ok(true) => {
                batch
                    .group_delivered
                    .entry((sender, group))
                    .or_default()
                    .push(msg.id);
                return;
            }
            Ok(false) => {}
            Err(e) => {
                tracing::error!(error = %e, "cannot look up group message");
                return;
            }
        }
        let allowed = match self.store.group(&group) {
            Ok(Some(r)) => {
                let now = r.chain.head().state.is_member(&sender);
                if !now && r.chain.ever_member(&sender) {
                    // Removed (or gone): the epoch a message claims is the sender's word, so
                    // nothing of theirs is taken once we applied their removal.
                    tracing::info!(%group, %sender, "group message from a former member; dropped");
                    return;
                }
                now
            }
            Ok(None) => false,
            Err(e) => {
                tracing::error!(error = %e, "cannot read group");
                return;
            }
        };
        let mut keys = match self.store.their_sender_keys(&group, &sender) {
            Ok(k) => k,
            Err(e) => {
                tracing::error!(error = %e, "cannot read sender keys");
                return;
            }
        };
        if !allowed || !keys.has(msg.key_id) {
            // The state or the key may still be on the way (through another store peer).
            match self.store.hold_group_message(&sender, &msg) {
                Ok(true) => tracing::debug!(%group, %sender, "group message held for its key"),
                Ok(false) => {
                    tracing::warn!(%group, %sender, "too many held group messages; dropped")
                }
                Err(e) => tracing::error!(error = %e, "cannot hold group message"),
            }
            return;
        }
        let bytes = match keys.open(&sender, &msg) {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(%group, %sender, error = %e, "group message does not open; dropped");
                return;
            }
        };
        if let Err(e) = self.store.put_their_sender_keys(&group, &sender, &keys) {
            tracing::error!(error = %e, "cannot store sender keys");
            return;
        }
        let plaintext: Plaintext = match kith_protocol::codec::decode(&bytes) {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(%group, %sender, error = %e, "group plaintext invalid; dropped");
                return;
            }
        };
        let mut media = None;
        let (text, client_meta) = match plaintext.payload.decode() {
            Ok(Payload::Text(t)) => (t.body, t.client_meta),
            Ok(Payload::Media(m)) => {
                if m.layout().is_err() {
                    tracing::warn!(%group, %sender, "group media with an invalid layout; dropped");
                    return;
                }
                let caption = m.caption.clone();
                media = Some(m);
                (caption, "{}".into())
            }
            Ok(other) => {
                tracing::info!(%group, %sender, ?other, "group payload not shown");
                return;
            }
            Err(e) => {
                tracing::warn!(%group, %sender, error = %e, "group payload invalid; dropped");
                return;
            }
        };
        let stored = GroupStoredMessage {
            id: msg.id,
            group,
            sender,
            outgoing: false,
            text,
            client_meta,
            sent_at_ms: plaintext.sent_at_ms,
            stored_at_ms: now_ms(),
            status: DeliveryStatus::Delivered,
            media: media.as_ref().map(|m| BlobHash(m.hash)),
            counts: [0; 4],
        };
        let mut download = None;
        if let Some(m) = &media {
            match self.incoming_group_media(m, msg.id, sender) {
                Ok(d) => download = d,
                Err(e) => {
                    tracing::error!(error = %e, "cannot store media record");
                    return;
                }
            }
        }
        match self.store.insert_group_message(&stored, &[]) {
            Ok(true) => {
                if let Some(media_id) = download {
                    self.transfers.start(media_id);
                }
                self.emit(|| Event::Message {
                    peer: group.to_string(),
                    message: crate::view::group_message_view(&self.store, &self.user, &stored),
                });
                batch
                    .group_delivered
                    .entry((sender, group))
                    .or_default()
                    .push(msg.id);
            }
            Ok(false) => {}
            Err(e) => tracing::error!(error = %e, "cannot store group message"),
        }
    }

    /// Writes the record of a received group media message (unless one is there from an
    /// earlier attempt); the media id to download now, if it is to be fetched at once.
    fn incoming_group_media(
        &mut self,
        m: &MediaRef,
        id: MessageId,
        sender: UserId,
    ) -> Result<Option<MediaId>, StoreError> {
        // The sender serves its own blob while online; our store peers hold it otherwise.
        let mut holders = vec![sender.peer_id()];
        holders.extend(self.my_stores());
        let expires = now_ms().saturating_add(self.cfg.message_lifetime.as_millis() as u64);
        let mut record = MediaRecord::incoming(m, id, sender, &holders, expires);
        let media_id = record.id();
        if self.store.media(&media_id)?.is_some() {
            return Ok(None);
        }
        let auto = self.auto_downloads(&sender, m.size);
        if !auto {
            record.state = MediaState::Waiting;
        }
        self.transfers.put_record(&record)?;
        Ok(auto.then_some(media_id))
    }

    /// Queues delivered (or read) receipts for group messages, one per sender and group.
    pub(in crate::messenger) fn queue_group_receipts(
        &mut self,
        to: UserId,
        group: GroupId,
        kind: ReceiptKind,
        ids: &[MessageId],
    ) -> Vec<MessageId> {
        let mut out = Vec::new();
        for chunk in ids.chunks(payload::MAX_RECEIPT_IDS) {
            let receipt = Payload::GroupReceipt(GroupReceipt {
                group,
                kind,
                ids: chunk.to_vec(),
            });
            match self.queue_control(to, &receipt) {
                Ok(id) => out.push(id),
                Err(e) => tracing::error!(error = %e, "cannot queue group receipt"),
            }
        }
        out
    }

    /// A member's receipt for our group messages: settles their copies and moves their
    /// statuses.
    pub(in crate::messenger) fn on_group_receipt(
        &mut self,
        sender: UserId,
        receipt: GroupReceipt,
        batch: &mut BatchEffects,
    ) {
        let to = match receipt.kind {
            ReceiptKind::Delivered => DeliveryStatus::Delivered,
            ReceiptKind::Read => DeliveryStatus::Read,
        };
        for mid in receipt.ids {
            let tid = transport_id(&mid, &sender);
            if self.outbox.addressed_to(&tid, &sender) {
                self.peer(sender).acked_by_receipt(&tid);
                self.settle(&tid);
                batch.settled.insert(sender);
            }
            match self.store.sent_group_of(&mid) {
                Ok(Some(g)) if g == receipt.group => self.set_member_status(&sender, &mid, to),
                Ok(_) => {}
                Err(e) => tracing::error!(error = %e, "cannot read group message"),
            }
        }
    }

    /// Moves `member`'s status of our group message `id`; the message's own status (the
    /// slowest member's) follows, announced when it moves.
    pub(in crate::messenger) fn set_member_status(
        &mut self,
        member: &UserId,
        id: &MessageId,
        status: DeliveryStatus,
    ) {
        match self.store.advance_member_status(id, member, status) {
            Ok(Some(msg)) => self.emit(|| Event::Status {
                peer: msg.group.to_string(),
                id: id.to_string(),
                status: msg.status,
            }),
            Ok(None) => {}
            Err(e) => tracing::error!(error = %e, "cannot update member status"),
        }
    }

    /// Marks a group's received messages read and sends each sender its read receipt.
    pub(in crate::messenger) fn mark_group_read(
        &mut self,
        group: GroupId,
    ) -> Result<(usize, Vec<MessageId>), NodeError> {
        if self.store.group(&group).map_err(store_err)?.is_none() {
            return Err(NodeError::NotFound(format!("no group {group}")));
        }
        let read = self.store.mark_group_read(&group).map_err(store_err)?;
        let mut by_sender: HashMap<UserId, Vec<MessageId>> = HashMap::new();
        for (sender, id) in &read {
            by_sender.entry(*sender).or_default().push(*id);
        }
        let mut release = Vec::new();
        for (sender, ids) in by_sender {
            release.extend(self.queue_group_receipts(sender, group, ReceiptKind::Read, &ids));
        }
        Ok((read.len(), release))
    }
}
