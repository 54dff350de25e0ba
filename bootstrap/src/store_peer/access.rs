//! Who may use which mailbox on this store peer (issue #13): the owner's registration decides.
//!
//! - A deposit for a mailbox whose owner has not registered with this peer, or whose newest
//!   registration does not name it, is refused with [`RefuseReason::NotNamed`]: a peer that
//!   ground an id next to a victim's gets nothing, and an honest one never holds what its
//!   owner cannot find.
//! - A deposit with the owner's access key is charged to the mailbox's quota; one without
//!   (a stranger's message request) also to the small requests allowance.
//! - Replicas are taken only from the other store peers the registration names, and repair
//!   copies only to them.
//! - Presence visible to "contacts" is served only against the access key; a "nobody"
//!   record is not kept at all.

use kith_protocol::{
    access::MailboxRegistration, mailbox::RefuseReason, MailboxAccessKey, PresenceRecord, UserId,
    Visibility,
};
use libp2p::PeerId;

use super::StorePeer;
use crate::{mailboxes::Quota, metrics::SeenDeposit, registrations::RegisterError};

impl StorePeer {
    /// Which quota a deposit into `recipient`'s mailbox is charged to, or why it is refused.
    pub(super) fn admit_deposit(
        &self,
        recipient: &UserId,
        key: Option<&MailboxAccessKey>,
    ) -> Result<Quota<'_>, RefuseReason> {
        let reg = self.named_registration(recipient)?;
        match key {
            Some(key) if reg.verifier.accepts(key) => Ok(Quota::Mailbox),
            _ => Ok(Quota::Requests(&self.cfg.requests_limits)),
        }
    }

    /// Whether `peer` may send replicas of `recipient`'s mailbox here: both must be named.
    pub(super) fn admit_replica(
        &self,
        peer: PeerId,
        recipient: &UserId,
    ) -> Result<(), RefuseReason> {
        let reg = self.named_registration(recipient)?;
        match UserId::from_peer_id(peer) {
            Ok(from) if reg.names(&from) => Ok(()),
            _ => Err(RefuseReason::NotNamed),
        }
    }

    /// `recipient`'s registration, if it names this peer.
    fn named_registration(&self, recipient: &UserId) -> Result<&MailboxRegistration, RefuseReason> {
        let local = self.local_user.ok_or(RefuseReason::NotAStore)?;
        match self.registrations.get(recipient) {
            Some(reg) if reg.names(&local) => Ok(reg),
            _ => Err(RefuseReason::NotNamed),
        }
    }

    /// Takes a registration handed over by `peer`; returns whether it is new here.
    pub(super) fn on_register(&mut self, peer: PeerId, reg: MailboxRegistration) -> bool {
        let Some(local) = self.local_user else {
            return false;
        };
        let owner = reg.owner;
        match self.registrations.register(reg, &local) {
            Ok(changed) => {
                if changed {
                    tracing::debug!(%owner, from = %peer, "mailbox registered");
                }
                changed
            }
            Err(RegisterError::Stale) => false,
            Err(e) => {
                tracing::debug!(%owner, from = %peer, error = %e, "registration not taken");
                false
            }
        }
    }

    /// The other store peers named for `user`'s mailbox (whom repair copies to), with the
    /// registration to forward to them first.
    pub(super) fn replica_set(&self, user: &UserId) -> Option<(Vec<PeerId>, MailboxRegistration)> {
        let reg = self.named_registration(user).ok()?;
        let local = self.local_user?;
        let peers = reg
            .peers
            .iter()
            .filter(|p| **p != local)
            .map(UserId::peer_id)
            .collect();
        Some((peers, reg.clone()))
    }

    /// The presence record of `user` this peer may show to someone presenting `key`.
    pub(super) fn shown_presence(
        &self,
        user: &UserId,
        key: Option<&MailboxAccessKey>,
    ) -> Option<PresenceRecord> {
        let record = self.presence.get(user)?;
        match record.visibility {
            Visibility::Everyone => Some(record.clone()),
            Visibility::Contacts => {
                let reg = self.registrations.get(user)?;
                key.filter(|k| reg.verifier.accepts(k))
                    .map(|_| record.clone())
            }
            Visibility::Nobody => None,
        }
    }

    /// Keeps a heartbeat from its owner; a "nobody" record clears what was held instead.
    pub(super) fn keep_presence(&mut self, record: PresenceRecord, now_ms: u64) -> bool {
        if record.visibility == Visibility::Nobody {
            self.presence.remove(&record.user);
            return false;
        }
        self.presence.accept_from_owner(record, now_ms)
    }

    /// Notes what a deposit showed this peer, when the operator (a test) asked to see it.
    pub(super) fn log_deposit(&self, depositor: PeerId, recipient: UserId, envelope: Vec<u8>) {
        self.metrics.deposit_log.record(SeenDeposit {
            depositor,
            recipient,
            envelope,
        });
    }
}
