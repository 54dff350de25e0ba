//! What happened in a running node, pushed to `/v1/events` subscribers: new messages, status
//! changes, media progress, presence.
//!
//! It sits below the messenger and the transfer service, which both emit events, and below
//! the handle, which hands out subscriptions: none of them has to import another for it. It
//! must never depend on the store or any task.

use kith_protocol::DeliveryStatus;
use serde::{Deserialize, Serialize};

use crate::view::{MessageView, PresenceView};

/// Something that happened, pushed to `/v1/events` subscribers.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
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
        #[schema(value_type = crate::view::StatusSchema)]
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
        /// uploading | available | downloading | complete | failed | waiting.
        state: crate::media::MediaState,
        /// Fraction done, 0..1.
        progress: f64,
    },
    /// A group was created, joined, changed or left (or we were removed).
    Group {
        /// The group as it is now.
        group: Box<crate::view::GroupView>,
    },
    /// What is known about a contact changed: their profile name or read-receipt choice,
    /// the verified mark, or their key (a new user id replaced an old one).
    Contact {
        /// The contact as it is now.
        contact: Box<crate::view::ContactView>,
    },
    /// A contact is typing (or stopped): ephemeral, shown for a few seconds, never stored.
    Typing {
        /// The contact.
        peer: String,
        /// `true` while they type.
        typing: bool,
    },
    /// A contact's presence changed.
    Presence {
        /// The contact.
        user: String,
        /// The new presence.
        presence: PresenceView,
    },
}
