//! The group calls of the [`Node`] handle: changes go to the messenger as commands; views
//! of groups, their conversations and message info are read from the store.

use kith_protocol::{group::GroupChange, GroupId, MessageId, UserId};

use super::{Command, GroupView, MessageInfo, Node, NodeError, Page, Sent, MAX_PAGE};
use crate::view::{group_message_view, group_view, MemberStatusView, MessageView};

impl Node {
    fn contact_name(&self, user: &UserId) -> String {
        self.store
            .contact(user)
            .ok()
            .flatten()
            .map(|c| c.name)
            .unwrap_or_default()
    }

    /// Creates a group named `name` with `members` (contacts) and the local user as admin.
    pub async fn create_group(
        &self,
        name: String,
        members: Vec<UserId>,
    ) -> Result<GroupView, NodeError> {
        self.call(|reply| Command::CreateGroup {
            name,
            members,
            reply,
        })
        .await
    }

    /// Makes one change to a group as the local user (admins only, but for leaving).
    pub async fn change_group(
        &self,
        group: GroupId,
        change: GroupChange,
    ) -> Result<GroupView, NodeError> {
        self.call(|reply| Command::ChangeGroup {
            group,
            change,
            reply,
        })
        .await
    }

    /// Every group the local user is or was in.
    pub fn groups(&self) -> Result<Vec<GroupView>, NodeError> {
        Ok(self
            .store
            .groups()?
            .iter()
            .map(|r| group_view(r, &self.user, |u| self.contact_name(u)))
            .collect())
    }

    /// One group.
    pub fn group(&self, group: &GroupId) -> Result<GroupView, NodeError> {
        let record = self
            .store
            .group(group)?
            .ok_or_else(|| NodeError::NotFound(format!("no group {group}")))?;
        Ok(group_view(&record, &self.user, |u| self.contact_name(u)))
    }

    /// Sends a text to a group; answered once durable.
    pub async fn send_group_text(
        &self,
        group: GroupId,
        text: String,
        client_meta: serde_json::Value,
    ) -> Result<Sent, NodeError> {
        self.call(|reply| Command::SendGroupText {
            group,
            text,
            client_meta,
            reply,
        })
        .await
    }

    /// Sends a file to a group (prepared once; each member fetches the same blob).
    pub async fn send_group_file(
        &self,
        group: GroupId,
        temp: std::path::PathBuf,
        file: crate::handle::FileToSend,
    ) -> Result<crate::handle::SentFile, NodeError> {
        let checked = self.check_group_member(&group);
        let (media, hash) = self.prepare_file(checked, temp, file).await?;
        let sent = self
            .call(|reply| Command::SendGroupMedia {
                group,
                media: Box::new(media),
                reply,
            })
            .await?;
        Ok(crate::handle::SentFile { sent, hash })
    }

    /// Fails unless the local user is a member of `group` (checked before a large upload).
    pub fn check_group_member(&self, group: &GroupId) -> Result<(), NodeError> {
        let record = self
            .store
            .group(group)?
            .ok_or_else(|| NodeError::NotFound(format!("no group {group}")))?;
        if !record.active || !record.chain.head().state.is_member(&self.user) {
            return Err(NodeError::NotMember(group.to_string()));
        }
        Ok(())
    }

    /// Marks a group's received messages read (read receipts go to their senders).
    pub async fn mark_group_read(&self, group: GroupId) -> Result<usize, NodeError> {
        self.call(|reply| Command::MarkGroupRead { group, reply })
            .await
    }

    /// A page of a group's conversation, newest first.
    pub fn group_conversation(
        &self,
        group: &GroupId,
        offset: usize,
        count: usize,
        since_ms: Option<u64>,
    ) -> Result<Page, NodeError> {
        if count == 0 || count > MAX_PAGE {
            return Err(NodeError::InvalidInput(format!(
                "count must be 1..={MAX_PAGE}"
            )));
        }
        if self.store.group(group)?.is_none() {
            return Err(NodeError::NotFound(format!("no group {group}")));
        }
        let (records, more) = self.store.group_page(group, offset, count, since_ms)?;
        let messages: Vec<MessageView> = records
            .iter()
            .map(|m| group_message_view(&self.store, &self.user, m))
            .collect();
        let next_offset = more.then_some(offset + messages.len());
        Ok(Page {
            messages,
            next_offset,
        })
    }

    /// How many of a group's received messages are unread (at most `limit`).
    pub fn group_unread(&self, group: &GroupId, limit: usize) -> Result<usize, NodeError> {
        Ok(self.store.group_unread_count(group, limit)?)
    }

    /// Each member's status of a group message we sent (WhatsApp's "message info").
    pub fn message_info(&self, id: &MessageId) -> Result<MessageInfo, NodeError> {
        let (msg, statuses) = self
            .store
            .member_statuses(id)?
            .ok_or_else(|| NodeError::NotFound(format!("no group message {id} of ours")))?;
        Ok(MessageInfo {
            id: id.to_string(),
            group: msg.group.to_string(),
            status: msg.status,
            members: statuses
                .into_iter()
                .map(|(user, status)| MemberStatusView {
                    user_id: user.to_string(),
                    name: self.contact_name(&user),
                    status,
                })
                .collect(),
        })
    }
}
