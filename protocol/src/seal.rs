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

use blake2::{digest::Mac, Blake2sMac256};
use chacha20poly1305::{aead::Aead, aead::Payload as AeadPayload, ChaCha20Poly1305, KeyInit};
use rand_chacha::ChaCha20Rng;
use rand_core::{CryptoRngCore, RngCore, SeedableRng};
use serde::{Deserialize, Serialize};
use snow::{
    params::{CipherChoice, DHChoice, HashChoice, NoiseParams},
    resolvers::{CryptoResolver, DefaultResolver},
    types::{Cipher, Dh, Hash, Random},
};

use crate::{
    codec,
    envelope::EnvelopeHeader,
    identity::{BundleError, KeyBundle, LocalIdentity},
    payload::Plaintext,
    UserId,
};

/// The Noise protocol name of a first message.
pub const NOISE_PATTERN: &str = "Noise_X_25519_ChaChaPoly_BLAKE2s";

/// Noise's own cap on one message (the Noise spec: 65,535 bytes).
pub const MAX_NOISE_MESSAGE_LEN: usize = 65_535;

/// Bytes a Noise X message adds to its payload: `e` (32) + encrypted `s` (32 + 16) + tag (16).
pub const HANDSHAKE_OVERHEAD: usize = 32 + 48 + 16;

/// How far ahead of the next expected number a session message may be (messages whose keys
/// would be skipped). Bounds the work and memory a hostile or broken sender can cause.
pub const MAX_SKIP: u64 = 2_000;

/// Most skipped message keys one session keeps; the oldest are forgotten first.
pub const MAX_SKIPPED_KEYS: usize = 2_000;

/// Most inbound sessions kept per peer: older ones are dropped (their late messages then fail
/// with [`OpenError::UnknownSession`]).
pub const MAX_INBOUND_SESSIONS: usize = 8;

/// Most ids of dropped inbound sessions remembered per peer to recognise a replayed handshake.
pub const MAX_RETIRED_SESSION_IDS: usize = 64;

/// Key-derivation labels (one byte each, the input of keyed BLAKE2s).
mod label {
    pub const SESSION_ID: u8 = 0x00;
    pub const MESSAGE_KEY: u8 = 0x01;
    pub const CHAIN_KEY: u8 = 0x02;
}

/// Names a session between two users, in the clear inside the body so the recipient can find
/// the keys; derived from the secret seed, so it says nothing about who is talking.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct SessionId(pub [u8; 16]);

/// The sealed body of an envelope.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SealedBody {
    /// A first message: a Noise X handshake message to one of the recipient's prekeys.
    Handshake(HandshakeBody),
    /// A later message in an established session.
    Session(SessionBody),
}

/// A Noise X handshake message and the prekey it was sealed to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HandshakeBody {
    /// Which of the recipient's prekeys is the Noise responder static key.
    pub prekey_id: u32,
    /// The Noise message (`e, es, s, ss` and the encrypted payload).
    #[serde(with = "serde_bytes")]
    pub noise: Vec<u8>,
}

/// A message in an established session.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionBody {
    /// Which session's keys to use.
    pub session: SessionId,
    /// The message number in the session (0, 1, 2, …).
    pub n: u64,
    /// ChaCha20-Poly1305 ciphertext with its tag.
    #[serde(with = "serde_bytes")]
    pub ciphertext: Vec<u8>,
}

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
    /// The message number is further ahead than [`MAX_SKIP`].
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

fn noise_builder(seed: [u8; 32]) -> Result<snow::Builder<'static>, snow::Error> {
    let params: NoiseParams = NOISE_PATTERN.parse()?;
    Ok(snow::Builder::with_resolver(
        params,
        Box::new(SeededResolver { seed }),
    ))
}

/// Keyed BLAKE2s-256 (RFC 7693) of one label byte: the KDF of the chain.
fn kdf(key: &[u8; 32], label: u8) -> [u8; 32] {
    match <Blake2sMac256 as Mac>::new_from_slice(key) {
        Ok(mut mac) => {
            mac.update(&[label]);
            mac.finalize().into_bytes().into()
        }
        Err(_) => unreachable!("BLAKE2s accepts 32-byte keys"),
    }
}

/// `(message key n, chain key n+1)` from chain key n.
fn chain_step(chain_key: &[u8; 32]) -> ([u8; 32], [u8; 32]) {
    (
        kdf(chain_key, label::MESSAGE_KEY),
        kdf(chain_key, label::CHAIN_KEY),
    )
}

fn session_id(seed: &[u8; 32]) -> SessionId {
    let full = kdf(seed, label::SESSION_ID);
    let mut id = [0u8; 16];
    id.copy_from_slice(&full[..16]);
    SessionId(id)
}

/// `prologue ‖ session id ‖ n (8 bytes big-endian)`.
fn session_aad(header: &EnvelopeHeader, session: &SessionId, n: u64) -> Vec<u8> {
    let mut aad = header.prologue();
    aad.extend_from_slice(&session.0);
    aad.extend_from_slice(&n.to_be_bytes());
    aad
}

fn aead_seal(key: &[u8; 32], aad: &[u8], msg: &[u8]) -> Vec<u8> {
    let cipher = ChaCha20Poly1305::new(key.into());
    // Each message key is used exactly once, so a zero nonce is safe.
    match cipher.encrypt(&[0u8; 12].into(), AeadPayload { msg, aad }) {
        Ok(ct) => ct,
        Err(_) => unreachable!("ChaCha20-Poly1305 encryption fails only past 256 GiB"),
    }
}

fn aead_open(key: &[u8; 32], aad: &[u8], ct: &[u8]) -> Result<Vec<u8>, OpenError> {
    let cipher = ChaCha20Poly1305::new(key.into());
    cipher
        .decrypt(&[0u8; 12].into(), AeadPayload { msg: ct, aad })
        .map_err(|_| OpenError::Tampered)
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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    //! Tests that need the crate's internals (static private keys, raw session state, the
    //! private KDF). The public-API behaviour is tested in `protocol/tests/seal.rs`.

    use rand_chacha::ChaCha20Rng;
    use rand_core::SeedableRng;

    use super::*;
    use crate::{identity::Prekey, MessageId, Payload, Text};

    fn ident(seed: u64) -> LocalIdentity {
        LocalIdentity::generate(0, &mut ChaCha20Rng::seed_from_u64(seed))
    }

    fn text(s: &str) -> Plaintext {
        Plaintext::new(
            &Payload::Text(Text {
                body: s.into(),
                client_meta: String::new(),
            }),
            42,
        )
        .unwrap()
    }

    fn header(to: &LocalIdentity, id: u8) -> EnvelopeHeader {
        EnvelopeHeader::new(MessageId([id; 16]), to.user_id(), 1_000_000)
    }

    /// The construction of `seal_handshake`, with every input chosen by the test (and snow's
    /// default resolver): lets a test build what an attacker could build.
    fn raw_handshake(
        static_private: &[u8; 32],
        prekey: &Prekey,
        prologue: &[u8],
        payload: &[u8],
    ) -> HandshakeBody {
        let mut hs = snow::Builder::new(NOISE_PATTERN.parse().unwrap())
            .local_private_key(static_private)
            .unwrap()
            .remote_public_key(&prekey.public)
            .unwrap()
            .prologue(prologue)
            .unwrap()
            .build_initiator()
            .unwrap();
        let mut noise = vec![0u8; payload.len() + HANDSHAKE_OVERHEAD];
        let len = hs.write_message(payload, &mut noise).unwrap();
        noise.truncate(len);
        HandshakeBody {
            prekey_id: prekey.id,
            noise,
        }
    }

    fn payload_bytes(sender: KeyBundle, plaintext: &Plaintext) -> Vec<u8> {
        codec::encode(&HandshakePayload {
            sender,
            chain_seed: [3; 32],
            plaintext: plaintext.clone(),
        })
        .unwrap()
    }

    #[test]
    fn raw_construction_matches_seal() {
        // Control for the forgery tests: the test's construction is accepted when honest.
        let (mallory, bob) = (ident(1), ident(2));
        let h = header(&bob, 1);
        let body = raw_handshake(
            mallory.static_private(),
            &bob.bundle().prekey,
            &h.prologue(),
            &payload_bytes(mallory.bundle(), &text("hi")),
        );
        let opened = open_handshake(&bob, &h, &body).unwrap();
        assert_eq!(opened.sender, mallory.bundle());
        assert_eq!(opened.plaintext, text("hi"));
        assert_eq!(opened.session.id, session_id(&[3; 32]));
    }

    #[test]
    fn forged_sender_rejected() {
        let (alice, mallory, bob) = (ident(1), ident(2), ident(3));
        let h = header(&bob, 1);
        // Mallory's Noise static, Alice's genuine signed bundle in the payload.
        let body = raw_handshake(
            mallory.static_private(),
            &bob.bundle().prekey,
            &h.prologue(),
            &payload_bytes(alice.bundle(), &text("it's alice, honest")),
        );
        assert!(matches!(
            open_handshake(&bob, &h, &body),
            Err(OpenError::ForgedSender(_))
        ));

        // Mallory's bundle relabelled as Alice's: the user id does not match the key.
        let mut relabelled = mallory.bundle();
        relabelled.user = alice.user_id();
        let body = raw_handshake(
            mallory.static_private(),
            &bob.bundle().prekey,
            &h.prologue(),
            &payload_bytes(relabelled, &text("x")),
        );
        assert!(matches!(
            open_handshake(&bob, &h, &body),
            Err(OpenError::ForgedSender(_))
        ));

        // Alice's bundle with Mallory's static key swapped in: the signature fails.
        let mut swapped = alice.bundle();
        swapped.static_key = mallory.bundle().static_key;
        let body = raw_handshake(
            mallory.static_private(),
            &bob.bundle().prekey,
            &h.prologue(),
            &payload_bytes(swapped, &text("x")),
        );
        assert!(matches!(
            open_handshake(&bob, &h, &body),
            Err(OpenError::ForgedSender(_))
        ));
    }

    #[test]
    fn malformed_handshake_payload_rejected() {
        let (alice, bob) = (ident(1), ident(2));
        let h = header(&bob, 1);
        for payload in [&b""[..], b"not a handshake payload", &[0u8; 300]] {
            let body = raw_handshake(
                alice.static_private(),
                &bob.bundle().prekey,
                &h.prologue(),
                payload,
            );
            assert!(
                matches!(
                    open_handshake(&bob, &h, &body),
                    Err(OpenError::Malformed(_))
                ),
                "{payload:?}"
            );
        }
        // A valid payload with a byte more is malformed too (trailing bytes).
        let mut p = payload_bytes(alice.bundle(), &text("x"));
        p.push(0);
        let body = raw_handshake(
            alice.static_private(),
            &bob.bundle().prekey,
            &h.prologue(),
            &p,
        );
        assert!(matches!(
            open_handshake(&bob, &h, &body),
            Err(OpenError::Malformed(_))
        ));
    }

    #[test]
    fn handshake_prologue_binds_the_recipient() {
        let (alice, bob, carol) = (ident(1), ident(2), ident(3));
        let mut rng = ChaCha20Rng::seed_from_u64(9);
        let to_bob = header(&bob, 1);
        // Sealed to Bob's prekey, but with a prologue naming Carol as the recipient.
        let to_carol = EnvelopeHeader {
            recipient: carol.user_id(),
            ..to_bob.clone()
        };
        let body = seal_handshake(
            &alice,
            &bob.bundle(),
            &to_carol,
            &text("x"),
            [1; 32],
            &mut rng,
        )
        .unwrap();
        assert!(matches!(
            open_handshake(&bob, &to_bob, &body),
            Err(OpenError::Tampered)
        ));
        // Control: the same, with the right prologue, opens.
        let body = seal_handshake(
            &alice,
            &bob.bundle(),
            &to_bob,
            &text("x"),
            [1; 32],
            &mut rng,
        )
        .unwrap();
        assert!(open_handshake(&bob, &to_bob, &body).is_ok());
    }

    /// Every 32-byte secret a session state holds.
    fn inbound_secrets(s: &InboundSession) -> Vec<[u8; 32]> {
        let mut out = vec![s.chain_key];
        out.extend(s.skipped.values().copied());
        out
    }

    #[test]
    fn opened_message_keys_are_forgotten() {
        let (alice, bob) = (ident(1), ident(2));
        let policy = SessionPolicy::default();
        let mut rng = ChaCha20Rng::seed_from_u64(5);
        let mut a = PeerSessions::default();
        let mut b = PeerSessions::default();
        let h0 = header(&bob, 0);
        let SealedBody::Handshake(hs) = a
            .seal(&alice, &bob.bundle(), &h0, &text("0"), 0, &policy, &mut rng)
            .unwrap()
        else {
            panic!("first message must be a handshake")
        };
        let opened = open_handshake(&bob, &h0, &hs).unwrap();
        let seed = opened.session.chain_key;
        b.accept(opened.session).unwrap();

        // The message keys of the chain, computed from the seed.
        let mut chain = seed;
        let mut keys = Vec::new();
        for _ in 0..6 {
            let (mk, next) = chain_step(&chain);
            keys.push(mk);
            chain = next;
        }

        let mut bodies = Vec::new();
        for n in 0..6u8 {
            let h = header(&bob, n + 1);
            let SealedBody::Session(s) = a
                .seal(&alice, &bob.bundle(), &h, &text("m"), 0, &policy, &mut rng)
                .unwrap()
            else {
                panic!("later messages are session messages")
            };
            assert_eq!(s.n, u64::from(n));
            // The sender keeps no key that opens what it already sent.
            let out = a.outbound.as_ref().unwrap();
            assert!(keys[..=usize::from(n)].iter().all(|k| *k != out.chain_key));
            bodies.push((h, s));
        }
        // Open 3 (skipping 0..=2), then 0, then 5.
        for i in [3usize, 0, 5] {
            let (h, s) = &bodies[i];
            b.open(h, s).unwrap();
            let state = &b.inbound[0];
            assert!(
                !inbound_secrets(state).contains(&keys[i]),
                "key {i} still held"
            );
            assert!(matches!(b.open(h, s), Err(OpenError::Replayed)));
        }
        let state = &b.inbound[0];
        // Skipped and not yet opened: 1, 2, 4. Opened: 0, 3, 5.
        assert_eq!(
            state.skipped.keys().copied().collect::<Vec<_>>(),
            vec![1, 2, 4]
        );
        assert_eq!(state.next_n, 6);
        for k in [0usize, 3, 5] {
            assert!(!inbound_secrets(state).contains(&keys[k]));
        }
        // No earlier chain key survives either: the chain key is the 6th.
        assert_eq!(state.chain_key, chain);
    }

    #[test]
    fn failed_open_changes_nothing() {
        let (alice, bob) = (ident(1), ident(2));
        let policy = SessionPolicy::default();
        let mut rng = ChaCha20Rng::seed_from_u64(6);
        let mut a = PeerSessions::default();
        let mut b = PeerSessions::default();
        let h0 = header(&bob, 0);
        let SealedBody::Handshake(hs) = a
            .seal(&alice, &bob.bundle(), &h0, &text("0"), 0, &policy, &mut rng)
            .unwrap()
        else {
            panic!()
        };
        let opened = open_handshake(&bob, &h0, &hs).unwrap();
        let sid = opened.session.id;
        let seed = opened.session.chain_key;
        b.accept(opened.session).unwrap();

        // Authentic ciphertext (right key, right AAD) whose contents are not a Plaintext.
        let h = header(&bob, 7);
        let (mk0, _) = chain_step(&seed);
        let garbage = SessionBody {
            session: sid,
            n: 0,
            ciphertext: aead_seal(&mk0, &session_aad(&h, &sid, 0), b"\xff\xff"),
        };
        let before = codec::encode(&b).unwrap();
        assert!(matches!(b.open(&h, &garbage), Err(OpenError::Malformed(_))));
        // Forged message 10: authentication fails, no keys skipped.
        let forged = SessionBody {
            session: sid,
            n: 10,
            ciphertext: vec![0; 40],
        };
        assert!(matches!(b.open(&h, &forged), Err(OpenError::Tampered)));
        assert_eq!(
            codec::encode(&b).unwrap(),
            before,
            "state changed by failed opens"
        );

        // The genuine message 0 still opens.
        let SealedBody::Session(s) = a
            .seal(
                &alice,
                &bob.bundle(),
                &h,
                &text("real"),
                0,
                &policy,
                &mut rng,
            )
            .unwrap()
        else {
            panic!()
        };
        assert_eq!(b.open(&h, &s).unwrap(), text("real"));
    }

    #[test]
    fn skipped_keys_are_bounded() {
        let (alice, bob) = (ident(1), ident(2));
        let policy = SessionPolicy::default();
        let mut rng = ChaCha20Rng::seed_from_u64(7);
        let mut a = PeerSessions::default();
        let mut b = PeerSessions::default();
        let h = header(&bob, 0);
        let SealedBody::Handshake(hs) = a
            .seal(&alice, &bob.bundle(), &h, &text("0"), 0, &policy, &mut rng)
            .unwrap()
        else {
            panic!()
        };
        b.accept(open_handshake(&bob, &h, &hs).unwrap().session)
            .unwrap();
        let total = MAX_SKIPPED_KEYS as u64 + 3;
        let mut bodies = Vec::new();
        for _ in 0..total {
            let SealedBody::Session(s) = a
                .seal(&alice, &bob.bundle(), &h, &text("m"), 0, &policy, &mut rng)
                .unwrap()
            else {
                panic!()
            };
            bodies.push(s);
        }
        // Skip 0..MAX_SKIPPED_KEYS: exactly the cap.
        let last_in_cap = MAX_SKIPPED_KEYS;
        b.open(&h, &bodies[last_in_cap]).unwrap();
        assert_eq!(b.inbound[0].skipped.len(), MAX_SKIPPED_KEYS);
        // Skip one more: the oldest skipped key (message 0) is forgotten.
        b.open(&h, &bodies[last_in_cap + 2]).unwrap();
        assert_eq!(b.inbound[0].skipped.len(), MAX_SKIPPED_KEYS);
        assert!(!b.inbound[0].skipped.contains_key(&0));
        assert!(matches!(b.open(&h, &bodies[0]), Err(OpenError::Replayed)));
        assert_eq!(b.open(&h, &bodies[1]).unwrap(), text("m"));
        assert_eq!(b.open(&h, &bodies[last_in_cap + 1]).unwrap(), text("m"));
    }

    #[test]
    fn kdf_is_keyed_blake2s_with_one_label_byte() {
        // Known answers from an independent BLAKE2s (Python's hashlib.blake2s(key=...)).
        let key: [u8; 32] = core::array::from_fn(|i| i as u8);
        let hex = |b: [u8; 32]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
        assert_eq!(
            hex(kdf(&key, label::SESSION_ID)),
            "40d15fee7c328830166ac3f918650f807e7e01e177258cdc0a39b11f598066f1"
        );
        assert_eq!(
            hex(kdf(&key, label::MESSAGE_KEY)),
            "09bc37a9299f3c678db55bc9964eaae34f83b16a5dca296eb36c95a6837a5924"
        );
        assert_eq!(
            hex(kdf(&key, label::CHAIN_KEY)),
            "32b9b82cd22f9b25372f0947382b5397acf5db706b17ecb1f43c782fc6b516bc"
        );
        assert_eq!(session_id(&key).0[..], kdf(&key, 0)[..16]);
        // ChaCha20-Poly1305 with the zero nonce (Python's `cryptography`).
        let ct = aead_seal(&key, b"aad", b"hello");
        assert_eq!(
            ct.iter().map(|x| format!("{x:02x}")).collect::<String>(),
            "70dd2e5dc2c6c135327908f33f5b96f2817bd0efae"
        );
        assert_eq!(aead_open(&key, b"aad", &ct).unwrap(), b"hello");
        assert!(matches!(
            aead_open(&key, b"aad!", &ct),
            Err(OpenError::Tampered)
        ));
    }

    #[test]
    fn session_aad_layout() {
        let bob = ident(2);
        let h = header(&bob, 9);
        let sid = SessionId([0xab; 16]);
        let aad = session_aad(&h, &sid, 0x0102);
        let p = h.prologue();
        assert_eq!(&aad[..p.len()], &p[..]);
        assert_eq!(&aad[p.len()..p.len() + 16], &[0xab; 16]);
        assert_eq!(&aad[p.len() + 16..], &[0, 0, 0, 0, 0, 0, 1, 2]);
    }
}
