//! The outbox: outgoing messages and receipts, their statuses, expiry and resending.

use super::*;

/// How many times an envelope the peer refused as invalid is resealed and sent again (with a
/// fresh handshake) before it is given up.
pub(super) const MAX_INVALID_RETRIES: u32 = 3;

/// The outbox in memory: every entry not yet settled, and which of them reached ✓ and wait
/// for their delivered receipt.
///
/// Pure: it decides what expired and what is due to be sent again at the `now` it is given;
/// the shell removes entries from the store and queues them.
#[derive(Default)]
pub(super) struct Outbox {
    /// Unsettled entries by id.
    entries: HashMap<MessageId, OutboxEntry>,
    /// Our messages that reached ✓ and wait for their delivered receipt, with when they were
    /// last sent; their entries are kept until the receipt comes (see
    /// [`Config::receipt_timeout`]).
    awaiting_receipt: HashMap<MessageId, Instant>,
}

impl Outbox {
    /// Adds (or replaces) an entry.
    pub(super) fn insert(&mut self, entry: OutboxEntry) {
        self.entries.insert(entry.id, entry);
    }

    /// The entry `id`, if it is still unsettled.
    pub(super) fn get(&self, id: &MessageId) -> Option<&OutboxEntry> {
        self.entries.get(id)
    }

    /// How many entries there are.
    pub(super) fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the entry `id` is addressed to `user`: only its recipient's answers (or its
    /// deposits' store peers, on its behalf) may settle or drop it.
    pub(super) fn addressed_to(&self, id: &MessageId, user: &UserId) -> bool {
        self.get(id).is_some_and(|e| e.to == *user)
    }

    /// Takes out every entry addressed to `user` (they are no longer a contact).
    pub(super) fn take_addressed_to(&mut self, user: &UserId) -> Vec<OutboxEntry> {
        let ids: Vec<MessageId> = self
            .entries
            .values()
            .filter(|e| e.to == *user)
            .map(|e| e.id)
            .collect();
        ids.iter().filter_map(|id| self.remove(id)).collect()
    }

    /// Takes the entry `id` out for good (settled, refused or expired).
    pub(super) fn remove(&mut self, id: &MessageId) -> Option<OutboxEntry> {
        self.awaiting_receipt.remove(id);
        self.entries.remove(id)
    }

    /// The entry `id` reached ✓ at `now`: it now waits for its delivered receipt.
    pub(super) fn await_receipt(&mut self, id: MessageId, now: Instant) {
        if self.entries.contains_key(&id) {
            self.awaiting_receipt.insert(id, now);
        }
    }

    /// Takes out the entry `id` if it expired by `now_ms`.
    pub(super) fn take_if_expired(&mut self, id: &MessageId, now_ms: u64) -> Option<OutboxEntry> {
        if !kith_net::clock::is_expired(self.get(id)?.expires_at_ms, now_ms) {
            return None;
        }
        self.remove(id)
    }

    /// Takes out every entry that expired by `now_ms`, oldest first.
    pub(super) fn take_expired(&mut self, now_ms: u64) -> Vec<OutboxEntry> {
        let mut ids: Vec<(u64, MessageId)> = self
            .entries
            .values()
            .filter(|e| kith_net::clock::is_expired(e.expires_at_ms, now_ms))
            .map(|e| (e.seq, e.id))
            .collect();
        ids.sort_unstable();
        ids.iter().filter_map(|(_, id)| self.remove(id)).collect()
    }

    /// The messages to `user` whose delivered receipt has not come within `timeout` of
    /// their last send, oldest first. They count as sent again at `now`, so they are due
    /// again only after another `timeout`.
    pub(super) fn due_for_resend(
        &mut self,
        user: &UserId,
        now: Instant,
        timeout: Duration,
    ) -> Vec<MessageId> {
        let mut due: Vec<(u64, MessageId)> = self
            .awaiting_receipt
            .iter()
            .filter(|(_, at)| now.duration_since(**at) > timeout)
            .filter_map(|(id, _)| {
                self.entries
                    .get(id)
                    .filter(|e| e.to == *user)
                    .map(|e| (e.seq, *id))
            })
            .collect();
        due.sort_unstable();
        for (_, id) in &due {
            self.awaiting_receipt.insert(*id, now);
        }
        due.into_iter().map(|(_, id)| id).collect()
    }
}

#[cfg(test)]
mod tests {
    use rand::{rngs::StdRng, SeedableRng};

    use super::*;

    const TIMEOUT: Duration = Duration::from_secs(60);

    struct Fixture {
        rng: StdRng,
        alice: UserId,
        bob: UserId,
    }

    impl Fixture {
        fn new() -> Self {
            let mut rng = StdRng::seed_from_u64(11);
            let alice = LocalIdentity::generate(0, &mut rng).user_id();
            let bob = LocalIdentity::generate(0, &mut rng).user_id();
            Fixture { rng, alice, bob }
        }

        fn entry(&mut self, seq: u64, to: UserId, expires_at_ms: u64) -> OutboxEntry {
            let payload = Payload::Text(Text {
                body: "hi".into(),
                client_meta: "{}".into(),
            });
            OutboxEntry {
                seq,
                id: MessageId::random(&mut self.rng),
                to,
                plaintext: Plaintext::new(&payload, 0).expect("plaintext"),
                expires_at_ms,
                tracked: true,
            }
        }
    }

    #[test]
    fn expired_entries_leave_oldest_first_and_live_ones_stay() {
        let mut f = Fixture::new();
        let mut o = Outbox::default();
        let (a, b, c) = (
            f.entry(2, f.alice, 1_000),
            f.entry(1, f.alice, 1_000),
            f.entry(3, f.alice, 5_000),
        );
        for e in [&a, &b, &c] {
            o.insert(e.clone());
        }
        assert!(o.take_expired(999).is_empty());
        let gone: Vec<MessageId> = o.take_expired(1_000).iter().map(|e| e.id).collect();
        assert_eq!(gone, vec![b.id, a.id]);
        assert_eq!(o.len(), 1);
        assert!(o.get(&c.id).is_some());
    }

    #[test]
    fn an_entry_is_taken_as_expired_only_once_its_time_is_reached() {
        let mut f = Fixture::new();
        let mut o = Outbox::default();
        let e = f.entry(1, f.bob, 2_000);
        o.insert(e.clone());
        assert!(o.take_if_expired(&e.id, 1_999).is_none());
        assert!(o.get(&e.id).is_some());
        assert_eq!(o.take_if_expired(&e.id, 2_000).map(|x| x.id), Some(e.id));
        assert!(o.get(&e.id).is_none());
    }

    #[test]
    fn a_message_without_its_delivered_receipt_is_resent_after_the_receipt_timeout() {
        let mut f = Fixture::new();
        let mut o = Outbox::default();
        let start = Instant::now();
        let (old, new) = (f.entry(1, f.bob, u64::MAX), f.entry(2, f.bob, u64::MAX));
        o.insert(new.clone());
        o.insert(old.clone());
        o.await_receipt(new.id, start);
        o.await_receipt(old.id, start);
        assert!(o
            .due_for_resend(&f.bob, start + TIMEOUT, TIMEOUT)
            .is_empty());
        let later = start + TIMEOUT + Duration::from_millis(1);
        assert_eq!(
            o.due_for_resend(&f.bob, later, TIMEOUT),
            vec![old.id, new.id],
            "oldest first"
        );
        assert!(
            o.due_for_resend(&f.bob, later + TIMEOUT, TIMEOUT)
                .is_empty(),
            "a resend waits a whole timeout again"
        );
        assert_eq!(
            o.due_for_resend(&f.bob, later + TIMEOUT * 2, TIMEOUT).len(),
            2
        );
    }

    #[test]
    fn resends_are_only_of_messages_to_that_peer_and_stop_once_settled() {
        let mut f = Fixture::new();
        let mut o = Outbox::default();
        let start = Instant::now();
        let (to_bob, to_alice) = (f.entry(1, f.bob, u64::MAX), f.entry(2, f.alice, u64::MAX));
        o.insert(to_bob.clone());
        o.insert(to_alice.clone());
        o.await_receipt(to_bob.id, start);
        o.await_receipt(to_alice.id, start);
        let later = start + TIMEOUT * 2;
        assert_eq!(o.due_for_resend(&f.bob, later, TIMEOUT), vec![to_bob.id]);
        o.remove(&to_alice.id);
        assert!(o.due_for_resend(&f.alice, later, TIMEOUT).is_empty());
    }

    #[test]
    fn only_the_recipient_may_settle_an_entry() {
        let mut f = Fixture::new();
        let mut o = Outbox::default();
        let e = f.entry(1, f.bob, u64::MAX);
        o.insert(e.clone());
        assert!(o.addressed_to(&e.id, &f.bob));
        assert!(!o.addressed_to(&e.id, &f.alice));
        let unknown = MessageId::random(&mut f.rng);
        assert!(!o.addressed_to(&unknown, &f.bob));
    }

    #[test]
    fn a_receipt_for_an_unknown_entry_starts_no_wait() {
        let mut f = Fixture::new();
        let mut o = Outbox::default();
        let start = Instant::now();
        let unknown = MessageId::random(&mut f.rng);
        o.await_receipt(unknown, start);
        let e = f.entry(1, f.bob, u64::MAX);
        o.insert(e);
        assert!(o
            .due_for_resend(&f.bob, start + TIMEOUT * 2, TIMEOUT)
            .is_empty());
    }
}
