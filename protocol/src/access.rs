//! Who may use a mailbox: the recipient names its store peers and holds the key to its inbox.
//!
//! A store peer is not chosen by how close its id is to the recipient's (ids are free to
//! grind) but by the recipient, who names at most [`MAX_MAILBOX_PEERS`] store peers in its
//! signed [`crate::KeyBundle`] and registers with each of them a signed
//! [`MailboxRegistration`]: the list of named peers and the verifier of its
//! [`MailboxAccessKey`]. A store peer holds a mailbox only if the registration names it,
//! accepts replicas only from the other named peers, and repairs towards them.
//!
//! The access key works like Signal's unidentified-access key: the recipient gives it to its
//! contacts inside the end-to-end channel (and in its invite). A deposit that carries it is
//! charged to the mailbox's normal quota; one without it only reaches a small, separately
//! capped "requests" allowance, so a stranger can still write once but cannot fill the
//! mailbox. Presence that is visible to contacts only is served only against the key. The
//! store peer keeps only the verifier, so it cannot deposit or ask as a contact itself.

use std::fmt;

use blake2::{Blake2s256, Digest};
use rand_core::CryptoRngCore;
use serde::{Deserialize, Serialize};

use crate::{codec, LocalIdentity, UserId};

/// Most store peers a recipient names for its mailbox.
pub const MAX_MAILBOX_PEERS: usize = 8;

/// Most addresses given for one named store peer.
pub const MAX_PEER_ADDRS: usize = 4;

/// Longest address (a multiaddr in text form) of a named store peer, in bytes.
pub const MAX_ADDR_LEN: usize = 128;

/// Domain separation of the verifier hash.
const VERIFIER_CONTEXT: &[u8] = b"kith-access/1\0";

/// Domain separation of registration signatures.
const REGISTRATION_SIGNING_CONTEXT: &[u8] = b"kith-mailbox-registration/1\0";

/// The secret a recipient's contacts present to deposit into its mailbox's normal quota and
/// to read its contacts-only presence.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct MailboxAccessKey(pub [u8; 32]);

impl fmt::Debug for MailboxAccessKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MailboxAccessKey(..)")
    }
}

impl MailboxAccessKey {
    /// A fresh random key.
    pub fn generate(rng: &mut impl CryptoRngCore) -> Self {
        let mut key = [0u8; 32];
        rng.fill_bytes(&mut key);
        MailboxAccessKey(key)
    }

    /// What a store peer keeps to check this key: `BLAKE2s("kith-access/1\0" ‖ key)`.
    pub fn verifier(&self) -> AccessVerifier {
        let mut hash = Blake2s256::new();
        hash.update(VERIFIER_CONTEXT);
        hash.update(self.0);
        AccessVerifier(hash.finalize().into())
    }
}

/// The hash of a [`MailboxAccessKey`]: enough to check a key, useless to present one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct AccessVerifier(pub [u8; 32]);

impl AccessVerifier {
    /// Whether `key` is the key this verifies, compared in constant time.
    pub fn accepts(&self, key: &MailboxAccessKey) -> bool {
        let other = key.verifier();
        let diff = self
            .0
            .iter()
            .zip(other.0.iter())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b));
        diff == 0
    }
}

/// A store peer a recipient names for its mailbox, with where to reach it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct MailboxPeer {
    /// The store peer's libp2p identity.
    pub peer: UserId,
    /// Its addresses as multiaddr text (at most [`MAX_PEER_ADDRS`], each at most
    /// [`MAX_ADDR_LEN`] bytes); a sender may also find it through the DHT.
    pub addrs: Vec<String>,
}

/// Why a list of named store peers or a registration is invalid.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum AccessError {
    /// More store peers than [`MAX_MAILBOX_PEERS`].
    #[error("{0} mailbox store peers named, at most {MAX_MAILBOX_PEERS} allowed")]
    TooManyPeers(usize),
    /// The same store peer named twice.
    #[error("a mailbox store peer is named twice")]
    DuplicatePeer,
    /// Too many or too long addresses for one store peer.
    #[error("a mailbox store peer's addresses are over the limits")]
    AddrsTooLong,
    /// The registration's signature does not verify against its owner's key.
    #[error("mailbox registration signature does not verify")]
    BadSignature,
}

/// Checks the limits of a list of named store peers.
pub fn check_peers(peers: &[MailboxPeer]) -> Result<(), AccessError> {
    if peers.len() > MAX_MAILBOX_PEERS {
        return Err(AccessError::TooManyPeers(peers.len()));
    }
    for (i, p) in peers.iter().enumerate() {
        if peers[..i].iter().any(|q| q.peer == p.peer) {
            return Err(AccessError::DuplicatePeer);
        }
        if p.addrs.len() > MAX_PEER_ADDRS || p.addrs.iter().any(|a| a.len() > MAX_ADDR_LEN) {
            return Err(AccessError::AddrsTooLong);
        }
    }
    Ok(())
}

/// A recipient's signed instruction to its store peers: these peers hold my mailbox, and
/// this is the verifier of my access key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MailboxRegistration {
    /// Whose mailbox.
    pub owner: UserId,
    /// The store peers named for it (at most [`MAX_MAILBOX_PEERS`]).
    pub peers: Vec<UserId>,
    /// The verifier of the owner's current access key.
    pub verifier: AccessVerifier,
    /// When the owner issued it, unix milliseconds; a store peer keeps the newest.
    pub issued_at_ms: u64,
    /// Ed25519 signature by the owner over
    /// `"kith-mailbox-registration/1\0" ‖ bincode(owner, peers, verifier, issued_at_ms)`.
    #[serde(with = "serde_bytes")]
    pub signature: Vec<u8>,
}

#[derive(Serialize)]
struct UnsignedRegistration<'a> {
    owner: &'a UserId,
    peers: &'a [UserId],
    verifier: &'a AccessVerifier,
    issued_at_ms: u64,
}

impl UnsignedRegistration<'_> {
    fn signing_bytes(&self) -> Vec<u8> {
        let mut out = REGISTRATION_SIGNING_CONTEXT.to_vec();
        // At most MAX_MAILBOX_PEERS ids: always encodes; an empty tail would not verify.
        let _ = codec::encode_into(self, &mut out);
        out
    }
}

impl MailboxRegistration {
    /// `me`'s registration naming `peers`, with `key`'s verifier, issued at `now_ms`.
    pub fn new(
        me: &LocalIdentity,
        peers: Vec<UserId>,
        key: &MailboxAccessKey,
        now_ms: u64,
    ) -> Self {
        let owner = me.user_id();
        let verifier = key.verifier();
        let signature = me.sign(
            &UnsignedRegistration {
                owner: &owner,
                peers: &peers,
                verifier: &verifier,
                issued_at_ms: now_ms,
            }
            .signing_bytes(),
        );
        MailboxRegistration {
            owner,
            peers,
            verifier,
            issued_at_ms: now_ms,
            signature,
        }
    }

    /// Checks the limits and the owner's signature.
    pub fn verify(&self) -> Result<(), AccessError> {
        if self.peers.len() > MAX_MAILBOX_PEERS {
            return Err(AccessError::TooManyPeers(self.peers.len()));
        }
        for (i, p) in self.peers.iter().enumerate() {
            if self.peers[..i].contains(p) {
                return Err(AccessError::DuplicatePeer);
            }
        }
        let key = self
            .owner
            .public_key()
            .map_err(|_| AccessError::BadSignature)?;
        let unsigned = UnsignedRegistration {
            owner: &self.owner,
            peers: &self.peers,
            verifier: &self.verifier,
            issued_at_ms: self.issued_at_ms,
        };
        if key.verify(&unsigned.signing_bytes(), &self.signature) {
            Ok(())
        } else {
            Err(AccessError::BadSignature)
        }
    }

    /// Whether `peer` is named for this mailbox.
    pub fn names(&self, peer: &UserId) -> bool {
        self.peers.contains(peer)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use rand_chacha::{rand_core::SeedableRng, ChaCha20Rng};

    use super::*;

    fn identity(seed: u8) -> LocalIdentity {
        let mut rng = ChaCha20Rng::from_seed([seed; 32]);
        LocalIdentity::generate(1_000, &mut rng)
    }

    #[test]
    fn a_key_is_accepted_only_by_its_own_verifier() {
        let mut rng = ChaCha20Rng::from_seed([1; 32]);
        let a = MailboxAccessKey::generate(&mut rng);
        let b = MailboxAccessKey::generate(&mut rng);
        assert!(a.verifier().accepts(&a));
        assert!(!a.verifier().accepts(&b));
        assert_ne!(a.verifier().0, a.0, "the verifier is not the key");
    }

    #[test]
    fn a_registration_verifies_and_any_change_breaks_it() {
        let me = identity(2);
        let store = identity(3).user_id();
        let mut rng = ChaCha20Rng::from_seed([4; 32]);
        let key = MailboxAccessKey::generate(&mut rng);
        let reg = MailboxRegistration::new(&me, vec![store], &key, 5);
        reg.verify().unwrap();
        assert!(reg.names(&store));
        assert!(!reg.names(&me.user_id()));

        let mut added = reg.clone();
        added.peers.push(identity(9).user_id());
        assert_eq!(added.verify(), Err(AccessError::BadSignature));
        let mut older = reg.clone();
        older.issued_at_ms = 4;
        assert_eq!(older.verify(), Err(AccessError::BadSignature));
        let mut other_owner = reg.clone();
        other_owner.owner = store;
        assert_eq!(other_owner.verify(), Err(AccessError::BadSignature));
        let mut twice = MailboxRegistration::new(&me, vec![store, store], &key, 5);
        assert_eq!(twice.verify(), Err(AccessError::DuplicatePeer));
        twice.peers = vec![store; MAX_MAILBOX_PEERS + 1];
        assert!(matches!(twice.verify(), Err(AccessError::TooManyPeers(_))));
    }

    #[test]
    fn peer_lists_are_bounded() {
        let p = |seed| MailboxPeer {
            peer: identity(seed).user_id(),
            addrs: vec!["/ip4/127.0.0.1/tcp/1".into()],
        };
        check_peers(&[p(1), p(2)]).unwrap();
        assert_eq!(check_peers(&[p(1), p(1)]), Err(AccessError::DuplicatePeer));
        let mut long = p(3);
        long.addrs = vec!["x".repeat(MAX_ADDR_LEN + 1)];
        assert_eq!(check_peers(&[long]), Err(AccessError::AddrsTooLong));
        let mut many = p(4);
        many.addrs = vec![String::new(); MAX_PEER_ADDRS + 1];
        assert_eq!(check_peers(&[many]), Err(AccessError::AddrsTooLong));
    }
}
