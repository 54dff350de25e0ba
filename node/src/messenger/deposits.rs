//! W-of-R deposits: which store peers hold each envelope deposited for an unreachable
//! recipient, and when that is enough to show ✓.
//!
//! Pure bookkeeping: it counts answers and says what they mean ([`Deposits::stored`],
//! [`Deposits::refused`]); the shell acks, requeues or drops the outbox entry. It never sends
//! or stores anything.

use std::collections::{HashMap, HashSet};

use kith_protocol::{mailbox::RefuseReason, MessageId, UserId};
use libp2p::PeerId;

/// One envelope handed to store peers, waiting for W of them to hold it.
struct Deposit {
    /// Its recipient.
    to: UserId,
    /// The distinct store peers that said they hold it.
    holders: HashSet<PeerId>,
    /// How many holders make it ✓ (W, or fewer when the network has fewer store peers).
    needed: usize,
    /// How many store peers it was handed to.
    asked: usize,
    /// Store peers that refused it as too large.
    too_large: HashSet<PeerId>,
}

/// What a store peer's refusal means for the deposit.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Refusal {
    /// Nothing changes yet: enough others may still hold it, or the refusal is passing
    /// (quota, rate), and the entry is deposited again after the ack timeout.
    Wait,
    /// Not W store peers will ever hold it (too large for them): it must neither become ✓
    /// nor be dropped; it waits for a direct link to `to`.
    DirectOnly {
        /// The recipient.
        to: UserId,
    },
    /// It can never be delivered (malformed or expired): drop the entry for `to`.
    Drop {
        /// The recipient.
        to: UserId,
    },
}

/// The deposits waiting for W store peers.
#[derive(Default)]
pub(super) struct Deposits {
    /// Pending deposits by message id.
    pending: HashMap<MessageId, Deposit>,
}

impl Deposits {
    /// `id` for `to` was handed to `asked` store peers and is ✓ once `needed` of them hold
    /// it. Depositing it again starts the count again.
    pub(super) fn start(&mut self, id: MessageId, to: UserId, needed: usize, asked: usize) {
        let deposit = Deposit {
            to,
            holders: HashSet::new(),
            needed,
            asked,
            too_large: HashSet::new(),
        };
        self.pending.insert(id, deposit);
    }

    /// Whether no deposit is waiting for its store peers' answers.
    pub(super) fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    /// `store` says it holds `id`. Returns the recipient when this makes W distinct store
    /// peers (exactly once; the deposit is then done); a store peer saying it twice counts
    /// once, and an unknown id is ignored.
    pub(super) fn stored(&mut self, store: PeerId, id: MessageId) -> Option<UserId> {
        let d = self.pending.get_mut(&id)?;
        d.holders.insert(store);
        if d.holders.len() < d.needed {
            return None;
        }
        let to = d.to;
        self.pending.remove(&id);
        Some(to)
    }

    /// `store` refused `id` for `reason`.
    pub(super) fn refused(
        &mut self,
        store: PeerId,
        id: MessageId,
        reason: RefuseReason,
    ) -> Refusal {
        let Some(d) = self.pending.get_mut(&id) else {
            return Refusal::Wait;
        };
        match reason {
            RefuseReason::TooLarge => {
                d.too_large.insert(store);
                if d.asked.saturating_sub(d.too_large.len()) >= d.needed {
                    return Refusal::Wait;
                }
                let to = d.to;
                self.pending.remove(&id);
                Refusal::DirectOnly { to }
            }
            RefuseReason::Malformed | RefuseReason::Expired => {
                let to = d.to;
                self.pending.remove(&id);
                Refusal::Drop { to }
            }
            // NotNamed: the recipient moved its mailbox; the shell looks up its newer bundle
            // and the entry is deposited again there.
            RefuseReason::MailboxFull
            | RefuseReason::RateLimited
            | RefuseReason::NotAStore
            | RefuseReason::NotNamed
            | RefuseReason::StoreFull => Refusal::Wait,
        }
    }
}

#[cfg(test)]
mod tests {
    use kith_protocol::LocalIdentity;
    use rand::{rngs::StdRng, SeedableRng};

    use super::*;

    fn setup() -> (MessageId, UserId, Vec<PeerId>) {
        let mut rng = StdRng::seed_from_u64(3);
        let id = MessageId::random(&mut rng);
        let to = LocalIdentity::generate(0, &mut rng).user_id();
        let stores = (0..3).map(|_| PeerId::random()).collect();
        (id, to, stores)
    }

    #[test]
    fn tick_comes_exactly_when_w_distinct_store_peers_hold_it() {
        let (id, to, s) = setup();
        let mut d = Deposits::default();
        d.start(id, to, 2, 3);
        assert_eq!(d.stored(s[0], id), None);
        assert_eq!(d.stored(s[1], id), Some(to));
        assert_eq!(
            d.stored(s[2], id),
            None,
            "done once; later answers change nothing"
        );
    }

    #[test]
    fn a_store_peer_saying_stored_twice_counts_once() {
        let (id, to, s) = setup();
        let mut d = Deposits::default();
        d.start(id, to, 2, 3);
        assert_eq!(d.stored(s[0], id), None);
        assert_eq!(d.stored(s[0], id), None);
        assert_eq!(d.stored(s[1], id), Some(to));
    }

    #[test]
    fn a_passing_refusal_does_not_count_as_held() {
        let (id, to, s) = setup();
        let mut d = Deposits::default();
        d.start(id, to, 2, 3);
        assert_eq!(d.stored(s[0], id), None);
        assert_eq!(
            d.refused(s[1], id, RefuseReason::MailboxFull),
            Refusal::Wait
        );
        assert_eq!(
            d.refused(s[1], id, RefuseReason::RateLimited),
            Refusal::Wait
        );
        assert_eq!(d.stored(s[2], id), Some(to));
    }

    #[test]
    fn too_large_waits_for_a_direct_link_once_w_can_no_longer_hold_it() {
        let (id, to, s) = setup();
        let mut d = Deposits::default();
        d.start(id, to, 2, 3);
        assert_eq!(d.refused(s[0], id, RefuseReason::TooLarge), Refusal::Wait);
        // The same store peer refusing again is still one refusal.
        assert_eq!(d.refused(s[0], id, RefuseReason::TooLarge), Refusal::Wait);
        assert_eq!(
            d.refused(s[1], id, RefuseReason::TooLarge),
            Refusal::DirectOnly { to }
        );
        assert_eq!(d.stored(s[2], id), None, "no longer a deposit");
    }

    #[test]
    fn an_expired_or_malformed_deposit_is_dropped() {
        let (id, to, s) = setup();
        let mut d = Deposits::default();
        d.start(id, to, 2, 3);
        assert_eq!(
            d.refused(s[0], id, RefuseReason::Expired),
            Refusal::Drop { to }
        );
        assert_eq!(d.refused(s[1], id, RefuseReason::Malformed), Refusal::Wait);
    }

    #[test]
    fn answers_for_unknown_deposits_are_ignored() {
        let (id, _, s) = setup();
        let mut d = Deposits::default();
        assert_eq!(d.stored(s[0], id), None);
        assert_eq!(d.refused(s[0], id, RefuseReason::Malformed), Refusal::Wait);
    }

    #[test]
    fn depositing_again_starts_the_count_again() {
        let (id, to, s) = setup();
        let mut d = Deposits::default();
        d.start(id, to, 2, 3);
        assert_eq!(d.stored(s[0], id), None);
        d.start(id, to, 2, 3);
        assert_eq!(d.stored(s[1], id), None);
        assert_eq!(d.stored(s[0], id), Some(to));
    }
}
