//! Mailbox envelopes that could not be opened *yet*: how many fetches each has survived,
//! when to fetch the mailbox again, and which to give up on and delete.
//!
//! A message pushed from one store peer may arrive before the first message of its session,
//! which another store peer holds: it opens after a later fetch. One that never opens is a
//! bad envelope and must not be pushed forever. Pure: the caller passes `now` and sends the
//! deletes and subscriptions itself.

use std::{
    collections::{HashMap, VecDeque},
    time::{Duration, Instant},
};

use kith_protocol::{mailbox::EnvelopeRef, wire::RejectReason};

use super::Outcome;

/// How long to wait before fetching the mailbox again when part of it could not be opened
/// yet (its session's first message is likely still arriving from another store peer).
pub(super) const MAILBOX_REFETCH_DELAY: Duration = Duration::from_secs(2);

/// Fetches an unopenable mailbox message gets before it is deleted as bad.
pub(super) const MAX_MAILBOX_REFETCH: u32 = 3;

/// Most unopenable mailbox messages tracked at once: past it the longest-tracked are given up
/// (deleted from the store peers), so a flood of bad envelopes can neither grow this map
/// without bound nor reset the counts that get junk deleted.
pub(super) const MAX_UNOPENED: usize = 10_000;

/// What to do with each envelope a store peer pushed, once received.
#[derive(Debug, Default, PartialEq)]
pub(super) struct Sorted {
    /// Stored here (or already), or never deliverable: delete from every store peer of ours
    /// once what was stored is durable.
    pub(super) delete: Vec<EnvelopeRef>,
    /// Not openable yet: keep, and fetch again later.
    pub(super) not_yet: Vec<EnvelopeRef>,
}

/// Sorts pushed envelopes by what became of them: `refs[i]` names the envelope whose
/// outcome is `outcomes[i]` (`None` for one that does not encode, which no store peer holds
/// either).
pub(super) fn sort_outcomes(refs: Vec<Option<EnvelopeRef>>, outcomes: &[Outcome]) -> Sorted {
    let mut sorted = Sorted::default();
    for (r, (_, outcome)) in refs.into_iter().zip(outcomes) {
        let Some(r) = r else { continue };
        match outcome {
            Ok(()) | Err(RejectReason::Expired | RejectReason::Misaddressed) => {
                sorted.delete.push(r)
            }
            Err(_) => sorted.not_yet.push(r),
        }
    }
    sorted
}

/// The unopenable envelopes being tracked, and the refetch timer.
#[derive(Debug, Default)]
pub(super) struct Unopened {
    /// How many fetches each unopenable envelope has survived.
    tries: HashMap<EnvelopeRef, u32>,
    /// The tracked envelopes, oldest first (may also name ones no longer tracked: they are
    /// skipped, and dropped when it grows past twice the cap).
    order: VecDeque<EnvelopeRef>,
    /// When to fetch the mailbox again.
    refetch_at: Option<Instant>,
}

impl Unopened {
    /// `refs` could not be opened on this fetch (at `now`). Returns the ones that failed too
    /// often: delete them from the store peers. A refetch is due after
    /// [`MAILBOX_REFETCH_DELAY`] while any is still tracked.
    pub(super) fn failed(&mut self, refs: Vec<EnvelopeRef>, now: Instant) -> Vec<EnvelopeRef> {
        let mut give_up = Vec::new();
        for r in refs {
            let tries = self.tries.entry(r).or_insert_with(|| {
                self.order.push_back(r);
                0
            });
            *tries += 1;
            if *tries > MAX_MAILBOX_REFETCH {
                give_up.push(r);
            }
        }
        for r in &give_up {
            self.tries.remove(r);
        }
        // Past the cap the oldest go as if they had failed their last fetch.
        while self.tries.len() > MAX_UNOPENED {
            let Some(oldest) = self.order.pop_front() else {
                break;
            };
            if self.tries.remove(&oldest).is_some() {
                give_up.push(oldest);
            }
        }
        if self.order.len() > 2 * MAX_UNOPENED {
            let tries = &self.tries;
            self.order.retain(|r| tries.contains_key(r));
        }
        if !self.tries.is_empty() && self.refetch_at.is_none() {
            self.refetch_at = Some(now + MAILBOX_REFETCH_DELAY);
        }
        give_up
    }

    /// Whether the mailbox should be fetched again at `now`; the timer is then cleared.
    pub(super) fn refetch_due(&mut self, now: Instant) -> bool {
        if self.refetch_at.is_some_and(|t| t <= now) {
            self.refetch_at = None;
            return true;
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use kith_protocol::{EnvelopeDigest, MessageId};
    use rand::{rngs::StdRng, SeedableRng};

    use super::*;

    fn refs(n: usize) -> Vec<EnvelopeRef> {
        let mut rng = StdRng::seed_from_u64(5);
        (0..n)
            .map(|i| EnvelopeRef {
                id: MessageId::random(&mut rng),
                digest: EnvelopeDigest([i as u8; kith_protocol::envelope::ENVELOPE_DIGEST_LEN]),
            })
            .collect()
    }

    #[test]
    fn stored_expired_and_misaddressed_are_deleted_the_rest_waits() {
        let r = refs(5);
        let outcomes: Vec<Outcome> = vec![
            (r[0].id, Ok(())),
            (r[1].id, Err(RejectReason::Expired)),
            (r[2].id, Err(RejectReason::Misaddressed)),
            (r[3].id, Err(RejectReason::Invalid)),
            (r[4].id, Err(RejectReason::Busy)),
        ];
        let mut named: Vec<Option<EnvelopeRef>> = r.iter().copied().map(Some).collect();
        named.push(None);
        let sorted = sort_outcomes(named, &outcomes);
        assert_eq!(sorted.delete, vec![r[0], r[1], r[2]]);
        assert_eq!(sorted.not_yet, vec![r[3], r[4]]);
    }

    #[test]
    fn an_envelope_that_never_opens_is_given_up_after_the_last_refetch() {
        let now = Instant::now();
        let r = refs(1);
        let mut u = Unopened::default();
        for _ in 0..MAX_MAILBOX_REFETCH {
            assert!(u.failed(r.clone(), now).is_empty());
        }
        assert_eq!(u.failed(r.clone(), now), r);
        assert!(u.failed(r.clone(), now).is_empty(), "counting starts over");
    }

    #[test]
    fn a_flood_past_the_cap_gives_up_the_oldest_instead_of_forgetting_every_count() {
        let now = Instant::now();
        let flood = refs(MAX_UNOPENED + 5);
        let mut u = Unopened::default();
        let given_up = u.failed(flood.clone(), now);
        assert_eq!(given_up, flood[..5].to_vec(), "the oldest five are deleted");
        assert_eq!(u.tries.len(), MAX_UNOPENED);
        // The rest keep their counts: they are still deleted after their last refetch.
        for _ in 1..MAX_MAILBOX_REFETCH {
            assert!(u.failed(flood[5..].to_vec(), now).is_empty());
        }
        assert_eq!(u.failed(flood[5..].to_vec(), now).len(), MAX_UNOPENED);
        assert!(u.tries.is_empty());
        assert!(u.order.len() <= 2 * MAX_UNOPENED);
    }

    #[test]
    fn a_refetch_is_due_after_the_delay_and_only_once() {
        let now = Instant::now();
        let mut u = Unopened::default();
        assert!(
            !u.refetch_due(now + MAILBOX_REFETCH_DELAY),
            "nothing tracked"
        );
        u.failed(refs(1), now);
        assert!(!u.refetch_due(now));
        // A second failure meanwhile does not push the timer back.
        u.failed(refs(1), now + Duration::from_secs(1));
        assert!(u.refetch_due(now + MAILBOX_REFETCH_DELAY));
        assert!(!u.refetch_due(now + MAILBOX_REFETCH_DELAY * 10));
    }

    #[test]
    fn giving_up_on_everything_tracked_schedules_no_refetch() {
        let now = Instant::now();
        let r = refs(1);
        let mut u = Unopened::default();
        for _ in 0..MAX_MAILBOX_REFETCH {
            u.failed(r.clone(), now);
        }
        assert!(u.refetch_due(now + MAILBOX_REFETCH_DELAY));
        u.failed(r, now);
        assert!(!u.refetch_due(now + MAILBOX_REFETCH_DELAY * 2));
    }
}
