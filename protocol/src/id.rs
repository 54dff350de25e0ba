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
    ///
    /// Only the shape is checked here (identity multihash of a protobuf-encoded Ed25519 key):
    /// decompressing the curve point costs tens of microseconds and every envelope carries a
    /// recipient id; a key that is not on the curve fails later, when a signature is checked.
    pub fn from_peer_id(peer: PeerId) -> Result<Self, UserIdError> {
        // Protobuf `PublicKey { Type = Ed25519 (1), Data = 32 bytes }`.
        const ED25519_PROTOBUF_PREFIX: [u8; 4] = [0x08, 0x01, 0x12, 0x20];
        let hash = peer.as_ref();
        if hash.code() != 0x00 {
            return Err(UserIdError::NotEd25519);
        }
        let digest = hash.digest();
        if digest.len() != 36 || digest[..4] != ED25519_PROTOBUF_PREFIX {
            return Err(UserIdError::NotEd25519);
        }
        Ok(UserId(peer))
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
        // Only hex digits: `u8::from_str_radix` alone would also take a sign ("+f").
        if s.len() != 32 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(MessageIdError);
        }
        let mut out = [0u8; 16];
        for (i, byte) in out.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).map_err(|_| MessageIdError)?;
        }
        Ok(MessageId(out))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use rand_chacha::ChaCha20Rng;
    use rand_core::SeedableRng;

    use super::*;
    use crate::LocalIdentity;

    fn user(seed: u64) -> UserId {
        let mut rng = ChaCha20Rng::seed_from_u64(seed);
        LocalIdentity::generate(0, &mut rng).user_id()
    }

    #[test]
    fn user_id_display_parse_round_trip() {
        for seed in 0..8 {
            let id = user(seed);
            let text = id.to_string();
            assert!(
                text.starts_with("12D3KooW"),
                "ed25519 peer ids print as 12D3KooW…: {text}"
            );
            assert_eq!(text.parse::<UserId>().unwrap(), id);
            assert_eq!(UserId::from_bytes(&id.to_bytes()).unwrap(), id);
            assert_eq!(UserId::from_peer_id(id.peer_id()).unwrap(), id);
        }
    }

    #[test]
    fn user_id_binary_form_embeds_the_key() {
        let mut rng = ChaCha20Rng::seed_from_u64(7);
        let me = LocalIdentity::generate(0, &mut rng);
        let key = me.keypair().public().to_bytes();
        // identity multihash (0x00), 36 digest bytes, protobuf { type: Ed25519, data: key }.
        let mut expected = vec![0x00, 0x24, 0x08, 0x01, 0x12, 0x20];
        expected.extend_from_slice(&key);
        assert_eq!(me.user_id().to_bytes(), expected);
        assert_eq!(me.user_id().public_key().unwrap().to_bytes(), key);
    }

    #[test]
    fn user_id_serde_is_a_byte_string() {
        let id = user(1);
        let bytes = crate::codec::encode(&id).unwrap();
        assert_eq!(bytes[0] as usize, id.to_bytes().len());
        assert_eq!(&bytes[1..], id.to_bytes().as_slice());
        assert_eq!(crate::codec::decode::<UserId>(&bytes).unwrap(), id);
    }

    #[test]
    fn bad_user_ids_rejected() {
        for s in ["", "hello", "12D3KooW", "not a peer id at all", "QmQmQmQm"] {
            assert_eq!(s.parse::<UserId>(), Err(UserIdError::Malformed), "{s:?}");
        }
        // One character changed in a valid id: a different (invalid or non-matching) id.
        let good = user(2).to_string();
        let mut bad = good.clone();
        bad.push('x');
        assert!(bad.parse::<UserId>().is_err());

        assert_eq!(UserId::from_bytes(&[]), Err(UserIdError::Malformed));
        assert_eq!(UserId::from_bytes(&[0xff; 40]), Err(UserIdError::Malformed));
        // A well-formed SHA-256 PeerId (as RSA keys get) embeds no key.
        let mut sha = vec![0x12, 0x20];
        sha.extend_from_slice(&[7u8; 32]);
        assert_eq!(UserId::from_bytes(&sha), Err(UserIdError::NotEd25519));
        // An identity multihash whose digest is not a protobuf public key.
        let mut junk = vec![0x00, 0x04];
        junk.extend_from_slice(&[1, 2, 3, 4]);
        assert!(UserId::from_bytes(&junk).is_err());
    }

    #[test]
    fn message_id_hex_round_trip() {
        let mut rng = ChaCha20Rng::seed_from_u64(3);
        for _ in 0..16 {
            let id = MessageId::random(&mut rng);
            let text = id.to_string();
            assert_eq!(text.len(), 32);
            assert!(text
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)));
            assert_eq!(text.parse::<MessageId>().unwrap(), id);
            assert_eq!(text.to_uppercase().parse::<MessageId>().unwrap(), id);
        }
        let id = MessageId([
            0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef, 0, 0, 0, 0, 0, 0, 0, 0xff,
        ]);
        assert_eq!(id.to_string(), "0123456789abcdef00000000000000ff");
        assert_eq!(
            format!("{id:?}"),
            "MessageId(0123456789abcdef00000000000000ff)"
        );
    }

    #[test]
    fn bad_message_ids_rejected() {
        let bad = [
            "",
            "00",
            "0123456789abcdef0123456789abcde",   // 31
            "0123456789abcdef0123456789abcdef0", // 33
            "0123456789abcdef0123456789abcdeg",  // not hex
            "+123456789abcdef0123456789abcdef",  // a sign is not a hex digit
            "+1+1+1+1+1+1+1+1+1+1+1+1+1+1+1+1",
            "-0-0-0-0-0-0-0-0-0-0-0-0-0-0-0-0",
            " 0123456789abcdef0123456789abcde",
            "ééééééééééééééee", // 32 bytes, not ASCII
        ];
        for s in bad {
            assert_eq!(s.parse::<MessageId>(), Err(MessageIdError), "{s:?}");
        }
    }
}
