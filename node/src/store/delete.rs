//! Delete for me: a message leaves this node's history (its page, unread mark and search
//! entries); nothing is sent to anyone. (A media file it carried stays on disk, where the
//! media records keep it until they expire.)
//!
//! The message's id entry stays as a tombstone: a copy of it that comes again (a retry, a
//! second store peer) is still a duplicate and is not stored again.

use kith_protocol::{GroupId, MessageId, UserId};

use super::groups::GroupStoredMessage;
use super::messages::id_key;
use super::{Direction, Store, StoreError};

impl Store {
    /// Deletes the message `id` of the conversation with `peer` (sent or received). Returns
    /// whether there was one.
    pub fn delete_message(&self, peer: &UserId, id: &MessageId) -> Result<bool, StoreError> {
        for direction in [Direction::Incoming, Direction::Outgoing] {
            let Some(key) = self.message_ids.get(id_key(direction, peer, id))? else {
                continue;
            };
            let Some(bytes) = self.messages.remove(&key)? else {
                continue;
            };
            self.unread.remove(&key)?;
            if let Some(msg) = self.decode_message(&key, &bytes)? {
                self.unindex_message(&key, &msg.text)?;
            }
            return Ok(true);
        }
        Ok(false)
    }

    /// Deletes the message `id` of `group` (whoever sent it). Returns whether there was one.
    pub fn delete_group_message(
        &self,
        group: &GroupId,
        id: &MessageId,
    ) -> Result<bool, StoreError> {
        let t = self.group_messages_tree();
        let mut found = None;
        for item in t.scan_prefix(group.as_bytes()) {
            let (k, v) = item?;
            if let Some(msg) = self.decode::<GroupStoredMessage>(t, &k, &v)? {
                if msg.id == *id {
                    found = Some((k, msg));
                    break;
                }
            }
        }
        let Some((key, msg)) = found else {
            return Ok(false);
        };
        t.remove(&key)?;
        self.forget_group_message(&key, &msg.text)?;
        Ok(true)
    }
}
