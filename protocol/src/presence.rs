//! Presence ("last seen" / online): signed records and a table that only moves forward.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::{codec, LocalIdentity, UserId};

/// Domain separation for presence signatures.
const PRESENCE_SIGNING_CONTEXT: &[u8] = b"kith-presence/1\0";

/// Who may see a user's last seen and online state (WhatsApp's setting).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Visibility {
    /// Anyone who asks.
    #[default]
    Everyone,
    /// Only the user's contacts.
    Contacts,
    /// Nobody; the record then carries no time and no online flag.
    Nobody,
}

/// A user's signed statement of presence.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PresenceRecord {
    /// Whose presence.
    pub user: UserId,
    /// Increases with every record the user issues; older records are refused.
    pub seq: u64,
    /// When the user was last active, unix milliseconds (0 when hidden).
    pub last_seen_ms: u64,
    /// Whether the user's node is online now (false when hidden).
    pub online: bool,
    /// Who may be shown this record.
    pub visibility: Visibility,
    /// Ed25519 signature over `"kith-presence/1\0" ‖ bincode(user, seq, last_seen_ms, online, visibility)`.
    #[serde(with = "serde_bytes")]
    pub signature: Vec<u8>,
}

#[derive(Serialize)]
struct Unsigned<'a> {
    user: &'a UserId,
    seq: u64,
    last_seen_ms: u64,
    online: bool,
    visibility: Visibility,
}

impl Unsigned<'_> {
    fn signing_bytes(&self) -> Vec<u8> {
        let mut out = PRESENCE_SIGNING_CONTEXT.to_vec();
        // Fixed-size fields always encode; an empty tail would simply not verify.
        let _ = codec::encode_into(self, &mut out);
        out
    }
}

/// Why a presence record was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum PresenceError {
    /// The signature is not the user's.
    #[error("presence record signature does not verify")]
    BadSignature,
    /// The record is not newer than the one already held.
    #[error("stale presence record: seq {got} is not newer than {have}")]
    Stale {
        /// The sequence number held.
        have: u64,
        /// The sequence number offered.
        got: u64,
    },
    /// The table is full and this user is not in it.
    #[error("presence table is full")]
    Full,
}

impl PresenceRecord {
    /// Signs a record for `me`. With [`Visibility::Nobody`] the time and flag are blanked.
    pub fn sign(
        me: &LocalIdentity,
        seq: u64,
        last_seen_ms: u64,
        online: bool,
        visibility: Visibility,
    ) -> Self {
        let (last_seen_ms, online) = match visibility {
            Visibility::Nobody => (0, false),
            _ => (last_seen_ms, online),
        };
        let user = me.user_id();
        let unsigned = Unsigned {
            user: &user,
            seq,
            last_seen_ms,
            online,
            visibility,
        };
        let signature = me.sign(&unsigned.signing_bytes());
        PresenceRecord {
            user,
            seq,
            last_seen_ms,
            online,
            visibility,
            signature,
        }
    }

    /// Checks the signature against the key inside `user`.
    pub fn verify(&self) -> Result<(), PresenceError> {
        let key = self
            .user
            .public_key()
            .map_err(|_| PresenceError::BadSignature)?;
        let unsigned = Unsigned {
            user: &self.user,
            seq: self.seq,
            last_seen_ms: self.last_seen_ms,
            online: self.online,
            visibility: self.visibility,
        };
        if key.verify(&unsigned.signing_bytes(), &self.signature) {
            Ok(())
        } else {
            Err(PresenceError::BadSignature)
        }
    }
}

/// The latest verified record per user, bounded in size.
#[derive(Clone, Debug)]
pub struct PresenceTable {
    records: HashMap<UserId, PresenceRecord>,
    capacity: usize,
}

impl PresenceTable {
    /// A table holding at most `capacity` users.
    pub fn new(capacity: usize) -> Self {
        PresenceTable {
            records: HashMap::new(),
            capacity,
        }
    }

    /// Verifies `record` and keeps it if it is newer than the one held.
    pub fn accept(&mut self, record: PresenceRecord) -> Result<(), PresenceError> {
        record.verify()?;
        self.keep(record)
    }

    /// Keeps `record` if it is newer than the one held, without checking its signature: for a
    /// record whose user the transport already authenticated as its sender (a store peer
    /// receiving a user's own heartbeat over that user's Noise session). The signature check
    /// was ~97 % of a store peer's cost per heartbeat, and is redundant there: a user can only
    /// spoil its own record, and everyone who reads a record from a store peer verifies it.
    pub fn accept_from_owner(&mut self, record: PresenceRecord) -> Result<(), PresenceError> {
        self.keep(record)
    }

    fn keep(&mut self, record: PresenceRecord) -> Result<(), PresenceError> {
        match self.records.get(&record.user) {
            Some(have) if have.seq >= record.seq => Err(PresenceError::Stale {
                have: have.seq,
                got: record.seq,
            }),
            Some(_) => {
                self.records.insert(record.user, record);
                Ok(())
            }
            None if self.records.len() >= self.capacity => Err(PresenceError::Full),
            None => {
                self.records.insert(record.user, record);
                Ok(())
            }
        }
    }

    /// The latest record of `user`.
    pub fn get(&self, user: &UserId) -> Option<&PresenceRecord> {
        self.records.get(user)
    }

    /// Forgets `user`.
    pub fn remove(&mut self, user: &UserId) -> Option<PresenceRecord> {
        self.records.remove(user)
    }

    /// How many users are held.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// Whether the table is empty.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use rand_chacha::ChaCha20Rng;
    use rand_core::SeedableRng;

    use super::*;

    fn ident(seed: u64) -> LocalIdentity {
        LocalIdentity::generate(0, &mut ChaCha20Rng::seed_from_u64(seed))
    }

    #[test]
    fn sign_verify() {
        let me = ident(1);
        for v in [Visibility::Everyone, Visibility::Contacts] {
            let r = PresenceRecord::sign(&me, 3, 1_700_000_000_000, true, v);
            assert_eq!(r.verify(), Ok(()));
            assert_eq!(r.user, me.user_id());
            assert_eq!(
                (r.seq, r.last_seen_ms, r.online, r.visibility),
                (3, 1_700_000_000_000, true, v)
            );
            let back: PresenceRecord = codec::decode(&codec::encode(&r).unwrap()).unwrap();
            assert_eq!(back, r);
            assert_eq!(back.verify(), Ok(()));
        }
    }

    #[test]
    fn signing_bytes_layout() {
        let me = ident(2);
        let r = PresenceRecord::sign(&me, 1, 2, true, Visibility::Contacts);
        let user = me.user_id().to_bytes();
        let mut expected = b"kith-presence/1\0".to_vec();
        expected.push(user.len() as u8);
        expected.extend_from_slice(&user);
        expected.extend_from_slice(&[1, 2, 1, 1]); // seq, last_seen, online, Contacts = 1
        assert!(me.keypair().public().verify(&expected, &r.signature));
    }

    #[test]
    fn forged_records_rejected() {
        let me = ident(3);
        let other = ident(4);
        let good = PresenceRecord::sign(&me, 5, 1_000, true, Visibility::Everyone);
        let changes: [fn(&mut PresenceRecord); 6] = [
            |r| r.seq += 1,
            |r| r.last_seen_ms += 1,
            |r| r.online = !r.online,
            |r| r.visibility = Visibility::Contacts,
            |r| r.signature[0] ^= 1,
            |r| r.signature.truncate(10),
        ];
        for (i, change) in changes.iter().enumerate() {
            let mut r = good.clone();
            change(&mut r);
            assert_eq!(r.verify(), Err(PresenceError::BadSignature), "change {i}");
        }
        // Another user's key: their signature on my record, or my record claimed as theirs.
        let mut r = good.clone();
        r.signature = PresenceRecord::sign(&other, 5, 1_000, true, Visibility::Everyone).signature;
        assert_eq!(r.verify(), Err(PresenceError::BadSignature));
        let mut r = good.clone();
        r.user = other.user_id();
        assert_eq!(r.verify(), Err(PresenceError::BadSignature));
        // And the table refuses it.
        let mut table = PresenceTable::new(4);
        assert_eq!(table.accept(r), Err(PresenceError::BadSignature));
        assert!(table.is_empty());
    }

    #[test]
    fn nobody_blanks_fields() {
        let me = ident(5);
        let r = PresenceRecord::sign(&me, 9, 1_234_567, true, Visibility::Nobody);
        assert_eq!(r.last_seen_ms, 0);
        assert!(!r.online);
        assert_eq!(r.visibility, Visibility::Nobody);
        assert_eq!(r.verify(), Ok(()));
        // Un-blanking breaks the signature.
        let mut r2 = r.clone();
        r2.last_seen_ms = 1_234_567;
        assert_eq!(r2.verify(), Err(PresenceError::BadSignature));
    }

    #[test]
    fn stale_records_rejected() {
        let me = ident(6);
        let mut table = PresenceTable::new(10);
        table
            .accept(PresenceRecord::sign(
                &me,
                5,
                100,
                true,
                Visibility::Everyone,
            ))
            .unwrap();
        assert_eq!(
            table.accept(PresenceRecord::sign(
                &me,
                5,
                200,
                false,
                Visibility::Everyone
            )),
            Err(PresenceError::Stale { have: 5, got: 5 })
        );
        assert_eq!(
            table.accept(PresenceRecord::sign(
                &me,
                4,
                300,
                false,
                Visibility::Everyone
            )),
            Err(PresenceError::Stale { have: 5, got: 4 })
        );
        assert_eq!(table.get(&me.user_id()).unwrap().last_seen_ms, 100);
        table
            .accept(PresenceRecord::sign(
                &me,
                6,
                400,
                false,
                Visibility::Everyone,
            ))
            .unwrap();
        let held = table.get(&me.user_id()).unwrap();
        assert_eq!((held.seq, held.last_seen_ms, held.online), (6, 400, false));
        assert_eq!(table.len(), 1);
        assert_eq!(table.remove(&me.user_id()).unwrap().seq, 6);
        assert!(table.is_empty());
        // Once forgotten, an older record is accepted again.
        table
            .accept(PresenceRecord::sign(&me, 1, 1, true, Visibility::Everyone))
            .unwrap();
    }

    #[test]
    fn owner_records_skip_only_the_signature_check() {
        let me = ident(7);
        let mut table = PresenceTable::new(1);
        let mut r = PresenceRecord::sign(&me, 5, 100, true, Visibility::Everyone);
        // A spoiled signature is kept when the transport vouched for the sender...
        r.last_seen_ms = 150;
        table.accept_from_owner(r.clone()).unwrap();
        assert_eq!(table.get(&me.user_id()).unwrap().last_seen_ms, 150);
        // ...but readers still see it fail, and freshness and capacity still hold.
        assert_eq!(r.verify(), Err(PresenceError::BadSignature));
        assert_eq!(
            table.accept_from_owner(PresenceRecord::sign(&me, 4, 1, true, Visibility::Everyone)),
            Err(PresenceError::Stale { have: 5, got: 4 })
        );
        let other = ident(8);
        assert_eq!(
            table.accept_from_owner(PresenceRecord::sign(
                &other,
                1,
                1,
                true,
                Visibility::Everyone
            )),
            Err(PresenceError::Full)
        );
    }

    #[test]
    fn table_capacity() {
        let users: Vec<_> = (10..13).map(ident).collect();
        let mut table = PresenceTable::new(2);
        table
            .accept(PresenceRecord::sign(
                &users[0],
                1,
                1,
                true,
                Visibility::Everyone,
            ))
            .unwrap();
        table
            .accept(PresenceRecord::sign(
                &users[1],
                1,
                1,
                true,
                Visibility::Everyone,
            ))
            .unwrap();
        assert_eq!(
            table.accept(PresenceRecord::sign(
                &users[2],
                1,
                1,
                true,
                Visibility::Everyone
            )),
            Err(PresenceError::Full)
        );
        assert!(table.get(&users[2].user_id()).is_none());
        // Users already held still update when the table is full.
        table
            .accept(PresenceRecord::sign(
                &users[0],
                2,
                5,
                false,
                Visibility::Everyone,
            ))
            .unwrap();
        assert_eq!(table.get(&users[0].user_id()).unwrap().seq, 2);
        assert_eq!(table.len(), 2);
        // Room again after a removal.
        table.remove(&users[1].user_id());
        table
            .accept(PresenceRecord::sign(
                &users[2],
                1,
                1,
                true,
                Visibility::Everyone,
            ))
            .unwrap();
        assert_eq!(table.len(), 2);
    }
}
