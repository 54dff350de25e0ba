//! Contacts: who the local user can message, with their key bundle and addresses.

use kith_protocol::{codec, identity::KeyBundle, UserId};
use libp2p::Multiaddr;
use serde::{Deserialize, Serialize};

use super::{Store, StoreError};

/// A contact: someone we can message.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Contact {
    /// Their user id.
    pub user: UserId,
    /// The name the local user gave them.
    pub name: String,
    /// Their latest verified key bundle.
    pub bundle: KeyBundle,
    /// Their known addresses (multiaddr bytes).
    pub addrs: Vec<Vec<u8>>,
    /// When they were added, unix ms.
    pub added_at_ms: u64,
}

impl Contact {
    /// Known addresses, parsed.
    pub fn multiaddrs(&self) -> Vec<Multiaddr> {
        self.addrs
            .iter()
            .filter_map(|a| Multiaddr::try_from(a.clone()).ok())
            .collect()
    }
}

impl Store {
    /// A contact by user id.
    pub fn contact(&self, user: &UserId) -> Result<Option<Contact>, StoreError> {
        let key = user.to_bytes();
        match self.contacts.get(&key)? {
            None => Ok(None),
            Some(v) => self.decode(&self.contacts, &key, &v),
        }
    }

    /// All contacts (one that does not decode is quarantined and left out).
    pub fn contacts(&self) -> Result<Vec<Contact>, StoreError> {
        self.decode_all(&self.contacts)
    }

    /// Adds or replaces a contact.
    pub fn put_contact(&self, contact: &Contact) -> Result<(), StoreError> {
        self.contacts
            .insert(contact.user.to_bytes(), codec::encode(contact)?)?;
        Ok(())
    }
}
