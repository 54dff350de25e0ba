//! Envelopes sealed by hand, exactly as a node would seal them, for tests that deposit
//! without a node.

use std::collections::HashMap;

use anyhow::Result;
use kith_node::time::now_ms;
use kith_protocol::{
    payload::Text, Envelope, EnvelopeHeader, KeyBundle, LocalIdentity, MessageId, Payload,
    PeerSessions, Plaintext, SessionPolicy, UserId,
};

/// A sender of hand-sealed envelopes: an identity and its sessions with each recipient, so a
/// series of envelopes to one recipient is a handshake followed by session messages, exactly
/// as a node would seal them.
pub struct Sealer {
    /// The sender's identity.
    pub identity: LocalIdentity,
    sessions: HashMap<UserId, PeerSessions>,
    rng: rand::rngs::StdRng,
}

impl Sealer {
    /// A sender with a fresh identity.
    pub fn new() -> Self {
        use rand::SeedableRng;
        let mut rng = rand::rngs::StdRng::from_entropy();
        Sealer {
            identity: LocalIdentity::generate(now_ms(), &mut rng),
            sessions: HashMap::new(),
            rng,
        }
    }

    /// The sender's user id.
    pub fn user_id(&self) -> UserId {
        self.identity.user_id()
    }

    /// Seals `text` for the owner of `to` under a fresh random id, expiring at `expires_at_ms`.
    pub fn text(&mut self, to: &KeyBundle, text: &str, expires_at_ms: u64) -> Result<Envelope> {
        let id = MessageId::random(&mut self.rng);
        self.text_with_id(to, id, text, expires_at_ms)
    }

    /// Seals `text` for the owner of `to` under the id of the test's choosing (such as the
    /// id of someone else's message).
    pub fn text_with_id(
        &mut self,
        to: &KeyBundle,
        id: MessageId,
        text: &str,
        expires_at_ms: u64,
    ) -> Result<Envelope> {
        let header = EnvelopeHeader::new(id, to.user, expires_at_ms);
        let payload = Payload::Text(Text {
            body: text.to_string(),
            client_meta: "{}".to_string(),
        });
        let now = now_ms();
        let plaintext = Plaintext::new(&payload, now)?;
        let body = self.sessions.entry(to.user).or_default().seal(
            &self.identity,
            to,
            &header,
            &plaintext,
            now,
            &SessionPolicy::default(),
            &mut self.rng,
        )?;
        Ok(Envelope { header, body })
    }
}

impl Default for Sealer {
    fn default() -> Self {
        Self::new()
    }
}
