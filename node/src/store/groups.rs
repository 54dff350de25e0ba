//! Group chats on disk: each group's state chain, our sender keys and the ones members gave
//! us, group conversations (messages, their index and unread marks), each member's status
//! of the messages we sent, and group messages held until their sender key arrives.
//!
//! Like the one-to-one conversation trees, writes go in an order whose every prefix is
//! safe (the message, its unread mark, then its index entry), since sled transactions are
//! avoided here (see [`Store::insert_message`]).

use kith_protocol::{
    blob::BlobHash,
    codec,
    group::{GroupChain, GroupMessage, ReceivedSenderKeys, SenderKey},
    DeliveryStatus, GroupId, MessageId, UserId,
};
use serde::{Deserialize, Serialize};

use super::{Store, StoreError};

/// Most group messages held (their sender key has not arrived) per sender and group.
pub const MAX_HELD_PER_SENDER: usize = 256;

/// Most group states from the future (their predecessor has not arrived) kept per group.
pub const MAX_PENDING_STATES: usize = 64;

/// The sled trees of group chats.
#[derive(Clone)]
pub(crate) struct GroupTrees {
    /// group id → [`GroupRecord`].
    groups: sled::Tree,
    /// group id → [`OwnSenderKey`].
    own_keys: sled::Tree,
    /// group id ‖ sender → [`ReceivedSenderKeys`].
    their_keys: sled::Tree,
    /// group id ‖ seq → [`GroupStoredMessage`].
    messages: sled::Tree,
    /// group id ‖ len ‖ sender ‖ message id → key in `messages`.
    ids: sled::Tree,
    /// keys of `messages` received and not read yet.
    unread: sled::Tree,
    /// message id ‖ member → status byte, for messages we sent.
    member_status: sled::Tree,
    /// message id → group id, for messages we sent.
    sent: sled::Tree,
    /// group id ‖ len ‖ sender ‖ message id → [`GroupMessage`] waiting for its sender key.
    held: sled::Tree,
}

impl GroupTrees {
    pub(crate) fn open(db: &sled::Db) -> Result<Self, sled::Error> {
        Ok(GroupTrees {
            groups: db.open_tree("groups")?,
            own_keys: db.open_tree("group_own_keys")?,
            their_keys: db.open_tree("group_their_keys")?,
            messages: db.open_tree("group_messages")?,
            ids: db.open_tree("group_message_ids")?,
            unread: db.open_tree("group_unread")?,
            member_status: db.open_tree("group_member_status")?,
            sent: db.open_tree("group_sent")?,
            held: db.open_tree("group_held")?,
        })
    }
}

/// One group as this node knows it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct GroupRecord {
    /// The applied states; the head is the current membership.
    pub chain: GroupChain,
    /// States that arrived before their predecessor, at most [`MAX_PENDING_STATES`].
    pub pending: Vec<kith_protocol::group::SignedGroupState>,
    /// Whether the local user is still a member.
    pub active: bool,
    /// When this node first learnt of the group, unix ms.
    pub joined_at_ms: u64,
}

impl GroupRecord {
    /// The group's id.
    pub fn id(&self) -> GroupId {
        self.chain.head().group()
    }
}

/// Our sending chain for a group and whom we have handed it to.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct OwnSenderKey {
    /// The chain.
    pub key: SenderKey,
    /// Members that were given this chain.
    pub given_to: Vec<UserId>,
}

/// A message of a group conversation as stored.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct GroupStoredMessage {
    /// Its id (the same at every member).
    pub id: MessageId,
    /// The group.
    pub group: GroupId,
    /// Who sent it.
    pub sender: UserId,
    /// Sent by the local user.
    pub outgoing: bool,
    /// The text (or caption).
    pub text: String,
    /// Client metadata, JSON text.
    pub client_meta: String,
    /// When the sender composed it, unix ms.
    pub sent_at_ms: u64,
    /// When this node stored it, unix ms.
    pub stored_at_ms: u64,
    /// For ours: the slowest member's status; for received: delivered or read.
    pub status: DeliveryStatus,
    /// The media blob it carries, if any.
    pub media: Option<BlobHash>,
    /// For ours: how many members are at each status (pending, sent, delivered, read).
    pub counts: [u32; 4],
}

fn status_index(s: DeliveryStatus) -> usize {
    match s {
        DeliveryStatus::Pending => 0,
        DeliveryStatus::Sent => 1,
        DeliveryStatus::Delivered => 2,
        DeliveryStatus::Read => 3,
    }
}

const STATUSES: [DeliveryStatus; 4] = [
    DeliveryStatus::Pending,
    DeliveryStatus::Sent,
    DeliveryStatus::Delivered,
    DeliveryStatus::Read,
];

impl GroupStoredMessage {
    /// The slowest member's status (read when it was sent to nobody).
    fn slowest(&self) -> DeliveryStatus {
        self.counts
            .iter()
            .position(|n| *n > 0)
            .map(|i| STATUSES[i])
            .unwrap_or(DeliveryStatus::Read)
    }
}

/// Each member's status of one of our group messages.
pub type MemberStatuses = Vec<(UserId, DeliveryStatus)>;

fn member_key(group: &GroupId, user: &UserId, id: &MessageId) -> Vec<u8> {
    let user = user.to_bytes();
    let mut key = Vec::with_capacity(16 + 1 + user.len() + 16);
    key.extend_from_slice(group.as_bytes());
    key.push(user.len() as u8);
    key.extend_from_slice(&user);
    key.extend_from_slice(id.as_bytes());
    key
}

fn sender_prefix(group: &GroupId, user: &UserId) -> Vec<u8> {
    let user = user.to_bytes();
    let mut key = group.as_bytes().to_vec();
    key.push(user.len() as u8);
    key.extend_from_slice(&user);
    key
}

fn status_key(id: &MessageId, member: &UserId) -> Vec<u8> {
    let mut key = id.as_bytes().to_vec();
    key.extend_from_slice(&member.to_bytes());
    key
}

fn status_from_byte(b: u8) -> DeliveryStatus {
    STATUSES
        .get(usize::from(b))
        .copied()
        .unwrap_or(DeliveryStatus::Pending)
}

impl Store {
    /// Every group this node knows, in id order.
    pub fn groups(&self) -> Result<Vec<GroupRecord>, StoreError> {
        self.decode_all(&self.group_trees.groups)
    }

    /// One group.
    pub fn group(&self, id: &GroupId) -> Result<Option<GroupRecord>, StoreError> {
        let t = &self.group_trees.groups;
        match t.get(id.as_bytes())? {
            Some(v) => self.decode(t, id.as_bytes(), &v),
            None => Ok(None),
        }
    }

    /// Writes a group's record.
    pub fn put_group(&self, record: &GroupRecord) -> Result<(), StoreError> {
        let id = record.id();
        self.group_trees
            .groups
            .insert(id.as_bytes(), codec::encode(record)?)?;
        Ok(())
    }

    /// Our sending chain for a group.
    pub fn own_sender_key(&self, group: &GroupId) -> Result<Option<OwnSenderKey>, StoreError> {
        let t = &self.group_trees.own_keys;
        match t.get(group.as_bytes())? {
            Some(v) => self.decode(t, group.as_bytes(), &v),
            None => Ok(None),
        }
    }

    /// Writes our sending chain for a group (`None` deletes it: the next send starts anew).
    pub fn put_own_sender_key(
        &self,
        group: &GroupId,
        key: Option<&OwnSenderKey>,
    ) -> Result<(), StoreError> {
        match key {
            Some(k) => {
                self.group_trees
                    .own_keys
                    .insert(group.as_bytes(), codec::encode(k)?)?;
            }
            None => {
                self.group_trees.own_keys.remove(group.as_bytes())?;
            }
        }
        Ok(())
    }

    /// The chains `sender` gave us for `group`.
    pub fn their_sender_keys(
        &self,
        group: &GroupId,
        sender: &UserId,
    ) -> Result<ReceivedSenderKeys, StoreError> {
        let t = &self.group_trees.their_keys;
        let key = sender_prefix(group, sender);
        Ok(match t.get(&key)? {
            Some(v) => self.decode(t, &key, &v)?.unwrap_or_default(),
            None => ReceivedSenderKeys::default(),
        })
    }

    /// Writes the chains `sender` gave us for `group`.
    pub fn put_their_sender_keys(
        &self,
        group: &GroupId,
        sender: &UserId,
        keys: &ReceivedSenderKeys,
    ) -> Result<(), StoreError> {
        self.group_trees
            .their_keys
            .insert(sender_prefix(group, sender), codec::encode(keys)?)?;
        Ok(())
    }

    /// Whether `sender`'s group message `id` is stored.
    pub fn has_group_message(
        &self,
        group: &GroupId,
        sender: &UserId,
        id: &MessageId,
    ) -> Result<bool, StoreError> {
        Ok(self
            .group_trees
            .ids
            .contains_key(member_key(group, sender, id))?)
    }

    /// Stores a group message; false, writing nothing, if it is already stored. For one we
    /// send, `members` are the members it goes to (each starts pending).
    pub fn insert_group_message(
        &self,
        msg: &GroupStoredMessage,
        members: &[UserId],
    ) -> Result<bool, StoreError> {
        let t = &self.group_trees;
        let id_key = member_key(&msg.group, &msg.sender, &msg.id);
        if t.ids.contains_key(&id_key)? {
            return Ok(false);
        }
        let mut key = msg.group.as_bytes().to_vec();
        key.extend_from_slice(&self.db.generate_id()?.to_be_bytes());
        if msg.outgoing {
            for m in members {
                t.member_status.insert(
                    status_key(&msg.id, m),
                    &[status_index(msg.status) as u8][..],
                )?;
            }
            t.sent.insert(msg.id.as_bytes(), key.as_slice())?;
        }
        self.index_group_message(&key, &msg.text)?;
        t.messages.insert(key.as_slice(), codec::encode(msg)?)?;
        if !msg.outgoing && msg.status < DeliveryStatus::Read {
            t.unread.insert(key.as_slice(), &[][..])?;
        }
        t.ids.insert(id_key, key)?;
        Ok(true)
    }

    /// Drops what a deleted group message (at `key`) leaves: its unread mark and search
    /// entries.
    pub(super) fn forget_group_message(&self, key: &[u8], text: &str) -> Result<(), StoreError> {
        self.group_trees.unread.remove(key)?;
        self.unindex_group_message(key, text)
    }

    /// The `group_messages` tree (for the search index).
    pub(super) fn group_messages_tree(&self) -> &sled::Tree {
        &self.group_trees.messages
    }

    fn sent_group_message(
        &self,
        id: &MessageId,
    ) -> Result<Option<(sled::IVec, GroupStoredMessage)>, StoreError> {
        let t = &self.group_trees;
        let Some(key) = t.sent.get(id.as_bytes())? else {
            return Ok(None);
        };
        let Some(bytes) = t.messages.get(&key)? else {
            return Ok(None);
        };
        Ok(self
            .decode::<GroupStoredMessage>(&t.messages, &key, &bytes)?
            .map(|m| (key, m)))
    }

    /// Moves `member`'s status of our group message `id` forward; when that moves the
    /// slowest member's status, returns the message with its new status.
    pub fn advance_member_status(
        &self,
        id: &MessageId,
        member: &UserId,
        to: DeliveryStatus,
    ) -> Result<Option<GroupStoredMessage>, StoreError> {
        let t = &self.group_trees;
        let skey = status_key(id, member);
        let Some(old) = t.member_status.get(&skey)? else {
            return Ok(None);
        };
        let mut old = old
            .first()
            .copied()
            .map(status_from_byte)
            .unwrap_or(DeliveryStatus::Pending);
        let from = old;
        if !old.advance(to) {
            return Ok(None);
        }
        t.member_status
            .insert(&skey, &[status_index(to) as u8][..])?;
        let Some((key, mut msg)) = self.sent_group_message(id)? else {
            return Ok(None);
        };
        let (fi, ti) = (status_index(from), status_index(to));
        msg.counts[fi] = msg.counts[fi].saturating_sub(1);
        msg.counts[ti] = msg.counts[ti].saturating_add(1);
        let slowest = msg.slowest();
        let moved = msg.status.advance(slowest);
        t.messages.insert(&key, codec::encode(&msg)?)?;
        Ok(moved.then_some(msg))
    }

    /// Our group message `id` and every member's status of it.
    pub fn member_statuses(
        &self,
        id: &MessageId,
    ) -> Result<Option<(GroupStoredMessage, MemberStatuses)>, StoreError> {
        let Some((_, msg)) = self.sent_group_message(id)? else {
            return Ok(None);
        };
        let mut members = Vec::new();
        for item in self.group_trees.member_status.scan_prefix(id.as_bytes()) {
            let (k, v) = item?;
            let Ok(user) = UserId::from_bytes(&k[16..]) else {
                continue;
            };
            let status = v
                .first()
                .copied()
                .map(status_from_byte)
                .unwrap_or(DeliveryStatus::Pending);
            members.push((user, status));
        }
        Ok(Some((msg, members)))
    }

    /// A page of a group's conversation, newest first (as [`Store::page`]).
    pub fn group_page(
        &self,
        group: &GroupId,
        offset: usize,
        count: usize,
        since_ms: Option<u64>,
    ) -> Result<(Vec<GroupStoredMessage>, bool), StoreError> {
        let t = &self.group_trees.messages;
        let mut out = Vec::with_capacity(count);
        let mut skipped = 0usize;
        for item in t.scan_prefix(group.as_bytes()).rev() {
            let (k, v) = item?;
            let Some(msg) = self.decode::<GroupStoredMessage>(t, &k, &v)? else {
                continue;
            };
            if since_ms.is_some_and(|since| msg.sent_at_ms <= since) {
                continue;
            }
            if skipped < offset {
                skipped += 1;
                continue;
            }
            if out.len() == count {
                return Ok((out, true));
            }
            out.push(msg);
        }
        Ok((out, false))
    }

    /// How many received messages of a group are unread, counting at most `limit`.
    pub fn group_unread_count(&self, group: &GroupId, limit: usize) -> Result<usize, StoreError> {
        let mut n = 0;
        for item in self
            .group_trees
            .unread
            .scan_prefix(group.as_bytes())
            .take(limit)
        {
            item?;
            n += 1;
        }
        Ok(n)
    }

    /// Marks every unread message of a group read; returns (sender, id) of each.
    pub fn mark_group_read(&self, group: &GroupId) -> Result<Vec<(UserId, MessageId)>, StoreError> {
        let t = &self.group_trees;
        let mut out = Vec::new();
        for item in t.unread.scan_prefix(group.as_bytes()) {
            let (key, _) = item?;
            if let Some(bytes) = t.messages.get(&key)? {
                if let Some(mut msg) =
                    self.decode::<GroupStoredMessage>(&t.messages, &key, &bytes)?
                {
                    if msg.status.advance(DeliveryStatus::Read) {
                        t.messages.insert(&key, codec::encode(&msg)?)?;
                    }
                    out.push((msg.sender, msg.id));
                }
            }
            t.unread.remove(&key)?;
        }
        Ok(out)
    }

    /// Holds `sender`'s group message until its sender key arrives. False (nothing
    /// written) when that sender already has [`MAX_HELD_PER_SENDER`] held.
    pub fn hold_group_message(
        &self,
        sender: &UserId,
        msg: &GroupMessage,
    ) -> Result<bool, StoreError> {
        let t = &self.group_trees.held;
        let prefix = sender_prefix(&msg.group, sender);
        if t.scan_prefix(&prefix).take(MAX_HELD_PER_SENDER).count() >= MAX_HELD_PER_SENDER {
            return Ok(false);
        }
        t.insert(member_key(&msg.group, sender, &msg.id), codec::encode(msg)?)?;
        Ok(true)
    }

    /// `sender`'s held messages for `group`, removed from the store.
    pub fn take_held(
        &self,
        group: &GroupId,
        sender: &UserId,
    ) -> Result<Vec<GroupMessage>, StoreError> {
        let t = &self.group_trees.held;
        let mut out = Vec::new();
        for item in t.scan_prefix(sender_prefix(group, sender)) {
            let (k, v) = item?;
            if let Some(m) = self.decode::<GroupMessage>(t, &k, &v)? {
                out.push(m);
            }
            t.remove(&k)?;
        }
        Ok(out)
    }

    /// The group of our sent group message `id`, if it is one.
    pub fn sent_group_of(&self, id: &MessageId) -> Result<Option<GroupId>, StoreError> {
        Ok(self.sent_group_message(id)?.map(|(_, m)| m.group))
    }
}
