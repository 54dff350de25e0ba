//! Who sends to whom in each round and who is down when: drawn from the seed up front, so a
//! run is the same schedule every time.

use std::collections::HashSet;

use rand::{rngs::StdRng, seq::SliceRandom, Rng};

use super::config::{SendPattern, SimConfig, SimTransport};

/// Who sends to whom in each round, and who is down when.
pub(super) struct Plan {
    /// `targets[user][round]`: the recipient of that user's message in that round.
    pub(super) targets: Vec<Vec<usize>>,
    /// Pairs of users that talk (introduced to each other), `a < b`.
    pub(super) contacts: Vec<(usize, usize)>,
    /// Rounds (half-open, `[from, to)`) each user is down for; at round `to` it is back.
    pub(super) user_down: Vec<Vec<(usize, usize)>>,
    /// The same for store peers.
    pub(super) store_down: Vec<Vec<(usize, usize)>>,
    /// A partition made by cutting links (memory transport): side A's users, and the rounds
    /// `[from, to)` the cut holds.
    pub(super) cut: Option<Cut>,
}

/// A partition made by cutting the links between side A's users and the other users.
pub(super) struct Cut {
    /// The users of side A (every other user is side B).
    pub(super) side_a: HashSet<usize>,
    /// The round the links are cut at.
    pub(super) from: usize,
    /// The round they heal at.
    pub(super) to: usize,
}

impl Plan {
    pub(super) fn new(cfg: &SimConfig, rng: &mut StdRng) -> Plan {
        let link_cut = cfg.transport == SimTransport::Memory;
        let n = cfg.users;
        let m = cfg.messages_per_sender;
        let mut order: Vec<usize> = (0..n).collect();
        order.shuffle(rng);
        let mut partner = vec![0usize; n];
        for pair in order.chunks(2) {
            if let [a, b] = pair {
                partner[*a] = *b;
                partner[*b] = *a;
            }
        }
        if n % 2 == 1 {
            // The odd one out talks to the first user of the order (who keeps its partner).
            partner[order[n - 1]] = order[0];
        }
        let hot: Vec<usize> = match cfg.pattern {
            SendPattern::Pairs => Vec::new(),
            SendPattern::HotSpot { hot, .. } => order.iter().rev().take(hot).copied().collect(),
        };
        let share = match cfg.pattern {
            SendPattern::Pairs => 0.0,
            SendPattern::HotSpot { share, .. } => share.clamp(0.0, 1.0),
        };
        let mut targets = vec![Vec::with_capacity(m); n];
        let mut contacts = HashSet::new();
        for (u, t) in targets.iter_mut().enumerate() {
            for _ in 0..m {
                let candidates: Vec<usize> = hot.iter().copied().filter(|h| *h != u).collect();
                let to = if !candidates.is_empty() && rng.gen_bool(share) {
                    candidates[rng.gen_range(0..candidates.len())]
                } else {
                    partner[u]
                };
                t.push(to);
                contacts.insert((u.min(to), u.max(to)));
            }
        }
        let mut contacts: Vec<(usize, usize)> = contacts.into_iter().collect();
        contacts.sort_unstable();

        let mut user_down = vec![Vec::new(); n];
        let churned = ((cfg.churn.clamp(0.0, 1.0) * n as f64).round() as usize).min(n);
        let len = (m / 3).max(1);
        let mut shuffled: Vec<usize> = (0..n).collect();
        shuffled.shuffle(rng);
        for &u in shuffled.iter().take(churned) {
            let from = rng.gen_range(0..=m.saturating_sub(len));
            user_down[u].push((from, from + len));
        }
        let mut cut = None;
        if cfg.partition > 0.0 {
            let side_a: HashSet<usize> = {
                let k = ((cfg.partition.clamp(0.0, 1.0) * n as f64).round() as usize).clamp(1, n);
                let mut s: Vec<usize> = (0..n).collect();
                s.shuffle(rng);
                s.into_iter().take(k).collect()
            };
            let p1 = m / 4;
            let p2 = (m / 2).max(p1 + 1);
            let p3 = (3 * m / 4).max(p2 + 1);
            if link_cut {
                cut = Some(Cut {
                    side_a,
                    from: p1,
                    to: p3,
                });
            } else {
                Self::stop_sides(&mut user_down, &contacts, &side_a, (p1, p2, p3));
            }
        }
        let mut store_down = vec![Vec::new(); cfg.stores];
        let mut s: Vec<usize> = (0..cfg.stores).collect();
        s.shuffle(rng);
        let from = m / 3;
        let to = (2 * m / 3).max(from + 1);
        for &i in s.iter().take(cfg.store_loss) {
            store_down[i].push((from, to));
        }
        Plan {
            targets,
            contacts,
            user_down,
            store_down,
            cut,
        }
    }

    /// The partition over TCP: side A's users leave together for `[p1, p2)`; when they come
    /// back, every user of side B that talks to side A leaves for `[p2, p3)`.
    fn stop_sides(
        user_down: &mut [Vec<(usize, usize)>],
        contacts: &[(usize, usize)],
        side_a: &HashSet<usize>,
        (p1, p2, p3): (usize, usize, usize),
    ) {
        for &a in side_a {
            user_down[a].push((p1, p2));
        }
        // Side B's users that talk across the cut.
        let across: HashSet<usize> = contacts
            .iter()
            .filter_map(|&(a, b)| match (side_a.contains(&a), side_a.contains(&b)) {
                (true, false) => Some(b),
                (false, true) => Some(a),
                _ => None,
            })
            .collect();
        for &b in &across {
            user_down[b].push((p2, p3));
        }
    }

    /// Whether `user` is down during `round` (the last round, `messages_per_sender`, is the
    /// heal: everyone is up).
    pub(super) fn user_down(&self, user: usize, round: usize) -> bool {
        let last = self.targets.first().map_or(0, Vec::len);
        round < last
            && self.user_down[user]
                .iter()
                .any(|(f, t)| (*f..*t).contains(&round))
    }

    /// Whether store peer `i` is down during `round`.
    pub(super) fn store_down(&self, i: usize, round: usize) -> bool {
        let last = self.targets.first().map_or(0, Vec::len);
        round < last
            && self.store_down[i]
                .iter()
                .any(|(f, t)| (*f..*t).contains(&round))
    }
}
