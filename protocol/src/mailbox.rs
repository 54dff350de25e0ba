//! Frames of the `/kith/mailbox/1` protocol between nodes and store-and-forward peers.
//!
//! A store peer holds sealed envelopes for offline recipients whose registration names it
//! ([`crate::access`]). It sees the envelope's routing fields (recipient, id, size, expiry),
//! when it arrived and from which IP address; never the sender, the content or a receipt:
//! senders deposit over a connection whose libp2p identity is ephemeral and unlinkable to
//! them, and the envelope header carries no sender. One long-lived stream per node and store
//! peer carries requests one way and answers and pushes the other way.
//!
//! What identifies an envelope on a store peer is (recipient, message id, digest), where the
//! digest is an [`EnvelopeDigest`] of the envelope's canonical encoding. A message id is chosen
//! by its sender and seen by every store peer, so it cannot be trusted to be unique: a different
//! envelope reusing an id for the same recipient is held, pushed and deleted on its own, and
//! identical bytes are one envelope. [`MailboxRequest::Delete`] and
//! [`MailboxResponse::Replicated`] therefore name envelopes by [`EnvelopeRef`] (id and digest;
//! the recipient is the mailbox owner, and is also covered by the digest).

use serde::{Deserialize, Serialize};

use crate::{
    access::{MailboxAccessKey, MailboxRegistration},
    Envelope, EnvelopeDigest, MessageId, PresenceRecord, UserId,
};

/// The libp2p protocol name of the mailbox protocol.
pub const MAILBOX_PROTOCOL: &str = "/kith/mailbox/1";

/// Most envelopes in one [`MailboxResponse::Deliver`] or [`MailboxRequest::Replicate`] batch.
pub const MAX_BATCH: usize = 256;

/// Most envelopes named in one [`MailboxRequest::Delete`].
pub const MAX_DELETE_IDS: usize = 4096;

/// Names one envelope of a mailbox: its message id and the digest of its encoding.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct EnvelopeRef {
    /// The envelope's message id.
    pub id: MessageId,
    /// The digest of the envelope's canonical encoding ([`Envelope::digest`]).
    pub digest: EnvelopeDigest,
}

/// Why a store peer refused to hold an envelope.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RefuseReason {
    /// The envelope is larger than the peer's per-envelope limit.
    TooLarge,
    /// The recipient's mailbox is at its message or byte quota.
    MailboxFull,
    /// The depositor sent too many envelopes in the last minute.
    RateLimited,
    /// The envelope's lifetime has already ended (or is longer than the peer allows).
    Expired,
    /// Not a valid envelope.
    Malformed,
    /// This peer does not store mailboxes.
    NotAStore,
    /// The recipient has not named this peer as one of its store peers (or has not
    /// registered with it): deposit where its current bundle says.
    NotNamed,
    /// This store peer is at its global disk cap: try another (nothing about the mailbox).
    StoreFull,
}

/// A node's (or a peer's) request to a store peer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum MailboxRequest {
    /// Hold this envelope until its recipient fetches it or it expires. With the recipient's
    /// access key it counts against the mailbox's quota; without (a stranger writing), against
    /// the small "requests" allowance.
    Deposit(Envelope, Option<MailboxAccessKey>),
    /// The mailbox owner names its store peers and its access key's verifier (forwarded
    /// unchanged by named store peers to each other; it is signed by the owner).
    Register(MailboxRegistration),
    /// The connection's (Noise-authenticated) peer asks for its own mailbox: everything held
    /// now, then new deposits as they arrive, on this stream.
    Subscribe,
    /// The mailbox owner has these envelopes (or never wants them): delete exactly these,
    /// named by id and digest, so deleting one envelope never deletes another that reuses
    /// its id; remember them so a late copy is not stored again.
    Delete(Vec<EnvelopeRef>),
    /// The sender's presence (a heartbeat), kept for others to ask for.
    Presence(PresenceRecord),
    /// Ask for a user's latest presence record; a record visible to contacts only is served
    /// only with that user's access key.
    GetPresence(UserId, Option<MailboxAccessKey>),
    /// Store peer to store peer: copies of envelopes that the receiver is now responsible for
    /// (merged by recipient, id and digest, like deposits). Accepted only from a store peer
    /// named for the envelopes' mailbox; `requests` came without an access key and stay in the
    /// requests allowance.
    Replicate {
        /// Copies of envelopes deposited with the access key.
        envelopes: Vec<Envelope>,
        /// Copies of envelopes deposited without it.
        requests: Vec<Envelope>,
    },
}

/// A store peer's answer or push.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum MailboxResponse {
    /// The envelope is durably stored (or already was).
    Stored(MessageId),
    /// The envelope was refused.
    Refused(MessageId, RefuseReason),
    /// Envelopes from the subscriber's mailbox.
    Deliver(Vec<Envelope>),
    /// A user's latest presence record, if held and shared.
    Presence(UserId, Option<PresenceRecord>),
    /// Replicated copies are stored (or already were).
    Replicated(Vec<EnvelopeRef>),
}
