//! The store peer's mailboxes in sled: sealed envelopes per recipient, with quotas, expiry,
//! deduplication by message id, and tombstones for messages their owner already took.
//!
//! Layout: `envelopes`: `len(recipient) ‖ recipient ‖ seq ‖ id` → envelope bytes (arrival order
//! within a mailbox); `ids`: id → key in `envelopes`; `forgotten`: id → expiry (tombstones, so
//! a late replica of a delivered message is not stored again). Per-mailbox counts and bytes are
//! kept in memory, rebuilt at start.

use std::{collections::HashMap, path::Path};

use kith_node::store::Committer;
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

fn user_of_key(key: &[u8]) -> Option<UserId> {
    let len = *key.first()? as usize;
    UserId::from_bytes(key.get(1..1 + len)?).ok()
}

impl Mailboxes {
    /// Opens the mailboxes under `dir`. Must run inside a tokio runtime (group committer).
    pub fn open(dir: &Path) -> Result<Self, MailboxError> {
        let db = sled::Config::new().path(dir).mode(sled::Mode::HighThroughput).open()?;
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
    pub fn commit(&self) -> impl std::future::Future<Output = Result<(), sled::Error>> + Send + 'static {
        self.committer.commit()
    }

    /// Flushes now (shutdown).
    pub fn flush(&self) -> Result<(), MailboxError> {
        self.db.flush()?;
        Ok(())
    }

    /// Stores `env` (already decoded from `bytes`) unless refused by a limit.
    pub fn deposit(&self, env: &Envelope, bytes: &[u8], limits: &Limits, now_ms: u64) -> Result<Result<Deposit, RefuseReason>, MailboxError> {
        if bytes.len() > limits.max_envelope_bytes {
            return Ok(Err(RefuseReason::TooLarge));
        }
        if env.header.expires_at_ms <= now_ms || env.header.expires_at_ms > now_ms.saturating_add(limits.max_lifetime_ms) {
            return Ok(Err(RefuseReason::Expired));
        }
        let id = env.id();
        if self.ids.contains_key(id.as_bytes())? || self.forgotten.contains_key(id.as_bytes())? {
            return Ok(Ok(Deposit::Duplicate));
        }
        let user = env.header.recipient;
        {
            let usage = self.usage.lock().unwrap_or_else(|p| p.into_inner());
            let (n, b) = usage.get(&user).copied().unwrap_or_default();
            if n >= limits.max_messages_per_mailbox || b + bytes.len() as u64 > limits.max_bytes_per_mailbox {
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

    /// Every envelope held for `user`, oldest first, as raw bytes.
    pub fn list(&self, user: &UserId) -> Result<Vec<(MessageId, Vec<u8>)>, MailboxError> {
        let mut out = Vec::new();
        for item in self.envelopes.scan_prefix(prefix(user)) {
            let (k, v) = item?;
            if k.len() < 16 {
                continue;
            }
            let mut id = [0u8; 16];
            id.copy_from_slice(&k[k.len() - 16..]);
            out.push((MessageId(id), v.to_vec()));
        }
        Ok(out)
    }

    /// Deletes the given messages of `owner`'s mailbox (ids of other mailboxes are ignored) and
    /// remembers them until `tombstone_until_ms`. Returns how many were deleted.
    pub fn delete(&self, owner: &UserId, ids: &[MessageId], tombstone_until_ms: u64) -> Result<usize, MailboxError> {
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
            self.forgotten.insert(id.as_bytes(), &tombstone_until_ms.to_be_bytes())?;
        }
        Ok(n)
    }

    /// The recipient of a held message.
    pub fn owner_of(&self, id: &MessageId) -> Result<Option<UserId>, MailboxError> {
        Ok(self.ids.get(id.as_bytes())?.and_then(|k| user_of_key(&k)))
    }

    /// Deletes expired envelopes and tombstones. Returns how many envelopes went.
    pub fn expire(&self, now_ms: u64) -> Result<usize, MailboxError> {
        let mut gone = Vec::new();
        for item in self.envelopes.iter() {
            let (k, v) = item?;
            let expired = match Envelope::from_bytes(&v) {
                Ok(env) => env.header.expires_at_ms <= now_ms,
                Err(_) => true,
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
