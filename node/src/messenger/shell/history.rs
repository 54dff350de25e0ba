//! Delete for me: the messenger is the one writer of messages, so a delete here cannot race
//! a status update writing the message back.

use kith_protocol::MessageId;
use tokio::sync::oneshot;

use crate::handle::ChatId;
use crate::messenger::*;

impl Messenger {
    /// Deletes the message `id` of `chat` from this node and answers once that is durable.
    pub(in crate::messenger) fn delete_for_me(
        &mut self,
        chat: ChatId,
        id: MessageId,
        reply: oneshot::Sender<Result<(), NodeError>>,
    ) {
        let deleted = match chat {
            ChatId::User(peer) => self.store.delete_message(&peer, &id),
            ChatId::Group(group) => self.store.delete_group_message(&group, &id),
        };
        match deleted {
            Ok(true) => self.reply_after_commit(reply, (), Vec::new()),
            Ok(false) => {
                let _ = reply.send(Err(NodeError::NotFound(format!("no message {id}"))));
            }
            Err(e) => {
                let _ = reply.send(Err(store_err(e)));
            }
        }
    }
}
