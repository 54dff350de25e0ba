//! The local user's keys, and the signed key bundle others seal to.
//!
//! A user has three kinds of keys:
//! - the **identity key** (Ed25519): their [`UserId`]; it signs bundles and presence records;
//! - the **static key** (X25519, long-lived): the Noise `s` they send with when they start a
//!   session, which proves to the recipient who is writing;
//! - **prekeys** (X25519, rotated weekly by default): the Noise responder key others seal to
//!   while this user may be offline. A retired prekey's private half is kept for a grace window
//!   (messages sealed to it may still sit in a mailbox), then deleted, so stealing the device
//!   later does not open those old first messages.

use std::fmt;

use libp2p_identity::ed25519;
use rand_core::CryptoRngCore;
use serde::{Deserialize, Serialize};
use snow::{
    params::DHChoice,
    resolvers::{CryptoResolver, DefaultResolver},
};

use crate::{
    access::{check_peers, AccessError, MailboxPeer},
    codec, UserId,
};

/// Domain separation for bundle signatures, so a bundle signature can never be replayed as a
/// signature over anything else.
/// Version 2 added the named mailbox store peers and the issue time.
const BUNDLE_SIGNING_CONTEXT: &[u8] = b"kith-bundle/2\0";

/// How prekeys rotate and how long retired ones stay usable.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PrekeyPolicy {
    /// How long a prekey is the current one before a new one replaces it (default 7 days).
    pub rotation_ms: u64,
    /// How long a retired prekey's private half is kept after it stopped being current
    /// (default 35 days: the 30-day mailbox lifetime plus margin, so every message that a store
    /// peer may still deliver can be opened).
    pub grace_ms: u64,
    /// At most this many retired prekeys are kept, whatever their age (default 8).
    pub max_retired: usize,
}

const DAY_MS: u64 = 24 * 60 * 60 * 1000;

impl Default for PrekeyPolicy {
    fn default() -> Self {
        PrekeyPolicy {
            rotation_ms: 7 * DAY_MS,
            grace_ms: 35 * DAY_MS,
            max_retired: 8,
        }
    }
}

/// One X25519 prekey with its private half.
#[derive(Clone, Serialize, Deserialize)]
pub struct PrekeySecret {
    /// Number naming this prekey in bundles and handshake bodies; increases by one per rotation.
    pub id: u32,
    /// When it became current, in unix milliseconds.
    pub created_at_ms: u64,
    /// The X25519 private key.
    pub private: [u8; 32],
    /// The X25519 public key.
    pub public: [u8; 32],
}

impl fmt::Debug for PrekeySecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PrekeySecret")
            .field("id", &self.id)
            .field("created_at_ms", &self.created_at_ms)
            .finish_non_exhaustive()
    }
}

impl PrekeySecret {
    fn generate(id: u32, now_ms: u64, rng: &mut impl CryptoRngCore) -> Self {
        let (private, public) = generate_x25519(rng);
        PrekeySecret {
            id,
            created_at_ms: now_ms,
            private,
            public,
        }
    }

    /// The public half, as published in the bundle.
    pub fn to_public(&self) -> Prekey {
        Prekey {
            id: self.id,
            created_at_ms: self.created_at_ms,
            public: self.public,
        }
    }
}

/// The current prekey and the retired ones still inside their grace window.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PrekeyRing {
    current: PrekeySecret,
    /// Retired prekeys with the time they were retired, oldest first.
    retired: Vec<(PrekeySecret, u64)>,
}

impl PrekeyRing {
    /// A ring with one fresh prekey (id 1).
    pub fn new(now_ms: u64, rng: &mut impl CryptoRngCore) -> Self {
        PrekeyRing {
            current: PrekeySecret::generate(1, now_ms, rng),
            retired: Vec::new(),
        }
    }

    /// The prekey others should seal to now.
    pub fn current(&self) -> &PrekeySecret {
        &self.current
    }

    /// The prekey named `id`, current or retired, if its private half still exists.
    pub fn find(&self, id: u32) -> Option<&PrekeySecret> {
        if self.current.id == id {
            return Some(&self.current);
        }
        self.retired.iter().map(|(k, _)| k).find(|k| k.id == id)
    }

    /// Ids of the retired prekeys still kept, oldest first.
    pub fn retired_ids(&self) -> Vec<u32> {
        self.retired.iter().map(|(k, _)| k.id).collect()
    }

    /// Rotates when the current prekey is older than the policy allows and deletes retired
    /// prekeys past their grace window. Returns whether the current prekey changed (the caller
    /// then republishes its bundle).
    pub fn maintain(
        &mut self,
        now_ms: u64,
        policy: &PrekeyPolicy,
        rng: &mut impl CryptoRngCore,
    ) -> bool {
        let rotated = now_ms.saturating_sub(self.current.created_at_ms) >= policy.rotation_ms;
        if rotated {
            let next = PrekeySecret::generate(self.current.id.wrapping_add(1), now_ms, rng);
            let old = std::mem::replace(&mut self.current, next);
            self.retired.push((old, now_ms));
        }
        self.retired
            .retain(|(_, retired_at)| now_ms.saturating_sub(*retired_at) < policy.grace_ms);
        let excess = self.retired.len().saturating_sub(policy.max_retired);
        self.retired.drain(..excess);
        rotated
    }
}

/// Everything secret about the local user. The node stores it; this crate never does.
#[derive(Clone, Serialize, Deserialize)]
pub struct LocalIdentity {
    /// The Ed25519 keypair, the libp2p identity (stored as secret ‖ public).
    #[serde(with = "keypair_serde")]
    identity: ed25519::Keypair,
    /// X25519 static private key, the Noise `s` when this user starts a session.
    static_private: [u8; 32],
    /// X25519 static public key.
    static_public: [u8; 32],
    /// The prekeys others seal first messages to.
    prekeys: PrekeyRing,
    /// The store peers named in the bundle. Not part of the stored identity: the node keeps
    /// its mailbox choice itself and sets it with [`LocalIdentity::set_mailboxes`].
    #[serde(skip)]
    mailboxes: Vec<MailboxPeer>,
    /// When the mailbox choice was last set, unix milliseconds (0: never).
    #[serde(skip)]
    mailboxes_set_at_ms: u64,
}

impl fmt::Debug for LocalIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LocalIdentity")
            .field("user", &self.user_id())
            .finish_non_exhaustive()
    }
}

/// Why stored identity bytes could not be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IdentityError {
    /// The stored Ed25519 keypair is invalid.
    #[error("stored identity key is invalid")]
    BadIdentityKey,
    /// The stored bytes are not a LocalIdentity.
    #[error(transparent)]
    Codec(#[from] codec::CodecError),
}

impl LocalIdentity {
    /// A fresh identity: new identity key, static key and first prekey.
    pub fn generate(now_ms: u64, rng: &mut impl CryptoRngCore) -> Self {
        let mut secret = [0u8; 32];
        rng.fill_bytes(&mut secret);
        Self::from_ed25519_secret(secret, now_ms, rng)
    }

    /// An identity whose Ed25519 key is `secret` (tests and simulations use seeded keys).
    pub fn from_ed25519_secret(
        secret: [u8; 32],
        now_ms: u64,
        rng: &mut impl CryptoRngCore,
    ) -> Self {
        let (static_private, static_public) = generate_x25519(rng);
        LocalIdentity {
            identity: ed25519_from_secret(secret),
            static_private,
            static_public,
            prekeys: PrekeyRing::new(now_ms, rng),
            mailboxes: Vec::new(),
            mailboxes_set_at_ms: 0,
        }
    }

    /// The Ed25519 keypair (also the node's libp2p identity).
    pub fn keypair(&self) -> &ed25519::Keypair {
        &self.identity
    }

    /// This user's id.
    pub fn user_id(&self) -> UserId {
        UserId::from_public_key(&self.keypair().public())
    }

    /// Signs `msg` with the identity key.
    pub fn sign(&self, msg: &[u8]) -> Vec<u8> {
        self.keypair().sign(msg)
    }

    /// The X25519 static private key (Noise `s` as initiator).
    pub(crate) fn static_private(&self) -> &[u8; 32] {
        &self.static_private
    }

    /// The prekeys.
    pub fn prekeys(&self) -> &PrekeyRing {
        &self.prekeys
    }

    /// Rotates and prunes prekeys (see [`PrekeyRing::maintain`]).
    pub fn maintain_prekeys(
        &mut self,
        now_ms: u64,
        policy: &PrekeyPolicy,
        rng: &mut impl CryptoRngCore,
    ) -> bool {
        self.prekeys.maintain(now_ms, policy, rng)
    }

    /// Names the store peers that hold this user's mailbox, from `set_at_ms` on (the bundle's
    /// issue time is the later of this and the current prekey's creation).
    pub fn set_mailboxes(
        &mut self,
        peers: Vec<MailboxPeer>,
        set_at_ms: u64,
    ) -> Result<(), AccessError> {
        check_peers(&peers)?;
        self.mailboxes = peers;
        self.mailboxes_set_at_ms = set_at_ms;
        Ok(())
    }

    /// The store peers named in the bundle.
    pub fn mailboxes(&self) -> &[MailboxPeer] {
        &self.mailboxes
    }

    /// The signed public bundle for the current prekey and mailbox choice. Ed25519
    /// signatures are deterministic, so the bundle is byte-identical until one of them
    /// changes.
    pub fn bundle(&self) -> KeyBundle {
        let prekey = self.prekeys.current().to_public();
        let unsigned = UnsignedBundle {
            user: self.user_id(),
            identity_key: self.keypair().public().to_bytes(),
            static_key: self.static_public,
            prekey,
            mailboxes: self.mailboxes.clone(),
            issued_at_ms: prekey.created_at_ms.max(self.mailboxes_set_at_ms),
        };
        let signature = self.sign(&unsigned.signing_bytes());
        KeyBundle {
            user: unsigned.user,
            identity_key: unsigned.identity_key,
            static_key: unsigned.static_key,
            prekey: unsigned.prekey,
            mailboxes: unsigned.mailboxes,
            issued_at_ms: unsigned.issued_at_ms,
            signature,
        }
    }

    /// Encodes the identity for storage.
    pub fn to_bytes(&self) -> Result<Vec<u8>, codec::CodecError> {
        codec::encode(self)
    }

    /// Loads an identity stored with [`LocalIdentity::to_bytes`].
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, IdentityError> {
        let id: LocalIdentity = codec::decode(bytes)?;
        if x25519_public(&id.static_private) != id.static_public {
            return Err(IdentityError::BadIdentityKey);
        }
        // A prekey whose public half is not its private key's would be published in the
        // bundle, and nothing sealed to it could ever be opened.
        let prekeys =
            std::iter::once(&id.prekeys.current).chain(id.prekeys.retired.iter().map(|(k, _)| k));
        for prekey in prekeys {
            if x25519_public(&prekey.private) != prekey.public {
                return Err(IdentityError::BadIdentityKey);
            }
        }
        Ok(id)
    }
}

/// Builds an Ed25519 keypair from a 32-byte secret.
fn ed25519_from_secret(mut secret: [u8; 32]) -> ed25519::Keypair {
    match ed25519::SecretKey::try_from_bytes(&mut secret) {
        Ok(sk) => ed25519::Keypair::from(sk),
        Err(_) => unreachable!("SecretKey::try_from_bytes only rejects lengths other than 32"),
    }
}

/// The X25519 public key of `private`.
pub(crate) fn x25519_public(private: &[u8; 32]) -> [u8; 32] {
    let mut out = [0u8; 32];
    if let Some(mut dh) = DefaultResolver.resolve_dh(&DHChoice::Curve25519) {
        dh.set(private);
        out.copy_from_slice(dh.pubkey());
    }
    out
}

/// 32 random bytes as an X25519 private key, and its public key.
pub(crate) fn generate_x25519(rng: &mut impl CryptoRngCore) -> ([u8; 32], [u8; 32]) {
    let mut private = [0u8; 32];
    rng.fill_bytes(&mut private);
    let public = x25519_public(&private);
    (private, public)
}

/// The public half of a prekey.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Prekey {
    /// The prekey's number, sent in the clear in handshake bodies so the recipient can pick it.
    pub id: u32,
    /// When the prekey became current, unix milliseconds (the bundle's creation time).
    pub created_at_ms: u64,
    /// The X25519 public key.
    pub public: [u8; 32],
}

#[derive(Serialize)]
struct UnsignedBundle {
    user: UserId,
    identity_key: [u8; 32],
    static_key: [u8; 32],
    prekey: Prekey,
    mailboxes: Vec<MailboxPeer>,
    issued_at_ms: u64,
}

impl UnsignedBundle {
    fn signing_bytes(&self) -> Vec<u8> {
        let mut out = BUNDLE_SIGNING_CONTEXT.to_vec();
        // Encoding these fixed-size fields cannot fail; an empty tail would just not verify.
        let _ = codec::encode_into(self, &mut out);
        out
    }
}

/// A user's public keys for end-to-end encryption, signed by their identity key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyBundle {
    /// Whose bundle this claims to be.
    pub user: UserId,
    /// The Ed25519 identity public key (must be the key `user` is derived from).
    pub identity_key: [u8; 32],
    /// The X25519 static key the user sends with (Noise `s`).
    pub static_key: [u8; 32],
    /// The current prekey to seal first messages to.
    pub prekey: Prekey,
    /// The store peers this user named to hold its mailbox (at most
    /// [`crate::access::MAX_MAILBOX_PEERS`]); senders deposit there and nowhere else.
    pub mailboxes: Vec<MailboxPeer>,
    /// When the user issued this bundle, unix milliseconds; the newest bundle wins. Never
    /// before the prekey's creation.
    pub issued_at_ms: u64,
    /// Ed25519 signature over `"kith-bundle/2\0" ‖ bincode(user, identity_key, static_key,
    /// prekey, mailboxes, issued_at_ms)`.
    #[serde(with = "serde_bytes")]
    pub signature: Vec<u8>,
}

/// Why a key bundle was rejected.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum BundleError {
    /// The identity key is not the one the claimed UserId is made from.
    #[error("bundle claims a user id its identity key does not make")]
    UserIdMismatch,
    /// The bundle is for another user than the one expected.
    #[error("bundle is for another user than expected")]
    WrongUser,
    /// The identity key bytes are not an Ed25519 key.
    #[error("identity key is not a valid Ed25519 key")]
    BadIdentityKey,
    /// The signature does not verify.
    #[error("bundle signature does not verify")]
    BadSignature,
    /// The bundle claims to be issued before its prekey existed.
    #[error("bundle issued before its prekey was created")]
    IssuedBeforePrekey,
    /// The named mailbox store peers are over the limits.
    #[error("bundle's mailbox store peers: {0}")]
    Mailboxes(AccessError),
}

impl KeyBundle {
    /// When this bundle was issued, unix milliseconds: the newer of two bundles replaces the
    /// older.
    pub fn created_at_ms(&self) -> u64 {
        self.issued_at_ms
    }

    /// Checks that the identity key makes `user` and that the signature verifies.
    pub fn verify(&self) -> Result<(), BundleError> {
        let key = ed25519::PublicKey::try_from_bytes(&self.identity_key)
            .map_err(|_| BundleError::BadIdentityKey)?;
        if UserId::from_public_key(&key) != self.user {
            return Err(BundleError::UserIdMismatch);
        }
        if self.issued_at_ms < self.prekey.created_at_ms {
            return Err(BundleError::IssuedBeforePrekey);
        }
        check_peers(&self.mailboxes).map_err(BundleError::Mailboxes)?;
        let unsigned = UnsignedBundle {
            user: self.user,
            identity_key: self.identity_key,
            static_key: self.static_key,
            prekey: self.prekey,
            mailboxes: self.mailboxes.clone(),
            issued_at_ms: self.issued_at_ms,
        };
        if !key.verify(&unsigned.signing_bytes(), &self.signature) {
            return Err(BundleError::BadSignature);
        }
        Ok(())
    }

    /// [`KeyBundle::verify`], and that the bundle is `expected`'s.
    pub fn verify_for(&self, expected: &UserId) -> Result<(), BundleError> {
        if &self.user != expected {
            return Err(BundleError::WrongUser);
        }
        self.verify()
    }
}

/// (De)serializes an Ed25519 keypair as its 64 bytes, rejecting an inconsistent pair.
mod keypair_serde {
    use libp2p_identity::ed25519;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(kp: &ed25519::Keypair, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&kp.to_bytes())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<ed25519::Keypair, D::Error> {
        let mut bytes: serde_bytes::ByteBuf = Deserialize::deserialize(d)?;
        ed25519::Keypair::try_from_bytes(&mut bytes).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;
