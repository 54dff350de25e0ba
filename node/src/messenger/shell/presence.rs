//! Acting on presence: heartbeats out, records in, presence events.
//! The decisions are the pure part [`crate::messenger::presence`]'s; this is the shell acting on them.

use crate::messenger::presence::*;
use crate::messenger::*;

impl Messenger {
    pub(in crate::messenger) fn presence_view(
        &self,
        peer: &UserId,
    ) -> Result<PresenceView, NodeError> {
        if !self.contacts.contains_key(peer) {
            return Err(NodeError::UnknownContact(peer.to_string()));
        }
        let now = now_ms();
        Ok(match self.peers.get(peer) {
            Some(state) => state.seen.view(self.share_presence, now),
            None => Seen::default().view(false, now),
        })
    }

    pub(in crate::messenger) fn presence_event(&self, peer: &UserId) {
        if let Ok(view) = self.presence_view(peer) {
            self.emit(|| Event::Presence {
                user: peer.to_string(),
                presence: view,
            });
        }
    }

    pub(in crate::messenger) fn on_presence(&mut self, record: PresenceRecord) {
        let user = record.user;
        if !self.contacts.contains_key(&user) {
            return;
        }
        if let Err(e) = record.verify() {
            tracing::warn!(%user, error = %e, "forged presence record dropped");
            return;
        }
        let now = now_ms();
        if self.peer(user).seen.heard(record, now) {
            self.presence_event(&user);
        }
    }

    pub(in crate::messenger) fn presence_record(&mut self) -> PresenceRecord {
        self.presence_seq = self.presence_seq.max(now_ms()).saturating_add(1);
        let visibility = if self.share_presence {
            Visibility::Everyone
        } else {
            Visibility::Nobody
        };
        PresenceRecord::sign(&self.me, self.presence_seq, now_ms(), true, visibility)
    }

    pub(in crate::messenger) fn on_heartbeat(&mut self) {
        let my_stores = self.my_stores();
        self.transfers.set_mailbox_stores(my_stores.clone());
        let record = self.presence_record();
        for state in self.peers.values() {
            if let Some(link) = &state.link {
                let _ = link.tx.try_send(MsgFrame::Presence(record.clone()));
            }
        }
        // Readers ask the R store peers nearest to us for our last seen, so heartbeats go to
        // those R only; the wider 2R set we fetch our mailbox from just keeps its links.
        for (rank, store) in my_stores.into_iter().enumerate() {
            let link = self
                .stores
                .get(&store)
                .and_then(|s| s.link.as_ref())
                .filter(|l| !l.tx.is_closed());
            match link {
                Some(link) => {
                    if rank < self.cfg.replication {
                        let _ = link.tx.try_send(MailboxRequest::Presence(record.clone()));
                    }
                }
                // The link is gone (the store peer restarted, or dropped the stream on
                // arrival): open it again, which subscribes again and sends our presence.
                None => {
                    let due = self
                        .stores
                        .get(&store)
                        .is_some_and(|s| s.retry.is_due(Instant::now()));
                    if due {
                        self.store_link(store);
                    }
                }
            }
        }
        // Last seen of contacts we cannot hear directly comes from their store peers.
        if self.share_presence {
            let offline: Vec<UserId> = self
                .contacts
                .keys()
                .filter(|u| !self.peers.get(u).is_some_and(|s| s.connected))
                .copied()
                .collect();
            for user in offline {
                let set = self.store_set(&user, self.cfg.replication);
                let link = set
                    .iter()
                    .find_map(|p| self.stores.get(p).and_then(|s| s.link.as_ref()))
                    .map(|l| l.tx.clone());
                match link {
                    Some(tx) => {
                        let _ = tx.try_send(MailboxRequest::GetPresence(user));
                    }
                    None => {
                        if let Some(first) = set.first().copied() {
                            self.store_link(first);
                        }
                    }
                }
            }
        }
    }

    pub(in crate::messenger) fn on_stored_presence(&mut self, record: PresenceRecord) {
        let user = record.user;
        if !self.contacts.contains_key(&user) || record.verify().is_err() {
            return;
        }
        self.peer(user).seen.fetched(record);
    }
}
