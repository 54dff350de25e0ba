//! The cloneable handle the rest of the program (REST API, CLI, tests, demo) uses to talk to
//! a running node, and the views it answers with.
//!
//! Every call is a [`Command`] sent over a bounded channel to the [`crate::messenger`] task,
//! answered on a oneshot channel; reads of stored history go straight to the [`Store`], which
//! is safe to read concurrently.

use kith_protocol::{DeliveryStatus, UserId};
use libp2p::Multiaddr;
use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, mpsc, oneshot};

use crate::{
    net::Network,
    store::{Store, StoreError},
};

/// Largest page of history one call returns.
pub const MAX_PAGE: usize = 200;

/// Why a node call failed. The REST layer maps each variant to one HTTP status.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NodeError {
    /// The user is not a contact of this node.
    #[error("unknown contact {0}")]
    UnknownContact(String),
    /// The request is malformed (bad field, bad paging value, empty text...).
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// A field or body is larger than allowed.
    #[error("{what} is {len} bytes, over the {max}-byte limit")]
    TooLarge {
        /// What was too large.
        what: &'static str,
        /// Its size.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// An invite that does not parse or whose bundle does not verify.
    #[error("invalid invite: {0}")]
    BadInvite(String),
    /// Nothing was found (e.g. no key bundle for a user in the DHT).
    #[error("not found: {0}")]
    NotFound(String),
    /// The node is shutting down or its task has stopped.
    #[error("node is not running")]
    Stopped,
    /// The node's queue is full; try again.
    #[error("node is busy")]
    Busy,
    /// The local store failed.
    #[error("storage: {0}")]
    Storage(#[from] StoreError),
}

/// The local user, as `GET /v1/me` shows it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Me {
    /// This node's user id.
    pub user_id: String,
    /// Addresses this node listens on (full multiaddrs ending in `/p2p/<id>`).
    pub listen_addrs: Vec<String>,
    /// One string carrying user id, addresses and key bundle, to give to a contact.
    pub invite: String,
}

/// A contact.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ContactView {
    /// The contact's user id.
    pub user_id: String,
    /// The name the local user gave them (may be empty).
    pub name: String,
    /// Known addresses.
    pub addrs: Vec<String>,
}

/// One message of a conversation, as the API shows it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct MessageView {
    /// Message id (32 hex digits).
    pub id: String,
    /// Sender's user id.
    pub from: String,
    /// Recipient's user id.
    pub to: String,
    /// The text.
    pub text: String,
    /// The sender's client metadata (a JSON object).
    pub client_meta: serde_json::Value,
    /// When the sender composed it (RFC 3339, UTC).
    pub sent_at: String,
    /// Same, unix milliseconds.
    pub sent_at_ms: u64,
    /// For messages we sent: pending / sent / delivered / read. For messages we received:
    /// delivered, or read once the local user read them.
    pub status: DeliveryStatus,
    /// Whether the local user sent it.
    pub outgoing: bool,
    /// The image, video or file it carries (its `text` is then the caption).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media: Option<Box<crate::media::MediaView>>,
}

/// A page of a conversation, newest first.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Page {
    /// The messages, newest first.
    pub messages: Vec<MessageView>,
    /// The offset of the next (older) page, if there is one.
    pub next_offset: Option<usize>,
}

/// What the API answers to a send.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Sent {
    /// The new message's id.
    pub id: String,
    /// Its status (pending until a peer holds it).
    pub status: DeliveryStatus,
}

/// A contact's presence, as the local user may see it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct PresenceView {
    /// Online now.
    pub online: bool,
    /// When last seen (RFC 3339), if known and shared.
    pub last_seen: Option<String>,
    /// Same, unix milliseconds.
    pub last_seen_ms: Option<u64>,
}

/// Something that happened, pushed to `/v1/events` subscribers.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    /// A message was stored (received, or accepted for sending).
    Message {
        /// The peer of the conversation.
        peer: String,
        /// The message.
        message: MessageView,
    },
    /// A sent message's status moved forward.
    Status {
        /// The peer of the conversation.
        peer: String,
        /// The message id.
        id: String,
        /// Its new status.
        status: DeliveryStatus,
    },
    /// A media upload or download moved on.
    MediaProgress {
        /// The peer of the conversation.
        peer: String,
        /// The message carrying the media.
        id: String,
        /// The blob hash (hex).
        hash: String,
        /// uploading | available | downloading | complete | failed.
        state: crate::media::MediaState,
        /// Fraction done, 0..1.
        progress: f64,
    },
    /// A contact's presence changed.
    Presence {
        /// The contact.
        user: String,
        /// The new presence.
        presence: PresenceView,
    },
}

/// A request from a [`Node`] handle to the messenger task; each carries the oneshot its
/// answer goes back on.
pub(crate) enum Command {
    Me {
        reply: oneshot::Sender<Result<Me, NodeError>>,
    },
    AddContact {
        invite: String,
        name: Option<String>,
        reply: oneshot::Sender<Result<ContactView, NodeError>>,
    },
    AddContactById {
        user: UserId,
        name: Option<String>,
        reply: oneshot::Sender<Result<ContactView, NodeError>>,
    },
    SendText {
        to: UserId,
        text: String,
        client_meta: serde_json::Value,
        reply: oneshot::Sender<Result<Sent, NodeError>>,
    },
    SendMedia {
        to: UserId,
        media: Box<kith_protocol::payload::MediaRef>,
        reply: oneshot::Sender<Result<Sent, NodeError>>,
    },
    MarkRead {
        peer: UserId,
        reply: oneshot::Sender<Result<usize, NodeError>>,
    },
    Presence {
        peer: UserId,
        reply: oneshot::Sender<Result<PresenceView, NodeError>>,
    },
    SetSharePresence {
        share: bool,
        reply: oneshot::Sender<Result<(), NodeError>>,
    },
}

/// A cloneable handle to a running node.
#[derive(Clone)]
pub struct Node {
    pub(crate) commands: mpsc::Sender<Command>,
    pub(crate) events: broadcast::Sender<Event>,
    pub(crate) store: Store,
    pub(crate) user: UserId,
    pub(crate) net: Network,
    pub(crate) transfers: crate::transfer::TransferHandle,
}

impl Node {
    async fn call<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<T, NodeError>>) -> Command,
    ) -> Result<T, NodeError> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(make(tx))
            .await
            .map_err(|_| NodeError::Stopped)?;
        rx.await.map_err(|_| NodeError::Stopped)?
    }

    /// This node's user id.
    pub fn user_id(&self) -> UserId {
        self.user
    }

    /// The addresses the node listens on, each ending in `/p2p/<peer id>`.
    pub fn listen_addrs(&self) -> Vec<Multiaddr> {
        let peer = self.user.peer_id();
        self.net
            .listen_addrs()
            .into_iter()
            .map(|a| a.with_p2p(peer).unwrap_or_else(|a| a))
            .collect()
    }

    /// The local user, addresses and invite.
    pub async fn me(&self) -> Result<Me, NodeError> {
        self.call(|reply| Command::Me { reply }).await
    }

    /// Adds (or updates) a contact from an invite string.
    pub async fn add_contact(
        &self,
        invite: &str,
        name: Option<String>,
    ) -> Result<ContactView, NodeError> {
        let invite = invite.to_string();
        self.call(|reply| Command::AddContact {
            invite,
            name,
            reply,
        })
        .await
    }

    /// Adds a contact by user id alone, taking their key bundle from the DHT.
    pub async fn add_contact_by_id(
        &self,
        user: UserId,
        name: Option<String>,
    ) -> Result<ContactView, NodeError> {
        self.call(|reply| Command::AddContactById { user, name, reply })
            .await
    }

    /// All contacts.
    pub fn contacts(&self) -> Result<Vec<ContactView>, NodeError> {
        Ok(self
            .store
            .contacts()?
            .into_iter()
            .map(|c| c.view())
            .collect())
    }

    /// Sends a text to a contact (the design's `SendMessage`): durable when this returns.
    pub async fn send_text(
        &self,
        to: UserId,
        text: String,
        client_meta: serde_json::Value,
    ) -> Result<Sent, NodeError> {
        self.call(|reply| Command::SendText {
            to,
            text,
            client_meta,
            reply,
        })
        .await
    }

    /// A page of the conversation with `peer`, newest first (the design's `Conversation`):
    /// skip `offset` newest messages, return at most `count` (capped at [`MAX_PAGE`]), and only
    /// messages composed after `since_ms` when given.
    pub fn conversation(
        &self,
        peer: &UserId,
        offset: usize,
        count: usize,
        since_ms: Option<u64>,
    ) -> Result<Page, NodeError> {
        if count == 0 || count > MAX_PAGE {
            return Err(NodeError::InvalidInput(format!(
                "count must be 1..={MAX_PAGE}"
            )));
        }
        if self.store.contact(peer)?.is_none() {
            return Err(NodeError::UnknownContact(peer.to_string()));
        }
        let (messages, more) = self.store.page(&self.user, peer, offset, count, since_ms)?;
        let next_offset = more.then_some(offset + messages.len());
        Ok(Page {
            messages,
            next_offset,
        })
    }

    /// Marks every received message of the conversation read and sends the read receipt.
    /// Returns how many messages were newly marked.
    pub async fn mark_read(&self, peer: UserId) -> Result<usize, NodeError> {
        self.call(|reply| Command::MarkRead { peer, reply }).await
    }

    /// A contact's presence.
    pub async fn presence(&self, peer: UserId) -> Result<PresenceView, NodeError> {
        self.call(|reply| Command::Presence { peer, reply }).await
    }

    /// Whether the local user shares last seen / online.
    pub async fn set_share_presence(&self, share: bool) -> Result<(), NodeError> {
        self.call(|reply| Command::SetSharePresence { share, reply })
            .await
    }

    /// Subscribes to events (new messages, status changes, presence).
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.events.subscribe()
    }

    /// Sends a media message whose plaintext file is already at
    /// [`crate::media::MediaFiles::sent_path`] of its hash (see `POST /v1/media`).
    pub async fn send_media(
        &self,
        to: UserId,
        media: kith_protocol::payload::MediaRef,
    ) -> Result<Sent, NodeError> {
        self.call(|reply| Command::SendMedia {
            to,
            media: Box::new(media),
            reply,
        })
        .await
    }

    /// The media record the local user means by a blob hash: one they sent, else a complete
    /// one, else one in progress, else any (see [`Node::media_records`] for all of them).
    pub fn media(
        &self,
        hash: &kith_protocol::blob::BlobHash,
    ) -> Result<Option<crate::media::MediaRecord>, NodeError> {
        Ok(self.store.media_by_hash(hash)?)
    }

    /// Every media record naming a blob hash, one per message that carried it.
    pub fn media_records(
        &self,
        hash: &kith_protocol::blob::BlobHash,
    ) -> Result<Vec<crate::media::MediaRecord>, NodeError> {
        Ok(self.store.media_for_hash(hash)?)
    }

    /// The media record of one message.
    pub fn media_record(
        &self,
        id: &crate::media::MediaId,
    ) -> Result<Option<crate::media::MediaRecord>, NodeError> {
        Ok(self.store.media(id)?)
    }

    /// Largest media file this node takes from its user, in bytes.
    pub fn max_media_bytes(&self) -> u64 {
        self.transfers.max_media_bytes()
    }

    /// The media files of this node.
    pub fn media_files(&self) -> &crate::media::MediaFiles {
        self.transfers.files()
    }

    /// Media chunk counters of this node: (served to peers, fetched and verified, rejected).
    pub fn media_counters(&self) -> (u64, u64, u64) {
        self.transfers.counters()
    }
}
