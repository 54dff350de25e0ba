//! Why sealing or opening failed: one error type per operation, so the node can log and
//! count each rejection.

use crate::{codec, identity::BundleError, UserId};

/// Why a message could not be sealed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SealError {
    /// The recipient's bundle does not verify or is not the recipient's.
    #[error("recipient bundle rejected: {0}")]
    BadBundle(#[from] BundleError),
    /// The plaintext does not fit in one Noise message.
    #[error("message too large to seal ({len} bytes, max {max})")]
    TooLarge {
        /// Encoded payload size.
        len: usize,
        /// Largest that fits.
        max: usize,
    },
    /// Encoding failed.
    #[error(transparent)]
    Codec(#[from] codec::CodecError),
    /// Noise failed (a bug or an invalid key).
    #[error("noise: {0}")]
    Noise(#[from] snow::Error),
}

/// Why a sealed body could not be opened. Each rejection has its own variant so that the
/// node can log it and count it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    /// The envelope is addressed to someone else.
    #[error("envelope is addressed to {0}, not to us")]
    Misaddressed(UserId),
    /// The body is shorter than the smallest valid body.
    #[error("sealed body is truncated")]
    Truncated,
    /// Authentication failed: the body or a routing field was changed, or it was sealed to
    /// other keys.
    #[error("sealed body failed authentication (tampered or re-addressed)")]
    Tampered,
    /// A message (or handshake) that was already opened.
    #[error("sealed body was already opened (replay or duplicate)")]
    Replayed,
    /// The prekey it was sealed to is unknown or already deleted.
    #[error("prekey {0} is unknown or retired")]
    UnknownPrekey(u32),
    /// No session with that id (never started, or dropped).
    #[error("unknown session")]
    UnknownSession,
    /// The message number is further ahead than [`MAX_SKIP`](super::MAX_SKIP).
    #[error("message number {n} is too far ahead of {next}")]
    TooFarAhead {
        /// Its number.
        n: u64,
        /// The next expected number.
        next: u64,
    },
    /// The sender's bundle does not verify or does not match the Noise static key.
    #[error("sender authentication failed: {0}")]
    ForgedSender(String),
    /// The decrypted contents are not a valid payload.
    #[error("malformed contents: {0}")]
    Malformed(#[from] codec::CodecError),
}
