//! Presence: heartbeats, online grace and last seen.

use super::*;

/// `meta` key of the user's last-seen sharing choice (1 share, 0 hide).
pub(super) const SHARE_LAST_SEEN_KEY: &str = "share_last_seen";

/// A heartbeat older than this many intervals means the contact is no longer online.
pub(super) const ONLINE_GRACE_INTERVALS: u32 = 3;

/// A contact's presence as this node knows it: what it last said, and when we heard it.
///
/// Pure: the caller verifies records and passes the wall clock in.
#[derive(Debug, Default)]
pub(super) struct Seen {
    /// The newest record (highest sequence number) we have, heard directly or fetched.
    record: Option<PresenceRecord>,
    /// When we last heard a heartbeat directly (unix ms).
    last_heard_ms: Option<u64>,
    /// Whether the contact counts as online now.
    online: bool,
}

impl Seen {
    /// A verified heartbeat heard directly at `now_ms`. A record no newer than the one we
    /// have is ignored. Returns whether the contact's online state changed.
    pub(super) fn heard(&mut self, record: PresenceRecord, now_ms: u64) -> bool {
        if !self.is_newer(&record) {
            return false;
        }
        let was_online = self.online;
        self.online = record.online;
        self.last_heard_ms = Some(now_ms);
        self.record = Some(record);
        was_online != self.online
    }

    /// A verified record a store peer holds for the contact: it tells last seen only, not
    /// that the contact is online now.
    pub(super) fn fetched(&mut self, record: PresenceRecord) {
        if self.is_newer(&record) {
            self.record = Some(record);
        }
    }

    fn is_newer(&self, record: &PresenceRecord) -> bool {
        self.record.as_ref().is_none_or(|p| p.seq < record.seq)
    }

    /// The contact is offline once no heartbeat came for longer than `grace`. Returns
    /// whether that changed its online state now.
    pub(super) fn expire(&mut self, now_ms: u64, grace: Duration) -> bool {
        let silent = self
            .last_heard_ms
            .is_some_and(|t| now_ms.saturating_sub(t) > grace.as_millis() as u64);
        if self.online && silent {
            self.online = false;
            return true;
        }
        false
    }

    /// The connection to the contact closed. Returns whether it was online until now.
    pub(super) fn disconnected(&mut self) -> bool {
        std::mem::replace(&mut self.online, false)
    }

    /// What the user may see at `now_ms`; `share` is whether the user shares their own last
    /// seen (it is mutual: whoever hides theirs sees no one else's).
    pub(super) fn view(&self, share: bool, now_ms: u64) -> PresenceView {
        let hidden = PresenceView {
            online: false,
            last_seen: None,
            last_seen_ms: None,
        };
        if !share
            || matches!(
                self.record.as_ref().map(|r| r.visibility),
                Some(Visibility::Nobody)
            )
        {
            return hidden;
        }
        let from_record = self
            .record
            .as_ref()
            .map(|r| r.last_seen_ms)
            .filter(|t| *t > 0);
        let last = if self.online {
            Some(now_ms)
        } else {
            self.last_heard_ms.max(from_record)
        };
        PresenceView {
            online: self.online,
            last_seen: last.map(rfc3339),
            last_seen_ms: last,
        }
    }
}

impl Messenger {
    pub(super) fn presence_view(&self, peer: &UserId) -> Result<PresenceView, NodeError> {
        if !self.contacts.contains_key(peer) {
            return Err(NodeError::UnknownContact(peer.to_string()));
        }
        let now = now_ms();
        Ok(match self.peers.get(peer) {
            Some(state) => state.seen.view(self.share_presence, now),
            None => Seen::default().view(false, now),
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
        let now = now_ms();
        if self.peer(user).seen.heard(record, now) {
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

    pub(super) fn on_stored_presence(&mut self, record: PresenceRecord) {
        let user = record.user;
        if !self.contacts.contains_key(&user) || record.verify().is_err() {
            return;
        }
        self.peer(user).seen.fetched(record);
    }
}

#[cfg(test)]
mod tests {
    use rand::{rngs::StdRng, SeedableRng};

    use super::*;

    const GRACE: Duration = Duration::from_secs(30);

    fn record(seq: u64, last_seen_ms: u64, online: bool, visibility: Visibility) -> PresenceRecord {
        let mut rng = StdRng::seed_from_u64(1);
        let me = LocalIdentity::generate(0, &mut rng);
        PresenceRecord::sign(&me, seq, last_seen_ms, online, visibility)
    }

    #[test]
    fn a_heartbeat_makes_the_contact_online_and_silence_past_grace_ends_it() {
        let mut s = Seen::default();
        assert!(s.heard(record(1, 1_000, true, Visibility::Everyone), 1_000));
        assert!(s.view(true, 2_000).online);
        assert!(
            !s.expire(1_000 + 30_000, GRACE),
            "exactly the grace: still online"
        );
        assert!(s.expire(1_000 + 30_001, GRACE));
        let v = s.view(true, 40_000);
        assert!(!v.online);
        assert_eq!(
            v.last_seen_ms,
            Some(1_000),
            "last seen is when we last heard it"
        );
        assert!(
            !s.expire(50_000, GRACE),
            "already offline: no second change"
        );
    }

    #[test]
    fn an_older_or_repeated_record_is_ignored() {
        let mut s = Seen::default();
        s.heard(record(5, 1_000, true, Visibility::Everyone), 1_000);
        assert!(!s.heard(record(4, 900, false, Visibility::Everyone), 2_000));
        assert!(!s.heard(record(5, 900, false, Visibility::Everyone), 2_000));
        assert!(s.view(true, 3_000).online);
        s.fetched(record(3, 500, false, Visibility::Everyone));
        assert!(s.view(true, 3_000).online);
    }

    #[test]
    fn a_fetched_record_gives_last_seen_but_never_online() {
        let mut s = Seen::default();
        s.fetched(record(2, 7_000, true, Visibility::Everyone));
        let v = s.view(true, 10_000);
        assert!(!v.online);
        assert_eq!(v.last_seen_ms, Some(7_000));
    }

    #[test]
    fn last_seen_is_hidden_when_either_side_hides_it() {
        let mut s = Seen::default();
        s.heard(record(1, 1_000, true, Visibility::Everyone), 1_000);
        assert_eq!(s.view(false, 2_000).last_seen_ms, None, "we hide ours");
        assert!(!s.view(false, 2_000).online);
        s.heard(record(2, 1_500, true, Visibility::Nobody), 1_500);
        assert_eq!(s.view(true, 2_000).last_seen_ms, None, "they hide theirs");
    }

    #[test]
    fn a_closed_connection_ends_online_at_once() {
        let mut s = Seen::default();
        s.heard(record(1, 1_000, true, Visibility::Everyone), 1_000);
        assert!(s.disconnected());
        assert!(!s.disconnected());
        assert!(!s.view(true, 1_100).online);
    }
}
