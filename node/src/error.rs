//! Why a node call failed: the one error type of [`crate::Node`]'s calls.
//!
//! It sits below the handle and the messenger so both (and the REST layer, which maps each
//! variant to one HTTP status in `api::error`) can name it without importing each
//! other. It must never know about HTTP.

use crate::{media::MediaError, store::StoreError};

/// Why a node call failed. The REST layer maps each variant to one HTTP status.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NodeError {
    /// The user is not a contact of this node.
    #[error("unknown contact {0}")]
    UnknownContact(String),
    /// The request is malformed (bad field, bad paging value, empty text...).
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// A field or body is larger than allowed.
    #[error("{what} is {len} bytes, over the {max}-byte limit")]
    TooLarge {
        /// What was too large.
        what: &'static str,
        /// Its size.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// An invite that does not parse or whose bundle does not verify.
    #[error("invalid invite: {0}")]
    BadInvite(String),
    /// Nothing was found (e.g. no key bundle for a user in the DHT).
    #[error("not found: {0}")]
    NotFound(String),
    /// Only a group's admins may do this.
    #[error("only an admin of group {0} may do that")]
    NotAdmin(String),
    /// The local user is not (or no longer) a member of the group.
    #[error("you are not a member of group {0}")]
    NotMember(String),
    /// The node is shutting down or its task has stopped.
    #[error("node is not running")]
    Stopped,
    /// The node's queue is full; try again.
    #[error("node is busy")]
    Busy,
    /// The local store failed.
    #[error("storage: {0}")]
    Storage(#[from] StoreError),
    /// A media file could not be prepared or stored.
    #[error("media storage failed: {0}")]
    Media(#[from] MediaError),
}
