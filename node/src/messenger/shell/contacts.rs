//! Acting on contact changes: adding contacts from invites or the DHT, learning newer bundles, publishing our own.
//! The decisions are the pure part [`crate::messenger::contacts`]'s; this is the shell acting on them.

use crate::messenger::contacts::*;
use crate::messenger::*;

impl Messenger {
    pub(in crate::messenger) fn me_view(&self) -> Result<Me, NodeError> {
        let addrs = self.net.listen_addrs();
        let invite = Invite::new(self.me.bundle(), &addrs)
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
    ) -> Result<ContactView, NodeError> {
        let invite = Invite::decode(invite).map_err(|e| NodeError::BadInvite(e.to_string()))?;
        if invite.user() == self.user {
            return Err(NodeError::InvalidInput("that invite is your own".into()));
        }
        let addrs = invite.addrs.clone();
        self.add_contact_bundle(invite.bundle, addrs, name)
    }

    /// Adds or updates a contact from a verified bundle and addresses (multiaddr bytes).
    pub(in crate::messenger) fn add_contact_bundle(
        &mut self,
        bundle: KeyBundle,
        addrs: Vec<Vec<u8>>,
        name: Option<String>,
    ) -> Result<ContactView, NodeError> {
        let user = bundle.user;
        let contact = merged_contact(self.contacts.get(&user), bundle, addrs, name, now_ms());
        self.store.put_contact(&contact).map_err(store_err)?;
        let view = ContactView::from(&contact);
        let dial_addrs = contact.multiaddrs();
        self.contacts.insert(user, contact);
        let state = self.peer(user);
        state.retry.allow_now();
        state.dialing_until = Some(Instant::now() + DIAL_TIMEOUT);
        self.net.dial(user.peer_id(), dial_addrs);
        Ok(view)
    }

    /// Takes a newer bundle for a contact, or adds the sender as a contact: the handshake
    /// authenticated them, and replies need their bundle.
    pub(in crate::messenger) fn learn_bundle(&mut self, bundle: &KeyBundle) {
        let user = bundle.user;
        let updated = match self.contacts.get(&user) {
            Some(c) if c.bundle.created_at_ms() >= bundle.created_at_ms() => return,
            Some(c) => Contact {
                bundle: bundle.clone(),
                ..c.clone()
            },
            None => {
                tracing::info!(%user, "message from a new user; added as a contact");
                Contact {
                    user,
                    name: String::new(),
                    bundle: bundle.clone(),
                    addrs: Vec::new(),
                    added_at_ms: now_ms(),
                }
            }
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
