//! Media blobs: a file encrypted in fixed-size, individually authenticated chunks.
//!
//! Media does not travel inside envelopes (they are capped at 128 KiB); a file is encrypted
//! into a separate **blob** and the sealed message carries a [`crate::MediaRef`] with the
//! blob's hash, layout and key. Chunking lets a node verify every chunk before it writes it,
//! resume a download after the last verified chunk, fetch different chunks from different
//! holders, and never hold a whole file in memory.
//!
//! Construction (specified in `protocol/README.md`, "Media blobs"):
//! - a fresh random 32-byte [`BlobKey`] per blob; the plaintext is cut into chunks of
//!   `chunk_size` bytes (the last one shorter, an empty file is one empty chunk);
//! - chunk `i` is ChaCha20-Poly1305 with that key, nonce `i as u64 LE ‖ is_last ‖ 00 00 00`
//!   and AAD `"kith-blob-v1" ‖ size u64 LE ‖ chunk_size u32 LE ‖ i u64 LE ‖ is_last u8`;
//! - the blob is the concatenation of the encrypted chunks, named by its BLAKE2s-256
//!   ([`BlobHash`]).
//!
//! Why each chunk cannot be moved: the key is unique to the blob, so a chunk of another blob
//! does not authenticate (swap between blobs); the index is in the nonce and the AAD, so a
//! chunk opened at another position fails (reorder, duplicate); the size and the last-chunk
//! flag are in the AAD, so a blob cut after any chunk, extended, or opened under another
//! claimed size fails (truncation, extension); and each chunk's length is fixed by the layout,
//! so a shortened chunk is refused.

use std::fmt;

use blake2::{Blake2s256, Digest};
use chacha20poly1305::{aead::Aead, aead::Payload as AeadPayload, ChaCha20Poly1305, KeyInit};
use rand_core::CryptoRngCore;
use serde::{Deserialize, Serialize};

/// Chunk size senders use unless they have a reason to choose another: 64 KiB of plaintext.
pub const DEFAULT_CHUNK_SIZE: u32 = 64 * 1024;

/// Smallest allowed plaintext chunk size: 1 KiB (bounds the per-chunk overhead and the chunk
/// count of a maximal blob).
pub const MIN_CHUNK_SIZE: u32 = 1024;

/// Largest allowed plaintext chunk size: 512 KiB, so one encrypted chunk plus its
/// `/kith/media/1` message header fits a frame ([`crate::frame::MAX_FRAME_LEN`], 1 MiB) with
/// room to spare. Sizes need not be powers of two.
pub const MAX_CHUNK_SIZE: u32 = 512 * 1024;

/// Largest plaintext a blob may hold: 4 GiB.
pub const MAX_BLOB_SIZE: u64 = 4 * 1024 * 1024 * 1024;

/// Bytes the authentication tag adds to each chunk (Poly1305).
pub const TAG_LEN: usize = 16;

/// Largest encrypted chunk: [`MAX_CHUNK_SIZE`] + [`TAG_LEN`].
pub const MAX_CIPHER_CHUNK_LEN: usize = MAX_CHUNK_SIZE as usize + TAG_LEN;

/// Domain label at the start of every chunk's associated data.
pub const BLOB_AAD_LABEL: &[u8; 12] = b"kith-blob-v1";

/// Why a blob operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BlobError {
    /// The chunk size is outside [`MIN_CHUNK_SIZE`]..=[`MAX_CHUNK_SIZE`].
    #[error("chunk size {chunk_size} is outside {min}..={max}")]
    ChunkSize {
        /// The chunk size given.
        chunk_size: u32,
        /// [`MIN_CHUNK_SIZE`].
        min: u32,
        /// [`MAX_CHUNK_SIZE`].
        max: u32,
    },
    /// The plaintext is larger than [`MAX_BLOB_SIZE`].
    #[error("blob of {size} bytes exceeds the {max}-byte limit")]
    TooLarge {
        /// The size given.
        size: u64,
        /// [`MAX_BLOB_SIZE`].
        max: u64,
    },
    /// The chunk index is past the last chunk.
    #[error("chunk {index} does not exist (the blob has {count})")]
    NoSuchChunk {
        /// The index asked for.
        index: u64,
        /// How many chunks the blob has.
        count: u64,
    },
    /// A plaintext chunk given to [`seal_chunk`] (or a whole plaintext) has the wrong length.
    #[error("chunk {index} must be {expected} bytes, got {got}")]
    Length {
        /// The chunk index.
        index: u64,
        /// The length the layout requires.
        expected: u64,
        /// The length given.
        got: u64,
    },
    /// The chunk does not authenticate at this index in this blob: changed, truncated, moved,
    /// from another blob or another claimed size. Fetch it again (from another holder).
    #[error("chunk {index} is corrupt or does not belong here")]
    Corrupt {
        /// The chunk index.
        index: u64,
    },
    /// A whole ciphertext does not have the expected hash.
    #[error("blob hash mismatch: expected {expected}, got {got}")]
    HashMismatch {
        /// The hash it should have.
        expected: BlobHash,
        /// The hash it has.
        got: BlobHash,
    },
    /// A blob hash in text is not 64 lowercase hex digits.
    #[error("a blob hash is 64 lowercase hex digits")]
    Hex,
}

/// A blob's name: BLAKE2s-256 of its whole ciphertext (the encrypted chunks in order).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct BlobHash(pub [u8; 32]);

impl BlobHash {
    /// The hash as 64 lowercase hex digits.
    pub fn to_hex(&self) -> String {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        let mut s = String::with_capacity(64);
        for b in self.0 {
            s.push(DIGITS[(b >> 4) as usize] as char);
            s.push(DIGITS[(b & 0x0f) as usize] as char);
        }
        s
    }

    /// Parses 64 lowercase hex digits (nothing else: no prefix, no upper case).
    pub fn from_hex(s: &str) -> Result<Self, BlobError> {
        fn digit(c: u8) -> Result<u8, BlobError> {
            match c {
                b'0'..=b'9' => Ok(c - b'0'),
                b'a'..=b'f' => Ok(c - b'a' + 10),
                _ => Err(BlobError::Hex),
            }
        }
        let bytes = s.as_bytes();
        if bytes.len() != 64 {
            return Err(BlobError::Hex);
        }
        let mut out = [0u8; 32];
        for (o, pair) in out.iter_mut().zip(bytes.chunks_exact(2)) {
            *o = (digit(pair[0])? << 4) | digit(pair[1])?;
        }
        Ok(BlobHash(out))
    }

    /// The hash of a whole ciphertext held in memory (see [`BlobHasher`] for streams).
    pub fn of(ciphertext: &[u8]) -> Self {
        let mut h = BlobHasher::new();
        h.update(ciphertext);
        h.finish()
    }
}

impl fmt::Display for BlobHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for BlobHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BlobHash({})", self.to_hex())
    }
}

impl std::str::FromStr for BlobHash {
    type Err = BlobError;
    fn from_str(s: &str) -> Result<Self, BlobError> {
        BlobHash::from_hex(s)
    }
}

/// A blob's symmetric key: fresh and random for every blob, never reused for another file.
#[derive(Clone, PartialEq, Eq)]
pub struct BlobKey(pub [u8; 32]);

impl BlobKey {
    /// A fresh random key.
    pub fn generate(rng: &mut impl CryptoRngCore) -> Self {
        let mut k = [0u8; 32];
        rng.fill_bytes(&mut k);
        BlobKey(k)
    }
}

impl fmt::Debug for BlobKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("BlobKey(..)")
    }
}

/// How a blob is cut into chunks: its plaintext size and plaintext chunk size (validated).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlobLayout {
    /// Plaintext size in bytes (at most [`MAX_BLOB_SIZE`]).
    pub size: u64,
    /// Plaintext bytes per chunk (the last chunk may be shorter).
    pub chunk_size: u32,
}

impl BlobLayout {
    /// Checks the chunk size bounds and the size limit.
    pub fn new(size: u64, chunk_size: u32) -> Result<Self, BlobError> {
        if !(MIN_CHUNK_SIZE..=MAX_CHUNK_SIZE).contains(&chunk_size) {
            return Err(BlobError::ChunkSize {
                chunk_size,
                min: MIN_CHUNK_SIZE,
                max: MAX_CHUNK_SIZE,
            });
        }
        if size > MAX_BLOB_SIZE {
            return Err(BlobError::TooLarge {
                size,
                max: MAX_BLOB_SIZE,
            });
        }
        Ok(BlobLayout { size, chunk_size })
    }

    /// The layout a ciphertext of `cipher_size` bytes has with this `chunk_size`, if any
    /// (what a store peer that knows only the ciphertext would use).
    pub fn from_cipher_size(cipher_size: u64, chunk_size: u32) -> Result<Self, BlobError> {
        BlobLayout::new(0, chunk_size)?;
        let full = u64::from(chunk_size) + TAG_LEN as u64;
        // Every chunk carries a tag and there is at least one chunk.
        let count = cipher_size.div_ceil(full).max(1);
        let size = cipher_size
            .checked_sub(count * TAG_LEN as u64)
            .ok_or(BlobError::Length {
                index: 0,
                expected: TAG_LEN as u64,
                got: cipher_size,
            })?;
        let layout = BlobLayout::new(size, chunk_size)?;
        if layout.cipher_size() != cipher_size {
            // A last chunk of only a tag after full chunks: not a layout a sender makes.
            return Err(BlobError::Length {
                index: count - 1,
                expected: full,
                got: cipher_size - (count - 1) * full,
            });
        }
        Ok(layout)
    }

    /// Number of chunks: `ceil(size / chunk_size)`, and 1 for an empty file (one empty chunk,
    /// so even an empty blob authenticates).
    pub fn chunk_count(&self) -> u64 {
        self.size.div_ceil(u64::from(self.chunk_size)).max(1)
    }

    /// Whether `index` is the last chunk.
    pub fn is_last(&self, index: u64) -> bool {
        index == self.chunk_count() - 1
    }

    fn check_index(&self, index: u64) -> Result<(), BlobError> {
        let count = self.chunk_count();
        if index >= count {
            return Err(BlobError::NoSuchChunk { index, count });
        }
        Ok(())
    }

    /// Plaintext length of chunk `index`.
    pub fn plain_len(&self, index: u64) -> Result<usize, BlobError> {
        self.check_index(index)?;
        let start = self.plain_offset(index);
        let len = (self.size - start).min(u64::from(self.chunk_size));
        // At most MAX_CHUNK_SIZE, so it fits any usize.
        Ok(len as usize)
    }

    /// Encrypted length of chunk `index`: its plaintext length + [`TAG_LEN`].
    pub fn cipher_len(&self, index: u64) -> Result<usize, BlobError> {
        Ok(self.plain_len(index)? + TAG_LEN)
    }

    /// Where chunk `index` starts in the plaintext (saturating for absurd indexes).
    pub fn plain_offset(&self, index: u64) -> u64 {
        index.saturating_mul(u64::from(self.chunk_size))
    }

    /// Where chunk `index` starts in the ciphertext (saturating for absurd indexes).
    pub fn cipher_offset(&self, index: u64) -> u64 {
        index.saturating_mul(u64::from(self.chunk_size) + TAG_LEN as u64)
    }

    /// Total ciphertext length: the size plus one tag per chunk.
    pub fn cipher_size(&self) -> u64 {
        self.size + self.chunk_count() * TAG_LEN as u64
    }

    /// The chunk holding plaintext byte `offset`; offsets at or past the end map to the last
    /// chunk.
    pub fn chunk_of_plain_offset(&self, offset: u64) -> u64 {
        (offset / u64::from(self.chunk_size)).min(self.chunk_count() - 1)
    }

    /// How many whole chunks a plaintext prefix of `len` bytes holds: where a download that
    /// has written `len` verified bytes resumes (equal to [`Self::chunk_count`] when done).
    pub fn chunks_in_plain_prefix(&self, len: u64) -> u64 {
        if len >= self.size {
            self.chunk_count()
        } else {
            len / u64::from(self.chunk_size)
        }
    }

    /// How many whole chunks a ciphertext prefix of `len` bytes holds (a store peer's resume
    /// point; equal to [`Self::chunk_count`] when complete).
    pub fn chunks_in_cipher_prefix(&self, len: u64) -> u64 {
        if len >= self.cipher_size() {
            self.chunk_count()
        } else {
            len / (u64::from(self.chunk_size) + TAG_LEN as u64)
        }
    }

    /// The 12-byte nonce of chunk `index`: `index u64 LE ‖ is_last ‖ 00 00 00`.
    fn nonce(&self, index: u64) -> [u8; 12] {
        let mut n = [0u8; 12];
        n[..8].copy_from_slice(&index.to_le_bytes());
        n[8] = u8::from(self.is_last(index));
        n
    }

    /// The associated data of chunk `index`:
    /// `"kith-blob-v1" ‖ size u64 LE ‖ chunk_size u32 LE ‖ index u64 LE ‖ is_last u8` (33 bytes).
    fn aad(&self, index: u64) -> [u8; 33] {
        let mut a = [0u8; 33];
        a[..12].copy_from_slice(BLOB_AAD_LABEL);
        a[12..20].copy_from_slice(&self.size.to_le_bytes());
        a[20..24].copy_from_slice(&self.chunk_size.to_le_bytes());
        a[24..32].copy_from_slice(&index.to_le_bytes());
        a[32] = u8::from(self.is_last(index));
        a
    }
}

/// Encrypts plaintext chunk `index` (exactly [`BlobLayout::plain_len`] bytes).
pub fn seal_chunk(
    key: &BlobKey,
    layout: &BlobLayout,
    index: u64,
    plain: &[u8],
) -> Result<Vec<u8>, BlobError> {
    let expected = layout.plain_len(index)?;
    if plain.len() != expected {
        return Err(BlobError::Length {
            index,
            expected: expected as u64,
            got: plain.len() as u64,
        });
    }
    let cipher = ChaCha20Poly1305::new((&key.0).into());
    let aad = layout.aad(index);
    cipher
        .encrypt(
            &layout.nonce(index).into(),
            AeadPayload {
                msg: plain,
                aad: &aad,
            },
        )
        // Fails only for messages past 256 GiB; chunks are at most MAX_CHUNK_SIZE.
        .map_err(|_| BlobError::Corrupt { index })
}

/// Decrypts and verifies encrypted chunk `index`. A wrong length, a changed byte, a chunk from
/// another position, another blob or another claimed size: [`BlobError::Corrupt`].
pub fn open_chunk(
    key: &BlobKey,
    layout: &BlobLayout,
    index: u64,
    cipher: &[u8],
) -> Result<Vec<u8>, BlobError> {
    let expected = layout.cipher_len(index)?;
    if cipher.len() != expected {
        return Err(BlobError::Corrupt { index });
    }
    let aead = ChaCha20Poly1305::new((&key.0).into());
    let aad = layout.aad(index);
    aead.decrypt(
        &layout.nonce(index).into(),
        AeadPayload {
            msg: cipher,
            aad: &aad,
        },
    )
    .map_err(|_| BlobError::Corrupt { index })
}

/// Streaming BLAKE2s-256 over a ciphertext, so a large blob is never buffered whole.
#[derive(Clone, Default)]
pub struct BlobHasher(Blake2s256);

impl BlobHasher {
    /// An empty hasher.
    pub fn new() -> Self {
        BlobHasher(Blake2s256::new())
    }

    /// Feeds the next ciphertext bytes (any split; chunks in order).
    pub fn update(&mut self, cipher_bytes: &[u8]) {
        Digest::update(&mut self.0, cipher_bytes);
    }

    /// The hash of everything fed.
    pub fn finish(self) -> BlobHash {
        BlobHash(self.0.finalize().into())
    }
}

impl fmt::Debug for BlobHasher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("BlobHasher")
    }
}

/// Encrypts a whole in-memory plaintext (small files, tests): the layout, the ciphertext and
/// its hash. Large files go chunk by chunk with [`seal_chunk`] and [`BlobHasher`].
pub fn seal_blob(
    key: &BlobKey,
    chunk_size: u32,
    plain: &[u8],
) -> Result<(BlobLayout, Vec<u8>, BlobHash), BlobError> {
    let layout = BlobLayout::new(plain.len() as u64, chunk_size)?;
    let mut out = Vec::with_capacity(usize::try_from(layout.cipher_size()).unwrap_or(0));
    for index in 0..layout.chunk_count() {
        let start = layout.plain_offset(index) as usize;
        let end = start + layout.plain_len(index)?;
        out.extend_from_slice(&seal_chunk(key, &layout, index, &plain[start..end])?);
    }
    let hash = BlobHash::of(&out);
    Ok((layout, out, hash))
}

/// Checks the hash of a whole in-memory ciphertext and decrypts every chunk.
pub fn open_blob(
    key: &BlobKey,
    layout: &BlobLayout,
    hash: &BlobHash,
    cipher: &[u8],
) -> Result<Vec<u8>, BlobError> {
    if cipher.len() as u64 != layout.cipher_size() {
        return Err(BlobError::Length {
            index: layout.chunk_count() - 1,
            expected: layout.cipher_size(),
            got: cipher.len() as u64,
        });
    }
    let got = BlobHash::of(cipher);
    if got != *hash {
        return Err(BlobError::HashMismatch {
            expected: *hash,
            got,
        });
    }
    let mut out = Vec::with_capacity(usize::try_from(layout.size).unwrap_or(0));
    for index in 0..layout.chunk_count() {
        let start = layout.cipher_offset(index) as usize;
        let end = start + layout.cipher_len(index)?;
        out.extend_from_slice(&open_chunk(key, layout, index, &cipher[start..end])?);
    }
    Ok(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;
