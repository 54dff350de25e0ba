//! The single bincode configuration every Kith format is encoded with.
//!
//! Keeping it in one place means one size limit and one byte layout to document: bincode 2
//! `standard()` (little-endian, variable-length integers) with a hard limit on how many
//! bytes a decode may claim, so hostile length prefixes cannot make us allocate.

use bincode::config::{Configuration, LittleEndian, Varint};
use serde::{de::DeserializeOwned, Serialize};

/// The most bytes any single decode may claim (and so allocate): 1 MiB.
///
/// The largest legitimate object is a frame holding one envelope with a maximum-size text
/// (see [`crate::payload::MAX_TEXT_LEN`]) plus its seal; 1 MiB leaves ample room while keeping
/// a hostile peer from making us allocate more than that per frame.
pub const MAX_DECODE_LEN: usize = 1024 * 1024;

type Config = Configuration<LittleEndian, Varint, bincode::config::Limit<MAX_DECODE_LEN>>;

const CONFIG: Config = bincode::config::standard().with_limit::<MAX_DECODE_LEN>();

/// Why bytes could not be encoded or decoded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CodecError {
    /// The value could not be encoded (too large for the limit, or not representable).
    #[error("cannot encode: {0}")]
    Encode(#[from] bincode::error::EncodeError),
    /// The bytes are not a valid encoding of the expected type, or claim too much.
    #[error("cannot decode: {0}")]
    Decode(#[from] bincode::error::DecodeError),
    /// The bytes decoded, but bytes were left over after the value.
    #[error("{0} trailing bytes after the value")]
    TrailingBytes(usize),
}

/// Encodes `value` with Kith's bincode configuration.
pub fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, CodecError> {
    Ok(bincode::serde::encode_to_vec(value, CONFIG)?)
}

/// Appends the encoding of `value` to `out`.
pub fn encode_into<T: Serialize + ?Sized>(value: &T, out: &mut Vec<u8>) -> Result<(), CodecError> {
    let bytes = bincode::serde::encode_to_vec(value, CONFIG)?;
    out.extend_from_slice(&bytes);
    Ok(())
}

/// How many bytes [`encode`] would produce for `value`, without allocating them.
pub fn encoded_len<T: Serialize + ?Sized>(value: &T) -> Result<usize, CodecError> {
    let mut writer = bincode::enc::write::SizeWriter::default();
    bincode::serde::encode_into_writer(value, &mut writer, CONFIG)?;
    Ok(writer.bytes_written)
}

/// Decodes one `T` from the start of `bytes` and ignores what follows: for reading the
/// leading fields of a stored value whose later fields differ between format versions.
pub fn decode_prefix<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    let (value, _) = bincode::serde::decode_from_slice(bytes, CONFIG)?;
    Ok(value)
}

/// Decodes exactly one `T` from `bytes`; leftover bytes are an error.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    let (value, used) = bincode::serde::decode_from_slice(bytes, CONFIG)?;
    if used != bytes.len() {
        return Err(CodecError::TrailingBytes(bytes.len() - used));
    }
    Ok(value)
}
