//! Inbound session state per peer, and the index from session id to peer.

use kith_protocol::{codec, seal::SessionId, PeerSessions, UserId};

use super::{Store, StoreError};

impl Store {
    /// The stored (inbound) sessions with `peer`.
    /// Sessions that do not decode are quarantined and read as none, so one bad value
    /// does not stop every later message from that peer being processed.
    pub fn sessions(&self, peer: &UserId) -> Result<PeerSessions, StoreError> {
        let key = peer.to_bytes();
        match self.sessions.get(&key)? {
            None => Ok(PeerSessions::default()),
            Some(v) => Ok(self.decode(&self.sessions, &key, &v)?.unwrap_or_default()),
        }
    }

    /// Stores the sessions with `peer` and indexes their inbound session ids.
    pub fn put_sessions(&self, peer: &UserId, sessions: &PeerSessions) -> Result<(), StoreError> {
        let peer_bytes = peer.to_bytes();
        for id in sessions.inbound_ids() {
            self.session_index.insert(id.0, peer_bytes.as_slice())?;
        }
        self.sessions.insert(peer_bytes, codec::encode(sessions)?)?;
        Ok(())
    }

    /// Which peer an inbound session belongs to.
    pub fn session_peer(&self, id: &SessionId) -> Result<Option<UserId>, StoreError> {
        match self.session_index.get(id.0)? {
            None => Ok(None),
            Some(v) => Ok(UserId::from_bytes(&v).ok()),
        }
    }
}
