//! Which store peers hold our mailbox: the recipient chooses them (issue #13).
//!
//! The choice keeps every named peer that is still usable, and fills the free places first
//! with store peers the user configured (bootstrap peers that turned out to be stores), then
//! at random among the other store peers met on the network. A random pick, not the
//! XOR-closest, so that grinding an id next to ours earns a peer nothing. The choice is
//! signed into our bundle and registered with each named peer; peers named before stay
//! subscribed for a while, since they may still hold messages deposited before the change.

use std::collections::HashSet;

use rand::seq::SliceRandom;
use rand::Rng;
use serde::{Deserialize, Serialize};

use super::*;

/// The `meta` key our choice is stored under.
pub(super) const MAILBOX_CHOICE_KEY: &str = "mailbox_choice";

/// The `meta` key our mailbox access key is stored under.
pub(super) const ACCESS_KEY_KEY: &str = "mailbox_access_key";

/// Most formerly named store peers still fetched from.
pub(super) const MAX_PREVIOUS: usize = 8;

/// Our mailbox choice as stored.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct MailboxChoice {
    /// The named store peers, as in our bundle.
    pub(super) named: Vec<kith_protocol::MailboxPeer>,
    /// Store peers named before, newest first: still fetched from, never deposited to.
    pub(super) previous: Vec<UserId>,
    /// When the choice was made, unix ms (dates our bundle).
    pub(super) chosen_at_ms: u64,
}

impl MailboxChoice {
    /// The named peers' ids.
    pub(super) fn named_ids(&self) -> Vec<UserId> {
        self.named.iter().map(|p| p.peer).collect()
    }

    /// Adopts `named` at `now_ms`; peers dropped from the list move to `previous`.
    pub(super) fn replace(&mut self, named: Vec<kith_protocol::MailboxPeer>, now_ms: u64) {
        let kept: HashSet<UserId> = named.iter().map(|p| p.peer).collect();
        for old in self.named.drain(..) {
            if !kept.contains(&old.peer) {
                self.previous.retain(|p| *p != old.peer);
                self.previous.insert(0, old.peer);
            }
        }
        self.previous.retain(|p| !kept.contains(p));
        self.previous.truncate(MAX_PREVIOUS);
        self.named = named;
        self.chosen_at_ms = now_ms;
    }
}

/// Chooses up to `r` store peers: the `current` ones still `usable`, then `preferred` ones,
/// then random others among `known` (all of which are usable store peers). Returns `None`
/// when the choice would not change.
pub(super) fn choose(
    current: &[UserId],
    usable: impl Fn(&UserId) -> bool,
    preferred: &[UserId],
    known: &[UserId],
    r: usize,
    rng: &mut impl Rng,
) -> Option<Vec<UserId>> {
    let mut out: Vec<UserId> = current.iter().copied().filter(|p| usable(p)).collect();
    out.truncate(r);
    let fill = |candidates: Vec<UserId>, out: &mut Vec<UserId>| {
        for c in candidates {
            if out.len() >= r {
                break;
            }
            if !out.contains(&c) {
                out.push(c);
            }
        }
    };
    fill(
        preferred
            .iter()
            .copied()
            .filter(|p| known.contains(p))
            .collect(),
        &mut out,
    );
    let mut others: Vec<UserId> = known.to_vec();
    others.shuffle(rng);
    fill(others, &mut out);
    let same = out.len() == current.len() && out.iter().all(|p| current.contains(p));
    (!same).then_some(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use rand::{rngs::StdRng, SeedableRng};

    use super::*;

    fn users(n: u64) -> Vec<UserId> {
        (0..n)
            .map(|i| LocalIdentity::generate(0, &mut StdRng::seed_from_u64(i)).user_id())
            .collect()
    }

    #[test]
    fn configured_stores_come_first_then_random_known_ones() {
        let u = users(6);
        let mut rng = StdRng::seed_from_u64(1);
        let chosen = choose(&[], |_| true, &[u[4]], &u, 3, &mut rng).unwrap();
        assert_eq!(chosen.len(), 3);
        assert_eq!(chosen[0], u[4]);
        let distinct: HashSet<_> = chosen.iter().collect();
        assert_eq!(distinct.len(), 3);
    }

    #[test]
    fn usable_named_peers_are_kept_and_only_the_dead_one_is_replaced() {
        let u = users(6);
        let mut rng = StdRng::seed_from_u64(2);
        let current = vec![u[0], u[1], u[2]];
        assert_eq!(choose(&current, |_| true, &[], &u, 3, &mut rng), None);
        let chosen = choose(&current, |p| *p != u[1], &[], &u, 3, &mut rng).unwrap();
        assert_eq!(&chosen[..2], &[u[0], u[2]]);
        assert!(!chosen.contains(&u[1]));
        assert_eq!(chosen.len(), 3);
    }

    #[test]
    fn fewer_known_stores_than_r_names_them_all() {
        let u = users(2);
        let mut rng = StdRng::seed_from_u64(3);
        let chosen = choose(&[], |_| true, &[], &u, 3, &mut rng).unwrap();
        assert_eq!(chosen.len(), 2);
        // A third appearing later is added.
        let more = users(3);
        let chosen = choose(&chosen, |_| true, &[], &more, 3, &mut rng).unwrap();
        assert_eq!(chosen.len(), 3);
    }

    #[test]
    fn peers_dropped_from_the_choice_are_remembered_as_previous() {
        let u = users(4);
        let peer = |p: UserId| kith_protocol::MailboxPeer {
            peer: p,
            addrs: Vec::new(),
        };
        let mut c = MailboxChoice::default();
        c.replace(vec![peer(u[0]), peer(u[1])], 5);
        c.replace(vec![peer(u[0]), peer(u[2])], 6);
        assert_eq!(c.named_ids(), vec![u[0], u[2]]);
        assert_eq!(c.previous, vec![u[1]]);
        c.replace(vec![peer(u[1])], 7);
        assert_eq!(c.previous, vec![u[2], u[0]]);
        assert_eq!(c.chosen_at_ms, 7);
    }
}
