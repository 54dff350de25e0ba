//! Length-prefixed framing for stream protocols.
//!
//! A frame is a 4-byte big-endian length followed by that many bytes of bincode. The length is
//! checked against [`MAX_FRAME_LEN`] before anything is buffered, so a hostile peer cannot make
//! a reader allocate more than that.

use serde::{de::DeserializeOwned, Serialize};

use crate::codec::{self, CodecError};

/// Largest frame body accepted: 1 MiB (the codec's decode limit).
pub const MAX_FRAME_LEN: usize = codec::MAX_DECODE_LEN;

/// Size of the length prefix.
pub const LEN_PREFIX: usize = 4;

/// Why a frame could not be encoded or decoded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// The frame's declared or actual length exceeds [`MAX_FRAME_LEN`].
    #[error("frame of {len} bytes exceeds the {max}-byte limit")]
    TooLarge {
        /// The length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The frame body is not a valid encoding.
    #[error(transparent)]
    Codec(#[from] CodecError),
}

/// Appends one frame holding `value` to `out`.
pub fn encode<T: Serialize>(value: &T, out: &mut Vec<u8>) -> Result<(), FrameError> {
    let start = out.len();
    out.extend_from_slice(&[0u8; LEN_PREFIX]);
    if let Err(e) = codec::encode_into(value, out) {
        out.truncate(start);
        return Err(e.into());
    }
    let len = out.len() - start - LEN_PREFIX;
    if len > MAX_FRAME_LEN {
        out.truncate(start);
        return Err(FrameError::TooLarge {
            len,
            max: MAX_FRAME_LEN,
        });
    }
    out[start..start + LEN_PREFIX].copy_from_slice(&(len as u32).to_be_bytes());
    Ok(())
}

/// Reads the length prefix at the start of `buf`, if complete, and checks it.
pub fn peek_len(buf: &[u8]) -> Result<Option<usize>, FrameError> {
    let Some(prefix) = buf.get(..LEN_PREFIX) else {
        return Ok(None);
    };
    let mut b = [0u8; LEN_PREFIX];
    b.copy_from_slice(prefix);
    let len = u32::from_be_bytes(b) as usize;
    if len > MAX_FRAME_LEN {
        return Err(FrameError::TooLarge {
            len,
            max: MAX_FRAME_LEN,
        });
    }
    Ok(Some(len))
}

/// Decodes the first frame in `buf`: `Ok(None)` when more bytes are needed, otherwise the
/// value and how many bytes it used.
pub fn decode<T: DeserializeOwned>(buf: &[u8]) -> Result<Option<(T, usize)>, FrameError> {
    let Some(len) = peek_len(buf)? else {
        return Ok(None);
    };
    let Some(body) = buf.get(LEN_PREFIX..LEN_PREFIX + len) else {
        return Ok(None);
    };
    let value = codec::decode(body)?;
    Ok(Some((value, LEN_PREFIX + len)))
}
