//! Messages identified by (direction, other party, id) (issue #11): another sender reusing an
//! id is another message, and the id-only index migrates to that layout.

use super::*;
#[allow(unused_imports)]
use crate::media::{MediaFiles, MediaId, MediaRecord, MediaState};
#[allow(unused_imports)]
use kith_protocol::{blob::BlobHash, codec, DeliveryStatus, MessageId, UserId};

fn user() -> UserId {
    LocalIdentity::generate(0, &mut rand::rngs::OsRng).user_id()
}

fn msg(id: MessageId, peer: UserId, outgoing: bool, text: &str) -> StoredMessage {
    StoredMessage {
        id,
        peer,
        outgoing,
        text: text.into(),
        client_meta: "{}".into(),
        sent_at_ms: 1,
        stored_at_ms: 1,
        status: if outgoing {
            DeliveryStatus::Pending
        } else {
            DeliveryStatus::Delivered
        },
        media: None,
    }
}

#[tokio::test]
async fn a_message_is_identified_by_direction_other_party_and_id() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), std::time::Duration::ZERO).unwrap();
    let (alice, mallory) = (user(), user());
    let x = MessageId([1; 16]);
    assert!(store
        .insert_message(&msg(x, mallory, false, "mallory's"))
        .unwrap());
    // Alice's message under the id mallory used first is another message.
    assert!(store
        .insert_message(&msg(x, alice, false, "alice's"))
        .unwrap());
    assert!(!store
        .insert_message(&msg(x, alice, false, "again"))
        .unwrap());
    // So is our own message to alice under that id.
    assert!(store.insert_message(&msg(x, alice, true, "ours")).unwrap());
    let text = |d, p| store.message(d, p, &x).unwrap().unwrap().text;
    assert_eq!(text(Direction::Incoming, &mallory), "mallory's");
    assert_eq!(text(Direction::Incoming, &alice), "alice's");
    assert_eq!(text(Direction::Outgoing, &alice), "ours");
    assert!(!store
        .has_message(Direction::Outgoing, &mallory, &x)
        .unwrap());
    // A status moves only for our message to that peer.
    assert!(store
        .advance_status(&mallory, &x, DeliveryStatus::Sent)
        .unwrap()
        .is_none());
    let moved = store
        .advance_status(&alice, &x, DeliveryStatus::Sent)
        .unwrap()
        .unwrap();
    assert_eq!(
        (moved.text.as_str(), moved.status),
        ("ours", DeliveryStatus::Sent)
    );
}

#[tokio::test]
async fn migration_rebuilds_message_ids_by_sender_and_id_and_is_idempotent() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), std::time::Duration::ZERO).unwrap();
    let (alice, mallory, bob) = (user(), user(), user());
    let (x, y) = (MessageId([1; 16]), MessageId([2; 16]));
    let stored = [
        msg(x, mallory, false, "mallory's"),
        msg(x, alice, false, "alice's"),
        msg(y, bob, true, "ours"),
    ];
    for m in &stored {
        assert!(store.insert_message(m).unwrap());
    }
    // The old layout: message id → key in `messages` (one entry per id).
    store.message_ids.clear().unwrap();
    for item in store.messages.iter() {
        let (key, value) = item.unwrap();
        let m: StoredMessage = codec::decode(&value).unwrap();
        store.message_ids.insert(m.id.as_bytes(), key).unwrap();
    }
    // A value that does not decode is skipped, not fatal.
    store
        .messages
        .insert(conv_key(&bob, u64::MAX), &[0xff][..])
        .unwrap();
    for _ in 0..2 {
        assert_eq!(migrate_message_ids_to_sender_and_id(&store.db).unwrap(), 3);
        assert_eq!(store.message_ids.len(), 3);
        for m in &stored {
            let found = store
                .message(Direction::of(m), &m.peer, &m.id)
                .unwrap()
                .unwrap();
            assert_eq!(found.text, m.text);
        }
    }
    assert!(!store.insert_message(&stored[1]).unwrap());
}
