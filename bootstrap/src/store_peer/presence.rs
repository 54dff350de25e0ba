//! The presence records a store peer keeps, with a lifetime: a record not refreshed by its
//! user's heartbeat within the TTL is dropped, and when the table is full the record heard
//! longest ago makes room. Made-up identities can therefore only churn the table, never lock
//! real users out of it (as a table that refuses newcomers when full would).

use std::{
    collections::{BTreeSet, HashMap},
    time::Duration,
};

use kith_protocol::{presence::PresenceTable, PresenceRecord, UserId};

/// Presence records and when each was last heard.
pub(super) struct HeldPresence {
    table: PresenceTable,
    heard: HashMap<UserId, u64>,
    /// `heard` ordered by time, to find the oldest and the expired without a scan.
    by_time: BTreeSet<(u64, UserId)>,
    capacity: usize,
    ttl_ms: u64,
}

impl HeldPresence {
    /// At most `capacity` users, each kept `ttl` after its last heartbeat.
    pub(super) fn new(capacity: usize, ttl: Duration) -> Self {
        HeldPresence {
            // The table itself never refuses: eviction here keeps it below its capacity.
            table: PresenceTable::new(capacity.saturating_add(1)),
            heard: HashMap::new(),
            by_time: BTreeSet::new(),
            capacity: capacity.max(1),
            ttl_ms: u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX),
        }
    }

    /// Keeps `record` (its user authenticated as the sender) if newer than the one held;
    /// true when kept.
    pub(super) fn accept_from_owner(&mut self, record: PresenceRecord, now_ms: u64) -> bool {
        let user = record.user;
        if !self.heard.contains_key(&user) && self.heard.len() >= self.capacity {
            if let Some(&(t, oldest)) = self.by_time.iter().next() {
                self.forget(&oldest, t);
            }
        }
        if self.table.accept_from_owner(record).is_err() {
            return false;
        }
        if let Some(t) = self.heard.insert(user, now_ms) {
            self.by_time.remove(&(t, user));
        }
        self.by_time.insert((now_ms, user));
        true
    }

    /// `user`'s record, if held.
    pub(super) fn get(&self, user: &UserId) -> Option<&PresenceRecord> {
        self.table.get(user)
    }

    /// Drops `user`'s record (they asked to be shown to nobody).
    pub(super) fn remove(&mut self, user: &UserId) {
        if let Some(t) = self.heard.get(user).copied() {
            self.forget(user, t);
        }
    }

    /// Drops every record not heard within the TTL; returns how many.
    pub(super) fn expire(&mut self, now_ms: u64) -> usize {
        let cutoff = now_ms.saturating_sub(self.ttl_ms);
        let old: Vec<(u64, UserId)> = self
            .by_time
            .iter()
            .take_while(|(t, _)| *t < cutoff)
            .copied()
            .collect();
        for (t, u) in &old {
            self.forget(u, *t);
        }
        old.len()
    }

    fn forget(&mut self, user: &UserId, heard: u64) {
        self.by_time.remove(&(heard, *user));
        self.heard.remove(user);
        self.table.remove(user);
    }

    /// Users held.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.heard.len()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use kith_protocol::{LocalIdentity, Visibility};

    use super::*;

    fn record(who: &LocalIdentity, seq: u64) -> PresenceRecord {
        PresenceRecord::sign(who, seq, seq, true, Visibility::Everyone)
    }

    #[test]
    fn fake_identities_cannot_lock_a_real_user_out_of_a_full_table() {
        let mut held = HeldPresence::new(10, Duration::from_secs(60));
        let fakes: Vec<LocalIdentity> = (0..10)
            .map(|_| LocalIdentity::generate(0, &mut rand::rngs::OsRng))
            .collect();
        for f in &fakes {
            assert!(held.accept_from_owner(record(f, 1), 1_000));
        }
        let alice = LocalIdentity::generate(0, &mut rand::rngs::OsRng);
        assert!(held.accept_from_owner(record(&alice, 1), 2_000));
        assert!(held.get(&alice.user_id()).is_some());
        assert_eq!(held.len(), 10);
    }

    #[test]
    fn records_not_refreshed_within_the_ttl_are_dropped() {
        let mut held = HeldPresence::new(10, Duration::from_secs(60));
        let (a, b) = (
            LocalIdentity::generate(0, &mut rand::rngs::OsRng),
            LocalIdentity::generate(0, &mut rand::rngs::OsRng),
        );
        held.accept_from_owner(record(&a, 1), 0);
        held.accept_from_owner(record(&b, 1), 50_000);
        assert_eq!(held.expire(70_000), 1);
        assert!(held.get(&a.user_id()).is_none());
        assert!(held.get(&b.user_id()).is_some());
    }
}
