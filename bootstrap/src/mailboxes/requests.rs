//! The requests allowance (issue #13): envelopes deposited without the recipient's mailbox
//! access key — a stranger's first messages — are held, pushed and deleted like the others,
//! but also count against a small separate quota per mailbox, so strangers can still write
//! and cannot fill the mailbox. Which held envelopes are requests is kept in the `requests`
//! tree (identity key → nothing), and counted in memory.

use std::collections::HashMap;

use kith_protocol::{mailbox::EnvelopeRef, UserId};

use super::{identity_key, user_of_key, MailboxError, Mailboxes};

/// The separate, small allowance for envelopes deposited without the recipient's access key.
#[derive(Clone, Debug)]
pub struct RequestLimits {
    /// Most such envelopes held per mailbox (default 100).
    pub max_messages: usize,
    /// Most bytes of them held per mailbox (default 2 MiB).
    pub max_bytes: u64,
}

impl Default for RequestLimits {
    fn default() -> Self {
        RequestLimits {
            max_messages: 100,
            max_bytes: 2 * 1024 * 1024,
        }
    }
}

/// Which quota a deposit is charged to.
#[derive(Clone, Copy, Debug)]
pub enum Quota<'a> {
    /// The mailbox's own: the depositor had the access key (or it is a replica of such).
    Mailbox,
    /// The requests allowance (as well as the mailbox's own).
    Requests(&'a RequestLimits),
}

/// Count and bytes of the requests held per mailbox.
pub(super) type RequestUsage = HashMap<UserId, (usize, u64)>;

/// Counts the held requests of `requests` (whose envelopes are found through `ids`).
pub(super) fn count_requests(
    requests: &sled::Tree,
    ids: &sled::Tree,
    envelopes: &sled::Tree,
) -> Result<RequestUsage, MailboxError> {
    let mut usage = RequestUsage::new();
    for item in requests.iter() {
        let (identity, _) = item?;
        let (Some(user), Some(key)) = (user_of_key(&identity), ids.get(&identity)?) else {
            continue;
        };
        if let Some(v) = envelopes.get(&key)? {
            let e = usage.entry(user).or_default();
            e.0 += 1;
            e.1 += v.len() as u64;
        }
    }
    Ok(usage)
}

impl Mailboxes {
    fn lock_requests(&self) -> std::sync::MutexGuard<'_, RequestUsage> {
        self.request_usage.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether `len` more bytes of requests fit `user`'s allowance.
    pub(super) fn request_fits(&self, user: &UserId, len: usize, limits: &RequestLimits) -> bool {
        let (n, b) = self.lock_requests().get(user).copied().unwrap_or_default();
        n < limits.max_messages && b + len as u64 <= limits.max_bytes
    }

    /// Marks the envelope with `identity` (of `len` bytes) in `user`'s mailbox as a request.
    pub(super) fn mark_request(
        &self,
        user: UserId,
        identity: &[u8],
        len: usize,
    ) -> Result<(), MailboxError> {
        self.requests.insert(identity, &[])?;
        let mut usage = self.lock_requests();
        let e = usage.entry(user).or_default();
        e.0 += 1;
        e.1 += len as u64;
        Ok(())
    }

    /// Drops the request mark of an envelope that leaves the mailbox.
    pub(super) fn forget_request(
        &self,
        owner: &UserId,
        identity: &[u8],
        len: usize,
    ) -> Result<(), MailboxError> {
        if self.requests.remove(identity)?.is_some() {
            let mut usage = self.lock_requests();
            if let Some(e) = usage.get_mut(owner) {
                e.0 = e.0.saturating_sub(1);
                e.1 = e.1.saturating_sub(len as u64);
                if e.0 == 0 {
                    usage.remove(owner);
                }
            }
        }
        Ok(())
    }

    /// Whether the envelope `r` of `user`'s mailbox came without the access key (a request).
    pub fn is_request(&self, user: &UserId, r: &EnvelopeRef) -> Result<bool, MailboxError> {
        Ok(self.requests.contains_key(identity_key(user, r))?)
    }

    /// Count and bytes of `user`'s held requests.
    pub fn request_usage(&self, user: &UserId) -> (usize, u64) {
        self.lock_requests().get(user).copied().unwrap_or_default()
    }
}
