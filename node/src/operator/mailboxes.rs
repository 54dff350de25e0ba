//! The store peer's mailboxes in sled: sealed envelopes per recipient, with quotas, expiry,
//! deduplication by message id, and tombstones for messages their owner already took.
//!
//! Layout: `envelopes`: `len(recipient) ‖ recipient ‖ seq ‖ id` → envelope bytes (arrival order
//! within a mailbox); `ids`: id → key in `envelopes`; `forgotten`: `len(owner) ‖ owner ‖ id` →
//! expiry (tombstones, so a late replica of a delivered message is not stored again; scoped to
//! the mailbox whose owner deleted it, so nobody can block deposits to someone else by
//! "deleting" their ids ahead). Per-mailbox counts and bytes are kept in memory, rebuilt at
//! start.
//!
//! The database is versioned ([`super::format`]): [`Mailboxes::open`] migrates an older one
//! and refuses a newer one before anything is read. An envelope that does not decode is
//! never deleted as if expired: [`Mailboxes::list`] and [`Mailboxes::expire`] move it to the
//! quarantine tree (see [`crate::versioned`]) and out of the mailbox's index and usage.

use std::{collections::HashMap, path::Path};

use crate::{store::Committer, versioned};
use kith_protocol::{mailbox::RefuseReason, Envelope, MessageId, UserId};

/// Quotas and lifetimes of a store peer's mailboxes.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Largest envelope accepted, in bytes.
    pub max_envelope_bytes: usize,
    /// Most messages held per mailbox.
    pub max_messages_per_mailbox: usize,
    /// Most bytes held per mailbox.
    pub max_bytes_per_mailbox: u64,
    /// Most deposits one depositor may make per minute.
    pub deposits_per_minute: u32,
    /// Longest lifetime accepted, in milliseconds (expiry further out is refused).
    pub max_lifetime_ms: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_envelope_bytes: kith_protocol::envelope::MAX_ENVELOPE_LEN,
            max_messages_per_mailbox: 10_000,
            max_bytes_per_mailbox: 64 * 1024 * 1024,
            deposits_per_minute: 6_000,
            max_lifetime_ms: 31 * 24 * 3600 * 1000,
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
    usage: std::sync::Arc<std::sync::Mutex<HashMap<UserId, (usize, u64)>>>,
}

fn prefix(user: &UserId) -> Vec<u8> {
    let b = user.to_bytes();
    let mut k = Vec::with_capacity(b.len() + 1 + 24);
    k.push(b.len() as u8);
    k.extend_from_slice(&b);
    k
}

/// The key of `owner`'s tombstone for `id` in `forgotten`.
fn tombstone(owner: &UserId, id: &MessageId) -> Vec<u8> {
    let mut k = prefix(owner);
    k.extend_from_slice(id.as_bytes());
    k
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
        let db = sled::Config::new()
            .path(dir)
            .mode(sled::Mode::HighThroughput)
            .open()?;
        versioned::open(&db, dir, &super::format::STORE_PEER_SCHEMA)?;
        let envelopes = db.open_tree("envelopes")?;
        let mut usage: HashMap<UserId, (usize, u64)> = HashMap::new();
        for item in envelopes.iter() {
            let (k, v) = item?;
            if let Some(u) = user_of_key(&k) {
                let e = usage.entry(u).or_default();
                e.0 += 1;
                e.1 += v.len() as u64;
            }
        }
        Ok(Mailboxes {
            ids: db.open_tree("ids")?,
            forgotten: db.open_tree("forgotten")?,
            committer: Committer::spawn(db.clone(), std::time::Duration::ZERO),
            envelopes,
            db,
            usage: std::sync::Arc::new(std::sync::Mutex::new(usage)),
        })
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

    /// Stores `env` (already decoded from `bytes`) unless refused by a limit.
    pub fn deposit(
        &self,
        env: &Envelope,
        bytes: &[u8],
        limits: &Limits,
        now_ms: u64,
    ) -> Result<Result<Deposit, RefuseReason>, MailboxError> {
        if bytes.len() > limits.max_envelope_bytes {
            return Ok(Err(RefuseReason::TooLarge));
        }
        if env.header.expires_at_ms <= now_ms
            || env.header.expires_at_ms > now_ms.saturating_add(limits.max_lifetime_ms)
        {
            return Ok(Err(RefuseReason::Expired));
        }
        let id = env.id();
        let user = env.header.recipient;
        if self.ids.contains_key(id.as_bytes())?
            || self.forgotten.contains_key(tombstone(&user, &id))?
        {
            return Ok(Ok(Deposit::Duplicate));
        }
        {
            let usage = self.usage.lock().unwrap_or_else(|p| p.into_inner());
            let (n, b) = usage.get(&user).copied().unwrap_or_default();
            if n >= limits.max_messages_per_mailbox
                || b + bytes.len() as u64 > limits.max_bytes_per_mailbox
            {
                return Ok(Err(RefuseReason::MailboxFull));
            }
        }
        let mut key = prefix(&user);
        key.extend_from_slice(&self.db.generate_id()?.to_be_bytes());
        key.extend_from_slice(id.as_bytes());
        self.envelopes.insert(&key, bytes)?;
        self.ids.insert(id.as_bytes(), key)?;
        let mut usage = self.usage.lock().unwrap_or_else(|p| p.into_inner());
        let e = usage.entry(user).or_default();
        e.0 += 1;
        e.1 += bytes.len() as u64;
        Ok(Ok(Deposit::Stored))
    }

    /// Every envelope held for `user`, oldest first, as raw bytes. Each decodes: one that
    /// does not is quarantined ([`Self::set_aside`]) and left out.
    pub fn list(&self, user: &UserId) -> Result<Vec<(MessageId, Vec<u8>)>, MailboxError> {
        let mut out = Vec::new();
        for item in self.envelopes.scan_prefix(prefix(user)) {
            let (k, v) = item?;
            if k.len() < 16 {
                continue;
            }
            if let Err(e) = Envelope::from_bytes(&v) {
                self.set_aside(&k, &v, &e)?;
                continue;
            }
            let mut id = [0u8; 16];
            id.copy_from_slice(&k[k.len() - 16..]);
            out.push((MessageId(id), v.to_vec()));
        }
        Ok(out)
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
        if key.len() >= 16 {
            // Only the index entry that points at this envelope.
            let id = &key[key.len() - 16..];
            let _ = self.ids.compare_and_swap(id, Some(key), None::<&[u8]>)?;
        }
        if let Some(owner) = user_of_key(key) {
            let mut usage = self.usage.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(e) = usage.get_mut(&owner) {
                e.0 = e.0.saturating_sub(1);
                e.1 = e.1.saturating_sub(bytes.len() as u64);
                if e.0 == 0 {
                    usage.remove(&owner);
                }
            }
        }
        Ok(())
    }

    /// Deletes the given messages of `owner`'s mailbox (ids of other mailboxes are ignored) and
    /// remembers them until `tombstone_until_ms`. Returns how many were deleted.
    pub fn delete(
        &self,
        owner: &UserId,
        ids: &[MessageId],
        tombstone_until_ms: u64,
    ) -> Result<usize, MailboxError> {
        let own = prefix(owner);
        let mut n = 0;
        for id in ids {
            if let Some(key) = self.ids.get(id.as_bytes())? {
                if !key.starts_with(&own) {
                    continue;
                }
                if let Some(v) = self.envelopes.remove(&key)? {
                    let mut usage = self.usage.lock().unwrap_or_else(|p| p.into_inner());
                    if let Some(e) = usage.get_mut(owner) {
                        e.0 = e.0.saturating_sub(1);
                        e.1 = e.1.saturating_sub(v.len() as u64);
                        if e.0 == 0 {
                            usage.remove(owner);
                        }
                    }
                    n += 1;
                }
                self.ids.remove(id.as_bytes())?;
            }
            self.forgotten
                .insert(tombstone(owner, id), &tombstone_until_ms.to_be_bytes())?;
        }
        Ok(n)
    }

    /// The recipient of a held message.
    pub fn owner_of(&self, id: &MessageId) -> Result<Option<UserId>, MailboxError> {
        Ok(self.ids.get(id.as_bytes())?.and_then(|k| user_of_key(&k)))
    }

    /// Deletes expired envelopes and tombstones. Returns how many envelopes went. An
    /// envelope that does not decode has no known expiry: it is quarantined, not deleted.
    pub fn expire(&self, now_ms: u64) -> Result<usize, MailboxError> {
        let mut gone = Vec::new();
        for item in self.envelopes.iter() {
            let (k, v) = item?;
            let expired = match Envelope::from_bytes(&v) {
                Ok(env) => env.header.expires_at_ms <= now_ms,
                Err(e) => {
                    self.set_aside(&k, &v, &e)?;
                    false
                }
            };
            if expired {
                if let Some(u) = user_of_key(&k) {
                    let mut id = [0u8; 16];
                    if k.len() >= 16 {
                        id.copy_from_slice(&k[k.len() - 16..]);
                    }
                    gone.push((u, MessageId(id)));
                }
            }
        }
        let n = gone.len();
        for (u, id) in gone {
            self.delete(&u, &[id], now_ms)?;
        }
        for item in self.forgotten.iter() {
            let (k, v) = item?;
            let until = v.as_ref().try_into().map(u64::from_be_bytes).unwrap_or(0);
            if until <= now_ms {
                self.forgotten.remove(k)?;
            }
        }
        Ok(n)
    }

    /// Mailboxes held, with message count and bytes.
    pub fn usage(&self) -> Vec<(UserId, usize, u64)> {
        let usage = self.usage.lock().unwrap_or_else(|p| p.into_inner());
        usage.iter().map(|(u, (n, b))| (*u, *n, *b)).collect()
    }

    /// Whether a message is held.
    pub fn holds(&self, id: &MessageId) -> Result<bool, MailboxError> {
        Ok(self.ids.contains_key(id.as_bytes())?)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use kith_protocol::{
        seal::{HandshakeBody, SealedBody},
        EnvelopeHeader, LocalIdentity,
    };

    use super::*;

    /// "Now" for every test: expiry is relative to it.
    const NOW: u64 = 1_000_000_000;

    fn user() -> UserId {
        LocalIdentity::generate(0, &mut rand::rngs::OsRng).user_id()
    }

    fn id(n: u8) -> MessageId {
        MessageId([n; 16])
    }

    /// An envelope for `to` (the body is opaque to a store peer: any bytes do) and its bytes.
    fn envelope(
        to: UserId,
        id: MessageId,
        expires_at_ms: u64,
        body_len: usize,
    ) -> (Envelope, Vec<u8>) {
        let env = Envelope {
            header: EnvelopeHeader::new(id, to, expires_at_ms),
            body: SealedBody::Handshake(HandshakeBody {
                prekey_id: 1,
                noise: vec![7; body_len],
            }),
        };
        let bytes = env.to_bytes().unwrap();
        (env, bytes)
    }

    fn open() -> (tempfile::TempDir, Mailboxes) {
        let dir = tempfile::tempdir().unwrap();
        let mailboxes = Mailboxes::open(&dir.path().join("mailboxes")).unwrap();
        (dir, mailboxes)
    }

    fn put(m: &Mailboxes, to: UserId, n: u8, limits: &Limits) -> Result<Deposit, RefuseReason> {
        let (env, bytes) = envelope(to, id(n), NOW + 60_000, 100);
        m.deposit(&env, &bytes, limits, NOW).unwrap()
    }

    fn ids_of(m: &Mailboxes, user: &UserId) -> Vec<MessageId> {
        m.list(user).unwrap().into_iter().map(|(i, _)| i).collect()
    }

    /// Quarantine, migration and refusal of the versioned database.
    mod versioned_storage;

    fn usage_of(m: &Mailboxes, user: &UserId) -> Option<(usize, u64)> {
        m.usage()
            .into_iter()
            .find(|(u, _, _)| u == user)
            .map(|(_, n, b)| (n, b))
    }

    #[tokio::test]
    async fn message_quota_is_per_mailbox_and_frees_up_on_delete() {
        let (_dir, m) = open();
        let limits = Limits {
            max_messages_per_mailbox: 3,
            ..Limits::default()
        };
        let (bob, carol) = (user(), user());
        for n in 1..=3 {
            assert_eq!(put(&m, bob, n, &limits), Ok(Deposit::Stored));
        }
        assert_eq!(put(&m, bob, 4, &limits), Err(RefuseReason::MailboxFull));
        // Another mailbox is not affected.
        assert_eq!(put(&m, carol, 5, &limits), Ok(Deposit::Stored));
        assert_eq!(ids_of(&m, &bob), vec![id(1), id(2), id(3)]);
        assert_eq!(m.delete(&bob, &[id(2)], NOW + 1_000).unwrap(), 1);
        assert_eq!(put(&m, bob, 4, &limits), Ok(Deposit::Stored));
        assert_eq!(ids_of(&m, &bob), vec![id(1), id(3), id(4)]);
        assert_eq!(usage_of(&m, &bob).map(|u| u.0), Some(3));
    }

    #[tokio::test]
    async fn byte_quota_and_envelope_size_and_lifetime_are_enforced() {
        let (_dir, m) = open();
        let bob = user();
        let (small, small_bytes) = envelope(bob, id(1), NOW + 60_000, 100);
        let limits = Limits {
            max_bytes_per_mailbox: 2 * small_bytes.len() as u64,
            max_envelope_bytes: 1_000,
            max_lifetime_ms: 3_600_000,
            ..Limits::default()
        };
        assert_eq!(
            m.deposit(&small, &small_bytes, &limits, NOW).unwrap(),
            Ok(Deposit::Stored)
        );
        let (big, big_bytes) = envelope(bob, id(2), NOW + 60_000, 2_000);
        assert_eq!(
            m.deposit(&big, &big_bytes, &limits, NOW).unwrap(),
            Err(RefuseReason::TooLarge)
        );
        let (past, past_bytes) = envelope(bob, id(3), NOW, 100);
        assert_eq!(
            m.deposit(&past, &past_bytes, &limits, NOW).unwrap(),
            Err(RefuseReason::Expired)
        );
        let (far, far_bytes) = envelope(bob, id(4), NOW + 3_600_001, 100);
        assert_eq!(
            m.deposit(&far, &far_bytes, &limits, NOW).unwrap(),
            Err(RefuseReason::Expired)
        );
        let (second, second_bytes) = envelope(bob, id(5), NOW + 60_000, 100);
        assert_eq!(
            m.deposit(&second, &second_bytes, &limits, NOW).unwrap(),
            Ok(Deposit::Stored)
        );
        let (third, third_bytes) = envelope(bob, id(6), NOW + 60_000, 100);
        assert_eq!(
            m.deposit(&third, &third_bytes, &limits, NOW).unwrap(),
            Err(RefuseReason::MailboxFull)
        );
        assert_eq!(usage_of(&m, &bob), Some((2, 2 * small_bytes.len() as u64)));
    }

    #[tokio::test]
    async fn a_duplicate_is_stored_once() {
        let (_dir, m) = open();
        let limits = Limits::default();
        let bob = user();
        assert_eq!(put(&m, bob, 1, &limits), Ok(Deposit::Stored));
        assert_eq!(put(&m, bob, 1, &limits), Ok(Deposit::Duplicate));
        assert_eq!(ids_of(&m, &bob), vec![id(1)]);
        assert_eq!(usage_of(&m, &bob).map(|u| u.0), Some(1));
        assert!(m.holds(&id(1)).unwrap());
        assert_eq!(m.owner_of(&id(1)).unwrap(), Some(bob));
    }

    #[tokio::test]
    async fn only_the_owner_deletes() {
        let (_dir, m) = open();
        let limits = Limits::default();
        let (bob, mallory) = (user(), user());
        assert_eq!(put(&m, bob, 1, &limits), Ok(Deposit::Stored));
        assert_eq!(put(&m, bob, 2, &limits), Ok(Deposit::Stored));
        assert_eq!(m.delete(&mallory, &[id(1), id(2)], NOW + 1_000).unwrap(), 0);
        assert_eq!(ids_of(&m, &bob), vec![id(1), id(2)]);
        assert_eq!(m.delete(&bob, &[id(1)], NOW + 1_000).unwrap(), 1);
        assert_eq!(ids_of(&m, &bob), vec![id(2)]);
        assert!(!m.holds(&id(1)).unwrap());
        assert_eq!(usage_of(&m, &bob).map(|u| u.0), Some(1));
        assert_eq!(m.delete(&bob, &[id(2)], NOW + 1_000).unwrap(), 1);
        assert_eq!(usage_of(&m, &bob), None);
    }

    #[tokio::test]
    async fn a_tombstone_blocks_a_late_copy_until_it_expires() {
        let (_dir, m) = open();
        let limits = Limits::default();
        let bob = user();
        assert_eq!(put(&m, bob, 1, &limits), Ok(Deposit::Stored));
        assert_eq!(m.delete(&bob, &[id(1)], NOW + 1_000).unwrap(), 1);
        // A late replica (or a retried deposit) of what bob already took is not stored again.
        assert_eq!(put(&m, bob, 1, &limits), Ok(Deposit::Duplicate));
        assert!(ids_of(&m, &bob).is_empty());
        // Bob may also delete ahead what this peer has not received yet.
        assert_eq!(m.delete(&bob, &[id(2)], NOW + 1_000).unwrap(), 0);
        assert_eq!(put(&m, bob, 2, &limits), Ok(Deposit::Duplicate));
        assert!(ids_of(&m, &bob).is_empty());
        // Tombstones go when they expire.
        assert_eq!(m.expire(NOW + 1_000).unwrap(), 0);
        assert_eq!(put(&m, bob, 1, &limits), Ok(Deposit::Stored));
    }

    #[tokio::test]
    async fn someone_elses_delete_ahead_does_not_block_a_deposit() {
        let (_dir, m) = open();
        let limits = Limits::default();
        let (bob, mallory) = (user(), user());
        // Mallory learned (or guessed) the id of a message on its way to bob.
        assert_eq!(m.delete(&mallory, &[id(1)], NOW + 1_000).unwrap(), 0);
        assert_eq!(put(&m, bob, 1, &limits), Ok(Deposit::Stored));
        assert_eq!(ids_of(&m, &bob), vec![id(1)]);
    }

    #[tokio::test]
    async fn expire_removes_expired_envelopes_only() {
        let (_dir, m) = open();
        let limits = Limits::default();
        let (bob, carol) = (user(), user());
        let (soon, soon_bytes) = envelope(bob, id(1), NOW + 10, 100);
        let (later, later_bytes) = envelope(bob, id(2), NOW + 60_000, 100);
        let (carols, carols_bytes) = envelope(carol, id(3), NOW + 10, 100);
        for (env, bytes) in [
            (&soon, &soon_bytes),
            (&later, &later_bytes),
            (&carols, &carols_bytes),
        ] {
            assert_eq!(
                m.deposit(env, bytes, &limits, NOW).unwrap(),
                Ok(Deposit::Stored)
            );
        }
        assert_eq!(m.expire(NOW + 9).unwrap(), 0);
        assert_eq!(m.expire(NOW + 10).unwrap(), 2);
        assert_eq!(ids_of(&m, &bob), vec![id(2)]);
        assert!(ids_of(&m, &carol).is_empty());
        assert_eq!(usage_of(&m, &bob), Some((1, later_bytes.len() as u64)));
        assert_eq!(usage_of(&m, &carol), None);
        assert!(!m.holds(&id(1)).unwrap() && !m.holds(&id(3)).unwrap());
    }

    #[tokio::test]
    async fn usage_is_rebuilt_on_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mailboxes");
        let limits = Limits::default();
        let bob = user();
        {
            let m = Mailboxes::open(&path).unwrap();
            assert_eq!(put(&m, bob, 1, &limits), Ok(Deposit::Stored));
            assert_eq!(put(&m, bob, 2, &limits), Ok(Deposit::Stored));
            m.commit().await.unwrap();
        }
        // The committer task lets go of the database shortly after the last handle goes.
        let mut reopened = None;
        for _ in 0..200 {
            match Mailboxes::open(&path) {
                Ok(m) => {
                    reopened = Some(m);
                    break;
                }
                Err(_) => tokio::time::sleep(std::time::Duration::from_millis(25)).await,
            }
        }
        let m = reopened.expect("the database is released within 5 s");
        assert_eq!(ids_of(&m, &bob), vec![id(1), id(2)]);
        assert_eq!(usage_of(&m, &bob).map(|u| u.0), Some(2));
        assert_eq!(put(&m, bob, 1, &limits), Ok(Deposit::Duplicate));
    }
}
