//! Delete for me (the messenger is the one writer of messages, so a delete here cannot race
//! a status update writing the message back) and "typing…", which bypasses the outbox: it
//! leaves only over a direct link that is up, and is never queued, deposited or resent.

use kith_protocol::{
    payload::{Payload, Typing},
    wire::MsgFrame,
    MessageId, Plaintext,
};
use tokio::sync::oneshot;

use crate::handle::ChatId;
use crate::messenger::*;

/// How long a typing envelope is valid: past it, a late copy is refused unopened.
const TYPING_LIFETIME_MS: u64 = 10_000;

impl Messenger {
    /// Sends "typing" to `peer` if a direct link to them is up; `Ok(false)` when it did not
    /// leave (no link, or the link's queue is full).
    pub(in crate::messenger) fn send_typing(
        &mut self,
        peer: UserId,
        typing: bool,
    ) -> Result<bool, NodeError> {
        if !self.contacts.contains_key(&peer) {
            return Err(NodeError::UnknownContact(peer.to_string()));
        }
        if self.peers.get(&peer).is_none_or(|s| s.link.is_none()) {
            return Ok(false);
        }
        let now = now_ms();
        let plaintext = Plaintext::new(&Payload::Typing(Typing { typing }), now)
            .map_err(|e| NodeError::InvalidInput(e.to_string()))?;
        // Sealed like any message, but held nowhere: not in the outbox, not in the store.
        let entry = OutboxEntry {
            seq: 0,
            id: MessageId::random(&mut self.rng),
            to: peer,
            plaintext,
            expires_at_ms: now.saturating_add(TYPING_LIFETIME_MS),
            tracked: false,
        };
        let envelope = match self.seal(&entry, now) {
            Ok(envelope) => envelope,
            Err(e) => {
                tracing::debug!(%peer, error = ?e, "typing not sealed; dropped");
                return Ok(false);
            }
        };
        let Some(link) = self.peers.get(&peer).and_then(|s| s.link.as_ref()) else {
            return Ok(false);
        };
        Ok(link.tx.try_send(MsgFrame::Envelope(envelope)).is_ok())
    }

    /// Deletes the message `id` of `chat` from this node and answers once that is durable.
    pub(in crate::messenger) fn delete_for_me(
        &mut self,
        chat: ChatId,
        id: MessageId,
        reply: oneshot::Sender<Result<(), NodeError>>,
    ) {
        let deleted = match chat {
            ChatId::User(peer) => self.store.delete_message(&peer, &id),
            ChatId::Group(group) => self.store.delete_group_message(&group, &id),
        };
        match deleted {
            Ok(true) => self.reply_after_commit(reply, (), Vec::new()),
            Ok(false) => {
                let _ = reply.send(Err(NodeError::NotFound(format!("no message {id}"))));
            }
            Err(e) => {
                let _ = reply.send(Err(store_err(e)));
            }
        }
    }
}
