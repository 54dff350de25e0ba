//! Message requests and blocked users: people who wrote to the local user without being a
//! contact wait in `requests` until the user accepts or blocks them; `blocked` is who the
//! user never wants to hear from again. Kept apart from `contacts` so a stranger can never
//! become someone this node dials, heartbeats or answers with receipts.

use kith_protocol::{codec, MessageId, UserId};

use super::{messages::conv_prefix, Contact, Store, StoreError};

impl Store {
    /// A pending message request (the sender's verified bundle, kept as a [`Contact`] record).
    pub fn request(&self, user: &UserId) -> Result<Option<Contact>, StoreError> {
        let key = user.to_bytes();
        match self.requests.get(&key)? {
            None => Ok(None),
            Some(v) => self.decode(&self.requests, &key, &v),
        }
    }

    /// Every pending message request (one that does not decode is quarantined and left out).
    pub fn requests(&self) -> Result<Vec<Contact>, StoreError> {
        self.decode_all(&self.requests)
    }

    /// Adds or replaces a message request.
    pub fn put_request(&self, request: &Contact) -> Result<(), StoreError> {
        self.requests
            .insert(request.user.to_bytes(), codec::encode(request)?)?;
        Ok(())
    }

    /// Removes a message request; whether there was one.
    pub fn remove_request(&self, user: &UserId) -> Result<bool, StoreError> {
        Ok(self.requests.remove(user.to_bytes())?.is_some())
    }

    /// Removes a contact; whether there was one.
    pub fn remove_contact(&self, user: &UserId) -> Result<bool, StoreError> {
        Ok(self.contacts.remove(user.to_bytes())?.is_some())
    }

    /// Whether `user` is blocked.
    pub fn is_blocked(&self, user: &UserId) -> Result<bool, StoreError> {
        Ok(self.blocked.contains_key(user.to_bytes())?)
    }

    /// Blocks `user`, remembering when (unix ms).
    pub fn block(&self, user: &UserId, at_ms: u64) -> Result<(), StoreError> {
        self.blocked.insert(user.to_bytes(), &at_ms.to_be_bytes())?;
        Ok(())
    }

    /// Unblocks `user`; whether they were blocked.
    pub fn unblock(&self, user: &UserId) -> Result<bool, StoreError> {
        Ok(self.blocked.remove(user.to_bytes())?.is_some())
    }

    /// Every blocked user and when they were blocked (unix ms); keys that are not user ids
    /// are skipped.
    pub fn blocked(&self) -> Result<Vec<(UserId, u64)>, StoreError> {
        let mut out = Vec::new();
        for item in self.blocked.iter() {
            let (k, v) = item?;
            let Ok(user) = UserId::from_bytes(&k) else {
                tracing::warn!("blocked list holds a key that is not a user id; skipped");
                continue;
            };
            let at = <[u8; 8]>::try_from(v.as_ref())
                .map(u64::from_be_bytes)
                .unwrap_or(0);
            out.push((user, at));
        }
        Ok(out)
    }

    /// The ids of the received messages from `peer` the local user has not read, oldest
    /// first, at most `limit` (e.g. what an accepted request still owes a delivered receipt).
    pub fn unread_ids(&self, peer: &UserId, limit: usize) -> Result<Vec<MessageId>, StoreError> {
        let mut ids = Vec::new();
        for item in self.unread.scan_prefix(conv_prefix(peer)).take(limit) {
            let (key, _) = item?;
            if let Some(v) = self.messages.get(&key)? {
                if let Some(msg) = self.decode_message(&key, &v)? {
                    ids.push(msg.id);
                }
            }
        }
        Ok(ids)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use kith_protocol::{DeliveryStatus, LocalIdentity};

    use super::*;
    use crate::store::StoredMessage;

    #[tokio::test]
    async fn requests_and_blocks_are_kept_and_listing_unread_ids_marks_nothing_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        let who = LocalIdentity::generate(0, &mut rand::rngs::OsRng);
        let user = who.user_id();
        // (That they survive a restart: tests/tests/requests.rs restarts a node.)
        let store = Store::open(&path, std::time::Duration::ZERO).unwrap();
        {
            store
                .put_request(&Contact {
                    user,
                    name: String::new(),
                    bundle: who.bundle(),
                    addrs: Vec::new(),
                    added_at_ms: 7,
                    access: None,
                })
                .unwrap();
            store.block(&user, 9).unwrap();
            for n in 0..3u8 {
                let msg = StoredMessage {
                    id: MessageId([n; 16]),
                    peer: user,
                    outgoing: false,
                    text: format!("m{n}"),
                    client_meta: "{}".into(),
                    sent_at_ms: 0,
                    stored_at_ms: 0,
                    status: DeliveryStatus::Delivered,
                    media: None,
                };
                assert!(store.insert_message(&msg).unwrap());
            }
        }
        assert_eq!(store.request(&user).unwrap().unwrap().added_at_ms, 7);
        assert_eq!(store.blocked().unwrap(), vec![(user, 9)]);
        assert!(store.is_blocked(&user).unwrap());
        let ids = store.unread_ids(&user, 2).unwrap();
        assert_eq!(ids, vec![MessageId([0; 16]), MessageId([1; 16])]);
        assert_eq!(
            store.unread_count(&user, 10).unwrap(),
            3,
            "listing marks nothing read"
        );
        assert!(store.remove_request(&user).unwrap());
        assert!(!store.remove_request(&user).unwrap());
        assert!(store.unblock(&user).unwrap());
        assert!(!store.unblock(&user).unwrap());
        assert!(store.requests().unwrap().is_empty() && store.blocked().unwrap().is_empty());
    }
}
