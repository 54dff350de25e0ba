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
        let mut view = match self.peers.get(peer) {
            Some(state) => state.seen.view(self.settings.last_seen.shares(), now),
            None => Seen::default().view(false, now),
        };
        view.route = self.net.route(&peer.peer_id()).into();
        Ok(view)
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
        // Direct links carry it only to contacts; store peers show it to anyone who asks
        // (`everyone`), to holders of our access key (`contacts`) or to nobody.
        let visibility = self.settings.last_seen.visibility();
        PresenceRecord::sign(&self.me, self.presence_seq, now_ms(), true, visibility)
    }

    pub(in crate::messenger) fn on_heartbeat(&mut self) {
        let my_stores = self.my_stores();
        self.transfers.set_mailbox_stores(my_stores.clone());
        let record = self.presence_record();
        // Contacts with a link hear us at its opening and every few intervals (see
        // CONTACT_REFRESH_INTERVALS).
        if self.beats_since_contacts >= CONTACT_REFRESH_INTERVALS {
            self.beats_since_contacts = 0;
            for state in self.peers.values() {
                if let Some(link) = &state.link {
                    let _ = link.tx.try_send(MsgFrame::Presence(record.clone()));
                }
            }
        }
        self.beats_since_contacts = self.beats_since_contacts.saturating_add(1);
        // Readers ask the store peers we named for our last seen, so heartbeats go to those
        // only; the ones named before, which we still fetch from, just keep their links.
        let named = self.named_stores();
        for store in my_stores {
            let link = self
                .stores
                .get(&store)
                .and_then(|s| s.link.as_ref())
                .filter(|l| !l.tx.is_closed());
            match link {
                Some(link) => {
                    if named.contains(&store) {
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
        if self.settings.last_seen.shares() {
            let offline: Vec<UserId> = self
                .contacts
                .keys()
                .filter(|u| !self.peers.get(u).is_some_and(|s| s.connected))
                .copied()
                .collect();
            for user in offline {
                // Asked through the deposit identity: the store peer learns that someone
                // holding the key asks, not who.
                let key = self.access_key_of(&user);
                let set = self.store_set(&user);
                if let Some(tx) = set.iter().find_map(|p| self.deposit_link(*p)) {
                    let _ = tx.try_send(MailboxRequest::GetPresence(user, key));
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
