//! The store peer's versioned database: envelopes that do not decode are quarantined, never
//! deleted as expired; the layout before format versions migrates; a newer one is refused.

use super::*;
use crate::{blobs::Blobs, mailboxes::STORE_PEER_VERSION};

/// Opens the raw database at `path` once a previous handle's flusher thread has let go of
/// its lock (at most 5 s).
async fn sled_when_released(path: &Path) -> sled::Db {
    let mut last = None;
    for _ in 0..200 {
        match sled::open(path) {
            Ok(db) => return db,
            Err(e) => {
                last = Some(e);
                tokio::time::sleep(std::time::Duration::from_millis(25)).await;
            }
        }
    }
    panic!("{} stays locked: {last:?}", path.display())
}

/// Replaces the stored bytes of envelope `n` of `user` with bytes that do not decode.
fn damage(m: &Mailboxes, n: u8) -> Vec<u8> {
    let key = m
        .envelopes
        .iter()
        .keys()
        .map(|k| k.unwrap())
        .find(|k| k.ends_with(id(n).as_bytes()))
        .unwrap();
    m.envelopes.insert(&key, &[0xff; 3]).unwrap();
    key.to_vec()
}

#[tokio::test]
async fn an_undecodable_envelope_is_quarantined_not_expired() {
    let (_dir, m) = open();
    let limits = Limits::default();
    let bob = user();
    for n in 1..=3 {
        assert_eq!(put(&m, bob, n, &limits), Ok(Deposit::Stored));
    }
    let key = damage(&m, 2);
    // Nothing is due: the damaged envelope is set aside, not counted as expired.
    assert_eq!(m.expire(NOW).unwrap(), 0);
    assert_eq!(ids_of(&m, &bob), vec![id(1), id(3)]);
    let (original, _) = envelope(bob, id(2), NOW + 60_000, 100);
    let r = EnvelopeRef {
        id: id(2),
        digest: original.digest().unwrap(),
    };
    assert!(!m.holds(&bob, &r).unwrap());
    assert_eq!(usage_of(&m, &bob).map(|u| u.0), Some(2));
    let q = versioned::quarantined(&m.db).unwrap();
    assert_eq!(q.len(), 1);
    assert_eq!((q[0].tree.as_str(), &q[0].key), ("envelopes", &key));
    assert_eq!(q[0].bytes, [0xff; 3]);
    // No tombstone: a good replica of it is still accepted.
    assert_eq!(put(&m, bob, 2, &limits), Ok(Deposit::Stored));
}

#[tokio::test]
async fn listing_quarantines_an_undecodable_envelope_and_returns_the_rest() {
    let (_dir, m) = open();
    let limits = Limits::default();
    let bob = user();
    for n in 1..=3 {
        assert_eq!(put(&m, bob, n, &limits), Ok(Deposit::Stored));
    }
    damage(&m, 1);
    assert_eq!(ids_of(&m, &bob), vec![id(2), id(3)]);
    assert_eq!(versioned::quarantined(&m.db).unwrap().len(), 1);
    assert_eq!(usage_of(&m, &bob).map(|u| u.0), Some(2));
    // Listing again finds nothing more to set aside.
    assert_eq!(ids_of(&m, &bob), vec![id(2), id(3)]);
    assert_eq!(versioned::quarantined(&m.db).unwrap().len(), 1);
}

/// The store peer's layout before format versions: the same trees, no version key. Made
/// by writing the trees as that code did (the layout in the module docs, unchanged since),
/// with a blob index entry that does not decode.
fn write_legacy_database(path: &Path, bob: UserId) {
    let db = sled::open(path).unwrap();
    let envelopes = db.open_tree("envelopes").unwrap();
    let ids = db.open_tree("ids").unwrap();
    for n in 1..=2u8 {
        let (_, bytes) = envelope(bob, id(n), NOW + 60_000, 100);
        let mut key = prefix(&bob);
        key.extend_from_slice(&u64::from(n).to_be_bytes());
        key.extend_from_slice(id(n).as_bytes());
        envelopes.insert(&key, bytes).unwrap();
        ids.insert(id(n).as_bytes(), key).unwrap();
    }
    db.open_tree("forgotten")
        .unwrap()
        .insert(
            [prefix(&bob).as_slice(), id(9).as_bytes()].concat(),
            &(NOW + 1_000).to_be_bytes(),
        )
        .unwrap();
    db.open_tree("blobs")
        .unwrap()
        .insert([5u8; 32], &[0xff; 3])
        .unwrap();
    db.flush().unwrap();
}

#[tokio::test]
async fn a_legacy_store_peer_database_migrates_and_keeps_everything() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mailboxes");
    let bob = user();
    write_legacy_database(&path, bob);
    let m = open_when_released(&path).await.unwrap();
    assert_eq!(
        m.db.get(versioned::VERSION_KEY).unwrap().unwrap().as_ref(),
        STORE_PEER_VERSION.to_be_bytes()
    );
    assert_eq!(ids_of(&m, &bob), vec![id(1), id(2)]);
    assert_eq!(usage_of(&m, &bob).map(|u| u.0), Some(2));
    // A tombstone of the old layout names no digest, so the migration drops it (see
    // `migrate_index_to_recipient_id_digest`): a late copy is held again, and deleted again
    // by its owner's node, which already has it.
    assert_eq!(put(&m, bob, 9, &Limits::default()), Ok(Deposit::Stored));
    // The blob index entry that does not decode is set aside at open, not deleted.
    let blobs = Blobs::open(
        &dir.path().join("blobs"),
        m.db(),
        Default::default(),
        Default::default(),
    )
    .unwrap();
    drop(blobs);
    let q = versioned::quarantined(&m.db).unwrap();
    assert_eq!(q.len(), 1);
    assert_eq!(
        (q[0].tree.as_str(), q[0].key.as_slice()),
        ("blobs", &[5u8; 32][..])
    );
    assert!(m.db.open_tree("blobs").unwrap().is_empty());
}

#[tokio::test]
async fn a_newer_store_peer_database_is_refused_naming_both_versions() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mailboxes");
    let bob = user();
    write_legacy_database(&path, bob);
    {
        let db = sled_when_released(&path).await;
        db.insert(versioned::VERSION_KEY, &7u32.to_be_bytes())
            .unwrap();
        db.flush().unwrap();
    }
    let Err(err) = open_when_released(&path).await else {
        panic!("a version-7 database opened");
    };
    assert!(matches!(
        err,
        MailboxError::Format(versioned::FormatError::Newer {
            found: 7,
            supported: STORE_PEER_VERSION,
            ..
        })
    ));
    let text = err.to_string();
    assert!(
        text.contains("version 7") && text.contains("up to 2"),
        "{text}"
    );
    // Nothing was changed.
    let db = sled::open(&path).unwrap();
    assert_eq!(db.open_tree("envelopes").unwrap().len(), 2);
    assert_eq!(db.open_tree("blobs").unwrap().len(), 1);
}
