//! The store peer's mailboxes in sled: sealed envelopes per recipient, with quotas, expiry,
//! deduplication, and tombstones for envelopes their owner already took.
//!
//! An envelope is identified by (recipient, message id, digest), the digest being the
//! [`EnvelopeDigest`] of its canonical encoding (the bytes held). Message ids are chosen by
//! senders and seen by every store peer, so an id alone proves nothing: someone who reuses the
//! id of a message on its way to bob deposits a *different* envelope, held and pushed beside
//! the first, and deleting theirs never deletes the other. Identical bytes are one envelope.
//!
//! Layout:
//! - `envelopes`: `len(recipient) ‖ recipient ‖ seq ‖ id` → envelope bytes (canonical
//!   encoding; arrival order within a mailbox).
//! - `ids`: `len(recipient) ‖ recipient ‖ id ‖ digest` → key in `envelopes`. An envelope
//!   deleted with a tombstone keeps its entry (pointing at a key no longer in `envelopes`)
//!   until the tombstone expires: one write less per delete on the drain's path, and the
//!   entry is bounded by the tombstone limits like the tombstone itself.
//! - `forgotten`: `len(owner) ‖ owner ‖ id ‖ digest` → expiry (u64 BE). Tombstones, so a late
//!   replica of a delivered envelope is not stored again; scoped to the mailbox whose owner
//!   deleted it, so nobody can block deposits to someone else by "deleting" them ahead, and to
//!   the digest, so deleting one envelope never blocks another that reuses its id.
//!
//! - `requests`: identity key (as in `ids`) → nothing, for each envelope deposited without the
//!   recipient's access key (see [`requests`]).
//!
//! Per-mailbox counts and bytes are kept in memory, rebuilt at start. The layout before
//! (`ids`: id → key, across all mailboxes; `forgotten` without the digest) is converted by
//! `format::migrate_index_to_recipient_id_digest`.
//!
//! The database is versioned ([`super::format`]): [`Mailboxes::open`] migrates an older one
//! and refuses a newer one before anything is read. An envelope that does not decode is
//! never deleted as if expired: [`Mailboxes::list`] and [`Mailboxes::expire`] move it to the
//! quarantine tree (see [`kith_net::versioned`]) and out of the mailbox's index and usage.

use std::{
    path::Path,
    sync::{Arc, Mutex},
};

#[cfg(test)]
use self::format::migrate_index_to_recipient_id_digest;
pub use self::format::{STORE_PEER_SCHEMA, STORE_PEER_STEPS, STORE_PEER_VERSION};
pub use self::requests::{Quota, RequestLimits};
pub use self::usage::{Page, Totals};
use self::{requests::RequestUsage, usage::Usage};
use crate::budget::DiskBudget;
use kith_net::{
    clock::{expiry, is_expired},
    versioned, Committer,
};
use kith_protocol::{
    mailbox::{EnvelopeRef, RefuseReason},
    Envelope, EnvelopeDigest, MessageId, UserId,
};

/// The mailbox database's page cache by default: 64 MiB. The hot part of a mailbox is what
/// arrived since its owner last fetched; older envelopes are read once, on the way out.
pub const DEFAULT_CACHE_BYTES: u64 = 64 * 1024 * 1024;

/// Quotas and lifetimes of a store peer's mailboxes.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Largest envelope accepted, in bytes.
    pub max_envelope_bytes: usize,
    /// Most messages held per mailbox.
    pub max_messages_per_mailbox: usize,
    /// Most bytes held per mailbox.
    pub max_bytes_per_mailbox: u64,
    /// Most deposits one depositor (peer id) may make per minute.
    pub deposits_per_minute: u32,
    /// Most deposits per minute from one IP address, whatever peer ids it uses.
    pub deposits_per_ip_per_minute: u32,
    /// Longest lifetime accepted, in milliseconds (expiry further out is refused).
    pub max_lifetime_ms: u64,
    /// Most tombstones kept per mailbox (a delete ahead past it removes nothing and
    /// remembers nothing: its owner's node deletes a late copy again).
    pub max_tombstones_per_mailbox: usize,
    /// Most tombstones kept in all.
    pub max_tombstones: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_envelope_bytes: kith_protocol::envelope::MAX_ENVELOPE_LEN,
            max_messages_per_mailbox: 10_000,
            max_bytes_per_mailbox: 64 * 1024 * 1024,
            deposits_per_minute: 6_000,
            deposits_per_ip_per_minute: 60_000,
            max_lifetime_ms: 31 * 24 * 3600 * 1000,
            max_tombstones_per_mailbox: 20_000,
            max_tombstones: 2_000_000,
        }
    }
}

/// Why a mailbox operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MailboxError {
    /// sled failed.
    #[error("database: {0}")]
    Sled(#[from] sled::Error),
    /// The database's format version is not one this build can open.
    #[error(transparent)]
    Format(#[from] versioned::FormatError),
}

/// What happened to a deposit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deposit {
    /// Newly stored.
    Stored,
    /// Already held (or already delivered): nothing written.
    Duplicate,
}

/// The mailboxes of one store peer.
#[derive(Clone)]
pub struct Mailboxes {
    db: sled::Db,
    envelopes: sled::Tree,
    ids: sled::Tree,
    forgotten: sled::Tree,
    committer: Committer,
    usage: Arc<Mutex<Usage>>,
    /// The store peer's disk cap, shared with its blobs.
    budget: Arc<DiskBudget>,
    /// Which held envelopes came without the access key.
    requests: sled::Tree,
    /// Count and bytes of them per mailbox.
    request_usage: Arc<Mutex<RequestUsage>>,
}

fn prefix(user: &UserId) -> Vec<u8> {
    let b = user.to_bytes();
    let mut k = Vec::with_capacity(b.len() + 1 + 24);
    k.push(b.len() as u8);
    k.extend_from_slice(&b);
    k
}

/// `len(user) ‖ user ‖ id ‖ digest`: the key of an envelope in `ids`, and of its owner's
/// tombstone in `forgotten`.
fn identity_key(user: &UserId, r: &EnvelopeRef) -> Vec<u8> {
    let mut k = prefix(user);
    k.extend_from_slice(r.id.as_bytes());
    k.extend_from_slice(&r.digest.0);
    k
}

/// The message id at the end of a key in `envelopes`.
fn id_of_envelope_key(key: &[u8]) -> Option<MessageId> {
    let start = key.len().checked_sub(16)?;
    let id: [u8; 16] = key.get(start..)?.try_into().ok()?;
    Some(MessageId(id))
}

/// The identity of a held envelope, from its key in `envelopes` and its bytes.
fn ref_of(key: &[u8], bytes: &[u8]) -> Option<EnvelopeRef> {
    Some(EnvelopeRef {
        id: id_of_envelope_key(key)?,
        digest: EnvelopeDigest::of_bytes(bytes),
    })
}

fn user_of_key(key: &[u8]) -> Option<UserId> {
    let len = *key.first()? as usize;
    UserId::from_bytes(key.get(1..1 + len)?).ok()
}

impl Mailboxes {
    /// Opens the mailboxes under `dir`. Must run inside a tokio runtime (group committer).
    /// The database, for other indexes of the store peer (the blob index) to live beside the
    /// mailboxes under one lock.
    pub fn db(&self) -> &sled::Db {
        &self.db
    }

    /// Opens (or creates) the mailboxes under `dir`: an older format is migrated first, a
    /// newer one refused ([`super::format`]).
    pub fn open(dir: &Path) -> Result<Self, MailboxError> {
        Self::open_with_cache(dir, DEFAULT_CACHE_BYTES)
    }

    /// As [`Mailboxes::open`], caching at most `cache_bytes` of the database in memory.
    pub fn open_with_cache(dir: &Path, cache_bytes: u64) -> Result<Self, MailboxError> {
        let db = sled::Config::new()
            .path(dir)
            .mode(sled::Mode::HighThroughput)
            .cache_capacity(cache_bytes)
            .open()?;
        versioned::open(&db, dir, &STORE_PEER_SCHEMA)?;
        let envelopes = db.open_tree("envelopes")?;
        let forgotten = db.open_tree("forgotten")?;
        let ids = db.open_tree("ids")?;
        let mut usage = Usage::default();
        let mut reindexed = 0usize;
        for item in envelopes.iter() {
            let (k, v) = item?;
            if let Some(u) = user_of_key(&k) {
                usage.add(u, v.len() as u64);
                // A crash between the envelope and its index entry (see `deposit`).
                if let Some(r) = ref_of(&k, &v) {
                    let identity = identity_key(&u, &r);
                    if !ids.contains_key(&identity)? {
                        ids.insert(identity, k.as_ref())?;
                        reindexed += 1;
                    }
                }
            }
        }
        if reindexed > 0 {
            tracing::warn!(reindexed, "envelopes indexed again after an unclean stop");
        }
        let requests = db.open_tree("requests")?;
        let request_usage = requests::count_requests(&requests, &ids, &envelopes)?;
        for item in forgotten.iter() {
            let (k, _) = item?;
            if let Some(u) = user_of_key(&k) {
                usage.tombstone_added(u);
            }
        }
        let budget = Arc::new(DiskBudget::new(u64::MAX));
        budget.charge(usage.bytes);
        Ok(Mailboxes {
            ids,
            requests,
            request_usage: Arc::new(Mutex::new(request_usage)),
            forgotten,
            committer: Committer::spawn(db.clone(), std::time::Duration::ZERO),
            envelopes,
            db,
            usage: Arc::new(Mutex::new(usage)),
            budget,
        })
    }

    /// The store peer's disk budget (its cap is set by the store peer; blobs share it).
    pub fn budget(&self) -> &Arc<DiskBudget> {
        &self.budget
    }

    fn lock_usage(&self) -> std::sync::MutexGuard<'_, Usage> {
        self.usage.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The group committer of the mailboxes' database.
    pub fn committer(&self) -> &Committer {
        &self.committer
    }

    /// Resolves once everything written before is durable.
    pub fn commit(
        &self,
    ) -> impl std::future::Future<Output = Result<(), sled::Error>> + Send + 'static {
        self.committer.commit()
    }

    /// Flushes now (shutdown).
    pub fn flush(&self) -> Result<(), MailboxError> {
        self.db.flush()?;
        Ok(())
    }

    /// Stores `env` unless refused by a limit; `bytes` must be its canonical encoding
    /// ([`Envelope::to_bytes`]), which is what is held and digested.
    pub fn deposit(
        &self,
        env: &Envelope,
        bytes: &[u8],
        limits: &Limits,
        quota: Quota<'_>,
        now_ms: u64,
    ) -> Result<Result<Deposit, RefuseReason>, MailboxError> {
        if bytes.len() > limits.max_envelope_bytes {
            return Ok(Err(RefuseReason::TooLarge));
        }
        if is_expired(env.header.expires_at_ms, now_ms)
            || env.header.expires_at_ms > expiry(now_ms, limits.max_lifetime_ms)
        {
            return Ok(Err(RefuseReason::Expired));
        }
        let id = env.id();
        let user = env.header.recipient;
        let identity = identity_key(
            &user,
            &EnvelopeRef {
                id,
                digest: EnvelopeDigest::of_bytes(bytes),
            },
        );
        if self.ids.contains_key(&identity)? || self.forgotten.contains_key(&identity)? {
            return Ok(Ok(Deposit::Duplicate));
        }
        {
            let usage = self.lock_usage();
            let (n, b) = usage.per_mailbox.get(&user).copied().unwrap_or_default();
            if n >= limits.max_messages_per_mailbox
                || b + bytes.len() as u64 > limits.max_bytes_per_mailbox
            {
                return Ok(Err(RefuseReason::MailboxFull));
            }
        }
        if let Quota::Requests(allowance) = quota {
            if !self.request_fits(&user, bytes.len(), allowance) {
                return Ok(Err(RefuseReason::MailboxFull));
            }
        }
        if !self.budget.try_charge(bytes.len() as u64) {
            return Ok(Err(RefuseReason::StoreFull));
        }
        let mut key = prefix(&user);
        key.extend_from_slice(&self.db.generate_id()?.to_be_bytes());
        key.extend_from_slice(id.as_bytes());
        // No sled transaction (one anywhere in the process turns every later read into a
        // shared lock that deadlocks against a database being dropped): the envelope first,
        // then its index entry and request mark, an order whose every prefix is safe; an
        // envelope left without its index entry by a crash is indexed again at open.
        let written = self
            .envelopes
            .insert(key.as_slice(), bytes)
            .and_then(|_| self.ids.insert(identity.as_slice(), key.as_slice()));
        if let Err(e) = written {
            self.budget.release(bytes.len() as u64);
            return Err(e.into());
        }
        if matches!(quota, Quota::Requests(_)) {
            self.mark_request(user, &identity, bytes.len())?;
        }
        self.lock_usage().add(user, bytes.len() as u64);
        Ok(Ok(Deposit::Stored))
    }

    /// Every envelope held for `user`, oldest first: its identity and its bytes. Each
    /// decodes: one that does not is quarantined ([`Self::set_aside`]) and left out.
    pub fn list(&self, user: &UserId) -> Result<Vec<(EnvelopeRef, Vec<u8>)>, MailboxError> {
        let mut out = Vec::new();
        for item in self.envelopes.scan_prefix(prefix(user)) {
            let (k, v) = item?;
            if let Err(e) = Envelope::from_bytes(&v) {
                self.set_aside(&k, &v, &e)?;
                continue;
            }
            if let Some(r) = ref_of(&k, &v) {
                out.push((r, v.to_vec()));
            }
        }
        Ok(out)
    }

    /// One page of `user`'s mailbox: envelopes after `after` (from the start when `None`), in
    /// arrival order, until `max_bytes` or `max_count` is reached (at least one envelope when
    /// any is left, so a page always moves on). Reads only what it returns.
    pub fn list_page(
        &self,
        user: &UserId,
        after: Option<&[u8]>,
        max_bytes: usize,
        max_count: usize,
    ) -> Result<Page, MailboxError> {
        let start = prefix(user);
        let mut range_start = start.clone();
        if let Some(after) = after {
            range_start = after.to_vec();
            // Strictly after: the smallest key greater than `after`.
            range_start.push(0);
        }
        let mut page = Page::default();
        let mut bytes = 0usize;
        let mut last_key = None;
        for item in self.envelopes.range(range_start..) {
            let (k, v) = item?;
            if !k.starts_with(&start) {
                break;
            }
            if !page.held.is_empty()
                && (bytes + v.len() > max_bytes || page.held.len() >= max_count)
            {
                page.next = last_key;
                return Ok(page);
            }
            if let Err(e) = Envelope::from_bytes(&v) {
                self.set_aside(&k, &v, &e)?;
                continue;
            }
            if let Some(r) = ref_of(&k, &v) {
                bytes += v.len();
                page.held.push((r, v.to_vec()));
                last_key = Some(k.to_vec());
            }
        }
        Ok(page)
    }

    /// Moves the envelope at `key` (bytes `bytes`, which do not decode: `why`) to the
    /// quarantine tree, and out of the id index and the mailbox's usage. No tombstone: the
    /// message was never delivered, so a good copy replicated later is still welcome.
    fn set_aside(
        &self,
        key: &[u8],
        bytes: &[u8],
        why: &dyn std::fmt::Display,
    ) -> Result<(), MailboxError> {
        versioned::quarantine(&self.db, &self.envelopes, key, bytes, why)?;
        if let (Some(owner), Some(id)) = (user_of_key(key), id_of_envelope_key(key)) {
            // The digest of what was stored is unknown (the bytes are damaged): remove the
            // index entries of this recipient and id that point at this envelope, only.
            let mut index_prefix = prefix(&owner);
            index_prefix.extend_from_slice(id.as_bytes());
            for item in self.ids.scan_prefix(&index_prefix) {
                let (identity, target) = item?;
                if target.as_ref() == key {
                    let _ = self
                        .ids
                        .compare_and_swap(&identity, Some(target), None::<&[u8]>)?;
                    self.forget_request(&owner, &identity, bytes.len())?;
                }
            }
        }
        if let Some(owner) = user_of_key(key) {
            self.lock_usage().remove(&owner, bytes.len() as u64);
            self.budget.release(bytes.len() as u64);
        }
        Ok(())
    }

    /// Deletes exactly the named envelopes of `owner`'s mailbox (other mailboxes are never
    /// touched, nor another envelope reusing a named id) and remembers them until
    /// `tombstone_until_ms`, within the tombstone caps of `limits` (an envelope deleted is
    /// always deleted; only remembering it may be skipped). Returns how many were deleted.
    pub fn delete(
        &self,
        owner: &UserId,
        refs: &[EnvelopeRef],
        tombstone_until_ms: u64,
        limits: &Limits,
    ) -> Result<usize, MailboxError> {
        let mut n = 0;
        for r in refs {
            let identity = identity_key(owner, r);
            let indexed = self.ids.get(&identity)?;
            if let Some(key) = &indexed {
                if let Some(v) = self.envelopes.remove(key)? {
                    self.lock_usage().remove(owner, v.len() as u64);
                    self.budget.release(v.len() as u64);
                    self.forget_request(owner, &identity, v.len())?;
                    n += 1;
                }
            }
            let room = {
                let usage = self.lock_usage();
                usage.tombstones.get(owner).copied().unwrap_or(0)
                    < limits.max_tombstones_per_mailbox
                    && usage.tombstones_total < limits.max_tombstones
            };
            if !room {
                // No tombstone: nothing may say "seen" any more, the index entry included.
                if indexed.is_some() {
                    self.ids.remove(&identity)?;
                }
                continue;
            }
            // The tombstone first, so that a crash between the two writes never leaves an
            // entry without one; the index entry stays until the tombstone expires.
            let had = self
                .forgotten
                .insert(identity.as_slice(), &tombstone_until_ms.to_be_bytes())?;
            if had.is_none() {
                self.lock_usage().tombstone_added(*owner);
            }
        }
        Ok(n)
    }

    /// Deletes expired envelopes and tombstones. Returns how many envelopes went. An
    /// envelope that does not decode has no known expiry: it is quarantined, not deleted.
    pub fn expire(&self, now_ms: u64) -> Result<usize, MailboxError> {
        let mut gone = Vec::new();
        for item in self.envelopes.iter() {
            let (k, v) = item?;
            let expired = match Envelope::from_bytes(&v) {
                Ok(env) => is_expired(env.header.expires_at_ms, now_ms),
                Err(e) => {
                    self.set_aside(&k, &v, &e)?;
                    false
                }
            };
            if expired {
                if let (Some(u), Some(r)) = (user_of_key(&k), ref_of(&k, &v)) {
                    gone.push((u, r));
                }
            }
        }
        let n = gone.len();
        for (u, r) in gone {
            // An expired envelope needs no tombstone that outlives it.
            let no_tombstone = Limits {
                max_tombstones_per_mailbox: 0,
                ..Limits::default()
            };
            self.delete(&u, &[r], now_ms, &no_tombstone)?;
        }
        for item in self.forgotten.iter() {
            let (k, v) = item?;
            let until = v.as_ref().try_into().map(u64::from_be_bytes).unwrap_or(0);
            if is_expired(until, now_ms) && self.forgotten.remove(&k)?.is_some() {
                // The index entry its envelope's delete left behind (see `ids` above), unless
                // a copy was deposited again since (then it points at a held envelope).
                if let Some(key) = self.ids.get(&k)? {
                    if !self.envelopes.contains_key(&key)? {
                        self.ids.remove(&k)?;
                    }
                }
                if let Some(u) = user_of_key(&k) {
                    self.lock_usage().tombstone_gone(&u);
                }
            }
        }
        Ok(n)
    }

    /// Mailboxes held, with message count and bytes.
    pub fn usage(&self) -> Vec<(UserId, usize, u64)> {
        let usage = self.lock_usage();
        usage
            .per_mailbox
            .iter()
            .map(|(u, (n, b))| (*u, *n, *b))
            .collect()
    }

    /// Totals of what is held, without copying any per-mailbox figure.
    pub fn totals(&self) -> Totals {
        let usage = self.lock_usage();
        Totals {
            mailboxes: usage.per_mailbox.len(),
            messages: usage.messages,
            bytes: usage.bytes,
            tombstones: usage.tombstones_total,
        }
    }

    /// Whether an envelope is held in `user`'s mailbox.
    pub fn holds(&self, user: &UserId, r: &EnvelopeRef) -> Result<bool, MailboxError> {
        match self.ids.get(identity_key(user, r))? {
            // A deleted envelope's entry outlives it until its tombstone expires.
            Some(key) => Ok(self.envelopes.contains_key(&key)?),
            None => Ok(false),
        }
    }
}

mod format;
mod requests;
mod usage;

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;
