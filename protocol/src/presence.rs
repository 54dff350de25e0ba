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
