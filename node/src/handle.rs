//! The cloneable handle the rest of the program (REST API, CLI, tests, demo) uses to talk to
//! a running node. Its views, events and errors live in [`crate::view`], [`crate::event`] and
//! [`crate::error`] (re-exported here), below the store and the messenger.
//!
//! Every call is a [`Command`] sent over a bounded channel to the [`crate::messenger`] task,
//! answered on a oneshot channel; reads of stored history go straight to the [`Store`], which
//! is safe to read concurrently.

use kith_protocol::{group::GroupChange, GroupId, UserId};
use libp2p::Multiaddr;
use tokio::sync::{broadcast, mpsc, oneshot};

use crate::{net::Network, store::Store};

pub use crate::{
    error::NodeError,
    event::Event,
    view::{
        BlockedView, ContactRoute, ContactView, GroupView, Me, MessageInfo, MessageView, Page,
        PresenceView, RequestView, SafetyNumberView, Sent, MAX_PAGE,
    },
};

/// What the local user says about a file they send.
#[derive(Clone, Debug)]
pub struct FileToSend {
    /// The file name shown to the recipient (already sanitized).
    pub name: String,
    /// Its MIME type, as carried to the recipient.
    pub mime: String,
    /// The caption (may be empty).
    pub caption: String,
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
    Typing {
        peer: UserId,
        typing: bool,
        reply: oneshot::Sender<Result<bool, NodeError>>,
    },
    Settings {
        reply: oneshot::Sender<Result<crate::settings::Settings, NodeError>>,
    },
    SetSettings {
        change: crate::settings::SettingsChange,
        reply: oneshot::Sender<Result<crate::settings::Settings, NodeError>>,
    },
    SetVerified {
        user: UserId,
        verified: bool,
        reply: oneshot::Sender<Result<ContactView, NodeError>>,
    },
    AcceptRequest {
        user: UserId,
        reply: oneshot::Sender<Result<ContactView, NodeError>>,
    },
    Block {
        user: UserId,
        reply: oneshot::Sender<Result<(), NodeError>>,
    },
    Unblock {
        user: UserId,
        reply: oneshot::Sender<Result<(), NodeError>>,
    },
    RemoveContact {
        user: UserId,
        reply: oneshot::Sender<Result<(), NodeError>>,
    },
    CreateGroup {
        name: String,
        members: Vec<UserId>,
        reply: oneshot::Sender<Result<GroupView, NodeError>>,
    },
    ChangeGroup {
        group: GroupId,
        change: GroupChange,
        reply: oneshot::Sender<Result<GroupView, NodeError>>,
    },
    SendGroupText {
        group: GroupId,
        text: String,
        client_meta: serde_json::Value,
        reply: oneshot::Sender<Result<Sent, NodeError>>,
    },
    SendGroupMedia {
        group: GroupId,
        media: Box<kith_protocol::payload::MediaRef>,
        reply: oneshot::Sender<Result<Sent, NodeError>>,
    },
    MarkGroupRead {
        group: GroupId,
        reply: oneshot::Sender<Result<usize, NodeError>>,
    },
    DeleteMessage {
        chat: ChatId,
        id: kith_protocol::MessageId,
        reply: oneshot::Sender<Result<(), NodeError>>,
    },
}

/// What [`Node::send_file`] answers: the message and the blob it carries.
#[derive(Clone, Debug)]
pub struct SentFile {
    /// The media message.
    pub sent: Sent,
    /// The blob's hash.
    pub hash: kith_protocol::blob::BlobHash,
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

    /// What the node's own Kademlia queries have cost so far (simulations report it).
    pub fn kad_stats(&self) -> kith_net::KadTotals {
        self.net.kad_stats()
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
            .map(|c| crate::view::contact_view(&self.store, &c))
            .collect())
    }

    /// Pending message requests: people who wrote without being a contact, newest first.
    pub fn requests(&self) -> Result<Vec<RequestView>, NodeError> {
        let max = crate::config::DEFAULT_MAX_REQUEST_MESSAGES.max(MAX_PAGE);
        let mut out = Vec::new();
        for c in self.store.requests()? {
            out.push(RequestView {
                user_id: c.user.to_string(),
                messages: self.store.unread_count(&c.user, max)?,
                since_ms: c.added_at_ms,
            });
        }
        out.sort_by_key(|r| std::cmp::Reverse(r.since_ms));
        Ok(out)
    }

    /// Accepts a message request: its sender becomes a contact (dialled, owed receipts, media
    /// fetched per policy).
    pub async fn accept_request(&self, user: UserId) -> Result<ContactView, NodeError> {
        self.call(|reply| Command::AcceptRequest { user, reply })
            .await
    }

    /// Blocks a user (a request or a contact): their envelopes are acknowledged and dropped.
    pub async fn block(&self, user: UserId) -> Result<(), NodeError> {
        self.call(|reply| Command::Block { user, reply }).await
    }

    /// Unblocks a user.
    pub async fn unblock(&self, user: UserId) -> Result<(), NodeError> {
        self.call(|reply| Command::Unblock { user, reply }).await
    }

    /// How many messages and receipts still wait in the outbox to leave for `peer` (a
    /// request's sender has none: they are owed nothing until accepted).
    pub fn outbox_to(&self, peer: &UserId) -> Result<usize, NodeError> {
        Ok(self
            .store
            .outbox_all()?
            .iter()
            .filter(|e| e.to == *peer)
            .count())
    }

    /// Blocked users.
    pub fn blocked(&self) -> Result<Vec<BlockedView>, NodeError> {
        Ok(self
            .store
            .blocked()?
            .into_iter()
            .map(|(user, at)| BlockedView {
                user_id: user.to_string(),
                since_ms: at,
            })
            .collect())
    }

    /// Removes a contact (their history stays; what was still to be sent to them is dropped).
    pub async fn remove_contact(&self, user: UserId) -> Result<(), NodeError> {
        self.call(|reply| Command::RemoveContact { user, reply })
            .await
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
        // A pending request's messages may be read before accepting (reading sends nothing).
        if self.store.contact(peer)?.is_none() && self.store.request(peer)?.is_none() {
            return Err(NodeError::UnknownContact(peer.to_string()));
        }
        let (records, more) = self.store.page(peer, offset, count, since_ms)?;
        let messages: Vec<MessageView> = records
            .iter()
            .map(|m| crate::view::message_view(&self.store, &self.user, m))
            .collect();
        let next_offset = more.then_some(offset + messages.len());
        Ok(Page {
            messages,
            next_offset,
        })
    }

    /// How many received messages of the conversation with `peer` the local user has not read,
    /// counting at most `limit` (from the store's unread marks, without reading messages).
    pub fn unread(&self, peer: &UserId, limit: usize) -> Result<usize, NodeError> {
        Ok(self.store.unread_count(peer, limit)?)
    }

    /// Marks every received message of the conversation read and sends the read receipt.
    /// Returns how many messages were newly marked.
    pub async fn mark_read(&self, peer: UserId) -> Result<usize, NodeError> {
        self.call(|reply| Command::MarkRead { peer, reply }).await
    }

    /// A contact's presence, and the route messages to it take now.
    pub async fn presence(&self, peer: UserId) -> Result<PresenceView, NodeError> {
        self.call(|reply| Command::Presence { peer, reply }).await
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

    /// Fails with [`NodeError::UnknownContact`] unless `peer` is a contact or a pending
    /// request (sending to one accepts it), checked before a caller takes a large upload for
    /// them.
    pub fn check_contact(&self, peer: &UserId) -> Result<(), NodeError> {
        if self.store.contact(peer)?.is_some() || self.store.request(peer)?.is_some() {
            return Ok(());
        }
        Err(NodeError::UnknownContact(peer.to_string()))
    }

    /// Sends the file at `temp` (written under [`crate::media::MediaFiles::temp_path`]) to a
    /// contact as a media message: seals it under a fresh key to name its blob, keeps it as a
    /// sent file, and sends the reference. `temp` is gone when this returns, whatever happened.
    pub async fn send_file(
        &self,
        to: UserId,
        temp: std::path::PathBuf,
        file: FileToSend,
    ) -> Result<SentFile, NodeError> {
        let checked = self.check_contact(&to);
        let (media, hash) = self.prepare_file(checked, temp, file).await?;
        let sent = self.send_media(to, media).await?;
        Ok(SentFile { sent, hash })
    }

    /// Encrypts and hashes an uploaded file into a [`kith_protocol::payload::MediaRef`] once
    /// `checked` (whether it may be sent) is `Ok`; the temporary file is removed on failure.
    pub(crate) async fn prepare_file(
        &self,
        checked: Result<(), NodeError>,
        temp: std::path::PathBuf,
        file: FileToSend,
    ) -> Result<
        (
            kith_protocol::payload::MediaRef,
            kith_protocol::blob::BlobHash,
        ),
        NodeError,
    > {
        let prepared = match checked {
            Ok(()) => {
                let files = self.media_files().clone();
                let (temp, mime) = (temp.clone(), file.mime.clone());
                tokio::task::spawn_blocking(move || {
                    crate::media::prepare_upload(&files, &temp, &mime)
                })
                .await
                .map_err(crate::media::MediaError::from)
                .and_then(|r| r)
                .map_err(NodeError::from)
            }
            Err(e) => Err(e),
        };
        let (prepared, key) = match prepared {
            Ok(p) => p,
            Err(e) => {
                let _ = tokio::fs::remove_file(&temp).await;
                return Err(e);
            }
        };
        let hash = prepared.hash;
        let media = kith_protocol::payload::MediaRef {
            hash: hash.0,
            size: prepared.size,
            chunk_size: kith_protocol::blob::DEFAULT_CHUNK_SIZE,
            mime: file.mime,
            name: file.name,
            key: key.0,
            preview: prepared.preview,
            caption: file.caption,
        };
        Ok((media, hash))
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

    /// Starts fetching a received message's media that waits for the user (larger than the
    /// auto-download limit) or failed (no holder served it in time; resumes where it
    /// stopped). Only from a contact: a request's media waits for them to be accepted.
    pub fn fetch_media(
        &self,
        id: &crate::media::MediaId,
    ) -> Result<crate::media::MediaRecord, NodeError> {
        use crate::media::MediaState;
        let Some(mut rec) = self.store.media(id)? else {
            return Err(NodeError::NotFound(format!("no media {id}")));
        };
        if rec.outgoing {
            return Err(NodeError::InvalidInput(
                "that media is one you sent: there is nothing to fetch".into(),
            ));
        }
        if !matches!(rec.state, MediaState::Waiting | MediaState::Failed) {
            return Ok(rec);
        }
        if self.store.contact(&rec.peer)?.is_none() {
            return Err(NodeError::InvalidInput(format!(
                "{} is not a contact: accept their request first",
                rec.peer
            )));
        }
        // A failed download whose partial file was removed (it did not hash right) starts over.
        if !self.media_files().part_path(id).exists() {
            rec.done_chunks = 0;
        }
        rec.state = MediaState::Downloading;
        self.transfers.put_record(&rec)?;
        self.transfers.start(*id);
        Ok(rec)
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

mod groups;
mod history;

pub use history::{ChatId, MAX_QUERY_LEN};
mod settings;
