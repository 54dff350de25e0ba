//! The envelope: the only part of a message that store peers, relays and the network see.
//!
//! It carries routing fields and an opaque sealed body, nothing else: the sender, the
//! composition time, the content and every receipt live inside the seal.

use serde::{Deserialize, Serialize};

use blake2::{Blake2s256, Digest};

use crate::{codec, MessageId, UserId};

/// The envelope format version this crate writes and accepts.
pub const PROTOCOL_VERSION: u8 = 1;

/// The largest encoded envelope accepted: 128 KiB.
///
/// A maximum text ([`crate::payload::MAX_TEXT_LEN`], 48 KiB) plus client metadata, the sender's
/// bundle and the seal's overhead fit with room to spare; media travels as separate blobs.
pub const MAX_ENVELOPE_LEN: usize = 128 * 1024;

/// Length of an [`EnvelopeDigest`]: BLAKE2s-256 truncated to its first 16 bytes (128 bits:
/// telling apart envelopes needs second-preimage resistance, which 128 bits give in full).
pub const ENVELOPE_DIGEST_LEN: usize = 16;

/// Domain separation prefix of the seal's prologue (see [`EnvelopeHeader::prologue`]).
pub const PROLOGUE_CONTEXT: &[u8] = b"kith-seal/1\0";

/// The routing fields of an envelope; all of them are bound into the seal.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnvelopeHeader {
    /// Format version ([`PROTOCOL_VERSION`]).
    pub version: u8,
    /// The message's id: dedupe key everywhere.
    pub id: MessageId,
    /// Who may open the body (and whose mailbox holds it).
    pub recipient: UserId,
    /// Unix milliseconds after which nobody should store or deliver it.
    pub expires_at_ms: u64,
}

impl EnvelopeHeader {
    /// A header for a new message in the current format.
    pub fn new(id: MessageId, recipient: UserId, expires_at_ms: u64) -> Self {
        EnvelopeHeader {
            version: PROTOCOL_VERSION,
            id,
            recipient,
            expires_at_ms,
        }
    }

    /// The bytes bound into the seal, so no routing field can be changed without the seal
    /// failing to open:
    /// `"kith-seal/1\0" ‖ version (1 byte) ‖ id (16 bytes) ‖ len(recipient) (1 byte) ‖
    /// recipient PeerId bytes ‖ expires_at_ms (8 bytes, big-endian)`.
    pub fn prologue(&self) -> Vec<u8> {
        let recipient = self.recipient.to_bytes();
        let mut out = Vec::with_capacity(PROLOGUE_CONTEXT.len() + 1 + 16 + 1 + recipient.len() + 8);
        out.extend_from_slice(PROLOGUE_CONTEXT);
        out.push(self.version);
        out.extend_from_slice(self.id.as_bytes());
        // A PeerId is a multihash of at most 64 digest bytes plus a few header bytes.
        out.push(recipient.len() as u8);
        out.extend_from_slice(&recipient);
        out.extend_from_slice(&self.expires_at_ms.to_be_bytes());
        out
    }
}

/// Names a session between two users, in the clear inside the body so the recipient can find
/// the keys; derived from the secret seed, so it says nothing about who is talking.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct SessionId(pub [u8; 16]);

/// The sealed body of an envelope.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SealedBody {
    /// A first message: a Noise X handshake message to one of the recipient's prekeys.
    Handshake(HandshakeBody),
    /// A later message in an established session.
    Session(SessionBody),
}

/// A Noise X handshake message and the prekey it was sealed to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HandshakeBody {
    /// Which of the recipient's prekeys is the Noise responder static key.
    pub prekey_id: u32,
    /// The Noise message (`e, es, s, ss` and the encrypted payload).
    #[serde(with = "serde_bytes")]
    pub noise: Vec<u8>,
}

/// A message in an established session.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionBody {
    /// Which session's keys to use.
    pub session: SessionId,
    /// The message number in the session (0, 1, 2, …).
    pub n: u64,
    /// ChaCha20-Poly1305 ciphertext with its tag.
    #[serde(with = "serde_bytes")]
    pub ciphertext: Vec<u8>,
}

/// What travels: routing fields and the sealed body.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    /// Routing fields, in the clear and bound into the seal.
    pub header: EnvelopeHeader,
    /// The sealed body: only the recipient can open it.
    pub body: SealedBody,
}

/// Tells apart two envelopes that carry the same id for the same recipient: the first
/// [`ENVELOPE_DIGEST_LEN`] bytes of BLAKE2s-256 over the envelope's canonical encoding
/// ([`Envelope::to_bytes`]).
///
/// A store peer knows an envelope by (recipient, id, digest): a message id is chosen by its
/// sender and visible to every store peer, so anyone could reuse it; the digest makes a
/// different envelope under a reused id a different envelope. Both ends re-encode from the
/// decoded value, so they compute the same digest for the same envelope.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct EnvelopeDigest(pub [u8; ENVELOPE_DIGEST_LEN]);

impl EnvelopeDigest {
    /// The digest of an envelope's canonical encoding.
    pub fn of_bytes(bytes: &[u8]) -> Self {
        let full = Blake2s256::digest(bytes);
        let mut out = [0u8; ENVELOPE_DIGEST_LEN];
        out.copy_from_slice(&full[..ENVELOPE_DIGEST_LEN]);
        EnvelopeDigest(out)
    }
}

impl std::fmt::Display for EnvelopeDigest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl std::fmt::Debug for EnvelopeDigest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "EnvelopeDigest({self})")
    }
}

/// Why bytes are not an acceptable envelope.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EnvelopeError {
    /// Larger than [`MAX_ENVELOPE_LEN`].
    #[error("envelope of {len} bytes exceeds the {max}-byte limit")]
    TooLarge {
        /// The size seen.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A version this node does not speak.
    #[error("unsupported envelope version {0}")]
    UnsupportedVersion(u8),
    /// Not an envelope.
    #[error(transparent)]
    Codec(#[from] codec::CodecError),
}

impl Envelope {
    /// The message id.
    pub fn id(&self) -> MessageId {
        self.header.id
    }

    /// Encodes the envelope.
    pub fn to_bytes(&self) -> Result<Vec<u8>, EnvelopeError> {
        let bytes = codec::encode(self)?;
        if bytes.len() > MAX_ENVELOPE_LEN {
            return Err(EnvelopeError::TooLarge {
                len: bytes.len(),
                max: MAX_ENVELOPE_LEN,
            });
        }
        Ok(bytes)
    }

    /// The envelope's [`EnvelopeDigest`] (of its canonical encoding).
    pub fn digest(&self) -> Result<EnvelopeDigest, EnvelopeError> {
        Ok(EnvelopeDigest::of_bytes(&self.to_bytes()?))
    }

    /// Decodes and checks an envelope from untrusted bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, EnvelopeError> {
        if bytes.len() > MAX_ENVELOPE_LEN {
            return Err(EnvelopeError::TooLarge {
                len: bytes.len(),
                max: MAX_ENVELOPE_LEN,
            });
        }
        let env: Envelope = codec::decode(bytes)?;
        env.check()?;
        Ok(env)
    }

    /// Checks what a decoder cannot: the version, and the encoded size (an envelope that
    /// arrived inside a larger container, such as a [`crate::wire::MsgFrame`], was not
    /// size-checked by [`Envelope::from_bytes`]).
    pub fn check(&self) -> Result<(), EnvelopeError> {
        if self.header.version != PROTOCOL_VERSION {
            return Err(EnvelopeError::UnsupportedVersion(self.header.version));
        }
        let len = codec::encoded_len(self)?;
        if len > MAX_ENVELOPE_LEN {
            return Err(EnvelopeError::TooLarge {
                len,
                max: MAX_ENVELOPE_LEN,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use rand_chacha::ChaCha20Rng;
    use rand_core::SeedableRng;

    use super::*;
    use crate::LocalIdentity;

    fn bob() -> UserId {
        LocalIdentity::generate(0, &mut ChaCha20Rng::seed_from_u64(1)).user_id()
    }

    fn envelope(body: SealedBody) -> Envelope {
        Envelope {
            header: EnvelopeHeader::new(MessageId([0x11; 16]), bob(), 0x0102_0304_0506_0708),
            body,
        }
    }

    fn handshake(len: usize) -> SealedBody {
        SealedBody::Handshake(HandshakeBody {
            prekey_id: 3,
            noise: vec![0xaa; len],
        })
    }

    #[test]
    fn round_trip() {
        let bodies = [
            handshake(200),
            SealedBody::Session(SessionBody {
                session: SessionId([5; 16]),
                n: 70_000,
                ciphertext: vec![1; 40],
            }),
        ];
        for body in bodies {
            let env = envelope(body);
            let bytes = env.to_bytes().unwrap();
            assert_eq!(Envelope::from_bytes(&bytes).unwrap(), env);
            assert_eq!(env.id(), MessageId([0x11; 16]));
        }
    }

    #[test]
    fn layout() {
        let env = envelope(handshake(3));
        let bytes = env.to_bytes().unwrap();
        let user = bob().to_bytes();
        let mut expected = vec![PROTOCOL_VERSION];
        expected.extend_from_slice(&[0x11; 16]);
        expected.push(user.len() as u8);
        expected.extend_from_slice(&user);
        expected.push(253); // expires_at_ms needs a u64
        expected.extend_from_slice(&0x0102_0304_0506_0708u64.to_le_bytes());
        expected.extend_from_slice(&[0, 3, 3, 0xaa, 0xaa, 0xaa]); // Handshake, prekey 3, 3 bytes
        assert_eq!(bytes, expected);
    }

    #[test]
    fn prologue_layout() {
        let env = envelope(handshake(1));
        let user = bob().to_bytes();
        let mut expected = b"kith-seal/1\0".to_vec();
        expected.push(1);
        expected.extend_from_slice(&[0x11; 16]);
        expected.push(38);
        expected.extend_from_slice(&user);
        expected.extend_from_slice(&[1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(user.len(), 38);
        assert_eq!(env.header.prologue(), expected);
        assert_eq!(expected.len(), 12 + 1 + 16 + 1 + 38 + 8);
    }

    #[test]
    fn digest_is_truncated_blake2s_of_the_canonical_encoding() {
        let env = envelope(handshake(3));
        let bytes = env.to_bytes().unwrap();
        let full = Blake2s256::digest(&bytes);
        assert_eq!(env.digest().unwrap().0[..], full[..16]);
        // The same envelope decoded again has the same digest; any changed byte another.
        assert_eq!(
            Envelope::from_bytes(&bytes).unwrap().digest().unwrap(),
            env.digest().unwrap()
        );
        let other = envelope(handshake(4));
        assert_ne!(other.digest().unwrap(), env.digest().unwrap());
        // Known answer: BLAKE2s-256("") starts 69 21 7a 30 79 90 80 94.
        assert_eq!(
            EnvelopeDigest::of_bytes(b"").0[..8],
            [0x69, 0x21, 0x7a, 0x30, 0x79, 0x90, 0x80, 0x94]
        );
    }

    #[test]
    fn wrong_version_rejected() {
        for v in [0u8, 2, 255] {
            let mut env = envelope(handshake(100));
            env.header.version = v;
            let bytes = codec::encode(&env).unwrap();
            assert!(
                matches!(Envelope::from_bytes(&bytes), Err(EnvelopeError::UnsupportedVersion(x)) if x == v)
            );
            assert!(matches!(
                env.check(),
                Err(EnvelopeError::UnsupportedVersion(_))
            ));
        }
    }

    #[test]
    fn oversized_rejected() {
        // Untrusted bytes longer than the limit are refused before decoding.
        let junk = vec![0u8; MAX_ENVELOPE_LEN + 1];
        assert!(matches!(
            Envelope::from_bytes(&junk),
            Err(EnvelopeError::TooLarge { len, max }) if len == MAX_ENVELOPE_LEN + 1 && max == MAX_ENVELOPE_LEN
        ));
        // An oversized envelope is refused by to_bytes, from_bytes and check (the path of an
        // envelope that arrived inside a frame).
        let big = envelope(handshake(MAX_ENVELOPE_LEN));
        assert!(matches!(
            big.to_bytes(),
            Err(EnvelopeError::TooLarge { .. })
        ));
        assert!(matches!(big.check(), Err(EnvelopeError::TooLarge { .. })));
        let bytes = codec::encode(&big).unwrap();
        assert!(matches!(
            Envelope::from_bytes(&bytes),
            Err(EnvelopeError::TooLarge { .. })
        ));
        // Exactly the limit is accepted.
        let overhead = codec::encode(&envelope(handshake(0))).unwrap().len();
        let mut n = MAX_ENVELOPE_LEN - overhead;
        // The noise length prefix grows with the length; shrink until it fits exactly.
        while codec::encoded_len(&envelope(handshake(n))).unwrap() > MAX_ENVELOPE_LEN {
            n -= 1;
        }
        let exact = envelope(handshake(n));
        let bytes = exact.to_bytes().unwrap();
        assert_eq!(bytes.len(), MAX_ENVELOPE_LEN);
        assert_eq!(Envelope::from_bytes(&bytes).unwrap(), exact);
        assert!(exact.check().is_ok());
    }

    #[test]
    fn garbage_rejected() {
        for bytes in [&[][..], &[1], &[1; 40], &[0xff; 100]] {
            assert!(matches!(
                Envelope::from_bytes(bytes),
                Err(EnvelopeError::Codec(_))
            ));
        }
        let mut bytes = envelope(handshake(10)).to_bytes().unwrap();
        bytes.push(0);
        assert!(matches!(
            Envelope::from_bytes(&bytes),
            Err(EnvelopeError::Codec(_))
        ));
    }
}
