//! The envelope: the only part of a message that store peers, relays and the network see.
//!
//! It carries routing fields and an opaque sealed body, nothing else: the sender, the
//! composition time, the content and every receipt live inside the seal.

use serde::{Deserialize, Serialize};

use crate::{codec, seal::SealedBody, MessageId, UserId};

/// The envelope format version this crate writes and accepts.
pub const PROTOCOL_VERSION: u8 = 1;

/// The largest encoded envelope accepted: 128 KiB.
///
/// A maximum text ([`crate::payload::MAX_TEXT_LEN`], 48 KiB) plus client metadata, the sender's
/// bundle and the seal's overhead fit with room to spare; media travels as separate blobs.
pub const MAX_ENVELOPE_LEN: usize = 128 * 1024;

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

/// What travels: routing fields and the sealed body.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    /// Routing fields, in the clear and bound into the seal.
    pub header: EnvelopeHeader,
    /// The sealed body: only the recipient can open it.
    pub body: SealedBody,
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

    /// Checks the fields a decoder cannot: the version.
    pub fn check(&self) -> Result<(), EnvelopeError> {
        if self.header.version != PROTOCOL_VERSION {
            return Err(EnvelopeError::UnsupportedVersion(self.header.version));
        }
        Ok(())
    }
}
