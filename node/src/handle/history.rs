//! Search and delete-for-me over the stored history: search reads the store's index
//! directly; a delete goes to the messenger, the one writer of messages, so it cannot race
//! a status update writing the message back.

use kith_protocol::{GroupId, MessageId, UserId};

use super::{Command, Node, NodeError, Page, MAX_PAGE};
use crate::store::SearchHit;
use crate::view::{group_message_view, message_view, MessageView};

/// Longest search query, bytes.
pub const MAX_QUERY_LEN: usize = 256;

/// A conversation: with one user, or a group.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChatId {
    /// The one-to-one conversation with this user.
    User(UserId),
    /// This group's conversation.
    Group(GroupId),
}

impl Node {
    /// Messages of every conversation whose text or caption holds every word of `query`
    /// (the last may be half typed), newest first, paged like a conversation.
    pub fn search(&self, query: &str, offset: usize, count: usize) -> Result<Page, NodeError> {
        if count == 0 || count > MAX_PAGE {
            return Err(NodeError::InvalidInput(format!(
                "count must be 1..={MAX_PAGE}"
            )));
        }
        if query.len() > MAX_QUERY_LEN {
            return Err(NodeError::TooLarge {
                what: "query",
                len: query.len(),
                max: MAX_QUERY_LEN,
            });
        }
        let (hits, more) = self.store.search(query, offset, count)?;
        let messages: Vec<MessageView> = hits
            .iter()
            .map(|h| match h {
                SearchHit::OneToOne(m) => message_view(&self.store, &self.user, m),
                SearchHit::Group(m) => group_message_view(&self.store, &self.user, m),
            })
            .collect();
        let next_offset = more.then_some(offset + messages.len());
        Ok(Page {
            messages,
            next_offset,
        })
    }

    /// Everything this node holds, encoded for a backup ([`crate::backup`]): every tree of
    /// its database and, if `media`, its media files. Runs on a blocking thread.
    pub async fn backup_contents(
        &self,
        media: bool,
    ) -> Result<Vec<u8>, crate::backup::BackupError> {
        let store = self.store.clone();
        let user = self.user.to_string();
        let dump = tokio::task::spawn_blocking(move || {
            let (db, path) = store.db_and_path();
            let data_dir = path.parent().unwrap_or(path);
            crate::backup::contents(db, user, data_dir, media, crate::time::now_ms())
                .and_then(|c| crate::backup::encode(&c))
        });
        dump.await.map_err(|e| crate::backup::BackupError::Io {
            path: "(dump task)".into(),
            source: std::io::Error::other(e),
        })?
    }

    /// Tells `peer` that the local user is typing (or stopped): sent only over a direct link
    /// that is up, never queued, deposited or stored. `Ok(true)` when it left.
    pub async fn typing(&self, peer: UserId, typing: bool) -> Result<bool, NodeError> {
        self.call(|reply| Command::Typing {
            peer,
            typing,
            reply,
        })
        .await
    }

    /// Deletes the message `id` of `chat` from this node only ("delete for me").
    pub async fn delete_message(&self, chat: ChatId, id: MessageId) -> Result<(), NodeError> {
        self.call(|reply| Command::DeleteMessage { chat, id, reply })
            .await
    }
}
