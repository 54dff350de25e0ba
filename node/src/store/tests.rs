//! A value that does not decode is quarantined where it is read: it never fails a page, the
//! contact list, the outbox, a peer's sessions or the media records, and is never dropped.

use kith_protocol::{
    blob::BlobHash,
    payload::{Payload, Plaintext, Text},
    DeliveryStatus, LocalIdentity, MessageId, PeerSessions, UserId,
};

use super::{Contact, Direction, OutboxEntry, Store, StoredMessage};
use crate::{
    media::{MediaRecord, MediaState},
    versioned,
};

/// Bytes that decode as none of the stored types.
const GARBAGE: &[u8] = &[0xff; 3];

fn user() -> UserId {
    LocalIdentity::generate(0, &mut rand::rngs::OsRng).user_id()
}

fn open() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("db"), std::time::Duration::ZERO).unwrap();
    (dir, store)
}

fn message(peer: UserId, n: u8) -> StoredMessage {
    StoredMessage {
        id: MessageId([n; 16]),
        peer,
        outgoing: false,
        text: format!("m{n}"),
        client_meta: "{}".into(),
        sent_at_ms: n as u64,
        stored_at_ms: n as u64,
        status: DeliveryStatus::Delivered,
        media: None,
    }
}

/// The one quarantined value: its tree, key and bytes.
fn only_quarantined(store: &Store) -> versioned::Quarantined {
    let q = versioned::quarantined(&store.db).unwrap();
    assert_eq!(q.len(), 1, "{q:?}");
    q.into_iter().next().unwrap()
}

#[tokio::test]
async fn an_undecodable_message_is_quarantined_and_the_page_still_loads() {
    let (_dir, store) = open();
    let bob = user();
    for n in 1..=3 {
        assert!(store.insert_message(&message(bob, n)).unwrap());
    }
    // Message 2 is damaged on disk.
    let key = store
        .message_ids
        .get(super::id_key(
            Direction::Incoming,
            &bob,
            &MessageId([2; 16]),
        ))
        .unwrap()
        .unwrap();
    store.messages.insert(&key, GARBAGE).unwrap();
    let (page, more) = store.page(&bob, 0, 10, None).unwrap();
    let texts: Vec<_> = page.iter().map(|m| m.text.as_str()).collect();
    assert_eq!(texts, ["m3", "m1"]);
    assert!(!more);
    let q = only_quarantined(&store);
    assert_eq!(
        (q.tree.as_str(), q.key.as_slice()),
        ("messages", key.as_ref())
    );
    assert_eq!(q.bytes, GARBAGE);
    // Reading it by id, or moving its status, finds nothing rather than failing.
    assert!(store
        .message(Direction::Incoming, &bob, &MessageId([2; 16]))
        .unwrap()
        .is_none());
    assert!(store
        .advance_status(&bob, &MessageId([2; 16]), DeliveryStatus::Read)
        .unwrap()
        .is_none());
    assert_eq!(
        store.mark_read(&bob).unwrap(),
        [MessageId([1; 16]), MessageId([3; 16])]
    );
}

#[tokio::test]
async fn an_undecodable_contact_is_quarantined_and_the_others_still_list() {
    let (_dir, store) = open();
    let alice = LocalIdentity::generate(0, &mut rand::rngs::OsRng);
    let good = Contact {
        user: alice.user_id(),
        name: "alice".into(),
        bundle: alice.bundle(),
        addrs: vec![],
        added_at_ms: 1,
        access: None,
    };
    store.put_contact(&good).unwrap();
    let bad = user();
    store.contacts.insert(bad.to_bytes(), GARBAGE).unwrap();
    let names: Vec<_> = store
        .contacts()
        .unwrap()
        .into_iter()
        .map(|c| c.name)
        .collect();
    assert_eq!(names, ["alice"]);
    assert_eq!(only_quarantined(&store).key, bad.to_bytes());
    assert!(store.contact(&bad).unwrap().is_none());
    assert!(store.contact(&alice.user_id()).unwrap().is_some());
}

#[tokio::test]
async fn an_undecodable_outbox_entry_is_quarantined_and_the_rest_still_leave() {
    let (_dir, store) = open();
    let plaintext = Plaintext::new(
        &Payload::Text(Text {
            body: "hi".into(),
            client_meta: String::new(),
        }),
        1,
    )
    .unwrap();
    let good = OutboxEntry {
        seq: 2,
        id: MessageId([2; 16]),
        to: user(),
        plaintext,
        expires_at_ms: 10,
        tracked: true,
    };
    store.outbox_put(&good).unwrap();
    store.outbox.insert(1u64.to_be_bytes(), GARBAGE).unwrap();
    let all = store.outbox_all().unwrap();
    assert_eq!(all.len(), 1);
    assert_eq!(all[0].id, good.id);
    assert_eq!(only_quarantined(&store).tree, "outbox");
    assert_eq!(store.outbox.len(), 1);
}

#[tokio::test]
async fn undecodable_sessions_are_quarantined_and_read_as_none() {
    let (_dir, store) = open();
    let bob = user();
    store.sessions.insert(bob.to_bytes(), GARBAGE).unwrap();
    let sessions: PeerSessions = store.sessions(&bob).unwrap();
    assert!(sessions.inbound_ids().is_empty());
    assert_eq!(only_quarantined(&store).tree, "sessions");
}

#[tokio::test]
async fn an_undecodable_media_record_is_quarantined_and_the_others_still_resume() {
    let (_dir, store) = open();
    let good = MediaRecord {
        hash: BlobHash([1; 32]),
        key: [0; 32],
        size: 10,
        chunk_size: 1024,
        mime: "text/plain".into(),
        name: "a.txt".into(),
        preview: vec![],
        message: MessageId([1; 16]),
        peer: user(),
        outgoing: false,
        state: MediaState::Downloading,
        done_chunks: 0,
        holders: vec![],
        expires_at_ms: 10,
    };
    store.media_writer().put(&good).unwrap();
    store.media.insert([2u8; 32], GARBAGE).unwrap();
    let all = store.all_media().unwrap();
    assert_eq!(all.len(), 1);
    assert_eq!(all[0].hash, good.hash);
    assert_eq!(only_quarantined(&store).key, [2u8; 32]);
    assert!(store.media.get([2u8; 32]).unwrap().is_none());
}

#[tokio::test]
async fn unread_counts_received_unread_messages_up_to_the_limit() {
    let (_dir, store) = open();
    let (bob, carol) = (user(), user());
    for n in 1..=3 {
        assert!(store.insert_message(&message(bob, n)).unwrap());
    }
    let mut sent = message(bob, 9);
    sent.outgoing = true;
    assert!(store.insert_message(&sent).unwrap());
    assert!(store.insert_message(&message(carol, 1)).unwrap());
    assert_eq!(store.unread_count(&bob, 1000).unwrap(), 3);
    assert_eq!(store.unread_count(&bob, 2).unwrap(), 2);
    assert_eq!(store.unread_count(&carol, 1000).unwrap(), 1);
    store.mark_read(&bob).unwrap();
    assert_eq!(store.unread_count(&bob, 1000).unwrap(), 0);
    assert_eq!(store.unread_count(&carol, 1000).unwrap(), 1);
}

#[tokio::test]
async fn a_deleted_message_stays_deleted_and_out_of_search() {
    let (_dir, store) = open();
    let peer = user();
    let mut m = message(peer, 1);
    m.text = "meet at the harbour".into();
    assert!(store.insert_message(&m).unwrap());
    let (hits, _) = store.search("harb", 0, 10).unwrap();
    assert_eq!(hits.len(), 1);
    assert!(store.delete_message(&peer, &m.id).unwrap());
    assert!(
        !store.delete_message(&peer, &m.id).unwrap(),
        "nothing left to delete"
    );
    assert!(store.search("harbour", 0, 10).unwrap().0.is_empty());
    assert!(store.page(&peer, 0, 10, None).unwrap().0.is_empty());
    // A copy that comes again is still a duplicate: the id entry is a tombstone.
    assert!(
        !store.insert_message(&m).unwrap(),
        "deleted message stored again"
    );
}

#[tokio::test]
async fn messages_stored_before_the_index_are_indexed_when_the_store_opens() {
    let (_dir, store) = open();
    let mut m = message(user(), 2);
    m.text = "old news".into();
    store.insert_message(&m).unwrap();
    // As a store written before the index existed: no entries, no mark.
    store.search_index.clear().unwrap();
    store.meta.remove("search_index").unwrap();
    assert!(store.search("news", 0, 10).unwrap().0.is_empty());
    // What `Store::open` runs.
    store.build_search_index().unwrap();
    assert_eq!(store.search("news", 0, 10).unwrap().0.len(), 1);
}
