//! Identifiers: who a user is and which message is which.

use std::{fmt, str::FromStr};

use libp2p_identity::PeerId;
use rand_core::CryptoRngCore;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A user: the libp2p PeerId of their Ed25519 identity key.
///
/// For Ed25519 the PeerId embeds the public key itself (identity multihash), so a `UserId` is
/// enough to verify that user's signatures without any other lookup.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UserId(PeerId);

/// Why a string or byte string is not a [`UserId`].
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum UserIdError {
    /// Not a valid PeerId.
    #[error("not a valid peer id")]
    Malformed,
    /// A valid PeerId, but not one that embeds an Ed25519 public key.
    #[error("peer id does not embed an Ed25519 key")]
    NotEd25519,
}

impl UserId {
    /// Wraps a PeerId; it must embed an Ed25519 key so signatures can be checked against it.
    pub fn from_peer_id(peer: PeerId) -> Result<Self, UserIdError> {
        let id = UserId(peer);
        id.public_key()?;
        Ok(id)
    }

    /// The user id of an Ed25519 public key.
    pub fn from_public_key(key: &libp2p_identity::ed25519::PublicKey) -> Self {
        UserId(libp2p_identity::PublicKey::from(key.clone()).to_peer_id())
    }

    /// The libp2p PeerId of this user's node.
    pub fn peer_id(&self) -> PeerId {
        self.0
    }

    /// The Ed25519 public key embedded in the id.
    pub fn public_key(&self) -> Result<libp2p_identity::ed25519::PublicKey, UserIdError> {
        let hash = self.0.as_ref();
        // 0x00 is the identity multihash: the digest is the protobuf-encoded public key.
        if hash.code() != 0x00 {
            return Err(UserIdError::NotEd25519);
        }
        let key = libp2p_identity::PublicKey::try_decode_protobuf(hash.digest())
            .map_err(|_| UserIdError::Malformed)?;
        key.try_into_ed25519().map_err(|_| UserIdError::NotEd25519)
    }

    /// The PeerId's binary form (a multihash), as used in prologues and on the wire.
    pub fn to_bytes(&self) -> Vec<u8> {
        self.0.to_bytes()
    }

    /// Parses the binary form produced by [`UserId::to_bytes`].
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, UserIdError> {
        let peer = PeerId::from_bytes(bytes).map_err(|_| UserIdError::Malformed)?;
        Self::from_peer_id(peer)
    }
}

impl fmt::Display for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl fmt::Debug for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "UserId({})", self.0)
    }
}

impl FromStr for UserId {
    type Err = UserIdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let peer = PeerId::from_str(s).map_err(|_| UserIdError::Malformed)?;
        Self::from_peer_id(peer)
    }
}

impl Serialize for UserId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&self.0.to_bytes())
    }
}

impl<'de> Deserialize<'de> for UserId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let bytes: serde_bytes::ByteBuf = Deserialize::deserialize(d)?;
        UserId::from_bytes(&bytes).map_err(serde::de::Error::custom)
    }
}

/// A message's identity: 128 random bits chosen by the sender.
///
/// It is the deduplication key on every receive path and the key store peers merge copies by.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct MessageId(pub [u8; 16]);

/// Why a string is not a [`MessageId`].
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("a message id is 32 hex digits")]
pub struct MessageIdError;

impl MessageId {
    /// A fresh random id.
    pub fn random(rng: &mut impl CryptoRngCore) -> Self {
        let mut bytes = [0u8; 16];
        rng.fill_bytes(&mut bytes);
        MessageId(bytes)
    }

    /// The raw 16 bytes.
    pub fn as_bytes(&self) -> &[u8; 16] {
        &self.0
    }
}

impl fmt::Display for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MessageId({self})")
    }
}

impl FromStr for MessageId {
    type Err = MessageIdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.len() != 32 || !s.is_ascii() {
            return Err(MessageIdError);
        }
        let mut out = [0u8; 16];
        for (i, byte) in out.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).map_err(|_| MessageIdError)?;
        }
        Ok(MessageId(out))
    }
}
