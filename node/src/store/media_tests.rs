//! Media records bound to the message that carried them (issue #11): records naming one hash
//! stay independent, and the hash-keyed layout migrates to the message-keyed one.

#[allow(unused_imports)]
use super::media::{hash_index_key, LEGACY_MEDIA};
use super::*;
#[allow(unused_imports)]
use crate::media::{MediaFiles, MediaId, MediaRecord, MediaState};
#[allow(unused_imports)]
use kith_protocol::{blob::BlobHash, codec, DeliveryStatus, MessageId, UserId};

fn user() -> UserId {
    LocalIdentity::generate(0, &mut rand::rngs::OsRng).user_id()
}

fn record(hash: u8, peer: UserId, message: u8, outgoing: bool, state: MediaState) -> MediaRecord {
    MediaRecord {
        hash: BlobHash([hash; 32]),
        key: [message; 32],
        size: 10,
        chunk_size: 4,
        mime: "image/png".into(),
        name: "a.png".into(),
        preview: Vec::new(),
        message: MessageId([message; 16]),
        peer,
        outgoing,
        state,
        done_chunks: 0,
        holders: Vec::new(),
        expires_at_ms: u64::MAX,
    }
}

#[tokio::test]
async fn records_naming_one_hash_are_independent_and_the_users_own_wins() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), std::time::Duration::ZERO).unwrap();
    let (alice, mallory, bob) = (user(), user(), user());
    let hash = BlobHash([7; 32]);
    let from_mallory = record(7, mallory, 1, false, MediaState::Downloading);
    let mut from_alice = record(7, alice, 2, false, MediaState::Downloading);
    store.media_writer().put(&from_mallory).unwrap();
    store.media_writer().put(&from_alice).unwrap();
    // Mallory's record is not alice's: each message has its own, with its own key.
    let got = store.media(&from_alice.id()).unwrap().unwrap();
    assert_eq!((got.peer, got.key), (alice, from_alice.key));
    assert_eq!(store.media_for_hash(&hash).unwrap().len(), 2);
    // A complete one is what the hash means to the user, whichever arrived first.
    from_alice.state = MediaState::Complete;
    store.media_writer().put(&from_alice).unwrap();
    let chosen = store.media_by_hash(&hash).unwrap().unwrap();
    assert_eq!(chosen.id(), from_alice.id());
    assert_eq!(
        store.media(&from_mallory.id()).unwrap().unwrap().state,
        MediaState::Downloading
    );
    // One the user sent beats both.
    let sent = record(7, bob, 3, true, MediaState::Available);
    store.media_writer().put(&sent).unwrap();
    assert_eq!(store.media_by_hash(&hash).unwrap().unwrap().id(), sent.id());
    assert!(store.media_by_hash(&BlobHash([8; 32])).unwrap().is_none());
}

#[test]
fn media_ids_round_trip_through_their_key() {
    let id = MediaId {
        outgoing: false,
        peer: user(),
        message: MessageId([9; 16]),
    };
    assert_eq!(MediaId::from_key(&id.to_key()), Some(id));
    let out = MediaId {
        outgoing: true,
        ..id
    };
    assert_ne!(out.to_key(), id.to_key());
    assert_eq!(MediaId::from_key(&out.to_key()), Some(out));
    assert_eq!(MediaId::from_key(&[]), None);
    assert_eq!(MediaId::from_key(&[2, 0]), None);
    let key = id.to_key();
    assert_eq!(MediaId::from_key(&key[..key.len() - 1]), None);
}

#[test]
fn media_keyed_by_hash_migrates_to_message_keys_once() {
    let dir = tempfile::tempdir().unwrap();
    let media_dir = dir.path().join("media");
    std::fs::create_dir_all(&media_dir).unwrap();
    let db = sled::open(dir.path().join("db")).unwrap();
    let old = db.open_tree(LEGACY_MEDIA).unwrap();
    let (alice, bob) = (user(), user());
    let received = record(1, alice, 1, false, MediaState::Complete);
    let sent = record(2, bob, 2, true, MediaState::Available);
    let partial = record(3, alice, 3, false, MediaState::Downloading);
    for (rec, file) in [
        (&received, received.hash.to_hex()),
        (&sent, sent.hash.to_hex()),
        (&partial, format!("{}.part", partial.hash.to_hex())),
    ] {
        old.insert(rec.hash.0, codec::encode(rec).unwrap()).unwrap();
        std::fs::write(media_dir.join(file), rec.hash.0).unwrap();
    }
    old.insert([4u8; 32], b"not a record".as_slice()).unwrap();

    let done = migrate_media_by_message(&db, &media_dir).unwrap();
    assert_eq!(
        done,
        MediaMigration {
            moved: 3,
            files_renamed: 2,
            kept_aside: 1
        }
    );
    let check = |db: &sled::Db| {
        let records = db.open_tree(MEDIA_RECORDS).unwrap();
        let by_hash = db.open_tree(MEDIA_BY_HASH).unwrap();
        assert_eq!(records.len(), 3);
        assert_eq!(by_hash.len(), 3);
        for rec in [&received, &sent, &partial] {
            let key = rec.id().to_key();
            let got: MediaRecord = codec::decode(&records.get(&key).unwrap().unwrap()).unwrap();
            assert_eq!(
                (got.hash, got.message, got.state),
                (rec.hash, rec.message, rec.state)
            );
            assert!(by_hash
                .contains_key(hash_index_key(&rec.hash, &key))
                .unwrap());
        }
        let files = MediaFiles::at(&media_dir);
        assert_eq!(
            std::fs::read(files.received_path(&received.id())).unwrap(),
            received.hash.0
        );
        assert_eq!(
            std::fs::read(files.sent_path(&sent.hash)).unwrap(),
            sent.hash.0
        );
        assert_eq!(
            std::fs::read(files.part_path(&partial.id())).unwrap(),
            partial.hash.0
        );
        assert!(!media_dir.join(received.hash.to_hex()).exists());
        // Only the value that does not decode is left, untouched.
        let old = db.open_tree(LEGACY_MEDIA).unwrap();
        assert_eq!(old.len(), 1);
        assert_eq!(
            old.get([4u8; 32]).unwrap().unwrap().as_ref(),
            b"not a record"
        );
    };
    check(&db);

    // Again: nothing left to do, nothing changes.
    let again = migrate_media_by_message(&db, &media_dir).unwrap();
    assert_eq!(
        again,
        MediaMigration {
            moved: 0,
            files_renamed: 0,
            kept_aside: 1
        }
    );
    check(&db);

    // A crash after the copy but before the removal: the old entry is back, and the record
    // already at the new key (which may have moved on since) is kept, not overwritten.
    let mut progressed = partial.clone();
    progressed.done_chunks = 2;
    db.open_tree(MEDIA_RECORDS)
        .unwrap()
        .insert(partial.id().to_key(), codec::encode(&progressed).unwrap())
        .unwrap();
    old.insert(partial.hash.0, codec::encode(&partial).unwrap())
        .unwrap();
    let resumed = migrate_media_by_message(&db, &media_dir).unwrap();
    assert_eq!(resumed.moved, 1);
    let got: MediaRecord = codec::decode(
        &db.open_tree(MEDIA_RECORDS)
            .unwrap()
            .get(partial.id().to_key())
            .unwrap()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(got.done_chunks, 2);
    check(&db);
}
