//! Safety numbers: what two users compare (read aloud, or scan as a QR code) to make sure
//! each holds the other's real identity key, and so that no one sits between them.
//!
//! The construction is Signal's numeric fingerprint with Kith's keys (`protocol/README.md`
//! §21): per party, SHA-512 iterated [`ITERATIONS`] times over the identity key and the user
//! id; 30 digits from each; the two halves sorted, so both sides compute the same 60 digits
//! whoever asks. Pure: no state, no randomness.

use sha2::{Digest, Sha512};

use crate::UserId;

/// The version of the construction, hashed first (2 bytes, big-endian).
pub const SAFETY_VERSION: u16 = 0;

/// How many times each party's hash is iterated: Signal's figure, so that grinding for a key
/// whose number resembles another's costs about 2¹² hashes more per try.
pub const ITERATIONS: usize = 5200;

/// Digits per party.
pub const PARTY_DIGITS: usize = 30;

/// Digits in a group as shown.
pub const GROUP_DIGITS: usize = 5;

/// The prefix of [`SafetyNumber::qr_payload`].
pub const QR_PREFIX: &str = "kith-safety:0:";

/// A conversation's safety number: 60 digits, the same on both sides.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct SafetyNumber(String);

impl SafetyNumber {
    /// The safety number of the conversation between `a` and `b`, in either order.
    pub fn of(a: &UserId, b: &UserId) -> Self {
        let (x, y) = (party_digits(a), party_digits(b));
        let (first, second) = if x <= y { (x, y) } else { (y, x) };
        SafetyNumber(first + &second)
    }

    /// The 60 digits, without spaces.
    pub fn digits(&self) -> &str {
        &self.0
    }

    /// The 12 groups of 5 digits as shown.
    pub fn groups(&self) -> Vec<String> {
        self.0
            .as_bytes()
            .chunks(GROUP_DIGITS)
            .map(|c| String::from_utf8_lossy(c).into_owned())
            .collect()
    }

    /// The text a QR code carries: [`QR_PREFIX`] ‖ the 60 digits.
    pub fn qr_payload(&self) -> String {
        format!("{QR_PREFIX}{}", self.0)
    }
}

impl std::fmt::Display for SafetyNumber {
    /// The 12 groups separated by spaces.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.groups().join(" "))
    }
}

/// The Ed25519 identity key inside a user id: its last 32 bytes (README §2).
pub fn identity_key(user: &UserId) -> [u8; 32] {
    let bytes = user.to_bytes();
    let mut key = [0u8; 32];
    key.copy_from_slice(&bytes[bytes.len().saturating_sub(32)..]);
    key
}

/// One party's 30 digits: `h = SHA-512(version ‖ key ‖ id)`, then `ITERATIONS` times
/// `h = SHA-512(h ‖ key)`; bytes 0..30 of `h` in six 5-byte chunks, each a big-endian
/// number taken mod 100000 and written as 5 digits.
pub fn party_digits(user: &UserId) -> String {
    let key = identity_key(user);
    let mut hasher = Sha512::new();
    hasher.update(SAFETY_VERSION.to_be_bytes());
    hasher.update(key);
    hasher.update(user.to_bytes());
    let mut hash = hasher.finalize();
    for _ in 0..ITERATIONS {
        let mut hasher = Sha512::new();
        hasher.update(hash);
        hasher.update(key);
        hash = hasher.finalize();
    }
    let mut out = String::with_capacity(PARTY_DIGITS);
    for chunk in hash[..PARTY_DIGITS].chunks(5) {
        let n = chunk.iter().fold(0u64, |acc, b| (acc << 8) | u64::from(*b));
        out.push_str(&format!("{:05}", n % 100_000));
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use rand_chacha::ChaCha20Rng;
    use rand_core::SeedableRng;

    use super::*;
    use crate::LocalIdentity;

    fn user(byte: u8) -> UserId {
        LocalIdentity::from_ed25519_secret([byte; 32], 0, &mut ChaCha20Rng::seed_from_u64(1))
            .user_id()
    }

    #[test]
    fn both_sides_compute_the_same_number() {
        let (a, b) = (user(1), user(2));
        assert_eq!(SafetyNumber::of(&a, &b), SafetyNumber::of(&b, &a));
        let n = SafetyNumber::of(&a, &b);
        assert_eq!(n.digits().len(), 60);
        assert!(n.digits().bytes().all(|c| c.is_ascii_digit()));
        assert_eq!(n.groups().len(), 12);
        assert!(n.groups().iter().all(|g| g.len() == 5));
        assert_eq!(n.to_string().len(), 60 + 11);
    }

    #[test]
    fn another_key_gives_another_number() {
        let (a, b, c) = (user(1), user(2), user(3));
        assert_ne!(SafetyNumber::of(&a, &b), SafetyNumber::of(&a, &c));
        // Each party's half is its own: a's half appears in both.
        let half = party_digits(&a);
        assert!(SafetyNumber::of(&a, &b).digits().contains(&half));
        assert!(SafetyNumber::of(&a, &c).digits().contains(&half));
    }

    #[test]
    fn the_identity_key_is_the_tail_of_the_user_id() {
        let me = LocalIdentity::from_ed25519_secret([7; 32], 0, &mut ChaCha20Rng::seed_from_u64(1));
        assert_eq!(identity_key(&me.user_id()), me.bundle().identity_key);
    }
}
