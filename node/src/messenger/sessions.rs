//! Sessions: sealing outgoing entries and loading stored sessions.

use kith_protocol::seal::{InboundSession, SessionBody};
use rand::{CryptoRng, RngCore};

use super::*;

/// Why an outbox entry could not be sealed; the entry then stays queued.
#[derive(Debug, thiserror::Error)]
pub(super) enum SealFailure {
    /// The recipient is not (or no longer) a contact: we have no bundle to seal to.
    #[error("recipient is not a contact")]
    NotAContact,
    /// The protocol could not seal it (bad bundle, too large, Noise failure).
    #[error(transparent)]
    Seal(#[from] kith_protocol::SealError),
}

/// Every peer's sessions, and which peer each inbound session belongs to.
///
/// Pure: loading from and saving to the store is the shell's; the RNG and the time are
/// passed in.
#[derive(Default)]
pub(super) struct Sessions {
    /// Sessions by peer, for the peers loaded so far.
    by_peer: HashMap<UserId, PeerSessions>,
    /// The peer of each inbound session we know (to attribute a session message).
    owner: HashMap<SessionId, UserId>,
}

impl Sessions {
    /// Whether `user`'s sessions are in memory.
    pub(super) fn is_loaded(&self, user: &UserId) -> bool {
        self.by_peer.contains_key(user)
    }

    /// Takes `user`'s stored sessions.
    pub(super) fn load(&mut self, user: UserId, sessions: PeerSessions) {
        for id in sessions.inbound_ids() {
            self.owner.insert(id, user);
        }
        self.by_peer.insert(user, sessions);
    }

    /// `user`'s sessions, to be stored.
    pub(super) fn get(&self, user: &UserId) -> Option<&PeerSessions> {
        self.by_peer.get(user)
    }

    /// The peer an inbound session belongs to, if we know it.
    pub(super) fn owner(&self, session: &SessionId) -> Option<UserId> {
        self.owner.get(session).copied()
    }

    /// Makes the next envelope to `user` start a fresh session (a handshake).
    pub(super) fn forget_outbound(&mut self, user: &UserId) {
        if let Some(s) = self.by_peer.get_mut(user) {
            s.forget_outbound();
        }
    }

    /// Seals `entry` for its recipient, whose bundle is `bundle`.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn seal(
        &mut self,
        me: &LocalIdentity,
        bundle: &KeyBundle,
        entry: &OutboxEntry,
        now_ms: u64,
        policy: &SessionPolicy,
        rng: &mut (impl RngCore + CryptoRng),
    ) -> Result<Envelope, kith_protocol::SealError> {
        let header = EnvelopeHeader::new(entry.id, entry.to, entry.expires_at_ms);
        let sessions = self.by_peer.entry(entry.to).or_default();
        let body = sessions.seal(me, bundle, &header, &entry.plaintext, now_ms, policy, rng)?;
        Ok(Envelope { header, body })
    }

    /// Takes the session `sender`'s handshake started; its messages are `sender`'s from now.
    pub(super) fn accept(
        &mut self,
        sender: UserId,
        session: InboundSession,
    ) -> Result<(), OpenError> {
        let id = session.id();
        let sessions = self.by_peer.entry(sender).or_default();
        let before = sessions.inbound_ids();
        sessions.accept(session)?;
        // Sessions the peer's new one pushed out are forgotten here too, so this index stays
        // as small as the sessions themselves.
        let now = sessions.inbound_ids();
        for old in before.iter().filter(|s| !now.contains(s)) {
            self.owner.remove(old);
        }
        self.owner.insert(id, sender);
        Ok(())
    }

    /// Forgets everything about `user`'s sessions (no longer a contact).
    pub(super) fn forget(&mut self, user: &UserId) {
        if let Some(s) = self.by_peer.remove(user) {
            for id in s.inbound_ids() {
                self.owner.remove(&id);
            }
        }
    }

    /// Opens a message in one of `sender`'s sessions.
    pub(super) fn open(
        &mut self,
        sender: UserId,
        header: &EnvelopeHeader,
        body: &SessionBody,
    ) -> Result<Plaintext, OpenError> {
        self.by_peer.entry(sender).or_default().open(header, body)
    }
}

#[cfg(test)]
mod tests {
    use kith_protocol::{seal::open_handshake, SealedBody};
    use rand::{rngs::StdRng, SeedableRng};

    use super::*;

    struct Pair {
        rng: StdRng,
        alice: LocalIdentity,
        bob: LocalIdentity,
        policy: SessionPolicy,
    }

    impl Pair {
        fn new() -> Self {
            let mut rng = StdRng::seed_from_u64(9);
            let alice = LocalIdentity::generate(0, &mut rng);
            let bob = LocalIdentity::generate(0, &mut rng);
            Pair {
                rng,
                alice,
                bob,
                policy: SessionPolicy::default(),
            }
        }

        /// Alice seals a text to Bob with her sessions.
        fn seal(&mut self, sessions: &mut Sessions, body: &str) -> Envelope {
            let payload = Payload::Text(Text {
                body: body.into(),
                client_meta: "{}".into(),
            });
            let entry = OutboxEntry {
                seq: 1,
                id: MessageId::random(&mut self.rng),
                to: self.bob.user_id(),
                plaintext: Plaintext::new(&payload, 1_000).expect("plaintext"),
                expires_at_ms: u64::MAX,
                tracked: true,
            };
            let bundle = self.bob.bundle();
            sessions
                .seal(
                    &self.alice,
                    &bundle,
                    &entry,
                    1_000,
                    &self.policy,
                    &mut self.rng,
                )
                .expect("seal")
        }
    }

    #[test]
    fn a_session_accepted_from_a_handshake_attributes_its_messages_to_the_sender() {
        let mut p = Pair::new();
        let (mut alice_s, mut bob_s) = (Sessions::default(), Sessions::default());
        let alice = p.alice.user_id();
        let first = p.seal(&mut alice_s, "one");
        let SealedBody::Handshake(hs) = &first.body else {
            panic!("the first envelope must start a session");
        };
        let opened = open_handshake(&p.bob, &first.header, hs).expect("open handshake");
        bob_s.accept(alice, opened.session).expect("accept");
        let second = p.seal(&mut alice_s, "two");
        let SealedBody::Session(body) = &second.body else {
            panic!("the second envelope must use the session");
        };
        assert_eq!(bob_s.owner(&body.session), Some(alice));
        assert!(bob_s.open(alice, &second.header, body).is_ok());
        assert!(
            matches!(
                bob_s.open(alice, &second.header, body),
                Err(OpenError::Replayed)
            ),
            "the same message twice is a replay"
        );
    }

    #[test]
    fn forgetting_the_outbound_session_makes_the_next_envelope_a_handshake() {
        let mut p = Pair::new();
        let mut alice_s = Sessions::default();
        let bob = p.bob.user_id();
        p.seal(&mut alice_s, "one");
        assert!(matches!(
            p.seal(&mut alice_s, "two").body,
            SealedBody::Session(_)
        ));
        alice_s.forget_outbound(&bob);
        assert!(matches!(
            p.seal(&mut alice_s, "three").body,
            SealedBody::Handshake(_)
        ));
    }

    #[test]
    fn stored_sessions_know_whose_inbound_sessions_they_are() {
        let mut p = Pair::new();
        let (mut alice_s, mut bob_s) = (Sessions::default(), Sessions::default());
        let alice = p.alice.user_id();
        let first = p.seal(&mut alice_s, "one");
        let SealedBody::Handshake(hs) = &first.body else {
            panic!("the first envelope must start a session");
        };
        let opened = open_handshake(&p.bob, &first.header, hs).expect("open handshake");
        let session = opened.session.id();
        bob_s.accept(alice, opened.session).expect("accept");
        // What the shell stores, then loads after a restart.
        let stored = bob_s
            .get(&alice)
            .cloned()
            .expect("bob has alice's sessions");
        let mut restarted = Sessions::default();
        assert!(!restarted.is_loaded(&alice));
        assert_eq!(restarted.owner(&session), None);
        restarted.load(alice, stored);
        assert!(restarted.is_loaded(&alice));
        assert_eq!(restarted.owner(&session), Some(alice));
    }
}
