//! Which mailboxes this store peer holds: the owners' signed registrations, kept in sled.
//!
//! A store peer serves a mailbox only while its owner's newest [`MailboxRegistration`] names
//! it (issue #13): that, not the closeness of ids, decides who may deposit, who may send
//! replicas and whom repair copies to. Registrations are signed by the owner, so anyone may
//! hand one over (the owner, or a named peer forwarding it); an older one never replaces a
//! newer. The table is bounded: past its capacity the oldest registration goes first.
//!
//! Layout: tree `registrations`: `owner bytes` → bincode([`MailboxRegistration`]).

use std::collections::HashMap;

use kith_protocol::{access::MailboxRegistration, codec, UserId};

/// Why a registration was not taken.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum RegisterError {
    /// It does not verify (limits or the owner's signature).
    #[error("registration does not verify")]
    Invalid,
    /// It does not name this store peer.
    #[error("registration does not name this store peer")]
    NotNamed,
    /// A newer registration of the same owner is held.
    #[error("a newer registration is held")]
    Stale,
}

/// The registrations of the mailboxes this store peer holds.
pub struct Registrations {
    tree: sled::Tree,
    held: HashMap<UserId, MailboxRegistration>,
    capacity: usize,
}

impl Registrations {
    /// Loads the registrations from `db` (a stored one that no longer decodes or verifies is
    /// dropped: its owner registers again when it next connects).
    pub fn open(db: &sled::Db, capacity: usize) -> Result<Self, sled::Error> {
        let tree = db.open_tree("registrations")?;
        let mut held = HashMap::new();
        let mut bad = Vec::new();
        for item in tree.iter() {
            let (k, v) = item?;
            match codec::decode::<MailboxRegistration>(&v) {
                Ok(reg) if reg.verify().is_ok() && reg.owner.to_bytes() == k.as_ref() => {
                    held.insert(reg.owner, reg);
                }
                _ => bad.push(k),
            }
        }
        for k in bad {
            tracing::warn!("dropping a stored mailbox registration that does not verify");
            tree.remove(k)?;
        }
        Ok(Registrations {
            tree,
            held,
            capacity: capacity.max(1),
        })
    }

    /// The newest registration of `owner`'s mailbox, if it names this peer.
    pub fn get(&self, owner: &UserId) -> Option<&MailboxRegistration> {
        self.held.get(owner)
    }

    /// How many mailboxes are registered here.
    pub fn len(&self) -> usize {
        self.held.len()
    }

    /// Whether no mailbox is registered here.
    pub fn is_empty(&self) -> bool {
        self.held.is_empty()
    }

    /// Takes `reg` if it verifies, names `local` and is newer than the one held. Returns
    /// whether it replaced what was held (so repair should forward it).
    pub fn register(
        &mut self,
        reg: MailboxRegistration,
        local: &UserId,
    ) -> Result<bool, RegisterError> {
        reg.verify().map_err(|_| RegisterError::Invalid)?;
        if let Some(old) = self.held.get(&reg.owner) {
            if old == &reg {
                return Ok(false);
            }
            if old.issued_at_ms >= reg.issued_at_ms {
                return Err(RegisterError::Stale);
            }
        }
        if !reg.names(local) {
            // The owner moved its mailbox elsewhere: stop serving it as a named peer (what
            // is held stays until it is fetched or expires).
            if self.held.contains_key(&reg.owner) {
                self.remove(&reg.owner);
            }
            return Err(RegisterError::NotNamed);
        }
        if !self.held.contains_key(&reg.owner) && self.held.len() >= self.capacity {
            let oldest = self
                .held
                .values()
                .min_by_key(|r| r.issued_at_ms)
                .map(|r| r.owner);
            if let Some(owner) = oldest {
                tracing::warn!(%owner, "registration table full; dropping the oldest");
                self.remove(&owner);
            }
        }
        match codec::encode(&reg) {
            Ok(bytes) => {
                if let Err(e) = self.tree.insert(reg.owner.to_bytes(), bytes) {
                    tracing::error!(error = %e, "cannot store registration; kept in memory");
                }
            }
            Err(e) => tracing::error!(error = %e, "cannot encode registration"),
        }
        self.held.insert(reg.owner, reg);
        Ok(true)
    }

    fn remove(&mut self, owner: &UserId) {
        self.held.remove(owner);
        if let Err(e) = self.tree.remove(owner.to_bytes()) {
            tracing::error!(error = %e, "cannot remove registration");
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use kith_protocol::{LocalIdentity, MailboxAccessKey};
    use rand::rngs::OsRng;

    use super::*;

    fn user() -> LocalIdentity {
        LocalIdentity::generate(0, &mut OsRng)
    }

    #[test]
    fn newest_registration_naming_us_wins_and_survives_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path()).unwrap();
        let (owner, me, other) = (user(), user().user_id(), user().user_id());
        let key = MailboxAccessKey::generate(&mut OsRng);
        let mut regs = Registrations::open(&db, 10).unwrap();

        let first = MailboxRegistration::new(&owner, vec![me, other], &key, 10);
        assert_eq!(regs.register(first.clone(), &me), Ok(true));
        assert_eq!(regs.register(first.clone(), &me), Ok(false));
        let older = MailboxRegistration::new(&owner, vec![me], &key, 9);
        assert_eq!(regs.register(older, &me), Err(RegisterError::Stale));
        let elsewhere = MailboxRegistration::new(&owner, vec![other], &key, 11);
        assert_eq!(
            regs.register(elsewhere.clone(), &other.clone()),
            Ok(true),
            "(as seen by the other peer)"
        );
        let mut forged = first.clone();
        forged.issued_at_ms = 50;
        assert_eq!(regs.register(forged, &me), Err(RegisterError::Invalid));

        let regs = Registrations::open(&db, 10).unwrap();
        assert_eq!(regs.get(&owner.user_id()), Some(&elsewhere));
    }

    #[test]
    fn a_registration_moving_away_stops_the_mailbox_here() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path()).unwrap();
        let (owner, me, other) = (user(), user().user_id(), user().user_id());
        let key = MailboxAccessKey::generate(&mut OsRng);
        let mut regs = Registrations::open(&db, 10).unwrap();
        regs.register(MailboxRegistration::new(&owner, vec![me], &key, 1), &me)
            .unwrap();
        let moved = MailboxRegistration::new(&owner, vec![other], &key, 2);
        assert_eq!(regs.register(moved, &me), Err(RegisterError::NotNamed));
        assert!(regs.get(&owner.user_id()).is_none());
    }

    #[test]
    fn the_table_is_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path()).unwrap();
        let me = user().user_id();
        let key = MailboxAccessKey::generate(&mut OsRng);
        let mut regs = Registrations::open(&db, 3).unwrap();
        let owners: Vec<LocalIdentity> = (0..5).map(|_| user()).collect();
        for (i, o) in owners.iter().enumerate() {
            regs.register(MailboxRegistration::new(o, vec![me], &key, i as u64), &me)
                .unwrap();
        }
        assert_eq!(regs.len(), 3);
        assert!(regs.get(&owners[0].user_id()).is_none());
        assert!(regs.get(&owners[4].user_id()).is_some());
    }
}
