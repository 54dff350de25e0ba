//! Acting on sessions: sealing entries as they leave, loading stored sessions.
//! The decisions are the pure part [`crate::messenger::sessions`]'s; this is the shell acting on them.

use crate::messenger::sessions::*;
use crate::messenger::*;

impl Messenger {
    /// The next queued entry for `user`, sealed: skips entries already in flight, gone from
    /// the outbox or expired. `None` when the queue is empty, or when sealing failed (the
    /// entry then stays at the front of the queue).
    pub(in crate::messenger) fn next_sealed(
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
    pub(in crate::messenger) fn seal(
        &mut self,
        entry: &OutboxEntry,
        now_ms: u64,
    ) -> Result<Envelope, SealFailure> {
        let bundle: KeyBundle = self
            .contacts
            .get(&entry.to)
            .map(|c| c.bundle.clone())
            .ok_or(SealFailure::NotAContact)?;
        self.load_sessions(entry.to);
        Ok(self.sessions.seal(
            &self.me,
            &bundle,
            entry,
            now_ms,
            &self.policy,
            &mut self.rng,
        )?)
    }

    pub(in crate::messenger) fn load_sessions(&mut self, user: UserId) {
        if self.sessions.is_loaded(&user) {
            return;
        }
        let s = match self.store.sessions(&user) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(%user, error = %e, "stored sessions unreadable; starting fresh");
                PeerSessions::default()
            }
        };
        self.sessions.load(user, s);
    }
}
