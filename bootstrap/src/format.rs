//! The store peer database's format version and its migrations, as a reference (the
//! machinery is in [`kith_net::versioned`]; the schema itself is declared beside the code it
//! migrates, in [`super::mailboxes`], which opens the database). One database holds the mailboxes ([`super::mailboxes`]) and the blob
//! index ([`super::blobs`]); [`super::mailboxes::Mailboxes::open`] checks it before either
//! reads anything.
//!
//! Versions:
//! - 1 (no version key): the layouts before format versions.
//! - 2: stamped with a version (values that do not decode are no longer treated as expired
//!   and deleted, but quarantined); an envelope is indexed, and its tombstone kept, by
//!   (recipient, id, digest) (`mailboxes::format::migrate_index_to_recipient_id_digest`).
//!
//! To change the format: raise [`STORE_PEER_VERSION`] and append the steps that bring a
//! database of the previous version to it to [`STORE_PEER_STEPS`] (in `mailboxes`; each
//! idempotent, see
//! [`kith_net::versioned::Step`]).

pub use super::mailboxes::{STORE_PEER_SCHEMA, STORE_PEER_STEPS, STORE_PEER_VERSION};
