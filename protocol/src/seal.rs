//! End-to-end sealing: a Noise handshake to start, then a symmetric chain-key session.
//!
//! The exact construction is specified in `protocol/README.md`; in short:
//! - The **first** message from A to B (or the first after a key change, after B replied, or
//!   after the session's message budget) is one `Noise_X_25519_ChaChaPoly_BLAKE2s` handshake
//!   message from A's static key to B's current signed prekey. Its payload carries A's signed
//!   bundle (which authenticates A: its static key must be the Noise `rs`), a fresh random
//!   32-byte chain seed, and the plaintext.
//! - **Later** messages from A to B in that session are ChaCha20-Poly1305 with a one-time key
//!   taken from a hash chain started at the seed; each chain step forgets the previous key.
//!   Messages are numbered, so out-of-order delivery works; skipped keys are kept up to
//!   [`MAX_SKIP`] per session and [`MAX_SKIPPED_KEYS`] in total.
//! - The envelope's routing fields are the Noise prologue and the AEAD associated data, so a
//!   store peer cannot re-address, re-date or re-number a body.
//!
//! Randomness comes from the caller: snow is given a resolver whose RNG is seeded from the
//! caller's RNG, so sealing is deterministic under a seeded RNG (test vectors rely on that).

use std::collections::BTreeMap;

use rand_core::CryptoRngCore;
use serde::{Deserialize, Serialize};

use crate::{
    codec,
    envelope::EnvelopeHeader,
    identity::{KeyBundle, LocalIdentity},
    payload::Plaintext,
};

mod crypto;
mod error;

/// The body types live beside [`EnvelopeHeader`]; re-exported here where they were first named.
pub use crate::envelope::{HandshakeBody, SealedBody, SessionBody, SessionId};
pub use crypto::NOISE_PATTERN;
use crypto::{aead_open, aead_seal, chain_step, noise_builder, session_aad, session_id};
pub use error::{OpenError, SealError};

/// Noise's own cap on one message (the Noise spec: 65,535 bytes).
pub const MAX_NOISE_MESSAGE_LEN: usize = 65_535;

/// Bytes a Noise X message adds to its payload: `e` (32) + encrypted `s` (32 + 16) + tag (16).
pub const HANDSHAKE_OVERHEAD: usize = 32 + 48 + 16;

/// How far ahead of the next expected number a session message may be (messages whose keys
/// would be skipped). Checked before any key is derived, it bounds the chain steps one
/// hostile message (or a replay of it) can cost to `MAX_SKIP + 1`, a small constant; a
/// message further ahead costs none. Honest senders rarely skip this far: a message refused
/// as too far ahead is sent again in a fresh session, or opens on a later mailbox fetch
/// once the messages before it have.
pub const MAX_SKIP: u64 = 256;

/// Most skipped message keys one session keeps; the oldest are forgotten first.
pub const MAX_SKIPPED_KEYS: usize = 2_000;

/// Most inbound sessions kept per peer: older ones are dropped (their late messages then fail
/// with [`OpenError::UnknownSession`]).
pub const MAX_INBOUND_SESSIONS: usize = 8;

/// Most ids of dropped inbound sessions remembered per peer to recognise a replayed handshake.
pub const MAX_RETIRED_SESSION_IDS: usize = 64;

/// What a handshake message's Noise payload holds.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct HandshakePayload {
    /// The sender's signed bundle; its static key must be the handshake's `rs`.
    pub sender: KeyBundle,
    /// The secret that starts the session's chain.
    pub chain_seed: [u8; 32],
    /// The message itself.
    pub plaintext: Plaintext,
}

/// When the sender starts a fresh session instead of continuing the current one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionPolicy {
    /// Start a new session after this many messages in one (default 10,000).
    pub max_messages: u64,
    /// Start a new session when the peer has started one towards us since ours began (default
    /// on): each turn of a conversation brings new ephemeral keys.
    pub renew_on_reply: bool,
    /// ...but not more often than this, so a fast back-and-forth (message, receipt, message)
    /// does not pay a handshake per message (default 1 s).
    pub min_renew_interval_ms: u64,
}

impl Default for SessionPolicy {
    fn default() -> Self {
        SessionPolicy {
            max_messages: 10_000,
            renew_on_reply: true,
            min_renew_interval_ms: 1_000,
        }
    }
}

/// A session we send in.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct OutboundSession {
    id: SessionId,
    chain_key: [u8; 32],
    next_n: u64,
    /// The peer's prekey and static key the session was opened to: a change starts a new one.
    prekey_id: u32,
    prekey: [u8; 32],
    started_at_ms: u64,
}

/// A session we receive in.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct InboundSession {
    id: SessionId,
    chain_key: [u8; 32],
    next_n: u64,
    /// Message keys of numbers skipped over, waiting for late messages.
    skipped: BTreeMap<u64, [u8; 32]>,
}

impl InboundSession {
    /// The session's id.
    pub fn id(&self) -> SessionId {
        self.id
    }
}

/// All session state between the local user and one peer: plain data the node stores.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct PeerSessions {
    /// Never stored: after a restart the sender starts a fresh session, so a crash between
    /// sealing and storing can never make it reuse a message key.
    #[serde(skip)]
    outbound: Option<OutboundSession>,
    /// Newest last.
    inbound: Vec<InboundSession>,
    /// Ids of inbound sessions dropped from `inbound`, to recognise replayed handshakes.
    retired: Vec<SessionId>,
    /// The peer has started a session towards us since our outbound one began.
    peer_replied: bool,
    /// Chain steps (key derivations) spent opening session messages since this value was
    /// made or loaded: what a test reads to check that a hostile message costs O(1).
    #[serde(skip)]
    chain_steps: u64,
}

/// The result of opening a first message.
#[derive(Debug)]
pub struct OpenedHandshake {
    /// The sender's verified bundle (the freshest one we have of them).
    pub sender: KeyBundle,
    /// The session it started; hand it to [`PeerSessions::accept`].
    pub session: InboundSession,
    /// The message.
    pub plaintext: Plaintext,
}

impl PeerSessions {
    /// The ids of the sessions the peer sends to us in (for the node's session → peer index).
    pub fn inbound_ids(&self) -> Vec<SessionId> {
        self.inbound.iter().map(|s| s.id).collect()
    }

    /// Drops the session we send in, so the next [`PeerSessions::seal`] starts a fresh one
    /// (used when the peer could not open a message, or a link was lost).
    pub fn forget_outbound(&mut self) {
        self.outbound = None;
    }

    /// Whether the next [`PeerSessions::seal`] will be a handshake.
    pub fn needs_handshake(&self, peer: &KeyBundle, now_ms: u64, policy: &SessionPolicy) -> bool {
        match &self.outbound {
            None => true,
            Some(out) => {
                out.prekey_id != peer.prekey.id
                    || out.prekey != peer.prekey.public
                    || out.next_n >= policy.max_messages
                    || (policy.renew_on_reply
                        && self.peer_replied
                        && now_ms.saturating_sub(out.started_at_ms) >= policy.min_renew_interval_ms)
            }
        }
    }

    /// Seals `plaintext` for `peer` under `header`: a session message when a usable session
    /// exists, otherwise a handshake that starts one.
    #[allow(clippy::too_many_arguments)]
    pub fn seal(
        &mut self,
        me: &LocalIdentity,
        peer: &KeyBundle,
        header: &EnvelopeHeader,
        plaintext: &Plaintext,
        now_ms: u64,
        policy: &SessionPolicy,
        rng: &mut impl CryptoRngCore,
    ) -> Result<SealedBody, SealError> {
        if self.needs_handshake(peer, now_ms, policy) {
            peer.verify_for(&header.recipient)?;
            let mut chain_seed = [0u8; 32];
            rng.fill_bytes(&mut chain_seed);
            let body = seal_handshake(me, peer, header, plaintext, chain_seed, rng)?;
            self.outbound = Some(OutboundSession {
                id: session_id(&chain_seed),
                chain_key: chain_seed,
                next_n: 0,
                prekey_id: peer.prekey.id,
                prekey: peer.prekey.public,
                started_at_ms: now_ms,
            });
            self.peer_replied = false;
            return Ok(SealedBody::Handshake(body));
        }
        let Some(out) = self.outbound.as_mut() else {
            unreachable!("needs_handshake is true when there is no outbound session")
        };
        let n = out.next_n;
        let (message_key, next_chain) = chain_step(&out.chain_key);
        let aad = session_aad(header, &out.id, n);
        let bytes = codec::encode(plaintext)?;
        let ciphertext = aead_seal(&message_key, &aad, &bytes);
        out.chain_key = next_chain;
        out.next_n = n + 1;
        Ok(SealedBody::Session(SessionBody {
            session: out.id,
            n,
            ciphertext,
        }))
    }

    /// Adds a session opened from a handshake ([`open_handshake`]) and notes that the peer
    /// replied. A session already known (or recently dropped) is a replay.
    pub fn accept(&mut self, session: InboundSession) -> Result<(), OpenError> {
        if self.inbound.iter().any(|s| s.id == session.id) || self.retired.contains(&session.id) {
            return Err(OpenError::Replayed);
        }
        self.inbound.push(session);
        if self.inbound.len() > MAX_INBOUND_SESSIONS {
            let dropped = self.inbound.remove(0);
            self.retired.push(dropped.id);
            if self.retired.len() > MAX_RETIRED_SESSION_IDS {
                self.retired.remove(0);
            }
        }
        self.peer_replied = true;
        Ok(())
    }

    /// Chain steps (key derivations) spent by [`PeerSessions::open`] since this value was
    /// made or loaded (not stored).
    pub fn chain_steps(&self) -> u64 {
        self.chain_steps
    }

    /// Opens a session message. State changes only when the message authenticates.
    pub fn open(
        &mut self,
        header: &EnvelopeHeader,
        body: &SessionBody,
    ) -> Result<Plaintext, OpenError> {
        let session = self
            .inbound
            .iter_mut()
            .find(|s| s.id == body.session)
            .ok_or(OpenError::UnknownSession)?;
        if body.ciphertext.len() < 16 {
            return Err(OpenError::Truncated);
        }
        let aad = session_aad(header, &session.id, body.n);
        if body.n < session.next_n {
            // Only a skipped key can open an old number; otherwise it was already opened.
            let key = session.skipped.get(&body.n).ok_or(OpenError::Replayed)?;
            let bytes = aead_open(key, &aad, &body.ciphertext)?;
            let plaintext: Plaintext = codec::decode(&bytes)?;
            session.skipped.remove(&body.n);
            return Ok(plaintext);
        }
        if body.n - session.next_n > MAX_SKIP {
            return Err(OpenError::TooFarAhead {
                n: body.n,
                next: session.next_n,
            });
        }
        // Walk the chain on copies; commit only after the message authenticates.
        let mut chain = session.chain_key;
        let mut skipped = Vec::new();
        for k in session.next_n..body.n {
            let (mk, next) = chain_step(&chain);
            skipped.push((k, mk));
            chain = next;
        }
        let (message_key, next_chain) = chain_step(&chain);
        self.chain_steps = self.chain_steps.saturating_add(body.n - session.next_n + 1);
        let bytes = aead_open(&message_key, &aad, &body.ciphertext)?;
        let plaintext: Plaintext = codec::decode(&bytes)?;
        session.skipped.extend(skipped);
        while session.skipped.len() > MAX_SKIPPED_KEYS {
            session.skipped.pop_first();
        }
        session.chain_key = next_chain;
        session.next_n = body.n + 1;
        Ok(plaintext)
    }
}

/// Opens a first (handshake) message sealed to one of our prekeys. The caller then looks up
/// the sender's [`PeerSessions`] and calls [`PeerSessions::accept`], which detects replays.
pub fn open_handshake(
    me: &LocalIdentity,
    header: &EnvelopeHeader,
    body: &HandshakeBody,
) -> Result<OpenedHandshake, OpenError> {
    if header.recipient != me.user_id() {
        return Err(OpenError::Misaddressed(header.recipient));
    }
    if body.noise.len() < HANDSHAKE_OVERHEAD {
        return Err(OpenError::Truncated);
    }
    if body.noise.len() > MAX_NOISE_MESSAGE_LEN {
        return Err(OpenError::Tampered);
    }
    let prekey = me
        .prekeys()
        .find(body.prekey_id)
        .ok_or(OpenError::UnknownPrekey(body.prekey_id))?;
    let prologue = header.prologue();
    // Pattern X's responder draws no randomness; a fixed seed keeps this function pure.
    let mut hs = noise_builder([0u8; 32])
        .and_then(|b| b.local_private_key(&prekey.private))
        .and_then(|b| b.prologue(&prologue))
        .and_then(|b| b.build_responder())
        .map_err(|_| OpenError::Tampered)?;
    let mut payload = vec![0u8; body.noise.len()];
    let len = hs
        .read_message(&body.noise, &mut payload)
        .map_err(|e| match e {
            snow::Error::Input => OpenError::Truncated,
            _ => OpenError::Tampered,
        })?;
    payload.truncate(len);
    let remote_static = hs.get_remote_static().ok_or(OpenError::Tampered)?.to_vec();
    let inner: HandshakePayload = codec::decode(&payload)?;
    inner
        .sender
        .verify()
        .map_err(|e| OpenError::ForgedSender(e.to_string()))?;
    if inner.sender.static_key.as_slice() != remote_static.as_slice() {
        return Err(OpenError::ForgedSender(
            "handshake static key is not the one in the sender's bundle".into(),
        ));
    }
    Ok(OpenedHandshake {
        session: InboundSession {
            id: session_id(&inner.chain_seed),
            chain_key: inner.chain_seed,
            next_n: 0,
            skipped: BTreeMap::new(),
        },
        sender: inner.sender,
        plaintext: inner.plaintext,
    })
}

fn seal_handshake(
    me: &LocalIdentity,
    peer: &KeyBundle,
    header: &EnvelopeHeader,
    plaintext: &Plaintext,
    chain_seed: [u8; 32],
    rng: &mut impl CryptoRngCore,
) -> Result<HandshakeBody, SealError> {
    let payload = codec::encode(&HandshakePayload {
        sender: me.bundle(),
        chain_seed,
        plaintext: plaintext.clone(),
    })?;
    let max = MAX_NOISE_MESSAGE_LEN - HANDSHAKE_OVERHEAD;
    if payload.len() > max {
        return Err(SealError::TooLarge {
            len: payload.len(),
            max,
        });
    }
    let mut seed = [0u8; 32];
    rng.fill_bytes(&mut seed);
    let prologue = header.prologue();
    let mut hs = noise_builder(seed)?
        .local_private_key(me.static_private())?
        .remote_public_key(&peer.prekey.public)?
        .prologue(&prologue)?
        .build_initiator()?;
    let mut noise = vec![0u8; payload.len() + HANDSHAKE_OVERHEAD];
    let len = hs.write_message(&payload, &mut noise)?;
    noise.truncate(len);
    Ok(HandshakeBody {
        prekey_id: peer.prekey.id,
        noise,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;
