//! Presence: heartbeats, online grace and last seen.

use super::*;

/// `meta` key of the user's last-seen sharing choice (1 share, 0 hide).
pub(super) const SHARE_LAST_SEEN_KEY: &str = "share_last_seen";

/// A heartbeat older than this many intervals means the contact is no longer online.
pub(super) const ONLINE_GRACE_INTERVALS: u32 = 3;

impl Messenger {
    pub(super) fn presence_view(&self, peer: &UserId) -> Result<PresenceView, NodeError> {
        if !self.contacts.contains_key(peer) {
            return Err(NodeError::UnknownContact(peer.to_string()));
        }
        let hidden = PresenceView {
            online: false,
            last_seen: None,
            last_seen_ms: None,
        };
        // Mutual: whoever hides their own last seen sees no one else's.
        if !self.share_presence {
            return Ok(hidden);
        }
        let Some(state) = self.peers.get(peer) else {
            return Ok(hidden);
        };
        if matches!(
            state.presence.as_ref().map(|r| r.visibility),
            Some(Visibility::Nobody)
        ) {
            return Ok(hidden);
        }
        let from_record = state
            .presence
            .as_ref()
            .map(|r| r.last_seen_ms)
            .filter(|t| *t > 0);
        let last = if state.online {
            Some(now_ms())
        } else {
            state.last_heard_ms.max(from_record)
        };
        Ok(PresenceView {
            online: state.online,
            last_seen: last.map(rfc3339),
            last_seen_ms: last,
        })
    }

    pub(super) fn presence_event(&self, peer: &UserId) {
        if let Ok(view) = self.presence_view(peer) {
            self.emit(|| Event::Presence {
                user: peer.to_string(),
                presence: view,
            });
        }
    }

    pub(super) fn on_presence(&mut self, record: PresenceRecord) {
        let user = record.user;
        if !self.contacts.contains_key(&user) {
            return;
        }
        if let Err(e) = record.verify() {
            tracing::warn!(%user, error = %e, "forged presence record dropped");
            return;
        }
        let state = self.peer(user);
        if state.presence.as_ref().is_some_and(|p| p.seq >= record.seq) {
            return;
        }
        let was_online = state.online;
        state.online = record.online;
        state.last_heard_ms = Some(now_ms());
        state.presence = Some(record);
        if was_online != state.online {
            self.presence_event(&user);
        }
    }

    pub(super) fn presence_record(&mut self) -> PresenceRecord {
        self.presence_seq = self.presence_seq.max(now_ms()).saturating_add(1);
        let visibility = if self.share_presence {
            Visibility::Everyone
        } else {
            Visibility::Nobody
        };
        PresenceRecord::sign(&self.me, self.presence_seq, now_ms(), true, visibility)
    }

    pub(super) fn on_heartbeat(&mut self) {
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
                        .is_some_and(|s| s.retry_at.is_none_or(|t| t <= Instant::now()));
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

    pub(super) fn on_stored_presence(&mut self, record: PresenceRecord) {
        let user = record.user;
        if !self.contacts.contains_key(&user) || record.verify().is_err() {
            return;
        }
        let state = self.peer(user);
        if state.presence.as_ref().is_some_and(|p| p.seq >= record.seq) {
            return;
        }
        state.presence = Some(record);
    }
}
