//! Messages of the `/kith/media/1` protocol: moving encrypted blobs between nodes.
//!
//! Media files travel as blobs ([`crate::blob`]), separately from the envelopes that
//! reference them. This protocol is how a recipient pulls a blob's chunks from the sender's
//! node or from store peers, and how a sender uploads a blob to store peers for an offline
//! recipient. Whoever holds a blob holds ciphertext only: the key is in the sealed message.
//!
//! Every message is one frame ([`crate::frame`]); a stream carries requests one way and the
//! answers, in request order, the other way. [`MediaRequest::decode_frame`] and
//! [`MediaResponse::decode_frame`] decode *and* check the limits below, so a caller that uses
//! them never sees an out-of-limit message.

use serde::{Deserialize, Serialize};

use crate::{
    blob::{BlobError, BlobHash, BlobLayout, MAX_CIPHER_CHUNK_LEN, TAG_LEN},
    frame::{self, FrameError, MAX_FRAME_LEN},
    UserId,
};

/// The libp2p protocol name of media transfer.
pub const MEDIA_PROTOCOL: &str = "/kith/media/1";

/// Most chunks one [`MediaRequest::Get`] may ask for, and most uploaded chunks an uploader
/// may have sent without a [`MediaResponse::ChunkAck`].
pub const MAX_CHUNKS_PER_REQUEST: u32 = 16;

/// Most bytes a `Chunk` message adds around its ciphertext: variant (1) + hash (32) + index
/// varint (at most 9) + length varint (at most 5).
pub const CHUNK_MESSAGE_OVERHEAD: usize = 1 + 32 + 9 + 5;

// The largest chunk message must fit one frame.
const _: () = assert!(MAX_CIPHER_CHUNK_LEN + CHUNK_MESSAGE_OVERHEAD <= MAX_FRAME_LEN);

/// Why a holder or store peer refused a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum MediaRefusal {
    /// The blob (or the chunk asked for) is not held here.
    NotFound,
    /// The blob is larger than this peer accepts.
    TooLarge,
    /// The mailbox (or this peer) is at its byte quota.
    QuotaExceeded,
    /// The uploaded ciphertext does not hash to the announced name; it was discarded.
    BadHash,
    /// An uploaded chunk has the wrong index or length.
    BadChunk,
    /// Only the mailbox owner may do this.
    NotOwner,
    /// Too many requests; retry later.
    RateLimited,
    /// The request is not valid (limits, layout).
    Malformed,
    /// This peer does not store blobs for others.
    NotAStore,
    /// The requested expiry has passed (or is further than this peer allows).
    Expired,
}

/// How much of a blob a peer holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum HaveState {
    /// Nothing of it.
    Missing,
    /// The first `chunks` chunks (a contiguous prefix), e.g. an upload in progress.
    Partial {
        /// How many chunks from index 0.
        chunks: u64,
    },
    /// All of it, verified against its hash.
    Complete,
}

/// A request on a `/kith/media/1` stream.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum MediaRequest {
    /// Ask whether the peer holds a blob and how much of it (for resume and multi-holder).
    Have {
        /// The blob.
        hash: BlobHash,
    },
    /// Fetch encrypted chunks `[first, first + count)`; `count` is 1..=[`MAX_CHUNKS_PER_REQUEST`].
    Get {
        /// The blob.
        hash: BlobHash,
        /// First chunk index.
        first: u64,
        /// How many chunks.
        count: u32,
    },
    /// Begin (or resume) storing a blob for `mailbox`, the recipient (the same mailbox rules
    /// as envelopes). `size` and `chunk_size` are the blob's **plaintext** layout, exactly as
    /// in the media reference ([`BlobLayout`]); the ciphertext size and chunk lengths follow
    /// from it. The store peer keeps ciphertext only.
    Put {
        /// Whose mailbox it is for.
        mailbox: UserId,
        /// The blob's name.
        hash: BlobHash,
        /// Plaintext size ([`BlobLayout::size`]).
        size: u64,
        /// Plaintext chunk size ([`BlobLayout::chunk_size`]).
        chunk_size: u32,
        /// Unix ms after which the store peer may drop it (like an envelope's expiry).
        expires_ms: u64,
    },
    /// One uploaded encrypted chunk, at the store peer's `next_index`.
    Chunk {
        /// The blob.
        hash: BlobHash,
        /// The chunk index.
        index: u64,
        /// The encrypted chunk, [`BlobLayout::cipher_len`] bytes.
        #[serde(with = "serde_bytes")]
        bytes: Vec<u8>,
    },
    /// The mailbox owner deletes a blob after downloading it.
    Delete {
        /// The blob.
        hash: BlobHash,
    },
}

/// An answer on a `/kith/media/1` stream.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum MediaResponse {
    /// Answer to [`MediaRequest::Have`].
    Have {
        /// The blob.
        hash: BlobHash,
        /// How much of it is held.
        state: HaveState,
    },
    /// One encrypted chunk, answering [`MediaRequest::Get`].
    Chunk {
        /// The blob.
        hash: BlobHash,
        /// The chunk index.
        index: u64,
        /// The encrypted chunk.
        #[serde(with = "serde_bytes")]
        bytes: Vec<u8>,
    },
    /// The upload may start (or resume) at chunk `next_index`.
    PutAccepted {
        /// The blob.
        hash: BlobHash,
        /// The first chunk the store peer does not have yet.
        next_index: u64,
    },
    /// Uploaded chunks are stored up to (not including) `next_index`.
    ChunkAck {
        /// The blob.
        hash: BlobHash,
        /// The next chunk expected.
        next_index: u64,
    },
    /// The last chunk arrived and the whole ciphertext matches its hash.
    Complete {
        /// The blob.
        hash: BlobHash,
    },
    /// The blob was deleted (or was not held).
    Deleted {
        /// The blob.
        hash: BlobHash,
    },
    /// The request about `hash` was refused.
    Refused {
        /// The blob.
        hash: BlobHash,
        /// Why.
        reason: MediaRefusal,
    },
}

/// Why a media message is invalid or could not be framed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MediaError {
    /// A `Get` asks for no chunk or more than [`MAX_CHUNKS_PER_REQUEST`].
    #[error("a get asks for {count} chunks; 1..={max} allowed")]
    ChunkCount {
        /// The count asked for.
        count: u32,
        /// [`MAX_CHUNKS_PER_REQUEST`].
        max: u32,
    },
    /// A chunk's bytes are shorter than a tag or longer than the largest encrypted chunk.
    #[error("a chunk of {len} bytes is outside {min}..={max}")]
    ChunkLen {
        /// Its length.
        len: usize,
        /// [`TAG_LEN`].
        min: usize,
        /// [`MAX_CIPHER_CHUNK_LEN`].
        max: usize,
    },
    /// A `Put` announces an invalid layout.
    #[error("invalid layout: {0}")]
    Layout(#[from] BlobError),
    /// The frame could not be encoded or decoded.
    #[error(transparent)]
    Frame(#[from] FrameError),
}

fn check_chunk_len(len: usize) -> Result<(), MediaError> {
    if !(TAG_LEN..=MAX_CIPHER_CHUNK_LEN).contains(&len) {
        return Err(MediaError::ChunkLen {
            len,
            min: TAG_LEN,
            max: MAX_CIPHER_CHUNK_LEN,
        });
    }
    Ok(())
}

impl MediaRequest {
    /// The blob the request is about.
    pub fn hash(&self) -> &BlobHash {
        match self {
            MediaRequest::Have { hash }
            | MediaRequest::Get { hash, .. }
            | MediaRequest::Put { hash, .. }
            | MediaRequest::Chunk { hash, .. }
            | MediaRequest::Delete { hash } => hash,
        }
    }

    /// The announced layout of a `Put` (validated), `None` for other requests.
    pub fn put_layout(&self) -> Option<Result<BlobLayout, BlobError>> {
        match self {
            MediaRequest::Put {
                size, chunk_size, ..
            } => Some(BlobLayout::new(*size, *chunk_size)),
            _ => None,
        }
    }

    /// Checks the limits: `Get` counts, `Put` layouts, `Chunk` lengths.
    pub fn validate(&self) -> Result<(), MediaError> {
        match self {
            MediaRequest::Get { count, .. } => {
                if *count == 0 || *count > MAX_CHUNKS_PER_REQUEST {
                    return Err(MediaError::ChunkCount {
                        count: *count,
                        max: MAX_CHUNKS_PER_REQUEST,
                    });
                }
                Ok(())
            }
            MediaRequest::Put {
                size, chunk_size, ..
            } => {
                BlobLayout::new(*size, *chunk_size)?;
                Ok(())
            }
            MediaRequest::Chunk { bytes, .. } => check_chunk_len(bytes.len()),
            MediaRequest::Have { .. } | MediaRequest::Delete { .. } => Ok(()),
        }
    }

    /// Validates and appends one frame holding the request to `out`.
    pub fn encode_frame(&self, out: &mut Vec<u8>) -> Result<(), MediaError> {
        self.validate()?;
        Ok(frame::encode(self, out)?)
    }

    /// Decodes and validates the first frame in `buf`: `Ok(None)` when more bytes are needed,
    /// otherwise the request and how many bytes it used.
    pub fn decode_frame(buf: &[u8]) -> Result<Option<(Self, usize)>, MediaError> {
        let Some((req, used)) = frame::decode::<MediaRequest>(buf)? else {
            return Ok(None);
        };
        req.validate()?;
        Ok(Some((req, used)))
    }
}

impl MediaResponse {
    /// The blob the answer is about.
    pub fn hash(&self) -> &BlobHash {
        match self {
            MediaResponse::Have { hash, .. }
            | MediaResponse::Chunk { hash, .. }
            | MediaResponse::PutAccepted { hash, .. }
            | MediaResponse::ChunkAck { hash, .. }
            | MediaResponse::Complete { hash }
            | MediaResponse::Deleted { hash }
            | MediaResponse::Refused { hash, .. } => hash,
        }
    }

    /// Checks the limits (`Chunk` lengths).
    pub fn validate(&self) -> Result<(), MediaError> {
        match self {
            MediaResponse::Chunk { bytes, .. } => check_chunk_len(bytes.len()),
            _ => Ok(()),
        }
    }

    /// Validates and appends one frame holding the answer to `out`.
    pub fn encode_frame(&self, out: &mut Vec<u8>) -> Result<(), MediaError> {
        self.validate()?;
        Ok(frame::encode(self, out)?)
    }

    /// Decodes and validates the first frame in `buf`: `Ok(None)` when more bytes are needed,
    /// otherwise the answer and how many bytes it used.
    pub fn decode_frame(buf: &[u8]) -> Result<Option<(Self, usize)>, MediaError> {
        let Some((resp, used)) = frame::decode::<MediaResponse>(buf)? else {
            return Ok(None);
        };
        resp.validate()?;
        Ok(Some((resp, used)))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::{blob::MAX_CHUNK_SIZE, codec, LocalIdentity};
    use rand_chacha::ChaCha20Rng;
    use rand_core::SeedableRng;

    const H: BlobHash = BlobHash([9; 32]);

    fn user() -> UserId {
        LocalIdentity::generate(0, &mut ChaCha20Rng::seed_from_u64(3)).user_id()
    }

    fn requests() -> Vec<MediaRequest> {
        vec![
            MediaRequest::Have { hash: H },
            MediaRequest::Get {
                hash: H,
                first: 3,
                count: MAX_CHUNKS_PER_REQUEST,
            },
            MediaRequest::Put {
                mailbox: user(),
                hash: H,
                size: 100_000,
                chunk_size: 65_536,
                expires_ms: 1_700_000_000_000,
            },
            MediaRequest::Chunk {
                hash: H,
                index: u64::MAX,
                bytes: vec![1; MAX_CIPHER_CHUNK_LEN],
            },
            MediaRequest::Delete { hash: H },
        ]
    }

    fn responses() -> Vec<MediaResponse> {
        let mut v = vec![
            MediaResponse::Chunk {
                hash: H,
                index: u64::MAX,
                bytes: vec![2; MAX_CIPHER_CHUNK_LEN],
            },
            MediaResponse::PutAccepted {
                hash: H,
                next_index: 4,
            },
            MediaResponse::ChunkAck {
                hash: H,
                next_index: 5,
            },
            MediaResponse::Complete { hash: H },
            MediaResponse::Deleted { hash: H },
            MediaResponse::Refused {
                hash: H,
                reason: MediaRefusal::Expired,
            },
        ];
        for state in [
            HaveState::Missing,
            HaveState::Partial { chunks: 7 },
            HaveState::Complete,
        ] {
            v.push(MediaResponse::Have { hash: H, state });
        }
        v
    }

    #[test]
    fn round_trips_and_the_largest_chunk_fits_a_frame() {
        for r in requests() {
            let mut buf = Vec::new();
            r.encode_frame(&mut buf).unwrap();
            assert!(buf.len() <= frame::LEN_PREFIX + MAX_FRAME_LEN);
            let (back, used) = MediaRequest::decode_frame(&buf).unwrap().unwrap();
            assert_eq!((back, used), (r.clone(), buf.len()));
            assert_eq!(r.hash(), &H);
        }
        for r in responses() {
            let mut buf = Vec::new();
            r.encode_frame(&mut buf).unwrap();
            let (back, used) = MediaResponse::decode_frame(&buf).unwrap().unwrap();
            assert_eq!((back, used), (r.clone(), buf.len()));
            assert_eq!(r.hash(), &H);
        }
        // The overhead bound is tight for the largest index.
        let big = &responses()[0];
        assert_eq!(
            codec::encoded_len(big).unwrap(),
            MAX_CIPHER_CHUNK_LEN + CHUNK_MESSAGE_OVERHEAD
        );
        assert_eq!(
            codec::encoded_len(&requests()[3]).unwrap(),
            MAX_CIPHER_CHUNK_LEN + CHUNK_MESSAGE_OVERHEAD
        );
        assert_eq!(MAX_CIPHER_CHUNK_LEN, MAX_CHUNK_SIZE as usize + TAG_LEN);
    }

    #[test]
    fn layout() {
        // Variant indexes are the declaration order; a hash is 32 raw bytes.
        let have = codec::encode(&MediaRequest::Have { hash: H }).unwrap();
        assert_eq!(have, [&[0u8][..], &[9; 32]].concat());
        let get = codec::encode(&MediaRequest::Get {
            hash: H,
            first: 300,
            count: 16,
        })
        .unwrap();
        assert_eq!(
            get,
            [&[1u8][..], &[9; 32], &[0xfb, 0x2c, 0x01, 16]].concat()
        );
        let chunk = codec::encode(&MediaResponse::Chunk {
            hash: H,
            index: 2,
            bytes: vec![7; 3],
        })
        .unwrap();
        assert_eq!(chunk, [&[1u8][..], &[9; 32], &[2, 3, 7, 7, 7]].concat());
        let partial = codec::encode(&MediaResponse::Have {
            hash: H,
            state: HaveState::Partial { chunks: 5 },
        })
        .unwrap();
        assert_eq!(partial, [&[0u8][..], &[9; 32], &[1, 5]].concat());
        for (i, r) in [
            MediaRefusal::NotFound,
            MediaRefusal::TooLarge,
            MediaRefusal::QuotaExceeded,
            MediaRefusal::BadHash,
            MediaRefusal::BadChunk,
            MediaRefusal::NotOwner,
            MediaRefusal::RateLimited,
            MediaRefusal::Malformed,
            MediaRefusal::NotAStore,
            MediaRefusal::Expired,
        ]
        .into_iter()
        .enumerate()
        {
            assert_eq!(codec::encode(&r).unwrap(), vec![i as u8]);
        }
        assert!(codec::decode::<MediaRefusal>(&[10]).is_err());
        assert!(codec::decode::<MediaRequest>(&[5]).is_err());
        assert!(codec::decode::<MediaResponse>(&[7]).is_err());
    }

    #[test]
    fn limits_are_checked_both_ways() {
        let bad_requests = [
            MediaRequest::Get {
                hash: H,
                first: 0,
                count: 0,
            },
            MediaRequest::Get {
                hash: H,
                first: 0,
                count: MAX_CHUNKS_PER_REQUEST + 1,
            },
            MediaRequest::Put {
                mailbox: user(),
                hash: H,
                size: 10,
                chunk_size: 10,
                expires_ms: 0,
            },
            MediaRequest::Put {
                mailbox: user(),
                hash: H,
                size: u64::MAX,
                chunk_size: 65_536,
                expires_ms: 0,
            },
            MediaRequest::Chunk {
                hash: H,
                index: 0,
                bytes: vec![0; TAG_LEN - 1],
            },
            MediaRequest::Chunk {
                hash: H,
                index: 0,
                bytes: vec![0; MAX_CIPHER_CHUNK_LEN + 1],
            },
        ];
        for r in bad_requests {
            assert!(r.validate().is_err(), "{r:?}");
            let mut out = vec![1];
            assert!(r.encode_frame(&mut out).is_err());
            assert_eq!(out, vec![1]);
            // Framed without validation, the decoder still refuses it.
            let mut raw = Vec::new();
            frame::encode(&r, &mut raw).unwrap();
            assert!(MediaRequest::decode_frame(&raw).is_err(), "{r:?}");
        }
        let bad = MediaResponse::Chunk {
            hash: H,
            index: 0,
            bytes: vec![],
        };
        let mut raw = Vec::new();
        frame::encode(&bad, &mut raw).unwrap();
        assert!(matches!(
            MediaResponse::decode_frame(&raw),
            Err(MediaError::ChunkLen { len: 0, .. })
        ));
        assert!(matches!(
            requests()[2].put_layout(),
            Some(Ok(BlobLayout {
                size: 100_000,
                chunk_size: 65_536
            }))
        ));
        assert!(requests()[0].put_layout().is_none());
    }

    #[test]
    fn partial_frames_need_more() {
        let mut buf = Vec::new();
        requests()[2].encode_frame(&mut buf).unwrap();
        for cut in 0..buf.len() {
            assert!(MediaRequest::decode_frame(&buf[..cut]).unwrap().is_none());
        }
    }
}
