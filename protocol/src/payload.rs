//! What travels inside the seal: texts, media references, receipts, contact cards, profiles
//! and the group payloads ([`crate::group`]).
//!
//! Every payload is a `(kind, bytes)` pair ([`RawPayload`]) so that a node meeting a kind it
//! does not know yet reports [`Payload::Unknown`] instead of failing: newer nodes can add kinds.

use serde::{Deserialize, Serialize};

use crate::{
    access::MailboxAccessKey,
    blob::{BlobError, BlobHash, BlobKey, BlobLayout},
    codec,
    group::{
        sender_key::MAX_GROUP_CIPHERTEXT, GroupError, GroupMessage, GroupUpdate, SenderKeyGift,
        MAX_UPDATE_BUNDLES,
    },
    identity::BundleError,
    KeyBundle, MessageId,
};

/// Longest text body, in bytes (48 KiB).
///
/// A first message travels inside one Noise handshake message, which Noise caps at 65,535
/// bytes; 48 KiB of text plus metadata, the sender's bundle and the seal stays below that.
pub const MAX_TEXT_LEN: usize = 48 * 1024;

/// Longest client metadata (JSON text), in bytes.
pub const MAX_CLIENT_META_LEN: usize = 4 * 1024;

/// Most message ids one receipt may acknowledge.
pub const MAX_RECEIPT_IDS: usize = 1024;

/// Longest media file name or mime type, in bytes.
pub const MAX_MEDIA_NAME_LEN: usize = 255;

/// Largest inline preview (thumbnail) in a media reference, in bytes.
pub const MAX_PREVIEW_LEN: usize = 8 * 1024;

/// Longest profile name, in bytes (WhatsApp allows 25 characters; 100 bytes holds that in
/// any script).
pub const MAX_PROFILE_NAME_LEN: usize = 100;

/// Payload kind numbers as they appear on the wire.
pub mod kind {
    /// [`super::Text`].
    pub const TEXT: u16 = 1;
    /// [`super::MediaRef`].
    pub const MEDIA: u16 = 2;
    /// [`super::Receipt`].
    pub const RECEIPT: u16 = 3;
    /// [`super::ContactCard`].
    pub const CONTACT_CARD: u16 = 4;
    /// [`crate::group::GroupUpdate`].
    pub const GROUP_UPDATE: u16 = 5;
    /// [`crate::group::SenderKeyGift`].
    pub const SENDER_KEY: u16 = 6;
    /// [`crate::group::GroupMessage`].
    pub const GROUP_MESSAGE: u16 = 7;
    /// [`GroupReceipt`].
    pub const GROUP_RECEIPT: u16 = 8;
    /// [`super::Profile`].
    pub const PROFILE: u16 = 9;
    /// [`super::Typing`].
    pub const TYPING: u16 = 10;
}

/// A text message, as the design's `SendMessage` carries it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Text {
    /// The text, UTF-8, at most [`MAX_TEXT_LEN`] bytes.
    pub body: String,
    /// The sender's client metadata (`clientMetaData`): a JSON object as text, at most
    /// [`MAX_CLIENT_META_LEN`] bytes; empty when none.
    pub client_meta: String,
}

/// A reference to an encrypted media blob ([`crate::blob`]); the blob itself travels
/// separately, over `/kith/media/1`.
///
/// [`MediaRef::validate`] checks only the text and preview limits; a receiver checks the
/// layout with [`MediaRef::layout`] before downloading (an invalid layout makes the media
/// undownloadable, not the message undecodable).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MediaRef {
    /// BLAKE2s-256 of the encrypted blob: its name ([`BlobHash`]).
    pub hash: [u8; 32],
    /// Plaintext size in bytes (at most [`crate::blob::MAX_BLOB_SIZE`]).
    pub size: u64,
    /// Plaintext chunk size the blob was encrypted in
    /// ([`crate::blob::MIN_CHUNK_SIZE`]..=[`crate::blob::MAX_CHUNK_SIZE`]).
    pub chunk_size: u32,
    /// MIME type, e.g. `image/jpeg`.
    pub mime: String,
    /// The file's name as the sender had it.
    pub name: String,
    /// The blob's symmetric key ([`BlobKey`]).
    pub key: [u8; 32],
    /// A small preview (thumbnail) to show before the download ends.
    #[serde(with = "serde_bytes")]
    pub preview: Vec<u8>,
    /// Optional caption text.
    pub caption: String,
}

/// Which tick a receipt gives.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ReceiptKind {
    /// The recipient's node stored the messages (double tick).
    Delivered,
    /// The recipient read them (blue ticks).
    Read,
}

/// An acknowledgement for messages the receiver got from the receipt's recipient.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Receipt {
    /// Delivered or read.
    pub kind: ReceiptKind,
    /// The messages it covers (at most [`MAX_RECEIPT_IDS`]).
    pub ids: Vec<MessageId>,
}

/// What a user tells a contact, inside the end-to-end channel, so the contact can reach its
/// mailbox: its current bundle (which names its store peers) and its mailbox access key.
/// Sent when someone becomes a contact and whenever either changes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContactCard {
    /// The sender's current signed bundle.
    pub bundle: KeyBundle,
    /// The sender's mailbox access key.
    pub access: MailboxAccessKey,
}

impl ContactCard {
    /// Checks the bundle's signature and limits (the receiver also checks it is the
    /// sender's own).
    pub fn validate(&self) -> Result<(), PayloadError> {
        self.bundle.verify().map_err(PayloadError::Bundle)
    }
}

/// What a user tells their contacts about themselves, inside the end-to-end channel: the
/// name they gave themselves and their read-receipt choice. Sent when someone becomes a
/// contact and to every contact whenever it changes; the newest (by the plaintext's
/// `sent_at_ms`) wins. A node that does not know the kind acknowledges it and shows nothing.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Profile {
    /// The sender's profile name (may be empty), at most [`MAX_PROFILE_NAME_LEN`] bytes.
    pub name: String,
    /// Whether the sender sends read receipts. Mutual: with it off, they send none and show
    /// none, so the receiver sends them none either.
    pub read_receipts: bool,
}

/// "Typing…": ephemeral. Sent only over a direct link that is up (never deposited with a
/// store peer, never resent), never stored or receipted by the receiver, which shows it for
/// a few seconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Typing {
    /// `true` while the sender types, `false` when they stopped without sending.
    pub typing: bool,
}

impl Profile {
    /// Checks the limits.
    pub fn validate(&self) -> Result<(), PayloadError> {
        check_len("profile name", self.name.len(), MAX_PROFILE_NAME_LEN)
    }
}

/// Payload [`crate::payload::kind::GROUP_RECEIPT`]: delivered or read, for group messages
/// of the receipt's recipient.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupReceipt {
    /// The group.
    pub group: crate::GroupId,
    /// Delivered or read.
    pub kind: ReceiptKind,
    /// The group messages it covers (at most [`crate::payload::MAX_RECEIPT_IDS`]).
    pub ids: Vec<MessageId>,
}

/// A decoded payload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Payload {
    /// A text message.
    Text(Text),
    /// A media message.
    Media(MediaRef),
    /// A delivered or read receipt.
    Receipt(Receipt),
    /// The sender's bundle and mailbox access key.
    ContactCard(Box<ContactCard>),
    /// A group state from its author, with members' bundles.
    GroupUpdate(Box<GroupUpdate>),
    /// A member's sender key for a group.
    SenderKey(Box<SenderKeyGift>),
    /// A message to a group, sealed once with the sender's chain.
    GroupMessage(Box<GroupMessage>),
    /// Delivered or read, for group messages.
    GroupReceipt(GroupReceipt),
    /// The sender's profile name and read-receipt choice.
    Profile(Profile),
    /// The sender is typing (ephemeral).
    Typing(Typing),
    /// A kind this node does not know; the message is kept but not interpreted.
    Unknown {
        /// The kind number.
        kind: u16,
    },
}

/// A payload on the wire: kind number and that kind's encoding.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RawPayload {
    /// See [`kind`].
    pub kind: u16,
    /// bincode of the kind's struct.
    #[serde(with = "serde_bytes")]
    pub body: Vec<u8>,
}

/// What the seal protects: the payload and when the sender composed it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plaintext {
    /// When the sender composed the message, unix milliseconds (sender's clock).
    pub sent_at_ms: u64,
    /// The payload.
    pub payload: RawPayload,
}

/// Why a payload is invalid.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PayloadError {
    /// A field is longer than its limit.
    #[error("{field} is {len} bytes, over the {max}-byte limit")]
    TooLong {
        /// Which field.
        field: &'static str,
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A text with no characters.
    #[error("text is empty")]
    EmptyText,
    /// A receipt covering no message.
    #[error("receipt covers no message")]
    EmptyReceipt,
    /// A contact card's bundle does not verify.
    #[error("contact card bundle: {0}")]
    Bundle(BundleError),
    /// A group state, sender key or group message is invalid.
    #[error("group: {0}")]
    Group(#[from] GroupError),
    /// The body is not a valid encoding of its kind.
    #[error("malformed payload: {0}")]
    Codec(#[from] codec::CodecError),
}

fn check_len(field: &'static str, len: usize, max: usize) -> Result<(), PayloadError> {
    if len > max {
        return Err(PayloadError::TooLong { field, len, max });
    }
    Ok(())
}

impl Text {
    /// Checks the limits.
    pub fn validate(&self) -> Result<(), PayloadError> {
        if self.body.is_empty() {
            return Err(PayloadError::EmptyText);
        }
        check_len("text", self.body.len(), MAX_TEXT_LEN)?;
        check_len("client_meta", self.client_meta.len(), MAX_CLIENT_META_LEN)
    }
}

impl MediaRef {
    /// Checks the limits.
    pub fn validate(&self) -> Result<(), PayloadError> {
        check_len("mime", self.mime.len(), MAX_MEDIA_NAME_LEN)?;
        check_len("name", self.name.len(), MAX_MEDIA_NAME_LEN)?;
        check_len("preview", self.preview.len(), MAX_PREVIEW_LEN)?;
        check_len("caption", self.caption.len(), MAX_TEXT_LEN)
    }

    /// The blob's layout, validated (chunk size bounds, size limit).
    pub fn layout(&self) -> Result<BlobLayout, BlobError> {
        BlobLayout::new(self.size, self.chunk_size)
    }

    /// The blob's name.
    pub fn blob_hash(&self) -> BlobHash {
        BlobHash(self.hash)
    }

    /// The blob's key.
    pub fn blob_key(&self) -> BlobKey {
        BlobKey(self.key)
    }
}

impl std::fmt::Debug for MediaRef {
    /// Like a derived `Debug`, but the key is not printed.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MediaRef")
            .field("hash", &BlobHash(self.hash))
            .field("size", &self.size)
            .field("chunk_size", &self.chunk_size)
            .field("mime", &self.mime)
            .field("name", &self.name)
            .field("key", &"..")
            .field("preview_len", &self.preview.len())
            .field("caption", &self.caption)
            .finish()
    }
}

impl Receipt {
    /// Checks the limits.
    pub fn validate(&self) -> Result<(), PayloadError> {
        if self.ids.is_empty() {
            return Err(PayloadError::EmptyReceipt);
        }
        check_len("receipt ids", self.ids.len(), MAX_RECEIPT_IDS)
    }
}

impl GroupUpdate {
    /// Checks the state's signature and every bundle.
    pub fn validate(&self) -> Result<(), PayloadError> {
        self.state.verify()?;
        check_len("bundles", self.bundles.len(), MAX_UPDATE_BUNDLES)?;
        for b in &self.bundles {
            b.verify().map_err(PayloadError::Bundle)?;
            if !self.state.state.is_member(&b.user) {
                return Err(PayloadError::Group(GroupError::Invalid(
                    "bundle of someone not in the group",
                )));
            }
        }
        Ok(())
    }
}

impl SenderKeyGift {
    /// Checks the state's signature and that both name the same group.
    pub fn validate(&self) -> Result<(), PayloadError> {
        self.state.verify()?;
        if self.state.group() != self.distribution.group {
            return Err(PayloadError::Group(GroupError::WrongGroup));
        }
        Ok(())
    }
}

impl GroupReceipt {
    /// Checks the limits.
    pub fn validate(&self) -> Result<(), PayloadError> {
        if self.ids.is_empty() {
            return Err(PayloadError::EmptyReceipt);
        }
        check_len("receipt ids", self.ids.len(), MAX_RECEIPT_IDS)
    }
}

fn check_group_message(m: &GroupMessage) -> Result<(), PayloadError> {
    check_len("ciphertext", m.ciphertext.len(), MAX_GROUP_CIPHERTEXT)?;
    check_len("signature", m.signature.len(), 64)
}

impl Payload {
    /// Validates and encodes the payload. `Unknown` cannot be encoded (there is nothing in it).
    pub fn to_raw(&self) -> Result<RawPayload, PayloadError> {
        let (kind, body) = match self {
            Payload::Text(t) => {
                t.validate()?;
                (kind::TEXT, codec::encode(t)?)
            }
            Payload::Media(m) => {
                m.validate()?;
                (kind::MEDIA, codec::encode(m)?)
            }
            Payload::Receipt(r) => {
                r.validate()?;
                (kind::RECEIPT, codec::encode(r)?)
            }
            Payload::ContactCard(c) => {
                c.validate()?;
                (kind::CONTACT_CARD, codec::encode(c)?)
            }
            Payload::GroupUpdate(u) => {
                u.validate()?;
                (kind::GROUP_UPDATE, codec::encode(u)?)
            }
            Payload::SenderKey(k) => {
                k.validate()?;
                (kind::SENDER_KEY, codec::encode(k)?)
            }
            Payload::GroupMessage(m) => {
                check_group_message(m)?;
                (kind::GROUP_MESSAGE, codec::encode(m)?)
            }
            Payload::GroupReceipt(r) => {
                r.validate()?;
                (kind::GROUP_RECEIPT, codec::encode(r)?)
            }
            Payload::Profile(p) => {
                p.validate()?;
                (kind::PROFILE, codec::encode(p)?)
            }
            Payload::Typing(t) => (kind::TYPING, codec::encode(t)?),
            Payload::Unknown { kind } => (*kind, Vec::new()),
        };
        Ok(RawPayload { kind, body })
    }
}

impl RawPayload {
    /// Decodes and validates the payload; an unknown kind is `Ok(Payload::Unknown)`.
    pub fn decode(&self) -> Result<Payload, PayloadError> {
        Ok(match self.kind {
            kind::TEXT => {
                let t: Text = codec::decode(&self.body)?;
                t.validate()?;
                Payload::Text(t)
            }
            kind::MEDIA => {
                let m: MediaRef = codec::decode(&self.body)?;
                m.validate()?;
                Payload::Media(m)
            }
            kind::RECEIPT => {
                let r: Receipt = codec::decode(&self.body)?;
                r.validate()?;
                Payload::Receipt(r)
            }
            kind::CONTACT_CARD => {
                let c: ContactCard = codec::decode(&self.body)?;
                c.validate()?;
                Payload::ContactCard(Box::new(c))
            }
            kind::GROUP_UPDATE => {
                let u: GroupUpdate = codec::decode(&self.body)?;
                u.validate()?;
                Payload::GroupUpdate(Box::new(u))
            }
            kind::SENDER_KEY => {
                let k: SenderKeyGift = codec::decode(&self.body)?;
                k.validate()?;
                Payload::SenderKey(Box::new(k))
            }
            kind::GROUP_MESSAGE => {
                let m: GroupMessage = codec::decode(&self.body)?;
                check_group_message(&m)?;
                Payload::GroupMessage(Box::new(m))
            }
            kind::GROUP_RECEIPT => {
                let r: GroupReceipt = codec::decode(&self.body)?;
                r.validate()?;
                Payload::GroupReceipt(r)
            }
            kind::PROFILE => {
                let p: Profile = codec::decode(&self.body)?;
                p.validate()?;
                Payload::Profile(p)
            }
            kind::TYPING => Payload::Typing(codec::decode(&self.body)?),
            other => Payload::Unknown { kind: other },
        })
    }
}

impl Plaintext {
    /// A plaintext for `payload` composed at `sent_at_ms`.
    pub fn new(payload: &Payload, sent_at_ms: u64) -> Result<Self, PayloadError> {
        Ok(Plaintext {
            sent_at_ms,
            payload: payload.to_raw()?,
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;
