//! Group chats: who is in a group (a signed, numbered [`GroupState`] chain) and how a
//! message is sealed once for all of them (sender keys, as WhatsApp and Signal do).
//!
//! Everything here travels *inside* the one-to-one seal ([`crate::seal`]): a group message
//! is encrypted once with the sender's chain ([`SenderKey::seal`]) and the same ciphertext
//! goes to each member in that member's own envelope, so store peers and relays learn what
//! they learn of any one-to-one message (recipient, size, time) and nothing of the group.
//!
//! - [`state`]: the group state, its changes (create, add, remove, leave, rename, promote),
//!   who may sign which, and [`GroupChain`], which applies states in epoch order, keeps a
//!   short history and settles two admins' concurrent changes (the lower digest wins).
//! - [`sender_key`]: a member's sending chain ([`SenderKey`]), what it hands the others
//!   ([`SenderKeyDistribution`]), and a receiver's copy with bounded skipped keys
//!   ([`ReceivedSenderKeys`]).
//!
//! The exact construction is in `protocol/README.md` ("Groups").

use std::{fmt, str::FromStr};

use rand_core::CryptoRngCore;
use serde::{Deserialize, Serialize};

use crate::{codec, KeyBundle, MessageId, UserId};

pub mod sender_key;
pub mod state;

pub use sender_key::{GroupMessage, ReceivedSenderKeys, SenderKey, SenderKeyDistribution};
pub use state::{GroupChain, GroupChange, GroupState, Offered, SignedGroupState};

/// Most members a group may have (WhatsApp's limit).
pub const MAX_GROUP_MEMBERS: usize = 1024;

/// Longest group name, in bytes.
pub const MAX_GROUP_NAME_LEN: usize = 100;

/// Most key bundles one [`GroupUpdate`] carries (a larger group's bundles go in several).
pub const MAX_UPDATE_BUNDLES: usize = 16;

/// A group's id: 128 random bits, shown as 32 lowercase hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct GroupId(pub [u8; 16]);

impl GroupId {
    /// A fresh random id.
    pub fn random(rng: &mut impl CryptoRngCore) -> Self {
        let mut id = [0u8; 16];
        rng.fill_bytes(&mut id);
        GroupId(id)
    }

    /// The id's bytes.
    pub fn as_bytes(&self) -> &[u8; 16] {
        &self.0
    }
}

impl fmt::Display for GroupId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for GroupId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "GroupId({self})")
    }
}

/// A string that is not 32 hex digits.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a group id is 32 hex digits")]
pub struct GroupIdError;

impl FromStr for GroupId {
    type Err = GroupIdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bytes = s.as_bytes();
        // `from_str_radix` would take a sign ("+a"): only hex digits are an id.
        if bytes.len() != 32 || !bytes.iter().all(u8::is_ascii_hexdigit) {
            return Err(GroupIdError);
        }
        let mut id = [0u8; 16];
        for (i, pair) in bytes.chunks(2).enumerate() {
            let hex = std::str::from_utf8(pair).map_err(|_| GroupIdError)?;
            id[i] = u8::from_str_radix(hex, 16).map_err(|_| GroupIdError)?;
        }
        Ok(GroupId(id))
    }
}

/// Why a group state, sender key or group message is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum GroupError {
    /// The signature does not verify for the claimed author (or sender key).
    #[error("bad signature")]
    BadSignature,
    /// The author may not make this change (not an admin, or not a member).
    #[error("{0} may not make this change")]
    NotAllowed(String),
    /// The state belongs to another group.
    #[error("state of another group")]
    WrongGroup,
    /// The state is at or below one already applied, and is not a better competing one.
    #[error("stale state: epoch {got}, have {have}")]
    Stale {
        /// The epoch we are at.
        have: u64,
        /// The epoch offered.
        got: u64,
    },
    /// The state skips epochs: its predecessor has not arrived yet (hold it and retry).
    #[error("state from the future: epoch {got}, have {have}")]
    Gap {
        /// The epoch we are at.
        have: u64,
        /// The epoch offered.
        got: u64,
    },
    /// The state builds on a state we do not hold at that epoch (a losing branch).
    #[error("state on another branch at epoch {0}")]
    Forked(u64),
    /// The state's lists or name do not follow from its change, or break a limit.
    #[error("invalid state: {0}")]
    Invalid(&'static str),
    /// A group message under a sender key we do not hold.
    #[error("unknown sender key {0}")]
    UnknownKey(u32),
    /// A group message number more than [`sender_key::MAX_FORWARD`] ahead of the chain.
    #[error("message {got} too far ahead of {have}")]
    TooFarAhead {
        /// The chain's next number.
        have: u32,
        /// The message's number.
        got: u32,
    },
    /// A group message whose number was already used (a replay) or whose key was dropped.
    #[error("message {0} already opened or its key is gone")]
    Replayed(u32),
    /// The ciphertext does not decrypt.
    #[error("cannot decrypt")]
    Decrypt,
    /// The sender's chain has sealed its last message number.
    #[error("sender chain exhausted")]
    Exhausted,
    /// An encoding failed.
    #[error("codec: {0}")]
    Codec(String),
}

impl From<codec::CodecError> for GroupError {
    fn from(e: codec::CodecError) -> Self {
        GroupError::Codec(e.to_string())
    }
}

/// Payload [`crate::payload::kind::GROUP_UPDATE`]: a group state, sent by its author to every
/// member of the state before it and after it, with the key bundles of members the
/// recipient may not know, so it can seal to them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupUpdate {
    /// The state.
    pub state: SignedGroupState,
    /// Members' bundles (at most [`MAX_UPDATE_BUNDLES`]; each verified for its member).
    pub bundles: Vec<KeyBundle>,
}

/// Payload [`crate::payload::kind::SENDER_KEY`]: a member's sender key for a group, with the
/// group state it was sent under (which introduces the sender to a member who has not yet
/// heard of them from an admin).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SenderKeyGift {
    /// The sender's current chain, from its current number.
    pub distribution: SenderKeyDistribution,
    /// The sender's newest group state.
    pub state: SignedGroupState,
}

/// The id of the envelope that carries group message `message` to `member`: each member's
/// copy has its own id (outboxes, acks and store peers key by it), derived so that both
/// ends and a restarted sender compute the same one.
pub fn transport_id(message: &MessageId, member: &UserId) -> MessageId {
    use blake2::{Blake2s256, Digest};
    let mut h = Blake2s256::new();
    h.update(b"kith-group-transport/1");
    h.update(message.as_bytes());
    h.update(member.to_bytes());
    let digest = h.finalize();
    let mut id = [0u8; 16];
    id.copy_from_slice(&digest[..16]);
    MessageId(id)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;
