//! What travels inside the seal: texts, media references and receipts.
//!
//! Every payload is a `(kind, bytes)` pair ([`RawPayload`]) so that a node meeting a kind it
//! does not know yet reports [`Payload::Unknown`] instead of failing: newer nodes can add kinds.

use serde::{Deserialize, Serialize};

use crate::{
    blob::{BlobError, BlobHash, BlobKey, BlobLayout},
    codec, MessageId,
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

/// Payload kind numbers as they appear on the wire.
pub mod kind {
    /// [`super::Text`].
    pub const TEXT: u16 = 1;
    /// [`super::MediaRef`].
    pub const MEDIA: u16 = 2;
    /// [`super::Receipt`].
    pub const RECEIPT: u16 = 3;
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

/// A decoded payload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Payload {
    /// A text message.
    Text(Text),
    /// A media message.
    Media(MediaRef),
    /// A delivered or read receipt.
    Receipt(Receipt),
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
mod tests {
    use super::*;

    fn text(body: &str) -> Text {
        Text {
            body: body.into(),
            client_meta: String::new(),
        }
    }

    fn media() -> MediaRef {
        MediaRef {
            hash: [1; 32],
            size: 123_456,
            chunk_size: 65_536,
            mime: "image/jpeg".into(),
            name: "cat.jpg".into(),
            key: [2; 32],
            preview: vec![3; 100],
            caption: "a cat".into(),
        }
    }

    fn round_trip(p: &Payload) -> Payload {
        let raw = p.to_raw().unwrap();
        // Through the codec as part of a Plaintext, as it travels.
        let pt = Plaintext {
            sent_at_ms: 77,
            payload: raw,
        };
        let back: Plaintext = codec::decode(&codec::encode(&pt).unwrap()).unwrap();
        assert_eq!(back, pt);
        back.payload.decode().unwrap()
    }

    #[test]
    fn each_kind_round_trips() {
        let t = Payload::Text(Text {
            body: "héllo 👋".into(),
            client_meta: r#"{"quote":"abc"}"#.into(),
        });
        assert_eq!(round_trip(&t), t);
        assert_eq!(t.to_raw().unwrap().kind, kind::TEXT);

        let m = Payload::Media(media());
        assert_eq!(round_trip(&m), m);
        assert_eq!(m.to_raw().unwrap().kind, kind::MEDIA);

        for k in [ReceiptKind::Delivered, ReceiptKind::Read] {
            let r = Payload::Receipt(Receipt {
                kind: k,
                ids: vec![MessageId([1; 16]), MessageId([2; 16])],
            });
            assert_eq!(round_trip(&r), r);
            assert_eq!(r.to_raw().unwrap().kind, kind::RECEIPT);
        }
        assert_eq!(Plaintext::new(&t, 5).unwrap().sent_at_ms, 5);
    }

    #[test]
    fn text_layout_is_two_strings() {
        let raw = Payload::Text(Text {
            body: "hi".into(),
            client_meta: "{}".into(),
        })
        .to_raw()
        .unwrap();
        assert_eq!(raw.body, b"\x02hi\x02{}");
        let pt = Plaintext {
            sent_at_ms: 300,
            payload: raw,
        };
        // sent_at_ms 300 = 251 + u16 LE; kind 1; body length 6; body.
        assert_eq!(
            codec::encode(&pt).unwrap(),
            b"\xfb\x2c\x01\x01\x06\x02hi\x02{}".to_vec()
        );
    }

    #[test]
    fn receipt_layout() {
        let raw = Payload::Receipt(Receipt {
            kind: ReceiptKind::Read,
            ids: vec![MessageId([9; 16])],
        })
        .to_raw()
        .unwrap();
        let mut expected = vec![1u8, 1]; // variant 1 (Read), one id
        expected.extend_from_slice(&[9; 16]);
        assert_eq!(raw.body, expected);
    }

    #[test]
    fn unknown_kind_is_reported_not_failed() {
        for k in [0u16, 4, 99, u16::MAX] {
            let raw = RawPayload {
                kind: k,
                body: vec![1, 2, 3],
            };
            assert_eq!(raw.decode().unwrap(), Payload::Unknown { kind: k });
        }
        let raw = Payload::Unknown { kind: 7 }.to_raw().unwrap();
        assert_eq!(
            raw,
            RawPayload {
                kind: 7,
                body: vec![]
            }
        );
    }

    #[test]
    fn text_limits() {
        assert!(matches!(
            Payload::Text(text("")).to_raw(),
            Err(PayloadError::EmptyText)
        ));
        let max = "a".repeat(MAX_TEXT_LEN);
        assert!(Payload::Text(text(&max)).to_raw().is_ok());
        let over = "a".repeat(MAX_TEXT_LEN + 1);
        assert!(matches!(
            Payload::Text(text(&over)).to_raw(),
            Err(PayloadError::TooLong { field: "text", len, max }) if len == MAX_TEXT_LEN + 1 && max == MAX_TEXT_LEN
        ));
        // The limit is in bytes, not characters.
        let wide = "é".repeat(MAX_TEXT_LEN / 2 + 1);
        assert!(matches!(
            Payload::Text(text(&wide)).to_raw(),
            Err(PayloadError::TooLong { field: "text", .. })
        ));
        let meta = Text {
            body: "x".into(),
            client_meta: "m".repeat(MAX_CLIENT_META_LEN + 1),
        };
        assert!(matches!(
            Payload::Text(meta).to_raw(),
            Err(PayloadError::TooLong {
                field: "client_meta",
                ..
            })
        ));
    }

    #[test]
    fn decoder_enforces_limits_too() {
        // A sender that skips validation: the receiver refuses anyway.
        let empty = RawPayload {
            kind: kind::TEXT,
            body: codec::encode(&text("")).unwrap(),
        };
        assert!(matches!(empty.decode(), Err(PayloadError::EmptyText)));
        let long = RawPayload {
            kind: kind::TEXT,
            body: codec::encode(&text(&"a".repeat(MAX_TEXT_LEN + 1))).unwrap(),
        };
        assert!(matches!(long.decode(), Err(PayloadError::TooLong { .. })));
        let receipt = RawPayload {
            kind: kind::RECEIPT,
            body: codec::encode(&Receipt {
                kind: ReceiptKind::Read,
                ids: vec![],
            })
            .unwrap(),
        };
        assert!(matches!(receipt.decode(), Err(PayloadError::EmptyReceipt)));
        let mut m = media();
        m.name = "n".repeat(MAX_MEDIA_NAME_LEN + 1);
        let media_raw = RawPayload {
            kind: kind::MEDIA,
            body: codec::encode(&m).unwrap(),
        };
        assert!(matches!(
            media_raw.decode(),
            Err(PayloadError::TooLong { field: "name", .. })
        ));
    }

    #[test]
    fn receipt_limits() {
        let empty = Receipt {
            kind: ReceiptKind::Delivered,
            ids: vec![],
        };
        assert!(matches!(
            Payload::Receipt(empty).to_raw(),
            Err(PayloadError::EmptyReceipt)
        ));
        let max = Receipt {
            kind: ReceiptKind::Delivered,
            ids: vec![MessageId([0; 16]); MAX_RECEIPT_IDS],
        };
        assert!(Payload::Receipt(max).to_raw().is_ok());
        let over = Receipt {
            kind: ReceiptKind::Delivered,
            ids: vec![MessageId([0; 16]); MAX_RECEIPT_IDS + 1],
        };
        assert!(matches!(
            Payload::Receipt(over).to_raw(),
            Err(PayloadError::TooLong { field: "receipt ids", len, .. }) if len == MAX_RECEIPT_IDS + 1
        ));
    }

    #[test]
    fn media_limits() {
        assert!(Payload::Media(media()).to_raw().is_ok());
        type Case = (&'static str, fn(&mut MediaRef));
        let cases: [Case; 4] = [
            ("mime", |m| m.mime = "m".repeat(MAX_MEDIA_NAME_LEN + 1)),
            ("name", |m| m.name = "n".repeat(MAX_MEDIA_NAME_LEN + 1)),
            ("preview", |m| m.preview = vec![0; MAX_PREVIEW_LEN + 1]),
            ("caption", |m| m.caption = "c".repeat(MAX_TEXT_LEN + 1)),
        ];
        for (field, change) in cases {
            let mut m = media();
            change(&mut m);
            assert!(
                matches!(Payload::Media(m).to_raw(), Err(PayloadError::TooLong { field: f, .. }) if f == field),
                "{field}"
            );
        }
        let mut at_max = media();
        at_max.mime = "m".repeat(MAX_MEDIA_NAME_LEN);
        at_max.name = "n".repeat(MAX_MEDIA_NAME_LEN);
        at_max.preview = vec![0; MAX_PREVIEW_LEN];
        at_max.caption = "c".repeat(MAX_TEXT_LEN);
        assert!(Payload::Media(at_max).to_raw().is_ok());
    }

    #[test]
    fn media_ref_blob_helpers() {
        let m = media();
        assert_eq!(
            m.layout().unwrap(),
            BlobLayout::new(123_456, 65_536).unwrap()
        );
        assert_eq!(m.blob_hash(), BlobHash([1; 32]));
        assert_eq!(m.blob_key().0, [2; 32]);
        let mut bad = media();
        bad.chunk_size = 10;
        assert!(bad.layout().is_err());
        // Still a valid message: the layout is checked when downloading.
        assert!(Payload::Media(bad).to_raw().is_ok());
        let shown = format!("{m:?}");
        assert!(
            shown.contains("cat.jpg") && !shown.contains("[2, 2"),
            "{shown}"
        );
    }

    #[test]
    fn malformed_bodies_rejected() {
        for k in [kind::TEXT, kind::MEDIA, kind::RECEIPT] {
            for body in [vec![], vec![0xff; 3], vec![5, b'a']] {
                let raw = RawPayload { kind: k, body };
                assert!(
                    matches!(raw.decode(), Err(PayloadError::Codec(_))),
                    "kind {k}"
                );
            }
        }
        // Invalid UTF-8 in a text.
        let raw = RawPayload {
            kind: kind::TEXT,
            body: vec![1, 0xff, 0],
        };
        assert!(matches!(raw.decode(), Err(PayloadError::Codec(_))));
        // A receipt kind that does not exist (variant 2).
        let raw = RawPayload {
            kind: kind::RECEIPT,
            body: vec![2, 0],
        };
        assert!(matches!(raw.decode(), Err(PayloadError::Codec(_))));
    }
}
