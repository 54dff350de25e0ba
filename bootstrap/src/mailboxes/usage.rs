//! What a store peer's mailboxes hold, in memory: per-mailbox and total counts, kept as
//! envelopes and tombstones come and go, so quotas and gauges never scan the database.

use std::collections::HashMap;

use kith_protocol::{mailbox::EnvelopeRef, UserId};

/// What the mailboxes hold, kept in memory (rebuilt at open) so that quotas and gauges never
/// scan the database.
#[derive(Default, Debug)]
pub(super) struct Usage {
    /// Messages and bytes per mailbox holding any.
    pub(super) per_mailbox: HashMap<UserId, (usize, u64)>,
    /// Messages held in all.
    pub(super) messages: u64,
    /// Bytes held in all.
    pub(super) bytes: u64,
    /// Tombstones per mailbox owner having any.
    pub(super) tombstones: HashMap<UserId, usize>,
    /// Tombstones in all.
    pub(super) tombstones_total: usize,
}

impl Usage {
    pub(super) fn add(&mut self, user: UserId, bytes: u64) {
        let e = self.per_mailbox.entry(user).or_default();
        e.0 += 1;
        e.1 += bytes;
        self.messages += 1;
        self.bytes += bytes;
    }

    pub(super) fn remove(&mut self, user: &UserId, bytes: u64) {
        if let Some(e) = self.per_mailbox.get_mut(user) {
            e.0 = e.0.saturating_sub(1);
            e.1 = e.1.saturating_sub(bytes);
            if e.0 == 0 {
                self.per_mailbox.remove(user);
            }
            self.messages = self.messages.saturating_sub(1);
            self.bytes = self.bytes.saturating_sub(bytes);
        }
    }

    pub(super) fn tombstone_added(&mut self, owner: UserId) {
        *self.tombstones.entry(owner).or_default() += 1;
        self.tombstones_total += 1;
    }

    pub(super) fn tombstone_gone(&mut self, owner: &UserId) {
        if let Some(n) = self.tombstones.get_mut(owner) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.tombstones.remove(owner);
            }
            self.tombstones_total = self.tombstones_total.saturating_sub(1);
        }
    }
}

/// Totals of what the mailboxes hold (for gauges: no copy of any per-mailbox figure).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Totals {
    /// Mailboxes holding messages.
    pub mailboxes: usize,
    /// Messages held.
    pub messages: u64,
    /// Bytes of messages held.
    pub bytes: u64,
    /// Tombstones held.
    pub tombstones: usize,
}

/// One page of a mailbox listing: envelopes in arrival order, and where the next page starts.
#[derive(Debug, Default)]
pub struct Page {
    /// The envelopes (identity and bytes), oldest first.
    pub held: Vec<(EnvelopeRef, Vec<u8>)>,
    /// The key to continue after, when the mailbox may hold more.
    pub next: Option<Vec<u8>>,
}
