//! The backup archive: a node's data sealed under a key derived from the user's passphrase,
//! so that a lost or stolen archive reads as noise without it.
//!
//! Layout (all integers big-endian):
//!
//! ```text
//! header  = "KITHBAK1" ‖ m_cost_kib u32 ‖ t_cost u32 ‖ lanes u32 ‖ salt [16] ‖ prefix [7] ‖ chunks u32
//! archive = header ‖ chunk₀ ‖ … ‖ chunkₙ₋₁
//! chunk_i = len u32 ‖ ChaCha20-Poly1305(key, nonce_i, aad = header, ≤ CHUNK_LEN bytes)
//! key     = Argon2id(passphrase, salt, m_cost_kib, t_cost, lanes) → 32 bytes
//! nonce_i = prefix ‖ i u32 ‖ (1 if i is the last chunk, else 0)
//! ```
//!
//! Every chunk authenticates the whole header (so the KDF cost and the chunk count cannot be
//! changed), its own position and whether it is the last (so chunks cannot be reordered,
//! dropped or the archive cut short). A wrong passphrase fails on the first chunk.
//! Opening refuses KDF costs above [`MAX_M_COST_KIB`] / [`MAX_T_COST`]: a hostile archive
//! cannot make the reader allocate gigabytes or spin for hours.

use argon2::{Algorithm, Argon2, Params, Version};
use chacha20poly1305::{
    aead::{Aead, KeyInit, Payload},
    ChaCha20Poly1305, Key, Nonce,
};

/// The archive's first bytes.
pub const MAGIC: &[u8; 8] = b"KITHBAK1";

/// Plaintext bytes per chunk.
pub const CHUNK_LEN: usize = 1 << 20;

/// Bytes of the header.
pub const HEADER_LEN: usize = 8 + 4 * 3 + 16 + 7 + 4;

/// The most memory a reader spends on the KDF, KiB (1 GiB).
pub const MAX_M_COST_KIB: u32 = 1 << 20;

/// The most KDF passes a reader runs.
pub const MAX_T_COST: u32 = 16;

/// The most KDF lanes a reader accepts.
pub const MAX_LANES: u32 = 8;

/// The cost of the passphrase-derived key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KdfCost {
    /// Memory, KiB.
    pub m_cost_kib: u32,
    /// Passes.
    pub t_cost: u32,
    /// Lanes.
    pub lanes: u32,
}

impl KdfCost {
    /// What `kith backup create` uses: 64 MiB, 3 passes, 1 lane (above OWASP's Argon2id
    /// minimum of 19 MiB and 2 passes; about a second on these machines).
    pub const DEFAULT: KdfCost = KdfCost {
        m_cost_kib: 64 * 1024,
        t_cost: 3,
        lanes: 1,
    };
}

/// Why an archive could not be made or opened.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum BackupError {
    /// The bytes are not a Kith backup (or one of a newer format).
    #[error("not a Kith backup (or one of a newer format)")]
    NotABackup,
    /// The archive asks for a KDF cost above the reader's limits.
    #[error("the backup asks for a key derivation above this reader's limits")]
    CostTooHigh,
    /// The passphrase is wrong (or the first chunk is damaged).
    #[error("wrong passphrase (or the backup is damaged)")]
    WrongPassphrase,
    /// A later chunk failed to open, or chunks are missing or extra.
    #[error("the backup is damaged or cut short")]
    Damaged,
    /// The passphrase is empty.
    #[error("the passphrase is empty")]
    EmptyPassphrase,
    /// The KDF refused its parameters.
    #[error("key derivation failed: {0}")]
    Kdf(String),
}

fn derive_key(passphrase: &[u8], salt: &[u8; 16], cost: KdfCost) -> Result<Key, BackupError> {
    let params = Params::new(cost.m_cost_kib, cost.t_cost, cost.lanes, Some(32))
        .map_err(|e| BackupError::Kdf(e.to_string()))?;
    let mut key = [0u8; 32];
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
        .hash_password_into(passphrase, salt, &mut key)
        .map_err(|e| BackupError::Kdf(e.to_string()))?;
    Ok(Key::from(key))
}

fn nonce(prefix: &[u8; 7], i: u32, last: bool) -> Nonce {
    let mut n = [0u8; 12];
    n[..7].copy_from_slice(prefix);
    n[7..11].copy_from_slice(&i.to_be_bytes());
    n[11] = u8::from(last);
    Nonce::from(n)
}

/// Seals `plaintext` under `passphrase`. `salt` and `prefix` must be fresh random bytes.
pub fn seal(
    plaintext: &[u8],
    passphrase: &[u8],
    cost: KdfCost,
    salt: [u8; 16],
    prefix: [u8; 7],
) -> Result<Vec<u8>, BackupError> {
    if passphrase.is_empty() {
        return Err(BackupError::EmptyPassphrase);
    }
    let chunks: Vec<&[u8]> = if plaintext.is_empty() {
        vec![&[][..]]
    } else {
        plaintext.chunks(CHUNK_LEN).collect()
    };
    let count = u32::try_from(chunks.len()).map_err(|_| BackupError::Damaged)?;
    let mut out = Vec::with_capacity(HEADER_LEN + plaintext.len() + chunks.len() * 20);
    out.extend_from_slice(MAGIC);
    for v in [cost.m_cost_kib, cost.t_cost, cost.lanes] {
        out.extend_from_slice(&v.to_be_bytes());
    }
    out.extend_from_slice(&salt);
    out.extend_from_slice(&prefix);
    out.extend_from_slice(&count.to_be_bytes());
    let header = out.clone();
    let cipher = ChaCha20Poly1305::new(&derive_key(passphrase, &salt, cost)?);
    for (i, chunk) in chunks.iter().enumerate() {
        let i = i as u32;
        let sealed = cipher
            .encrypt(
                &nonce(&prefix, i, i + 1 == count),
                Payload {
                    msg: chunk,
                    aad: &header,
                },
            )
            .map_err(|_| BackupError::Damaged)?;
        out.extend_from_slice(&(sealed.len() as u32).to_be_bytes());
        out.extend_from_slice(&sealed);
    }
    Ok(out)
}

/// A big-endian u32 at `at` in `bytes`.
fn u32_at(bytes: &[u8], at: usize) -> Option<u32> {
    let b: [u8; 4] = bytes.get(at..at + 4)?.try_into().ok()?;
    Some(u32::from_be_bytes(b))
}

/// Opens an archive made by [`seal`].
pub fn open(archive: &[u8], passphrase: &[u8]) -> Result<Vec<u8>, BackupError> {
    if archive.len() < HEADER_LEN || &archive[..8] != MAGIC {
        return Err(BackupError::NotABackup);
    }
    let field = |at| u32_at(archive, at).ok_or(BackupError::NotABackup);
    let cost = KdfCost {
        m_cost_kib: field(8)?,
        t_cost: field(12)?,
        lanes: field(16)?,
    };
    if cost.m_cost_kib > MAX_M_COST_KIB || cost.t_cost > MAX_T_COST || cost.lanes > MAX_LANES {
        return Err(BackupError::CostTooHigh);
    }
    let mut salt = [0u8; 16];
    salt.copy_from_slice(&archive[20..36]);
    let mut prefix = [0u8; 7];
    prefix.copy_from_slice(&archive[36..43]);
    let count = field(43)?;
    let header = &archive[..HEADER_LEN];
    let cipher = ChaCha20Poly1305::new(&derive_key(passphrase, &salt, cost)?);
    let mut out = Vec::new();
    let mut at = HEADER_LEN;
    for i in 0..count {
        let len = u32_at(archive, at).ok_or(BackupError::Damaged)? as usize;
        if len > CHUNK_LEN + 16 {
            return Err(BackupError::Damaged);
        }
        let sealed = archive
            .get(at + 4..at + 4 + len)
            .ok_or(BackupError::Damaged)?;
        let opened = cipher
            .decrypt(
                &nonce(&prefix, i, i + 1 == count),
                Payload {
                    msg: sealed,
                    aad: header,
                },
            )
            .map_err(|_| {
                if i == 0 {
                    BackupError::WrongPassphrase
                } else {
                    BackupError::Damaged
                }
            })?;
        out.extend_from_slice(&opened);
        at += 4 + len;
    }
    if at != archive.len() || count == 0 {
        return Err(BackupError::Damaged);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A cheap cost: the tests check the format, not the KDF's strength.
    const CHEAP: KdfCost = KdfCost {
        m_cost_kib: 64,
        t_cost: 1,
        lanes: 1,
    };

    fn sealed(len: usize) -> (Vec<u8>, Vec<u8>) {
        let plain: Vec<u8> = (0..len).map(|i| (i * 7) as u8).collect();
        let archive = seal(&plain, b"correct horse", CHEAP, [1; 16], [2; 7]).expect("seal");
        (plain, archive)
    }

    #[test]
    fn round_trips_at_every_chunk_boundary() {
        for len in [
            0,
            1,
            CHUNK_LEN - 1,
            CHUNK_LEN,
            CHUNK_LEN + 1,
            2 * CHUNK_LEN + 5,
        ] {
            let (plain, archive) = sealed(len);
            assert_eq!(
                open(&archive, b"correct horse").expect("open"),
                plain,
                "len {len}"
            );
        }
    }

    #[test]
    fn a_wrong_passphrase_is_told_apart_from_damage() {
        let (_, archive) = sealed(3 * CHUNK_LEN);
        assert_eq!(open(&archive, b"wrong"), Err(BackupError::WrongPassphrase));
        // A flipped byte in the second chunk, a chunk dropped, the tail cut, bytes added.
        let mut flipped = archive.clone();
        let second = HEADER_LEN + 4 + CHUNK_LEN + 16 + 10;
        flipped[second] ^= 1;
        assert_eq!(open(&flipped, b"correct horse"), Err(BackupError::Damaged));
        let cut = &archive[..archive.len() - 1];
        assert_eq!(open(cut, b"correct horse"), Err(BackupError::Damaged));
        let mut extra = archive.clone();
        extra.push(0);
        assert_eq!(open(&extra, b"correct horse"), Err(BackupError::Damaged));
        // A header changed (the chunk count) fails every chunk's authentication.
        let mut fewer = archive.clone();
        fewer[HEADER_LEN - 1] = 2;
        assert!(open(&fewer, b"correct horse").is_err());
    }

    #[test]
    fn hostile_headers_are_refused_before_any_work() {
        assert_eq!(
            open(b"not a backup at all, really", b"x"),
            Err(BackupError::NotABackup)
        );
        let (_, mut archive) = sealed(10);
        archive[8..12].copy_from_slice(&u32::MAX.to_be_bytes());
        assert_eq!(
            open(&archive, b"correct horse"),
            Err(BackupError::CostTooHigh)
        );
        assert_eq!(
            seal(b"x", b"", CHEAP, [0; 16], [0; 7]),
            Err(BackupError::EmptyPassphrase)
        );
    }
}
