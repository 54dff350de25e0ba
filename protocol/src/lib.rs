//! Kith's wire protocol: what travels between nodes and how it is sealed end to end.
//!
//! This crate is pure: no sockets, files, clocks or async runtime. Time (`now_ms`) and
//! randomness (`&mut impl CryptoRngCore`) are arguments, and every state the node must
//! keep (identity, prekeys, sessions) is a plain serializable value that the caller stores.
//!
//! # Layout
//! - [`access`]: the recipient's choice of store peers ([`MailboxRegistration`]) and the
//!   [`MailboxAccessKey`] its contacts deposit with.
//! - [`codec`]: the one bincode configuration, with its size limit, used for every format.
//! - [`id`]: [`UserId`] (a libp2p PeerId) and [`MessageId`] (128-bit random).
//! - [`identity`]: the local user's secrets ([`LocalIdentity`], [`PrekeyRing`]) and the
//!   public, signed [`KeyBundle`] others use to seal to them.
//! - [`envelope`]: the [`Envelope`] and its [`SealedBody`], the only thing store peers and
//!   relays see (below [`seal`], so the seal builds on the envelope and never the reverse).
//! - [`seal`]: end-to-end sealing with Noise (`Noise_X_25519_ChaChaPoly_BLAKE2s`) and the
//!   symmetric chain-key sessions that follow a handshake ([`PeerSessions`]).
//! - [`payload`]: what is inside the seal: text, media references, receipts.
//! - [`group`]: group chats: the signed group state chain and sender keys.
//! - [`safety`]: the [`SafetyNumber`] two users compare to verify each other's identity key.
//! - [`status`]: [`DeliveryStatus`], which only moves forward.
//! - [`presence`]: signed [`PresenceRecord`]s and a monotonic [`PresenceTable`].
//! - [`frame`]: length-prefixed framing with a maximum frame size.
//! - [`batch`]: splitting lists of items (envelopes, ids) into batches that fit one frame.
//! - [`wire`]: the frames of the `/kith/msg/1` protocol.
//! - [`mailbox`]: the frames of the `/kith/mailbox/1` protocol (store-and-forward peers).
//! - [`blob`]: media files encrypted in authenticated chunks ([`BlobKey`], [`BlobLayout`])
//!   and named by the hash of their ciphertext ([`BlobHash`]).
//! - [`media`]: the messages of the `/kith/media/1` protocol (moving blobs between nodes).
//!
//! The construction is written down exactly in `protocol/README.md`.

pub mod access;
pub mod backup;
pub mod batch;
pub mod blob;
pub mod codec;
pub mod envelope;
pub mod frame;
pub mod group;
pub mod id;
pub mod identity;
pub mod mailbox;
pub mod media;
pub mod payload;
pub mod presence;
pub mod safety;
pub mod seal;
pub mod status;
pub mod wire;

pub use access::{MailboxAccessKey, MailboxPeer, MailboxRegistration};
pub use blob::{BlobError, BlobHash, BlobHasher, BlobKey, BlobLayout};
pub use envelope::{Envelope, EnvelopeDigest, EnvelopeHeader, PROTOCOL_VERSION};
pub use group::{GroupId, GroupMessage};
pub use id::{MessageId, UserId};
pub use identity::{KeyBundle, LocalIdentity, PrekeyPolicy, PrekeyRing};
pub use payload::{MediaRef, Payload, Plaintext, Receipt, ReceiptKind, Text};
pub use presence::{PresenceRecord, PresenceTable, Visibility};
pub use safety::SafetyNumber;
pub use seal::{OpenError, PeerSessions, SealError, SealedBody, SessionPolicy};
pub use status::DeliveryStatus;
