//! What the messenger decides about media: sending references and uploading blobs to
//! store peers when the recipient is away.

use crate::messenger::*;

impl Messenger {
    /// Sends a media reference whose blob file is already in place under its hash. The blob
    /// goes to the recipient's store peers when the recipient is not connected now; otherwise
    /// the recipient pulls it from this node.
    pub(in crate::messenger) fn send_media(
        &mut self,
        to: UserId,
        media: MediaRef,
    ) -> Result<Sent, NodeError> {
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
            self.store_set(&to)
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
        self.transfers.put_record(&record).map_err(store_err)?;
        let sent = self.queue_outgoing(msg, entry)?;
        if record.state == MediaState::Uploading {
            self.transfers.start(record.id());
        }
        Ok(sent)
    }

    /// A media message went to store peers: its blob must follow it there (unless it is
    /// already on its way), or the recipient could not fetch it while we are away.
    pub(in crate::messenger) fn upload_media_of(
        &mut self,
        id: MessageId,
        to: UserId,
        stores: &[PeerId],
    ) {
        // A group message's copy to `to` has its own record (keyed by the copy's id).
        let media_id = match self.store.message(Direction::Outgoing, &to, &id) {
            Ok(Some(msg)) if msg.media.is_some() => MediaId::of_message(&msg),
            Ok(Some(_)) => return,
            _ if self.group_sends.contains_key(&id) => MediaId {
                outgoing: true,
                peer: to,
                message: id,
            },
            _ => return,
        };
        match self.store.media(&media_id) {
            Ok(Some(mut rec)) if rec.outgoing && rec.holders.is_empty() => {
                rec.state = MediaState::Uploading;
                rec.done_chunks = 0;
                rec.holders = stores.iter().map(|p| p.to_bytes()).collect();
                if let Err(e) = self.transfers.put_record(&rec) {
                    tracing::error!(error = %e, "cannot store media record");
                    return;
                }
                tracing::info!(hash = %rec.hash, "recipient away: uploading the media to its store peers");
                self.transfers.start(media_id);
            }
            Ok(_) => {}
            Err(e) => tracing::error!(error = %e, "cannot read media record"),
        }
    }
}
