//! The mailbox database's format version and its migration steps (the machinery is
//! [`kith_net::versioned`]'s).

use kith_net::versioned::{Schema, Step};
use kith_protocol::envelope::ENVELOPE_DIGEST_LEN;

use super::{identity_key, ref_of, user_of_key, MailboxError};

/// Migration step: converts a mailbox database's indexes from the id-only layout to the
/// (recipient, id, digest) layout. Idempotent; returns how many envelopes it indexed.
///
/// Expects: `envelopes` as it always was (`len(recipient) ‖ recipient ‖ seq ‖ id` → canonical
/// envelope bytes); `ids` in either layout (old: `id` → envelope key, across all mailboxes);
/// `forgotten` in either layout (old: `len(owner) ‖ owner ‖ id` → expiry).
///
/// Produces: `ids` rebuilt from `envelopes` as `len(recipient) ‖ recipient ‖ id ‖ digest` →
/// envelope key; `forgotten` holding only tombstones of the new layout
/// (`len(owner) ‖ owner ‖ id ‖ digest` → expiry). Old tombstones cannot name a digest (the
/// envelope is gone) and are dropped: a late copy of such an envelope may then be stored and
/// pushed once more, and its owner's node, which already holds that sender's message, deletes
/// it again. Entries of `envelopes` whose key is too short to hold an id are left as they are
/// (expiry deletes them).
pub(crate) fn migrate_index_to_recipient_id_digest(db: &sled::Db) -> Result<usize, MailboxError> {
    let envelopes = db.open_tree("envelopes")?;
    let ids = db.open_tree("ids")?;
    let forgotten = db.open_tree("forgotten")?;
    ids.clear()?;
    let mut n = 0;
    for item in envelopes.iter() {
        let (k, v) = item?;
        let (Some(user), Some(r)) = (user_of_key(&k), ref_of(&k, &v)) else {
            continue;
        };
        ids.insert(identity_key(&user, &r), k)?;
        n += 1;
    }
    for item in forgotten.iter() {
        let (k, _) = item?;
        let new_layout = k
            .first()
            .is_some_and(|len| k.len() == 1 + *len as usize + 16 + ENVELOPE_DIGEST_LEN);
        if !new_layout {
            forgotten.remove(k)?;
        }
    }
    Ok(n)
}

/// The format version this build reads and writes.
pub const STORE_PEER_VERSION: u32 = 2;

/// Every migration step of the store peer's database, oldest first.
pub const STORE_PEER_STEPS: &[Step<MailboxError>] = &[Step {
    to: 2,
    name: "envelopes indexed by recipient, id and digest",
    run: index_by_recipient_id_digest,
}];

/// Version 1 → 2: an envelope is identified by its recipient, id and digest, not its id alone.
fn index_by_recipient_id_digest(db: &sled::Db, _: &std::path::Path) -> Result<(), MailboxError> {
    let n = migrate_index_to_recipient_id_digest(db)?;
    tracing::info!(n, "held envelopes re-indexed by recipient, id and digest");
    Ok(())
}

/// The store peer database's schema.
pub const STORE_PEER_SCHEMA: Schema<MailboxError> = Schema {
    what: "store peer",
    current: STORE_PEER_VERSION,
    steps: STORE_PEER_STEPS,
};
