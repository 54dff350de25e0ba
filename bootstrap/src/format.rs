//! The store peer database's format version and its migrations (the machinery is in
//! [`kith_net::versioned`]). One database holds the mailboxes ([`super::mailboxes`]) and the blob
//! index ([`super::blobs`]); [`super::mailboxes::Mailboxes::open`] checks it before either
//! reads anything.
//!
//! Versions:
//! - 1 (no version key): the layouts before format versions.
//! - 2: stamped with a version (values that do not decode are no longer treated as expired
//!   and deleted, but quarantined); an envelope is indexed, and its tombstone kept, by
//!   (recipient, id, digest) ([`super::mailboxes::migrate_index_to_recipient_id_digest`]).
//!
//! To change the format: raise [`STORE_PEER_VERSION`] and append the steps that bring a
//! database of the previous version to it to [`STORE_PEER_STEPS`] (each idempotent, see
//! [`Step`]).

use super::mailboxes::MailboxError;
use kith_net::versioned::{Schema, Step};

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
    let n = super::mailboxes::migrate_index_to_recipient_id_digest(db)?;
    tracing::info!(n, "held envelopes re-indexed by recipient, id and digest");
    Ok(())
}

/// The store peer database's schema.
pub const STORE_PEER_SCHEMA: Schema<MailboxError> = Schema {
    what: "store peer",
    current: STORE_PEER_VERSION,
    steps: STORE_PEER_STEPS,
};
