//! A node database in the previous format (version 1: no format version, and conversation
//! messages stored without the `media` field that media messages added in 1e8edda) opens
//! with the current code: the migration runs, the node starts, and the conversation pages
//! with every message as it was.
//!
//! The fixture, `tests/fixtures/node-db-v1/db`, is alice's sled database as the real `kith`
//! of commit 28f4d36 (1e8edda~1, the last one before media messages) left it. It was made by
//! `tests/fixtures/make-node-db-v1.sh` with that build: two `kith run` processes (alice and
//! bob, API on 127.0.0.1:0, listening on 127.0.0.1 tcp/0) added each other by invite and
//! exchanged, over their REST APIs, in this order:
//! 1. alice → bob "hello bob", client_meta `{"device":"curl"}` — bob read it;
//! 2. bob → alice "hi alice" — alice read it;
//! 3. alice → bob "héllo again 👋", client_meta `{"quote":"hi alice"}` — bob read it;
//! 4. bob → alice "unread reply" — alice has not read it.
//!
//! Then both were stopped with SIGTERM (a clean shutdown) and alice's `db` was copied.
//! alice is [`ALICE`], bob is [`BOB`]; bob is alice's only contact, named "bob". (The
//! database holds alice's private keys: a throwaway test identity.)
//!
//! The store peer's fixture, `tests/fixtures/store-peer-db-v1/mailboxes`, is the database of
//! a `kith-bootstrap run --store` of the same commit, made by
//! `tests/fixtures/make-store-peer-db-v1.sh`: three store peers, alice ([`SP_ALICE`]) and bob
//! ([`SP_BOB`]) added each other, bob stopped, alice sent him "while you were away"
//! ([`SP_FIRST`]) then "and a second one" ([`SP_SECOND`]), both reached ✓ (held by W = 2 store
//! peers), and the mailboxes of a store peer holding both were copied after every process
//! was stopped with SIGTERM. It holds bob's mailbox with those two sealed envelopes (in that
//! order) and no blobs.

#![allow(clippy::unwrap_used)]

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use kith_bootstrap::{blobs::Blobs, format::STORE_PEER_VERSION, mailboxes::Mailboxes};
use kith_node::{
    store::{format::NODE_VERSION, StoredMessage},
    versioned, Config,
};
use kith_protocol::{codec, DeliveryStatus, Envelope, UserId};
use serde_json::json;

/// alice, whose database the fixture is.
const ALICE: &str = "12D3KooWHqDXYqqujsV17afFRzYuLzrfTY5Akkzm2ZRTpAW5h5bH";

/// bob, her contact.
const BOB: &str = "12D3KooWNtz27NjWmgvDFa9RvCq9sn18YmbqSvuRejTBvSNaRcLU";

/// alice of the store peer's fixture.
const SP_ALICE: &str = "12D3KooWFRwbXrjZ6jyP3RmbuRiZd7PgDFm4mQQt1ndFJwzCX6Uj";

/// bob of the store peer's fixture, whose mailbox it holds.
const SP_BOB: &str = "12D3KooWEWTxsFY6aChqEHCTsJJzv98mHAD9WnxvBgS2NmNr2ubQ";

/// The id of alice's first message to bob in the store peer's fixture.
const SP_FIRST: &str = "1e5e3528cfd6bc69716985db463b2e27";

/// The id of her second.
const SP_SECOND: &str = "a2a3452cb28b6daf6082696d2387270f";

/// How long sled's file lock may outlive a closed database.
const RELEASE_TIMEOUT: Duration = Duration::from_secs(5);

/// How often a released lock is polled for.
const POLL: Duration = Duration::from_millis(25);

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/node-db-v1/db")
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// A data directory whose database is a copy of the fixture (the fixture itself is never
/// opened for writing).
fn data_dir_from_fixture() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&fixture(), &dir.path().join(kith_node::run::DB_DIR));
    dir
}

/// Opens the sled database at `path` once nothing else holds its lock.
async fn open_raw(path: &Path) -> sled::Db {
    let deadline = tokio::time::Instant::now() + RELEASE_TIMEOUT;
    loop {
        match sled::open(path) {
            Ok(db) => return db,
            Err(e) if tokio::time::Instant::now() > deadline => panic!("{path:?}: {e}"),
            Err(_) => tokio::time::sleep(POLL).await,
        }
    }
}

#[tokio::test]
async fn the_fixture_is_in_the_previous_format() {
    let dir = data_dir_from_fixture();
    let db = open_raw(&dir.path().join(kith_node::run::DB_DIR)).await;
    assert!(db.get(versioned::VERSION_KEY).unwrap().is_none());
    let messages = db.open_tree("messages").unwrap();
    assert_eq!(messages.len(), 4);
    for item in messages.iter() {
        let (_, v) = item.unwrap();
        assert!(codec::decode::<StoredMessage>(&v).is_err());
    }
}

#[tokio::test]
async fn a_version_1_node_database_migrates_and_pages_its_conversation() {
    let dir = data_dir_from_fixture();
    let config = Config {
        bootstrap: vec![],
        mdns: false,
        ..Config::loopback(dir.path().to_path_buf())
    };
    let running = kith_node::start(config).await.unwrap();
    assert_eq!(running.user_id().to_string(), ALICE);
    let bob: UserId = BOB.parse().unwrap();
    let contacts = running.node.contacts().unwrap();
    assert_eq!(contacts.len(), 1);
    assert_eq!(
        (contacts[0].user_id.as_str(), contacts[0].name.as_str()),
        (BOB, "bob")
    );

    let page = running.node.conversation(&bob, 0, 50, None).unwrap();
    assert_eq!(page.next_offset, None);
    let got: Vec<_> = page
        .messages
        .iter()
        .map(|m| {
            (
                m.text.as_str(),
                m.outgoing,
                m.status,
                m.client_meta.clone(),
                m.media.is_none(),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            (
                "unread reply",
                false,
                DeliveryStatus::Delivered,
                json!({}),
                true
            ),
            (
                "héllo again 👋",
                true,
                DeliveryStatus::Read,
                json!({"quote": "hi alice"}),
                true
            ),
            ("hi alice", false, DeliveryStatus::Read, json!({}), true),
            (
                "hello bob",
                true,
                DeliveryStatus::Read,
                json!({"device": "curl"}),
                true
            ),
        ]
    );
    for m in &page.messages {
        let (from, to) = if m.outgoing {
            (ALICE, BOB)
        } else {
            (BOB, ALICE)
        };
        assert_eq!((m.from.as_str(), m.to.as_str()), (from, to), "{}", m.text);
    }
    // Paging further works on the migrated messages too.
    let second = running.node.conversation(&bob, 1, 2, None).unwrap();
    let texts: Vec<_> = second.messages.iter().map(|m| m.text.as_str()).collect();
    assert_eq!(texts, ["héllo again 👋", "hi alice"]);
    assert_eq!(second.next_offset, Some(3));
    running.shutdown().await.unwrap();

    // The database is now at the current version, every message in the current layout,
    // and nothing was set aside.
    let db = open_raw(&dir.path().join(kith_node::run::DB_DIR)).await;
    assert_eq!(
        db.get(versioned::VERSION_KEY).unwrap().unwrap().as_ref(),
        NODE_VERSION.to_be_bytes()
    );
    for item in db.open_tree("messages").unwrap().iter() {
        let (_, v) = item.unwrap();
        assert!(codec::decode::<StoredMessage>(&v).unwrap().media.is_none());
    }
    assert!(versioned::quarantined(&db).unwrap().is_empty());
}

#[tokio::test]
async fn a_version_1_store_peer_database_migrates_and_keeps_every_envelope() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mailboxes");
    copy_dir(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/store-peer-db-v1/mailboxes"),
        &path,
    );
    {
        let db = open_raw(&path).await;
        assert!(db.get(versioned::VERSION_KEY).unwrap().is_none());
    }
    let deadline = tokio::time::Instant::now() + RELEASE_TIMEOUT;
    let mailboxes = loop {
        match Mailboxes::open(&path) {
            Ok(m) => break m,
            Err(e) if tokio::time::Instant::now() > deadline => panic!("{e}"),
            Err(_) => tokio::time::sleep(POLL).await,
        }
    };
    let blobs = Blobs::open(
        &dir.path().join("blobs"),
        mailboxes.db(),
        Default::default(),
        Default::default(),
    )
    .unwrap();
    drop(blobs);
    assert_eq!(
        mailboxes
            .db()
            .get(versioned::VERSION_KEY)
            .unwrap()
            .unwrap()
            .as_ref(),
        STORE_PEER_VERSION.to_be_bytes()
    );
    let bob: UserId = SP_BOB.parse().unwrap();
    let held = mailboxes.list(&bob).unwrap();
    let ids: Vec<_> = held.iter().map(|(r, _)| r.id.to_string()).collect();
    assert_eq!(ids, [SP_FIRST, SP_SECOND]);
    for (id, bytes) in &held {
        let env = Envelope::from_bytes(bytes).unwrap();
        assert_eq!((env.id(), env.header.recipient), (id.id, bob));
    }
    let usage = mailboxes.usage();
    assert_eq!(usage.len(), 1);
    assert_eq!((usage[0].0, usage[0].1), (bob, 2));
    assert!(mailboxes.holds(&bob, &held[0].0).unwrap());
    assert!(mailboxes
        .list(&SP_ALICE.parse().unwrap())
        .unwrap()
        .is_empty());
    assert!(versioned::quarantined(mailboxes.db()).unwrap().is_empty());
}
