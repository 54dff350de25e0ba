//! Presence: heartbeats, online grace and last seen.

use super::*;

/// `meta` key of the user's last-seen sharing choice (1 share, 0 hide).
pub(super) const SHARE_LAST_SEEN_KEY: &str = "share_last_seen";

/// Heartbeats go to the store peers we named every interval (readers who cannot reach us
/// ask those for our last seen); a contact with a direct link to us hears a fresh record
/// once every this many intervals, at once when the link opens and whenever our sharing
/// choice changes. While the link is up the connection itself says we are there (libp2p's
/// ping closes a dead one), so the record every 5 s to every contact was traffic and
/// wake-ups growing with the contact list for nothing the user sees.
pub(super) const CONTACT_REFRESH_INTERVALS: u32 = 6;

/// A contact not heard from for longer than this many of its refreshes (an open link gone
/// silent) is no longer online.
pub(super) const ONLINE_GRACE_REFRESHES: u32 = 2;

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

    /// The connection to the contact closed at `now_ms`. Returns whether it was online until
    /// now; if so, it was last seen now (the open connection showed it there, and records
    /// come only every few intervals).
    pub(super) fn disconnected(&mut self, now_ms: u64) -> bool {
        let was_online = std::mem::replace(&mut self.online, false);
        if was_online {
            self.last_heard_ms = self.last_heard_ms.max(Some(now_ms));
        }
        was_online
    }

    /// What the user may see at `now_ms`; `share` is whether the user shares their own last
    /// seen (it is mutual: whoever hides theirs sees no one else's).
    pub(super) fn view(&self, share: bool, now_ms: u64) -> PresenceView {
        let hidden = PresenceView {
            online: false,
            last_seen: None,
            last_seen_ms: None,
            route: Default::default(),
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
            route: Default::default(),
        }
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
    fn a_closed_connection_ends_online_at_once_and_is_the_last_seen() {
        let mut s = Seen::default();
        s.heard(record(1, 1_000, true, Visibility::Everyone), 1_000);
        assert!(s.disconnected(20_000));
        assert!(!s.disconnected(25_000));
        let v = s.view(true, 30_000);
        assert!(!v.online);
        assert_eq!(v.last_seen_ms, Some(20_000), "seen until the link closed");
    }
}
