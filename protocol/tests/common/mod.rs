//! Helpers shared by the integration tests.
#![allow(dead_code, clippy::unwrap_used, missing_docs)]

use std::collections::HashMap;

use kith_protocol::{
    seal::{open_handshake, OpenError},
    Envelope, EnvelopeHeader, KeyBundle, LocalIdentity, MessageId, Payload, PeerSessions,
    Plaintext, SealedBody, SessionPolicy, Text, UserId,
};
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

/// Far enough in the future for every test.
pub const EXPIRES: u64 = 4_000_000_000_000;

/// A user with their identity, their sessions per peer, and a seeded RNG.
pub struct User {
    pub me: LocalIdentity,
    pub sessions: HashMap<UserId, PeerSessions>,
    pub rng: ChaCha20Rng,
    pub policy: SessionPolicy,
    next_id: u64,
}

impl User {
    pub fn new(seed: u64) -> Self {
        let mut rng = ChaCha20Rng::seed_from_u64(seed);
        let mut secret = [0u8; 32];
        secret[..8].copy_from_slice(&seed.to_le_bytes());
        let me = LocalIdentity::from_ed25519_secret(secret, 0, &mut rng);
        User {
            me,
            sessions: HashMap::new(),
            rng,
            policy: SessionPolicy::default(),
            next_id: seed << 32,
        }
    }

    pub fn id(&self) -> UserId {
        self.me.user_id()
    }

    pub fn bundle(&self) -> KeyBundle {
        self.me.bundle()
    }

    pub fn header_to(&mut self, to: UserId) -> EnvelopeHeader {
        self.next_id += 1;
        let mut id = [0u8; 16];
        id[..8].copy_from_slice(&self.next_id.to_be_bytes());
        EnvelopeHeader::new(MessageId(id), to, EXPIRES)
    }

    /// Seals `plaintext` to `peer` (whose bundle is given) at `now_ms`.
    pub fn seal_at(&mut self, peer: &KeyBundle, plaintext: &Plaintext, now_ms: u64) -> Envelope {
        let header = self.header_to(peer.user);
        let sessions = self.sessions.entry(peer.user).or_default();
        let body = sessions
            .seal(
                &self.me,
                peer,
                &header,
                plaintext,
                now_ms,
                &self.policy,
                &mut self.rng,
            )
            .unwrap();
        Envelope { header, body }
    }

    pub fn seal(&mut self, peer: &KeyBundle, plaintext: &Plaintext) -> Envelope {
        self.seal_at(peer, plaintext, 0)
    }

    /// Opens an envelope the way a node does: handshake → accept; session → open.
    pub fn open(&mut self, env: &Envelope) -> Result<(UserId, Plaintext), OpenError> {
        match &env.body {
            SealedBody::Handshake(body) => {
                let opened = open_handshake(&self.me, &env.header, body)?;
                let from = opened.sender.user;
                self.sessions
                    .entry(from)
                    .or_default()
                    .accept(opened.session)?;
                Ok((from, opened.plaintext))
            }
            SealedBody::Session(body) => {
                // A node finds the peer by session id; tests look through every peer.
                let (peer, s) = self
                    .sessions
                    .iter_mut()
                    .find(|(_, s)| s.inbound_ids().contains(&body.session))
                    .ok_or(OpenError::UnknownSession)?;
                s.open(&env.header, body).map(|p| (*peer, p))
            }
        }
    }
}

pub fn text(s: &str) -> Plaintext {
    Plaintext::new(
        &Payload::Text(Text {
            body: s.into(),
            client_meta: String::new(),
        }),
        1_700_000_000_000,
    )
    .unwrap()
}

pub fn is_handshake(env: &Envelope) -> bool {
    matches!(env.body, SealedBody::Handshake(_))
}
