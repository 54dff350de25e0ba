//! Sessions: sealing outgoing entries and loading stored sessions.

use super::*;

/// Why an outbox entry could not be sealed; the entry then stays queued.
#[derive(Debug, thiserror::Error)]
pub(super) enum SealFailure {
    /// The recipient is not (or no longer) a contact: we have no bundle to seal to.
    #[error("recipient is not a contact")]
    NotAContact,
    /// The protocol could not seal it (bad bundle, too large, Noise failure).
    #[error(transparent)]
    Seal(#[from] kith_protocol::SealError),
}

impl Messenger {
    /// The next queued entry for `user`, sealed: skips entries already in flight, gone from
    /// the outbox or expired. `None` when the queue is empty, or when sealing failed (the
    /// entry then stays at the front of the queue).
    pub(super) fn next_sealed(
        &mut self,
        user: UserId,
        state: &mut PeerState,
        now_ms: u64,
    ) -> Option<(MessageId, Envelope)> {
        loop {
            let id = state.queue.pop_front()?;
            if state.in_flight.contains_key(&id) {
                continue;
            }
            if let Some(expired) = self.outbox.take_if_expired(&id, now_ms) {
                self.expired(&expired);
                continue;
            }
            let Some(entry) = self.outbox.get(&id).cloned() else {
                continue;
            };
            return match self.seal(&entry, now_ms) {
                Ok(env) => Some((id, env)),
                Err(e) => {
                    tracing::warn!(%id, to = %user, error = %e, "cannot seal; message stays queued");
                    state.queue.push_front(id);
                    None
                }
            };
        }
    }

    /// Seals `entry` for its recipient in the current session (or a new one).
    pub(super) fn seal(
        &mut self,
        entry: &OutboxEntry,
        now_ms: u64,
    ) -> Result<Envelope, SealFailure> {
        let bundle: KeyBundle = self
            .contacts
            .get(&entry.to)
            .map(|c| c.bundle.clone())
            .ok_or(SealFailure::NotAContact)?;
        let header = EnvelopeHeader::new(entry.id, entry.to, entry.expires_at_ms);
        self.load_sessions(entry.to);
        let sessions = self.sessions.entry(entry.to).or_default();
        let body = sessions.seal(
            &self.me,
            &bundle,
            &header,
            &entry.plaintext,
            now_ms,
            &self.policy,
            &mut self.rng,
        )?;
        Ok(Envelope { header, body })
    }

    pub(super) fn load_sessions(&mut self, user: UserId) {
        if self.sessions.contains_key(&user) {
            return;
        }
        let s = match self.store.sessions(&user) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(%user, error = %e, "stored sessions unreadable; starting fresh");
                PeerSessions::default()
            }
        };
        for id in s.inbound_ids() {
            self.session_owner.insert(id, user);
        }
        self.sessions.insert(user, s);
    }
}
