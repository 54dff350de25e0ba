//! Contacts: who the local user can message, with their key bundle and addresses.

use kith_protocol::{
    codec,
    identity::{KeyBundle, Prekey},
    MailboxAccessKey, UserId,
};
use libp2p::Multiaddr;
use serde::{Deserialize, Serialize};

use super::{Store, StoreError};
use crate::versioned;

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
    /// Their mailbox access key, from their contact card or invite: deposits carrying it
    /// count against their mailbox's quota rather than its requests allowance.
    pub access: Option<MailboxAccessKey>,
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

/// A key bundle as formats 1 to 3 stored it (`kith-bundle/1`: no mailboxes, no issue time).
#[derive(Deserialize)]
struct BundleV1 {
    user: UserId,
    identity_key: [u8; 32],
    static_key: [u8; 32],
    prekey: Prekey,
    #[serde(with = "serde_bytes")]
    signature: Vec<u8>,
}

/// A contact as formats 1 to 3 stored it.
#[derive(Deserialize)]
struct ContactV1 {
    user: UserId,
    name: String,
    bundle: BundleV1,
    addrs: Vec<Vec<u8>>,
    added_at_ms: u64,
}

impl From<ContactV1> for Contact {
    /// The old bundle keeps its keys but names no mailboxes; its `kith-bundle/1` signature
    /// does not verify as a version 2 bundle, which is fine for a stored contact (it was
    /// verified when it arrived) and is replaced by the contact's next card or handshake.
    fn from(c: ContactV1) -> Self {
        Contact {
            user: c.user,
            name: c.name,
            bundle: KeyBundle {
                user: c.bundle.user,
                identity_key: c.bundle.identity_key,
                static_key: c.bundle.static_key,
                prekey: c.bundle.prekey,
                mailboxes: Vec::new(),
                issued_at_ms: c.bundle.prekey.created_at_ms,
                signature: c.bundle.signature,
            },
            addrs: c.addrs,
            added_at_ms: c.added_at_ms,
            access: None,
        }
    }
}

/// Format 3 → 4: contacts (and pending requests, stored the same way) get version 2 bundles
/// (named mailboxes) and an access key slot. Entries already in the new layout are left
/// alone (a rerun is harmless); ones that decode as neither are quarantined.
pub(crate) fn migrate_contacts_to_bundle_v2(db: &sled::Db) -> Result<usize, StoreError> {
    let mut n = 0;
    for tree in ["contacts", super::format::REQUESTS] {
        n += migrate_tree_to_bundle_v2(db, tree)?;
    }
    Ok(n)
}

fn migrate_tree_to_bundle_v2(db: &sled::Db, tree: &str) -> Result<usize, StoreError> {
    let contacts = db.open_tree(tree)?;
    let mut n = 0;
    for item in contacts.iter() {
        let (key, bytes) = item?;
        if codec::decode::<Contact>(&bytes).is_ok() {
            continue;
        }
        match codec::decode::<ContactV1>(&bytes) {
            Ok(old) => {
                let new = codec::encode(&Contact::from(old))?;
                let _ = contacts.compare_and_swap(&key, Some(&bytes), Some(new))?;
                n += 1;
            }
            Err(e) => versioned::quarantine(db, &contacts, &key, &bytes, &e)?,
        }
    }
    Ok(n)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use kith_protocol::LocalIdentity;

    use super::*;

    #[test]
    fn a_format_3_contact_and_request_gain_v2_bundles_and_a_rerun_changes_nothing() {
        let db = sled::Config::new().temporary(true).open().unwrap();
        let alice = LocalIdentity::generate(1_000, &mut rand::rngs::OsRng);
        let b = alice.bundle();
        // The version 1 layout: (user, name, (user, identity, static, prekey, signature),
        // addrs, added_at_ms).
        let old = codec::encode(&(
            b.user,
            "alice",
            (
                b.user,
                b.identity_key,
                b.static_key,
                b.prekey,
                b.signature.clone(),
            ),
            vec![vec![1u8, 2]],
            7u64,
        ))
        .unwrap();
        for tree in ["contacts", super::super::format::REQUESTS] {
            db.open_tree(tree)
                .unwrap()
                .insert("k", old.clone())
                .unwrap();
        }
        assert_eq!(migrate_contacts_to_bundle_v2(&db).unwrap(), 2);
        assert_eq!(migrate_contacts_to_bundle_v2(&db).unwrap(), 0);
        for tree in ["contacts", super::super::format::REQUESTS] {
            let bytes = db.open_tree(tree).unwrap().get("k").unwrap().unwrap();
            let c: Contact = codec::decode(&bytes).unwrap();
            assert_eq!(
                (c.user, c.name.as_str(), c.added_at_ms),
                (b.user, "alice", 7)
            );
            assert_eq!(c.bundle.static_key, b.static_key);
            assert_eq!(c.bundle.issued_at_ms, b.prekey.created_at_ms);
            assert!(c.bundle.mailboxes.is_empty() && c.access.is_none());
        }
    }
}
