//! Acting on the user's settings and on what contacts say about themselves: loading and
//! storing settings (`meta`, one key per field), sending our profile (kind 9) to contacts,
//! taking theirs, read-receipt and auto-download decisions, the verified mark, and linking a
//! contact added under the name of another one (the same person with a new key).
//! What each setting means is [`crate::settings`]'s; this is the shell acting on it.

use kith_protocol::payload::Profile;

use crate::messenger::presence::SHARE_LAST_SEEN_KEY;
use crate::messenger::*;
use crate::settings::{LastSeen, Settings, SettingsChange};
use crate::store::PeerInfo;

/// `meta` keys of the settings, one per field.
const PROFILE_NAME: &str = "settings.profile_name";
const LAST_SEEN: &str = "settings.last_seen";
const READ_RECEIPTS: &str = "settings.read_receipts";
const AUTO_DOWNLOAD_BYTES: &str = "settings.auto_download_bytes";
const AUTO_DOWNLOAD_CONTACTS_ONLY: &str = "settings.auto_download_contacts_only";
const NOTIFICATIONS: &str = "settings.notifications";

impl Messenger {
    /// Loads the stored settings over the config's defaults. A last-seen choice stored before
    /// settings existed (`share_last_seen` = 0) still hides; `kith run --hide-last-seen`
    /// (config `share_last_seen` false) hides whatever is stored.
    pub(in crate::messenger) fn load_settings(&mut self) -> Result<(), StoreError> {
        let mut s = Settings::defaults(&self.cfg);
        let store = &self.store;
        if let Some(v) = store.meta_value::<String>(PROFILE_NAME)? {
            s.profile_name = v;
        }
        match store.meta_value::<LastSeen>(LAST_SEEN)? {
            Some(v) => s.last_seen = v,
            None if store.meta_u64(SHARE_LAST_SEEN_KEY)? == Some(0) => {
                s.last_seen = LastSeen::Nobody
            }
            None => {}
        }
        if !self.cfg.share_last_seen {
            s.last_seen = LastSeen::Nobody;
        }
        s.share_last_seen = s.last_seen.shares();
        if let Some(v) = store.meta_value::<bool>(READ_RECEIPTS)? {
            s.read_receipts = v;
        }
        if let Some(v) = store.meta_value::<u64>(AUTO_DOWNLOAD_BYTES)? {
            s.auto_download_bytes = v;
        }
        if let Some(v) = store.meta_value::<bool>(AUTO_DOWNLOAD_CONTACTS_ONLY)? {
            s.auto_download_contacts_only = v;
        }
        if let Some(v) = store.meta_value::<bool>(NOTIFICATIONS)? {
            s.notifications = v;
        }
        self.settings = s;
        Ok(())
    }

    /// Writes the fields `change` gives, as they now are in effect.
    fn store_settings(&self, change: &SettingsChange) -> Result<(), StoreError> {
        let (store, s) = (&self.store, &self.settings);
        if change.profile_name.is_some() {
            store.set_meta_value(PROFILE_NAME, &s.profile_name)?;
        }
        if change.last_seen.is_some() {
            store.set_meta_value(LAST_SEEN, &s.last_seen)?;
            // Kept too, so an older build started on this database still hides.
            store.set_meta_u64(SHARE_LAST_SEEN_KEY, u64::from(s.last_seen.shares()))?;
        }
        if change.read_receipts.is_some() {
            store.set_meta_value(READ_RECEIPTS, &s.read_receipts)?;
        }
        if change.auto_download_bytes.is_some() {
            store.set_meta_value(AUTO_DOWNLOAD_BYTES, &s.auto_download_bytes)?;
        }
        if change.auto_download_contacts_only.is_some() {
            store.set_meta_value(AUTO_DOWNLOAD_CONTACTS_ONLY, &s.auto_download_contacts_only)?;
        }
        if change.notifications.is_some() {
            store.set_meta_value(NOTIFICATIONS, &s.notifications)?;
        }
        Ok(())
    }

    pub(in crate::messenger) fn on_settings_command(&mut self, cmd: Command) {
        match cmd {
            Command::Settings { reply } => {
                let _ = reply.send(Ok(self.settings.clone()));
            }
            Command::SetSettings { change, reply } => {
                let changed = change.apply(&mut self.settings);
                if let Err(e) = self.store_settings(&change) {
                    let _ = reply.send(Err(store_err(e)));
                    return;
                }
                if changed.last_seen {
                    // A change contacts must hear now, not at their next refresh.
                    self.beats_since_contacts = CONTACT_REFRESH_INTERVALS;
                    self.on_heartbeat();
                }
                let mut release = Vec::new();
                if changed.profile {
                    let contacts: Vec<UserId> = self.contacts.keys().copied().collect();
                    for c in contacts {
                        release.extend(self.queue_profile(c));
                    }
                }
                let settings = self.settings.clone();
                self.reply_after_commit(reply, settings, release);
            }
            Command::SetVerified {
                user,
                verified,
                reply,
            } => match self.set_verified(user, verified) {
                Ok(view) => self.reply_after_commit(reply, view, Vec::new()),
                Err(e) => {
                    let _ = reply.send(Err(e));
                }
            },
            _ => {}
        }
    }

    /// Writes our profile for `to` to the outbox (released by the caller once durable).
    pub(in crate::messenger) fn queue_profile(&mut self, to: UserId) -> Option<MessageId> {
        let profile = Payload::Profile(Profile {
            name: self.settings.profile_name.clone(),
            read_receipts: self.settings.read_receipts,
        });
        self.queue_control(to, &profile)
            .map_err(|e| tracing::error!(error = %e, "cannot queue our profile"))
            .ok()
    }

    /// Our profile for a new contact, unless it says nothing a contact does not assume
    /// (no name, read receipts on).
    pub(in crate::messenger) fn queue_profile_if_set(&mut self, to: UserId) -> Option<MessageId> {
        if self.settings.profile_name.is_empty() && self.settings.read_receipts {
            return None;
        }
        self.queue_profile(to)
    }

    /// A contact's (or request's) profile, composed at `sent_at_ms` on their clock: kept
    /// unless a newer one is held.
    pub(in crate::messenger) fn on_profile(
        &mut self,
        sender: UserId,
        profile: Profile,
        sent_at_ms: u64,
    ) {
        let mut info = match self.store.peer_info(&sender) {
            Ok(i) => i,
            Err(e) => {
                tracing::error!(error = %e, "cannot read peer info");
                return;
            }
        };
        if sent_at_ms < info.profile_at_ms {
            tracing::debug!(%sender, "older profile ignored");
            return;
        }
        info.profile_at_ms = sent_at_ms;
        info.profile_name = profile.name;
        info.read_receipts = profile.read_receipts;
        self.put_info(sender, &info);
    }

    /// Stores what is known about `user` and tells listeners about the contact.
    fn put_info(&mut self, user: UserId, info: &PeerInfo) {
        if let Err(e) = self.store.put_peer_info(&user, info) {
            tracing::error!(error = %e, "cannot store peer info");
            return;
        }
        if let Some(c) = self.contacts.get(&user) {
            let contact = Box::new(ContactView::new(c, info));
            self.emit(|| Event::Contact { contact });
        }
    }

    /// Whether a read receipt goes to `peer`: both of us send them (mutual).
    pub(in crate::messenger) fn sends_read_receipts(&self, peer: &UserId) -> bool {
        self.settings.read_receipts
            && self
                .store
                .peer_info(peer)
                .map(|i| i.read_receipts)
                .unwrap_or(true)
    }

    /// The status a received receipt of `kind` moves our messages to: with our read
    /// receipts off we show nobody's blue ticks, so a read receipt counts as delivered.
    pub(in crate::messenger) fn receipt_status(&self, kind: ReceiptKind) -> DeliveryStatus {
        match kind {
            ReceiptKind::Read if self.settings.read_receipts => DeliveryStatus::Read,
            ReceiptKind::Read | ReceiptKind::Delivered => DeliveryStatus::Delivered,
        }
    }

    /// Whether media of `size` bytes from contact `from` is fetched at once.
    pub(in crate::messenger) fn auto_downloads(&self, from: &UserId, size: u64) -> bool {
        let named = self.contacts.get(from).is_some_and(|c| !c.name.is_empty());
        self.settings.auto_downloads(size, named)
    }

    /// Marks or unmarks contact `user`'s safety number verified.
    fn set_verified(&mut self, user: UserId, verified: bool) -> Result<ContactView, NodeError> {
        let Some(contact) = self.contacts.get(&user).cloned() else {
            return Err(NodeError::UnknownContact(user.to_string()));
        };
        let mut info = self.store.peer_info(&user).map_err(store_err)?;
        info.verified_at_ms = verified.then(now_ms);
        self.store.put_peer_info(&user, &info).map_err(store_err)?;
        let view = ContactView::new(&contact, &info);
        let contact = Box::new(view.clone());
        self.emit(|| Event::Contact { contact });
        Ok(view)
    }

    /// `user`, just added under `name`, is the same person as another contact the user gave
    /// that name: someone who reinstalled, and so has a new identity key and user id. The
    /// two are linked, neither is verified any more, and both conversations say so.
    pub(in crate::messenger) fn note_key_change(&mut self, user: UserId, name: &str) {
        let old = self
            .contacts
            .values()
            .filter(|c| c.user != user && c.name == name)
            .max_by_key(|c| c.added_at_ms)
            .map(|c| c.user);
        let Some(old) = old else {
            return;
        };
        let (Ok(mut old_info), Ok(mut new_info)) =
            (self.store.peer_info(&old), self.store.peer_info(&user))
        else {
            tracing::error!("cannot read peer info");
            return;
        };
        let now = now_ms();
        tracing::info!(%old, new = %user, "a contact's key changed: new user id under the same name");
        old_info.replaced_by = Some(user);
        old_info.verified_at_ms = None;
        old_info.key_changed_at_ms = Some(now);
        new_info.replaces = Some(old);
        new_info.verified_at_ms = None;
        new_info.key_changed_at_ms = Some(now);
        self.put_info(old, &old_info);
        self.put_info(user, &new_info);
    }
}
