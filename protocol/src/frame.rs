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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::{
        seal::{HandshakeBody, SealedBody},
        wire::{MsgFrame, RejectReason},
        Envelope, EnvelopeHeader, LocalIdentity, MessageId,
    };
    use rand_chacha::ChaCha20Rng;
    use rand_core::SeedableRng;

    fn envelope() -> Envelope {
        let bob = LocalIdentity::generate(0, &mut ChaCha20Rng::seed_from_u64(1));
        Envelope {
            header: EnvelopeHeader::new(MessageId([4; 16]), bob.user_id(), 99),
            body: SealedBody::Handshake(HandshakeBody {
                prekey_id: 1,
                noise: vec![7; 120],
            }),
        }
    }

    fn frames() -> Vec<MsgFrame> {
        vec![
            MsgFrame::Envelope(envelope()),
            MsgFrame::Ack(vec![MessageId([1; 16]), MessageId([2; 16])]),
            MsgFrame::Ack(vec![]),
            MsgFrame::Reject(MessageId([3; 16]), RejectReason::Busy),
        ]
    }

    #[test]
    fn round_trip() {
        for f in frames() {
            let mut buf = Vec::new();
            encode(&f, &mut buf).unwrap();
            let len = u32::from_be_bytes(buf[..4].try_into().unwrap()) as usize;
            assert_eq!(len, buf.len() - LEN_PREFIX);
            assert_eq!(&buf[LEN_PREFIX..], codec::encode(&f).unwrap().as_slice());
            let (back, used) = decode::<MsgFrame>(&buf).unwrap().unwrap();
            assert_eq!(back, f);
            assert_eq!(used, buf.len());
        }
    }

    #[test]
    fn several_frames_in_one_buffer() {
        let mut buf = Vec::new();
        for f in frames() {
            encode(&f, &mut buf).unwrap();
        }
        let mut at = 0;
        let mut got = Vec::new();
        while let Some((f, used)) = decode::<MsgFrame>(&buf[at..]).unwrap() {
            got.push(f);
            at += used;
        }
        assert_eq!(at, buf.len());
        assert_eq!(got, frames());
    }

    #[test]
    fn partial_buffers_need_more() {
        let mut buf = Vec::new();
        encode(&MsgFrame::Envelope(envelope()), &mut buf).unwrap();
        for cut in 0..buf.len() {
            assert!(
                decode::<MsgFrame>(&buf[..cut]).unwrap().is_none(),
                "cut at {cut}"
            );
        }
        assert!(decode::<MsgFrame>(&buf).unwrap().is_some());
        assert_eq!(peek_len(&buf[..3]).unwrap(), None);
        assert_eq!(peek_len(&buf[..4]).unwrap(), Some(buf.len() - 4));
    }

    #[test]
    fn oversized_length_prefix_rejected_before_the_body() {
        // Only the prefix is present: the limit is checked before waiting for (or buffering)
        // the body.
        let over = (MAX_FRAME_LEN + 1) as u32;
        for len in [over, u32::MAX] {
            let buf = len.to_be_bytes();
            assert!(matches!(
                decode::<MsgFrame>(&buf),
                Err(FrameError::TooLarge { len: l, max }) if l == len as usize && max == MAX_FRAME_LEN
            ));
            assert!(matches!(peek_len(&buf), Err(FrameError::TooLarge { .. })));
        }
        // Exactly the limit is fine (and needs more bytes).
        assert!(decode::<MsgFrame>(&(MAX_FRAME_LEN as u32).to_be_bytes())
            .unwrap()
            .is_none());
    }

    #[test]
    fn encode_refuses_oversized_values_and_leaves_the_buffer_alone() {
        let mut buf = vec![1, 2, 3];
        let huge = vec![0u8; MAX_FRAME_LEN + 1];
        assert!(matches!(
            encode(&serde_bytes::Bytes::new(&huge), &mut buf),
            Err(FrameError::TooLarge { .. })
        ));
        assert_eq!(buf, vec![1, 2, 3]);
    }

    #[test]
    fn garbage_body_is_a_codec_error() {
        for body in [&[0xffu8, 0xff, 0xff][..], &[9], &[1, 0xff]] {
            let mut buf = (body.len() as u32).to_be_bytes().to_vec();
            buf.extend_from_slice(body);
            assert!(
                matches!(decode::<MsgFrame>(&buf), Err(FrameError::Codec(_))),
                "{body:?}"
            );
        }
        // A valid frame body followed by extra bytes inside the same frame.
        let mut body = codec::encode(&MsgFrame::Ack(vec![])).unwrap();
        body.push(0);
        let mut buf = (body.len() as u32).to_be_bytes().to_vec();
        buf.extend_from_slice(&body);
        assert!(matches!(
            decode::<MsgFrame>(&buf),
            Err(FrameError::Codec(codec::CodecError::TrailingBytes(1)))
        ));
        // An empty frame is not a MsgFrame.
        assert!(matches!(
            decode::<MsgFrame>(&[0, 0, 0, 0]),
            Err(FrameError::Codec(_))
        ));
    }

    #[test]
    fn hostile_inner_lengths_do_not_allocate() {
        // A frame whose Ack claims 2^60 ids, or whose noise claims 2^60 bytes: refused by the
        // codec limit instead of aborting on allocation.
        let mut body = vec![1u8, 253];
        body.extend_from_slice(&(1u64 << 60).to_le_bytes());
        let mut buf = (body.len() as u32).to_be_bytes().to_vec();
        buf.extend_from_slice(&body);
        assert!(matches!(
            decode::<MsgFrame>(&buf),
            Err(FrameError::Codec(_))
        ));
        let big: Vec<u8> = [&[253u8][..], &(1u64 << 60).to_le_bytes()].concat();
        assert!(codec::decode::<serde_bytes::ByteBuf>(&big).is_err());
        assert!(codec::decode::<String>(&big).is_err());
        assert!(codec::decode::<Vec<MessageId>>(&big).is_err());
    }
}
