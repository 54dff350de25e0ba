//! The store peer database's format version and its migrations (the machinery is in
//! [`crate::versioned`]). One database holds the mailboxes ([`super::mailboxes`]) and the blob
//! index ([`super::blobs`]); [`super::mailboxes::Mailboxes::open`] checks it before either
//! reads anything.
//!
//! Versions:
//! - 1 (no version key): the layouts before format versions.
//! - 2: the same trees, stamped with a version (values that do not decode are no longer
//!   treated as expired and deleted, but quarantined).
//!
//! To change the format: raise [`STORE_PEER_VERSION`] and append the steps that bring a
//! database of the previous version to it to [`STORE_PEER_STEPS`] (each idempotent, see
//! [`Step`]).

use super::mailboxes::MailboxError;
use crate::versioned::{Schema, Step};

/// The format version this build reads and writes.
pub const STORE_PEER_VERSION: u32 = 2;

/// Every migration step of the store peer's database, oldest first. Version 2 needs no
/// conversion of its own: the version is what it adds.
pub const STORE_PEER_STEPS: &[Step<MailboxError>] = &[];

/// The store peer database's schema.
pub const STORE_PEER_SCHEMA: Schema<MailboxError> = Schema {
    what: "store peer",
    current: STORE_PEER_VERSION,
    steps: STORE_PEER_STEPS,
};
