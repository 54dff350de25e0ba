//! Acting on contact changes: adding contacts from invites or the DHT, learning newer bundles, publishing our own.
//! The decisions are the pure part [`crate::messenger::contacts`]'s; this is the shell acting on them.

use crate::messenger::contacts::*;
use crate::messenger::*;

impl Messenger {
    pub(in crate::messenger) fn me_view(&self) -> Result<Me, NodeError> {
        let addrs = self.net.listen_addrs();
        let invite = Invite::new(self.me.bundle(), &addrs)
            .with_access(self.access_key)
            .encode()
            .map_err(|e| NodeError::InvalidInput(e.to_string()))?;
        let peer = self.user.peer_id();
        Ok(Me {
            user_id: self.user.to_string(),
            listen_addrs: addrs
                .into_iter()
                .map(|a| a.with_p2p(peer).unwrap_or_else(|a| a).to_string())
                .collect(),
            invite,
        })
    }

    pub(in crate::messenger) fn add_contact(
        &mut self,
        invite: &str,
        name: Option<String>,
    ) -> Result<(ContactView, Vec<MessageId>), NodeError> {
        let invite = Invite::decode(invite).map_err(|e| NodeError::BadInvite(e.to_string()))?;
        if invite.user() == self.user {
            return Err(NodeError::InvalidInput("that invite is your own".into()));
        }
        let addrs = invite.addrs.clone();
        let user = invite.user();
        let view = self.add_contact_bundle(invite.bundle, addrs, name)?;
        if let (Some(key), Some(c)) = (invite.access, self.contacts.get_mut(&user)) {
            c.access = Some(key);
            self.store.put_contact(c).map_err(store_err)?;
        }
        Ok(view)
    }

    /// Adds or updates a contact from a verified bundle and addresses (multiaddr bytes).
    /// Returns the view and the receipts owed to a former request (they leave once durable).
    pub(in crate::messenger) fn add_contact_bundle(
        &mut self,
        bundle: KeyBundle,
        addrs: Vec<Vec<u8>>,
        name: Option<String>,
    ) -> Result<(ContactView, Vec<MessageId>), NodeError> {
        let user = bundle.user;
        if self.requests.is_blocked(&user) {
            return Err(NodeError::InvalidInput(format!(
                "{user} is blocked; unblock them first"
            )));
        }
        let was_contact = self.contacts.contains_key(&user);
        // A pending request the user now adds keeps the bundle and time it came with.
        let old = self
            .contacts
            .get(&user)
            .cloned()
            .or_else(|| self.requests.take(&user));
        let given = name.clone().filter(|n| !n.is_empty());
        let contact = merged_contact(old.as_ref(), bundle, addrs, name, now_ms());
        self.store.put_contact(&contact).map_err(store_err)?;
        let view = crate::view::contact_view(&self.store, &contact);
        self.contacts.insert(user, contact);
        if was_contact {
            // A fresh invite of a contact means "reach them now".
            self.dial_contact(user);
            return Ok((view, Vec::new()));
        }
        let release = self.became_contact(user);
        if let Some(name) = given {
            self.note_key_change(user, &name);
        }
        Ok((view, release))
    }

    /// Takes a newer bundle for a contact (the handshake authenticated it, and replies need
    /// it). Someone who is not a contact is never added here: see [`Messenger::admit_stranger`].
    pub(in crate::messenger) fn learn_bundle(&mut self, bundle: &KeyBundle) {
        let user = bundle.user;
        let updated = match self.contacts.get(&user) {
            Some(c) if c.bundle.created_at_ms() >= bundle.created_at_ms() => return,
            Some(c) => Contact {
                bundle: bundle.clone(),
                ..c.clone()
            },
            None => return,
        };
        if let Err(e) = self.store.put_contact(&updated) {
            tracing::error!(error = %e, "cannot store contact");
        }
        self.contacts.insert(user, updated);
        self.peer(user);
    }

    /// Publishes our key bundle in the DHT, so people can add us by user id alone; at most
    /// once per [`PUBLISH_INTERVAL`].
    pub(in crate::messenger) fn maybe_publish_bundle(&mut self) {
        if self
            .last_publish
            .is_some_and(|t| t.elapsed() < PUBLISH_INTERVAL)
        {
            return;
        }
        let Ok(value) = kith_protocol::codec::encode(&self.me.bundle()) else {
            return;
        };
        self.last_publish = Some(Instant::now());
        self.net.put_record(bundle_record_key(&self.user), value);
    }
}
