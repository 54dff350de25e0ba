//! The settings and verification calls of the [`Node`] handle: changes go to the messenger
//! (the one writer of settings and peer info) as commands; safety numbers are computed here
//! from the two user ids.

use kith_protocol::{SafetyNumber, UserId};

use super::{Command, ContactView, Node, NodeError, SafetyNumberView};
use crate::settings::{LastSeen, Settings, SettingsChange};

impl Node {
    /// The settings in effect.
    pub async fn settings(&self) -> Result<Settings, NodeError> {
        self.call(|reply| Command::Settings { reply }).await
    }

    /// Changes the fields `change` gives (kept across restarts); answers the settings in
    /// effect once the change is durable. A changed profile goes to every contact; a changed
    /// last-seen choice reaches contacts at once.
    pub async fn set_settings(&self, change: SettingsChange) -> Result<Settings, NodeError> {
        let change = change.checked()?;
        self.call(|reply| Command::SetSettings { change, reply })
            .await
    }

    /// Whether the local user shares last seen / online (`contacts` or `nobody`).
    pub async fn set_share_presence(&self, share: bool) -> Result<(), NodeError> {
        let last_seen = if share {
            LastSeen::Contacts
        } else {
            LastSeen::Nobody
        };
        self.set_settings(SettingsChange {
            last_seen: Some(last_seen),
            ..SettingsChange::default()
        })
        .await
        .map(|_| ())
    }

    /// The safety number of the conversation with contact `peer` (the same on both sides).
    pub fn safety_number(&self, peer: &UserId) -> Result<SafetyNumberView, NodeError> {
        let Some(contact) = self.store.contact(peer)? else {
            return Err(NodeError::UnknownContact(peer.to_string()));
        };
        let number = SafetyNumber::of(&self.user, peer);
        let info = self.store.peer_info(peer)?;
        Ok(SafetyNumberView {
            user_id: peer.to_string(),
            digits: number.digits().to_string(),
            groups: number.groups(),
            qr_payload: number.qr_payload(),
            verified: info.verified_at_ms.is_some(),
            contact: ContactView::new(&contact, &info),
        })
    }

    /// Marks (or unmarks) contact `peer`'s safety number verified.
    pub async fn set_verified(
        &self,
        peer: UserId,
        verified: bool,
    ) -> Result<ContactView, NodeError> {
        self.call(|reply| Command::SetVerified {
            user: peer,
            verified,
            reply,
        })
        .await
    }
}
