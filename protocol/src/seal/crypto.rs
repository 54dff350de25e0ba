//! The primitives under the seal: the chain's KDF, the per-message AEAD, and the Noise
//! builder whose randomness comes from the caller.
//!
//! Nothing here knows about sessions or bundles; it must never hold state between calls.

use blake2::{digest::Mac, Blake2sMac256};
use chacha20poly1305::{aead::Aead, aead::Payload as AeadPayload, ChaCha20Poly1305, KeyInit};
use rand_chacha::ChaCha20Rng;
use rand_core::{RngCore, SeedableRng};
use snow::{
    params::{CipherChoice, DHChoice, HashChoice, NoiseParams},
    resolvers::{CryptoResolver, DefaultResolver},
    types::{Cipher, Dh, Hash, Random},
};

use super::error::OpenError;
use crate::envelope::{EnvelopeHeader, SessionId};

/// The Noise protocol name of a first message.
pub const NOISE_PATTERN: &str = "Noise_X_25519_ChaChaPoly_BLAKE2s";

/// Key-derivation labels (one byte each, the input of keyed BLAKE2s).
pub(super) mod label {
    pub(crate) const SESSION_ID: u8 = 0x00;
    pub(crate) const MESSAGE_KEY: u8 = 0x01;
    pub(crate) const CHAIN_KEY: u8 = 0x02;
}

pub(super) fn noise_builder(seed: [u8; 32]) -> Result<snow::Builder<'static>, snow::Error> {
    let params: NoiseParams = NOISE_PATTERN.parse()?;
    Ok(snow::Builder::with_resolver(
        params,
        Box::new(SeededResolver { seed }),
    ))
}

/// Keyed BLAKE2s-256 (RFC 7693) of one label byte: the KDF of the chain.
pub(super) fn kdf(key: &[u8; 32], label: u8) -> [u8; 32] {
    match <Blake2sMac256 as Mac>::new_from_slice(key) {
        Ok(mut mac) => {
            mac.update(&[label]);
            mac.finalize().into_bytes().into()
        }
        Err(_) => unreachable!("BLAKE2s accepts 32-byte keys"),
    }
}

/// `(message key n, chain key n+1)` from chain key n.
pub(super) fn chain_step(chain_key: &[u8; 32]) -> ([u8; 32], [u8; 32]) {
    (
        kdf(chain_key, label::MESSAGE_KEY),
        kdf(chain_key, label::CHAIN_KEY),
    )
}

pub(super) fn session_id(seed: &[u8; 32]) -> SessionId {
    let full = kdf(seed, label::SESSION_ID);
    let mut id = [0u8; 16];
    id.copy_from_slice(&full[..16]);
    SessionId(id)
}

/// `prologue ‖ session id ‖ n (8 bytes big-endian)`.
pub(super) fn session_aad(header: &EnvelopeHeader, session: &SessionId, n: u64) -> Vec<u8> {
    let mut aad = header.prologue();
    aad.extend_from_slice(&session.0);
    aad.extend_from_slice(&n.to_be_bytes());
    aad
}

pub(super) fn aead_seal(key: &[u8; 32], aad: &[u8], msg: &[u8]) -> Vec<u8> {
    let cipher = ChaCha20Poly1305::new(key.into());
    // Each message key is used exactly once, so a zero nonce is safe.
    match cipher.encrypt(&[0u8; 12].into(), AeadPayload { msg, aad }) {
        Ok(ct) => ct,
        Err(_) => unreachable!("ChaCha20-Poly1305 encryption fails only past 256 GiB"),
    }
}

pub(super) fn aead_open(key: &[u8; 32], aad: &[u8], ct: &[u8]) -> Result<Vec<u8>, OpenError> {
    let cipher = ChaCha20Poly1305::new(key.into());
    cipher
        .decrypt(&[0u8; 12].into(), AeadPayload { msg: ct, aad })
        .map_err(|_| OpenError::Tampered)
}

/// snow's default primitives with an RNG seeded by the caller, so that sealing takes its
/// randomness from the caller like everything else in this crate.
struct SeededResolver {
    seed: [u8; 32],
}

struct SeededRandom(ChaCha20Rng);

impl Random for SeededRandom {
    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), snow::Error> {
        self.0.fill_bytes(dest);
        Ok(())
    }
}

impl CryptoResolver for SeededResolver {
    fn resolve_rng(&self) -> Option<Box<dyn Random>> {
        Some(Box::new(SeededRandom(ChaCha20Rng::from_seed(self.seed))))
    }
    fn resolve_dh(&self, choice: &DHChoice) -> Option<Box<dyn Dh>> {
        DefaultResolver.resolve_dh(choice)
    }
    fn resolve_hash(&self, choice: &HashChoice) -> Option<Box<dyn Hash>> {
        DefaultResolver.resolve_hash(choice)
    }
    fn resolve_cipher(&self, choice: &CipherChoice) -> Option<Box<dyn Cipher>> {
        DefaultResolver.resolve_cipher(choice)
    }
}
