//! Message requests and blocking: who may reach the local user without being a contact, and
//! how far. A stranger's first message makes them a pending request (bounded in number);
//! nothing about them leads this node to dial, heartbeat, answer with receipts or fetch media
//! until the user accepts. A blocked user's envelopes are acknowledged and dropped, so they
//! learn nothing from the answer.

use super::*;

/// What to do with a message from a sender who is not a contact.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Stranger {
    /// Blocked: acknowledge and drop.
    Blocked,
    /// A pending request (new or known): keep the message, answer nothing but the ack.
    Request,
    /// Too many pending requests already: acknowledge and drop.
    Full,
}

/// Pending requests and blocked users, as the messenger holds them (the store keeps both).
#[derive(Default)]
pub(super) struct Requests {
    /// Senders waiting for the user's answer, with their latest verified bundle.
    pending: HashMap<UserId, Contact>,
    /// Users whose envelopes are acknowledged and dropped.
    blocked: HashSet<UserId>,
}

impl Requests {
    /// Starts from what is stored.
    pub(super) fn new(pending: Vec<Contact>, blocked: impl IntoIterator<Item = UserId>) -> Self {
        Requests {
            pending: pending.into_iter().map(|c| (c.user, c)).collect(),
            blocked: blocked.into_iter().collect(),
        }
    }

    /// Whether `user` is blocked.
    pub(super) fn is_blocked(&self, user: &UserId) -> bool {
        self.blocked.contains(user)
    }

    /// Whether `user` is a pending request.
    pub(super) fn is_pending(&self, user: &UserId) -> bool {
        self.pending.contains_key(user)
    }

    /// Sorts a sender who is not a contact, holding at most `max` pending requests; a new
    /// request (or a newer bundle of a known one) is returned for the caller to store.
    pub(super) fn admit(
        &mut self,
        bundle: &KeyBundle,
        max: usize,
        now_ms: u64,
    ) -> (Stranger, Option<Contact>) {
        let user = bundle.user;
        if self.blocked.contains(&user) {
            return (Stranger::Blocked, None);
        }
        if let Some(known) = self.pending.get_mut(&user) {
            if bundle.created_at_ms() > known.bundle.created_at_ms() {
                known.bundle = bundle.clone();
                return (Stranger::Request, Some(known.clone()));
            }
            return (Stranger::Request, None);
        }
        if self.pending.len() >= max {
            return (Stranger::Full, None);
        }
        let request = Contact {
            user,
            name: String::new(),
            bundle: bundle.clone(),
            addrs: Vec::new(),
            added_at_ms: now_ms,
            access: None,
        };
        self.pending.insert(user, request.clone());
        (Stranger::Request, Some(request))
    }

    /// Takes a pending request out (accepted, blocked, or the user wrote to them).
    /// The pending request of `user`, if any.
    pub(super) fn get(&self, user: &UserId) -> Option<&Contact> {
        self.pending.get(user)
    }

    pub(super) fn take(&mut self, user: &UserId) -> Option<Contact> {
        self.pending.remove(user)
    }

    /// Blocks `user` (dropping their request, if any).
    pub(super) fn block(&mut self, user: UserId) {
        self.pending.remove(&user);
        self.blocked.insert(user);
    }

    /// Unblocks `user`; whether they were blocked.
    pub(super) fn unblock(&mut self, user: &UserId) -> bool {
        self.blocked.remove(user)
    }
}

#[cfg(test)]
mod tests {
    use rand::{rngs::StdRng, SeedableRng};

    use super::*;

    fn bundle(seed: u64, created_at_ms: u64) -> KeyBundle {
        let me = LocalIdentity::generate(0, &mut StdRng::seed_from_u64(seed));
        let mut b = me.bundle();
        b.prekey.created_at_ms = created_at_ms;
        b.issued_at_ms = created_at_ms;
        b
    }

    #[test]
    fn strangers_become_requests_up_to_the_cap_then_are_refused() {
        let mut r = Requests::default();
        let (a, b, c) = (bundle(1, 0), bundle(2, 0), bundle(3, 0));
        assert!(matches!(r.admit(&a, 2, 5), (Stranger::Request, Some(x)) if x.added_at_ms == 5));
        assert!(matches!(r.admit(&b, 2, 6), (Stranger::Request, Some(_))));
        assert_eq!(r.admit(&c, 2, 7).0, Stranger::Full);
        // A known request is still one, and writes nothing unless its bundle is newer.
        assert!(matches!(r.admit(&a, 2, 8), (Stranger::Request, None)));
        let newer = bundle(1, 10);
        assert!(
            matches!(r.admit(&newer, 2, 8), (Stranger::Request, Some(x)) if x.bundle.created_at_ms() == 10)
        );
        assert!(r.take(&a.user).is_some());
        assert!(matches!(r.admit(&c, 2, 9), (Stranger::Request, Some(_))));
    }

    #[test]
    fn a_blocked_user_stays_blocked_until_unblocked_and_loses_their_request() {
        let mut r = Requests::default();
        let a = bundle(1, 0);
        r.admit(&a, 8, 0);
        r.block(a.user);
        assert!(!r.is_pending(&a.user));
        assert_eq!(r.admit(&a, 8, 0).0, Stranger::Blocked);
        assert!(r.unblock(&a.user));
        assert!(!r.unblock(&a.user));
        assert_eq!(r.admit(&a, 8, 0).0, Stranger::Request);
    }
}
