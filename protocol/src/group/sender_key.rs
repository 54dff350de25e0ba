//! Sender keys: each member seals a group message once, with its own symmetric chain, and
//! signs it; every other member holds a copy of that chain (handed over the one-to-one
//! session as a [`SenderKeyDistribution`]) and opens it.
//!
//! The chain moves forward with every message (message `n`'s key comes from chain key `n`,
//! which is then replaced by chain key `n + 1`), so a member given the chain at number `n`
//! cannot read messages before `n`. A receiver keeps at most [`MAX_SKIPPED`] keys of
//! messages it has not seen yet and jumps at most [`MAX_FORWARD`] numbers at once. When
//! someone leaves or is removed, every remaining member starts a new chain (a new key id)
//! and hands it only to the members left: the departed member cannot open what follows.

use blake2::{Blake2s256, Digest};
use chacha20poly1305::{aead::Aead, aead::Payload as AeadPayload, ChaCha20Poly1305, KeyInit};
use libp2p_identity::ed25519;
use rand_core::CryptoRngCore;
use serde::{Deserialize, Serialize};

use super::{GroupError, GroupId};
use crate::{codec, MessageId, UserId};

/// Most message keys a receiver keeps for one sender's messages that have not arrived yet.
pub const MAX_SKIPPED: usize = 512;

/// Furthest a received message number may be ahead of the receiver's chain.
pub const MAX_FORWARD: u32 = 2_000;

/// Most chains a receiver keeps per sender (the current one and the one before it, for
/// messages still on the way when the sender rotated).
pub const MAX_CHAINS_PER_SENDER: usize = 2;

/// Longest group message ciphertext, in bytes (the largest text payload plus its framing).
pub const MAX_GROUP_CIPHERTEXT: usize = 60 * 1024;

const SIGNING_CONTEXT: &[u8] = b"kith-group-msg/1";

/// What a member hands every other member so they can open its group messages.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SenderKeyDistribution {
    /// The group.
    pub group: GroupId,
    /// Which of the sender's chains (one more at each rotation).
    pub key_id: u32,
    /// The number of the next message the chain will seal.
    pub iteration: u32,
    /// The chain key at `iteration`.
    pub chain_key: [u8; 32],
    /// The Ed25519 public key the sender signs this chain's messages with.
    pub signing_key: [u8; 32],
}

impl std::fmt::Debug for SenderKeyDistribution {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SenderKeyDistribution")
            .field("group", &self.group)
            .field("key_id", &self.key_id)
            .field("iteration", &self.iteration)
            .finish_non_exhaustive()
    }
}

/// A group message as every member receives it (inside their own one-to-one envelope).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupMessage {
    /// The group.
    pub group: GroupId,
    /// The message's id, the same for every member (receipts name it).
    pub id: MessageId,
    /// The sender's group epoch when it sealed the message.
    pub epoch: u64,
    /// The sender's chain.
    pub key_id: u32,
    /// The message's number in that chain.
    pub iteration: u32,
    /// ChaCha20-Poly1305 of the encoded [`crate::Plaintext`], with its tag.
    #[serde(with = "serde_bytes")]
    pub ciphertext: Vec<u8>,
    /// Ed25519 signature by the chain's signing key (see [`GroupMessage::signed_bytes`]).
    #[serde(with = "serde_bytes")]
    pub signature: Vec<u8>,
}

/// The fields a group message's signature and AEAD cover besides the ciphertext.
#[derive(Serialize)]
struct Header<'a> {
    group: &'a GroupId,
    id: &'a MessageId,
    epoch: u64,
    key_id: u32,
    iteration: u32,
    sender: &'a UserId,
}

impl GroupMessage {
    fn header_bytes(&self, sender: &UserId) -> Result<Vec<u8>, GroupError> {
        Ok(codec::encode(&Header {
            group: &self.group,
            id: &self.id,
            epoch: self.epoch,
            key_id: self.key_id,
            iteration: self.iteration,
            sender,
        })?)
    }

    /// What the signature covers: `"kith-group-msg/1" ‖ bincode(header) ‖ ciphertext`, the
    /// header being (group, id, epoch, key id, iteration, sender's user id).
    pub fn signed_bytes(&self, sender: &UserId) -> Result<Vec<u8>, GroupError> {
        let mut bytes = SIGNING_CONTEXT.to_vec();
        bytes.extend_from_slice(&self.header_bytes(sender)?);
        bytes.extend_from_slice(&self.ciphertext);
        Ok(bytes)
    }
}

/// Chain key `n + 1` from chain key `n`.
fn next_chain(chain: &[u8; 32]) -> [u8; 32] {
    let mut h = Blake2s256::new();
    h.update(b"kith-sk-chain/1");
    h.update(chain);
    h.finalize().into()
}

/// Message key `n` from chain key `n`.
fn message_key(chain: &[u8; 32]) -> [u8; 32] {
    let mut h = Blake2s256::new();
    h.update(b"kith-sk-message/1");
    h.update(chain);
    h.finalize().into()
}

/// The nonce: the message number, little-endian, then zeros (each key seals one message).
fn nonce(iteration: u32) -> [u8; 12] {
    let mut n = [0u8; 12];
    n[..4].copy_from_slice(&iteration.to_le_bytes());
    n
}

/// A member's own sending chain for one group.
#[derive(Clone, Serialize, Deserialize)]
pub struct SenderKey {
    /// The group.
    pub group: GroupId,
    /// Which chain this is.
    pub key_id: u32,
    /// The number the next message gets.
    pub iteration: u32,
    chain_key: [u8; 32],
    signing_secret: [u8; 32],
    signing_public: [u8; 32],
}

impl std::fmt::Debug for SenderKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SenderKey")
            .field("group", &self.group)
            .field("key_id", &self.key_id)
            .field("iteration", &self.iteration)
            .finish_non_exhaustive()
    }
}

impl SenderKey {
    /// A fresh chain `key_id` for `group`.
    pub fn generate(group: GroupId, key_id: u32, rng: &mut impl CryptoRngCore) -> Self {
        let mut chain_key = [0u8; 32];
        rng.fill_bytes(&mut chain_key);
        let mut signing_secret = [0u8; 32];
        rng.fill_bytes(&mut signing_secret);
        let mut key = SenderKey {
            group,
            key_id,
            iteration: 0,
            chain_key,
            signing_secret,
            signing_public: [0; 32],
        };
        if let Ok(pair) = key.keypair() {
            key.signing_public = pair.public().to_bytes();
        }
        key
    }

    fn keypair(&self) -> Result<ed25519::Keypair, GroupError> {
        let mut secret = self.signing_secret;
        // Any 32 bytes are a valid Ed25519 secret key; the error is there for the type.
        ed25519::SecretKey::try_from_bytes(&mut secret)
            .map(ed25519::Keypair::from)
            .map_err(|_| GroupError::Invalid("signing key"))
    }

    /// What to hand the other members: the chain from the next message on.
    pub fn distribution(&self) -> SenderKeyDistribution {
        SenderKeyDistribution {
            group: self.group,
            key_id: self.key_id,
            iteration: self.iteration,
            chain_key: self.chain_key,
            signing_key: self.signing_public,
        }
    }

    /// Seals `plaintext` (an encoded [`crate::Plaintext`]) once for the whole group, signs it
    /// as `sender`'s, and moves the chain forward.
    pub fn seal(
        &mut self,
        sender: &UserId,
        id: MessageId,
        epoch: u64,
        plaintext: &[u8],
    ) -> Result<GroupMessage, GroupError> {
        let next_iteration = self.iteration.checked_add(1).ok_or(GroupError::Exhausted)?;
        let mut msg = GroupMessage {
            group: self.group,
            id,
            epoch,
            key_id: self.key_id,
            iteration: self.iteration,
            ciphertext: Vec::new(),
            signature: Vec::new(),
        };
        let aad = msg.header_bytes(sender)?;
        let key = message_key(&self.chain_key);
        msg.ciphertext = ChaCha20Poly1305::new((&key).into())
            .encrypt(
                (&nonce(msg.iteration)).into(),
                AeadPayload {
                    msg: plaintext,
                    aad: &aad,
                },
            )
            .map_err(|_| GroupError::Decrypt)?;
        msg.signature = self.keypair()?.sign(&msg.signed_bytes(sender)?);
        self.chain_key = next_chain(&self.chain_key);
        self.iteration = next_iteration;
        Ok(msg)
    }
}

/// A receiver's copy of one of a sender's chains.
#[derive(Clone, Serialize, Deserialize)]
struct ReceivedChain {
    key_id: u32,
    iteration: u32,
    chain_key: [u8; 32],
    signing_key: [u8; 32],
    /// Keys of messages skipped over, oldest first, at most [`MAX_SKIPPED`].
    skipped: Vec<(u32, [u8; 32])>,
}

/// A receiver's copies of one sender's chains in one group (at most
/// [`MAX_CHAINS_PER_SENDER`], newest last).
#[derive(Clone, Default, Serialize, Deserialize)]
pub struct ReceivedSenderKeys {
    chains: Vec<ReceivedChain>,
}

impl std::fmt::Debug for ReceivedSenderKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ids: Vec<u32> = self.chains.iter().map(|c| c.key_id).collect();
        f.debug_struct("ReceivedSenderKeys")
            .field("key_ids", &ids)
            .finish()
    }
}

impl ReceivedSenderKeys {
    /// Takes a distribution: a new chain, or a known chain given again (kept as it is,
    /// so a replayed distribution cannot rewind it).
    pub fn learn(&mut self, d: &SenderKeyDistribution) {
        if self.chains.iter().any(|c| c.key_id == d.key_id) {
            return;
        }
        self.chains.push(ReceivedChain {
            key_id: d.key_id,
            iteration: d.iteration,
            chain_key: d.chain_key,
            signing_key: d.signing_key,
            skipped: Vec::new(),
        });
        self.chains.sort_by_key(|c| c.key_id);
        while self.chains.len() > MAX_CHAINS_PER_SENDER {
            self.chains.remove(0);
        }
    }

    /// Whether chain `key_id` is held.
    pub fn has(&self, key_id: u32) -> bool {
        self.chains.iter().any(|c| c.key_id == key_id)
    }

    /// The newest chain's id, if any.
    pub fn newest(&self) -> Option<u32> {
        self.chains.last().map(|c| c.key_id)
    }

    /// Checks `msg`'s signature as `sender`'s, decrypts it and moves the chain forward.
    /// Nothing changes unless it opens.
    pub fn open(&mut self, sender: &UserId, msg: &GroupMessage) -> Result<Vec<u8>, GroupError> {
        if msg.ciphertext.len() > MAX_GROUP_CIPHERTEXT {
            return Err(GroupError::Invalid("ciphertext too long"));
        }
        let index = self
            .chains
            .iter()
            .position(|c| c.key_id == msg.key_id)
            .ok_or(GroupError::UnknownKey(msg.key_id))?;
        let chain = &self.chains[index];
        let public = ed25519::PublicKey::try_from_bytes(&chain.signing_key)
            .map_err(|_| GroupError::BadSignature)?;
        if !public.verify(&msg.signed_bytes(sender)?, &msg.signature) {
            return Err(GroupError::BadSignature);
        }
        let mut next = chain.clone();
        let key = if msg.iteration < next.iteration {
            let pos = next
                .skipped
                .iter()
                .position(|(n, _)| *n == msg.iteration)
                .ok_or(GroupError::Replayed(msg.iteration))?;
            next.skipped.remove(pos).1
        } else {
            if msg.iteration - next.iteration > MAX_FORWARD {
                return Err(GroupError::TooFarAhead {
                    have: next.iteration,
                    got: msg.iteration,
                });
            }
            while next.iteration < msg.iteration {
                next.skipped
                    .push((next.iteration, message_key(&next.chain_key)));
                next.chain_key = next_chain(&next.chain_key);
                next.iteration += 1;
            }
            if next.skipped.len() > MAX_SKIPPED {
                let excess = next.skipped.len() - MAX_SKIPPED;
                next.skipped.drain(..excess);
            }
            let key = message_key(&next.chain_key);
            next.chain_key = next_chain(&next.chain_key);
            next.iteration = next.iteration.checked_add(1).ok_or(GroupError::Exhausted)?;
            key
        };
        let aad = msg.header_bytes(sender)?;
        let plaintext = ChaCha20Poly1305::new((&key).into())
            .decrypt(
                (&nonce(msg.iteration)).into(),
                AeadPayload {
                    msg: &msg.ciphertext,
                    aad: &aad,
                },
            )
            .map_err(|_| GroupError::Decrypt)?;
        self.chains[index] = next;
        Ok(plaintext)
    }
}
