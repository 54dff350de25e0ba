//! What the local user knows about a contact beyond reaching them (tree `peer_info`): the
//! profile the contact sent (name, read-receipt choice), whether the user verified their
//! safety number, and the link between an old and a new user id of the same person.
//!
//! It is kept apart from [`super::Contact`] so that adding it needed no new storage format:
//! a database without the tree simply knows nothing yet (every field has a default), and an
//! older build never opens it.

use kith_protocol::{codec, UserId};
use serde::{Deserialize, Serialize};

use super::{Store, StoreError};

/// Name of the tree.
pub(crate) const PEER_INFO: &str = "peer_info";

/// What the local user knows about one contact (or request) beyond their bundle.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerInfo {
    /// The name the contact gave themselves (empty until their profile comes).
    pub profile_name: String,
    /// When their newest profile was composed (their clock, unix ms): an older one is ignored.
    pub profile_at_ms: u64,
    /// Whether they send read receipts (their profile says; true until it does).
    pub read_receipts: bool,
    /// When the local user marked their safety number verified, if they did.
    pub verified_at_ms: Option<u64>,
    /// The old user id this contact replaces (the same person, reinstalled with a new key).
    pub replaces: Option<UserId>,
    /// The new user id that replaced this contact.
    pub replaced_by: Option<UserId>,
    /// When the key change was noticed (the link above was made), unix ms.
    pub key_changed_at_ms: Option<u64>,
}

impl Default for PeerInfo {
    fn default() -> Self {
        PeerInfo {
            profile_name: String::new(),
            profile_at_ms: 0,
            read_receipts: true,
            verified_at_ms: None,
            replaces: None,
            replaced_by: None,
            key_changed_at_ms: None,
        }
    }
}

impl Store {
    /// What is known about `user` (the defaults when nothing is; a value that does not
    /// decode is quarantined and reads as the defaults).
    pub fn peer_info(&self, user: &UserId) -> Result<PeerInfo, StoreError> {
        let key = user.to_bytes();
        match self.peer_info.get(&key)? {
            None => Ok(PeerInfo::default()),
            Some(v) => Ok(self.decode(&self.peer_info, &key, &v)?.unwrap_or_default()),
        }
    }

    /// Stores what is known about `user` (written by the messenger only).
    pub fn put_peer_info(&self, user: &UserId, info: &PeerInfo) -> Result<(), StoreError> {
        self.peer_info
            .insert(user.to_bytes(), codec::encode(info)?)?;
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use kith_protocol::LocalIdentity;

    use super::*;

    #[tokio::test]
    async fn unknown_peers_have_defaults_and_info_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), std::time::Duration::ZERO).unwrap();
        let user = LocalIdentity::generate(0, &mut rand::rngs::OsRng).user_id();
        assert_eq!(store.peer_info(&user).unwrap(), PeerInfo::default());
        let info = PeerInfo {
            profile_name: "Ann".into(),
            verified_at_ms: Some(5),
            ..PeerInfo::default()
        };
        store.put_peer_info(&user, &info).unwrap();
        assert_eq!(store.peer_info(&user).unwrap(), info);
        store
            .peer_info
            .insert(user.to_bytes(), &[0xff][..])
            .unwrap();
        assert_eq!(store.peer_info(&user).unwrap(), PeerInfo::default());
    }
}
