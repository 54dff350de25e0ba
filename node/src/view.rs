//! The views a node answers with (`GET /v1/me`, contacts, conversation pages, presence), and
//! their construction from the store's records.
//!
//! The store returns records ([`StoredMessage`], [`Contact`]); this module is the one place
//! that turns them into what the API shows. It must never write anything.

use kith_protocol::{DeliveryStatus, UserId};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::{
    media::MediaId,
    store::{Contact, PeerInfo, Store, StoredMessage},
};

/// Largest page of history one call returns.
pub const MAX_PAGE: usize = 200;

/// The OpenAPI schema of [`DeliveryStatus`] (the protocol crate knows nothing of OpenAPI):
/// where a message is, pending → sent (✓) → delivered (✓✓) → read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
#[schema(as = DeliveryStatus)]
pub enum StatusSchema {
    /// Accepted by the local node, not yet held by anyone else.
    Pending,
    /// Durably held by the recipient's node or by enough of its store peers.
    Sent,
    /// The recipient's node stored it.
    Delivered,
    /// The recipient read it.
    Read,
}

impl From<DeliveryStatus> for StatusSchema {
    fn from(s: DeliveryStatus) -> Self {
        match s {
            DeliveryStatus::Pending => StatusSchema::Pending,
            DeliveryStatus::Sent => StatusSchema::Sent,
            DeliveryStatus::Delivered => StatusSchema::Delivered,
            DeliveryStatus::Read => StatusSchema::Read,
        }
    }
}

/// The local user, as `GET /v1/me` shows it.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct Me {
    /// This node's user id.
    pub user_id: String,
    /// Addresses this node listens on (full multiaddrs ending in `/p2p/<id>`).
    pub listen_addrs: Vec<String>,
    /// One string carrying user id, addresses and key bundle, to give to a contact.
    pub invite: String,
}

/// A contact.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct ContactView {
    /// The contact's user id.
    pub user_id: String,
    /// The name the local user gave them (may be empty).
    pub name: String,
    /// Known addresses.
    pub addrs: Vec<String>,
    /// The name the contact gave themselves (their profile; empty until it comes).
    #[serde(default)]
    pub profile_name: String,
    /// What an app shows: `name` when the local user gave one, else `profile_name`.
    #[serde(default)]
    pub display_name: String,
    /// Whether the local user marked this contact's safety number verified.
    #[serde(default)]
    pub verified: bool,
    /// Whether the contact sends read receipts (their profile says; with it off neither
    /// side sees blue ticks).
    #[serde(default = "yes")]
    pub read_receipts: bool,
    /// The old user id of the same person, whom this contact replaced (their key changed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replaces: Option<String>,
    /// The new user id that replaced this contact (their key changed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replaced_by: Option<String>,
    /// When the key change was noticed, unix ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_changed_at_ms: Option<u64>,
}

fn yes() -> bool {
    true
}

/// A conversation's safety number (`GET /v1/contacts/{user}/safety-number`).
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct SafetyNumberView {
    /// The contact.
    pub user_id: String,
    /// The 60 digits.
    pub digits: String,
    /// The same as shown: 12 groups of 5 digits.
    pub groups: Vec<String>,
    /// What its QR code carries (`kith-safety:0:` and the digits).
    pub qr_payload: String,
    /// Whether the local user marked it verified.
    pub verified: bool,
    /// The contact as it is now.
    pub contact: ContactView,
}

/// A pending message request, as `GET /v1/requests` shows it.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct RequestView {
    /// The sender's user id (their messages: `GET /v1/conversations/{user_id}`).
    pub user_id: String,
    /// How many of their messages are kept (unread).
    pub messages: usize,
    /// When their first message arrived, unix ms.
    pub since_ms: u64,
}

/// A blocked user, as `GET /v1/blocked` shows them.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct BlockedView {
    /// Their user id.
    pub user_id: String,
    /// When they were blocked, unix ms.
    pub since_ms: u64,
}

/// One message of a conversation, as the API shows it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, ToSchema)]
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
    #[schema(value_type = Object)]
    pub client_meta: serde_json::Value,
    /// When the sender composed it (RFC 3339, UTC).
    pub sent_at: String,
    /// Same, unix milliseconds.
    pub sent_at_ms: u64,
    /// For messages we sent: pending / sent / delivered / read. For messages we received:
    /// delivered, or read once the local user read them.
    #[schema(value_type = StatusSchema)]
    pub status: DeliveryStatus,
    /// Whether the local user sent it.
    pub outgoing: bool,
    /// The image, video or file it carries (its `text` is then the caption).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media: Option<Box<crate::media::MediaView>>,
    /// The group (32 hex digits) of a group message: `from` is then its sender and `to` the
    /// group id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
}

/// A page of a conversation, newest first.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct Page {
    /// The messages, newest first.
    pub messages: Vec<MessageView>,
    /// The offset of the next (older) page, if there is one.
    pub next_offset: Option<usize>,
}

/// What the API answers to a send.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct Sent {
    /// The new message's id.
    pub id: String,
    /// Its status (pending until a peer holds it).
    #[schema(value_type = StatusSchema)]
    pub status: DeliveryStatus,
}

/// A contact's presence, as the local user may see it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, ToSchema)]
pub struct PresenceView {
    /// Online now.
    pub online: bool,
    /// When last seen (RFC 3339), if known and shared.
    pub last_seen: Option<String>,
    /// Same, unix milliseconds.
    pub last_seen_ms: Option<u64>,
    /// How messages to the contact travel now (not a presence signal: shown even when last
    /// seen is hidden, since it is about our own connections).
    #[serde(default)]
    pub route: ContactRoute,
}

/// How messages to a contact travel now.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ContactRoute {
    /// A direct connection to the contact's node is open.
    Direct,
    /// Only a connection through a relay is open.
    Relayed,
    /// No connection: messages go to the contact's store peers.
    #[default]
    Store,
}

impl From<kith_net::Route> for ContactRoute {
    fn from(r: kith_net::Route) -> Self {
        match r {
            kith_net::Route::Direct => ContactRoute::Direct,
            kith_net::Route::Relayed => ContactRoute::Relayed,
            kith_net::Route::None => ContactRoute::Store,
        }
    }
}

impl ContactView {
    /// The view of a contact and what else is known about them.
    pub fn new(c: &Contact, info: &PeerInfo) -> Self {
        let display_name = if c.name.is_empty() {
            info.profile_name.clone()
        } else {
            c.name.clone()
        };
        ContactView {
            user_id: c.user.to_string(),
            name: c.name.clone(),
            addrs: c.multiaddrs().iter().map(|a| a.to_string()).collect(),
            profile_name: info.profile_name.clone(),
            display_name,
            verified: info.verified_at_ms.is_some(),
            read_receipts: info.read_receipts,
            replaces: info.replaces.map(|u| u.to_string()),
            replaced_by: info.replaced_by.map(|u| u.to_string()),
            key_changed_at_ms: info.key_changed_at_ms,
        }
    }
}

/// The view of a contact, with what the store knows about them (the defaults if that cannot
/// be read: a view never fails for it).
pub fn contact_view(store: &Store, c: &Contact) -> ContactView {
    let info = store.peer_info(&c.user).unwrap_or_else(|e| {
        tracing::error!(error = %e, "cannot read peer info");
        PeerInfo::default()
    });
    ContactView::new(c, &info)
}

/// The API view of a stored message, given the local user (without its media: see
/// [`message_view`]).
pub fn message_view_bare(me: &UserId, msg: &StoredMessage) -> MessageView {
    let (from, to) = if msg.outgoing {
        (*me, msg.peer)
    } else {
        (msg.peer, *me)
    };
    MessageView {
        id: msg.id.to_string(),
        from: from.to_string(),
        to: to.to_string(),
        text: msg.text.clone(),
        client_meta: serde_json::from_str(&msg.client_meta)
            .unwrap_or_else(|_| serde_json::Value::Object(Default::default())),
        sent_at: crate::time::rfc3339(msg.sent_at_ms),
        sent_at_ms: msg.sent_at_ms,
        status: msg.status,
        outgoing: msg.outgoing,
        media: None,
        group: None,
    }
}

/// The API view of a stored message, with the state of the media it carried (read from the
/// store's media records; an unreadable record shows as no media).
pub fn message_view(store: &Store, me: &UserId, msg: &StoredMessage) -> MessageView {
    let mut view = message_view_bare(me, msg);
    if msg.media.is_some() {
        view.media = match store.media(&MediaId::of_message(msg)) {
            Ok(Some(rec)) => Some(Box::new(rec.view())),
            Ok(None) => None,
            Err(e) => {
                tracing::warn!(error = %e, "media record unreadable");
                None
            }
        };
    }
    view
}

/// A member of a group, as the API shows it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, ToSchema)]
pub struct MemberView {
    /// The member's user id.
    pub user_id: String,
    /// The name the local user gave them as a contact (empty if none, or if it is us).
    pub name: String,
    /// Whether they may change the group's membership and name.
    pub admin: bool,
}

/// A group chat, as `GET /v1/groups/{id}` shows it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, ToSchema)]
pub struct GroupView {
    /// The group id (32 hex digits); also its conversation's key.
    pub id: String,
    /// The group's name.
    pub name: String,
    /// The number of the group state (every membership change or rename adds one).
    pub epoch: u64,
    /// The members, the local user included while it is one.
    pub members: Vec<MemberView>,
    /// The admins' user ids.
    pub admins: Vec<String>,
    /// Whether the local user is an admin.
    pub me_admin: bool,
    /// Whether the local user is still a member (false once it left or was removed).
    pub active: bool,
}

/// One member's status of a group message we sent, as `GET /v1/messages/{id}/info` shows it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, ToSchema)]
pub struct MemberStatusView {
    /// The member.
    pub user_id: String,
    /// Their contact name (may be empty).
    pub name: String,
    /// pending / sent / delivered / read for this member.
    #[schema(value_type = StatusSchema)]
    pub status: DeliveryStatus,
}

/// `GET /v1/messages/{id}/info`: a sent group message's status per member (WhatsApp's
/// "message info"); the message's own status is the slowest member's.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, ToSchema)]
pub struct MessageInfo {
    /// The message id.
    pub id: String,
    /// The group it was sent to.
    pub group: String,
    /// The slowest member's status.
    #[schema(value_type = StatusSchema)]
    pub status: DeliveryStatus,
    /// Every member it was sent to, with their status.
    pub members: Vec<MemberStatusView>,
}

/// The API view of a group, given the local user and the names it gave its contacts.
pub fn group_view(
    record: &crate::store::GroupRecord,
    me: &UserId,
    name_of: impl Fn(&UserId) -> String,
) -> GroupView {
    let state = &record.chain.head().state;
    GroupView {
        id: state.group.to_string(),
        name: state.name.clone(),
        epoch: state.epoch,
        members: state
            .members
            .iter()
            .map(|u| MemberView {
                user_id: u.to_string(),
                name: if u == me { String::new() } else { name_of(u) },
                admin: state.is_admin(u),
            })
            .collect(),
        admins: state.admins.iter().map(|u| u.to_string()).collect(),
        me_admin: state.is_admin(me),
        active: record.active && state.is_member(me),
    }
}

/// The API view of a group message: `from` its sender, `to` the group, with the state of
/// the media it carries (for one we sent, the first member's copy's).
pub fn group_message_view(
    store: &Store,
    me: &UserId,
    msg: &crate::store::GroupStoredMessage,
) -> MessageView {
    let mut view = group_message_view_bare(me, msg);
    let Some(hash) = msg.media else {
        return view;
    };
    let record = if msg.outgoing {
        store.media_for_hash(&hash).ok().and_then(|records| {
            records.into_iter().find(|r| {
                r.outgoing && r.message == kith_protocol::group::transport_id(&msg.id, &r.peer)
            })
        })
    } else {
        store
            .media(&MediaId {
                outgoing: false,
                peer: msg.sender,
                message: msg.id,
            })
            .ok()
            .flatten()
    };
    view.media = record.map(|r| Box::new(r.view()));
    view
}

/// The API view of a group message without its media.
pub fn group_message_view_bare(me: &UserId, msg: &crate::store::GroupStoredMessage) -> MessageView {
    let group = msg.group.to_string();
    MessageView {
        id: msg.id.to_string(),
        from: if msg.outgoing { *me } else { msg.sender }.to_string(),
        to: group.clone(),
        text: msg.text.clone(),
        client_meta: serde_json::from_str(&msg.client_meta)
            .unwrap_or_else(|_| serde_json::Value::Object(Default::default())),
        sent_at: crate::time::rfc3339(msg.sent_at_ms),
        sent_at_ms: msg.sent_at_ms,
        status: msg.status,
        outgoing: msg.outgoing,
        media: None,
        group: Some(group),
    }
}
